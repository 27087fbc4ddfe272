// The gateway's data plane: a config (its text, or a config already
// validated) in; the static plan made, kept and shown to the gateway as a
// small view; the kernel programmed to it on demand. A plan is first
// prepared (parsed, validated, planned: nothing applied), then committed or
// discarded, so a reload that the gateway refuses changes nothing.
//
// InlineDataplane does this on the calling thread (tests with a fake
// kernel, small tools). The daemon uses DataplaneWorker
// (dataplane-worker.ts): the same InlineDataplane in a worker thread, so
// that parsing, planning and diffing 100k sources never block the main
// thread, where probes are judged and withdrawals are sent.
import { createHash } from "node:crypto";
import type { ConfigIssue } from "../inputs/config/issues.js";
import { loadConfig } from "../inputs/config/load.js";
import type { GatewayConfig } from "../core/config/gateway-config.js";
import { planStatic, viewOf, type PlanView, type StaticPlan } from "../core/plan/index.js";
import type { KernelActuator } from "../routing/kernel-actuator.js";
import type { NatCounter } from "../routing/nft.js";
import type { KernelChanges, TeardownSummary } from "../routing/reconcile.js";

export type PrepareInput = { text: string } | { config: GatewayConfig };

export type Prepared =
  | { ok: false; errors: ConfigIssue[]; warnings: ConfigIssue[] }
  | {
      ok: true;
      /** Names this plan for commit() or discard(). */
      id: number;
      view: PlanView;
      warnings: ConfigIssue[];
      /** The config equals the committed one: nothing would change. */
      unchanged: boolean;
    };

export interface Dataplane {
  /** Parses (for text), validates and plans; applies nothing. A plan that throws is an error, not a rejection. */
  prepare(input: PrepareInput): Promise<Prepared>;
  /** Makes prepared plan `id` the one apply() programs; other prepared plans are dropped. */
  commit(id: number): Promise<void>;
  /** Drops prepared plan `id`. */
  discard(id: number): Promise<void>;
  /** Programs the committed plan into the kernel. */
  apply(): Promise<KernelChanges>;
  /** Removes everything egressd owns in the kernel. */
  teardown(): Promise<TeardownSummary>;
  /** The SNAT counters of the committed plan's policies. */
  natCounters(): Promise<NatCounter[]>;
  /** Releases sockets (and the thread). */
  close(): Promise<void>;
}

/**
 * What a prepared plan keeps: the kernel plan, the view, and a digest of the
 * config (to tell an unchanged one). Not the config, nor the plan's full
 * advertise scope: at 100k sources each is megabytes that nothing reads
 * again once the view is made, and every prepared plan holds its own.
 */
interface Kept {
  kernel: StaticPlan["kernel"];
  view: PlanView;
  digest: string;
}

export class InlineDataplane implements Dataplane {
  private nextId = 1;
  private readonly prepared = new Map<number, Kept>();
  private committed: Kept | undefined;

  constructor(private readonly kernel: KernelActuator) {}

  prepare(input: PrepareInput): Promise<Prepared> {
    let config: GatewayConfig;
    let warnings: ConfigIssue[] = [];
    if ("text" in input) {
      const r = loadConfig(input.text);
      if (!r.ok) return Promise.resolve(r);
      config = r.config as GatewayConfig;
      warnings = r.warnings;
    } else config = input.config;
    const digest = createHash("sha256").update(JSON.stringify(config)).digest("hex");
    const unchanged = digest === this.committed?.digest;
    let kept: Kept;
    try {
      if (unchanged) kept = this.committed!;
      else {
        const plan = planStatic(config);
        kept = { kernel: plan.kernel, view: viewOf(plan), digest };
      }
    } catch (e) {
      const message = `the config cannot be planned: ${(e as Error).message}`;
      return Promise.resolve({ ok: false, errors: [{ path: "(top level)", message }], warnings });
    }
    const id = this.nextId++;
    this.prepared.set(id, kept);
    return Promise.resolve({ ok: true, id, view: kept.view, warnings, unchanged });
  }

  commit(id: number): Promise<void> {
    const p = this.prepared.get(id);
    if (!p) return Promise.reject(new Error(`no prepared plan ${id}`));
    this.committed = p;
    this.prepared.clear();
    return Promise.resolve();
  }

  discard(id: number): Promise<void> {
    this.prepared.delete(id);
    return Promise.resolve();
  }

  apply(): Promise<KernelChanges> {
    if (!this.committed) return Promise.reject(new Error("no plan committed"));
    return this.kernel.apply(this.committed.kernel);
  }

  teardown(): Promise<TeardownSummary> {
    return this.kernel.teardown();
  }

  natCounters(): Promise<NatCounter[]> {
    return this.committed ? this.kernel.natCounters(this.committed.kernel.nat) : Promise.resolve([]);
  }

  close(): Promise<void> {
    this.kernel.close();
    return Promise.resolve();
  }
}
