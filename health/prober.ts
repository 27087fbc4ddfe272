// Schedules every probe, feeds the results to each probe's state machine and
// emits `transition` events synchronously, from the very callback that
// delivered the deciding result: a listener that withdraws routes on `down`
// runs before anything else is done.
//
//   const prober = new Prober();
//   prober.on("transition", (t) => { if (t.to === "down") fastWithdraw(t.name); else replan(); });
//   prober.on("sample", (s) => histogram.observe({ probe: s.name }, s.rttMs / 1000));
//   prober.add({ name: "upstream-a", kind: "icmp", target: "198.51.100.1" });
//   prober.addCheck({ name: "self-forwarding", check: forwardingCheck(), intervalMs: 1000 });
//   prober.start();
//   ...
//   await prober.stop();
import { EventEmitter } from "node:events";
import { performance } from "node:perf_hooks";
import {
  ProbeStateMachine,
  validateStateConfig,
  type ProbeResult,
  type ProbeState,
  type StateSnapshot,
  type StateTransition,
} from "../core/probe-state.js";
import { IcmpHelper } from "./probes/icmp.js";
import { tcpProbe } from "./probes/tcp.js";
import { httpProbe } from "./probes/http.js";
import { checkProbe, type CheckFn } from "./probes/check.js";
import { redactUrl } from "../core/redact.js";
import type { StealClock } from "./steal.js";

export type { PollProbe, StreamProbe } from "./probe-types.js";
import type { PollProbe, StreamProbe } from "./probe-types.js";

export type { ProbeKind } from "../core/defaults.js";
import type { ProbeKind } from "../core/defaults.js";
export { PROBE_DEFAULTS, resolveTiming, validateProbeSpec } from "../core/probe-spec.js";
export type { ProbeSpec, ProbeTiming, ResolvedTiming } from "../core/probe-spec.js";
import {
  resolveTiming,
  validateProbeSpec,
  type ProbeSpec,
  type ProbeTiming,
  type ResolvedTiming,
} from "../core/probe-spec.js";

/** A check probe (the daemon's self-checks): a function instead of a target. */
export interface CheckSpec extends ProbeTiming {
  name: string;
  check: CheckFn;
  /** Shown in /status (default "check"). */
  target?: string;
}

export interface ProbeTransition extends StateTransition {
  name: string;
  kind: ProbeKind | "check";
  target: string;
  /** Wall-clock time (ms since the epoch) of the transition. */
  wallTime: number;
}

export interface ProbeSample {
  name: string;
  kind: ProbeKind | "check";
  ok: boolean;
  /** The result could not be judged (a stall of the event loop): counted neither way. */
  inconclusive?: boolean;
  /** Set for successful results. */
  rttMs?: number;
  /** Why, for failed and inconclusive results. */
  reason?: string;
}

export interface ProbeStatus extends StateSnapshot {
  name: string;
  kind: ProbeKind | "check";
  target: string;
  intervalMs: number;
  timeoutMs: number;
  rise: number;
  fall: number;
  holdDownMs: number;
  /** Wall-clock time of the last transition. */
  sinceWall: number;
  /** Wall-clock form of heldUntil. */
  heldUntilWall: number | null;
  lastResult: { ok: boolean; reason?: string; wallTime: number } | null;
  lastRttMs: number | null;
  /**
   * inconclusive: results a stall of the event loop, or the hypervisor's CPU steal, kept from being judged
   * (not counted towards rise or fall).
   */
  results: { ok: number; failed: number; inconclusive: number };
  transitions: number;
}

export interface ProberOptions {
  /** Monotonic clock in ms (default performance.now). */
  clock?: () => number;
  /** Random source for jitter (default Math.random). */
  random?: () => number;
  /** Run the ICMP probes' helper in this network namespace (tests, labs). */
  netns?: string;
  /** The ICMP helper binary (default: the one the build made, native/icmp-prober.c). */
  icmpHelper?: string;
  /** The machine's CPU steal, shared by the probes (default: /proc/stat; health/steal.ts). */
  steal?: StealClock;
}

interface Entry {
  name: string;
  kind: ProbeKind | "check";
  target: string;
  timing: ResolvedTiming;
  sm: ProbeStateMachine;
  poll: PollProbe | null;
  stream: StreamProbe | null;
  /** Poll probes: sequence of the next run, and of the newest result applied. */
  nextSeq: number;
  appliedSeq: number;
  inflight: number;
  maxInflight: number;
  nextAt: number;
  tickTimer: NodeJS.Timeout | null;
  deadlineTimer: NodeJS.Timeout | null;
  sinceWall: number;
  lastResult: ProbeStatus["lastResult"];
  lastRttMs: number | null;
  ok: number;
  failed: number;
  inconclusive: number;
  transitions: number;
  started: boolean;
  removed: boolean;
  specKey: string;
  /**
   * Runs on the multiples of its interval, without jitter (check probes):
   * local checks cost next to nothing, so 50 of them at one interval share
   * one wake-up of the thread instead of 50. A pushed (stream) probe that
   * is aligned starts at once instead of after a random phase.
   */
  aligned: boolean;
}

