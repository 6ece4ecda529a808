/**
 * StorpoolApi: one typed method per call of API.md §4, over got. Transport rules of §1: base path
 * `/ctrl/1.0/`, `Authorization: Storpool v1:<token>`, GET for reads, POST with a JSON body for
 * changes, success envelope `{generation, data}`, error envelope `{error:{name,descr,transient}}`.
 */
import got, { RequestError, type Got } from 'got';
import { StorpoolApiError, StorpoolConfigError, StorpoolConnectionError } from './errors.js';
import { endpointFromConfig, loadConfig, type LoadConfigOptions } from './config.js';
import type * as T from './types.js';

export const API_BASE_PATH = '/ctrl/1.0/';
/** Per-request deadline unless a call needs longer (VolumesReassignWait, ClientConfigWait). */
export const REQUEST_TIMEOUT_MS_DEFAULT = 30_000;
/** Retries of an idempotent GET after a transient error or a refused/reset connection. */
export const GET_RETRIES_DEFAULT = 3;
/** First retry delay; doubles each time (the bindings use 1, 2, 4, 8, 16 s). */
export const RETRY_DELAY_MS_DEFAULT = 500;
/** Deadline of a wait call that gives no timeout of its own (the server may wait forever). */
export const WAIT_TIMEOUT_MS_DEFAULT = 10 * 60_000;
/** Slack added to a server-side wait (attachTimeout) for the answer to arrive. */
const WAIT_SLACK_MS = 30_000;

export type HttpMethod = 'GET' | 'POST';

export interface RawResponse {
  method: HttpMethod;
  path: string;
  status: number;
  /** The body exactly as received. */
  body: string;
}

export interface StorpoolApiOptions {
  host?: string;
  port?: number;
  token?: string;
  /** This host's client id (`SP_OURID`); used by callers that attach "here". */
  ourId?: number;
  /** Send the calls StorPool serves under `MultiCluster/` with that prefix (§1.2). */
  multiCluster?: boolean;
  /** Send every call as `RemoteCommand/<clusterName>/...` (§1.2). */
  clusterName?: string;
  timeoutMs?: number;
  retries?: number;
  retryDelayMs?: number;
  /** Where to read configuration for whatever host/port/token are not given explicitly. */
  config?: LoadConfigOptions;
  /** Called with every answer of the API, successful or not (the CLI prints it for `-j`). */
  onResponse?: (response: RawResponse) => void;
}

interface CallOptions {
  /** Call is served under `MultiCluster/` too (the MC column of §4.0). */
  mc?: boolean;
  timeoutMs?: number;
}

const RETRYABLE_CONNECTION_CODES = new Set(['ECONNREFUSED', 'ECONNRESET', 'EPIPE', 'EAI_AGAIN']);

