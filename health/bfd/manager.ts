// BFD sessions of egressd: one per BGP peer that asks for it. The manager owns
// the sockets (through a BfdTransport), one scheduler timer for all sessions,
// and demultiplexes received packets (RFC 5880 6.8.6: by Your Discriminator, or
// by peer address while the peer does not know ours yet). It emits:
//
//   "up"    a session reached Up
//   "down"  a session left Up (reason = local diagnostic, e.g. "control detection
//           time expired"); the ToR's paths through this peer should be treated as gone
//   "state" every state change, for logs and metrics
import { randomInt } from "node:crypto";
import { EventEmitter } from "node:events";
import { formatAddress, parseAddress, unmapV4 } from "../../core/ip.js";
import { systemClock, type Clock } from "./clock.js";
import { BfdDiag, BfdState, decodeControl, diagText, encodeControl, stateText } from "./packet.js";
import { BfdAuthenticator, type BfdAuthConfig } from "./auth.js";
import { Scheduler, type ScheduledTask } from "./scheduler.js";
import { BfdSession, type SessionSnapshot, type StateChange } from "./session.js";
import {
  UdpTransport,
  type BfdTransport,
  type Listener,
  type OffloadHooks,
  type RxMeta,
  type TxChannel,
} from "./transport.js";

export interface BfdPeerConfig {
  /** The peer (BGP neighbour) address: "10.0.0.1", "fd00::1", "fe80::1%eth0". */
  peer: string;
  /** The local address the session runs from (the BGP session's local address). */
  local: string;
  /** Desired Min TX Interval once Up, milliseconds (default 300, as FRR). */
  desiredMinTxMs?: number;
  /** Required Min RX Interval, milliseconds (default 300). */
  requiredMinRxMs?: number;
  /** Detect multiplier (default 3). */
  detectMultiplier?: number;
  /** Wait for the peer to speak first. */
  passive?: boolean;
  /** Free-form label carried in events and snapshots (e.g. the ToR's name). */
  name?: string;
  /** RFC 5880 6.7 SHA1 authentication; both sides must use the same type, key id and key. */
  auth?: BfdAuthConfig;
}

export interface BfdEventBase {
  /** Session key: the normalised peer address. */
  key: string;
  name?: string;
  peer: string;
  local: string;
  /** Clock time of the change (monotonic milliseconds). */
  at: number;
}

export interface BfdStateEvent extends BfdEventBase {
  from: string;
  to: string;
  diag: BfdDiag;
  /** Text of diag, e.g. "control detection time expired". */
  reason: string;
  remoteDiag: BfdDiag;
  remoteState: string;
}

export type BfdUpEvent = BfdEventBase;

export interface BfdDownEvent extends BfdEventBase {
  /** "Down", or "AdminDown" when egressd itself took the session down. */
  to: string;
  diag: BfdDiag;
  /** Why, from the local diagnostic: "control detection time expired", "neighbor signaled session down", ... */
  reason: string;
  remoteDiag: BfdDiag;
  remoteReason: string;
  /**
   * The peer said AdminDown (it is being shut down on purpose). RFC 5882 3.2 says
   * this must not by itself be taken as a forwarding failure; FRR's bgpd drops
   * the BGP session anyway, so the paths go either way.
   */
  peerAdminDown: boolean;
}

export interface BfdManagerEvents {
  up: [BfdUpEvent];
  down: [BfdDownEvent];
  state: [BfdStateEvent];
}

export interface BfdSessionInfo extends SessionSnapshot {
  key: string;
  name?: string;
  peer: string;
  local: string;
  /** Our UDP source port for this session. */
  localPort: number;
  stateName: string;
  remoteStateName: string;
  localDiagText: string;
  remoteDiagText: string;
  /** Received packets dropped after decoding for this session (authentication, ...). */
  rxDiscarded: number;
}

export interface BfdManagerStats {
  /** Packets this manager read and decoded (with an offloading transport, only those passed up). */
  rxHandled: number;
  /** Packets the transport dropped because their TTL / hop limit was not 255 (RFC 5881 5; helper only). */
  rxTtlDrops: number;
  /** Times the transport's helper process was started (egressd-bfd; 0 for node:dgram). */
  helperStarts: number;
  /** Packets that failed decoding or RFC 5880 6.8.6 checks. */
  rxInvalid: number;
  /** Valid packets that matched no session. */
  rxNoSession: number;
  /** Packets with authentication (egressd never configures it). */
  rxAuth: number;
  /** Your Discriminator 0 but a My Discriminator other than the peer's learned one: forged or stale. */
  rxDiscrMismatch: number;
  /** Scheduler wake-ups. */
  wakeups: number;
  txErrors: number;
  rxErrors: number;
}

