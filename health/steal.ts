// CPU steal: the time a hypervisor gave this VM's CPUs to other guests.
//
// When the hypervisor takes most of the machine for a moment, every process
// on it stops at once: replies wait unread, the kernel's own delivery of
// packets stalls, and a probe that was waiting fails although the network
// did nothing. bench/soak found its false alarms there (six probe results in
// the one second in which 2.3 s of the VM's two CPUs were stolen, with
// egressd's own loop on time). A window in which a large share of the
// machine did not run is no verdict on the network, as a stalled event loop
// is none (health/deadline.ts): the probe reports it as inconclusive.
//
// Steal is read from /proc/stat (the `cpu` line's eighth value, in USER_HZ
// ticks, summed over all CPUs). Samples are taken on activity the probes
// have anyway (a verdict of the ICMP helper, a check's run), at most one per
// SAMPLE_GAP_MS, so that a quiet window still has a sample from just before
// it began, and no timer of its own wakes the thread.
import { readProcFile } from "../lib/proc-file.js";
import { performance } from "node:perf_hooks";

/** A window is excused when at least this share of the machine's CPU time in it was stolen. */
export const STEAL_FRACTION = 0.25;
/** Samples are at least this far apart. */
export const SAMPLE_GAP_MS = 100;
/** Samples older than this are dropped. */
const KEEP_MS = 10_000;
/** Linux's USER_HZ: /proc/stat counts in hundredths of a second on every architecture. */
const TICK_MS = 10;

/** Cumulative steal of all CPUs, and how many CPUs there are. */
export interface StealCounter {
  stolenMs: number;
  cpus: number;
}

/** How much of the machine was stolen over a span ending now. */
export interface StealReading extends StealCounter {
  spanMs: number;
}

/** Parses /proc/stat's text; null when it has no steal (not Linux, or a kernel without it). */
export function parseProcStat(text: string): StealCounter | null {
  const nl = text.indexOf("\n");
  const first = (nl < 0 ? text : text.slice(0, nl)).trim().split(/\s+/);
  if (first[0] !== "cpu" || first.length < 9) return null;
  const ticks = Number(first[8]);
  if (!Number.isFinite(ticks)) return null;
  const cpus = text.match(/^cpu\d+ /gm)?.length ?? 0;
  return cpus > 0 ? { stolenMs: ticks * TICK_MS, cpus } : null;
}

function readProcStat(): StealCounter | null {
  try {
    return parseProcStat(readProcFile("/proc/stat"));
  } catch {
    return null;
  }
}

export class StealClock {
  private readonly samples: { at: number; stolenMs: number }[] = [];
  private lastAt = -Infinity;

  constructor(
    private readonly read: () => StealCounter | null = readProcStat,
    private readonly now: () => number = () => performance.now(),
  ) {}

  /** Takes a sample unless one was taken within SAMPLE_GAP_MS: cheap enough to call on every event. */
  note(): void {
    const at = this.now();
    if (at - this.lastAt < SAMPLE_GAP_MS) return;
    this.lastAt = at;
    const c = this.read();
    if (!c) return;
    this.samples.push({ at, stolenMs: c.stolenMs });
    while (this.samples.length > 1 && at - this.samples[0]!.at > KEEP_MS) this.samples.shift();
  }

  /**
   * Steal from the newest sample taken at least `windowMs` ago (or the
   * oldest, when none is that old) to now. Null when steal cannot be read or
   * no sample precedes now.
   */
  over(windowMs: number): StealReading | null {
    const at = this.now();
    const c = this.read();
    if (!c) return null;
    let base: { at: number; stolenMs: number } | undefined;
    for (const s of this.samples) {
      if (s.at > at - windowMs && base) break;
      base = s;
    }
    if (at - this.lastAt >= SAMPLE_GAP_MS) {
      this.lastAt = at;
      this.samples.push({ at, stolenMs: c.stolenMs });
    }
    if (!base || at <= base.at) return null;
    return { stolenMs: Math.max(0, c.stolenMs - base.stolenMs), spanMs: at - base.at, cpus: c.cpus };
  }

  /**
   * Why a probe window of `windowMs` ending now is no verdict, when the
   * hypervisor took at least STEAL_FRACTION of the machine's CPU time in it;
   * else null.
   */
  excuse(windowMs: number): string | null {
    const r = this.over(windowMs);
    if (!r || r.stolenMs < STEAL_FRACTION * r.spanMs * r.cpus) return null;
    return (
      `the hypervisor stole ${Math.round(r.stolenMs)} ms of ${r.cpus} CPUs' ` +
      `${Math.round(r.spanMs)} ms (CPU steal)`
    );
  }
}

/** This machine's steal, shared by every probe of the process. */
export const HOST_STEAL = new StealClock();

/** A clock that never reports steal (for tests, and machines that are not VMs). */
export const NO_STEAL = new StealClock(() => null);

/**
 * At most this many results of one probe in a row are excused by steal: a
 * hypervisor that keeps taking the machine delays a probe's verdicts by that
 * many windows, never hides a failure. (A stalled event loop has no such
 * limit: the kernel forwards meanwhile, so a busy daemon must not withdraw;
 * a machine that is not running does not forward either.)
 */
export const MAX_STEAL_EXCUSES = 3;

/** One probe's use of a steal clock: the excuses it gave in a row. */
export class StealExcuses {
  private inRow = 0;
  constructor(private readonly clock: StealClock = HOST_STEAL) {}

  /** Activity: lets the clock keep a recent sample. */
  note(): void {
    this.clock.note();
  }

  /** Why the window of `windowMs` ending now is no verdict, or null (then the result counts). */
  excuse(windowMs: number): string | null {
    if (this.inRow >= MAX_STEAL_EXCUSES) return null;
    const why = this.clock.excuse(windowMs);
    if (why) this.inRow++;
    return why;
  }

  /**
   * The probe succeeded: the count starts again. (A failure does not start
   * it: under steal that outlasts the excuses, every window fails until the
   * target answers.)
   */
  succeeded(): void {
    this.inRow = 0;
  }
}
