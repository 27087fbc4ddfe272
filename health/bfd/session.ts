// One BFD session in asynchronous mode (RFC 5880): the state machine
// (AdminDown/Down/Init/Up), timer negotiation with poll sequences, jitter and
// detection. No I/O and no timers of its own: packets go out through
// hooks.send, time comes in as arguments, and the owner (the manager's
// scheduler) calls advance() when nextDeadline() is reached. That makes every
// behaviour testable with a hand-driven clock.
//
// Times are clock milliseconds (fractional); protocol intervals are microseconds.
import { BfdDiag, BfdState, BFD_VERSION, type ControlPacket } from "./packet.js";

/** Interval a session must not beat while not Up (RFC 5880 6.8.3): one second. */
export const SLOW_TX_US = 1_000_000;

export interface SessionTimers {
  /** Desired Min TX Interval once the session is Up (microseconds). */
  desiredMinTxUs: number;
  /** Required Min RX Interval (microseconds). */
  requiredMinRxUs: number;
  detectMult: number;
}

export interface SessionOptions extends SessionTimers {
  /** Non-zero, unique among the local sessions. */
  localDiscriminator: number;
  /** Passive role: do not transmit until the peer has been heard from. */
  passive?: boolean;
  /** Start administratively down. */
  adminDown?: boolean;
  /** Override the one-second slow rate (tests only; the RFC requires >= 1 s). */
  slowTxUs?: number;
  /** Random numbers in [0, 1) for jitter (default Math.random). */
  random?: () => number;
  /**
   * Periodic transmission and detection run elsewhere (the egressd-bfd helper,
   * health/bfd/offload.ts): the session describes them with periodic() and
   * detectionTimeUs(), is told of a silent peer with expire(), and learns what
   * was sent and received with addOffloaded(). It still sends what is not
   * periodic (a Final, a change of state) through hooks.send.
   */
  offloaded?: boolean;
}

/** What an offloaded session sends periodically (see SessionOptions.offloaded). */
export interface PeriodicTx {
  packet: ControlPacket;
  /** Negotiated interval before jitter, microseconds. */
  intervalUs: number;
  /** Jitter of 10-25% instead of 0-25% (detect multiplier 1, RFC 5880 6.8.7). */
  mult1: boolean;
  /**
   * Changes when the schedule starts again: the next packet is due one
   * jittered interval after the last one sent (as when the interval changed
   * or a packet just went out for a change of state).
   */
  epoch: number;
}

/** What the offloaded half did since it last said (SessionOptions.offloaded; OffloadHooks.activity). */
export interface OffloadedActivity {
  /** Packets received that it did not pass on (identical to the last one accepted). */
  rxPackets: number;
  /** Periodic packets sent. */
  txPackets: number;
  /** Clock times of the last of each, or -Infinity. */
  lastRxAt: number;
  lastTxAt: number;
  /** Least slack before the detection time among those packets, microseconds; null if none. */
  rxSlackMinUs: number | null;
  /** Latest a periodic packet left after its time, microseconds. */
  txLateMaxUs: number;
}

export interface StateChange {
  from: BfdState;
  to: BfdState;
  /** Local diagnostic after the change (why we went down). */
  localDiag: BfdDiag;
  /** Last diagnostic the peer sent. */
  remoteDiag: BfdDiag;
  /** Last state the peer sent. */
  remoteState: BfdState;
  at: number;
}

/** Called synchronously from inside the session: hooks must not call back into it. */
export interface SessionHooks {
  send(packet: ControlPacket): void;
  stateChange(change: StateChange): void;
}

export interface SessionCounters {
  /** Packets accepted by this session. */
  rxPackets: number;
  txPackets: number;
  /** Every state change. */
  transitions: number;
  /** Changes into Up. */
  ups: number;
  /** Changes from Up to Down or AdminDown. */
  downs: number;
  pollSequences: number;
}

