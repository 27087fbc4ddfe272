// ICMP echo probes, run by one helper process per prober: `egressd-icmp`
// (native/icmp-prober.c, built with the project).
//
// The helper sends every probe's echoes on the multiples of its interval,
// reads the replies when their timeout is due (with the time the kernel
// received each), and writes one line per round with every verdict in it.
// So the main thread wakes once per round for all its ICMP probes, not once
// per reply, and a reply that arrived in time counts however late either
// process ran (docs/health.md, "ICMP probes").
//
// This side turns the helper's verdicts into probe results: a missed or late
// reply in a window in which the hypervisor stole the machine, or one judged
// while the helper's socket dropped replies, is inconclusive; a probe the
// helper refused (an interface that does not exist yet) fails and is offered
// again with a backoff; a helper that exits fails every probe and is
// restarted; a watchdog fails a probe whose verdicts stop coming.
import { fileURLToPath } from "node:url";
import type { ProbeResult } from "../../core/probe-state.js";
import type { StreamProbe } from "../probe-types.js";
import { deadline, inconclusiveResult, stalledResult, type Deadline } from "../deadline.js";
import { StealExcuses, type StealClock } from "../steal.js";
import { icmpAddressProblems } from "../../core/probe-spec.js";
import { runHelper, type HelperRun } from "../detector-process.js";

/** The helper as the build leaves it (scripts/build-native.sh). */
export const ICMP_HELPER = fileURLToPath(new URL("../../native/egressd-icmp", import.meta.url));

/** Payload bytes of an echo unless a probe says otherwise (as ping's default). */
const DEFAULT_SIZE = 56;
/**
 * The watchdog's window after a verdict: two intervals and the timeout, and
 * at least this. It only catches a helper that hangs (one that exits is
 * known at once); a helper late by a few rounds still judges by the kernel's
 * receive times, so its verdicts are right when they come. At 50 ms, a
 * window of one interval and the timeout failed 48 probes at once in a soak,
 * in a second in which the kernel's softirq threads waited 158 ms for a CPU.
 */
const SILENCE_MIN_MS = 500;
/** Time allowed, on top of an interval and a timeout, for a probe's first verdict. */
const FIRST_VERDICT_GRACE_MS = 1000;
/** The helper's limits on the payload (its first 8 bytes carry the helper's cookie). */
const MIN_SIZE = 8;
const MAX_SIZE = 1400;

export interface IcmpProbeOptions {
  /** IP address probed. */
  target: string;
  intervalMs: number;
  timeoutMs: number;
  /** Source address (of the target's family) or interface name. */
  sourceAddress?: string;
  /** Payload bytes, 8-1400 (default 56). */
  size?: number;
}

export interface IcmpHelperOptions {
  /** Run the helper in this network namespace (ip netns exec); for tests and labs. */
  netns?: string;
  /** The helper binary (default ICMP_HELPER). */
  binary?: string;
  /** The clock the watchdog's lateness is read on (tests pin it; default performance.now). */
  now?: () => number;
  /** The machine's CPU steal (default: /proc/stat; tests pass one that never steals). */
  steal?: StealClock;
}

/** One verdict of the helper. */
export interface HelperVerdict {
  id: number;
  seq: number;
  kind: "ok" | "late" | "lost" | "unreach" | "senderr";
  rttUs: number;
  detail?: string;
}

/** One line of the helper's output. */
export interface HelperLine {
  /** CLOCK_MONOTONIC in microseconds when the helper wrote it. */
  monoUs: number;
  verdicts: HelperVerdict[];
  /** Replies the kernel dropped (a full socket buffer) since the line before. */
  drops: number;
  refused: { id: number; why: string }[];
}

const KINDS = new Set<string>(["ok", "late", "lost", "unreach", "senderr"]);

