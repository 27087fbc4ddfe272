// egressd's second nftables table, `inet egressd_guard`: what protects the
// gateway's own control protocols, apart from the SNAT table so that neither
// one's changes touch the other.
//
//   - BFD (single hop, UDP 3784) is accepted only with TTL / hop limit 255
//     (GTSM, RFC 5881 section 5): a packet from further away than the link is
//     forged. Node cannot read a datagram's TTL, so the kernel checks it here.
//   - The BGP port accepts connections only from configured peers: gobgpd
//     listens on every address, and one malformed message from anyone who can
//     reach it crashes it (docs/bgp.md).
//   - Connection sync (docs/connection-sync.md): conntrackd's state messages
//     are accepted only from the group's members, on the sync link (and each
//     pair's across sites only from its peer, on the site interface); they
//     write NAT state into the kernel, so anyone else who could send them
//     could redirect connections. Packets to another member's egress IP that
//     synced state did not de-NAT are dropped: routed on, they would go back
//     to the fabric that delivered them here over the backup path.
//
// The table is tiny and replaced whole, in one transaction, when it changes.
import type { GuardPlan } from "../core/state.js";
import { NFT, nftApply } from "./nft.js";
import { run } from "../lib/exec.js";

export const GUARD_TABLE = "inet egressd_guard";

/** The whole table as an nft script that replaces any previous one atomically. */
export function renderGuard(g: GuardPlan): string {
  const L = [`table ${GUARD_TABLE} {}`, `delete table ${GUARD_TABLE}`, `table ${GUARD_TABLE} {`];
  if (g.bgp) {
    for (const [name, type, list] of [
      ["bgp_peers4", "ipv4_addr", g.bgp.peers4],
      ["bgp_peers6", "ipv6_addr", g.bgp.peers6],
    ] as const) {
      L.push(`  set ${name} {`, `    type ${type}`);
      if (list.length) L.push(`    elements = { ${list.join(", ")} }`);
      L.push("  }");
    }
  }
  const sync = g.sync;
  if (sync) {
    for (const [name, type, list] of [
      ["sync_peers", "ipv4_addr", sync.peers],
      ["backup4", "ipv4_addr", sync.backup4],
      ["backup6", "ipv6_addr", sync.backup6],
    ] as const) {
      L.push(`  set ${name} {`, `    type ${type}`);
      if (list.length) L.push(`    elements = { ${list.join(", ")} }`);
      L.push("  }");
    }
  }
  L.push("  chain input {", "    type filter hook input priority filter - 10; policy accept;");
  if (sync?.interface !== undefined && sync.port !== undefined)
    L.push(
      ...stateRules(sync.port, sync.interface, "@sync_peers", {
        off: "from off the sync link",
        v6: "the sync link is IPv4",
        stranger: "from a non-member",
      }),
    );
  const sites = sync?.sites;
  if (sites)
    for (const c of sites.channels)
      L.push(
        ...stateRules(c.port, sites.interface, c.peer, {
          off: "from another site, off its interface",
          v6: "the pairs across sites are IPv4",
          stranger: "from another site, not from this pair's peer",
        }),
      );
  if (g.bfdTtl) {
    L.push(
      `    udp dport 3784 ip ttl != 255 counter drop comment "BFD from beyond the link (GTSM)"`,
      `    udp dport 3784 ip6 hoplimit != 255 counter drop comment "BFD from beyond the link (GTSM)"`,
    );
  }
  if (g.bgp) {
    const p = g.bgp.port;
    L.push(
      `    meta nfproto ipv4 tcp dport ${p} ip saddr != @bgp_peers4 counter drop comment "BGP from a non-peer"`,
      `    meta nfproto ipv6 tcp dport ${p} ip6 saddr != @bgp_peers6 counter drop comment "BGP from a non-peer"`,
    );
  }
  L.push("  }");
  if (sync) {
    L.push(
      "  chain forward {",
      "    type filter hook forward priority filter - 10; policy accept;",
      ...syncEventRules(sync.sources4, sync.sources6),
      `    ip daddr @backup4 counter drop comment "another member's egress IP, no synced state"`,
      `    ip6 daddr @backup6 counter drop comment "another member's egress IP, no synced state"`,
      "  }",
    );
  }
  L.push("}");
  return `${L.join("\n")}\n`;
}

/**
 * conntrackd's state messages on `port`: dropped unless they come in on
 * `iface`, over IPv4, from `from` (a set or an address); `why` words each
 * rule's comment.
 */
function stateRules(
  port: number,
  iface: string,
  from: string,
  why: { off: string; v6: string; stranger: string },
): string[] {
  return [
    `    udp dport ${port} iifname != ${JSON.stringify(iface)} counter drop comment "connection state ${why.off}"`,
    `    meta nfproto ipv6 udp dport ${port} counter drop comment "connection state over IPv6 (${why.v6})"`,
    `    meta nfproto ipv4 udp dport ${port} ip saddr != ${from} counter drop comment "connection state ${why.stranger}"`,
  ];
}

/**
 * A synced connection reports to conntrackd only when it is new, when it is
 * established and when it is gone: three events instead of one per TCP state
 * change (about eight for a short connection), which more than halves
 * conntrackd's CPU (docs/connection-sync.md). "new" is kept so that a
 * handshake split between two gateways by a change of the ECMP group finds
 * its mapping on both. Set on the first packet, before the entry is
 * confirmed (the kernel takes the mask only then).
 */
export function syncEventRules(sources4: readonly string[], sources6: readonly string[]): string[] {
  const rule = (match: string, list: readonly string[]) =>
    list.length
      ? [`    ${match} { ${list.join(", ")} } meta l4proto tcp ct state new ct event set new,assured,destroy`]
      : [];
  return [...rule("ip saddr", sources4), ...rule("ip6 saddr", sources6)];
}

export type GuardChange = "none" | "replaced" | "removed";

/** Keeps the guard table equal to the plan; remembers what it applied so an unchanged plan costs nothing. */
export class GuardReconciler {
  private applied: string | undefined;

  async reconcile(g: GuardPlan | undefined, opts: { readLive?: boolean } = {}): Promise<GuardChange> {
    if (!g) return (await this.teardown()) ? "removed" : "none";
    const script = renderGuard(g);
    if (script === this.applied && !(opts.readLive && !(await this.present()))) return "none";
    await nftApply(script);
    this.applied = script;
    return "replaced";
  }

  /** Removes the table; true when it was there. */
  async teardown(): Promise<boolean> {
    this.applied = undefined;
    if (!(await this.present())) return false;
    await nftApply(`table ${GUARD_TABLE} {}\ndelete table ${GUARD_TABLE}\n`);
    return true;
  }

  private async present(): Promise<boolean> {
    const r = await run([NFT, "list", "table", ...GUARD_TABLE.split(" ")], { timeoutMs: 10_000 }).then(
      () => true,
      () => false,
    );
    return r;
  }
}
