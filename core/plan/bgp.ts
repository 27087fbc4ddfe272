// The BGP half of plan(): which paths this gateway advertises, to whom, and
// with which attributes. Pure.
//
// Advertised destinations are derived from the NAT plan itself: the union, over
// all source classes, of the destination intervals that some source sends
// through a gateway policy, cut into CIDRs at the configured destinations'
// boundaries. So an exception or a no-gateway hole is never advertised, and
// nothing the data plane would not handle is. Special-use space (loopback,
// multicast, ...) and pod networks are never advertised; a /0 destination is
// advertised as a default route only when bgp.advertise.allowDefaultRoute.
// Health enters as the set of policies whose dependencies are down: their
// intervals are left out, and the whole gateway being down advertises nothing.
import type { BgpGlobal, BgpPath, BgpPeer } from "../bgp.js";
import { DEFAULTS, keepaliveFor } from "../defaults.js";
import type { Config } from "../config/schema.js";
import type { BgpConfig } from "../config/bgp-schema.js";
import type { GatewayConfig } from "../config/gateway-config.js";
import {
  BITS,
  formatAddress,
  mustParsePrefix,
  mustParseSpan,
  NEVER_ROUTED,
  parseAddress,
  parsePeerAddress,
  parsePrefix,
  parseRange,
  type Prefix,
  type Range,
} from "../ip.js";
import type { Family, KernelState } from "../state.js";
import type { NatIndex } from "./nat.js";
import { actionOf } from "./model.js";
import { partitionPoint } from "../search.js";
import { backupPrefixes, lastResortPrefixes, syncGuard } from "./sync.js";

export interface BgpHealth {
  /** Policies whose probes (or uplink's probes) are down: their destinations are withdrawn. */
  downPolicies: ReadonlySet<string>;
  /** The gateway itself is unhealthy: advertise nothing. */
  gatewayDown: boolean;
  /** Draining: destinations are withdrawn, egress IPs stay until the drain ends (replies still come back). */
  draining?: boolean;
  /** Peers whose BFD session is down: the BGP session is closed until BFD is up again. */
  downPeers?: ReadonlySet<string>;
  /** Egress IPs (canonical text) that are not configured on the host: not advertised. */
  downAddresses?: ReadonlySet<string>;
  /** Connection sync runs and has its peers' state: the other members' egress IPs are advertised as backups. */
  backupReady?: boolean;
}

export const HEALTHY: BgpHealth = { downPolicies: new Set(), gatewayDown: false };

export interface BgpDesired {
  global: BgpGlobal;
  peers: (BgpPeer & { name: string })[];
  paths: BgpPath[];
}

export type { Range } from "../ip.js";

/** Parses an nft interval ("a", "a/len", "a-b") into a range (core/ip.ts). */
export const parseInterval = parseRange;

/** Orders ranges by family, then start. */
const compare = (a: Range, b: Range) => a.family - b.family || (a.lo < b.lo ? -1 : a.lo > b.lo ? 1 : 0);

/** Merges overlapping or adjacent ranges of one family; input order does not matter. */
export function mergeRanges(ranges: Range[]): Range[] {
  const v4 = ranges.filter((r) => r.family === 4);
  // Sources are mostly IPv4 pod addresses, 100k of them at scale: sorting
  // them as bigints took 100 ms and more. See mergeRanges4.
  if (v4.length >= 64 && v4.length < 2 ** INDEX_BITS) {
    return [...mergeRanges4(v4), ...mergeSorted(ranges.filter((r) => r.family !== 4).sort(compare))];
  }
  return mergeSorted([...ranges].sort(compare));
}

function mergeSorted(sorted: Range[]): Range[] {
  const out: Range[] = [];
  for (const r of sorted) {
    const last = out[out.length - 1];
    if (last && last.family === r.family && r.lo <= last.hi + 1n) {
      if (r.hi > last.hi) last.hi = r.hi;
    } else out.push({ ...r });
  }
  return out;
}

const INDEX_BITS = 21;

/**
 * mergeRanges for IPv4 ranges: each sorted by one float64 key, start *
 * 2^21 + index (exact: 2^32 * 2^21 is 2^53), in a typed array's native
 * numeric sort, and merged as numbers.
 */
