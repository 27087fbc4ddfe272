// The BGP half of plan(): which paths this gateway advertises, to whom, and
// with which attributes. Pure.
//
// Advertised destinations are derived from the NAT plan itself: the union, over
// all source classes, of the destination intervals that some source sends
// through a gateway policy, cut into CIDRs. So an exception or a no-gateway
// hole is never advertised, and nothing the data plane would not handle is.
// Health enters as the set of policies whose dependencies are down: their
// intervals are left out, and the whole gateway being down advertises nothing.
import type { BgpGlobal, BgpPath, BgpPeer } from "../../bgp/model.js";
import type { Config } from "../config/schema.js";
import type { BgpConfig } from "../config/bgp-schema.js";
import { BITS, formatAddress, parseAddress, parsePrefix } from "../config/ip.js";
import type { Family, KernelState } from "../state.js";

export interface BgpHealth {
  /** Policies whose probes (or uplink's probes) are down: their destinations are withdrawn. */
  downPolicies: ReadonlySet<string>;
  /** The gateway itself is unhealthy: advertise nothing. */
  gatewayDown: boolean;
  /** Draining: destinations are withdrawn, egress IPs stay until the drain ends (replies still come back). */
  draining?: boolean;
  /** Peers whose BFD session is down: the BGP session is closed until BFD is up again. */
  downPeers?: ReadonlySet<string>;
}

export const HEALTHY: BgpHealth = { downPolicies: new Set(), gatewayDown: false };

export interface BgpDesired {
  global: BgpGlobal;
  peers: (BgpPeer & { name: string })[];
  paths: BgpPath[];
}

type Range = { family: Family; lo: bigint; hi: bigint };

/** Parses an nft interval ("a", "a/len", "a-b") back into a range. */
export function parseInterval(text: string): Range {
  const dash = text.indexOf("-");
  if (dash > 0) {
    const lo = parseAddress(text.slice(0, dash));
    const hi = parseAddress(text.slice(dash + 1));
    if (!lo || !hi || lo.family !== hi.family) throw new Error(`bad interval ${text}`);
    return { family: lo.family, lo: lo.value, hi: hi.value };
  }
  const p = parsePrefix(text);
  if (!p.ok) throw new Error(p.message);
  return { family: p.prefix.family, lo: p.prefix.lo, hi: p.prefix.hi };
}

/** Merges overlapping or adjacent ranges of one family; input order does not matter. */
export function mergeRanges(ranges: Range[]): Range[] {
  const sorted = [...ranges].sort((a, b) => a.family - b.family || (a.lo < b.lo ? -1 : a.lo > b.lo ? 1 : 0));
  const out: Range[] = [];
  for (const r of sorted) {
    const last = out[out.length - 1];
    if (last && last.family === r.family && r.lo <= last.hi + 1n) {
      if (r.hi > last.hi) last.hi = r.hi;
    } else out.push({ ...r });
  }
  return out;
}

/** The smallest list of CIDRs that covers exactly [lo, hi]. */
export function rangeToCidrs({ family, lo, hi }: Range): string[] {
  const bits = BITS[family];
  const out: string[] = [];
  let cur = lo;
  while (cur <= hi) {
    // Largest aligned block starting at cur that does not pass hi.
    let size = cur === 0n ? 1n << BigInt(bits) : cur & -cur;
    while (cur + size - 1n > hi) size >>= 1n;
    const len = bits - (size.toString(2).length - 1);
    out.push(`${formatAddress(family, cur)}/${len}`);
    cur += size;
  }
  return out;
}

/** Destination CIDRs served by a gateway policy for at least one source, less the unhealthy policies. */
export function servedPrefixes(kernel: KernelState, downPolicies: ReadonlySet<string>): string[] {
  const ranges: Range[] = [];
  for (const cls of kernel.nat.classes) {
    for (const d of cls.destinations) {
      if (d.policy !== null && !downPolicies.has(d.policy)) ranges.push(parseInterval(d.interval));
    }
  }
  return mergeRanges(ranges).flatMap(rangeToCidrs);
}

const isDefault = (cidr: string) => cidr === "0.0.0.0/0" || cidr === "::/0";