/** Parses a line of the helper's output; null for a line that is not one. */
export function parseHelperLine(line: string): HelperLine | null {
  const items = line.split(" ");
  const monoUs = Number(items[0]);
  if (!items[0] || !Number.isSafeInteger(monoUs)) return null;
  const out: HelperLine = { monoUs, verdicts: [], drops: 0, refused: [] };
  for (let i = 1; i < items.length; i++) {
    const f = items[i]!.split(":");
    if (f[0] === "!drops") out.drops += Number(f[1]) || 0;
    else if (f[0] === "!refused") out.refused.push({ id: Number(f[1]), why: f.slice(2).join(":") });
    else if (f.length >= 4 && KINDS.has(f[2]!)) {
      const v: HelperVerdict = {
        id: Number(f[0]),
        seq: Number(f[1]),
        kind: f[2] as HelperVerdict["kind"],
        rttUs: Number(f[3]),
      };
      // The detail is TYPE-CODE@ADDR or an errno name; an IPv6 address brings its own colons.
      if (f.length > 4) v.detail = f.slice(4).join(":");
      if (Number.isSafeInteger(v.id) && Number.isSafeInteger(v.seq) && Number.isFinite(v.rttUs))
        out.verdicts.push(v);
    }
  }
  return out;
}

/** Checks a probe's options as the helper will take them; returns the problems. */
export function icmpOptionProblems(o: IcmpProbeOptions): string[] {
  const errs = icmpAddressProblems(o.target, o.sourceAddress);
  if (!(Number.isInteger(o.intervalMs) && o.intervalMs >= 10))
    errs.push("intervalMs must be an integer >= 10");
  if (!(Number.isInteger(o.timeoutMs) && o.timeoutMs > 0)) errs.push("timeoutMs must be an integer > 0");
  else if (o.timeoutMs >= o.intervalMs * 63) errs.push("timeoutMs must be under 63 intervals");
  const size = o.size ?? DEFAULT_SIZE;
  if (!(Number.isInteger(size) && size >= MIN_SIZE && size <= MAX_SIZE))
    errs.push(`size must be an integer ${MIN_SIZE}-${MAX_SIZE}`);
  return errs;
}

/** The helper's command that starts (or replaces) probe `id`. */
export function addCommand(id: number, o: IcmpProbeOptions): string {
  return `add ${id} ${o.target} ${o.sourceAddress ?? "-"} ${o.intervalMs} ${o.timeoutMs} ${o.size ?? DEFAULT_SIZE}\n`;
}

const ERRORS4 = new Map([
  [3, "destination unreachable"],
  [11, "time exceeded"],
  [12, "parameter problem"],
]);
const ERRORS6 = new Map([
  [1, "destination unreachable"],
  [2, "packet too big"],
  [3, "time exceeded"],
  [4, "parameter problem"],
]);

/** Why an ICMP error came back, in words, from the helper's TYPE-CODE@ADDR. */
function describeError(detail: string | undefined, v6: boolean): string {
  const m = /^(\d+)-(\d+)@(.+)$/.exec(detail ?? "");
  if (!m) return `ICMP error ${detail ?? ""}`.trim();
  const type = Number(m[1]);
  const name = (v6 ? ERRORS6 : ERRORS4).get(type) ?? `ICMP type ${type}`;
  return `${name} (type ${type} code ${m[2]}) from ${m[3]}`;
}

/** A probe's handle on the helper; what the prober runs. */
class HelperProbe implements StreamProbe {
  private onResult: ((r: ProbeResult) => void) | null = null;
  private watchdog: Deadline | null = null;
  private watchdogMs = 0;
  private retryTimer: NodeJS.Timeout | null = null;
  private retryDelayMs = 0;
  /** Why the helper did not take the probe, until it gives a verdict. */
  private refusal = "";
  /** Highest seq already reported since the probe was (re)added; older verdicts are dropped. */
  reported = -1;
  private readonly steal: StealExcuses;
  private readonly label: string;

  constructor(
    private readonly helper: IcmpHelper,
    readonly id: number,
    readonly opts: IcmpProbeOptions,
    steal: StealClock | undefined,
  ) {
    this.steal = new StealExcuses(steal);
    this.label = `icmp ${opts.target}`;
  }

