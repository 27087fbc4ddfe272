// A stand-in for the kernel actuator: remembers the last desired state it was
// given and records applies and the teardown, in a log it can share with a
// FakeSpeaker; its self-checks pass unless told otherwise.
import type { PlanView } from "../../core/plan/index.js";
import type { ProbeResult } from "../../core/probe-state.js";
import type { KernelState, NatSourcesDelta } from "../../core/state.js";
import type { KernelActuator } from "../../routing/kernel-actuator.js";
import type { RepairChange } from "../../routing/local-repair.js";
import type { RepairPlan } from "../../core/plan/repair.js";
import type { KernelChanges, TeardownSummary } from "../../routing/reconcile.js";

const NO_CHANGE: KernelChanges = {
  addresses: { added: [], removed: [], foreign: [], missingInterface: [] },
  nat: { action: "none" } as KernelChanges["nat"],
  routes: { added: [], removed: [], blocked: [] } as unknown as KernelChanges["routes"],
  rules: { added: [], removed: [] } as unknown as KernelChanges["rules"],
  guard: "none",
};

export class FakeKernel implements KernelActuator {
  applied: KernelState | undefined;
  tornDown = false;
  /** Makes the next apply fail. */
  failNext: Error | undefined;
  /** Whether each self-check passes. */
  healthy = { address: true, forwarding: true, nftTable: true };

  constructor(readonly log: string[] = []) {}

  apply(desired: KernelState): Promise<KernelChanges> {
    this.log.push("kernel apply");
    const e = this.failNext;
    this.failNext = undefined;
    if (e) return Promise.reject(e);
    this.applied = desired;
    return Promise.resolve(NO_CHANGE);
  }

  teardown(): Promise<TeardownSummary> {
    this.log.push("kernel teardown");
    this.tornDown = true;
    return Promise.resolve({ nftTable: true, guardTable: false, addresses: [], routes: [], rules: [] });
  }

  natCounters() {
    return Promise.resolve([]);
  }

  checks = {
    address: (address: string) => ({
      start: (onResult: (r: ProbeResult) => void) =>
        onResult(
          this.healthy.address ? { ok: true } : { ok: false, reason: `address ${address} is not configured` },
        ),
      close: () => {},
    }),
    forwarding: () => () => Promise.resolve(this.healthy.forwarding),
    nftTable: () => () => Promise.resolve(this.healthy.nftTable),
    close: () => {},
  };

  close(): void {}

  /** Local repair's table: what it would forward now. */
  repair = {
    prefixes: [] as readonly string[],
    reconcile: (plan: RepairPlan | undefined): Promise<RepairChange> => {
      const had = this.repair.prefixes.length > 0;
      this.repair.prefixes = plan?.prefixes4 ?? [];
      return Promise.resolve(this.repair.prefixes.length ? "applied" : had ? "removed" : "none");
    },
    teardown: (): Promise<boolean> => {
      const had = this.repair.prefixes.length > 0;
      this.repair.prefixes = [];
      return Promise.resolve(had);
    },
  };
}

/** A FakeKernel that records whether each apply came with a source delta, and which were of sources only. */
export class DeltaKernel extends FakeKernel {
  deltas: boolean[] = [];
  sourcesOnly: boolean[] = [];
  override apply(desired: KernelState, opts: { sourcesDelta?: NatSourcesDelta; sourcesOnly?: boolean } = {}) {
    this.deltas.push(opts.sourcesDelta !== undefined);
    this.sourcesOnly.push(opts.sourcesOnly === true);
    return super.apply(desired);
  }
}

/** A NAT plan's decisions, order-free: classes by their destinations, and each source's class. */
export function natDecisions(k: KernelState): string {
  const classes = new Map(k.nat.classes.map((c) => [c.id, JSON.stringify(c.destinations)]));
  return JSON.stringify(k.nat.sources.map((s) => `${s.interval}=${classes.get(s.classId)}`).sort());
}

/** What health and BGP read of a view: the advertise scope, the policies' source counts, the addresses. */
function viewDecisions(v: PlanView): string {
  return JSON.stringify(
    [
      v.scope.outer,
      v.scope.excluded,
      v.config.policies.map((q) => [q.name, q.sourceCount]),
      v.kernel.addresses,
    ],
    (_k, x: unknown) => (typeof x === "bigint" ? x.toString() : x),
  );
}

/**
 * Throws, naming the first difference, unless a patched plan (`patched`: what
 * a kernel was given, and the view) decides what one made whole does.
 */
export function assertSamePlan(
  patched: { kernel: KernelState; view: PlanView },
  whole: { kernel: KernelState; view: PlanView },
): void {
  const a = natDecisions(patched.kernel);
  const b = natDecisions(whole.kernel);
  if (a !== b) throw new Error(`NAT patched ${a}\nwhole ${b}`);
  const rest = (k: KernelState) => JSON.stringify([k.addresses, k.routes, k.rules, k.guard]);
  if (rest(patched.kernel) !== rest(whole.kernel))
    throw new Error("addresses, routes, rules or guard differ");
  const v = viewDecisions(patched.view);
  const w = viewDecisions(whole.view);
  if (v !== w) throw new Error(`view patched ${v}\nwhole ${w}`);
}