export function planBgp(
  config: Config & { bgp: BgpConfig },
  kernel: KernelState,
  health: BgpHealth = HEALTHY,
): BgpDesired {
  const bgp = config.bgp;
  const adv = bgp.advertise ?? {};
  const global: BgpGlobal = { asn: bgp.asn, routerId: bgp.routerId, listenPort: bgp.listenPort ?? -1 };
  const peers = bgp.peers
    .filter((p) => !health.downPeers?.has(p.address))
    .map((p) => {
      const family = parseAddress(p.address)?.family === 6 ? "ipv6-unicast" : "ipv4-unicast";
      const peer: BgpPeer & { name: string } = {
        name: p.name,
        description: p.name,
        address: p.address,
        peerAsn: p.asn,
        holdTime: p.holdTime ?? 9,
        keepaliveInterval: p.keepalive ?? Math.max(1, Math.floor((p.holdTime ?? 9) / 3)),
        connectRetry: p.connectRetry ?? 5,
        gracefulRestart: p.gracefulRestart ?? false,
        families: p.families ?? [family],
      };
      if (p.password !== undefined) peer.password = p.password;
      if (p.localAddress !== undefined) peer.localAddress = p.localAddress;
      if (p.ebgpMultihopTtl !== undefined) peer.ebgpMultihopTtl = p.ebgpMultihopTtl;
      return peer;
    });
  if (health.gatewayDown) return { global, peers, paths: [] };

  const paths: BgpPath[] = [];
  // Next hop "self": gobgpd puts its own session address on paths to eBGP peers.
  const self = (cidr: string) => (cidr.includes(":") ? "::" : "0.0.0.0");
  if (adv.egressIPs ?? true) {
    for (const a of kernel.addresses) {
      const cidr = `${a.address}/${a.prefixLength}`;
      paths.push({ prefix: cidr, nextHop: self(cidr) });
    }
  }
  if ((adv.destinations ?? true) && !health.draining) {
    for (const cidr of servedPrefixes(kernel, health.downPolicies)) {
      if (isDefault(cidr) && !adv.allowDefaultRoute) continue;
      const path: BgpPath = { prefix: cidr, nextHop: self(cidr) };
      if (adv.med !== undefined) path.med = adv.med;
      if (adv.asPathPrepend) path.asPathPrepend = adv.asPathPrepend;
      if (adv.communities?.length) path.communities = [...adv.communities];
      paths.push(path);
    }
  }
  return { global, peers, paths: exportFilter(config, paths) };
}

/**
 * The last line of defence: whatever plan() computed, never advertise a
 * prefix that is not an owned egress IP or inside a served destination, never
 * a pod (source) prefix, and no default route unless allowed.
 */
export function exportFilter(config: Config & { bgp: BgpConfig }, paths: BgpPath[]): BgpPath[] {
  const allowDefault = config.bgp.advertise?.allowDefaultRoute ?? false;
  const owned = new Set(
    config.egressIPs.map((e) => {
      const a = parseAddress(e.address);
      return a ? `${formatAddress(a.family, a.value)}/${BITS[a.family]}` : "";
    }),
  );
  const served = config.policies
    .filter((p) => p.gateway !== false)
    .flatMap((p) => p.destinations.map(toRange));
  const sources = config.policies.flatMap((p) => p.sources.map(toRange));
  return paths.filter((path) => {
    const r = toRange(path.prefix);
    if (!r) return false;
    if (isDefault(path.prefix) && !allowDefault) return false;
    if (
      sources.some((s) => s && s.family === r.family && s.lo <= r.hi && r.lo <= s.hi) &&
      !owned.has(path.prefix)
    ) {
      return false; // overlaps a pod network
    }
    return (
      owned.has(path.prefix) || served.some((s) => s && s.family === r.family && s.lo <= r.lo && r.hi <= s.hi)
    );
  });
}

function toRange(cidr: string): Range | undefined {
  const p = parsePrefix(cidr);
  return p.ok ? { family: p.prefix.family, lo: p.prefix.lo, hi: p.prefix.hi } : undefined;
}
