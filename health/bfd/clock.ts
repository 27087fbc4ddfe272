// Time source for BFD: a monotonic millisecond clock and one-shot timers.
// The manager takes a Clock so that unit tests drive time by hand (ManualClock)
// instead of waiting on real timers.
import { performance } from "node:perf_hooks";

export interface Clock {
  /** Monotonic time in milliseconds (fractional). */
  now(): number;
  /** Calls fn once, after about ms milliseconds. */
  setTimer(ms: number, fn: () => void): unknown;
  clearTimer(handle: unknown): void;
}

export const systemClock: Clock = {
  now: () => performance.now(),
  setTimer: (ms, fn) => setTimeout(fn, ms),
  clearTimer: (h) => clearTimeout(h as NodeJS.Timeout),
};

interface ManualTimer {
  at: number;
  seq: number;
  fn: () => void;
}

/** A clock that only moves when told to; timers fire in deadline order inside advance(). */
export class ManualClock implements Clock {
  private t: number;
  private seq = 0;
  private readonly timers = new Set<ManualTimer>();

  constructor(start = 0) {
    this.t = start;
  }

  now(): number {
    return this.t;
  }

  setTimer(ms: number, fn: () => void): unknown {
    const timer = { at: this.t + Math.max(0, ms), seq: this.seq++, fn };
    this.timers.add(timer);
    return timer;
  }

  clearTimer(handle: unknown): void {
    this.timers.delete(handle as ManualTimer);
  }

  /** Number of timers pending (for tests asserting a single scheduler timer). */
  get pending(): number {
    return this.timers.size;
  }

  /** Moves time forward by ms, firing every timer that falls due, in order. */
  advance(ms: number): void {
    const end = this.t + ms;
    for (;;) {
      let next: ManualTimer | undefined;
      for (const tm of this.timers)
        if (tm.at <= end && (!next || tm.at < next.at || (tm.at === next.at && tm.seq < next.seq))) next = tm;
      if (!next) break;
      this.timers.delete(next);
      this.t = Math.max(this.t, next.at);
      next.fn();
    }
    this.t = end;
  }
}