/** The subset of a pino logger the manager uses. */
export interface BfdLogger {
  debug(obj: object, msg: string): void;
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
  error(obj: object, msg: string): void;
}

export interface BfdManagerOptions {
  transport?: BfdTransport;
  clock?: Clock;
  random?: () => number;
  logger?: BfdLogger;
  /** Sessions whose deadlines are this close share a wake-up (default 1 ms). */
  slackMs?: number;
  /** Longest time remove()/stop() wait for AdminDown packets to go out (default 2000 ms). */
  adminDownWaitMs?: number;
  /** Passed to every session: the rate before Up (tests only; default 1 s as RFC 5880 requires). */
  slowTxUs?: number;
}

export const DEFAULT_INTERVAL_MS = 300;
export const DEFAULT_DETECT_MULT = 3;

/** Normalised text form of an address (lower case, compressed IPv6, IPv4-mapped as IPv4, zone kept). */
export function normalizeAddress(address: string): string {
  // Received source addresses of IPv4 packets on a dual-stack socket come as
  // ::ffff:a.b.c.d: those are the IPv4 peer, so they compare as IPv4.
  const pct = address.indexOf("%");
  const parsed = parseAddress(pct < 0 ? address : address.slice(0, pct));
  if (!parsed) throw new Error(`BFD: not an IP address: ${address}`);
  const a = unmapV4(parsed);
  return `${formatAddress(a.family, a.value)}${pct < 0 ? "" : address.slice(pct)}`;
}

function toUs(ms: number | undefined, name: string): number {
  const v = ms ?? DEFAULT_INTERVAL_MS;
  if (!Number.isFinite(v) || v <= 0 || v > 4_294_967) throw new Error(`BFD: ${name} out of range: ${v} ms`);
  return Math.max(1, Math.round(v * 1000));
}

/** The receiving socket of one local address, shared by its sessions. */
interface LocalGroup {
  listener: Listener;
  refs: number;
}

/** What an offloaded session's transport was last told (OffloadControl). */
interface Programmed {
  /** The periodic packet, unsigned, in hex; null when none is sent. */
  tx: string | null;
  intervalUs: number;
  epoch: number;
  detectUs: number;
  /** Sequence number the periodic packet was signed with (authentication only). */
  seq: number;
}

class Entry implements ScheduledTask {
  rxDiscarded = 0;
  quiet?: () => void;
  /** Signs and checks packets when the session uses authentication. */
  auth?: BfdAuthenticator;
  session!: BfdSession;
  /** The transport runs the periodic half (tx.offload, SessionOptions.offloaded). */
  offloaded = false;
  programmed: Programmed = { tx: null, intervalUs: 0, epoch: -1, detectUs: 0, seq: 0 };
  /** Token of the last packet accepted, for telling a stale expiry from a real one. */
  lastAccepted = -1n;

  constructor(
    readonly key: string,
    readonly localKey: string,
    public cfg: BfdPeerConfig,
    readonly tx: TxChannel,
    private readonly afterFire: () => void,
  ) {}

  nextDeadline(): number {
    return this.session.nextDeadline();
  }

  fire(now: number, dueBy: number): void {
    this.session.advance(now, dueBy);
    this.sync();
    if (this.quiet && !this.session.adminDownPending()) this.quiet();
    this.afterFire();
  }

  /** Tells the transport what changed in the periodic half, when it runs it. */
  sync(): void {
    const off = this.tx.offload;
    if (!this.offloaded || !off) return;
    const was = this.programmed;
    const per = this.session.periodic();
    if (!per) {
      if (was.tx !== null) off.program(null);
      was.tx = null;
    } else {
      const plain = encodeControl(per.packet);
      const hex = plain.toString("hex");
      const reschedule = per.epoch !== was.epoch;
      // Only keyed (not meticulous) SHA1 is offloaded: one signed packet may be sent again, but
      // never after one with a higher sequence number (a Final, a change of state), which the peer
      // would take for a replay: those are followed by the periodic packet signed anew.
      const resign = this.auth !== undefined && this.auth.sequence !== was.seq;
      if (hex !== was.tx || reschedule || per.intervalUs !== was.intervalUs || resign) {
        const packet = this.auth ? this.auth.seal(per.packet) : plain;
        off.program({ packet, intervalUs: per.intervalUs, mult1: per.mult1, reschedule });
        this.programmed = {
          ...was,
          tx: hex,
          intervalUs: per.intervalUs,
          epoch: per.epoch,
          seq: this.auth?.sequence ?? 0,
        };
      }
    }
    const detectUs = this.session.detectionTimeUs();
    if (detectUs !== this.programmed.detectUs) {
      off.detection(detectUs);
      this.programmed.detectUs = detectUs;
    }
  }

