// The baseline for bench/probe-icmp-modes: ICMP probes as egressd ran them
// before native/icmp-prober.c, one long-running iputils `ping` child per
// target, whose output is parsed line by line.
//
//   ping -n -O -D -i 0.1 [-4|-6] [-I source] target
//
// -O makes ping print "no answer yet for icmp_seq=N" when it sends N+1 and N
// is still unanswered; from that we know when N was sent (one interval
// earlier) and fail N at send time + timeout unless its reply arrives first.
// A reply slower than the timeout counts as a failure, and a result older than
// one already reported is dropped, so results stay in order. A watchdog fails
// the probe when ping prints nothing for interval + timeout (ping backs off on
// send errors such as ENOBUFS when the link is down, and it may die): the
// child is then restarted with a backoff. The child is killed on close().
// A missed or late reply, or a silence, in a window in which the hypervisor
// took a large share of the machine is inconclusive (health/steal.ts).
import type { ChildProcess } from "node:child_process";
import { isIPv4, isIPv6 } from "node:net";
import { createInterface } from "node:readline";
import type { ProbeResult } from "../core/probe-state.js";
import type { StreamProbe } from "../health/probe-types.js";
import { deadline, inconclusiveResult, stalledResult, type Deadline } from "../health/deadline.js";
import { StealExcuses, type StealClock } from "../health/steal.js";
import { eachLine, spawnDetector } from "../health/detector-process.js";

export interface PingProbeOptions {
  target: string;
  intervalMs: number;
  timeoutMs: number;
  /** Source address or interface name (ping -I). */
  sourceAddress?: string;
  /** Run ping in this network namespace (ip netns exec); for tests and labs. */
  netns?: string;
  /** ping binary (default "ping" from PATH; iputils). */
  ping?: string;
  /** Payload size (ping -s); default 56. */
  size?: number;
  /** The clock timeouts' lateness is read on (tests pin it; default performance.now). */
  now?: () => number;
  /** The machine's CPU steal (default: /proc/stat; tests pass one that never steals). */
  steal?: StealClock;
}

const REPLY = /icmp_seq=(\d+)\b.*\btime=([\d.]+) ms/;
const NO_ANSWER = /^(?:\[[\d.]+\] )?no answer yet for icmp_seq=(\d+)/;
const UNREACH = /^(?:\[[\d.]+\] )?From \S+ icmp_seq=(\d+) (.*)$/;

/** The argv of the ping child. */
export function pingArgv(o: PingProbeOptions): string[] {
  const secs = (o.intervalMs / 1000).toFixed(3);
  const argv = [o.ping ?? "ping", "-n", "-O", "-D", "-i", secs];
  if (isIPv6(o.target)) argv.push("-6");
  else if (isIPv4(o.target)) argv.push("-4");
  if (o.sourceAddress) argv.push("-I", o.sourceAddress);
  if (o.size !== undefined) argv.push("-s", String(o.size));
  argv.push(o.target);
  return o.netns ? ["ip", "netns", "exec", o.netns, ...argv] : argv;
}

/** Unwraps ping's 16-bit icmp_seq into a growing number. */
class SeqUnwrapper {
  private last = -1;
  unwrap(seq16: number): number {
    if (this.last < 0) {
      this.last = seq16;
      return seq16;
    }
    let delta = (seq16 - (this.last & 0xffff)) & 0xffff;
    if (delta >= 0x8000) delta -= 0x10000;
    const full = this.last + delta;
    if (full > this.last) this.last = full;
    return full;
  }
}

export class PingProbe implements StreamProbe {
  private child: ChildProcess | null = null;
  private onResult: ((r: ProbeResult) => void) | null = null;
  private closed = false;
  private seq = new SeqUnwrapper();
  /** Highest seq already reported; older results are dropped. */
  private reported = -1;
  /** Unanswered seqs -> their timeout. */
  private pending = new Map<number, Deadline>();
  private watchdog: Deadline | null = null;
  private restartTimer: NodeJS.Timeout | null = null;
  private restartDelayMs = 0;
  private lastError = "";
  private readonly steal: StealExcuses;
  /** Number of ping children started (for tests and /status). */
  spawns = 0;

