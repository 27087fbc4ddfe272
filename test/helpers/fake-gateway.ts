// A stand-in for a running Gateway, for the metrics/HTTP tests and the scrape
// benchmark: an event emitter, a canned StatusSnapshot and canned nft counters.
import { EventEmitter } from "node:events";
import type { GatewayEvents } from "../../daemon/events.js";
import type { ObservableGateway } from "../../daemon/observable.js";
import type { ConntrackdChannelStats } from "../../core/plan/sync.js";
import type { StatusSnapshot } from "../../daemon/status.js";
import type { NatCounter } from "../../routing/nft.js";

type Probe = StatusSnapshot["probes"][number];

/** The wall-clock instant the canned snapshots are taken at: fixed, so rendered ages never drift. */
export const FAKE_NOW = Date.parse("2026-06-01T12:00:00.000Z");

export function fakeProbe(
  name: string,
  state: Probe["state"],
  extra: Partial<Probe> = {},
  now = FAKE_NOW,
): Probe {
  return {
    name,
    kind: "icmp",
    target: "10.1.1.0",
    intervalMs: 100,
    timeoutMs: 300,
    rise: 3,
    fall: 3,
    holdDownMs: 5000,
    state,
    since: 0,
    reason: state === "down" ? "3 failures" : "3 successes",
    consecutiveOk: state === "up" ? 10 : 0,
    consecutiveFail: state === "down" ? 5 : 0,
    penalty: 0,
    suppressed: false,
    heldUntil: null,
    flaps: 0,
    sinceWall: now - 65_000,
    heldUntilWall: null,
    lastResult: { ok: state === "up", wallTime: now - 50 },
    lastRttMs: state === "up" ? 0.42 : null,
    results: { ok: 1200, failed: state === "down" ? 5 : 0, inconclusive: 0 },
    transitions: 1,
    affects: "gateway",
    ...extra,
  };
}

/** A status with `policies` policies (web, partner, p2, p3, ...), each with its own egress IP. */
export function fakeStatus(policies = 2, now = FAKE_NOW): StatusSnapshot {
  const names = Array.from({ length: policies }, (_, i) => (i === 0 ? "web" : i === 1 ? "partner" : `p${i}`));
  return {
    at: new Date(now).toISOString(),
    gateway: {
      name: "gw-a1",
      site: "dc-a",
      version: "0.1.0",
      startedAt: new Date(now - 3_600_000).toISOString(),
      pid: 4242,
    },
    ready: true,
    notReadyReasons: [],
    draining: false,
    egressIPs: names.map((_, i) => ({ address: egressIP(i), interface: "lo" })),
    policies: names.map((name, i) => ({
      name,
      family: 4 as const,
      egressIP: egressIP(i),
      uplink: "tor",
      gateway: true,
      advertised: i !== 1,
      ...(i === 1 ? { withdrawnBecause: "probe partner-fw is down" } : {}),
    })),
    probes: [
      fakeProbe("tor", "up", {}, now),
      fakeProbe("partner-fw", "down", { kind: "tcp", affects: "policy partner" }, now),
    ],
    peers: [
      {
        name: "tor",
        address: "10.1.1.0",
        asn: 65010,
        state: "established",
        bfd: { state: "up", rxSlackMinMs: 212.5, txLateMaxMs: 4 },
      },
      { name: "tor-v6", address: "fd00:1:1::1", asn: 65010, state: "active" },
    ],
    advertised: [
      { prefix: "192.0.2.11/32", nextHop: "10.1.1.1" },
      { prefix: "203.0.113.0/24", nextHop: "10.1.1.1", med: 10, communities: ["65011:100"] },
      { prefix: "2001:db8:e::11/128", nextHop: "fd00:1:1::2" },
    ],
    bfdTransport: { helperRestarts: 1, rxTtlDropped: 3 },
    lastReconcile: {
      at: new Date(now - 2000).toISOString(),
      durationMs: 12.5,
      reasons: ["resync"],
      changes: { kernel: ["+address 192.0.2.11/32"] },
      errors: {},
    },
  };
}

function egressIP(i: number): string {
  return `10.${100 + Math.floor(i / 65536)}.${Math.floor(i / 256) % 256}.${i % 256}`;
}

export class FakeGateway implements ObservableGateway {
  readonly events = new EventEmitter<GatewayEvents>();
  alive = true;
  natReads = 0;
  natError: Error | undefined;
  natDelayMs = 0;
  counters: NatCounter[];

  constructor(public snapshot: StatusSnapshot = fakeStatus()) {
    this.counters = snapshot.policies.map((p) => ({
      policy: p.name,
      egressIP: p.egressIP ?? "",
      packets: 0n,
      bytes: 0n,
      connections: 0n,
    }));
  }

  status(): StatusSnapshot {
    return this.snapshot;
  }

  async natCounters(): Promise<NatCounter[]> {
    this.natReads++;
    if (this.natDelayMs) await new Promise((r) => setTimeout(r, this.natDelayMs));
    if (this.natError) throw this.natError;
    return this.counters.map((c) => ({ ...c }));
  }

  /** What syncStats() answers: each conntrackd's counters. */
  sync: ConntrackdChannelStats[] = [];
  syncReads = 0;

  async syncStats(): Promise<ConntrackdChannelStats[]> {
    this.syncReads++;
    return this.sync.map((c) => ({ conntrackd: c.conntrackd, stats: { ...c.stats } }));
  }

  loopAlive(): boolean {
    return this.alive;
  }

  /** Adds traffic to a policy's counters. */
  traffic(policy: string, packets: number, bytes: number, connections = 1): void {
    const c = this.counters.find((x) => x.policy === policy);
    if (!c) throw new Error(`no policy ${policy}`);
    c.packets += BigInt(packets);
    c.bytes += BigInt(bytes);
    c.connections += BigInt(connections);
  }
}