  /** The transport saw no packet for the detection time. */
  expired(lastRx: bigint, now: number): void {
    // A packet accepted after the one the transport counted from: its news is on the way.
    if (this.lastAccepted > lastRx) return;
    this.session.expire(now);
    this.sync();
    this.afterFire();
  }
}

export class BfdManager extends EventEmitter<BfdManagerEvents> {
  private readonly transport: BfdTransport;
  private readonly clock: Clock;
  private readonly scheduler: Scheduler;
  private readonly random: () => number;
  private readonly log?: BfdLogger;
  private readonly adminDownWaitMs: number;
  private readonly slowTxUs?: number;
  private readonly entries = new Map<string, Entry>();
  private readonly byDiscr = new Map<number, Entry>();
  private readonly locals = new Map<string, Promise<LocalGroup>>();
  private readonly reserved = new Set<string>();
  private readonly addrCache = new Map<string, string>();
  private reconciling: Promise<void> = Promise.resolve();
  private readonly queued: Array<{ entry: Entry; change: StateChange }> = [];
  private readonly counters = { rxHandled: 0, rxInvalid: 0, rxNoSession: 0, rxAuth: 0, rxDiscrMismatch: 0 };
  private stopped = false;

  constructor(opts: BfdManagerOptions = {}) {
    super();
    this.transport = opts.transport ?? new UdpTransport();
    this.clock = opts.clock ?? systemClock;
    this.scheduler = new Scheduler(this.clock, opts.slackMs ?? 1);
    this.random = opts.random ?? Math.random;
    this.log = opts.logger;
    this.adminDownWaitMs = opts.adminDownWaitMs ?? 2000;
    this.slowTxUs = opts.slowTxUs;
  }

  get stats(): BfdManagerStats {
    return {
      ...this.counters,
      rxTtlDrops: this.transport.stats.ttlDrops ?? 0,
      helperStarts: this.transport.stats.spawns ?? 0,
      wakeups: this.scheduler.wakeups,
      txErrors: this.transport.stats.txErrors,
      rxErrors: this.transport.stats.rxErrors,
    };
  }

  /** Starts a session towards cfg.peer. Rejects if one exists or the sockets cannot be opened. */
  async add(cfg: BfdPeerConfig): Promise<void> {
    if (this.stopped) throw new Error("BFD manager is stopped");
    const key = normalizeAddress(cfg.peer);
    const localKey = normalizeAddress(cfg.local);
    const timers = this.timersOf(cfg);
    if (this.entries.has(key) || this.reserved.has(key)) throw new Error(`BFD: a session to ${key} exists`);
    this.reserved.add(key);
    try {
      await this.acquireLocal(localKey);
      let tx: TxChannel;
      // The transport's news of the session, once the session exists.
      const made: { entry?: Entry } = {};
      const hooks: OffloadHooks = {
        expired: (lastRx) => made.entry?.expired(lastRx, this.clock.now()),
        activity: (a) => made.entry?.session.addOffloaded(a),
      };
      try {
        tx = await this.transport.connect(localKey, key, hooks);
      } catch (e) {
        this.releaseLocal(localKey);
        throw e;
      }
      const entry = new Entry(key, localKey, { ...cfg }, tx, () => this.flush());
      made.entry = entry;
      if (cfg.auth) entry.auth = new BfdAuthenticator(cfg.auth);
      // Meticulous authentication signs every packet anew: those sessions send from here.
      entry.offloaded = tx.offload !== undefined && cfg.auth?.type !== "meticulous-keyed-sha1";
      const now = this.clock.now();
      entry.session = new BfdSession(
        {
          ...timers,
          localDiscriminator: this.allocateDiscriminator(),
          passive: cfg.passive ?? false,
          slowTxUs: this.slowTxUs,
          random: this.random,
          offloaded: entry.offloaded,
        },
        {
          send: (p) => tx.send(entry.auth ? entry.auth.seal(p) : encodeControl(p)),
          stateChange: (change) => this.queued.push({ entry, change }),
        },
        now,
      );
      this.entries.set(key, entry);
      this.byDiscr.set(entry.session.localDiscriminator, entry);
      this.log?.info(
        { peer: key, local: localKey, port: tx.localPort, discriminator: entry.session.localDiscriminator },
        "BFD session added",
      );
      this.scheduler.add(entry);
      entry.sync();
    } finally {
      this.reserved.delete(key);
    }
  }

