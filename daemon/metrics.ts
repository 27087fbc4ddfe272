// egressd's Prometheus metrics, on a registry of their own (never the global
// one). Two sources:
//
//  - the gateway's events (probe samples and transitions, withdrawals,
//    failovers, reloads, reconciles, gobgpd restarts) feed counters and
//    histograms as they happen;
//  - everything that is a current state (probe, peer and BFD states, policies,
//    advertised routes, readiness, SNAT counters, conntrack) is read at scrape
//    time in collect() callbacks, from status() and the kernel, so it is never
//    stale and never needs bookkeeping.
//
// Labels are probe, peer, policy, egress IP, target and small fixed enums:
// bounded by the size of the config, never by the number of pods or sources.
import { existsSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from "prom-client";
import type { NatCounter } from "../routing/nft.js";
import type { ConntrackdChannelStats, ConntrackdStats } from "../core/plan/sync.js";
import type { GatewayEvents, WithdrawReason } from "./events.js";
import type { Logger } from "./log.js";
import type { ObservableGateway } from "./observable.js";
import type { StatusSnapshot } from "./status.js";
import { PORT_TOP } from "./audit.js";

export const PROBE_STATES = ["unknown", "up", "down", "held"] as const;
export const PEER_STATES = [
  "unknown",
  "idle",
  "connect",
  "active",
  "opensent",
  "openconfirm",
  "established",
] as const;
export const BFD_STATES = ["admin-down", "down", "init", "up"] as const;
export const WITHDRAW_REASONS: readonly WithdrawReason[] = [
  "probe",
  "bfd",
  "drain",
  "config",
  "self-check",
  "fail-safe",
  "sync",
];
export const FAILOVER_TRIGGERS: readonly GatewayEvents["failover"][0]["trigger"][] = [
  "probe",
  "bfd",
  "drain",
  "self-check",
  "fail-safe",
];
export const RELOAD_RESULTS: readonly GatewayEvents["reload"][0]["result"][] = [
  "applied",
  "unchanged",
  "invalid",
  "refused",
  "failed",
];
export const RECONCILE_TARGETS = ["plan", "kernel", "bgp"] as const;

/** Round-trip times of probes: sub-millisecond on a LAN up to the usual 300 ms timeout and beyond. */
export const PROBE_RTT_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5];
/** Reconciles: a no-op diff takes milliseconds, a 100k-element nft map about half a second. */
export const RECONCILE_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];

export interface MetricsOptions {
  gateway: ObservableGateway;
  version: string;
  log?: Logger;
  /** How long one read of the nft counters serves scrapes (default 1000 ms). */
  natCacheMs?: number;
  /** Monotonic clock in ms for the counter cache and for pacing a scrape (tests drive it by hand). */
  now?: () => number;
  /** Where nf_conntrack_count/nf_conntrack_max live (default /proc/sys/net/netfilter). */
  conntrackDir?: string;
  /** Node.js process metrics (default true). */
  processMetrics?: boolean;
}

/** Number of a nft counter, which is a 64-bit integer (exact up to 2^53). */
function num(v: bigint): number {
  return Number(v);
}

async function readProcNumber(path: string): Promise<number | undefined> {
  try {
    const n = Number((await readFile(path, "utf8")).trim());
    return Number.isFinite(n) ? n : undefined;
  } catch {
    return undefined;
  }
}

function family(prefix: string): "ipv4" | "ipv6" {
  return prefix.includes(":") ? "ipv6" : "ipv4";
}

/** A scrape gives the event loop back after this much work (ms). */
export const YIELD_MS = 4;

/** How often the event-loop delay is sampled (each sample is a wake-up of the main thread). */
const LOOP_DELAY_SAMPLE_MS = 50;

export class Metrics {
  readonly registry = new Registry();
  private readonly gateway: ObservableGateway;
  private readonly log: Logger | undefined;
  private readonly natCacheMs: number;
  private readonly now: () => number;
  private readonly conntrackDir: string;
  private nat: { at: number; value: Promise<NatCounter[]> } | undefined;
  private readonly unsubscribe: (() => void)[] = [];
  private readonly lastPeerState = new Map<string, string>();
  private natErrorLogged = false;
  private lastNat: NatCounter[] = [];
  private readonly readErrors: Counter;

