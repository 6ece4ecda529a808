export { DockerVolumeDriver, ATTACH_TIMEOUT_S, type DriverOptions, type DockerVolume } from './driver.js';
export { createPluginServer, listenPlugin, socketFromSystemd, errorMessage, REQUEST_BODY_BYTES_MAX } from './plugin.js';
export { planCreate, parseSize, checkVolumeName, FILESYSTEMS, FS_TAG, type Filesystem, type CreateDefaults, type CreatePlan } from './options.js';
