/**
 * StorPool configuration files (API.md §2): `/etc/storpool.conf`, then `/etc/storpool.conf.d/*.conf`,
 * line-oriented INI with `[hostname]` sections, then a few environment overrides.
 */
import { readFileSync, readdirSync, statSync } from 'node:fs';
import { hostname as osHostname } from 'node:os';
import { join } from 'node:path';
import { StorpoolConfigError } from './errors.js';

export const DEFAULT_CONFIG_PATH = '/etc/storpool.conf';
export const DEFAULT_API_HOST = '127.0.0.1';
export const DEFAULT_API_PORT = 81;

/**
 * Variables the environment overrides after every file was applied. API.md §2.1 names the first
 * three (what StorPool's own clients honour); SP_OURID is our extension so that a container or a
 * test can act as a given client without writing a file.
 */
export const ENV_OVERRIDES = ['SP_AUTH_TOKEN', 'SP_API_HTTP_HOST', 'SP_API_HTTP_PORT', 'SP_OURID'] as const;

/** One parsed file: the global section under `''`, then one map per `[section]`. */
export type IniSections = Map<string, Map<string, string>>;

export interface LoadConfigOptions {
  /**
   * Main file. Default: `$STORPOOL_CONF`, else `/etc/storpool.conf`, else (neither exists) the
   * local cluster's `$STORPOOL_DATA/storpool.conf` or `./.storpool/storpool.conf` if present.
   */
  path?: string;
  /** Drop-in directory. Default: `<path>.d` (i.e. `/etc/storpool.conf.d`). */
  dropInDir?: string;
  /** Section to apply after each file's global one. Default: the node name (`uname -n`). */
  section?: string;
  /** Environment to read overrides (and STORPOOL_CONF / STORPOOL_DATA) from. Default: process.env. */
  env?: Record<string, string | undefined>;
  /** Apply ENV_OVERRIDES. Default true (Python's `use_env`). */
  useEnv?: boolean;
  /** Working directory for the local-cluster fallback. Default: process.cwd(). */
  cwd?: string;
}

export interface LoadedConfig {
  /** Merged variables, all values strings (API.md §2.1 "Values"). */
  values: Record<string, string>;
  /** Files read, in the order applied. Empty when none was found (environment only). */
  files: string[];
}

/** Parses one file's text (§2.1 "Syntax"). `source` names the file in errors. */
export function parseIni(text: string, source: string): IniSections {
  const sections: IniSections = new Map([['', new Map()]]);
  let current = sections.get('') as Map<string, string>;
  const lines = text.split(/\r?\n/);
  for (let i = 0; i < lines.length; i++) {
    const lineNo = i + 1;
    let line = lines[i] ?? '';
    // A line ending in a backslash continues on the next one.
    while (line.endsWith('\\') && i + 1 < lines.length) {
      i++;
      line = line.slice(0, -1) + (lines[i] ?? '');
    }
    if (line.endsWith('\\')) line = line.slice(0, -1);
    const trimmed = line.trim();
    if (trimmed === '' || trimmed.startsWith('#') || trimmed.startsWith(';')) continue;
    if (trimmed.startsWith('[')) {
      const m = /^\[([^\]]*)\]$/.exec(trimmed);
      if (m === null) throw new StorpoolConfigError(`${source}:${lineNo}: malformed section header ${JSON.stringify(trimmed)}`);
      const name = (m[1] ?? '').trim();
      let section = sections.get(name);
      if (section === undefined) {
        section = new Map();
        sections.set(name, section);
      }
      current = section;
      continue;
    }
    const eq = trimmed.indexOf('=');
    if (eq <= 0) throw new StorpoolConfigError(`${source}:${lineNo}: expected NAME=value, got ${JSON.stringify(trimmed)}`);
    current.set(trimmed.slice(0, eq).trim(), trimmed.slice(eq + 1).trim());
  }
  return sections;
}

