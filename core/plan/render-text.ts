// Renders a KernelState for people, in iproute2's own syntax where there is
// one, so that `egressd plan` output compares directly with `ip` output.
import type { BgpPath } from "../bgp.js";
import type { GuardPlan, KernelState, NatPlan } from "../state.js";
import type { BgpDesired } from "./bgp.js";

const hex = (n: number) => `0x${(n >>> 0).toString(16)}`;

export function renderAddresses(state: KernelState): string[] {
  return state.addresses.map((a) => `${a.address}/${a.prefixLength} dev ${a.interface}`);
}

export function renderRoutes(state: KernelState): string[] {
  return state.routes.map((r) => {
    const dest = r.destination === "0.0.0.0/0" || r.destination === "::/0" ? "default" : r.destination;
    const via = r.gateway === undefined ? "" : ` via ${r.gateway}`;
    return `${r.family === 6 ? "-6 " : ""}${dest}${via} dev ${r.interface} table ${r.table}`;
  });
}

export function renderRules(state: KernelState): string[] {
  const byMark = new Map(state.nat.policies.map((p) => [`${p.family}/${p.mark}`, p.name]));
  return state.rules.map((r) => {
    const policy = byMark.get(`${r.family}/${r.fwmark}`);
    const comment = policy === undefined ? "" : `   # policy ${policy}`;
    return `${r.family === 6 ? "-6 " : ""}${r.priority}: from all fwmark ${hex(r.fwmark)}/${hex(r.fwmask)} lookup ${r.table}${comment}`;
  });
}

/** The paths a peer is sent: those of the address families its session carries. */
export function pathsForPeer(bgp: BgpDesired, peer: BgpDesired["peers"][number]): BgpPath[] {
  const families = new Set(peer.families ?? ["ipv4-unicast", "ipv6-unicast"]);
  return bgp.paths.filter((p) => families.has(p.prefix.includes(":") ? "ipv6-unicast" : "ipv4-unicast"));
}

/** One line a path: prefix, next hop and the attributes a peer sees. */
export function renderPath(p: BgpPath, self: string): string {
  const hop = p.nextHop === "0.0.0.0" || p.nextHop === "::" ? `self (${self})` : p.nextHop;
  const attrs = [`next-hop ${hop}`];
  if (p.med !== undefined) attrs.push(`med ${p.med}`);
  if (p.asPathPrepend) attrs.push(`as-path-prepend ${p.asPathPrepend}`);
  if (p.communities?.length) attrs.push(`communities ${p.communities.join(" ")}`);
  return `${p.prefix}  ${attrs.join("  ")}`;
}

/** What each peer is sent while every probe is up, as lines. */
export function renderBgp(bgp: BgpDesired): string[] {
  const out: string[] = [];
  for (const peer of bgp.peers) {
    const paths = pathsForPeer(bgp, peer);
    out.push(`peer ${peer.name} ${peer.address} AS ${peer.peerAsn} (${paths.length} paths)`);
    for (const p of paths) out.push(`  ${renderPath(p, peer.localAddress ?? "the session's local address")}`);
  }
  return out;
}

/** The whole desired state as text: kernel objects, the nftables ruleset, and the BGP paths per peer. */
export function renderDesired(
  state: KernelState,
  nft: (plan: NatPlan) => string,
  bgp?: BgpDesired,
  guard?: (g: GuardPlan) => string,
): string {
  const section = (title: string, lines: string[]) =>
    [`# ${title}`, ...(lines.length === 0 ? ["# (none)"] : lines), ""].join("\n");
  const out = [
    section("addresses (ip address add ...)", renderAddresses(state)),
    section("routes (ip route add ... proto 201)", renderRoutes(state)),
    section("rules (ip rule add ... proto 201)", renderRules(state)),
    `# nftables (nft -f)\n${nft(state.nat).trimEnd()}\n`,
  ];
  if (state.guard && guard) out.push(`# nftables guard table (nft -f)\n${guard(state.guard).trimEnd()}\n`);
  if (bgp !== undefined) {
    out.push(
      section(
        `BGP (AS ${bgp.global.asn}, router id ${bgp.global.routerId}): paths per peer while all probes are up`,
        renderBgp(bgp),
      ),
    );
  }
  return out.join("\n");
}