export interface SessionSnapshot {
  state: BfdState;
  remoteState: BfdState;
  localDiag: BfdDiag;
  remoteDiag: BfdDiag;
  /** Diagnostic of the last change out of Up (None if it never went down). */
  lastDownDiag: BfdDiag;
  localDiscriminator: number;
  remoteDiscriminator: number;
  /** Values we advertise now (bfd.DesiredMinTxInterval, bfd.RequiredMinRxInterval). */
  desiredMinTxUs: number;
  requiredMinRxUs: number;
  detectMult: number;
  /** What the peer advertised last. */
  remoteDesiredMinTxUs: number;
  remoteMinRxUs: number;
  remoteDetectMult: number;
  /** Negotiated transmit interval before jitter, 0 when periodic transmission is off. */
  txIntervalUs: number;
  /** Detection time for the peer's packets (0 until the peer has been heard). */
  detectionTimeUs: number;
  pollActive: boolean;
  lastRxAt: number;
  lastTxAt: number;
  lastChangeAt: number;
  /**
   * Since the session last came Up: the least slack between two received
   * packets, i.e. the detection time in force minus the gap, in
   * microseconds. Near 0 means the session nearly went down; null until two
   * packets arrived while Up.
   */
  rxSlackMinUs: number | null;
  /**
   * Since the session last came Up: the most a periodic packet left after its
   * time, in microseconds (the scheduler or the thread running late). The
   * peer's detection time allows detectMult - 1 intervals of it.
   */
  txLateMaxUs: number;
  counters: SessionCounters;
}

export class BfdSession {
  // RFC 5880 6.8.1 state variables.
  private state: BfdState;
  private remoteState = BfdState.Down;
  readonly localDiscriminator: number;
  private remoteDiscr = 0;

  /** The peer's discriminator as last heard (bfd.RemoteDiscr); 0 when none is known. */
  get remoteDiscriminator(): number {
    return this.remoteDiscr;
  }
  private localDiag = BfdDiag.None;
  private remoteDiag = BfdDiag.None;
  private desiredMinTxUs: number;
  private requiredMinRxUs: number;
  private remoteMinRxUs = 1;
  private remoteDemand = false;
  private detectMult: number;
  // What the peer advertised last.
  private remoteDesiredMinTxUs = 0;
  private remoteDetectMult = 0;

  // Values in force while a poll sequence is outstanding: an increased TX
  // interval and a decreased RX interval wait for the Final (RFC 5880 6.8.3).
  private txBasisUs: number;
  private rxBasisUs: number;
  private pollActive = false;

  private config: SessionTimers;
  private readonly passive: boolean;
  private readonly slowTxUs: number;
  private readonly random: () => number;

  private lastTxAt = -Infinity;
  private lastRxAt = -Infinity;
  private lastChangeAt: number;
  private nextTxAt = Infinity;
  private detectAt = Infinity;
  /** In AdminDown, keep telling the peer until then. */
  private adminDownUntil = -Infinity;
  private lastDownDiag = BfdDiag.None;
  /** See SessionSnapshot.rxSlackMinUs. */
  private rxSlackMinUs = Infinity;
  /** See SessionSnapshot.txLateMaxUs. */
  private txLateMaxUs = 0;
  /** Interval and permission the current nextTxAt was computed for. */
  private scheduledIntervalUs = -1;
  private readonly offloaded: boolean;
  /** See PeriodicTx.epoch. */
  private txEpoch = 0;

  readonly counters: SessionCounters = {
    rxPackets: 0,
    txPackets: 0,
    transitions: 0,
    ups: 0,
    downs: 0,
    pollSequences: 0,
  };