/** Path arguments: sent raw as the clients do (§1.3), except characters a URL cannot carry raw. */
export function encodePathArg(arg: string): string {
  return encodeURIComponent(arg).replace(/%3A/gi, ':').replace(/%40/g, '@');
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

export class StorpoolApi {
  readonly host: string;
  readonly port: number;
  readonly ourId: number | undefined;
  readonly multiCluster: boolean;
  readonly clusterName: string | undefined;
  readonly #token: string;
  readonly #timeoutMs: number;
  readonly #retries: number;
  readonly #retryDelayMs: number;
  readonly #onResponse: ((response: RawResponse) => void) | undefined;
  readonly #got: Got;

  /**
   * Explicit options win; anything missing comes from the configuration files and environment
   * (API.md §2), which are read only when something is missing.
   */
  constructor(options: StorpoolApiOptions = {}) {
    let { host, port, token, ourId } = options;
    if (host === undefined || port === undefined || token === undefined) {
      const endpoint = endpointFromConfig(loadConfig(options.config));
      host ??= endpoint.host;
      port ??= endpoint.port;
      token ??= endpoint.token;
      ourId ??= endpoint.ourId;
    }
    if (token === undefined || token === '') {
      throw new StorpoolConfigError('no API token: set SP_AUTH_TOKEN in /etc/storpool.conf (or STORPOOL_CONF) or the environment');
    }
    if (!Number.isInteger(port) || port < 1 || port > 65535) throw new StorpoolConfigError(`invalid API port ${port}`);
    this.host = host;
    this.port = port;
    this.ourId = ourId;
    this.multiCluster = options.multiCluster ?? false;
    this.clusterName = options.clusterName;
    this.#token = token;
    this.#timeoutMs = options.timeoutMs ?? REQUEST_TIMEOUT_MS_DEFAULT;
    this.#retries = options.retries ?? GET_RETRIES_DEFAULT;
    this.#retryDelayMs = options.retryDelayMs ?? RETRY_DELAY_MS_DEFAULT;
    this.#onResponse = options.onResponse;
    this.#got = got.extend({
      prefixUrl: '',
      retry: { limit: 0 },
      throwHttpErrors: false,
      followRedirect: false,
      responseType: 'text',
      headers: { authorization: `Storpool v1:${token}`, 'user-agent': 'storpool-api-client' },
    });
  }

  /** `http://host:port` of the API. */
  get url(): string {
    const host = this.host.includes(':') ? `[${this.host}]` : this.host;
    return `http://${host}:${this.port}`;
  }

  /** The path of a call: `/ctrl/1.0/[RemoteCommand/<c>/][MultiCluster/]<Call>[/<arg>...]`. */
  callPath(call: string, args: readonly string[] = [], mc = false): string {
    let path = API_BASE_PATH;
    if (this.clusterName !== undefined) path += `RemoteCommand/${encodePathArg(this.clusterName)}/`;
    if (mc && this.multiCluster) path += 'MultiCluster/';
    path += call;
    for (const arg of args) path += `/${encodePathArg(arg)}`;
    return path;
  }

  /**
   * One call, returning the success envelope. GETs are retried on transient errors and refused or
   * reset connections; POSTs never are (they are not idempotent).
   */
  async request<D>(method: HttpMethod, call: string, args: readonly string[] = [], body?: unknown, options: CallOptions = {}): Promise<T.ApiEnvelope<D>> {
    const path = this.callPath(call, args, options.mc ?? false);
    const attempts = method === 'GET' ? this.#retries + 1 : 1;
    for (let attempt = 1; ; attempt++) {
      try {
        return await this.#once<D>(method, path, body, options.timeoutMs ?? this.#timeoutMs);
      } catch (err) {
        if (attempt >= attempts || !StorpoolApi.#retryable(err)) throw err;
        await sleep(this.#retryDelayMs * 2 ** (attempt - 1));
      }
    }
  }

  static #retryable(err: unknown): boolean {
    if (err instanceof StorpoolApiError) return err.transient;
    if (err instanceof StorpoolConnectionError) {
      const code = (err.cause as { code?: unknown } | undefined)?.code;
      return typeof code === 'string' && RETRYABLE_CONNECTION_CODES.has(code);
    }
    return false;
  }

  async #once<D>(method: HttpMethod, path: string, body: unknown, timeoutMs: number): Promise<T.ApiEnvelope<D>> {
    const address = `${this.host}:${this.port}`;
    let status: number;
    let text: string;
    try {
      const response = await this.#got(this.url + path, {
        method,
        timeout: { request: timeoutMs },
        ...(body === undefined ? {} : { body: JSON.stringify(body), headers: { 'content-type': 'application/json' } }),
      });
      status = response.statusCode;
      text = response.body;
    } catch (err) {
      if (err instanceof RequestError && err.code === 'ETIMEDOUT') {
        throw new StorpoolConnectionError('CLIENT_ERR_TIMEOUT', address, `the StorPool API at ${this.url} did not answer ${method} ${path} within ${timeoutMs} ms`, { cause: err });
      }
      const reason = err instanceof Error ? err.message : String(err);
      throw new StorpoolConnectionError('CLIENT_ERR_CONNECTION', address, `cannot reach the StorPool API at ${this.url}: ${reason}`, { cause: err });
    }
    this.#onResponse?.({ method, path, status, body: text });
    const fail = (name: string, descr: string, transient = false): StorpoolApiError =>
      new StorpoolApiError({ name, descr, transient, status, method, path, body: text });
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch {
      throw fail('invalidResponse', `HTTP ${status} from ${this.url}${path} is not JSON: ${JSON.stringify(text.slice(0, 80))}`);
    }
    if (isRecord(parsed) && isRecord(parsed['error'])) {
      const e = parsed['error'];
      const name = typeof e['name'] === 'string' ? e['name'] : 'unknownError';
      const descr = typeof e['descr'] === 'string' ? e['descr'] : JSON.stringify(e);
      throw fail(name, descr, e['transient'] === true);
    }
    if (status !== 200) throw fail('httpError', `HTTP ${status} from ${this.url}${path} without an error envelope`);
    if (!isRecord(parsed) || !('data' in parsed)) throw fail('invalidResponse', `answer of ${path} has no "data"`);
    const generation = typeof parsed['generation'] === 'number' ? parsed['generation'] : -1;
    return { generation, data: parsed['data'] as D };
  }

  async #get<D>(call: string, args: readonly string[], mc: boolean, timeoutMs?: number): Promise<D> {
    const options: CallOptions = timeoutMs === undefined ? { mc } : { mc, timeoutMs };
    return (await this.request<D>('GET', call, args, undefined, options)).data;
  }

  async #post<D>(call: string, args: readonly string[], body: unknown, mc: boolean, timeoutMs?: number): Promise<D> {
    const options: CallOptions = timeoutMs === undefined ? { mc } : { mc, timeoutMs };
    return (await this.request<D>('POST', call, args, body, options)).data;
  }

  // ---- 4.1 Volumes ----------------------------------------------------------------------------
  volumesList(): Promise<T.VolumeSummary[]> { return this.#get('VolumesList', [], true); }
  /** One-element array (§1.7 rule 7). */
  volume(volume: string): Promise<T.VolumeSummary[]> { return this.#get('Volume', [volume], true); }
  volumeDescribe(volume: string): Promise<T.Volume> { return this.#get('VolumeDescribe', [volume], true); }
  volumeGetInfo(volume: string): Promise<T.VolumeInfo> { return this.#get('VolumeGetInfo', [volume], true); }
  volumeCreate(desc: T.VolumeCreateDesc): Promise<T.ApiOkVolumeCreate> { return this.#post('VolumeCreate', [], desc, true); }
  volumeUpdate(volume: string, desc: T.VolumeUpdateDesc): Promise<T.ApiOk> { return this.#post('VolumeUpdate', [volume], desc, true); }
  volumeDelete(volume: string, desc?: T.VolumeDeleteDesc): Promise<T.ApiOk> { return this.#post('VolumeDelete', [volume], desc, true); }
  volumeRevert(volume: string, desc: T.VolumeRevertDesc): Promise<T.ApiOk> { return this.#post('VolumeRevert', [volume], desc, true); }
  volumeFreeze(volume: string, desc?: T.VolumeFreezeDesc): Promise<T.ApiOk> { return this.#post('VolumeFreeze', [volume], desc, true); }
  volumeListSnapshots(volume: string): Promise<T.SnapshotSummary[]> { return this.#get('VolumeListSnapshots', [volume], false); }
  volumesGetStatus(): Promise<Record<string, T.VolumeStatus | T.SnapshotStatus>> { return this.#get('VolumesGetStatus', [], true); }
  volumesSpace(): Promise<T.VolumeSpace[]> { return this.#get('VolumesSpace', [], true); }
  volumesAndSnapshotsList(): Promise<T.VolumesAndSnapshots> { return this.#get('VolumesAndSnapshotsList', [], false); }
  volumeAcquire(volume: string, desc?: T.VolumeAcquireDesc): Promise<T.ApiOk> { return this.#post('VolumeAcquire', [volume], desc, true); }
  volumeBackup(desc: T.VolumeBackupDesc): Promise<T.ApiOkVolumeBackup> { return this.#post('VolumeBackup', [], desc, true); }

  // ---- 4.2 Snapshots --------------------------------------------------------------------------
  volumeSnapshot(volume: string, desc: T.VolumeSnapshotDesc = {}): Promise<T.ApiOkSnapshotCreate> { return this.#post('VolumeSnapshot', [volume], desc, true); }
  snapshotsList(): Promise<T.SnapshotSummary[]> { return this.#get('SnapshotsList', [], true); }
  /** One-element array (§1.7 rule 7). */
  snapshot(snapshot: string): Promise<T.SnapshotSummary[]> { return this.#get('Snapshot', [snapshot], true); }
  snapshotDescribe(snapshot: string): Promise<T.Snapshot> { return this.#get('SnapshotDescribe', [snapshot], true); }
  snapshotGetInfo(snapshot: string): Promise<T.SnapshotInfo> { return this.#get('SnapshotGetInfo', [snapshot], true); }
  snapshotsSpace(): Promise<T.SnapshotSpace[]> { return this.#get('SnapshotsSpace', [], true); }
  snapshotUpdate(snapshot: string, desc: T.SnapshotUpdateDesc): Promise<T.ApiOk> { return this.#post('SnapshotUpdate', [snapshot], desc, false); }
  snapshotDelete(snapshot: string): Promise<T.ApiOk> { return this.#post('SnapshotDelete', [snapshot], undefined, true); }
  /** `globalId` without the `~`. */
  snapshotDeleteById(globalId: string): Promise<T.ApiOk> { return this.#post('SnapshotDeleteById', [globalId], undefined, false); }
  volumesGroupSnapshot(spec: T.GroupSnapshotsSpec): Promise<T.GroupSnapshotsResult> { return this.#post('VolumesGroupSnapshot', [], spec, true); }

  // ---- 4.3 Attachments ------------------------------------------------------------------------
  attachmentsList(): Promise<T.AttachmentDesc[]> { return this.#get('AttachmentsList', [], true); }
  volumesReassign(entries: T.ReassignDesc[]): Promise<T.ApiOk> { return this.#post('VolumesReassign', [], entries, true); }
  /** Waits for the clients; the request deadline follows `attachTimeout`. */
  volumesReassignWait(desc: T.VolumesReassignWaitDesc): Promise<T.ApiOk> {
    const timeoutMs = desc.attachTimeout === undefined ? WAIT_TIMEOUT_MS_DEFAULT : desc.attachTimeout * 1000 + WAIT_SLACK_MS;
    return this.#post('VolumesReassignWait', [], desc, true, Math.max(timeoutMs, this.#timeoutMs));
  }

  // ---- 4.4 Templates --------------------------------------------------------------------------
  volumeTemplatesList(): Promise<T.VolumeTemplateDesc[]> { return this.#get('VolumeTemplatesList', [], false); }
  volumeTemplatesStatus(): Promise<T.VolumeTemplateStatusDesc[]> { return this.#get('VolumeTemplatesStatus', [], false); }
  volumeTemplateDescribe(template: string): Promise<T.VolumeTemplateDesc> { return this.#get('VolumeTemplateDescribe', [template], false); }
  volumeTemplateCreate(desc: T.VolumeTemplateCreateDesc): Promise<T.ApiOk> { return this.#post('VolumeTemplateCreate', [], desc, false); }
  volumeTemplateUpdate(template: string, desc: T.VolumeTemplateUpdateDesc): Promise<T.ApiOk> { return this.#post('VolumeTemplateUpdate', [template], desc, false); }
  volumeTemplateDelete(template: string): Promise<T.ApiOk> { return this.#post('VolumeTemplateDelete', [template], undefined, false); }

  // ---- 4.5 Placement groups and fault sets ----------------------------------------------------
  placementGroupsList(): Promise<Record<string, T.PlacementGroup>> { return this.#get('PlacementGroupsList', [], false); }
  placementGroupDescribe(pg: string): Promise<T.PlacementGroup> { return this.#get('PlacementGroupDescribe', [pg], false); }
  /** Creates the group if it does not exist. */
  placementGroupUpdate(pg: string, desc: T.PlacementGroupUpdateDesc): Promise<T.ApiOk> { return this.#post('PlacementGroupUpdate', [pg], desc, false); }
  placementGroupDelete(pg: string): Promise<T.ApiOk> { return this.#post('PlacementGroupDelete', [pg], undefined, false); }
  faultSetsList(): Promise<Record<string, T.FaultSet>> { return this.#get('FaultSetsList', [], false); }

  // ---- 4.6 Disks ------------------------------------------------------------------------------
  disksList(): Promise<Record<string, T.DiskSummary>> { return this.#get('DisksList', [], false); }
  diskDescribe(diskId: number): Promise<T.Disk> { return this.#get('DiskDescribe', [String(diskId)], false); }
  diskEject(diskId: number): Promise<T.ApiOk> { return this.#post('DiskEject', [String(diskId)], undefined, false); }
  diskForget(diskId: number): Promise<T.ApiOk> { return this.#post('DiskForget', [String(diskId)], undefined, false); }
  diskSoftEject(diskId: number): Promise<T.ApiOk> { return this.#post('DiskSoftEject', [String(diskId)], undefined, false); }
  diskScrubStart(diskId: number): Promise<T.ApiOk> { return this.#post('DiskScrubStart', [String(diskId)], undefined, false); }

  // ---- 4.7 Services, clients, tasks -----------------------------------------------------------
  serversList(): Promise<T.ClusterStatus> { return this.#get('ServersList', [], false); }
  servicesList(): Promise<T.ClusterStatus> { return this.#get('ServicesList', [], false); }
  clientsConfigDump(): Promise<T.ClientConfigStatus[]> { return this.#get('ClientsConfigDump', [], false); }
  clientConfigWait(clientId: number, timeoutMs = WAIT_TIMEOUT_MS_DEFAULT): Promise<T.ClientConfigStatus[]> {
    return this.#get('ClientConfigWait', [String(clientId)], false, timeoutMs);
  }
  tasksList(): Promise<T.Task[]> { return this.#get('TasksList', [], false); }

  // ---- 4.8 Balancer ---------------------------------------------------------------------------
  volumeBalancerStatus(): Promise<T.VolumeBalancerStatus> { return this.#get('VolumeBalancerStatus', [], false); }
  volumeBalancerCommand(command: T.VolumeBalancerCommand): Promise<T.ApiOk> { return this.#post('VolumeBalancerStatus', [], command, false); }

  // ---- 4.9 iSCSI ------------------------------------------------------------------------------
  iSCSIConfig(): Promise<T.IscsiConfig> { return this.#get('iSCSIConfig', [], false); }
  iSCSIConfigChange(change: T.IscsiConfigChange): Promise<T.ApiOk> { return this.#post('iSCSIConfig', [], change, false); }

  // ---- 4.10 Key/value buckets -----------------------------------------------------------------
  kvBuckets(): Promise<T.KeyValueBucketsList> { return this.#get('KV', [], false); }
  kvList(bucket: string): Promise<T.KeyValueBucket> { return this.#get('KV/List', [bucket], false); }
  kvGet(bucket: string, key: string): Promise<T.KeyValueBucket> { return this.#get('KV/Get', [bucket, key], false); }
  kvCreate(bucket: string): Promise<T.ApiOk> { return this.#post('KV/Create', [bucket], undefined, false); }
  kvDelete(bucket: string): Promise<T.ApiOk> { return this.#post('KV/Delete', [bucket], undefined, false); }
  kvSet(bucket: string, desc: T.KeyValueBucketSetDesc): Promise<T.ApiOk> { return this.#post('KV/Set', [bucket], desc, false); }
}
