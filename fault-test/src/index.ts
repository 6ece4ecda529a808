export { FaultCluster, MGMT_BIN, BLOCK_BIN, SERVER_PORT, CLIENT_ID, type FaultClusterOptions, type FaultServer, type FaultVolume, type ReplicaDiff, type ServerLaunch } from './cluster.js';
export { startEtcd, ETCD_BINARY, type EtcdMember } from './etcd.js';
export {
  VerifyingWriter, formatReport, WRITER_SCRIPT, DEBIAN_PYTHON, BLOCK_BYTES,
  type VerifyingWriterOptions, type WriterProgress, type WriteSummary, type VerifyReport, type IoErrorRecord, type ReadErrorRecord, type ReadMismatchRecord,
} from './verifying-writer.js';
export { bytesCopied, syncCounters, waitCaughtUp } from './recovery.js';
export { staleWrite, freezeMap, STALE_WRITER_SCRIPT, type StaleWriteJob, type StaleWriteResult } from './stale-client.js';
export { coldBlock, writeCold, checkCold, corruptBlockInFile, scrubPass, type ScrubStatus } from './corruption.js';