  constructor(
    opts: SessionOptions,
    private readonly hooks: SessionHooks,
    now: number,
  ) {
    validateTimers(opts);
    if (
      !Number.isInteger(opts.localDiscriminator) ||
      opts.localDiscriminator <= 0 ||
      opts.localDiscriminator > 0xffffffff
    )
      throw new RangeError(
        `BFD local discriminator must be a non-zero 32-bit value: ${opts.localDiscriminator}`,
      );
    this.localDiscriminator = opts.localDiscriminator;
    this.config = {
      desiredMinTxUs: opts.desiredMinTxUs,
      requiredMinRxUs: opts.requiredMinRxUs,
      detectMult: opts.detectMult,
    };
    this.passive = opts.passive ?? false;
    this.slowTxUs = opts.slowTxUs ?? SLOW_TX_US;
    this.random = opts.random ?? Math.random;
    this.offloaded = opts.offloaded ?? false;
    this.state = opts.adminDown ? BfdState.AdminDown : BfdState.Down;
    if (opts.adminDown) this.localDiag = BfdDiag.AdministrativelyDown;
    this.detectMult = opts.detectMult;
    this.desiredMinTxUs = Math.max(opts.desiredMinTxUs, this.slowTxUs);
    this.requiredMinRxUs = opts.requiredMinRxUs;
    this.txBasisUs = this.desiredMinTxUs;
    this.rxBasisUs = this.requiredMinRxUs;
    this.lastChangeAt = now;
    this.refreshTx(now);
  }

  get sessionState(): BfdState {
    return this.state;
  }

  /** Earliest time advance() has something to do. */
  nextDeadline(): number {
    // Offloaded, only the end of the AdminDown packets is this side's to time.
    if (this.offloaded) return this.adminDownPending() ? this.adminDownUntil : Infinity;
    return this.nextTxAt < this.detectAt ? this.nextTxAt : this.detectAt;
  }

  /** What an offloaded session sends periodically now; null when it sends nothing. */
  periodic(): PeriodicTx | null {
    if (this.nextTxAt === Infinity) return null;
    return {
      packet: this.packet(false),
      intervalUs: this.txIntervalUs(),
      mult1: this.detectMult === 1,
      epoch: this.txEpoch,
    };
  }

  /** Adds what the offloaded half sent and received (SessionOptions.offloaded). */
  addOffloaded(a: OffloadedActivity): void {
    this.counters.rxPackets += a.rxPackets;
    this.counters.txPackets += a.txPackets;
    if (a.lastRxAt > this.lastRxAt) this.lastRxAt = a.lastRxAt;
    if (a.lastTxAt > this.lastTxAt) this.lastTxAt = a.lastTxAt;
    if (this.state !== BfdState.Up) return;
    if (a.rxSlackMinUs !== null && a.rxSlackMinUs < this.rxSlackMinUs) this.rxSlackMinUs = a.rxSlackMinUs;
    if (a.txLateMaxUs > this.txLateMaxUs) this.txLateMaxUs = a.txLateMaxUs;
  }

  /** Negotiated periodic transmit interval (before jitter), microseconds. */
  txIntervalUs(): number {
    return Math.max(this.txBasisUs, this.remoteMinRxUs);
  }

  /** Detection time (RFC 5880 6.8.4, asynchronous mode), microseconds; 0 before the peer is heard. */
  detectionTimeUs(): number {
    return this.remoteDetectMult * Math.max(this.rxBasisUs, this.remoteDesiredMinTxUs);
  }

  /**
   * Handles a received control packet that has passed decodeControl() and was
   * demultiplexed to this session (RFC 5880 6.8.6, from "Set bfd.RemoteDiscr" on).
   */
  receive(p: ControlPacket, now: number): void {
    this.counters.rxPackets++;
    // Offloaded, the detection deadline is kept by the other half, which measures the slack.
    if (!this.offloaded && this.state === BfdState.Up && this.detectAt !== Infinity) {
      // How close this gap came to the detection time that was armed for it.
      const slackUs = (this.detectAt - now) * 1000;
      if (slackUs < this.rxSlackMinUs) this.rxSlackMinUs = slackUs;
    }
    this.lastRxAt = now;
    this.remoteDiscr = p.myDiscriminator;
    this.remoteState = p.state;
    this.remoteDiag = p.diag;
    this.remoteDemand = p.demand;
    this.remoteMinRxUs = p.requiredMinRxUs;
    this.remoteDesiredMinTxUs = p.desiredMinTxUs;
    this.remoteDetectMult = p.detectMult;

    if (p.final && this.pollActive) this.endPoll();
    this.detectAt = now + this.detectionTimeUs() / 1000;

    // RFC 5880 6.8.6: a session in AdminDown takes note of the peer and discards the rest.
    if (this.state === BfdState.AdminDown) return;
    if (p.state === BfdState.AdminDown) {
      if (this.state !== BfdState.Down) this.goDown(BfdDiag.NeighborSignaledSessionDown, now);
    } else if (this.state === BfdState.Down) {
      if (p.state === BfdState.Down) this.changeState(BfdState.Init, now);
      else if (p.state === BfdState.Init) this.goUp(now);
    } else if (this.state === BfdState.Init) {
      if (p.state === BfdState.Init || p.state === BfdState.Up) this.goUp(now);
    } else if (p.state === BfdState.Down) {
      this.goDown(BfdDiag.NeighborSignaledSessionDown, now);
    }

    // A Poll is answered at once, whatever the state and the transmit timer.
    if (p.poll) this.transmit(now, { final: true });
    this.applyTargets(now);
    this.refreshTx(now);
  }