  constructor(opts: MetricsOptions) {
    this.gateway = opts.gateway;
    this.log = opts.log;
    this.natCacheMs = opts.natCacheMs ?? 1000;
    this.now = opts.now ?? (() => performance.now());
    this.conntrackDir = opts.conntrackDir ?? "/proc/sys/net/netfilter";
    // The event-loop delay is sampled every 50 ms (prom-client's default is 10 ms; each sample wakes the
    // thread, 0.5 % of a core here at 20 ms, 0.24 % at 50). Any stall of 50 ms or more shows in p99 and
    // max. No detection waits on this loop's timing any more: ICMP verdicts come from the helper's
    // kernel timestamps, BFD runs in its own thread.
    if (opts.processMetrics ?? true)
      collectDefaultMetrics({ register: this.registry, eventLoopMonitoringPrecision: LOOP_DELAY_SAMPLE_MS });
    const registers = [this.registry];
    // `self` for collect() callbacks, whose `this` is the metric.
    // eslint-disable-next-line @typescript-eslint/no-this-alias
    const self = this;

    // --- identity and readiness -------------------------------------------------
    new Gauge({
      name: "egressd_build_info",
      help: "Always 1; labels: egressd version, Node.js version, this gateway's name and site (join on instance for gateway/site).",
      labelNames: ["version", "nodejs", "gateway", "site"],
      registers,
      collect() {
        const g = self.snapshot().gateway;
        this.reset();
        this.set({ version: opts.version, nodejs: process.version, gateway: g.name, site: g.site }, 1);
      },
    });
    new Gauge({
      name: "egressd_ready",
      help: "1 when the data plane is programmed and at least one BGP session is Established (as /readyz).",
      registers,
      collect() {
        this.set(self.snapshot().ready ? 1 : 0);
      },
    });
    new Gauge({
      name: "egressd_draining",
      help: "1 while the gateway drains before stopping (routes withdrawn, still forwarding).",
      registers,
      collect() {
        this.set(self.snapshot().draining ? 1 : 0);
      },
    });

    // --- probes -------------------------------------------------------------------
    new Gauge({
      name: "egressd_probe_state",
      help: "Health state of each probe: 1 for the state it is in, 0 for the others (unknown, up, down, held).",
      labelNames: ["probe", "kind", "state"],
      registers,
      collect() {
        this.reset();
        for (const p of self.snapshot().probes)
          for (const s of PROBE_STATES)
            this.set({ probe: p.name, kind: p.kind, state: s }, p.state === s ? 1 : 0);
      },
    });
    const probeRtt = new Histogram({
      name: "egressd_probe_rtt_seconds",
      help: "Round-trip time of successful probe results, per probe.",
      labelNames: ["probe"],
      buckets: PROBE_RTT_BUCKETS,
      registers,
    });
    // Results come at up to tens per second per probe: they are tallied in a
    // plain map and handed to the counter at scrape time.
    const resultTally = new Map<string, { ok: number; failed: number; inconclusive: number }>();
    new Counter({
      name: "egressd_probe_results_total",
      help: "Probe results, per probe and result (ok, failed, inconclusive: the event loop stalled through the probe's timeout, or the hypervisor stole the machine's CPUs in its window, so it was not judged).",
      labelNames: ["probe", "result"],
      registers,
      collect() {
        this.reset();
        for (const [probe, n] of resultTally) {
          this.inc({ probe, result: "ok" }, n.ok);
          this.inc({ probe, result: "failed" }, n.failed);
          this.inc({ probe, result: "inconclusive" }, n.inconclusive);
        }
      },
    });
    const probeTransitions = new Counter({
      name: "egressd_probe_transitions_total",
      help: "Probe state changes, per probe and the state entered.",
      labelNames: ["probe", "to"],
      registers,
    });

    // --- BGP ----------------------------------------------------------------------
    new Gauge({
      name: "egressd_bgp_peer_state",
      help: "BGP session state of each peer as gobgpd reports it: 1 for the current state, 0 for the others.",
      labelNames: ["peer", "address", "state"],
      registers,
      collect() {
        this.reset();
        for (const p of self.snapshot().peers)
          for (const s of PEER_STATES)
            this.set({ peer: p.name, address: p.address, state: s }, p.state === s ? 1 : 0);
      },
    });
    const peerTransitions = new Counter({
      name: "egressd_bgp_peer_transitions_total",
      help: "BGP session state changes, per peer and the state entered.",
      labelNames: ["peer", "to"],
      registers,
    });
    new Gauge({
      name: "egressd_bfd_session_state",
      help: "BFD session state of each peer that runs BFD: 1 for the current state, 0 for the others.",
      labelNames: ["peer", "state"],
      registers,
      collect() {
        this.reset();
        for (const p of self.snapshot().peers) {
          if (!p.bfd) continue;
          for (const s of BFD_STATES) this.set({ peer: p.name, state: s }, p.bfd.state === s ? 1 : 0);
        }
      },
    });
    // A per-peer BFD figure from /status, in ms there and in seconds here; no series without one.
    const bfdPeerSeconds = (
      name: string,
      help: string,
      ms: (b: NonNullable<StatusSnapshot["peers"][number]["bfd"]>) => number | null | undefined,
    ) =>
      new Gauge({
        name,
        help,
        labelNames: ["peer"],
        registers,
        collect() {
          this.reset();
          for (const p of self.snapshot().peers) {
            const v = p.bfd ? ms(p.bfd) : undefined;
            if (v !== undefined && v !== null) this.set({ peer: p.name }, v / 1000);
          }
        },
      });
    bfdPeerSeconds(
      "egressd_bfd_rx_slack_min_seconds",
      "Per BFD peer, since its session last came Up: the least time left before the detection time ran out " +
        "when a packet arrived (detection time minus the widest gap). Near 0: it nearly went down.",
      (b) => b.rxSlackMinMs,
    );
    bfdPeerSeconds(
      "egressd_bfd_tx_late_max_seconds",
      "Per BFD peer, since its session last came Up: the most a periodic packet egressd sent left after its time.",
      (b) => b.txLateMaxMs,
    );
    const bfdTransitions = new Counter({
      name: "egressd_bfd_transitions_total",
      help: "BFD session state changes, per peer and the state entered.",
      labelNames: ["peer", "to"],
      registers,
    });
    new Gauge({
      name: "egressd_bgp_advertised_routes",
      help: "Routes (egress IPs and served destinations) this gateway advertises now, per address family.",
      labelNames: ["family"],
      registers,
      collect() {
        const n = { ipv4: 0, ipv6: 0 };
        for (const p of self.snapshot().advertised) n[family(p.prefix)]++;
        this.set({ family: "ipv4" }, n.ipv4);
        this.set({ family: "ipv6" }, n.ipv6);
      },
    });
    const withdrawn = new Counter({
      name: "egressd_bgp_withdrawn_routes_total",
      help: "Routes withdrawn, by reason (probe, bfd, drain, config, self-check).",
      labelNames: ["reason"],
      registers,
    });
    for (const reason of WITHDRAW_REASONS) withdrawn.inc({ reason }, 0);
    new Gauge({
      name: "egressd_policy_advertised",
      help: "1 when a policy's destinations are advertised, 0 when withdrawn (or the policy serves no gateway).",
      labelNames: ["policy", "family"],
      registers,
      collect() {
        this.reset();
        for (const p of self.snapshot().policies)
          this.set({ policy: p.name, family: `ipv${p.family}` }, p.advertised ? 1 : 0);
      },
    });
    const failovers = new Counter({
      name: "egressd_failovers_total",
      help: "Times traffic was moved away from (part of) this gateway, by trigger (probe, bfd, drain, self-check).",
      labelNames: ["trigger"],
      registers,
    });
    for (const trigger of FAILOVER_TRIGGERS) failovers.inc({ trigger }, 0);
    const gobgpdRestarts = new Counter({
      name: "egressd_gobgpd_restarts_total",
      help: "Times the managed gobgpd exited and was started again.",
      registers,
    });
    new Gauge({
      name: "egressd_connection_sync_ready",
      help: "1 when conntrackd runs and has the peers' state (the backup paths are advertised); 0 when not, or without connectionSync.",
      registers,
      collect() {
        this.reset();
        const s = self.snapshot().connectionSync;
        if (s) this.set(s.ready ? 1 : 0);
      },
    });
    new Gauge({
      name: "egressd_connection_sync_resync_states",
      help: "States the last resync from the sync peers wrote into the kernel table.",
      registers,
      collect() {
        this.reset();
        const r = self.snapshot().connectionSync?.lastResync;
        if (r) this.set(r.entries);
      },
    });
    new Counter({
      name: "egressd_conntrackd_restarts_total",
      help: "Times the managed conntrackd exited and was started again.",
      registers,
      collect() {
        this.reset();
        const s = self.snapshot().connectionSync;
        if (s) this.inc(s.restarts);
      },
    });
    // conntrackd's own counters (`conntrackd -s`, read at most once per natCacheMs): what sync
    // failed to do. Each conntrackd counts from its start, so these fall back when one restarts,
    // as a counter may (egressd_conntrackd_restarts_total says when).
    const syncCounter = (name: string, help: string, pick: (s: ConntrackdStats) => number) =>
      new Counter({
        name,
        help,
        labelNames: ["conntrackd"],
        registers,
        async collect() {
          const all = await self.syncStats();
          this.reset();
          for (const c of all) this.inc({ conntrackd: c.conntrackd }, pick(c.stats));
        },
      });
    syncCounter(
      "egressd_conntrackd_cache_refused_total",
      "Connections conntrackd could not add to its cache of what it sends (full: HashLimit, twice nf_conntrack_max), so never sent to its peers. conntrackd logs nothing of it.",
      (s) => s.cacheFailed,
    );
    syncCounter(
      "egressd_conntrackd_injections_failed_total",
      "States from peers that the kernel refused to write into its table.",
      (s) => s.injected.failed,
    );
    syncCounter(
      "egressd_conntrackd_messages_lost_total",
      "Sync messages that never arrived from the peers (gaps in their sequence numbers).",
      (s) => s.lost,
    );
    const audit = () => self.snapshot().audit;
    new Counter({
      name: "egressd_audit_records_total",
      help: "Audit records, by event: start and end of NATed connections, drop of new connections the gateway dropped.",
      labelNames: ["event"],
      registers,
      collect() {
        this.reset();
        const a = audit();
        if (!a) return;
        this.inc({ event: "start" }, a.starts);
        this.inc({ event: "end" }, a.ends);
        this.inc({ event: "drop" }, a.drops);
      },
    });
    new Counter({
      name: "egressd_audit_overruns_total",
      help: "Times the kernel dropped conntrack events because egressd's socket buffer was full: the audit trail misses records.",
      registers,
      collect() {
        this.reset();
        const a = audit();
        if (a) this.inc(a.overruns);
      },
    });
    new Counter({
      name: "egressd_audit_events_lost_total",
      help:
        "Connection starts and ends whose events the kernel dropped, found by listing the conntrack table; " +
        "their records are written from the table (marked late / endLost).",
      labelNames: ["event"],
      registers,
      collect() {
        this.reset();
        const a = audit();
        if (!a) return;
        this.inc({ event: "start" }, a.lostStarts);
        this.inc({ event: "end" }, a.lostEnds);
      },
    });
    new Counter({
      name: "egressd_audit_errors_total",
      help: "Audit records that could not be written (file) or sent (ipfix), by output.",
      labelNames: ["output"],
      registers,
      collect() {
        this.reset();
        const a = audit();
        if (!a) return;
        this.inc({ output: "file" }, a.writeErrors);
        this.inc({ output: "ipfix" }, a.ipfixErrors);
      },
    });
    const ports = () => self.snapshot().snatPorts;
    new Gauge({
      name: "egressd_snat_ports_in_use",
      help: `SNAT ports in use by the ${PORT_TOP} fullest destinations (egress IP, protocol, destination address:port); with an audit section.`,
      labelNames: ["egress_ip", "protocol", "destination"],
      registers,
      collect() {
        this.reset();
        for (const u of ports()?.top ?? [])
          this.set({ egress_ip: u.egressIP, protocol: u.protocol, destination: u.destination }, u.inUse);
      },
    });
    new Gauge({
      name: "egressd_snat_ports_available",
      help: "SNAT ports an egress IP has for one destination (the size of the port range), beside egressd_snat_ports_in_use.",
      labelNames: ["egress_ip", "protocol", "destination"],
      registers,
      collect() {
        this.reset();
        for (const u of ports()?.top ?? [])
          this.set({ egress_ip: u.egressIP, protocol: u.protocol, destination: u.destination }, u.available);
      },
    });
    new Gauge({
      name: "egressd_snat_port_usage_ratio",
      help: "Per egress IP: the share of the SNAT port range its fullest destination uses (1: no new connection to it can be made).",
      labelNames: ["egress_ip"],
      registers,
      collect() {
        this.reset();
        for (const [ip, r] of Object.entries(ports()?.fullest ?? {})) this.set({ egress_ip: ip }, r);
      },
    });
    new Gauge({
      name: "egressd_audit_open_connections",
      help: "NATed connections the audit trail follows now (started while egressd watched, not ended yet).",
      registers,
      collect() {
        this.reset();
        const a = audit();
        if (a) this.set(a.open);
      },
    });
    new Counter({
      name: "egressd_bfd_helper_restarts_total",
      help: "Times BFD's helper (egressd-bfd) ended and was started again; each may cost the peers one detection time of silence.",
      registers,
      collect() {
        this.reset();
        this.inc(self.snapshot().bfdTransport?.helperRestarts ?? 0);
      },
    });
    new Counter({
      name: "egressd_bfd_rx_ttl_dropped_total",
      help: "BFD packets dropped because their TTL / hop limit was not 255 (RFC 5881 section 5): sent from off the link, or forged.",
      registers,
      collect() {
        this.reset();
        this.inc(self.snapshot().bfdTransport?.rxTtlDropped ?? 0);
      },
    });
    const dataplaneRestarts = new Counter({
      name: "egressd_dataplane_restarts_total",
      help: "Times the data-plane process ended unasked (a config too large for --dataplane-heap-mb, or a bug) and was started again with the config in force.",
      registers,
    });

    // --- data plane ---------------------------------------------------------------
    const natLabels = ["policy", "egress_ip"];
    new Counter({
      name: "egressd_snat_packets_total",
      help: "Packets source-NATed, per policy and egress IP (nftables counters).",
      labelNames: natLabels,
      registers,
      async collect() {
        const counters = await self.natCounters();
        this.reset(); // synchronous from here: concurrent scrapes cannot interleave
        for (const c of counters) this.inc({ policy: c.policy, egress_ip: c.egressIP }, num(c.packets));
      },
    });
    new Counter({
      name: "egressd_snat_bytes_total",
      help: "Bytes source-NATed, per policy and egress IP (nftables counters).",
      labelNames: natLabels,
      registers,
      async collect() {
        const counters = await self.natCounters();
        this.reset(); // synchronous from here: concurrent scrapes cannot interleave
        for (const c of counters) this.inc({ policy: c.policy, egress_ip: c.egressIP }, num(c.bytes));
      },
    });
    new Counter({
      name: "egressd_snat_connections_total",
      help: "Connections source-NATed (first packets), per policy and egress IP (nftables counters).",
      labelNames: natLabels,
      registers,
      async collect() {
        const counters = await self.natCounters();
        this.reset(); // synchronous from here: concurrent scrapes cannot interleave
        for (const c of counters) this.inc({ policy: c.policy, egress_ip: c.egressIP }, num(c.connections));
      },
    });
    // Only where conntrack exists in this namespace (it always does once nf_nat is in use).
    const ctCount = join(this.conntrackDir, "nf_conntrack_count");
    const ctMax = join(this.conntrackDir, "nf_conntrack_max");
    if (existsSync(ctCount) && existsSync(ctMax)) {
      new Gauge({
        name: "egressd_conntrack_entries",
        help: "Connection tracking entries in use in the gateway's network namespace.",
        registers,
        async collect() {
          const n = await readProcNumber(ctCount);
          if (n !== undefined) this.set(n);
        },
      });
      new Gauge({
        name: "egressd_conntrack_entries_limit",
        help: "Maximum number of connection tracking entries (nf_conntrack_max).",
        registers,
        async collect() {
          const n = await readProcNumber(ctMax);
          if (n !== undefined) this.set(n);
        },
      });
    }
    new Gauge({
      name: "egressd_egress_ips",
      help: "Egress IPs this gateway owns.",
      registers,
      collect() {
        this.set(self.snapshot().egressIPs.length);
      },
    });

    // --- the control loop ---------------------------------------------------------
    const reconcileDuration = new Histogram({
      name: "egressd_reconcile_duration_seconds",
      help: "Time one reconcile took (plan, kernel and BGP), whether it changed anything or not.",
      buckets: RECONCILE_BUCKETS,
      registers,
    });
    const reconcileErrors = new Counter({
      name: "egressd_reconcile_errors_total",
      help: "Reconciles that failed, per target (plan, kernel, bgp); a failed reconcile is retried.",
      labelNames: ["target"],
      registers,
    });
    for (const target of RECONCILE_TARGETS) reconcileErrors.inc({ target }, 0);
    const lastReconcile = new Gauge({
      name: "egressd_last_reconcile_timestamp_seconds",
      help: "When the last reconcile finished (Unix time).",
      registers,
    });
    const lastGoodReconcile = new Gauge({
      name: "egressd_last_successful_reconcile_timestamp_seconds",
      help: "When the last reconcile without errors finished (Unix time).",
      registers,
    });
    const reloads = new Counter({
      name: "egressd_config_reloads_total",
      help: "Config reloads (SIGHUP or file change), by result (applied, unchanged, invalid, refused: valid but not applicable without a restart or not buildable, failed: applying it failed).",
      labelNames: ["result"],
      registers,
    });
    for (const result of RELOAD_RESULTS) reloads.inc({ result }, 0);
    this.readErrors = new Counter({
      name: "egressd_metrics_read_errors_total",
      help: "Scrape-time reads of the nft counters that failed (the last values read are shown meanwhile).",
      registers,
      // Waits for this scrape's (cached) read, so its failure counts in the same scrape.
      async collect() {
        await self.natCounters();
      },
    });

    // Initial values for what only events update.
    const last = this.snapshot().lastReconcile;
    if (last) {
      const at = Date.parse(last.at) / 1000;
      if (Number.isFinite(at)) {
        lastReconcile.set(at);
        if (!Object.keys(last.errors).length) lastGoodReconcile.set(at);
      }
    }
    for (const p of this.snapshot().peers) this.lastPeerState.set(p.name, p.state);

    this.on("reconciled", (r) => {
      const now = Date.now() / 1000;
      reconcileDuration.observe(r.durationMs / 1000);
      lastReconcile.set(now);
      const failed = Object.keys(r.errors);
      for (const target of failed) reconcileErrors.inc({ target });
      if (!failed.length) lastGoodReconcile.set(now);
    });
    this.on("probe", (t) => probeTransitions.inc({ probe: t.name, to: t.to }));
    this.on("probeSample", (s) => {
      let n = resultTally.get(s.name);
      if (!n) resultTally.set(s.name, (n = { ok: 0, failed: 0, inconclusive: 0 }));
      if (s.ok) n.ok++;
      else if (s.inconclusive) n.inconclusive++;
      else n.failed++;
      if (s.ok && s.rttMs !== undefined) probeRtt.observe({ probe: s.name }, s.rttMs / 1000);
    });
    this.on("peer", (p) => {
      if (this.lastPeerState.get(p.name) === p.state) return;
      this.lastPeerState.set(p.name, p.state);
      peerTransitions.inc({ peer: p.name, to: p.state });
    });
    this.on("bfd", (b) => bfdTransitions.inc({ peer: b.name, to: b.state }));
    this.on("withdrawn", (w) => withdrawn.inc({ reason: w.reason }, w.prefixes.length));
    this.on("failover", (f) => failovers.inc({ trigger: f.trigger }));
    this.on("reload", (r) => reloads.inc({ result: r.result }));
    this.on("gobgpdRestart", () => gobgpdRestarts.inc());
    this.on("dataplaneRestart", () => dataplaneRestarts.inc());
  }