function mergeRanges4(v4: Range[]): Range[] {
  const keys = new Float64Array(v4.length);
  for (let i = 0; i < v4.length; i++) keys[i] = Number(v4[i]!.lo) * 2 ** INDEX_BITS + i;
  keys.sort();
  const out: Range[] = [];
  let lo = -1;
  let hi = -2;
  for (const k of keys) {
    const r = v4[k % 2 ** INDEX_BITS]!;
    const rlo = Number(r.lo);
    const rhi = Number(r.hi);
    if (rlo <= hi + 1) {
      if (rhi > hi) hi = rhi;
      continue;
    }
    if (lo >= 0) out.push({ family: 4, lo: BigInt(lo), hi: BigInt(hi) });
    lo = rlo;
    hi = rhi;
  }
  if (lo >= 0) out.push({ family: 4, lo: BigInt(lo), hi: BigInt(hi) });
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

/** The served ranges of the NAT plan: what some source sends through a healthy gateway policy, merged. */
/** What BGP planning reads of a kernel plan: the egress addresses and the NAT classes' destinations. */
export interface KernelView {
  addresses: KernelState["addresses"];
  nat: { classes: KernelState["nat"]["classes"] };
  /** The other members' egress IPs (host prefixes) whose guard rules are programmed (connection sync). */
  backups?: readonly string[];
  /** Of the backups, other sites' egress IPs: advertised as last-resort paths. */
  lastResort?: readonly string[];
}

export function servedRanges(kernel: KernelView, downPolicies: ReadonlySet<string>): Range[] {
  const ranges: Range[] = [];
  for (const cls of kernel.nat.classes) {
    for (const d of cls.destinations) {
      if (d.policy !== null && !downPolicies.has(d.policy)) ranges.push(parseInterval(d.interval));
    }
  }
  return mergeRanges(ranges);
}

/**
 * What a config lets out, computed once per config rather than on every
 * health change: the boundaries advertised destinations are cut at, the space
 * that is never advertised, and the owned egress prefixes.
 */
export interface AdvertiseScope {
  /**
   * The outermost destinations (other than /0) of gateway policies, sorted
   * and pairwise disjoint (CIDRs nest or are disjoint). Adjacent ones are kept
   * apart: an advertised prefix never spans two configured destinations.
   */
  outer: Range[];
  /** Per family, the gateway policies with a /0 destination (a default route when allowed). */
  defaults: Map<Family, Set<string>>;
  allowDefault: boolean;
  /**
   * Never advertised: special-use space (loopback, multicast, ...) and the
   * policies' sources (pod networks) that meet a destination in `outer`.
   */
  excluded: Range[];
  /** The egress IPs as host prefixes ("192.0.2.11/32"). */
  owned: Set<string>;
  /** The other sync members' egress IPs as host prefixes: advertised as backup paths only. */
  backup: Set<string>;
}

const rangeOf = (p: Prefix): Range => ({ family: p.family, lo: p.lo, hi: p.hi });

/**
 * `nat`, when given, is the config's NAT classifier, whose sorted source
 * entries stand in for the config's sources (they are not parsed again).
 */
export function advertiseScope(config: Config & { bgp?: BgpConfig }, nat?: NatIndex): AdvertiseScope {
  const dests: Prefix[] = [];
  const defaults = new Map<Family, Set<string>>();
  // A policy this gateway does not advertise cuts its destinations out of what it does: traffic
  // to them must not be drawn here by a wider destination of another policy.
  const withheld: Range[] = [];
  for (const p of config.policies) {
    if (p.advertise === false) for (const d of p.destinations) withheld.push(rangeOf(mustParsePrefix(d)));
    if (actionOf(p) === "Direct") continue;
    for (const d of p.destinations) {
      const prefix = mustParsePrefix(d);
      if (prefix.len === 0)
        defaults.set(prefix.family, (defaults.get(prefix.family) ?? new Set()).add(p.name));
      else dests.push(prefix);
    }
  }
  // By start, then shortest prefix first: a prefix inside the last kept one is not outermost.
  dests.sort((a, b) => compare(a, b) || a.len - b.len);
  const outer: Range[] = [];
  for (const d of dests) {
    const last = outer[outer.length - 1];
    if (last && last.family === d.family && d.hi <= last.hi) continue;
    outer.push(rangeOf(d));
  }
  return {
    outer,
    defaults,
    allowDefault: config.bgp?.advertise?.allowDefaultRoute ?? false,
    excluded: mergeRanges([
      ...withheld,
      ...NEVER_ROUTED.map((n) => rangeOf(n.prefix)),
      ...(nat ? indexedSourcesWithin(nat, outer) : sourcesWithin(config, outer)),
    ]),
    owned: new Set(
      config.egressIPs.map((e) => {
        const a = parseAddress(e.address)!;
        return `${formatAddress(a.family, a.value)}/${BITS[a.family]}`;
      }),
    ),
    backup: new Set(backupPrefixes(syncGuard(config.connectionSync))),
  };
}

/**
 * The sources that meet a configured destination. Only those can cut an
 * advertisement: nothing outside the destinations is advertised. At 100k pod
 * addresses, none of which usually meets one, this keeps the scope small and
 * its making cheap (IPv4 sources are compared as numbers, not bigints).
 */
function sourcesWithin(config: Config, outer: Range[]): Range[] {
  const outer4 = outer.filter((r) => r.family === 4).map((r) => [Number(r.lo), Number(r.hi)] as const);
  const outer6 = outer.filter((r) => r.family === 6);
  const meets4 = (lo: number, hi: number): boolean => {
    // The last destination starting at or before hi is the only one that can reach lo (they are disjoint).
    const a = partitionPoint(outer4.length, (i) => outer4[i]![0] <= hi);
    return a > 0 && outer4[a - 1]![1] >= lo;
  };
  const out: Range[] = [];
  for (const p of config.policies)
    for (const s of p.sources) {
      const span = mustParseSpan(s);
      if (span.family === 4) {
        if (meets4(span.lo, span.hi)) out.push({ family: 4, lo: BigInt(span.lo), hi: BigInt(span.hi) });
      } else if (outer6.some((r) => r.lo <= span.hi && span.lo <= r.hi)) {
        out.push({ family: 6, lo: span.lo, hi: span.hi });
      }
    }
  return out;
}

/** sourcesWithin, from a NAT classifier's sorted source entries: one merge walk, nothing parsed. */
function indexedSourcesWithin(nat: NatIndex, outer: Range[]): Range[] {
  const out: Range[] = [];
  for (const family of [4, 6] as const) {
    const { src } = nat.families[family];
    // IPv4 compared as numbers (the entries are), IPv6 as bigints.
    const num = (x: bigint) => (family === 4 ? Number(x) : x);
    const mine = outer.filter((r) => r.family === family).map((r) => ({ lo: num(r.lo), hi: num(r.hi) }));
    let j = 0;
    // Entries ascend by start, destinations are disjoint and ascending: a destination that ends before
    // one entry starts ends before all the later ones.
    for (let i = 0; i < src.n && j < mine.length; i++) {
      const lo = src.lo[i]!;
      const hi = src.hi[i]!;
      while (j < mine.length && mine[j]!.hi < lo) j++;
      if (j < mine.length && mine[j]!.lo <= hi) out.push({ family, lo: BigInt(lo), hi: BigInt(hi) });
    }
  }
  return out;
}

/** The parts of the merged ranges `a` that lie inside the disjoint, sorted ranges `b`, cut at b's bounds. */
export function intersectRanges(a: Range[], b: Range[]): Range[] {
  const out: Range[] = [];
  let i = 0;
  let j = 0;
  while (i < a.length && j < b.length) {
    const x = a[i]!;
    const y = b[j]!;
    if (x.family !== y.family) {
      if (x.family < y.family) i++;
      else j++;
      continue;
    }
    const lo = x.lo > y.lo ? x.lo : y.lo;
    const hi = x.hi < y.hi ? x.hi : y.hi;
    if (lo <= hi) out.push({ family: x.family, lo, hi });
    if (x.hi < y.hi) i++;
    else j++;
  }
  return out;
}

/** `a` less the merged, sorted ranges `cut`. Pieces of `a` stay apart. */
export function subtractRanges(a: Range[], cut: Range[]): Range[] {
  const out: Range[] = [];
  for (const r of a) {
    let lo = r.lo;
    for (let j = firstReaching(cut, r); j < cut.length; j++) {
      const c = cut[j]!;
      if (c.family !== r.family || c.lo > r.hi) break;
      if (c.lo > lo) out.push({ family: r.family, lo, hi: c.lo - 1n });
      lo = c.hi + 1n;
      if (lo > r.hi) break;
    }
    if (lo <= r.hi) out.push({ family: r.family, lo, hi: r.hi });
  }
  return out;
}

/** Index of the first range of `sorted` (by family, then start; disjoint) that ends at or after r's start. */
function firstReaching(sorted: Range[], r: Range): number {
  return partitionPoint(sorted.length, (i) => {
    const m = sorted[i]!;
    return m.family < r.family || (m.family === r.family && m.hi < r.lo);
  });
}

const DEFAULT_ROUTE: Record<Family, string> = { 4: "0.0.0.0/0", 6: "::/0" };

/**
 * The destination prefixes to advertise: exactly what the NAT plan serves
 * through healthy policies, cut at the configured destinations' boundaries,
 * less special-use space and pod networks. A /0 destination is advertised as
 * the default route, and only when allowed; the space it serves outside every
 * other destination is never spelled out in more specific prefixes.
 */
export function advertisedDestinations(
  scope: AdvertiseScope,
  kernel: KernelView,
  downPolicies: ReadonlySet<string>,
): string[] {
  const out: string[] = [];
  if (scope.allowDefault) {
    for (const family of [4, 6] as const) {
      const policies = scope.defaults.get(family);
      if (policies && servesThrough(kernel, policies, downPolicies)) out.push(DEFAULT_ROUTE[family]);
    }
  }
  const served = servedRanges(kernel, downPolicies);
  for (const r of subtractRanges(intersectRanges(served, scope.outer), scope.excluded))
    out.push(...rangeToCidrs(r));
  return out;
}

/** Whether the NAT plan sends anything through one of `policies` while it is healthy. */
function servesThrough(kernel: KernelView, policies: Set<string>, down: ReadonlySet<string>): boolean {
  return kernel.nat.classes.some((c) =>
    c.destinations.some((d) => d.policy !== null && policies.has(d.policy) && !down.has(d.policy)),
  );
}

export function planBgp(
  config: {
    bgp: BgpConfig;
    claimed?: GatewayConfig["claimed"];
    connectionSync?: GatewayConfig["connectionSync"];
  },
  kernel: KernelView,
  health: BgpHealth,
  scope: AdvertiseScope,
): BgpDesired {
  const bgp = config.bgp;
  const adv = bgp.advertise ?? {};
  const global: BgpGlobal = {
    asn: bgp.asn,
    routerId: bgp.routerId,
    listenPort: bgp.listenPort ?? DEFAULTS.bgp.listenPort,
  };
  const peers = bgp.peers
    .filter((p) => !health.downPeers?.has(p.address))
    .map((p) => {
      const pa = parsePeerAddress(p.address);
      const family = pa.ok && pa.address.family === 6 ? "ipv6-unicast" : "ipv4-unicast";
      const peer: BgpPeer & { name: string } = {
        name: p.name,
        description: p.name,
        address: p.address,
        peerAsn: p.asn,
        holdTime: p.holdTime ?? DEFAULTS.bgp.holdTime,
        keepaliveInterval: p.keepalive ?? keepaliveFor(p.holdTime ?? DEFAULTS.bgp.holdTime),
        connectRetry: p.connectRetry ?? DEFAULTS.bgp.connectRetry,
        gracefulRestart: p.gracefulRestart ?? false,
        families: p.families ?? [family],
      };
      if (p.password !== undefined) peer.password = p.password;
      if (p.localAddress !== undefined) peer.localAddress = p.localAddress;
      if (p.ebgpMultihopTtl !== undefined) peer.ebgpMultihopTtl = p.ebgpMultihopTtl;
      if (p.ttlSecurity) peer.ttlSecurity = true;
      return peer;
    });
  if (health.gatewayDown) return { global, peers, paths: [] };

  const paths: BgpPath[] = [];
  // Next hop "self": gobgpd puts its own session address on paths to eBGP peers.
  const self = (cidr: string) => (cidr.includes(":") ? "::" : "0.0.0.0");
  if (adv.egressIPs ?? true) {
    for (const a of kernel.addresses) {
      if (health.downAddresses?.has(a.address)) continue;
      const cidr = `${a.address}/${a.prefixLength}`;
      // An address claimed from an egress IP group carries its group's attributes for this site.
      const attrs = config.claimed?.attributes?.[a.address];
      const path: BgpPath = { prefix: cidr, nextHop: self(cidr) };
      if (attrs?.med !== undefined) path.med = attrs.med;
      if (attrs?.asPathPrepend) path.asPathPrepend = attrs.asPathPrepend;
      if (attrs?.communities?.length) path.communities = [...attrs.communities];
      paths.push(path);
    }
  }
  // Backup paths for the other members' egress IPs: longer, so the owner's wins while it is there.
  // Only with the state to de-NAT their replies, and never from a gateway that is leaving.
  if (health.backupReady && !health.draining) {
    const prepend = config.connectionSync?.backupAsPathPrepend ?? DEFAULTS.sync.backupAsPathPrepend;
    // Another site's egress IPs lose to every path of that site, its own backups included.
    const lastResort = new Set(kernel.lastResort ?? []);
    const lastPrepend =
      config.connectionSync?.acrossSites?.lastResortAsPathPrepend ?? DEFAULTS.sync.lastResortAsPathPrepend;
    for (const prefix of kernel.backups ?? [])
      paths.push({
        prefix,
        nextHop: self(prefix),
        asPathPrepend: lastResort.has(prefix) ? lastPrepend : prepend,
      });
  }
  if ((adv.destinations ?? true) && !health.draining) {
    for (const cidr of advertisedDestinations(scope, kernel, health.downPolicies)) {
      const path: BgpPath = { prefix: cidr, nextHop: self(cidr) };
      if (adv.med !== undefined) path.med = adv.med;
      if (adv.asPathPrepend) path.asPathPrepend = adv.asPathPrepend;
      if (adv.communities?.length) path.communities = [...adv.communities];
      paths.push(path);
    }
  }
  return { global, peers, paths: exportFilter(scope, paths) };
}

/**
 * The last line of defence: whatever plan() computed, advertise only owned
 * egress IPs, the default route where a /0 destination allows it, and
 * prefixes inside one configured destination that touch no special-use space
 * and no pod network. Binary searches over the scope: no pairwise checks.
 */
export function exportFilter(scope: AdvertiseScope, paths: BgpPath[]): BgpPath[] {
  return paths.filter((path) => {
    if (scope.owned.has(path.prefix) || scope.backup.has(path.prefix)) return true;
    const p = parsePrefix(path.prefix);
    if (!p.ok) return false;
    const r = rangeOf(p.prefix);
    if (p.prefix.len === 0) return scope.allowDefault && scope.defaults.has(r.family);
    const ex = scope.excluded[firstReaching(scope.excluded, r)];
    if (ex && ex.family === r.family && ex.lo <= r.hi) return false;
    const o = scope.outer[firstReaching(scope.outer, r)];
    return o !== undefined && o.family === r.family && o.lo <= r.lo && r.hi <= o.hi;
  });
}

/**
 * What a gateway advertises in steady state: every probe up, its connection
 * state synced (so its backup paths too). What `egressd plan` shows.
 */
export function steadyBgp(config: Config & { bgp: BgpConfig }, kernel: KernelState): BgpDesired {
  return planBgp(
    { bgp: config.bgp, connectionSync: config.connectionSync },
    {
      ...kernel,
      backups: backupPrefixes(kernel.guard?.sync),
      lastResort: lastResortPrefixes(kernel.guard?.sync),
    },
    { ...HEALTHY, backupReady: true },
    advertiseScope(config),
  );
}
