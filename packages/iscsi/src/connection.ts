/**
 * One iSCSI connection (= one session: MaxConnections=1, ErrorRecoveryLevel 0) as a state machine
 * over PDUs, separate from the socket: `onBytes(chunk)` in, `send`/`close` callbacks out. Tests and
 * the fuzzer drive it without a socket; server.ts attaches it to one.
 *
 *   login ──(T bit to FullFeature)──> full ──(Logout)──> closed
 *     └──(failure: Login Response with status)──> closed
 *
 * In full feature phase SCSI commands run concurrently (queue depth = the CmdSN window); each
 * response takes the next StatSN when it is sent. Writes collect immediate data, unsolicited
 * Data-Out up to FirstBurstLength (InitialR2T=No) and then R2T-solicited bursts of MaxBurstLength.
 */
import type { Logger } from 'pino';
import {
  IOp, PduDecoder, PduError, RejectReason, RESERVED_TAG, TOp, dataIn, decodeLogin, decodeLun, decodeScsiCommand, encodeTextKeys, frame, logoutResponse,
  loginResponse, nopIn, opcode, parseTextKeys, r2t, reject, scsiResponse, taskMgmtResponse, textResponse, type OutPdu, type Pdu, type ScsiCommand,
} from './pdu.js';
import { CHAP_MD5, TARGET_MAX_RECV_DATA_SEGMENT, chapMatches, chapResponse, decodeChapValue, defaultParams, negotiateOperational, newChallenge, type SessionParams } from './login.js';
import { ScsiLun, allocationLength, dataOutLength, type LunContext } from './scsi.js';
import { Asc, SenseKey, Status, check, type ScsiResult } from './sense.js';
import type { InitiatorAccess, IscsiTarget, ReservationStore, TargetCatalog } from './types.js';

/** What a connection needs from the target around it. */
export interface TargetEnv {
  catalog(): TargetCatalog;
  /** Portal group of the listener this connection came in on. */
  portalGroupTag: number;
  /** Addresses to advertise when no portal group names any (open mode): the listener's. */
  localPortal: { host: string; port: number };
  remoteAddress: string;
  reservations: ReservationStore;
  lunShared(id: string): Pick<LunContext, 'mode' | 'cawLock' | 'prevent'>;
  allocTsih(): number;
  /** A new session of the same I_T nexus replaces the old one (session reinstatement). */
  registerSession(key: string, conn: IscsiConnection): void;
  unregisterSession(key: string, conn: IscsiConnection): void;
  log: Logger;
}

export type ConnectionState = 'login' | 'full' | 'closed';

const CMD_WINDOW = 64;
/** Largest Expected Data Transfer Length we buffer for one command. */
const COMMAND_BYTES_MAX = 16 * 1024 * 1024;
const LOGIN_KEYS_BYTES_MAX = 64 * 1024;
/** The data of a command that carries none (shared: never written to). */
const NO_DATA = Buffer.alloc(0);

const LoginStatus = {
  SUCCESS: 0x0000,
  INITIATOR_ERROR: 0x0200,
  AUTH_FAILED: 0x0201,
  FORBIDDEN: 0x0202,
  NOT_FOUND: 0x0203,
  UNSUPPORTED_VERSION: 0x0205,
  MISSING_PARAMETER: 0x0207,
  NO_SESSION: 0x020a,
  TARGET_ERROR: 0x0300,
} as const;

interface Task {
  itt: number;
  cmd: ScsiCommand;
  lunNumber: number;
  /** Data-Out collected so far (writes). */
  buffer?: Buffer;
  received: number;
  /** Bytes to collect before executing. */
  wanted: number;
  ttt: number;
  r2tSN: number;
  /** End of the burst the current R2T asked for. */
  burstEnd: number;
  /** DataSN the next Data-Out of the current sequence must carry (RFC 7143 §11.7.5: from 0 per sequence). */
  dataSN: number;
  /** A Data-Out came out of DataSN order: the task fails once its current sequence ends. */
  sequenceError: boolean;
  unsolicitedDone: boolean;
  aborted: boolean;
  running: boolean;
}

export interface ConnectionCallbacks {
  send(bufs: Buffer[]): void;
  /** Closes the transport after what was sent. `error` marks a broken or hostile peer (logged at warn). */
  close(reason: string, error: boolean): void;
}

export class IscsiConnection {
  state: ConnectionState = 'login';
  readonly #env: TargetEnv;
  readonly #cb: ConnectionCallbacks;
  readonly #decoder = new PduDecoder({ maxDataSegment: TARGET_MAX_RECV_DATA_SEGMENT });
  readonly #params: SessionParams = defaultParams();
  #statSN = 0;
  #expCmdSN = 0;
  #loginKeys: Buffer[] = [];
  #loginBytes = 0;
  #stage = -1;
  #initiatorName = '';
  #isid: Buffer = Buffer.alloc(6);
  #tsih = 0;
  #discovery = false;
  #target: IscsiTarget | undefined;
  #access: InitiatorAccess | undefined;
  #authRequired = false;
  #authDone = false;
  #chap: { id: number; challenge: Buffer } | undefined;
  #chapAlgorithmAgreed = false;
  #declaredMrdsl = false;
  readonly #tasks = new Map<number, Task>();
  readonly #luns = new Map<number, ScsiLun>();
  #nextTtt = 1;
  #textPending: { itt: number; ttt: number; rest: Buffer } | undefined;
  #textIn: Buffer[] = [];
  #sessionKey: string | undefined;
  #logoutPending: { itt: number } | undefined;
  /** The logout answer waits for its reservation release. */
  #loggingOut = false;