/** Regular files in `dir` named `*.conf` and not starting with `.`, in lexicographic order. */
export function listDropIns(dir: string): string[] {
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT' || (err as NodeJS.ErrnoException).code === 'ENOTDIR') return [];
    throw new StorpoolConfigError(`cannot read ${dir}: ${(err as Error).message}`, { cause: err });
  }
  return names
    .filter((n) => n.endsWith('.conf') && !n.startsWith('.'))
    .sort()
    .map((n) => join(dir, n))
    .filter((p) => statSync(p, { throwIfNoEntry: false })?.isFile() === true);
}

function exists(path: string): boolean {
  return statSync(path, { throwIfNoEntry: false })?.isFile() === true;
}

/** The main configuration file to read, or undefined when there is none (see LoadConfigOptions.path). */
export function resolveConfigPath(options: LoadConfigOptions = {}): string | undefined {
  const env = options.env ?? process.env;
  if (options.path !== undefined) return options.path;
  const override = env['STORPOOL_CONF'];
  if (override !== undefined && override !== '') return override;
  if (exists(DEFAULT_CONFIG_PATH)) return DEFAULT_CONFIG_PATH;
  const dataDir = env['STORPOOL_DATA'];
  const local = join(dataDir !== undefined && dataDir !== '' ? dataDir : join(options.cwd ?? process.cwd(), '.storpool'), 'storpool.conf');
  return exists(local) ? local : undefined;
}

function readIni(path: string): IniSections {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new StorpoolConfigError(`cannot read configuration file ${path}: ${(err as Error).message}`, { cause: err });
  }
  return parseIni(text, path);
}

/**
 * Merges the files the way StorPool's Python bindings do (§2.1 "Python merge order"): for each file
 * in order, its global section, then its `[section]`; finally the environment overrides.
 */
export function loadConfig(options: LoadConfigOptions = {}): LoadedConfig {
  const env = options.env ?? process.env;
  const section = options.section ?? osHostname();
  const main = resolveConfigPath(options);
  const files: string[] = [];
  if (main !== undefined) {
    if (!exists(main)) throw new StorpoolConfigError(`configuration file ${main} does not exist`);
    files.push(main, ...listDropIns(options.dropInDir ?? `${main}.d`));
  }
  const values: Record<string, string> = {};
  for (const file of files) {
    const ini = readIni(file);
    for (const [k, v] of ini.get('') ?? []) values[k] = v;
    if (section !== '') for (const [k, v] of ini.get(section) ?? []) values[k] = v;
  }
  if (options.useEnv !== false) {
    for (const key of ENV_OVERRIDES) {
      const v = env[key];
      if (v !== undefined && v !== '') values[key] = v;
    }
  }
  return { values, files };
}

export interface ApiEndpoint {
  host: string;
  port: number;
  token: string | undefined;
  ourId: number | undefined;
}

/** The API address, token and this host's client id from merged config values. */
export function endpointFromConfig(config: LoadedConfig): ApiEndpoint {
  const v = config.values;
  const where = config.files.length > 0 ? `in ${config.files.join(', ')}` : 'in the environment';
  const host = v['SP_API_HTTP_HOST'] ?? DEFAULT_API_HOST;
  const portText = v['SP_API_HTTP_PORT'];
  const port = portText === undefined ? DEFAULT_API_PORT : Number(portText);
  if (!Number.isInteger(port) || port < 1 || port > 65535) {
    throw new StorpoolConfigError(`SP_API_HTTP_PORT ${JSON.stringify(portText)} ${where} is not a port number`);
  }
  const ourIdText = v['SP_OURID'];
  const ourId = ourIdText === undefined ? undefined : Number(ourIdText);
  if (ourId !== undefined && (!Number.isInteger(ourId) || ourId < 1 || ourId > 4095)) {
    throw new StorpoolConfigError(`SP_OURID ${JSON.stringify(ourIdText)} ${where} is not a client id (1..4095)`);
  }
  return { host, port, token: v['SP_AUTH_TOKEN'], ourId };
}
