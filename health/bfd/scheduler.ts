// One timer for all the sessions of a manager. Each task reports its next
// deadline; the scheduler arms a single timer for the earliest one, and when it
// fires runs every task that is due (within a small slack, so that sessions whose
// deadlines are a fraction of a millisecond apart share one wake-up).
//
// A task whose deadline moves later (the usual case: a received packet pushes
// the detection deadline out) costs nothing; at worst the timer wakes once early,
// finds nothing due and re-arms. A deadline that moves earlier must be reported
// with kick().
import type { Clock } from "./clock.js";

export interface ScheduledTask {
  /** Earliest time (clock ms) the task needs to run, or Infinity. */
  nextDeadline(): number;
  /** Runs what is due at or before `dueBy`; `now` is the current time. */
  fire(now: number, dueBy: number): void;
}

export class Scheduler {
  private readonly tasks = new Set<ScheduledTask>();
  private handle: unknown;
  private armedAt = Infinity;
  private running = false;
  /** Wake-ups so far (for benchmarks and tests). */
  wakeups = 0;

  constructor(
    private readonly clock: Clock,
    private readonly slackMs = 1,
  ) {}

  add(task: ScheduledTask): void {
    this.tasks.add(task);
    this.kick(task.nextDeadline());
  }

  remove(task: ScheduledTask): void {
    this.tasks.delete(task);
    if (this.tasks.size === 0) this.disarm();
  }

  /** Tells the scheduler a deadline may now be as early as `deadline`. */
  kick(deadline: number): void {
    if (this.running || deadline >= this.armedAt) return;
    this.arm(deadline);
  }

  /** Stops the timer; tasks stay registered. */
  stop(): void {
    this.disarm();
    this.tasks.clear();
  }

  private disarm(): void {
    if (this.handle !== undefined) this.clock.clearTimer(this.handle);
    this.handle = undefined;
    this.armedAt = Infinity;
  }

  private arm(deadline: number): void {
    this.disarm();
    if (deadline === Infinity) return;
    this.armedAt = deadline;
    const delay = Math.max(0, Math.ceil(deadline - this.clock.now()));
    this.handle = this.clock.setTimer(delay, () => this.run());
  }

  private run(): void {
    this.handle = undefined;
    this.armedAt = Infinity;
    this.wakeups++;
    this.running = true;
    try {
      // A task can fall due again while others run (a very short interval): a few rounds at most.
      for (let round = 0; round < 4; round++) {
        const now = this.clock.now();
        const dueBy = now + this.slackMs;
        let next = Infinity;
        for (const task of this.tasks) {
          if (task.nextDeadline() <= dueBy) task.fire(now, dueBy);
          next = Math.min(next, task.nextDeadline());
        }
        if (next > this.clock.now() + this.slackMs) break;
      }
    } finally {
      this.running = false;
      let min = Infinity;
      for (const task of this.tasks) min = Math.min(min, task.nextDeadline());
      this.arm(min);
    }
  }
}