  constructor(env: TargetEnv, cb: ConnectionCallbacks) {
    this.#env = env;
    this.#cb = cb;
  }

  get nexus(): string {
    return `${this.#initiatorName},i,0x${this.#isid.toString('hex')}`;
  }

  get initiatorName(): string {
    return this.#initiatorName;
  }

  get targetName(): string | undefined {
    return this.#target?.name;
  }

  /** Bytes from the initiator. Never throws: a broken peer closes the connection. */
  onBytes(chunk: Buffer): void {
    if (this.state === 'closed') return;
    let pdus;
    try {
      pdus = this.#decoder.push(chunk);
    } catch (err) {
      this.#fail(err instanceof PduError ? err.message : String(err));
      return;
    }
    for (const p of pdus) {
      if ((this.state as ConnectionState) === 'closed') return;
      try {
        this.#onPdu(p, p.dataDigestError === true);
      } catch (err) {
        this.#fail(err instanceof PduError ? err.message : `${String(err)}`);
        return;
      }
    }
  }

  /** The transport is gone: drop every task (their results are discarded). */
  onClosed(): void {
    if (this.state === 'closed') return;
    this.state = 'closed';
    for (const t of this.#tasks.values()) t.aborted = true;
    this.#tasks.clear();
    if (this.#sessionKey !== undefined) {
      this.#env.unregisterSession(this.#sessionKey, this);
      // RESERVE(6) reservations end with the I_T nexus (SPC-2 §5.5.1); persistent ones do not.
      // A logout released it already, before its answer.
      if (!this.#loggingOut) void this.#releaseLegacy((holder) => holder === this.nexus);
    }
  }

  /** Resolves once the release is stored (and fenced: every portal sees it); never rejects. */
  #releaseLegacy(which: (holder: string) => boolean, lunNumber?: number): Promise<void> {
    const releases: Promise<void>[] = [];
    for (const l of this.#target?.luns ?? []) {
      if (lunNumber !== undefined && l.lun !== lunNumber) continue;
      releases.push(this.#env.reservations.update(l.backend.id, (s) => {
        if (s.legacy === undefined || !which(s.legacy)) return { state: undefined, result: undefined };
        return { state: { ...s, legacy: undefined }, result: undefined };
      }).catch((err: unknown) => this.#env.log.warn({ err: (err as Error).message }, 'releasing a RESERVE(6) reservation failed')));
    }
    return Promise.all(releases).then(() => undefined);
  }

  /** Ends this session from the target side (reinstatement, shutdown). */
  drop(reason: string): void {
    if (this.state === 'closed') return;
    this.#cb.close(reason, false);
    this.onClosed();
  }

  #fail(reason: string): void {
    this.#env.log.warn({ remote: this.#env.remoteAddress, initiator: this.#initiatorName || undefined, reason }, 'closing iSCSI connection: protocol error');
    this.#cb.close(reason, true);
    this.onClosed();
  }

