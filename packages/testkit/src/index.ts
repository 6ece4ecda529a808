export { LocalCluster, freePort, SERVER_BIN, type LocalClusterOptions, type ServerProcess } from './local-cluster.js';
export { SeededRandom } from './random.js';
export * from './fake-api.js';