  /** Runs timers due at or before dueBy (detection, then periodic transmission). */
  advance(now: number, dueBy = now): void {
    if (this.offloaded) {
      if (this.adminDownPending() && this.adminDownUntil <= dueBy) {
        this.nextTxAt = Infinity;
        this.scheduledIntervalUs = -1;
      }
      return;
    }
    if (this.detectAt <= dueBy) this.expire(now);
    if (this.nextTxAt <= dueBy) {
      if (this.state === BfdState.Up) {
        const lateUs = (now - this.nextTxAt) * 1000;
        if (lateUs > this.txLateMaxUs) this.txLateMaxUs = lateUs;
      }
      if (this.txAllowed(now)) {
        this.transmit(now, { final: false });
        this.schedule(this.afterTx(now));
      } else {
        this.nextTxAt = Infinity;
        this.scheduledIntervalUs = -1;
      }
    }
  }

  /** No packet for a detection time (RFC 5880 6.8.4): the peer is taken for gone. */
  expire(now: number): void {
    this.detectAt = Infinity;
    // RFC 5880 6.8.1: no packet for a detection time -> forget the peer's discriminator.
    this.remoteDiscr = 0;
    if (this.state === BfdState.Init || this.state === BfdState.Up)
      this.goDown(BfdDiag.ControlDetectionTimeExpired, now);
    this.refreshTx(now);
  }

  /** Changes the timers; a poll sequence is used when the session is Up (RFC 5880 6.8.3). */
  updateTimers(t: SessionTimers, now: number): void {
    validateTimers(t);
    this.config = { ...t };
    if (this.detectMult !== t.detectMult) this.detectMult = t.detectMult;
    this.applyTargets(now);
    this.refreshTx(now);
  }

  /**
   * Takes the session administratively down (RFC 5880 6.8.16). The peer is told
   * with AdminDown packets, sent at once and then periodically for about one of
   * its detection times, after which the session goes quiet.
   */
  adminDown(now: number, diag: BfdDiag = BfdDiag.AdministrativelyDown): void {
    if (this.state === BfdState.AdminDown) return;
    this.cancelPoll();
    this.changeState(BfdState.AdminDown, now, diag);
    // The peer detects us in detectMult * (our interval); tell it for that long.
    this.adminDownUntil = this.remoteDiscr !== 0 ? now + (this.detectMult * this.txIntervalUs()) / 1000 : now;
    this.scheduledIntervalUs = -1;
    if (this.txAllowed(now)) {
      this.transmit(now, { final: false });
      this.schedule(this.afterTx(now));
      this.scheduledIntervalUs = this.txIntervalUs();
    } else {
      this.nextTxAt = Infinity;
    }
  }

  /** Leaves AdminDown (RFC 5880 6.8.16: the session goes to Down). */
  enable(now: number): void {
    if (this.state !== BfdState.AdminDown) return;
    this.changeState(BfdState.Down, now, BfdDiag.None);
    this.applyTargets(now);
    this.scheduledIntervalUs = -1;
    this.refreshTx(now);
  }

  /** True while AdminDown packets are still being sent after adminDown(). */
  adminDownPending(): boolean {
    return this.state === BfdState.AdminDown && this.nextTxAt !== Infinity;
  }

