// The event loop's heart: level-triggered reconciliation.
//
// Every trigger (config change, probe or peer transition, kernel event,
// periodic resync) asks for one reconcile; reconciles never overlap, and
// triggers that arrive while one runs are coalesced into a single follow-up.
// Each reconcile recomputes the full desired state from scratch (plan() is
// pure) and hands it to the reconcilers, which diff against what is really
// there. Targets run in order, and each one is told which earlier targets
// failed in this reconcile: the BGP target uses that to advertise nothing new
// while the kernel is not programmed. (A failing probe does not wait for a
// reconcile: the gateway withdraws its paths first, then triggers one.)
//
// A trigger may name the targets it concerns (a pod's address moved between
// policies concerns the kernel alone): a reconcile runs every target unless
// all its triggers named theirs, and then only those. The desired state is
// computed only when a target that reads it runs.
import type { Logger } from "./log.js";

export interface ReconcileTarget<D> {
  readonly name: string;
  /**
   * Makes the world match `desired`; returns a short description of what
   * changed (empty: nothing). `failed` names the targets before this one that
   * failed in the same reconcile.
   */
  apply(desired: D, failed: ReadonlySet<string>): Promise<string[]>;
  /** The target does not read `desired` (it is not computed for it alone). */
  readonly ignoresDesired?: boolean;
  /**
   * The next target starts at once instead of after this one, and the two
   * run together; the target after them waits for both. The next target is
   * not told whether this one failed.
   */
  readonly overlapsNext?: boolean;
}

export interface ControllerOptions<D> {
  log: Logger;
  /** Computes the full desired state from the current inputs; pure. */
  desired: () => D;
  targets: ReconcileTarget<D>[];
  /** Periodic resync, so drift (someone deleting our nft table) is repaired. */
  resyncMs: number;
  /** Delay before retrying after a failed reconcile. */
  retryMs?: number;
  onReconciled?: (r: ReconcileResult) => void;
}

export interface ReconcileResult {
  reasons: string[];
  durationMs: number;
  changes: Record<string, string[]>;
  errors: Record<string, string>;
  /** How long each target took, in ms (where a reconcile's time goes). */
  targetMs?: Record<string, number>;
}

export class Controller<D> {
  private running = false;
  private pending: string[] = [];
  /** The targets the pending triggers concern; undefined: all of them. */
  private pendingTargets: Set<string> | undefined = new Set();
  private timer: NodeJS.Timeout | undefined;
  private retryTimer: NodeJS.Timeout | undefined;
  private stopped = false;
  private idleWaiters: (() => void)[] = [];
  last: ReconcileResult | undefined;
  lastSuccessAt: number | undefined;

  constructor(private readonly opts: ControllerOptions<D>) {}

  start(): void {
    this.stopped = false;
    this.trigger("start");
    this.timer = setInterval(() => this.trigger("resync"), this.opts.resyncMs);
    this.timer.unref();
  }

  stop(): void {
    this.stopped = true;
    clearInterval(this.timer);
    clearTimeout(this.retryTimer);
  }

  /** Asks for a reconcile of `targets` (default: all); cheap and synchronous. */
  trigger(reason: string, targets?: readonly string[]): void {
    if (this.stopped) return;
    if (this.pending.length === 0) this.pendingTargets = new Set();
    this.pending.push(reason);
    if (targets === undefined) this.pendingTargets = undefined;
    else for (const t of targets) this.pendingTargets?.add(t);
    if (!this.running) void this.loop();
  }

  /** Resolves when no reconcile runs or is pending. */
  idle(): Promise<void> {
    if (!this.running && this.pending.length === 0) return Promise.resolve();
    return new Promise((r) => this.idleWaiters.push(r));
  }

  private async loop(): Promise<void> {
    this.running = true;
    try {
      while (this.pending.length && !this.stopped) {
        const reasons = [...new Set(this.pending)];
        const only = this.pendingTargets;
        this.pending = [];
        await this.reconcileOnce(reasons, only);
      }
    } finally {
      this.running = false;
      if (!this.pending.length) for (const w of this.idleWaiters.splice(0)) w();
    }
  }

  private async reconcileOnce(reasons: string[], only?: ReadonlySet<string>): Promise<void> {
    const { log } = this.opts;
    const started = performance.now();
    const result: ReconcileResult = { reasons, durationMs: 0, changes: {}, errors: {} };
    const targets = this.opts.targets.filter((t) => only === undefined || only.has(t.name));
    let desired: D | undefined;
    if (targets.some((t) => !t.ignoresDesired)) {
      try {
        desired = this.opts.desired();
      } catch (e) {
        result.errors.plan = (e as Error).message;
        log.error({ err: e, reasons }, "planning failed; keeping the current state");
        this.finish(result, started);
        return;
      }
    }
    const failed = new Set<string>();
    const targetMs: Record<string, number> = {};
    result.targetMs = targetMs;
    const run = async (target: ReconcileTarget<D>, seen: ReadonlySet<string>) => {
      const t0 = performance.now();
      try {
        // Computed above whenever a target that reads it is among these.
        const changes = await target.apply(desired as D, seen);
        if (changes.length) result.changes[target.name] = changes;
      } catch (e) {
        failed.add(target.name);
        result.errors[target.name] = (e as Error).message;
        log.error({ err: e, target: target.name, reasons }, "reconcile failed");
      }
      targetMs[target.name] = +(performance.now() - t0).toFixed(1);
    };
    for (let i = 0; i < targets.length; i++) {
      const target = targets[i]!;
      const next = targets[i + 1];
      if (target.overlapsNext && next) {
        const seen = new Set(failed);
        await Promise.all([run(target, seen), run(next, seen)]);
        i++;
      } else await run(target, failed);
    }
    this.finish(result, started);
  }

  private finish(result: ReconcileResult, started: number): void {
    const { log } = this.opts;
    result.durationMs = performance.now() - started;
    this.last = result;
    const failed = Object.keys(result.errors).length > 0;
    if (!failed) this.lastSuccessAt = Date.now();
    const changed = Object.keys(result.changes).length > 0;
    if (changed || failed) {
      log.info(
        {
          reasons: result.reasons,
          changes: result.changes,
          errors: result.errors,
          durationMs: +result.durationMs.toFixed(1),
          targetMs: result.targetMs,
        },
        failed ? "reconcile finished with errors" : "reconciled",
      );
    } else {
      log.debug({ reasons: result.reasons, durationMs: +result.durationMs.toFixed(1) }, "in sync");
    }
    this.opts.onReconciled?.(result);
    if (failed && !this.stopped) {
      clearTimeout(this.retryTimer);
      this.retryTimer = setTimeout(() => this.trigger("retry"), this.opts.retryMs ?? 1000);
      this.retryTimer.unref();
    }
  }
}
