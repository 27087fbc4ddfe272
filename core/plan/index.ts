// The core's entry points: every input the daemon gathers, as plain values,
// in; the whole desired state out. Pure: no clock, no I/O, no state between
// calls.
//
//   const planned = planStatic(config);      // once per config: the kernel plan, the advertise scope
//   const view = viewOf(planned);            // what health and BGP planning need of it (small)
//   const want = planDesired({ view, health });
//   planned.kernel, want.bgp, want.health
//
// The split follows the cost. planStatic reads every source of every policy
// (100k of them at scale): it runs when the config changes, and the daemon
// runs it off the main thread. A health change, far more frequent, replans
// only BGP, from the view, in well under a millisecond per policy.
import type { BgpConfig } from "../config/bgp-schema.js";
import type { GatewayConfig } from "../config/gateway-config.js";
import type { PolicyConfig } from "../config/schema.js";
import type { Family, KernelState } from "../state.js";
import {
  advertiseScope,
  intersectRanges,
  planBgp,
  type AdvertiseScope,
  type BgpDesired,
  type KernelView,
} from "./bgp.js";
import { healthFrom, type HealthView } from "./health.js";
import { plan } from "./kernel.js";
import { repairPlan, type RepairPlan } from "./repair.js";
import { lazySources, type NatIndex, type NatResult } from "./nat.js";
import { policyFamily } from "./model.js";
import { backupPrefixes, lastResortPrefixes } from "./sync.js";
import type { Range, Span } from "../ip.js";
import { partitionPoint } from "../search.js";
import { withSourceCounts } from "./source-counts.js";

export { withSourceCounts };

/** What changes at run time, as the daemon last saw it. */
export interface HealthInputs {
  /** Each configured probe's state ("up", "down", "held", "unknown"); absent counts as unknown. */
  probes: ReadonlyMap<string, string>;
  /** Self-checks that are failing now. */
  selfDown: readonly string[];
  /** BGP peers whose session BFD has closed. */
  downPeers: ReadonlySet<string>;
  /** The gateway is draining: destinations are withdrawn, egress IPs stay. */
  draining: boolean;
  /** Connection sync is running and has resynced (absent: no backup paths). */
  syncReady?: boolean;
}

export const NO_HEALTH_INPUTS: HealthInputs = {
  probes: new Map(),
  selfDown: [],
  downPeers: new Set(),
  draining: false,
};

/** What depends on the config alone. */
export interface StaticPlan {
  config: GatewayConfig;
  kernel: KernelState;
  scope: AdvertiseScope;
}

/** A policy without its sources (which can be 100k addresses): their count and family instead. */
export type PolicyView = Omit<PolicyConfig, "sources"> & { family: Family; sourceCount: number };

/** The config as everything but the kernel planner reads it. */
export type ConfigView = Omit<GatewayConfig, "policies"> & { policies: PolicyView[] };

/**
 * What health and BGP planning, status and metrics need of a static plan: a
 * few kilobytes whatever the number of sources, so that it can cross from the
 * thread that planned to the main thread cheaply.
 */
export interface PlanView {
  config: ConfigView;
  kernel: KernelView & { nat: KernelView["nat"] & { policies: KernelState["nat"]["policies"] } };
  scope: AdvertiseScope;
}

export interface Inputs {
  view: PlanView;
  health: HealthInputs;
}

export interface Desired {
  /** Undefined without a bgp section. */
  bgp: BgpDesired | undefined;
  /** Undefined unless connectionSync.localRepair (core/plan/repair.ts). */
  repair?: RepairPlan | undefined;
  /** Which policies are withdrawn and why (also what /status shows). */
  health: HealthView;
}

/** `nat`: the config's NAT classifier when the caller has it already (see plan() and advertiseScope()). */
export function planStatic(config: GatewayConfig, nat?: NatIndex): StaticPlan {
  return { config, kernel: plan(config, nat?.result), scope: advertiseScope(config, nat) };
}

/**
 * The view of a static plan. The scope's never-advertised space is cut down to
 * the configured destinations: nothing outside them is ever advertised, so
 * the rest (most of 100k pod addresses) cannot change a decision.
 */
export function viewOf(p: StaticPlan): PlanView {
  const config: ConfigView = {
    ...p.config,
    policies: p.config.policies.map(({ sources, ...pol }) => ({
      ...pol,
      family: policyFamily({ ...pol, sources }),
      sourceCount: sources.length,
    })),
  };
  return {
    config,
    kernel: {
      addresses: p.kernel.addresses,
      nat: { classes: p.kernel.nat.classes, policies: p.kernel.nat.policies },
      backups: backupPrefixes(p.kernel.guard?.sync),
      lastResort: lastResortPrefixes(p.kernel.guard?.sync),
    },
    scope: { ...p.scope, excluded: intersectRanges(p.scope.excluded, p.scope.outer) },
  };
}

/** A static plan's two halves as kept after it was made. */
export interface MadePlan {
  kernel: KernelState;
  view: PlanView;
}

/**
 * The plan after sources alone changed (the config the same but for source
 * addresses of some policies), from the plan before and the classifier
 * patched with those addresses (classifierPatched), without planning again.
 * Addresses, rules, routes and the guard depend on no source; what BGP reads
 * depends on sources only where one meets a configured destination (it is
 * never advertised), so this holds when no changed address does, and the
 * classes are the ones the plan was made with. The NAT sources and the
 * policies' source counts (`counts`, by policy index) are the new ones.
 * Undefined: plan in full.
 */
export function sourcesPatched(
  base: MadePlan,
  nat: NatResult,
  changed: readonly Span[],
  counts: ReadonlyMap<number, number>,
): MadePlan | undefined {
  if (nat.classes !== base.kernel.nat.classes || nat.conflicts.length > 0) return undefined;
  const outer = base.view.scope.outer;
  if (changed.some((s) => meets(outer, s))) return undefined;
  const { markMask, policies: natPolicies, classes } = base.kernel.nat;
  // Not read here: a patched classifier makes its list only when something reads every source.
  const natPlan = lazySources({ markMask, policies: natPolicies, classes }, () => nat.sources);
  return {
    kernel: { ...base.kernel, nat: natPlan },
    view: withSourceCounts(base.view, counts),
  };
}

/** Whether `s` meets one of `sorted` (disjoint, by family then start, as an advertise scope's outer). */
function meets(sorted: readonly Range[], s: Span): boolean {
  const lo = BigInt(s.lo);
  const hi = BigInt(s.hi);
  // The last range of the family that starts at or before s ends is the only one that can reach s.
  const i = partitionPoint(sorted.length, (k) => {
    const r = sorted[k]!;
    return r.family < s.family || (r.family === s.family && r.lo <= hi);
  });
  const r = sorted[i - 1];
  return r !== undefined && r.family === s.family && r.hi >= lo;
}

/** The desired BGP state and health view for `inputs`. */
export function planDesired({ view, health: h }: Inputs): Desired {
  const { config } = view;
  const health = healthFrom(config, h.probes, {
    selfDown: h.selfDown,
    downPeers: h.downPeers,
    draining: h.draining,
    backupReady: h.syncReady ?? false,
  });
  const bgp = config.bgp
    ? planBgp(config as ConfigView & { bgp: BgpConfig }, view.kernel, health, view.scope)
    : undefined;
  const repair =
    config.bgp && config.connectionSync?.localRepair
      ? repairPlan(config.connectionSync, config.uplinks, view.scope, view.kernel, health)
      : undefined;
  return repair ? { bgp, health, repair } : { bgp, health };
}