  /** Applies new settings to an existing session (timers in place, with a poll sequence if Up). */
  async update(cfg: BfdPeerConfig): Promise<void> {
    const key = normalizeAddress(cfg.peer);
    const entry = this.entries.get(key);
    if (!entry) return this.add(cfg);
    if (
      normalizeAddress(cfg.local) !== entry.localKey ||
      (cfg.passive ?? false) !== (entry.cfg.passive ?? false)
    ) {
      await this.remove(key);
      return this.add(cfg);
    }
    entry.cfg = { ...cfg };
    entry.session.updateTimers(this.timersOf(cfg), this.clock.now());
    this.afterInput(entry);
  }

  /**
   * Stops the session to `peer`. Unless graceful is false, the peer is first told
   * AdminDown (so its BGP drops at once instead of waiting for detection).
   */
  async remove(peer: string, opts: { graceful?: boolean } = {}): Promise<void> {
    const key = normalizeAddress(peer);
    const entry = this.entries.get(key);
    if (!entry) return;
    if (opts.graceful ?? true) await this.adminDownAndWait(entry);
    if (this.entries.get(key) !== entry) return; // removed meanwhile
    this.entries.delete(key);
    this.byDiscr.delete(entry.session.localDiscriminator);
    this.scheduler.remove(entry);
    entry.tx.close();
    this.releaseLocal(entry.localKey);
    this.log?.info({ peer: key }, "BFD session removed");
  }

  /**
   * Makes the set of sessions match `peers` (level-triggered, as the daemon's
   * reconcilers). Calls are serialised: a second call runs after the first.
   */
  reconcile(peers: readonly BfdPeerConfig[]): Promise<void> {
    const run = this.reconciling.then(() => this.reconcileNow(peers));
    this.reconciling = run.catch(() => {});
    return run;
  }

  private async reconcileNow(peers: readonly BfdPeerConfig[]): Promise<void> {
    const want = new Map(peers.map((p) => [normalizeAddress(p.peer), p]));
    const errors: Error[] = [];
    const attempt = async (f: () => Promise<void>) => {
      try {
        await f();
      } catch (e) {
        errors.push(e as Error);
      }
    };
    await Promise.all(
      [...this.entries.keys()].filter((k) => !want.has(k)).map((k) => attempt(() => this.remove(k))),
    );
    await Promise.all(
      [...want].map(([k, cfg]) => {
        const e = this.entries.get(k);
        if (!e) return attempt(() => this.add(cfg));
        if (sameConfig(e.cfg, cfg)) return Promise.resolve();
        // A new key or type cannot be switched in place: the session starts again with it.
        if (!sameAuth(e.cfg.auth, cfg.auth))
          return attempt(async () => (await this.remove(k), await this.add(cfg)));
        return attempt(() => this.update(cfg));
      }),
    );
    if (errors.length)
      throw new AggregateError(errors, `BFD: ${errors.length} session(s) failed: ${errors[0]?.message}`);
  }

  /** Takes a session administratively down without removing it. */
  adminDown(peer: string): void {
    const entry = this.entries.get(normalizeAddress(peer));
    if (!entry) return;
    entry.session.adminDown(this.clock.now());
    this.afterInput(entry);
  }

  /** Brings a session out of AdminDown. */
  enable(peer: string): void {
    const entry = this.entries.get(normalizeAddress(peer));
    if (!entry) return;
    entry.session.enable(this.clock.now());
    this.afterInput(entry);
  }

