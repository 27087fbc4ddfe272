// The health state machine of one probe: rise/fall counting, hold-down before
// an up that follows a down, and flap damping (in the manner of RFC 2439).
//
// Pure: no timers, no I/O. The caller passes the time (`now`, in milliseconds
// of a monotonic clock) with every call and asks nextDeadline() when it must
// call tick() again, so tests drive it with a fake clock.

/** One probe observation. */
export interface ProbeResult {
  ok: boolean;
  /** Round-trip or response time of a successful probe, in ms. */
  rttMs?: number;
  /** Why it failed (or what it saw), for logs and /status. */
  reason?: string;
  /**
   * The probe could not be judged (its timeout fell in a stall of the
   * prober's own event loop): counted neither way, and ok is false.
   */
  inconclusive?: boolean;
}

/**
 * unknown: no verdict yet (just started).
 * up:      healthy; the routes that depend on it may be advertised.
 * down:    failed; the routes that depend on it must be withdrawn.
 * held:    healthy again after a down, but not trusted yet: waiting out the
 *          hold-down, or suppressed by flap damping. Treat as down.
 */
export type ProbeState = "unknown" | "up" | "down" | "held";

export interface DampingConfig {
  /** Time for the penalty to halve. */
  halfLifeMs: number;
  /** Penalty added each time the target flaps: up -> down, or held -> down. */
  penalty: number;
  /** Suppress (keep held) once the penalty exceeds this. */
  suppressAbove: number;
  /** Stop suppressing once the penalty has decayed below this. */
  reuseBelow: number;
  /** Longest suppression after the last flap (caps the penalty). */
  maxSuppressMs: number;
}

export interface StateConfig {
  /** Consecutive successes that make an unknown/down probe healthy. */
  rise: number;
  /** Consecutive failures that make an up/held/unknown probe down. */
  fall: number;
  /** How long a probe that recovered from down stays held before going up. */
  holdDownMs: number;
  /** Flap damping; null or undefined disables it. */
  damping?: DampingConfig | null;
}

export interface StateTransition {
  from: ProbeState;
  to: ProbeState;
  /** The `now` at which it happened. */
  at: number;
  reason: string;
  /** Damping penalty at that moment (0 without damping). */
  penalty: number;
  suppressed: boolean;
}

export interface StateSnapshot {
  state: ProbeState;
  /** `now` of the last transition (or of creation). */
  since: number;
  reason: string;
  consecutiveOk: number;
  consecutiveFail: number;
  penalty: number;
  suppressed: boolean;
  /** When a held probe may go up (hold-down end, damping reuse), if held. */
  heldUntil: number | null;
  /** Number of flaps so far (up -> down and held -> down transitions). */
  flaps: number;
}

/** Checks a configuration; returns the problems (empty when valid). */
export function validateStateConfig(c: StateConfig): string[] {
  const errs: string[] = [];
  if (!Number.isInteger(c.rise) || c.rise < 1) errs.push("rise must be an integer >= 1");
  if (!Number.isInteger(c.fall) || c.fall < 1) errs.push("fall must be an integer >= 1");
  if (!(c.holdDownMs >= 0)) errs.push("holdDownMs must be >= 0");
  const d = c.damping;
  if (d) {
    if (!(d.halfLifeMs > 0)) errs.push("damping.halfLifeMs must be > 0");
    if (!(d.penalty > 0)) errs.push("damping.penalty must be > 0");
    if (!(d.reuseBelow > 0)) errs.push("damping.reuseBelow must be > 0");
    if (!(d.suppressAbove > d.reuseBelow)) errs.push("damping.suppressAbove must be > damping.reuseBelow");
    if (!(d.maxSuppressMs > 0)) errs.push("damping.maxSuppressMs must be > 0");
  }
  return errs;
}

/** The highest penalty damping keeps, so a suppression never lasts more than maxSuppressMs. */
export function penaltyCeiling(d: DampingConfig): number {
  return d.reuseBelow * Math.pow(2, d.maxSuppressMs / d.halfLifeMs);
}

export class ProbeStateMachine {
  private current: ProbeState = "unknown";
  private since: number;
  private reason = "no result yet";
  private okRun = 0;
  private failRun = 0;
  /** Penalty value as of `penaltyAt`. */
  private penaltyValue = 0;
  private penaltyAt = 0;
  private isSuppressed = false;
  private holdUntil = 0;
  private flapCount = 0;

  constructor(
    readonly config: StateConfig,
    now: number,
  ) {
    const errs = validateStateConfig(config);
    if (errs.length) throw new Error(`invalid probe state config: ${errs.join("; ")}`);
    this.since = now;
    this.penaltyAt = now;
  }

  get state(): ProbeState {
    return this.current;
  }