  constructor(readonly opts: PingProbeOptions) {
    if (!(opts.intervalMs >= 10)) throw new Error("icmp probe: intervalMs must be >= 10");
    if (!(opts.timeoutMs > 0)) throw new Error("icmp probe: timeoutMs must be > 0");
    this.steal = new StealExcuses(opts.steal);
  }

  /** Pid of the running ping child, if any. */
  get pid(): number | undefined {
    return this.child?.pid;
  }

  start(onResult: (r: ProbeResult) => void): void {
    this.onResult = onResult;
    this.spawnChild();
  }

  close(): void {
    this.closed = true;
    this.onResult = null;
    this.clearTimers();
    if (this.restartTimer) clearTimeout(this.restartTimer);
    this.restartTimer = null;
    const c = this.child;
    this.child = null;
    if (c && c.exitCode === null && c.signalCode === null) c.kill("SIGKILL");
  }

  private spawnChild(): void {
    if (this.closed) return;
    // ping reads the reply and prints it; on a busy node it must not wait
    // for a CPU past the timeout (a failure the network did not cause).
    const child = spawnDetector(pingArgv(this.opts), "ignore");
    this.child = child;
    this.spawns++;
    this.seq = new SeqUnwrapper();
    this.reported = -1;
    this.armWatchdog(this.opts.intervalMs + this.opts.timeoutMs);
    eachLine(child.stdout!, (l) => {
      if (this.child === child) this.onLine(l);
    });
    createInterface({ input: child.stderr! }).on("line", (l) => {
      if (this.child === child && l.trim()) this.lastError = l.trim();
    });
    child.on("error", (err) => {
      this.lastError = `ping: ${err.message}`;
    });
    child.on("close", (code, signal) => {
      if (this.child !== child) return;
      this.child = null;
      this.clearTimers();
      if (this.closed) return;
      const why = this.lastError || `ping exited (${signal ?? code})`;
      this.emit({ ok: false, reason: why });
      // Keep failing at the probe interval while ping is gone.
      this.armWatchdog(this.opts.intervalMs);
      this.restartDelayMs = Math.min(Math.max(this.restartDelayMs * 2, 200), 5000);
      this.restartTimer = setTimeout(() => {
        this.restartTimer = null;
        this.spawnChild();
      }, this.restartDelayMs);
    });
  }