/** Events of a Prober. `transition` is emitted synchronously with the deciding result. */
export interface ProberEvents {
  transition: [ProbeTransition];
  sample: [ProbeSample];
  error: [Error];
}

export class Prober extends EventEmitter<ProberEvents> {
  private readonly entries = new Map<string, Entry>();
  private readonly clock: () => number;
  private readonly random: () => number;
  private running = false;
  /** Runs every ICMP probe of this prober; made with the first. */
  private icmp: IcmpHelper | undefined;
  /** Aligned (check) probes by interval: one timer per interval runs them all. */
  private readonly rounds = new Map<number, { entries: Set<Entry>; timer: NodeJS.Timeout | null }>();

  constructor(private readonly opts: ProberOptions = {}) {
    super();
    this.clock = opts.clock ?? (() => performance.now());
    this.random = opts.random ?? Math.random;
  }

  /** Adds a configured probe (starts it at once if the prober runs). */
  add(spec: ProbeSpec): void {
    const errs = validateProbeSpec(spec);
    if (errs.length) throw new Error(errs.join("; "));
    const timing = resolveTiming(spec);
    let poll: PollProbe | null = null;
    let stream: StreamProbe | null = null;
    switch (spec.kind) {
      case "icmp":
        this.icmp ??= new IcmpHelper({
          netns: this.opts.netns,
          binary: this.opts.icmpHelper,
          steal: this.opts.steal,
        });
        stream = this.icmp.probe({
          target: spec.target,
          intervalMs: timing.intervalMs,
          timeoutMs: timing.timeoutMs,
          sourceAddress: spec.sourceAddress,
        });
        break;
      case "tcp":
        poll = tcpProbe({
          target: spec.target,
          port: spec.port!,
          sourceAddress: spec.sourceAddress,
          steal: this.opts.steal,
        });
        break;
      case "http":
        poll = httpProbe({
          url: spec.url,
          target: spec.target,
          port: spec.port,
          expectStatus: spec.expectStatus,
          sourceAddress: spec.sourceAddress,
          tlsSkipVerify: spec.tlsSkipVerify,
          steal: this.opts.steal,
        });
        break;
    }
    this.insert(
      spec.name,
      spec.kind,
      spec.url === undefined ? spec.target : redactUrl(spec.url),
      timing,
      poll,
      stream,
      specKey(spec),
    );
  }

  /** Adds a check probe (a function: forwarding on, nft table present, gobgpd up, ...). */
  addCheck(spec: CheckSpec): void {
    const timing = resolveTiming(spec);
    const errs = validateStateConfig(timing);
    if (!spec.name) errs.push("name is required");
    if (errs.length) throw new Error(`check ${spec.name}: ${errs.join("; ")}`);
    this.insert(
      spec.name,
      "check",
      spec.target ?? "check",
      timing,
      checkProbe(spec.check, undefined, this.opts.steal),
      null,
      "",
      true,
    );
  }

  /**
   * Adds a probe that pushes its own results (its own cadence and timeout),
   * e.g. a BFD session or a test double. intervalMs/timeoutMs are only shown.
   * `atOnce`: started now rather than after a random part of its interval
   * (results that come together, such as the egress IPs' presence from one
   * listing, then arrive in one turn and are judged as one burst).
   */
  addStream(spec: Omit<CheckSpec, "check"> & { stream: StreamProbe; atOnce?: boolean }): void {
    const timing = resolveTiming(spec);
    const errs = validateStateConfig(timing);
    if (!spec.name) errs.push("name is required");
    if (errs.length) throw new Error(`probe ${spec.name}: ${errs.join("; ")}`);
    this.insert(spec.name, "check", spec.target ?? "stream", timing, null, spec.stream, "", spec.atOnce);
  }

  /** Stops and forgets a probe; no transition is emitted. */
  remove(name: string): boolean {
    const e = this.entries.get(name);
    if (!e) return false;
    this.entries.delete(name);
    this.halt(e);
    return true;
  }

  /**
   * Makes the configured probes match `specs` (check probes are left alone):
   * removes the missing ones, replaces the changed ones (their state starts
   * again from unknown) and adds the new ones. Returns the names replaced or added.
   */
  sync(specs: readonly ProbeSpec[]): string[] {
    const want = new Map(specs.map((s) => [s.name, s]));
    for (const [name, e] of this.entries) {
      if (e.kind !== "check" && !want.has(name)) this.remove(name);
    }
    const changed: string[] = [];
    for (const s of specs) {
      const e = this.entries.get(s.name);
      if (e && e.kind !== "check" && e.specKey === specKey(s)) continue;
      if (e) this.remove(s.name);
      this.add(s);
      changed.push(s.name);
    }
    return changed;
  }