  #send(p: OutPdu): void {
    if (this.state === 'closed') return;
    this.#cb.send(frame(p, { header: this.state === 'full' && this.#params.headerDigest, data: this.state === 'full' && this.#params.dataDigest }));
  }

  #sns(advance: boolean): { statSN: number; expCmdSN: number; maxCmdSN: number } {
    const statSN = this.#statSN;
    if (advance) this.#statSN = (this.#statSN + 1) >>> 0;
    return { statSN, expCmdSN: this.#expCmdSN, maxCmdSN: (this.#expCmdSN + CMD_WINDOW - 1) >>> 0 };
  }

  #onPdu(p: Pdu, digestError: boolean): void {
    const op = opcode(p);
    if (this.state === 'login') {
      if (op !== IOp.LOGIN) throw new PduError(`opcode 0x${op.toString(16)} during login`);
      this.#onLogin(p);
      return;
    }
    if (digestError) {
      // §7.8: a data digest error on a command is Rejected; the initiator retries or aborts it.
      this.#send(reject({ reason: RejectReason.DATA_DIGEST, rejected: p.bhs, ...this.#sns(true) }));
      return;
    }
    if (this.#logoutPending !== undefined && op !== IOp.NOP_OUT) {
      this.#send(reject({ reason: RejectReason.WAITING_FOR_LOGOUT, rejected: p.bhs, ...this.#sns(true) }));
      return;
    }
    if (op === IOp.LOGIN) throw new PduError('Login Request in full feature phase');
    if (op !== IOp.DATA_OUT && op !== IOp.SNACK && (p.bhs[0]! & 0x40) === 0) {
      // A non-immediate command consumes a CmdSN (§3.2.2.1); outside the window it is dropped.
      const sn = p.bhs.readUInt32BE(24);
      const d = (sn - this.#expCmdSN) | 0;
      if (d < 0 || d >= CMD_WINDOW) {
        this.#env.log.debug({ sn, exp: this.#expCmdSN }, 'CmdSN outside the window: ignored');
        return;
      }
      if (d === 0) this.#expCmdSN = (this.#expCmdSN + 1) >>> 0;
      else this.#expCmdSN = (sn + 1) >>> 0;
    }
    switch (op) {
      case IOp.NOP_OUT: return this.#onNop(p);
      case IOp.SCSI_CMD: return this.#onScsi(p);
      case IOp.DATA_OUT: return this.#onDataOut(p);
      case IOp.TASK_MGMT: return this.#onTmf(p);
      case IOp.TEXT: return this.#onText(p);
      case IOp.LOGOUT: return this.#onLogout(p);
      case IOp.SNACK:
        this.#send(reject({ reason: RejectReason.SNACK, rejected: p.bhs, ...this.#sns(true) }));
        return;
      default:
        this.#send(reject({ reason: RejectReason.COMMAND_NOT_SUPPORTED, rejected: p.bhs, ...this.#sns(true) }));
    }
  }

  // ---------------------------------------------------------------- login
  #loginFail(req: ReturnType<typeof decodeLogin>, status: number, why: string): void {
    this.#env.log.warn({ remote: this.#env.remoteAddress, initiator: this.#initiatorName || undefined, target: this.#target?.name, status: `0x${status.toString(16).padStart(4, '0')}`, why }, 'iSCSI login refused');
    this.#send(loginResponse({ transit: false, csg: req.csg, nsg: 0, versionActive: 0, isid: req.isid, tsih: 0, itt: req.itt, statusClass: status >> 8, statusDetail: status & 0xff, data: Buffer.alloc(0), ...this.#sns(false) }));
    this.#cb.close(`login refused: ${why}`, false);
    this.onClosed();
  }

  #onLogin(p: Pdu): void {
    const req = decodeLogin(p);
    if (this.#stage === -1) {
      if (req.versionMin > 0) return this.#loginFail(req, LoginStatus.UNSUPPORTED_VERSION, `version ${req.versionMin}..${req.versionMax}`);
      this.#isid = req.isid;
      this.#expCmdSN = req.cmdSN;
      this.#statSN = req.expStatSN;
      if (req.tsih !== 0) return this.#loginFail(req, LoginStatus.NO_SESSION, 'adding connections to a session is not supported (MaxConnections=1)');
    }
    if (req.csg === 2 || req.csg === 3 || (req.transit && req.nsg === 2) || (req.transit && req.nsg <= req.csg && req.nsg !== 3)) {
      return this.#loginFail(req, LoginStatus.INITIATOR_ERROR, `bad stage transition ${req.csg}->${req.nsg}`);
    }
    this.#loginBytes += p.data.length;
    if (this.#loginBytes > LOGIN_KEYS_BYTES_MAX) return this.#loginFail(req, LoginStatus.INITIATOR_ERROR, 'too many login keys');
    this.#loginKeys.push(p.data);
    if (req.cont) {
      // More keys follow: acknowledge with an empty response in the same stage.
      this.#send(loginResponse({ transit: false, csg: req.csg, nsg: req.nsg, versionActive: 0, isid: req.isid, tsih: 0, itt: req.itt, statusClass: 0, statusDetail: 0, data: Buffer.alloc(0), ...this.#sns(false) }));
      return;
    }
    const data = Buffer.concat(this.#loginKeys);
    this.#loginKeys = [];
    this.#loginBytes = 0;
    let keys: [string, string][];
    try {
      keys = parseTextKeys(data);
    } catch (err) {
      return this.#loginFail(req, LoginStatus.INITIATOR_ERROR, (err as Error).message);
    }
    const get = (k: string): string | undefined => keys.find(([key]) => key === k)?.[1];
    const reply: [string, string][] = [];
    if (this.#stage === -1) {
      const name = get('InitiatorName');
      if (name === undefined || name === '') return this.#loginFail(req, LoginStatus.MISSING_PARAMETER, 'no InitiatorName');
      this.#initiatorName = name;
      const type = get('SessionType') ?? 'Normal';
      if (type !== 'Normal' && type !== 'Discovery') return this.#loginFail(req, LoginStatus.INITIATOR_ERROR, `SessionType=${type}`);
      this.#discovery = type === 'Discovery';
      const cat = this.#env.catalog();
      this.#access = cat.initiators.get(name);
      if (this.#access !== undefined && !allowedFrom(this.#access.nets, this.#env.remoteAddress)) {
        return this.#loginFail(req, LoginStatus.FORBIDDEN, `initiator ${name} may not connect from ${this.#env.remoteAddress}`);
      }
      if (!this.#discovery) {
        const tn = get('TargetName');
        if (tn === undefined) return this.#loginFail(req, LoginStatus.MISSING_PARAMETER, 'no TargetName');
        const t = cat.targets.get(tn);
        if (t === undefined) return this.#loginFail(req, LoginStatus.NOT_FOUND, `no target ${tn}`);
        if (!this.#mayAccess(cat, tn)) return this.#loginFail(req, LoginStatus.FORBIDDEN, `initiator ${name} has no export of ${tn}`);
        this.#target = t;
        reply.push(['TargetPortalGroupTag', String(this.#env.portalGroupTag)]);
        if (t.alias !== undefined) reply.push(['TargetAlias', t.alias]);
      }
      this.#authRequired = this.#access !== undefined && this.#access.secret !== '';
      this.#stage = req.csg;
    }
    if (req.csg === 0) {
      const r = this.#security(keys, reply);
      if (r !== undefined) return this.#loginFail(req, r.status, r.why);
    } else {
      if (this.#authRequired && !this.#authDone) return this.#loginFail(req, LoginStatus.AUTH_FAILED, 'authentication required (CHAP)');
      if (!this.#declaredMrdsl) {
        reply.push(['MaxRecvDataSegmentLength', String(TARGET_MAX_RECV_DATA_SEGMENT)]);
        this.#declaredMrdsl = true;
      }
      const n = negotiateOperational(keys, this.#params, this.#discovery);
      if (n.error !== undefined) return this.#loginFail(req, LoginStatus.INITIATOR_ERROR, n.error);
      reply.push(...n.reply);
    }
    let transit = req.transit;
    if (req.csg === 0 && this.#authRequired && !this.#authDone) transit = false;
    const nsg = transit ? req.nsg : req.csg;
    const full = transit && nsg === 3;
    if (full && this.#tsih === 0) this.#tsih = this.#env.allocTsih();
    this.#send(loginResponse({
      transit, csg: req.csg, nsg, versionActive: 0, isid: this.#isid, tsih: full ? this.#tsih : 0, itt: req.itt, statusClass: 0, statusDetail: 0,
      data: encodeTextKeys(reply), ...this.#sns(true),
    }));
    if (full) {
      this.state = 'full';
      this.#decoder.setDigests(this.#params.headerDigest, this.#params.dataDigest);
      if (!this.#discovery) {
        this.#sessionKey = `${this.nexus}|${this.#target!.name}`;
        this.#env.registerSession(this.#sessionKey, this);
      }
      this.#env.log.info({ remote: this.#env.remoteAddress, initiator: this.#initiatorName, target: this.#target?.name, discovery: this.#discovery, tsih: this.#tsih, digests: [this.#params.headerDigest, this.#params.dataDigest] }, 'iSCSI login');
    }
  }

  #mayAccess(cat: TargetCatalog, target: string): boolean {
    if (cat.open === true) return true;
    return this.#access?.targets.some((t) => t.target === target) === true;
  }

  /** Security stage keys; returns a failure or undefined. */
  #security(keys: [string, string][], reply: [string, string][]): { status: number; why: string } | undefined {
    const a = this.#access;
    for (const [k, v] of keys) {
      switch (k) {
        case 'AuthMethod': {
          const offered = v.split(',');
          if (this.#authRequired) {
            if (!offered.includes('CHAP')) return { status: LoginStatus.AUTH_FAILED, why: `initiator offers AuthMethod=${v}; CHAP is required` };
            reply.push(['AuthMethod', 'CHAP']);
          } else if (offered.includes('None')) {
            reply.push(['AuthMethod', 'None']);
            this.#authDone = true;
          } else {
            reply.push(['AuthMethod', 'Reject']);
          }
          break;
        }
        case 'CHAP_A': {
          if (!this.#authRequired) { reply.push(['CHAP_A', 'Reject']); break; }
          if (!v.split(',').includes(String(CHAP_MD5))) return { status: LoginStatus.AUTH_FAILED, why: `CHAP_A=${v}: only MD5 (5) is supported` };
          this.#chap = newChallenge();
          this.#chapAlgorithmAgreed = true;
          reply.push(['CHAP_A', String(CHAP_MD5)], ['CHAP_I', String(this.#chap.id)], ['CHAP_C', `0x${this.#chap.challenge.toString('hex')}`]);
          break;
        }
        default:
          break;
      }
    }
    const n = keys.find(([k]) => k === 'CHAP_N')?.[1];
    const r = keys.find(([k]) => k === 'CHAP_R')?.[1];
    if (n !== undefined || r !== undefined) {
      if (!this.#authRequired || a === undefined || this.#chap === undefined || !this.#chapAlgorithmAgreed) return { status: LoginStatus.AUTH_FAILED, why: 'CHAP response without a challenge' };
      const got = r === undefined ? undefined : decodeChapValue(r);
      if (n !== a.username || got === undefined || !chapMatches(chapResponse(this.#chap.id, a.secret, this.#chap.challenge), got)) {
        return { status: LoginStatus.AUTH_FAILED, why: `CHAP authentication of ${this.#initiatorName} failed` };
      }
      const ci = keys.find(([k]) => k === 'CHAP_I')?.[1];
      const cc = keys.find(([k]) => k === 'CHAP_C')?.[1];
      if (ci !== undefined || cc !== undefined) {
        // Mutual CHAP: the initiator authenticates us.
        const mutual = this.#env.catalog().mutualChap;
        const id = ci === undefined ? undefined : Number(ci);
        const challenge = cc === undefined ? undefined : decodeChapValue(cc);
        if (mutual === undefined) return { status: LoginStatus.AUTH_FAILED, why: 'mutual CHAP asked for, but the target has no credentials configured' };
        if (id === undefined || !Number.isInteger(id) || id < 0 || id > 255 || challenge === undefined || challenge.length === 0) return { status: LoginStatus.AUTH_FAILED, why: 'bad mutual CHAP challenge' };
        if (challenge.equals(this.#chap.challenge)) return { status: LoginStatus.AUTH_FAILED, why: 'mutual CHAP challenge reflects ours' };
        reply.push(['CHAP_N', mutual.username], ['CHAP_R', `0x${chapResponse(id, mutual.secret, challenge).toString('hex')}`]);
      }
      this.#authDone = true;
      this.#chap = undefined;
    }
    return undefined;
  }

  // ---------------------------------------------------------------- full feature phase
  #onNop(p: Pdu): void {
    const itt = p.bhs.readUInt32BE(16);
    if (itt === RESERVED_TAG) return; // an answer to our ping, or a ping that wants no answer
    this.#send(nopIn({ lun: p.bhs.subarray(8, 16), itt, ttt: RESERVED_TAG, data: Buffer.from(p.data), ...this.#sns(true) }));
  }

  #lun(n: number): ScsiLun | undefined {
    let l = this.#luns.get(n);
    if (l !== undefined) return l;
    const t = this.#target;
    const entry = t?.luns.find((x) => x.lun === n);
    if (t === undefined || entry === undefined) return undefined;
    const shared = this.#env.lunShared(entry.backend.id);
    l = new ScsiLun({
      backend: entry.backend, lunId: entry.backend.id, lunNumbers: t.luns.map((x) => x.lun).sort((a, b) => a - b), targetName: t.name,
      nexus: this.nexus, relativePort: this.#env.portalGroupTag, reservations: this.#env.reservations, ...shared,
    });
    this.#luns.set(n, l);
    return l;
  }

  #onScsi(p: Pdu): void {
    if (this.#discovery) {
      this.#send(reject({ reason: RejectReason.PROTOCOL_ERROR, rejected: p.bhs, ...this.#sns(true) }));
      return;
    }
    const cmd = decodeScsiCommand(p);
    if (this.#tasks.has(cmd.itt)) {
      this.#send(reject({ reason: RejectReason.TASK_IN_PROGRESS, rejected: p.bhs, ...this.#sns(true) }));
      return;
    }
    const lunNumber = decodeLun(cmd.lun);
    const task: Task = { itt: cmd.itt, cmd, lunNumber, received: 0, wanted: 0, ttt: RESERVED_TAG, r2tSN: 0, burstEnd: 0, dataSN: 0, sequenceError: false, unsolicitedDone: false, aborted: false, running: false };
    if (cmd.write && cmd.expectedLength > 0) {
      if (cmd.expectedLength > COMMAND_BYTES_MAX) {
        this.#respond(task, check(SenseKey.ILLEGAL_REQUEST, Asc.INVALID_FIELD_IN_CDB));
        return;
      }
      task.wanted = cmd.expectedLength;
      if (p.data.length > 0 && (!this.#params.immediateData || p.data.length > Math.min(this.#params.firstBurst, cmd.expectedLength))) throw new PduError('immediate data beyond what was negotiated');
      if (p.data.length === cmd.expectedLength) {
        // All the data came with the command (a small write): use it where it lies, no copy. It is
        // a view of the received chunk, which nothing else writes to.
        task.buffer = p.data;
      } else {
        task.buffer = Buffer.alloc(cmd.expectedLength);
        p.data.copy(task.buffer, 0);
      }
      task.received = p.data.length;
      // Unsolicited Data-Out follows unless InitialR2T=Yes or the command's F bit says none does.
      task.unsolicitedDone = this.#params.initialR2T || cmd.final || task.received >= Math.min(this.#params.firstBurst, task.wanted);
      this.#tasks.set(task.itt, task);
      this.#advanceWrite(task);
      return;
    }
    if (p.data.length > 0) throw new PduError('data with a command that writes nothing');
    this.#tasks.set(task.itt, task);
    this.#run(task);
  }

  #onDataOut(p: Pdu): void {
    const itt = p.bhs.readUInt32BE(16);
    const task = this.#tasks.get(itt);
    if (task === undefined || task.buffer === undefined || task.running) return; // aborted or unknown: ignored (§11.7)
    const ttt = p.bhs.readUInt32BE(20);
    const offset = p.bhs.readUInt32BE(40);
    const final = (p.bhs[1]! & 0x80) !== 0;
    if (offset + p.data.length > task.buffer.length) throw new PduError(`Data-Out beyond the expected length (${offset}+${p.data.length} > ${task.buffer.length})`);
    if (ttt === RESERVED_TAG) {
      if (task.unsolicitedDone) throw new PduError('unsolicited Data-Out after the first burst');
      if (offset + p.data.length > this.#params.firstBurst) throw new PduError('unsolicited data beyond FirstBurstLength');
    } else if (ttt !== task.ttt) {
      throw new PduError('Data-Out with an unknown Target Transfer Tag');
    }
    // A DataSN gap, repeat or reordering means an earlier Data-Out was lost (RFC 7143 §7.8.2); at
    // ErrorRecoveryLevel 0 (no recovery R2T) the task ends with CHECK CONDITION, "protocol service
    // CRC error", once the sequence's last PDU is in (§7.8.1 b). The connection goes on.
    const dataSN = p.bhs.readUInt32BE(36);
    if (dataSN !== task.dataSN) {
      if (!task.sequenceError) this.#env.log.warn({ remote: this.#env.remoteAddress, itt, dataSN, expected: task.dataSN }, 'Data-Out out of sequence: the command fails');
      task.sequenceError = true;
    }
    task.dataSN = (dataSN + 1) >>> 0;
    p.data.copy(task.buffer, offset);
    task.received += p.data.length;
    if (final) {
      if (ttt === RESERVED_TAG) task.unsolicitedDone = true;
      else task.ttt = RESERVED_TAG;
    }
    if (task.sequenceError) {
      // No further R2T: answer when this sequence (the only one outstanding) is complete.
      if (final) this.#respond(task, check(SenseKey.ABORTED_COMMAND, Asc.PROTOCOL_SERVICE_CRC_ERROR));
      return;
    }
    this.#advanceWrite(task);
  }

  /** Runs the command once its data is in, else asks for the next burst. */
  #advanceWrite(task: Task): void {
    if (task.aborted) return;
    if (task.received >= task.wanted) {
      this.#run(task);
      return;
    }
    if (!task.unsolicitedDone || task.ttt !== RESERVED_TAG) return;
    const offset = task.received;
    const length = Math.min(this.#params.maxBurst, task.wanted - offset);
    task.ttt = this.#nextTtt;
    this.#nextTtt = this.#nextTtt >= 0x7fffffff ? 1 : this.#nextTtt + 1;
    task.burstEnd = offset + length;
    task.dataSN = 0; // a new data sequence
    this.#send(r2t({ lun: task.cmd.lun, itt: task.itt, ttt: task.ttt, r2tSN: task.r2tSN++, offset, length, ...this.#sns(false) }));
  }

  #run(task: Task): void {
    task.running = true;
    const cmd = task.cmd;
    const op = cmd.cdb[0]!;
    const lun = this.#lun(task.lunNumber);
    let work: Promise<ScsiResult>;
    if (lun === undefined) {
      if (op === 0x12 && this.#target !== undefined) {
        // INQUIRY of a LUN that is not there: peripheral qualifier 3 (SPC-4 §6.6.2).
        const b = Buffer.alloc(36);
        b[0] = 0x7f;
        b[2] = 0x06;
        b[3] = 0x02;
        b[4] = 31;
        work = Promise.resolve({ status: Status.GOOD, data: b });
      } else if (op === 0xa0 && this.#target !== undefined) {
        const first = this.#target.luns[0];
        const l = first === undefined ? undefined : this.#lun(first.lun);
        work = l === undefined ? Promise.resolve(check(SenseKey.ILLEGAL_REQUEST, Asc.LUN_NOT_SUPPORTED)) : l.execute(cmd.cdb, NO_DATA);
      } else {
        work = Promise.resolve(check(SenseKey.ILLEGAL_REQUEST, Asc.LUN_NOT_SUPPORTED));
      }
    } else {
      work = lun.execute(cmd.cdb, task.buffer ?? NO_DATA);
    }
    work.then(
      (r) => this.#respond(task, r),
      (err: unknown) => {
        this.#env.log.error({ err, itt: task.itt, op }, 'SCSI command failed');
        this.#respond(task, check(SenseKey.HARDWARE_ERROR, Asc.INTERNAL_TARGET_FAILURE));
      },
    );
  }

  #respond(task: Task, r: ScsiResult): void {
    if (this.#tasks.get(task.itt) === task) this.#tasks.delete(task.itt);
    if (task.aborted || this.state === 'closed') return;
    const cmd = task.cmd;
    const edtl = cmd.expectedLength;
    if (cmd.write && !cmd.read) {
      const needed = dataOutLength(cmd.cdb) ?? edtl;
      this.#send(scsiResponse({
        itt: task.itt, status: r.status, ...(r.sense !== undefined ? { sense: r.sense } : {}),
        ...(needed > edtl ? { overflow: needed - edtl } : needed < edtl && r.status === Status.GOOD ? { underflow: edtl - needed } : {}),
        ...this.#sns(true),
      }));
      this.#checkLogout();
      return;
    }
    // The command transfers at most its allocation length (SPC-4 §4.2.5.6); only what the initiator
    // did not provide room for beyond that is an overflow.
    const full = r.data ?? NO_DATA;
    const alloc = allocationLength(cmd.cdb);
    const data = alloc !== undefined && full.length > alloc ? full.subarray(0, alloc) : full;
    const allowed = cmd.read ? edtl : 0;
    const send = data.subarray(0, Math.min(data.length, allowed));
    const residual = data.length > allowed ? { overflow: data.length - allowed } : data.length < allowed ? { underflow: allowed - data.length } : {};
    if (send.length === 0 || r.status !== Status.GOOD) {
      let dataSN = 0;
      if (send.length > 0) dataSN = this.#sendDataIn(task, send, undefined);
      this.#send(scsiResponse({ itt: task.itt, status: r.status, ...(r.sense !== undefined ? { sense: r.sense } : {}), ...residual, expDataSN: dataSN, ...this.#sns(true) }));
    } else {
      this.#sendDataIn(task, send, { status: r.status, ...residual });
    }
    this.#checkLogout();
  }

  /** Data-In PDUs of at most the initiator's MaxRecvDataSegmentLength; the last may carry status. */
  #sendDataIn(task: Task, data: Buffer, status: { status: number; overflow?: number; underflow?: number } | undefined): number {
    const seg = this.#params.maxSendDataSegment;
    let dataSN = 0;
    for (let at = 0; at < data.length; at += seg) {
      const last = at + seg >= data.length;
      const piece = data.subarray(at, Math.min(data.length, at + seg));
      const withStatus = last && status !== undefined;
      this.#send(dataIn({
        final: last, lun: task.cmd.lun, itt: task.itt, dataSN: dataSN++, offset: at, data: piece,
        ...(withStatus ? status : {}), ...this.#sns(withStatus),
      }));
    }
    return dataSN;
  }

  #onTmf(p: Pdu): void {
    const fn = p.bhs[1]! & 0x7f;
    const itt = p.bhs.readUInt32BE(16);
    const ref = p.bhs.readUInt32BE(20);
    const lunNumber = decodeLun(p.bhs.subarray(8, 16));
    let response = 0;
    const resets: (Promise<void> | undefined)[] = [];
    const abortWhere = (pred: (t: Task) => boolean): void => {
      for (const t of [...this.#tasks.values()]) {
        if (pred(t)) {
          t.aborted = true;
          this.#tasks.delete(t.itt);
        }
      }
    };
    switch (fn) {
      case 1: { // ABORT TASK
        const t = this.#tasks.get(ref);
        if (t === undefined) response = 0; // already done: its response went out before this one
        else abortWhere((x) => x === t);
        break;
      }
      case 2: // ABORT TASK SET
      case 4: // CLEAR TASK SET
        abortWhere((t) => t.lunNumber === lunNumber);
        break;
      case 5: // LOGICAL UNIT RESET
        if (this.#target?.luns.some((l) => l.lun === lunNumber) !== true) { response = 2; break; }
        abortWhere((t) => t.lunNumber === lunNumber);
        resets.push(this.#releaseLegacy(() => true, lunNumber), this.#lun(lunNumber)?.reset());
        break;
      case 6: // TARGET WARM RESET
      case 7: // TARGET COLD RESET
        abortWhere(() => true);
        resets.push(this.#releaseLegacy(() => true));
        for (const l of this.#target?.luns ?? []) resets.push(this.#lun(l.lun)?.reset());
        break;
      case 8: // TASK REASSIGN: needs ErrorRecoveryLevel 2
        response = 4;
        break;
      default:
        response = 5;
    }
    // The answer goes once the reset is recorded: commands after it see the unit attention.
    Promise.all(resets).catch((err: unknown) => this.#env.log.warn({ err: (err as Error).message }, 'recording a reset failed')).finally(() => {
      this.#send(taskMgmtResponse({ itt, response, ...this.#sns(true) }));
      if (fn === 7) this.drop('TARGET COLD RESET');
    });
  }

  #onText(p: Pdu): void {
    const itt = p.bhs.readUInt32BE(16);
    const ttt = p.bhs.readUInt32BE(20);
    const cont = (p.bhs[1]! & 0x40) !== 0;
    if (ttt !== RESERVED_TAG && this.#textPending !== undefined && this.#textPending.ttt === ttt) {
      this.#sendText(itt, this.#textPending.rest, p.bhs.subarray(8, 16));
      return;
    }
    this.#textIn.push(p.data);
    if (this.#textIn.reduce((n, b) => n + b.length, 0) > LOGIN_KEYS_BYTES_MAX) throw new PduError('text request too long');
    if (cont) {
      this.#send(textResponse({ final: false, cont: false, lun: p.bhs.subarray(8, 16), itt, ttt: this.#allocTtt(), data: Buffer.alloc(0), ...this.#sns(true) }));
      return;
    }
    const keys = parseTextKeys(Buffer.concat(this.#textIn));
    this.#textIn = [];
    const reply: [string, string][] = [];
    for (const [k, v] of keys) {
      if (k === 'SendTargets') reply.push(...this.#sendTargets(v));
      else if (k === 'MaxRecvDataSegmentLength') {
        const n = Number(v);
        if (Number.isInteger(n) && n >= 512 && n <= 16777215) this.#params.maxSendDataSegment = n;
      } else reply.push([k, 'NotUnderstood']);
    }
    this.#sendText(itt, encodeTextKeys(reply), p.bhs.subarray(8, 16));
  }

  #allocTtt(): number {
    const t = this.#nextTtt;
    this.#nextTtt = this.#nextTtt >= 0x7fffffff ? 1 : this.#nextTtt + 1;
    return t;
  }

  #sendText(itt: number, all: Buffer, lun: Buffer): void {
    const seg = this.#params.maxSendDataSegment;
    if (all.length <= seg) {
      this.#textPending = undefined;
      this.#send(textResponse({ final: true, cont: false, lun, itt, ttt: RESERVED_TAG, data: all, ...this.#sns(true) }));
      return;
    }
    const ttt = this.#allocTtt();
    this.#textPending = { itt, ttt, rest: all.subarray(seg) };
    this.#send(textResponse({ final: false, cont: true, lun, itt, ttt, data: all.subarray(0, seg), ...this.#sns(true) }));
  }

  #sendTargets(v: string): [string, string][] {
    const cat = this.#env.catalog();
    const out: [string, string][] = [];
    let names: string[];
    if (this.#discovery) {
      if (v !== 'All' && !cat.targets.has(v)) return [];
      names = v === 'All' ? [...cat.targets.keys()] : [v];
    } else {
      if (v !== '' && v !== this.#target?.name) return [];
      names = [this.#target!.name];
    }
    for (const name of names.sort()) {
      if (!this.#mayAccess(cat, name)) continue;
      out.push(['TargetName', name]);
      const groups = cat.open === true
        ? [...cat.portalGroups.values()]
        : (this.#access?.targets ?? []).filter((t) => t.target === name).map((t) => cat.portalGroups.get(t.portalGroup)).filter((g) => g !== undefined);
      const seen = new Set<string>();
      for (const g of groups) {
        for (const portal of g.portals) {
          const addr = `${portal.host.includes(':') ? `[${portal.host}]` : portal.host}:${portal.port},${g.tag}`;
          if (!seen.has(addr)) out.push(['TargetAddress', addr]);
          seen.add(addr);
        }
      }
      if (seen.size === 0) out.push(['TargetAddress', `${this.#env.localPortal.host}:${this.#env.localPortal.port},${this.#env.portalGroupTag}`]);
    }
    return out;
  }

  #onLogout(p: Pdu): void {
    const itt = p.bhs.readUInt32BE(16);
    const reason = p.bhs[1]! & 0x7f;
    if (reason > 2) {
      this.#send(reject({ reason: RejectReason.INVALID_PDU_FIELD, rejected: p.bhs, ...this.#sns(true) }));
      return;
    }
    // Commands still running finish first; then the answer, then the connection goes.
    for (const t of this.#tasks.values()) if (!t.running) { t.aborted = true; this.#tasks.delete(t.itt); }
    this.#logoutPending = { itt };
    this.#checkLogout();
  }

  #checkLogout(): void {
    const pending = this.#logoutPending;
    if (pending === undefined || this.#tasks.size > 0 || this.state === 'closed' || this.#loggingOut) return;
    this.#loggingOut = true;
    // The nexus's RESERVE(6) reservation ends with it (SPC-2 §5.5.1): released, and seen by every
    // portal, before the answer, so the initiator's next command anywhere finds the LU free.
    const released = this.#sessionKey === undefined ? Promise.resolve() : this.#releaseLegacy((holder) => holder === this.nexus);
    void released.then(() => {
      if (this.state === 'closed') return;
      this.#send(logoutResponse({ itt: pending.itt, response: 0, ...this.#sns(true) }));
      this.#cb.close('logout', false);
      this.onClosed();
    });
  }
}

/** Whether `address` is inside one of `nets` (IPv4 CIDRs; empty: anywhere). */
export function allowedFrom(nets: readonly string[], address: string): boolean {
  if (nets.length === 0) return true;
  const ip = address.replace(/^::ffff:/, '');
  const v = ipv4(ip);
  for (const net of nets) {
    const [base, bits] = net.split('/');
    const b = ipv4(base ?? '');
    const n = bits === undefined ? 32 : Number(bits);
    if (b === undefined || v === undefined || !Number.isInteger(n) || n < 0 || n > 32) {
      if (base === ip) return true;
      continue;
    }
    const mask = n === 0 ? 0 : (0xffffffff << (32 - n)) >>> 0;
    if (((v & mask) >>> 0) === ((b & mask) >>> 0)) return true;
  }
  return false;
}

function ipv4(s: string): number | undefined {
  const m = /^(\d+)\.(\d+)\.(\d+)\.(\d+)$/.exec(s);
  if (m === null) return undefined;
  const parts = m.slice(1).map(Number);
  if (parts.some((x) => x > 255)) return undefined;
  return ((parts[0]! << 24) | (parts[1]! << 16) | (parts[2]! << 8) | parts[3]!) >>> 0;
}

export const TARGET_OPCODES = TOp;