  /** Unsubscribes from the gateway's events. */
  close(): void {
    for (const u of this.unsubscribe.splice(0)) u();
  }

  private on<K extends keyof GatewayEvents>(event: K, fn: (...args: GatewayEvents[K]) => void): void {
    // The typed EventEmitter's listener type for a generic K is not expressible; the cast is safe.
    const listener = fn as unknown as (...args: unknown[]) => void;
    const events = this.gateway.events as unknown as NodeJS.EventEmitter;
    events.on(event, listener);
    this.unsubscribe.push(() => events.off(event, listener));
  }

  /**
   * The exposition text. Metrics are rendered one after another, and the
   * event loop is given back whenever YIELD_MS have passed, so a scrape is
   * several short tasks rather than one of 20-40 ms at 200 policies (probe
   * replies are read in between). One status snapshot serves the whole
   * scrape, so the metrics agree with each other.
   */
  async render(): Promise<string> {
    this.scrapes++;
    try {
      const parts: string[] = [];
      let since = this.now();
      for (const m of this.registry.getMetricsAsArray()) {
        parts.push(await this.registry.getSingleMetricAsString(m.name));
        if (this.now() - since >= YIELD_MS) {
          await new Promise((r) => setImmediate(r));
          since = this.now();
        }
      }
      return `${parts.join("\n\n")}\n`;
    } finally {
      if (--this.scrapes === 0) this.turnSnapshot = undefined;
    }
  }
  private scrapes = 0;