  start(): void {
    if (this.running) return;
    this.running = true;
    for (const e of this.entries.values()) this.launch(e);
  }

  /** Stops every probe (and the ICMP helper). A stopped prober cannot be started again. */
  async stop(): Promise<void> {
    this.running = false;
    for (const e of this.entries.values()) this.halt(e);
    this.icmp?.close();
  }

  /** Pid of the ICMP probes' helper process, while it runs (for tests and benchmarks). */
  get icmpHelperPid(): number | undefined {
    return this.icmp?.pid;
  }

  state(name: string): ProbeState | undefined {
    return this.entries.get(name)?.sm.state;
  }

  status(name: string): ProbeStatus | undefined {
    const e = this.entries.get(name);
    return e ? this.statusOf(e) : undefined;
  }

  statuses(): ProbeStatus[] {
    return [...this.entries.values()].map((e) => this.statusOf(e));
  }

  names(): string[] {
    return [...this.entries.keys()];
  }

  private insert(
    name: string,
    kind: Entry["kind"],
    target: string,
    timing: ResolvedTiming,
    poll: PollProbe | null,
    stream: StreamProbe | null,
    key: string,
    aligned = false,
  ): void {
    if (this.entries.has(name)) throw new Error(`probe ${name} already exists`);
    const e: Entry = {
      name,
      kind,
      target,
      timing,
      sm: new ProbeStateMachine(timing, this.clock()),
      poll,
      stream,
      nextSeq: 0,
      appliedSeq: -1,
      inflight: 0,
      // Overlapping runs keep a timeout longer than the interval from
      // stretching detection; bounded so a dead target cannot pile them up.
      maxInflight: Math.ceil(timing.timeoutMs / timing.intervalMs) + 1,
      nextAt: 0,
      tickTimer: null,
      deadlineTimer: null,
      aligned,
      sinceWall: Date.now(),
      lastResult: null,
      lastRttMs: null,
      ok: 0,
      failed: 0,
      inconclusive: 0,
      transitions: 0,
      started: false,
      removed: false,
      specKey: key,
    };
    this.entries.set(name, e);
    if (this.running) this.launch(e);
  }

  private launch(e: Entry): void {
    if (e.started || e.removed) return;
    e.started = true;
    // Random phase, so hundreds of probes do not fire in lockstep; checks on the interval's multiples.
    const { intervalMs } = e.timing;
    const phase = e.aligned ? intervalMs - (this.clock() % intervalMs) : this.random() * intervalMs;
    if (e.stream) {
      const s = e.stream;
      if (e.aligned) s.start((r) => this.apply(e, r));
      else
        e.tickTimer = setTimeout(() => {
          e.tickTimer = null;
          if (!e.removed) s.start((r) => this.apply(e, r));
        }, phase);
    } else if (e.aligned) {
      this.joinRound(e);
    } else {
      e.nextAt = this.clock() + phase;
      e.tickTimer = setTimeout(() => this.pollTick(e), phase);
    }
  }

  /** Adds an aligned probe to the round of its interval, which starts on the next multiple. */
  private joinRound(e: Entry): void {
    const { intervalMs } = e.timing;
    let round = this.rounds.get(intervalMs);
    if (!round) this.rounds.set(intervalMs, (round = { entries: new Set(), timer: null }));
    round.entries.add(e);
    if (round.timer) return;
    const tick = (): void => {
      for (const x of round.entries) this.runPoll(x);
      // On the next multiple; one that fell behind (a stalled loop) waits for the next, without a burst.
      round.timer = setTimeout(tick, intervalMs - (this.clock() % intervalMs));
    };
    round.timer = setTimeout(tick, intervalMs - (this.clock() % intervalMs));
  }

  private leaveRound(e: Entry): void {
    const round = this.rounds.get(e.timing.intervalMs);
    if (!round?.entries.delete(e) || round.entries.size) return;
    if (round.timer) clearTimeout(round.timer);
    this.rounds.delete(e.timing.intervalMs);
  }

  private halt(e: Entry): void {
    e.removed = true;
    e.started = false;
    if (e.tickTimer) clearTimeout(e.tickTimer);
    if (e.deadlineTimer) clearTimeout(e.deadlineTimer);
    e.tickTimer = e.deadlineTimer = null;
    if (e.aligned) this.leaveRound(e);
    e.poll?.close();
    e.stream?.close();
  }