  /** Graceful stop: every session goes AdminDown, the peers are told, sockets close. */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    await Promise.all([...this.entries.keys()].map((k) => this.remove(k)));
    this.scheduler.stop();
    this.transport.close?.();
  }

  get(peer: string): BfdSessionInfo | undefined {
    const entry = this.entries.get(normalizeAddress(peer));
    return entry && this.info(entry);
  }

  list(): BfdSessionInfo[] {
    return [...this.entries.values()].map((e) => this.info(e));
  }

  // --- internals -------------------------------------------------------------

  private timersOf(cfg: BfdPeerConfig) {
    const detectMult = cfg.detectMultiplier ?? DEFAULT_DETECT_MULT;
    if (!Number.isInteger(detectMult) || detectMult < 1 || detectMult > 255)
      throw new Error(`BFD: detect multiplier out of range: ${detectMult}`);
    return {
      desiredMinTxUs: toUs(cfg.desiredMinTxMs, "desired min tx"),
      requiredMinRxUs: toUs(cfg.requiredMinRxMs, "required min rx"),
      detectMult,
    };
  }

  private info(e: Entry): BfdSessionInfo {
    const s = e.session.snapshot();
    const info: BfdSessionInfo = {
      ...s,
      key: e.key,
      peer: e.key,
      local: e.localKey,
      localPort: e.tx.localPort,
      stateName: stateText(s.state),
      remoteStateName: stateText(s.remoteState),
      localDiagText: diagText(s.localDiag),
      remoteDiagText: diagText(s.remoteDiag),
      rxDiscarded: e.rxDiscarded,
    };
    if (e.cfg.name !== undefined) info.name = e.cfg.name;
    return info;
  }

  private allocateDiscriminator(): number {
    for (;;) {
      const d = randomInt(1, 0x1_0000_0000);
      if (!this.byDiscr.has(d)) return d;
    }
  }

  private acquireLocal(localKey: string): Promise<LocalGroup> {
    let p = this.locals.get(localKey);
    if (!p) {
      p = this.transport
        .listen(localKey, (msg, from, port, meta) => this.onPacket(localKey, msg, from, port, meta))
        .then((listener) => ({ listener, refs: 0 }));
      this.locals.set(localKey, p);
      p.catch(() => this.locals.delete(localKey));
    }
    return p.then((g) => {
      g.refs++;
      return g;
    });
  }

  private releaseLocal(localKey: string): void {
    const p = this.locals.get(localKey);
    if (!p) return;
    void p.then((g) => {
      g.refs--;
      if (g.refs <= 0 && this.locals.get(localKey) === p) {
        this.locals.delete(localKey);
        g.listener.close();
      }
    });
  }

  private onPacket(localKey: string, msg: Buffer, from: string, _port: number, meta?: RxMeta): void {
    this.counters.rxHandled++;
    const res = decodeControl(msg);
    if (!res.ok) {
      this.counters.rxInvalid++;
      this.log?.debug({ from, local: localKey, reason: res.reason }, "BFD packet discarded");
      return;
    }
    const p = res.packet;
    const peer = this.normalizeCached(from);
    if (peer === undefined) {
      this.counters.rxNoSession++;
      return;
    }
    let entry: Entry | undefined;
    if (p.yourDiscriminator !== 0) {
      entry = this.byDiscr.get(p.yourDiscriminator);
      // Single hop: the discriminator must also belong to the session with this peer.
      if (entry && (entry.key !== peer || entry.localKey !== localKey)) entry = undefined;
    } else {
      // Single hop has one session per peer address: look it up and check the local address.
      entry = this.entries.get(peer);
      if (entry && entry.localKey !== localKey) entry = undefined;
      // Your Discriminator 0 is matched by address alone, which anyone on the
      // link can forge. Once the peer's discriminator is known, a packet that
      // names another one is not from this session's peer (a peer that really
      // restarted is heard again once our detection time has expired).
      const learned = entry?.session.remoteDiscriminator ?? 0;
      if (entry && learned !== 0 && p.myDiscriminator !== learned) {
        this.counters.rxDiscrMismatch++;
        entry.rxDiscarded++;
        this.log?.debug(
          { from, learned, got: p.myDiscriminator },
          "BFD packet with a foreign discriminator discarded",
        );
        return;
      }
    }
    if (!entry) {
      this.counters.rxNoSession++;
      return;
    }
    if (entry.auth) {
      const why = entry.auth.verify(msg, p, this.clock.now(), entry.session.detectionTimeUs() / 1000);
      if (why) {
        this.counters.rxAuth++;
        entry.rxDiscarded++;
        this.log?.debug({ from, reason: why }, "BFD packet failed authentication");
        return;
      }
    } else if (p.authPresent) {
      // RFC 5880 6.8.6: A bit set and no authentication in use -> discard.
      this.counters.rxAuth++;
      entry.rxDiscarded++;
      return;
    }
    // The kernel's receive time when the transport has it: a late wake-up is not a late packet.
    entry.session.receive(p, meta?.at ?? this.clock.now());
    if (entry.offloaded && entry.tx.offload && meta) {
      entry.lastAccepted = meta.token;
      // A packet the peer will send again unchanged while nothing happens: Up, no Poll, no Final.
      const steady =
        p.state === BfdState.Up && !p.poll && !p.final && entry.session.sessionState === BfdState.Up;
      const detectUs = entry.session.detectionTimeUs();
      entry.tx.offload.accepted(meta.token, detectUs, steady ? msg : null);
      entry.programmed.detectUs = detectUs;
    }
    this.afterInput(entry);
  }

  /** normalizeAddress() for received source addresses, memoised (parsing costs more than the rest of a packet). */
  private normalizeCached(address: string): string | undefined {
    let n = this.addrCache.get(address);
    if (n === undefined) {
      try {
        n = normalizeAddress(address);
      } catch {
        return undefined;
      }
      if (this.addrCache.size >= 1024) this.addrCache.clear();
      this.addrCache.set(address, n);
    }
    return n;
  }

  private afterInput(entry: Entry): void {
    entry.sync();
    this.scheduler.kick(entry.session.nextDeadline());
    this.flush();
  }

  private flush(): void {
    while (this.queued.length) {
      const { entry, change } = this.queued.shift()!;
      const base: BfdEventBase = { key: entry.key, peer: entry.key, local: entry.localKey, at: change.at };
      if (entry.cfg.name !== undefined) base.name = entry.cfg.name;
      const stateEv: BfdStateEvent = {
        ...base,
        from: stateText(change.from),
        to: stateText(change.to),
        diag: change.localDiag,
        reason: diagText(change.localDiag),
        remoteDiag: change.remoteDiag,
        remoteState: stateText(change.remoteState),
      };
      this.log?.info(stateEv, `BFD ${entry.key} ${stateEv.from} -> ${stateEv.to}`);
      this.safeEmit("state", stateEv);
      if (change.to === BfdState.Up) this.safeEmit("up", base);
      if (change.from === BfdState.Up) {
        this.safeEmit("down", {
          ...base,
          to: stateText(change.to),
          diag: change.localDiag,
          reason: diagText(change.localDiag),
          remoteDiag: change.remoteDiag,
          remoteReason: diagText(change.remoteDiag),
          peerAdminDown: change.remoteState === BfdState.AdminDown,
        });
      }
    }
  }

  private safeEmit<K extends keyof BfdManagerEvents>(event: K, ...args: BfdManagerEvents[K]): void {
    try {
      (this.emit as (e: K, ...a: BfdManagerEvents[K]) => boolean)(event, ...args);
    } catch (e) {
      this.log?.error({ err: e, event }, "BFD event listener threw");
    }
  }

  private adminDownAndWait(entry: Entry): Promise<void> {
    const now = this.clock.now();
    entry.session.adminDown(now);
    this.afterInput(entry);
    if (!entry.session.adminDownPending()) return Promise.resolve();
    return new Promise<void>((resolve) => {
      const timer = this.clock.setTimer(this.adminDownWaitMs, () => done());
      const done = () => {
        this.clock.clearTimer(timer);
        entry.quiet = undefined;
        resolve();
      };
      entry.quiet = done;
    });
  }
}

function sameConfig(a: BfdPeerConfig, b: BfdPeerConfig): boolean {
  return (
    normalizeAddress(a.local) === normalizeAddress(b.local) &&
    a.desiredMinTxMs === b.desiredMinTxMs &&
    a.requiredMinRxMs === b.requiredMinRxMs &&
    a.detectMultiplier === b.detectMultiplier &&
    (a.passive ?? false) === (b.passive ?? false) &&
    a.name === b.name &&
    sameAuth(a.auth, b.auth)
  );
}

function sameAuth(a: BfdAuthConfig | undefined, b: BfdAuthConfig | undefined): boolean {
  return a?.type === b?.type && a?.keyId === b?.keyId && a?.secret === b?.secret;
}