  private onLine(line: string): void {
    let m: RegExpExecArray | null;
    if ((m = REPLY.exec(line))) {
      const seq = this.seq.unwrap(Number(m[1]));
      const rtt = Number(m[2]);
      this.restartDelayMs = 0;
      this.lastError = "";
      this.settle(seq);
      if (seq <= this.reported) return; // already failed by its timeout
      if (rtt > this.opts.timeoutMs) {
        const stolen = this.steal.excuse(rtt);
        this.report(
          seq,
          stolen
            ? inconclusiveResult(`ping ${this.opts.target}: reply after ${rtt} ms`, stolen)
            : { ok: false, reason: `ping ${this.opts.target}: reply after ${rtt} ms` },
        );
      } else {
        this.report(seq, { ok: true, rttMs: rtt });
      }
    } else if ((m = NO_ANSWER.exec(line))) {
      const seq = this.seq.unwrap(Number(m[1]));
      this.armWatchdog(this.opts.intervalMs + this.opts.timeoutMs);
      if (seq <= this.reported || this.pending.has(seq)) {
        // ping repeats the same seq when it cannot send (link down): each
        // repetition is a send attempt that failed.
        this.settle(seq);
        this.report(seq, { ok: false, reason: this.failReason("cannot send") }, true);
        return;
      }
      // The rest of the timeout, judged after one more turn of the loop (see
      // health/deadline.ts): a reply ping printed meanwhile settles the seq
      // first. With the timeout equal to the interval nothing is left to
      // wait, but ping, late for a CPU, may print the reply right after
      // "no answer yet": the turn of the loop still lets it count (its time
      // is the kernel's, so a reply past the timeout still fails).
      const wait = Math.max(0, this.opts.timeoutMs - this.opts.intervalMs);
      const d = deadline(
        wait,
        (stalledMs) => {
          if (this.pending.get(seq) !== d) return;
          this.pending.delete(seq);
          // A stall of our loop over the wait says nothing of the target; with nothing to wait, ping's own
          // clock decided. A machine the hypervisor stopped over the timeout may not have read the reply.
          if (stalledMs && wait > 0)
            return this.report(seq, stalledResult(`ping ${this.opts.target}`, stalledMs));
          const stolen = this.steal.excuse(this.opts.timeoutMs);
          this.report(
            seq,
            stolen
              ? inconclusiveResult(`ping ${this.opts.target}`, stolen)
              : { ok: false, reason: this.failReason("no reply") },
          );
        },
        this.opts.now,
      );
      this.pending.set(seq, d);
    } else if ((m = UNREACH.exec(line))) {
      const seq = this.seq.unwrap(Number(m[1]));
      this.settle(seq);
      this.report(seq, { ok: false, reason: `ping ${this.opts.target}: ${m[2]}` });
    }
  }

  private failReason(what: string): string {
    const base = `ping ${this.opts.target}: ${what} within ${this.opts.timeoutMs} ms`;
    return this.lastError ? `${base} (${this.lastError})` : base;
  }

  private settle(seq: number): void {
    this.pending.get(seq)?.cancel();
    this.pending.delete(seq);
  }

  private report(seq: number, r: ProbeResult, repeat = false): void {
    if (!repeat && seq <= this.reported) return;
    if (seq > this.reported) this.reported = seq;
    // Anything older still pending is moot now.
    for (const [s, d] of this.pending) {
      if (s < seq) {
        d.cancel();
        this.pending.delete(s);
      }
    }
    this.armWatchdog(this.opts.intervalMs + this.opts.timeoutMs);
    this.emit(r);
  }

  private emit(r: ProbeResult): void {
    if (r.ok) this.steal.succeeded();
    this.onResult?.(r);
  }

  /**
   * (Re)starts the silence watchdog: every line from ping pushes it back.
   * It too expires only after the lines already received are read.
   */
  private armWatchdog(ms: number): void {
    if (this.closed) return;
    this.steal.note();
    // Every ping line lands here: push the same timer back rather than make a new one.
    if (this.watchdog && this.watchdogMs === ms) return this.watchdog.restart();
    this.watchdog?.cancel();
    this.watchdogMs = ms;
    this.watchdog = deadline(ms, (stalledMs) => this.onSilence(stalledMs), this.opts.now);
  }
  private watchdogMs = 0;

  private onSilence(stalledMs: number): void {
    const windowMs = this.watchdogMs;
    this.watchdog = null;
    if (this.closed) return;
    // Silence measured across a stall of our own loop, or while the hypervisor held the machine, is no
    // verdict on ping.
    const stolen = !stalledMs && this.child ? this.steal.excuse(windowMs) : null;
    this.emit(
      stalledMs && this.child
        ? stalledResult(`ping ${this.opts.target}`, stalledMs)
        : stolen
          ? inconclusiveResult(`ping ${this.opts.target}: silent ${windowMs} ms`, stolen)
          : { ok: false, reason: this.failReason(this.child ? "ping silent" : "ping not running") },
    );
    this.armWatchdog(this.opts.intervalMs);
  }

  private clearTimers(): void {
    for (const d of this.pending.values()) d.cancel();
    this.pending.clear();
    this.watchdog?.cancel();
    this.watchdog = null;
  }
}