  /**
   * The gateway's status, made once per scrape (or per turn of the event
   * loop, for a caller outside render()). A scrape calls a dozen collect()
   * callbacks, and each made the whole status anew (every probe, peer and
   * path): with 60 probes and checks that was most of a scrape's 40-130 ms
   * on the main thread, and its garbage.
   */
  private snapshot(): StatusSnapshot {
    if (this.turnSnapshot === undefined) {
      this.turnSnapshot = this.gateway.status();
      if (this.scrapes === 0) setImmediate(() => this.scrapes === 0 && (this.turnSnapshot = undefined));
    }
    return this.turnSnapshot;
  }
  private turnSnapshot: StatusSnapshot | undefined;

  /** conntrackd's counters, read at most once per natCacheMs; a failed read shows none. */
  private syncStats(): Promise<ConntrackdChannelStats[]> {
    const now = this.now();
    if (this.sync && now - this.sync.at < this.natCacheMs) return this.sync.value;
    const value = this.gateway.syncStats().catch((e: unknown) => {
      this.log?.debug({ err: e }, "cannot read conntrackd's counters for /metrics");
      return [];
    });
    this.sync = { at: now, value };
    return value;
  }
  private sync: { at: number; value: Promise<ConntrackdChannelStats[]> } | undefined;

  /** The nft counters, read at most once per natCacheMs however many scrapes and metrics ask. */
  private natCounters(): Promise<NatCounter[]> {
    const now = this.now();
    if (this.nat && now - this.nat.at < this.natCacheMs) return this.nat.value;
    const value = this.gateway.natCounters().then(
      (v) => {
        this.natErrorLogged = false;
        this.lastNat = v;
        return v;
      },
      (e: unknown) => {
        this.readErrors.inc();
        if (!this.natErrorLogged) this.log?.warn({ err: e }, "cannot read the nft counters for /metrics");
        this.natErrorLogged = true;
        // Kept for the cache period like a good read: the scrape's other metrics show the same values.
        return this.lastNat;
      },
    );
    this.nat = { at: now, value };
    return value;
  }
}
