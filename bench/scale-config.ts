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
  probes: number;
  /** Where the ToR is: the uplink's next hop, the probes' target and the BGP peer. */
  tor: { address: string; asn: number };
  self: { address: string; asn: number; interface: string };
  bfd: { intervalMs: number; multiplier: number };
  httpListen: string;
  egressIPs?: number;
}

/**
 * A gateway with `policies` policies sharing `sources` pod addresses, each
 * policy with its own /24 destination (100.64.0.0/24, 100.64.1.0/24, ...),
 * 50 egress IPs, `probes` ICMP probes to the ToR (the first guards the
 * uplink, the others one policy each) and BFD on the BGP session.
 */
export function gatewayAtScale(o: GatewayAtScale): GatewayConfig {
  const egress = o.egressIPs ?? 50;
  const lists = podAddresses(o.sources, o.policies);
  return {
    gateway: { name: "gw-scale", site: "dc-a" },
    egressIPs: Array.from({ length: egress }, (_, i) => ({
      address: `192.0.2.${i + 1}`,
      interface: "lo",
    })),
    uplinks: [{ name: "tor", interface: o.self.interface, nextHop: o.tor.address }],
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
      target: o.tor.address,
      affects: i === 0 ? { uplink: "tor" } : { policy: `p-${i % o.policies}` },
    })),
    http: { listen: o.httpListen },
    drain: { periodMs: 0 },
    bgp: {
      asn: o.self.asn,
      routerId: o.self.address,
      peers: [
        {
          name: "tor",
          address: o.tor.address,
          asn: o.tor.asn,
          localAddress: o.self.address,
          bfd: { minRxMs: o.bfd.intervalMs, minTxMs: o.bfd.intervalMs, multiplier: o.bfd.multiplier },
        },
      ],
    },
  };
}

/** Policy i's destination. */
export function destination(i: number): string {
  return `100.${64 + (i >> 8)}.${i & 255}.0/24`;
}
