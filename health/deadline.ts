// A probe's timeout that is fair to the probe when the event loop stalls.
//
// When the main thread is busy (a large config parsed, a long garbage
// collection), timers fire late, and they fire before the loop reads the
// answers that arrived meanwhile: a plain setTimeout would fail a probe whose
// reply is already sitting in a socket. So a deadline that fires waits one
// more turn of the loop (setImmediate runs after the poll phase), letting
// answers already received settle the probe first; only then does it expire.
// And if it fired much later than it was due, the loop was stalled for a
// good part of the probe's window: the probe could not be run fairly, which
// the caller reports as inconclusive rather than as a failure.
import { performance } from "node:perf_hooks";

/** A deadline fired this late (ms, and at least this fraction of its duration) means the loop stalled. */
export const STALL_MIN_MS = 20;
export const STALL_FRACTION = 0.5;

export interface Deadline {
  /** The probe settled: the deadline will not expire. */
  cancel(): void;
  /** Starts the same deadline again from now (a watchdog pushed back), reusing its timer. */
  restart(): void;
}

/**
 * Calls `onExpire` once `ms` have passed and the answers that arrived by
 * then have been read, unless cancelled first. `stalledMs` is how late the
 * timer fired when that lateness means a stall (else 0).
 */
export function deadline(
  ms: number,
  onExpire: (stalledMs: number) => void,
  now: () => number = () => performance.now(),
): Deadline {
  let due = now() + ms;
  let cancelled = false;
  let immediate: NodeJS.Immediate | undefined;
  const timer = setTimeout(() => {
    const late = now() - due;
    immediate = setImmediate(() => {
      if (cancelled) return;
      cancelled = true;
      onExpire(late > Math.max(STALL_MIN_MS, ms * STALL_FRACTION) ? Math.round(late) : 0);
    });
  }, ms);
  return {
    cancel() {
      cancelled = true;
      clearTimeout(timer);
      if (immediate) clearImmediate(immediate);
    },
    restart() {
      if (immediate) clearImmediate(immediate);
      immediate = undefined;
      cancelled = false;
      due = now() + ms;
      timer.refresh(); // reactivates it too when it has fired already
    },
  };
}

/** The result of a probe that could not be judged fairly, and why (health/steal.ts too). */
export function inconclusiveResult(
  what: string,
  why: string,
): { ok: false; inconclusive: true; reason: string } {
  return { ok: false, inconclusive: true, reason: `${what}: no verdict, ${why}` };
}

/** The result a probe gives when a stall kept it from being judged. */
export function stalledResult(
  what: string,
  stalledMs: number,
): { ok: false; inconclusive: true; reason: string } {
  return inconclusiveResult(what, `the event loop stalled ${stalledMs} ms past the timeout`);
}
