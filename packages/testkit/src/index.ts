export { LocalCluster, freePort, SERVER_BIN, type LocalClusterOptions, type ServerProcess } from './local-cluster.js';
export { SeededRandom } from './random.js';
export * from './fake-api.js';
export { NetnsLab, NETNS_STATE_DIR_DEFAULT, type NetnsLabOptions, type LabHost, type LabProcess, type HostRef, type PartitionPeers, type CmdResult } from './netns.js';
