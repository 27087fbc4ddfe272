// egressd's third nftables table, `netdev egressd_repair`: local repair
// (core/plan/repair.ts). While a failed probe has destinations withdrawn, the
// routers still send their traffic here until they have processed the
// withdrawal. An ingress hook on each uplink hands those packets, before
// this host's IP stack sees them (no conntrack, no NAT, no routing, TTL as
// it came), to the first sync peer over the sync link, where they are
// forwarded and NATed as that gateway's own. Packets that come in on the
// sync link are never looked at, so two gateways that both repair cannot
// hand a packet back and forth (validation keeps the sync link off the
// uplinks).
//
// The table exists only while something is repaired: a gateway with nothing
// withdrawn has no hook on its uplinks. It is small and replaced whole, in
// one transaction.
import type { RepairPlan } from "../core/plan/repair.js";
import { NFT, nftApply } from "./nft.js";
import { run } from "../lib/exec.js";

export const REPAIR_TABLE = "netdev egressd_repair";

/** Before every other ingress hook egressd or anyone else is likely to add. */
const PRIORITY = -500;

/** The table as an nft script that replaces any previous one atomically; a plan with nothing to repair removes it. */
export function renderRepair(p: RepairPlan): string {
  const L = [`table ${REPAIR_TABLE} {}`, `delete table ${REPAIR_TABLE}`];
  if (p.prefixes4.length === 0 || p.uplinks.length === 0) return L.join("\n") + "\n";
  L.push(
    `table ${REPAIR_TABLE} {`,
    "  set repair4 {",
    "    type ipv4_addr",
    "    flags interval",
    `    elements = { ${p.prefixes4.join(", ")} }`,
    "  }",
  );
  p.uplinks.forEach((ifname, i) => {
    L.push(
      `  chain uplink${i} {`,
      `    type filter hook ingress device ${JSON.stringify(ifname)} priority ${PRIORITY};`,
      `    ip daddr @repair4 counter fwd ip to ${p.via.address} device ${JSON.stringify(p.via.interface)}`,
      "  }",
    );
  });
  L.push("}");
  return L.join("\n") + "\n";
}

export type RepairChange = "none" | "applied" | "removed";

/**
 * Applies the latest repair plan. Calls made while one is being applied are
 * merged: the next application takes the newest plan, so a burst of health
 * changes costs at most two `nft` runs.
 */
export class RepairReconciler {
  /** The script in the kernel; "absent" once the table is known not to be there, undefined until then. */
  private applied: string | undefined;
  private running: Promise<RepairChange> | undefined;
  private next: { plan: RepairPlan | undefined } | undefined;

  /** What is forwarded now (the last plan applied), for status and tests. */
  prefixes: readonly string[] = [];

  reconcile(plan: RepairPlan | undefined): Promise<RepairChange> {
    if (this.running) {
      this.next = { plan };
      // The newest plan is applied after this one, whether this one failed or not.
      return this.running.then(
        () => this.drainNext(),
        () => this.drainNext(),
      );
    }
    this.running = this.apply(plan).finally(() => (this.running = undefined));
    return this.running;
  }

  private drainNext(): Promise<RepairChange> {
    const n = this.next;
    this.next = undefined;
    return n ? this.reconcile(n.plan) : Promise.resolve("none");
  }

  private async apply(plan: RepairPlan | undefined): Promise<RepairChange> {
    if (!plan || plan.prefixes4.length === 0 || plan.uplinks.length === 0)
      return (await this.remove()) ? "removed" : "none";
    const script = renderRepair(plan);
    if (script === this.applied) return "none";
    this.applied = undefined; // unknown until nft says
    await nftApply(script);
    this.applied = script;
    this.prefixes = plan.prefixes4;
    return "applied";
  }

  /** Removes the table, after any application under way, and drops the plans waiting; true when it was there. */
  async teardown(): Promise<boolean> {
    this.next = undefined;
    while (this.running) await this.running.catch(() => undefined);
    return this.remove();
  }

  private async remove(): Promise<boolean> {
    if (this.applied === ABSENT) return false;
    const had = this.applied !== undefined || (await this.present());
    this.prefixes = [];
    if (had) await nftApply(`table ${REPAIR_TABLE} {}\ndelete table ${REPAIR_TABLE}\n`);
    this.applied = ABSENT;
    return had;
  }

  private present(): Promise<boolean> {
    return run([NFT, "list", "table", ...REPAIR_TABLE.split(" ")], { timeoutMs: 10_000 }).then(
      () => true,
      () => false,
    );
  }
}

const ABSENT = "absent";
