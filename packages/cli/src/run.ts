/**
 * Runs one parsed command line against the API and prints the result: the raw envelope with `-j`,
 * a table or `OK` otherwise. Errors become one line on stderr and an exit status (exitCodeFor).
 */
import { StorpoolApi, StorpoolApiError, type RawResponse, type StorpoolApiOptions } from '@storpool/api-client';
import { ERRORS, StorpoolError, isErrorCode } from '@storpool/errors';
import { parseNounWords, splitGlobalFlags, type Format, type GlobalFlags } from './grammar.js';
import { NOUNS } from './nouns.js';
import { UsageError } from './values.js';

export interface CliIo {
  stdout(text: string): void;
  stderr(text: string): void;
  /** stdout is a terminal (colours allowed unless -B or NO_COLOR). */
  isTty: boolean;
  env: Record<string, string | undefined>;
}

export const EXIT_OK = 0;
/** The API refused the request (any error name without a more specific status). */
export const EXIT_API_ERROR = 1;
/** Usage and configuration errors (CONFIG_ERR_INVALID's cliExit). */
export const EXIT_USAGE = ERRORS.CONFIG_ERR_INVALID.cliExit;
/** The named object does not exist (the status StorPool's `storpool_req` uses). */
export const EXIT_NOT_FOUND = 3;
/** Transient: the API is unreachable, timed out, or asked to retry later (CLIENT_ERR_CONNECTION's cliExit). */
export const EXIT_UNAVAILABLE = ERRORS.CLIENT_ERR_CONNECTION.cliExit;
/** A bug in the CLI (INTERNAL_ERR's cliExit). */
export const EXIT_INTERNAL = ERRORS.INTERNAL_ERR.cliExit;

/** Exit status of a failure: registry codes map through ERRORS[code].cliExit. */
export function exitCodeFor(err: unknown): number {
  if (err instanceof StorpoolApiError) {
    if (isErrorCode(err.name)) return ERRORS[err.name].cliExit;
    if (err.name === 'objectDoesNotExist') return EXIT_NOT_FOUND;
    return err.transient ? EXIT_UNAVAILABLE : EXIT_API_ERROR;
  }
  if (err instanceof StorpoolError) return err.spec.cliExit;
  const oclifExit = (err as { oclif?: { exit?: unknown } } | null)?.oclif?.exit;
  if (typeof oclifExit === 'number') return oclifExit;
  return EXIT_INTERNAL;
}

/** The one stderr line for a failure. */
export function errorLine(err: unknown): string {
  if (err instanceof StorpoolApiError) return `storpool: error: ${err.name}: ${err.descr}`;
  if (err instanceof UsageError) return `storpool: usage: ${err.message}`;
  if (err instanceof StorpoolError) return `storpool: error: ${err.message}`;
  const message = err instanceof Error ? err.message : String(err);
  return `storpool: error: ${message.split('\n')[0] ?? message}`;
}

/** Options of the API client; `apiOptions` lets tests and embedders override the endpoint. */
export interface RunOptions {
  apiOptions?: StorpoolApiOptions;
}

/**
 * Runs `storpool <words...>` (global flags anywhere) and returns the exit status. Never throws:
 * every failure is reported on stderr (or as the error envelope on stdout with `-j`).
 */
export async function runWords(argv: readonly string[], io: CliIo, options: RunOptions = {}): Promise<number> {
  let flags: GlobalFlags = { json: false, batch: false, multiCluster: false };
  let last: RawResponse | undefined;
  try {
    const split = splitGlobalFlags(argv);
    flags = split.flags;
    const [nounWord, ...rest] = split.words;
    if (nounWord === undefined) throw new UsageError('missing command (see: storpool --help)');
    const noun = NOUNS[nounWord];
    if (noun === undefined) throw new UsageError(`unknown command '${nounWord}' (see: storpool --help)`);
    const action = parseNounWords(noun, rest);
    const api = new StorpoolApi({
      multiCluster: flags.multiCluster,
      config: { env: io.env },
      ...options.apiOptions,
      onResponse: (r) => {
        last = r;
      },
    });
    const data = await action.run(api);
    if (flags.json) {
      io.stdout(withNewline(last?.body ?? JSON.stringify({ generation: -1, data })));
      return EXIT_OK;
    }
    const format: Format = { batch: flags.batch, color: !flags.batch && io.isTty && io.env['NO_COLOR'] === undefined };
    io.stdout(withNewline(action.render === undefined ? 'OK' : action.render(data, format)));
    return EXIT_OK;
  } catch (err) {
    if (flags.json && err instanceof StorpoolApiError) {
      // The API's error envelope, unchanged, is the machine-readable failure (API.md Appendix A).
      io.stdout(withNewline(err.body));
    } else {
      io.stderr(withNewline(errorLine(err)));
    }
    return exitCodeFor(err);
  }
}

function withNewline(text: string): string {
  return text.endsWith('\n') ? text : `${text}\n`;
}
