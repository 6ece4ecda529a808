/**
 * Node flags every storpool daemon runs with; whoever starts one (LocalCluster, `npm start`, the
 * fault lab, systemd units) puts them before the script, and the bins' shebangs carry them too.
 *
 * --initial-old-space-size=64: our daemons keep a small live heap (~15 MB) and allocate fast.
 * With V8's default initial limit, the old generation's headroom stays below the young
 * generation's capacity, so V8 keeps incremental marking running: an NBD service writing at 5.8k
 * IOPS did a mark-compact every ~180 ms (119 in 25 s) — a third of its CPU per request. With the
 * flag: 7 mark-compacts, 0.049 -> 0.033 ms CPU per request; storage servers 0.062 -> 0.055 ms per
 * rep3 write. It is a starting limit, not a reservation. V8 reads it only at start-up (not from
 * NODE_OPTIONS, not from v8.setFlagsFromString).
 */
export const DAEMON_NODE_FLAGS: readonly string[] = ['--initial-old-space-size=64'];
