/**
 * The end of every daemon's main (storpool-server, -mgmt, -block, -iscsi, -local): on SIGTERM or
 * SIGINT, close the service once (a second signal while closing does nothing), log, and exit 0, or
 * 1 when closing failed.
 */

/** The two pino methods used (any logger with this shape). */
export interface DaemonLog {
  info(obj: object, msg: string): void;
  error(obj: object, msg: string): void;
}

export interface StopOnSignalsOptions {
  log: DaemonLog;
  /** Stops the service; the process exits when it settles. */
  close: () => Promise<void>;
  /** Logged with the signal (default "stopping"). */
  message?: string;
  /** Defaults to process.exit (tests pass their own). */
  exit?: (code: number) => void;
  signals?: readonly NodeJS.Signals[];
}

export interface DaemonLifecycle {
  /** True once a signal has started the stop: exits after that are expected. */
  readonly stopping: boolean;
  /** Stops as a signal would (for callers that must stop on another event). */
  stop(reason: string): void;
}

export function stopOnSignals(o: StopOnSignalsOptions): DaemonLifecycle {
  const exit = o.exit ?? ((code: number) => process.exit(code));
  let stopping = false;
  const stop = (signal: string): void => {
    if (stopping) return;
    stopping = true;
    o.log.info({ signal }, o.message ?? 'stopping');
    o.close().then(
      () => exit(0),
      (err: unknown) => {
        o.log.error({ err }, 'error while stopping');
        exit(1);
      },
    );
  };
  for (const s of o.signals ?? ['SIGTERM', 'SIGINT']) process.on(s, () => stop(s));
  return {
    get stopping() {
      return stopping;
    },
    stop,
  };
}

export { DAEMON_NODE_FLAGS } from './node-flags.js';