  start(onResult: (r: ProbeResult) => void): void {
    this.onResult = onResult;
    this.helper.attach(this);
    // The first verdict comes a phase of the interval plus the timeout after the helper takes the probe, and
    // the helper may be starting: a helper that cannot start says so at once (its exit), so wait longer here.
    this.armWatchdog(2 * this.opts.intervalMs + this.opts.timeoutMs + FIRST_VERDICT_GRACE_MS);
  }

  close(): void {
    this.onResult = null;
    this.watchdog?.cancel();
    this.watchdog = null;
    if (this.retryTimer) clearTimeout(this.retryTimer);
    this.retryTimer = null;
    this.helper.detach(this);
  }

  /** A verdict from the helper; `drops`: replies its socket lost meanwhile. */
  verdict(v: HelperVerdict, drops: number): void {
    if (v.seq <= this.reported) return;
    this.reported = v.seq;
    this.retryDelayMs = 0;
    this.refusal = "";
    const ms = Math.round(v.rttUs / 10) / 100;
    const v6 = this.opts.target.includes(":");
    let r: ProbeResult;
    switch (v.kind) {
      case "ok":
        r = { ok: true, rttMs: ms };
        break;
      case "unreach":
        r = { ok: false, reason: `${this.label}: ${describeError(v.detail, v6)}` };
        break;
      case "senderr":
        r = { ok: false, reason: `${this.label}: cannot send (${v.detail ?? "error"})` };
        break;
      default: {
        const what = v.kind === "late" ? `reply after ${ms} ms` : `no reply within ${this.opts.timeoutMs} ms`;
        // The reply may be among those the socket dropped; or the machine did not run meanwhile.
        const excuse = drops
          ? `the probe socket dropped ${drops} replies meanwhile`
          : this.steal.excuse(v.kind === "late" ? ms : this.opts.timeoutMs);
        r = excuse
          ? inconclusiveResult(`${this.label}: ${what}`, excuse)
          : { ok: false, reason: `${this.label}: ${what}` };
      }
    }
    this.armWatchdog(Math.max(SILENCE_MIN_MS, 2 * this.opts.intervalMs + this.opts.timeoutMs));
    this.emit(r);
  }

  /** The helper did not take the probe: fail now and every interval, and offer it again after a backoff. */
  refused(why: string): void {
    this.refusal = `the ICMP helper refused the probe (${why})`;
    this.emit({ ok: false, reason: `${this.label}: ${this.refusal}` });
    this.armWatchdog(this.opts.intervalMs);
    this.retryDelayMs = Math.min(Math.max(this.retryDelayMs * 2, 500), 5000);
    if (this.retryTimer) clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(() => {
      this.retryTimer = null;
      if (this.onResult) this.helper.attach(this);
    }, this.retryDelayMs);
  }

  /** The helper exited: fail now; the watchdog keeps failing each interval until it is back. */
  helperGone(why: string): void {
    this.emit({ ok: false, reason: `${this.label}: ${why}` });
    this.armWatchdog(this.opts.intervalMs);
  }

  private emit(r: ProbeResult): void {
    if (r.ok) this.steal.succeeded();
    this.onResult?.(r);
  }

  /** (Re)starts the silence watchdog: each verdict pushes it back. */
  private armWatchdog(ms: number): void {
    if (!this.onResult) return;
    this.steal.note();
    if (this.watchdog && this.watchdogMs === ms) return this.watchdog.restart();
    this.watchdog?.cancel();
    this.watchdogMs = ms;
    this.watchdog = deadline(ms, (stalledMs) => this.onSilence(stalledMs, ms), this.helper.opts.now);
  }

  private onSilence(stalledMs: number, windowMs: number): void {
    this.watchdog = null;
    if (!this.onResult) return;
    if (this.refusal) {
      this.emit({ ok: false, reason: `${this.label}: ${this.refusal}` });
      return this.armWatchdog(this.opts.intervalMs);
    }
    const running = this.helper.running;
    // Silence across a stall of our own loop, or while the hypervisor held the machine, is no verdict.
    const stolen = !stalledMs && running ? this.steal.excuse(windowMs) : null;
    this.emit(
      stalledMs && running
        ? stalledResult(this.label, stalledMs)
        : stolen
          ? inconclusiveResult(`${this.label}: no verdict for ${windowMs} ms`, stolen)
          : {
              ok: false,
              reason: `${this.label}: ${running ? `the ICMP helper gave no verdict for ${windowMs} ms` : this.helper.whyNotRunning()}`,
            },
    );
    this.armWatchdog(this.opts.intervalMs);
  }
}