  /** Damping penalty at `now`, decayed. */
  penalty(now: number): number {
    const d = this.config.damping;
    if (!d || this.penaltyValue === 0) return 0;
    const dt = Math.max(0, now - this.penaltyAt);
    return this.penaltyValue * Math.pow(2, -dt / d.halfLifeMs);
  }

  /** When the decaying penalty falls below reuseBelow (only meaningful while suppressed). */
  private reuseAt(): number {
    const d = this.config.damping;
    if (!d || !this.isSuppressed || this.penaltyValue <= d.reuseBelow) return this.penaltyAt;
    return this.penaltyAt + d.halfLifeMs * Math.log2(this.penaltyValue / d.reuseBelow);
  }

  /** When a held probe may go up, given what is known now. */
  private releaseAt(): number {
    return Math.max(this.holdUntil, this.reuseAt());
  }

  /**
   * Feeds one probe result. Returns the transition it causes, if any: a
   * `down` is returned from this very call, so the caller can act on it
   * before doing anything else.
   */
  observe(result: ProbeResult, now: number): StateTransition | null {
    if (result.ok) {
      this.okRun++;
      this.failRun = 0;
    } else {
      this.failRun++;
      this.okRun = 0;
    }
    const { rise, fall } = this.config;
    const why = result.reason ? `: ${result.reason}` : "";
    switch (this.current) {
      case "unknown":
        if (this.failRun >= fall) return this.move("down", now, `fall ${fall}/${fall} reached${why}`);
        if (this.okRun >= rise) return this.move("up", now, `rise ${rise}/${rise} reached`);
        return null;
      case "up":
        if (this.failRun >= fall) {
          this.addPenalty(now);
          return this.move("down", now, `fall ${fall}/${fall} reached${why}`);
        }
        return null;
      case "held":
        if (this.failRun >= fall) {
          // Not a withdraw (held is not advertised), but the target flapped again.
          this.addPenalty(now);
          return this.move("down", now, `fall ${fall}/${fall} reached while held${why}`);
        }
        return this.tick(now);
      case "down":
        if (this.okRun >= rise) {
          this.holdUntil = now + this.config.holdDownMs;
          this.refreshSuppression(now);
          if (this.releaseAt() <= now) return this.move("up", now, `rise ${rise}/${rise} reached`);
          return this.move("held", now, this.heldReason(now));
        }
        return null;
    }
  }

  /** Advances time: a held probe goes up once its hold-down and suppression are over. */
  tick(now: number): StateTransition | null {
    if (this.current !== "held") return null;
    this.refreshSuppression(now);
    if (this.releaseAt() <= now) {
      return this.move("up", now, `stable for ${Math.round(now - this.since)} ms after recovery`);
    }
    return null;
  }

  /** The next time tick() may change something, or null if only results can. */
  nextDeadline(): number | null {
    if (this.current !== "held") return null;
    return this.releaseAt();
  }

  snapshot(now: number): StateSnapshot {
    return {
      state: this.current,
      since: this.since,
      reason: this.reason,
      consecutiveOk: this.okRun,
      consecutiveFail: this.failRun,
      penalty: this.penalty(now),
      suppressed: this.isSuppressed,
      heldUntil: this.current === "held" ? this.releaseAt() : null,
      flaps: this.flapCount,
    };
  }

  private addPenalty(now: number): void {
    this.flapCount++;
    const d = this.config.damping;
    if (!d) return;
    const value = Math.min(this.penalty(now) + d.penalty, penaltyCeiling(d));
    this.penaltyValue = value;
    this.penaltyAt = now;
    if (value > d.suppressAbove) this.isSuppressed = true;
  }

  /** Ends a suppression whose penalty has decayed below the reuse threshold. */
  private refreshSuppression(now: number): void {
    const d = this.config.damping;
    if (this.isSuppressed && d && now >= this.reuseAt()) this.isSuppressed = false;
  }

  private heldReason(now: number): string {
    const d = this.config.damping;
    const holdLeft = Math.max(0, this.holdUntil - now);
    if (this.isSuppressed && d) {
      const reuseLeft = Math.max(0, this.reuseAt() - now);
      return (
        `recovered; suppressed by damping (penalty ${Math.round(this.penalty(now))} > ` +
        `${d.suppressAbove}), reuse in ${Math.round(Math.max(reuseLeft, holdLeft))} ms`
      );
    }
    return `recovered; hold-down ${Math.round(holdLeft)} ms`;
  }

  private move(to: ProbeState, now: number, reason: string): StateTransition {
    const from = this.current;
    this.current = to;
    this.since = now;
    this.reason = reason;
    return { from, to, at: now, reason, penalty: this.penalty(now), suppressed: this.isSuppressed };
  }
}