  private pollTick(e: Entry): void {
    e.tickTimer = null;
    if (e.removed || !e.poll) return;
    this.runPoll(e);
    // Drift-free schedule with a little jitter (+-5%) so phases do not lock.
    e.nextAt += e.timing.intervalMs * (0.95 + 0.1 * this.random());
    const now = this.clock();
    // Fell behind (event loop stalled): do not burst.
    if (e.nextAt < now) e.nextAt = now;
    e.tickTimer = setTimeout(() => this.pollTick(e), e.nextAt - now);
  }

  /** Starts a run of a poll probe unless too many are in flight. */
  private runPoll(e: Entry): void {
    if (e.removed || !e.poll || e.inflight >= e.maxInflight) return;
    const seq = e.nextSeq++;
    e.inflight++;
    e.poll.run(e.timing.timeoutMs).then(
      (r) => this.finishRun(e, seq, r),
      (err: unknown) => this.finishRun(e, seq, { ok: false, reason: String(err) }),
    );
  }

  private finishRun(e: Entry, seq: number, r: ProbeResult): void {
    e.inflight--;
    if (e.removed) return;
    // An older run finishing after a newer one says nothing new: drop it.
    if (seq < e.appliedSeq) return;
    e.appliedSeq = seq;
    this.apply(e, r);
  }

  private apply(e: Entry, r: ProbeResult): void {
    if (e.removed) return;
    if (r.inconclusive) {
      // The target was not judged fairly: the state machine does not hear of it.
      e.inconclusive++;
      if (this.listenerCount("sample"))
        this.emit("sample", { name: e.name, kind: e.kind, ok: false, inconclusive: true, reason: r.reason });
      return;
    }
    const now = this.clock();
    const t = e.sm.observe(r, now);
    // The transition goes out first: a `down` listener withdraws before we do anything else.
    if (t) this.emitTransition(e, t);
    if (r.ok) {
      e.ok++;
      if (r.rttMs !== undefined) e.lastRttMs = r.rttMs;
    } else e.failed++;
    e.lastResult = { ok: r.ok, reason: r.reason, wallTime: Date.now() };
    if (this.listenerCount("sample")) {
      this.emit(
        "sample",
        r.ok
          ? { name: e.name, kind: e.kind, ok: true, rttMs: r.rttMs }
          : { name: e.name, kind: e.kind, ok: false, reason: r.reason },
      );
    }
    if (t) this.armDeadline(e);
  }

  private armDeadline(e: Entry): void {
    if (e.deadlineTimer) clearTimeout(e.deadlineTimer);
    e.deadlineTimer = null;
    const at = e.sm.nextDeadline();
    if (at === null || e.removed) return;
    const delay = Math.max(0, at - this.clock());
    e.deadlineTimer = setTimeout(() => {
      e.deadlineTimer = null;
      if (e.removed) return;
      const t = e.sm.tick(this.clock());
      if (t) this.emitTransition(e, t);
      this.armDeadline(e);
    }, delay + 1);
  }

  private emitTransition(e: Entry, t: StateTransition): void {
    e.transitions++;
    e.sinceWall = Date.now();
    const ev: ProbeTransition = { ...t, name: e.name, kind: e.kind, target: e.target, wallTime: e.sinceWall };
    try {
      this.emit("transition", ev);
    } catch (err) {
      // A throwing listener must not stop the probes.
      if (this.listenerCount("error"))
        this.emit("error", err instanceof Error ? err : new Error(String(err)));
    }
  }

  private statusOf(e: Entry): ProbeStatus {
    const now = this.clock();
    const snap = e.sm.snapshot(now);
    return {
      ...snap,
      heldUntilWall: snap.heldUntil === null ? null : Math.round(Date.now() + (snap.heldUntil - now)),
      name: e.name,
      kind: e.kind,
      target: e.target,
      intervalMs: e.timing.intervalMs,
      timeoutMs: e.timing.timeoutMs,
      rise: e.timing.rise,
      fall: e.timing.fall,
      holdDownMs: e.timing.holdDownMs,
      sinceWall: e.sinceWall,
      lastResult: e.lastResult,
      lastRttMs: e.lastRttMs,
      results: { ok: e.ok, failed: e.failed, inconclusive: e.inconclusive },
      transitions: e.transitions,
    };
  }
}

/** A stable text form of a spec (keys sorted at every level), to spot changes. */
function specKey(s: ProbeSpec): string {
  const norm = (v: unknown): unknown =>
    v && typeof v === "object"
      ? Object.fromEntries(
          Object.entries(v as Record<string, unknown>)
            .filter(([, x]) => x !== undefined)
            .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
            .map(([k, x]) => [k, norm(x)]),
        )
      : v;
  return JSON.stringify(norm(s));
}
