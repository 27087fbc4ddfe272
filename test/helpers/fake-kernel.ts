// A stand-in for the kernel actuator: remembers the last desired state it was
// given and records applies and the teardown, in a log it can share with a
// FakeSpeaker; its self-checks pass unless told otherwise.
import type { KernelState, NatSourcesDelta } from "../../core/state.js";
import type { KernelActuator } from "../../routing/kernel-actuator.js";
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
    address: () => () => Promise.resolve(this.healthy.address),
    forwarding: () => () => Promise.resolve(this.healthy.forwarding),
    nftTable: () => () => Promise.resolve(this.healthy.nftTable),
    close: () => {},
  };

  close(): void {}
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