  snapshot(): SessionSnapshot {
    return {
      state: this.state,
      remoteState: this.remoteState,
      localDiag: this.localDiag,
      remoteDiag: this.remoteDiag,
      lastDownDiag: this.lastDownDiag,
      localDiscriminator: this.localDiscriminator,
      remoteDiscriminator: this.remoteDiscr,
      desiredMinTxUs: this.desiredMinTxUs,
      requiredMinRxUs: this.requiredMinRxUs,
      detectMult: this.detectMult,
      remoteDesiredMinTxUs: this.remoteDesiredMinTxUs,
      remoteMinRxUs: this.remoteMinRxUs,
      remoteDetectMult: this.remoteDetectMult,
      txIntervalUs: this.remoteMinRxUs === 0 ? 0 : this.txIntervalUs(),
      detectionTimeUs: this.detectionTimeUs(),
      pollActive: this.pollActive,
      lastRxAt: this.lastRxAt,
      lastTxAt: this.lastTxAt,
      lastChangeAt: this.lastChangeAt,
      rxSlackMinUs: Number.isFinite(this.rxSlackMinUs) ? Math.round(this.rxSlackMinUs) : null,
      txLateMaxUs: Math.round(this.txLateMaxUs),
      counters: { ...this.counters },
    };
  }

  // --- state machine -------------------------------------------------------

  private goUp(now: number): void {
    this.rxSlackMinUs = Infinity;
    this.txLateMaxUs = 0;
    this.changeState(BfdState.Up, now, BfdDiag.None);
    // Leave the slow rate: advertise the configured interval, with a poll sequence.
    this.applyTargets(now);
    this.transmit(now, { final: false });
    this.schedule(now + this.jitteredMs());
    this.scheduledIntervalUs = this.txIntervalUs();
  }

  private goDown(diag: BfdDiag, now: number): void {
    this.cancelPoll();
    this.changeState(BfdState.Down, now, diag);
    // Back to the slow rate (not Up: no poll needed).
    this.applyTargets(now);
    this.transmit(now, { final: false });
    this.scheduledIntervalUs = -1;
    this.refreshTx(now);
  }

  private changeState(to: BfdState, now: number, diag?: BfdDiag): void {
    const from = this.state;
    if (from === to) return;
    this.state = to;
    if (diag !== undefined) this.localDiag = diag;
    this.lastChangeAt = now;
    this.counters.transitions++;
    if (to === BfdState.Up) this.counters.ups++;
    if (from === BfdState.Up) {
      this.counters.downs++;
      this.lastDownDiag = this.localDiag;
    }
    // Init is announced at once too, so the peer can move to Up without waiting a slow interval.
    if (to === BfdState.Init) {
      this.transmit(now, { final: false });
      this.schedule(now + this.jitteredMs());
      this.scheduledIntervalUs = this.txIntervalUs();
    }
    this.hooks.stateChange({
      from,
      to,
      localDiag: this.localDiag,
      remoteDiag: this.remoteDiag,
      remoteState: this.remoteState,
      at: now,
    });
  }

  // --- timer negotiation ---------------------------------------------------

  /** Moves the advertised intervals towards what the state and configuration ask for. */
  private applyTargets(now: number): void {
    if (this.state === BfdState.AdminDown || this.pollActive) return; // a change waits for the Final
    const tx =
      this.state === BfdState.Up
        ? this.config.desiredMinTxUs
        : Math.max(this.config.desiredMinTxUs, this.slowTxUs);
    const rx = this.config.requiredMinRxUs;
    if (tx === this.desiredMinTxUs && rx === this.requiredMinRxUs) return;
    const oldTx = this.desiredMinTxUs;
    const oldRx = this.requiredMinRxUs;
    this.desiredMinTxUs = tx;
    this.requiredMinRxUs = rx;
    if (this.state === BfdState.Up) {
      // Until the Final: a longer TX interval is not used yet, a shorter RX interval not relied on.
      this.pollActive = true;
      this.counters.pollSequences++;
      this.txBasisUs = Math.min(oldTx, tx);
      this.rxBasisUs = Math.max(oldRx, rx);
    } else {
      this.txBasisUs = tx;
      this.rxBasisUs = rx;
    }
    this.rearmDetection();
    this.refreshTx(now);
  }

