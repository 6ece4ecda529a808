export {
  poolXml, volumeXml, diskXml, diskNode, domainXml, poolName, poolTargetPath, toXml, DEFAULT_DEV_ROOT, DEFAULT_RUNTIME_DIR,
  DEFAULT_NBD_HOST, DEFAULT_NBD_PORT, DEFAULT_ISCSI_PORT, POOL_NAME_PREFIX,
  type PoolSpec, type VolumeSpec, type DiskSpec, type DiskSource, type DomainSpec,
} from './xml.js';
export { poolXmlFromCluster, volumeXmlFromCluster, diskXmlFromCluster, diskSpecFromCluster } from './cluster.js';
export { runLibvirtCli, LIBVIRT_USAGE } from './cli.js';
