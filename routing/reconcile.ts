// The kernel side of the data plane in one call: egress IPs, the nftables
// table, routes and rules. Each part reads the kernel, diffs against the
// desired state and applies the smallest change; running it twice in a row
// changes nothing the second time.
import { readFile } from "node:fs/promises";
import type { KernelState, NatSourcesDelta } from "../core/state.js";
import { reconcileAddresses, removeOwnedAddresses, type AddressChanges } from "./netlink-addresses.js";
import { forgetConnections } from "./conntrack.js";
import {
  reconcileRouting,
  removeOwnedRouting,
  type RouteChanges,
  type RuleChanges,
} from "./netlink-routes.js";
import { NftReconciler, type NatChange } from "./nft.js";
import { GuardReconciler, type GuardChange } from "./nft-guard.js";

export interface KernelChanges {
  addresses: AddressChanges;
  nat: NatChange;
  routes: RouteChanges;
  rules: RuleChanges;
  guard: GuardChange;
}

export interface ReconcileOptions {
  /** Keeps what the nft reconciler applied last, so one-pod changes need no read of the table. */
  nft?: NftReconciler;
  /** Keeps the guard table's last script (a new one is made per call without it). */
  guard?: GuardReconciler;
  /** Read the live nft table even when the in-memory copy is trusted (periodic resync). */
  fullResync?: boolean;
  /** How desired.nat's sources differ from a plan applied before (see NftReconcileOptions). */
  sourcesDelta?: NatSourcesDelta;
  /**
   * Only desired.nat's sources differ from the state the last call brought
   * the kernel to: the nft table alone is reconciled (addresses, routes,
   * rules and the guard are neither read nor changed; the next full call
   * repairs any drift in them).
   */
  sourcesOnly?: boolean;
}

/** True when a reconcile changed something. */
export function changed(c: KernelChanges): boolean {
  return (
    c.addresses.added.length +
      c.addresses.removed.length +
      c.routes.added.length +
      c.routes.removed.length +
      c.rules.added.length +
      c.rules.removed.length >
      0 ||
    c.nat.action !== "none" ||
    c.guard !== "none"
  );
}

/**
 * Brings the kernel to `desired`. Order: egress IPs first (so SNAT never
 * selects an address the host does not have), then the nft table, then routes
 * and rules (so traffic is marked before it is steered).
 */
export async function reconcileKernel(
  desired: KernelState,
  opts: ReconcileOptions = {},
): Promise<KernelChanges> {
  const nft = opts.nft ?? new NftReconciler();
  try {
    if (opts.sourcesOnly && !opts.fullResync) {
      const nat = await nft.reconcile(
        desired.nat,
        opts.sourcesDelta ? { sourcesDelta: opts.sourcesDelta } : {},
      );
      return {
        addresses: { added: [], removed: [], foreign: [], missingInterface: [] },
        nat,
        routes: { added: [], removed: [], blocked: [] },
        rules: { added: [], removed: [] },
        guard: "none",
      };
    }
    const addresses = await reconcileAddresses(desired.addresses);
    const nat = await nft.reconcile(desired.nat, {
      readLive: opts.fullResync ?? false,
      ...(opts.sourcesDelta ? { sourcesDelta: opts.sourcesDelta } : {}),
    });
    // No rule NATs to a removed address any more: its flows go too (routing/conntrack.ts).
    if (addresses.removed.length) await forgetConnections(addresses.removed.map((l) => l.split("/")[0]!));
    const { routes, rules } = await reconcileRouting(desired.routes, desired.rules);
    const guard = await (opts.guard ?? new GuardReconciler()).reconcile(desired.guard, {
      readLive: opts.fullResync ?? false,
    });
    return { addresses, nat, routes, rules, guard };
  } finally {
    if (!opts.nft) nft.close();
  }
}

export interface TeardownSummary {
  nftTable: boolean;
  guardTable: boolean;
  addresses: string[];
  routes: string[];
  rules: string[];
}

/**
 * Removes everything egressd owns: rules and routes first (traffic falls back
 * to the main table), then the nft table, then the egress IPs.
 */
export async function teardownKernel(
  opts: { nft?: NftReconciler; guard?: GuardReconciler } = {},
): Promise<TeardownSummary> {
  const routing = await removeOwnedRouting();
  const nft = opts.nft ?? new NftReconciler();
  let nftTable: boolean;
  try {
    nftTable = await nft.teardown();
  } finally {
    nft.close();
  }
  const addresses = await removeOwnedAddresses();
  await forgetConnections(addresses.map((l) => l.split("/")[0]!)).catch(() => undefined);
  // Last: the guard protects BFD and BGP until nothing else is left.
  const guardTable = await (opts.guard ?? new GuardReconciler()).teardown();
  return { nftTable, guardTable, addresses, routes: routing.routes.removed, rules: routing.rules.removed };
}

export interface ForwardingStatus {
  ipv4: boolean;
  ipv6: boolean;
}

async function sysctlOn(path: string): Promise<boolean> {
  try {
    return (await readFile(path, "utf8")).trim() === "1";
  } catch {
    return false;
  }
}

/** Whether the kernel forwards IPv4 and IPv6 in this network namespace (egressd never turns it on itself). */
export async function forwardingStatus(): Promise<ForwardingStatus> {
  return {
    ipv4: await sysctlOn("/proc/sys/net/ipv4/ip_forward"),
    ipv6: await sysctlOn("/proc/sys/net/ipv6/conf/all/forwarding"),
  };
}