  private endPoll(): void {
    this.pollActive = false;
    this.txBasisUs = this.desiredMinTxUs;
    this.rxBasisUs = this.requiredMinRxUs;
    this.rearmDetection();
  }

  private cancelPoll(): void {
    if (this.pollActive) this.endPoll();
  }

  private rearmDetection(): void {
    if (this.detectAt !== Infinity) this.detectAt = this.lastRxAt + this.detectionTimeUs() / 1000;
  }

  // --- transmission ----------------------------------------------------------

  private txAllowed(now: number): boolean {
    if (this.remoteMinRxUs === 0) return false; // the peer asked for no periodic packets
    if (this.state === BfdState.AdminDown) return now < this.adminDownUntil;
    if (this.passive && this.remoteDiscr === 0) return false;
    // The peer is in Demand mode (never the case with FRR single hop, handled for completeness).
    if (this.remoteDemand && this.state === BfdState.Up && this.remoteState === BfdState.Up) return false;
    return true;
  }

  /** Keeps nextTxAt consistent with the negotiated interval; re-rolls jitter only when it changed. */
  private refreshTx(now: number): void {
    if (!this.txAllowed(now)) {
      this.nextTxAt = Infinity;
      this.scheduledIntervalUs = -1;
      return;
    }
    const interval = this.txIntervalUs();
    if (interval === this.scheduledIntervalUs && this.nextTxAt !== Infinity) return;
    this.scheduledIntervalUs = interval;
    this.schedule(Math.max(now, this.lastTxAt + this.jitteredMs()));
  }

  /** Starts the periodic schedule again from `at` (see PeriodicTx.epoch). */
  private schedule(at: number): void {
    this.nextTxAt = at;
    if (at !== Infinity) this.txEpoch++;
  }

  /** When the next periodic packet is due after one sent now; in AdminDown, none past the tail. */
  private afterTx(now: number): number {
    const next = now + this.jitteredMs();
    return this.state === BfdState.AdminDown && next >= this.adminDownUntil ? Infinity : next;
  }

  /** The transmit interval reduced by 0-25% (10-25% when detectMult is 1), in ms (RFC 5880 6.8.7). */
  private jitteredMs(): number {
    const r = this.random();
    const factor = this.detectMult === 1 ? 0.9 - 0.15 * r : 1 - 0.25 * r;
    return (this.txIntervalUs() * factor) / 1000;
  }

  private transmit(now: number, opts: { final: boolean }): void {
    this.counters.txPackets++;
    this.lastTxAt = now;
    this.hooks.send(this.packet(opts.final));
  }

  /** The control packet this session sends now (a Final answers a Poll). */
  private packet(final: boolean): ControlPacket {
    return {
      version: BFD_VERSION,
      diag: this.localDiag,
      state: this.state,
      poll: !final && this.pollActive,
      final,
      cpi: false, // egressd's BFD shares fate with its control plane
      authPresent: false,
      demand: false,
      multipoint: false,
      detectMult: this.detectMult,
      myDiscriminator: this.localDiscriminator,
      yourDiscriminator: this.remoteDiscr,
      desiredMinTxUs: this.desiredMinTxUs,
      requiredMinRxUs: this.requiredMinRxUs,
      requiredMinEchoRxUs: 0, // no echo function
    };
  }
}

function validateTimers(t: SessionTimers): void {
  for (const [name, v] of [
    ["desiredMinTxUs", t.desiredMinTxUs],
    ["requiredMinRxUs", t.requiredMinRxUs],
  ] as const) {
    if (!Number.isInteger(v) || v < 1 || v > 0xffffffff)
      throw new RangeError(`BFD ${name} out of range: ${v}`);
  }
  if (!Number.isInteger(t.detectMult) || t.detectMult < 1 || t.detectMult > 255)
    throw new RangeError(`BFD detectMult out of range: ${t.detectMult}`);
}
