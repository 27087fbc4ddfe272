// Local repair: what a gateway forwards to a sync peer while the routers
// still send it traffic for destinations it has withdrawn.
//
// A failed probe withdraws its policy's destinations at once, but the ToR
// keeps sending their traffic here until it has processed the withdrawal
// (71 ms on FRR 8.4, docs/scale.md). With `connectionSync.localRepair`, the
// gateway hands that traffic, untouched, to its first sync peer over the
// sync link meanwhile, as the ToR will a moment later. Pure: the set is
// derived from the same view and health BGP is planned from.
import type { ConnectionSyncConfig } from "../config/sync-schema.js";
import { parseRange, type Range } from "../ip.js";
import type { BgpHealth, AdvertiseScope, KernelView } from "./bgp.js";
import { intersectRanges, mergeRanges, rangeToCidrs, servedRanges, subtractRanges } from "./bgp.js";

/** Where repaired traffic goes: the first peer's address on the sync link, through that link. */
export interface RepairVia {
  address: string;
  interface: string;
}

export interface RepairPlan {
  via: RepairVia;
  /** The uplinks' interfaces, where the routers' traffic comes in. */
  uplinks: string[];
  /** IPv4 destinations withdrawn for health, as CIDRs (none: nothing is forwarded). */
  prefixes4: string[];
}

const NONE: ReadonlySet<string> = new Set();

/** The advertisable part of what the NAT plan serves through the policies that are not `down`. */
function advertisable(scope: AdvertiseScope, kernel: KernelView, down: ReadonlySet<string>): Range[] {
  return subtractRanges(intersectRanges(servedRanges(kernel, down), scope.outer), scope.excluded);
}

/**
 * The destinations to forward to the peer: those a healthy gateway would
 * advertise and this one withdraws because a policy's probes failed. None
 * while the gateway is down as a whole (its own checks failed: no cleverness
 * then) or draining (it forwards on its own until the drain ends). A /0
 * destination is never repaired: it would take the replies to the egress IPs
 * too. The egress IPs and the backups are taken out all the same. IPv4 only:
 * the sync link is IPv4. A policy with `advertise: false` is listed as
 * withdrawn for good, not for a failure, and is never forwarded: the scope
 * cuts its destinations out of what is advertisable at all.
 */
export function repairPlan(
  sync: ConnectionSyncConfig | undefined,
  uplinks: readonly { interface: string }[],
  scope: AdvertiseScope,
  kernel: KernelView,
  health: BgpHealth,
): RepairPlan | undefined {
  const peer = sync?.peers?.[0];
  if (!sync?.localRepair || sync.interface === undefined || peer === undefined) return undefined;
  const plan: RepairPlan = {
    via: { address: peer.address, interface: sync.interface },
    uplinks: [...new Set(uplinks.map((u) => u.interface))].sort(),
    prefixes4: [],
  };
  if (health.gatewayDown || health.draining || health.downPolicies.size === 0) return plan;
  const withdrawn = subtractRanges(
    advertisable(scope, kernel, NONE),
    advertisable(scope, kernel, health.downPolicies),
  );
  const keep = mergeRanges([...scope.owned, ...scope.backup].map(parseRange));
  plan.prefixes4 = subtractRanges(withdrawn, keep)
    .filter((r) => r.family === 4)
    .flatMap(rangeToCidrs);
  return plan;
}