/**
 * One `egressd-icmp` process and the probes it runs. Started with the first
 * probe; restarted with a backoff when it exits, with every probe it had.
 */
export class IcmpHelper {
  private run: HelperRun | null = null;
  private readonly probes = new Map<number, HelperProbe>();
  private nextId = 1;
  private closed = false;
  private restartTimer: NodeJS.Timeout | null = null;
  private restartDelayMs = 0;
  private lastError = "";
  /** Helper processes started (for tests and /status). */
  spawns = 0;

  constructor(readonly opts: IcmpHelperOptions = {}) {}

  /** A probe run by this helper; it starts when the prober starts it. */
  probe(o: IcmpProbeOptions): StreamProbe {
    const errs = icmpOptionProblems(o);
    if (errs.length) throw new Error(`icmp probe: ${errs.join("; ")}`);
    return new HelperProbe(this, this.nextId++, o, this.opts.steal);
  }

  /** Pid of the running helper, if any. */
  get pid(): number | undefined {
    return this.run?.child.pid;
  }

  get running(): boolean {
    return this.run !== null;
  }

  whyNotRunning(): string {
    const why = this.run?.lastError || this.lastError;
    return `the ICMP helper is not running${why ? ` (${why})` : ""}`;
  }

  /** Stops the helper; its probes are closed by the prober. */
  close(): void {
    this.closed = true;
    if (this.restartTimer) clearTimeout(this.restartTimer);
    this.restartTimer = null;
    const c = this.run?.child;
    this.run = null;
    if (c && c.exitCode === null && c.signalCode === null) c.kill("SIGKILL");
  }

  /** Adds (or adds again) a probe to the helper. */
  attach(p: HelperProbe): void {
    if (this.closed) return;
    this.probes.set(p.id, p);
    p.reported = -1; // the helper counts a probe's echoes from 0 each time it is added
    if (this.run) this.write(addCommand(p.id, p.opts));
    else if (!this.restartTimer) this.spawnChild();
  }

  detach(p: HelperProbe): void {
    if (!this.probes.delete(p.id)) return;
    if (this.run) this.write(`del ${p.id}\n`);
  }

  private write(text: string): void {
    this.run?.child.stdin?.write(text);
  }

  private spawnChild(): void {
    if (this.closed) return;
    const binary = this.opts.binary ?? ICMP_HELPER;
    const argv = this.opts.netns ? ["ip", "netns", "exec", this.opts.netns, binary] : [binary];
    // The helper sends and judges on time only if it gets a CPU on time, on a busy node too.
    const run: HelperRun = runHelper(argv, "the ICMP helper", {
      line: (line) => {
        if (this.run === run) this.onLine(line);
      },
      gone: (why) => {
        if (this.run !== run) return;
        this.run = null;
        this.lastError = run.lastError;
        if (this.closed) return;
        for (const p of this.probes.values()) p.helperGone(why);
        this.restartDelayMs = Math.min(Math.max(this.restartDelayMs * 2, 200), 5000);
        this.restartTimer = setTimeout(() => {
          this.restartTimer = null;
          this.spawnChild();
        }, this.restartDelayMs);
      },
    });
    this.run = run;
    this.spawns++;
    let commands = "";
    for (const p of this.probes.values()) {
      p.reported = -1;
      commands += addCommand(p.id, p.opts);
    }
    this.write(commands);
  }

  private onLine(line: string): void {
    const parsed = parseHelperLine(line);
    if (!parsed) return;
    this.restartDelayMs = 0;
    for (const v of parsed.verdicts) this.probes.get(v.id)?.verdict(v, parsed.drops);
    for (const r of parsed.refused) this.probes.get(r.id)?.refused(r.why);
  }
}
