// Large configs for the scale benchmarks, built the same way on every run
// (seeded PRNG), so figures from two runs or two trees compare.
import type { GatewayConfig } from "../core/config/gateway-config.js";

/** Deterministic PRNG (mulberry32). */
export function rng(seed: number): () => number {
  let a = seed;
  return () => {
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** `n` distinct pod addresses drawn from 10.244.0.0/14, dealt round-robin into `lists` lists. */
export function podAddresses(n: number, lists: number, seed = n): string[][] {
  const random = rng(seed);
  const seen = new Set<number>();
  const out: string[][] = Array.from({ length: lists }, () => []);
  while (seen.size < n) {
    const offset = Math.floor(random() * 262144); // 10.244.0.0/14
    if (seen.has(offset)) continue;
    seen.add(offset);
    const v = 0x0af40000 + offset;
    out[seen.size % lists]!.push(`10.${(v >>> 16) & 255}.${(v >>> 8) & 255}.${v & 255}`);
  }
  return out;
}

export interface GatewayAtScale {
  policies: number;
  sources: number;
  /** BGP peers (each with BFD), and the local address of each session. */
  peers: { address: string; local: string }[];
  peerAsn: number;
  self: { routerId: string; asn: number; interface: string };
  /** The uplink's next hop. */
  nextHop: string;
  /** ICMP probes: the first guards the uplink, the others one policy each; targets are used in turn. */
  probes: number;
  probeTargets: string[];
  probeIntervalMs?: number;
  /** Each probe's timeout (default: the interval). */
  probeTimeoutMs?: number;
  bfd: { intervalMs: number; multiplier: number };
  httpListen: string;
  egressIPs?: number;
}

/**
 * A gateway with `policies` policies sharing `sources` pod addresses, each
 * policy with its own /24 destination (100.64.0.0/24, 100.64.1.0/24, ...),
 * 50 egress IPs, ICMP probes and BFD on every BGP session.
 */
export function gatewayAtScale(o: GatewayAtScale): GatewayConfig {
  const egress = o.egressIPs ?? 50;
  const lists = podAddresses(o.sources, o.policies);
  const interval = o.probeIntervalMs ?? 100;
  return {
    gateway: { name: "gw-scale", site: "dc-a" },
    egressIPs: Array.from({ length: egress }, (_, i) => ({
      address: `192.0.2.${i + 1}`,
      interface: "lo",
    })),
    uplinks: [{ name: "tor", interface: o.self.interface, nextHop: o.nextHop }],
    policies: lists.map((sources, i) => ({
      name: `p-${i}`,
      sources,
      destinations: [destination(i)],
      egressIP: `192.0.2.${(i % egress) + 1}`,
      uplink: "tor",
    })),
    probes: Array.from({ length: o.probes }, (_, i) => ({
      name: `probe-${i}`,
      kind: "icmp" as const,
      target: o.probeTargets[i % o.probeTargets.length]!,
      intervalMs: interval,
      timeoutMs: o.probeTimeoutMs ?? interval,
      affects: i === 0 ? { uplink: "tor" } : { policy: `p-${i % o.policies}` },
    })),
    http: { listen: o.httpListen },
    // Each policy takes a value of the packet mark; the default mask (8 bits) holds 255.
    ...(o.policies > 255 ? { dataplane: { markMask: markMaskFor(o.policies) } } : {}),
    drain: { periodMs: 0 },
    bgp: {
      asn: o.self.asn,
      routerId: o.self.routerId,
      // The ToR connects in (FRR retries every second); out, gobgpd waits at least 5 s between attempts.
      listenPort: 179,
      peers: o.peers.map((p, i) => ({
        name: `tor-${i}`,
        address: p.address,
        asn: o.peerAsn,
        localAddress: p.local,
        bfd: { minRxMs: o.bfd.intervalMs, minTxMs: o.bfd.intervalMs, multiplier: o.bfd.multiplier },
      })),
    },
  };
}

/** A mask of contiguous bits from bit 20 up with room for `policies` marks (0 is no mark). */
export function markMaskFor(policies: number): number {
  const bits = Math.ceil(Math.log2(policies + 1));
  return ((2 ** bits - 1) * 2 ** 20) >>> 0;
}

/** Policy i's destination. */
export function destination(i: number): string {
  return `100.${64 + (i >> 8)}.${i & 255}.0/24`;
}
