// daemon/metrics.ts against a fake gateway: names, help and types (checked by
// promtool too), what events and scrapes do to the values, the nft read cache,
// and that the number of series depends on the config, never on traffic.
import test, { type ExecutionContext } from "ava";
import { spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pino } from "pino";
import { Metrics } from "../../daemon/metrics.js";
import { parseExposition, value } from "../helpers/exposition.js";
import { FAKE_NOW, FakeGateway, fakeStatus } from "../helpers/fake-gateway.js";

const log = pino({ level: "silent" });
const PROMTOOL = "/usr/bin/promtool";

async function scrape(m: Metrics) {
  return parseExposition(await m.render());
}

const EXPECTED: Record<string, string> = {
  egressd_build_info: "gauge",
  egressd_ready: "gauge",
  egressd_draining: "gauge",
  egressd_probe_state: "gauge",
  egressd_probe_rtt_seconds: "histogram",
  egressd_probe_results_total: "counter",
  egressd_probe_transitions_total: "counter",
  egressd_bgp_peer_state: "gauge",
  egressd_bgp_peer_transitions_total: "counter",
  egressd_bfd_session_state: "gauge",
  egressd_bfd_transitions_total: "counter",
  egressd_bfd_rx_slack_min_seconds: "gauge",
  egressd_bfd_tx_late_max_seconds: "gauge",
  egressd_bgp_advertised_routes: "gauge",
  egressd_bgp_withdrawn_routes_total: "counter",
  egressd_policy_advertised: "gauge",
  egressd_failovers_total: "counter",
  egressd_gobgpd_restarts_total: "counter",
  egressd_conntrackd_restarts_total: "counter",
  egressd_connection_sync_ready: "gauge",
  egressd_connection_sync_resync_states: "gauge",
  egressd_conntrackd_cache_refused_total: "counter",
  egressd_conntrackd_injections_failed_total: "counter",
  egressd_conntrackd_messages_lost_total: "counter",
  egressd_audit_records_total: "counter",
  egressd_audit_overruns_total: "counter",
  egressd_audit_events_lost_total: "counter",
  egressd_audit_errors_total: "counter",
  egressd_audit_open_connections: "gauge",
  egressd_snat_ports_in_use: "gauge",
  egressd_snat_ports_available: "gauge",
  egressd_snat_port_usage_ratio: "gauge",
  egressd_dataplane_restarts_total: "counter",
  egressd_bfd_helper_restarts_total: "counter",
  egressd_bfd_rx_ttl_dropped_total: "counter",
  egressd_snat_packets_total: "counter",
  egressd_snat_bytes_total: "counter",
  egressd_snat_connections_total: "counter",
  egressd_conntrack_entries: "gauge",
  egressd_conntrack_entries_limit: "gauge",
  egressd_egress_ips: "gauge",
  egressd_reconcile_duration_seconds: "histogram",
  egressd_reconcile_errors_total: "counter",
  egressd_last_reconcile_timestamp_seconds: "gauge",
  egressd_last_successful_reconcile_timestamp_seconds: "gauge",
  egressd_config_reloads_total: "counter",
  egressd_metrics_read_errors_total: "counter",
};

/** A stand-in for /proc/sys/net/netfilter, removed when the test ends. */
function conntrackDir(t: ExecutionContext, count: number, max: number): string {
  const dir = mkdtempSync(join(tmpdir(), "egressd-ct-"));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  writeFileSync(join(dir, "nf_conntrack_count"), `${count}\n`);
  writeFileSync(join(dir, "nf_conntrack_max"), `${max}\n`);
  return dir;
}

test("every egressd metric is there with help text and its type; process metrics too", async (t) => {
  const m = new Metrics({
    gateway: new FakeGateway(),
    version: "9.9.9",
    log,
    conntrackDir: conntrackDir(t, 1, 2),
  });
  const fams = await scrape(m);
  for (const [name, type] of Object.entries(EXPECTED)) {
    t.is(fams.get(name)?.type, type, name);
    t.true((fams.get(name)?.help.length ?? 0) > 10, `${name} has help`);
  }
  const ours = [...fams.keys()].filter((n) => n.startsWith("egressd_"));
  t.deepEqual(ours.sort(), Object.keys(EXPECTED).sort(), "no metric without a test");
  for (const n of [
    "process_cpu_seconds_total",
    "process_resident_memory_bytes",
    "nodejs_eventloop_lag_seconds",
  ])
    t.truthy(fams.get(n), n);
  t.is(value(fams, "egressd_build_info", { version: "9.9.9", gateway: "gw-a1", site: "dc-a" }), 1);
  m.close();
});

test("promtool check metrics accepts the exposition", async (t) => {
  if (!existsSync(PROMTOOL)) return t.fail(`${PROMTOOL} missing: apt-get install prometheus`);
  const gw = new FakeGateway();
  const m = new Metrics({ gateway: gw, version: "0.1.0", log });
  gw.events.emit("probeSample", { name: "tor", kind: "icmp", ok: true, rttMs: 0.5 });
  gw.events.emit("reconciled", { reasons: ["start"], durationMs: 30, changes: {}, errors: { bgp: "x" } });
  const text = await m.render();
  const r = spawnSync(PROMTOOL, ["check", "metrics"], { input: text, encoding: "utf8" });
  // Exit 3 is "lint problems": prom-client's own nodejs_active_*_total gauges have
  // them; egressd's metrics must have none, and the text must parse (exit 1 otherwise).
  const problems = `${r.stdout}${r.stderr}`.split("\n").filter((l) => l.trim() && !l.startsWith("nodejs_"));
  t.deepEqual(problems, []);
  t.true(r.status === 0 || r.status === 3, `promtool exit ${r.status}`);
  m.close();
});

test("current state comes from status() at scrape time", async (t) => {
  const gw = new FakeGateway();
  const m = new Metrics({ gateway: gw, version: "0.1.0", log, conntrackDir: conntrackDir(t, 950, 1000) });
  let f = await scrape(m);
  t.is(value(f, "egressd_ready"), 1);
  t.is(value(f, "egressd_probe_state", { probe: "tor", state: "up" }), 1);
  t.is(value(f, "egressd_probe_state", { probe: "tor", state: "down" }), 0);
  t.is(value(f, "egressd_probe_state", { probe: "partner-fw", kind: "tcp", state: "down" }), 1);
  t.is(value(f, "egressd_bgp_peer_state", { peer: "tor", address: "10.1.1.0", state: "established" }), 1);
  t.is(value(f, "egressd_bgp_peer_state", { peer: "tor-v6", state: "established" }), 0);
  t.is(value(f, "egressd_bgp_peer_state", { peer: "tor-v6", state: "active" }), 1);
  t.is(value(f, "egressd_bfd_session_state", { peer: "tor", state: "up" }), 1);
  t.is(value(f, "egressd_bfd_session_state", { peer: "tor-v6" }), undefined, "no BFD, no series");
  t.is(value(f, "egressd_bfd_rx_slack_min_seconds", { peer: "tor" }), 0.2125);
  t.is(value(f, "egressd_bfd_tx_late_max_seconds", { peer: "tor" }), 0.004);
  t.is(value(f, "egressd_bfd_rx_slack_min_seconds", { peer: "tor-v6" }), undefined);
  t.is(value(f, "egressd_bfd_helper_restarts_total"), 1);
  t.is(value(f, "egressd_bfd_rx_ttl_dropped_total"), 3);
  t.is(value(f, "egressd_bgp_advertised_routes", { family: "ipv4" }), 2);
  t.is(value(f, "egressd_bgp_advertised_routes", { family: "ipv6" }), 1);
  t.is(value(f, "egressd_policy_advertised", { policy: "web" }), 1);
  t.is(value(f, "egressd_policy_advertised", { policy: "partner" }), 0);
  t.is(value(f, "egressd_conntrack_entries"), 950);
  t.is(value(f, "egressd_conntrack_entries_limit"), 1000);
  t.is(value(f, "egressd_egress_ips"), 2);
  t.is(value(f, "egressd_last_reconcile_timestamp_seconds"), (FAKE_NOW - 2000) / 1000);

  gw.snapshot = {
    ...gw.snapshot,
    ready: false,
    notReadyReasons: ["no BGP session is Established"],
    peers: gw.snapshot.peers.map((p) => ({ ...p, state: "idle" as const })),
    probes: gw.snapshot.probes.filter((p) => p.name !== "partner-fw"),
  };
  t.is(value(f, "egressd_connection_sync_ready"), 0, "no connectionSync");
  t.is(value(f, "egressd_conntrackd_restarts_total"), 0);
  gw.snapshot = {
    ...gw.snapshot,
    connectionSync: {
      ready: true,
      resynced: true,
      restarts: 2,
      lastResync: { entries: 3015, ms: 543, heard: true },
    },
  };
  t.is(value(f, "egressd_audit_records_total", { event: "start" }), undefined, "no audit section");
  gw.snapshot = {
    ...gw.snapshot,
    audit: {
      starts: 120,
      ends: 100,
      drops: 9,
      overruns: 1,
      lostStarts: 3,
      lostEnds: 5,
      ignored: 7,
      writeErrors: 0,
      ipfixMessages: 30,
      ipfixErrors: 2,
      open: 20,
    },
  };
  gw.snapshot = {
    ...gw.snapshot,
    snatPorts: {
      top: [
        {
          egressIP: "192.0.2.11",
          protocol: "tcp",
          destination: "198.51.100.7:5432",
          inUse: 900,
          available: 1000,
        },
      ],
      fullest: { "192.0.2.11": 0.9, "192.0.2.12": 0 },
    },
  };
  f = await scrape(m);
  const dest = { egress_ip: "192.0.2.11", protocol: "tcp", destination: "198.51.100.7:5432" };
  t.is(value(f, "egressd_snat_ports_in_use", dest), 900);
  t.is(value(f, "egressd_snat_ports_available", dest), 1000);
  t.is(value(f, "egressd_snat_port_usage_ratio", { egress_ip: "192.0.2.11" }), 0.9);
  t.is(value(f, "egressd_snat_port_usage_ratio", { egress_ip: "192.0.2.12" }), 0);
  t.is(value(f, "egressd_audit_records_total", { event: "start" }), 120);
  t.is(value(f, "egressd_audit_records_total", { event: "end" }), 100);
  t.is(value(f, "egressd_audit_records_total", { event: "drop" }), 9);
  t.is(value(f, "egressd_audit_overruns_total"), 1);
  t.is(value(f, "egressd_audit_events_lost_total", { event: "start" }), 3);
  t.is(value(f, "egressd_audit_events_lost_total", { event: "end" }), 5);
  t.is(value(f, "egressd_audit_errors_total", { output: "ipfix" }), 2);
  t.is(value(f, "egressd_audit_errors_total", { output: "file" }), 0);
  t.is(value(f, "egressd_audit_open_connections"), 20);
  t.is(value(f, "egressd_connection_sync_ready"), 1);
  t.is(value(f, "egressd_connection_sync_resync_states"), 3015);
  t.is(value(f, "egressd_conntrackd_restarts_total"), 2);
  f = await scrape(m);
  t.is(value(f, "egressd_ready"), 0);
  t.is(value(f, "egressd_bgp_peer_state", { peer: "tor", state: "established" }), 0);
  t.is(value(f, "egressd_bgp_peer_state", { peer: "tor", state: "idle" }), 1);
  t.is(value(f, "egressd_probe_state", { probe: "partner-fw" }), undefined, "a removed probe's series go");
  m.close();
});

test("a scrape makes the gateway's status a few times at most, not once per metric", async (t) => {
  const gw = new FakeGateway();
  let made = 0;
  const status = gw.status.bind(gw);
  gw.status = () => {
    made++;
    return status();
  };
  const m = new Metrics({ gateway: gw, version: "0.1.0", log, conntrackDir: conntrackDir(t, 1, 10) });
  await scrape(m);
  // A dozen metrics read it, across the turns of the event loop the scrape takes.
  t.is(made, 1, `status() made ${made} times in one scrape`);
  await scrape(m);
  t.is(made, 2, "the next scrape makes its own");
  m.close();
});

test("a scrape gives the event loop back as it goes, and renders what the registry renders", async (t) => {
  const gw = new FakeGateway();
  // A clock that moves 5 ms each time it is read: every metric is past YIELD_MS.
  let clock = 0;
  const m = new Metrics({ gateway: gw, version: "0.1.0", log, now: () => (clock += 5) });
  let turns = 0;
  let counting = true;
  const count = () => {
    turns++;
    if (counting) setImmediate(count);
  };
  setImmediate(count);
  const text = await m.render();
  counting = false;
  const metrics = m.registry.getMetricsAsArray().length;
  t.true(turns >= metrics, `${turns} turns of the loop for ${metrics} metrics`);
  const names = (x: string) => [...x.matchAll(/^# TYPE (\S+)/gm)].map((r) => r[1]);
  t.deepEqual(names(text), names(await m.registry.metrics()));
  t.true(text.endsWith("\n") && !text.endsWith("\n\n"));
  m.close();
});

test("events feed counters and histograms", async (t) => {
  const gw = new FakeGateway();
  const m = new Metrics({ gateway: gw, version: "0.1.0", log });
  let f = await scrape(m);
  // Bounded enums start at zero so rate() works from the first failover on.
  for (const trigger of ["probe", "bfd", "drain", "self-check"])
    t.is(value(f, "egressd_failovers_total", { trigger }), 0, trigger);
  for (const result of ["applied", "unchanged", "invalid"])
    t.is(value(f, "egressd_config_reloads_total", { result }), 0);
  t.is(value(f, "egressd_gobgpd_restarts_total"), 0);
  t.is(value(f, "egressd_dataplane_restarts_total"), 0);

  const e = gw.events;
  for (const rtt of [0.3, 0.7, 4]) e.emit("probeSample", { name: "tor", kind: "icmp", ok: true, rttMs: rtt });
  e.emit("probeSample", { name: "tor", kind: "icmp", ok: false });
  e.emit("probe", {
    name: "tor",
    kind: "icmp",
    target: "10.1.1.0",
    from: "up",
    to: "down",
    at: 1,
    reason: "3 failures",
    penalty: 0,
    suppressed: false,
    wallTime: Date.now(),
  });
  e.emit("peer", { name: "tor", address: "10.1.1.0", state: "established" }); // no change: not counted
  e.emit("peer", { name: "tor", address: "10.1.1.0", state: "idle" });
  e.emit("peer", { name: "tor", address: "10.1.1.0", state: "idle" });
  e.emit("peer", { name: "tor", address: "10.1.1.0", state: "established" });
  e.emit("bfd", { name: "tor", peer: "10.1.1.0", state: "down", reason: "control detection time expired" });
  e.emit("withdrawn", { prefixes: ["203.0.113.0/24", "198.51.100.0/24"], reason: "probe" });
  e.emit("failover", { trigger: "probe" });
  e.emit("failover", { trigger: "bfd" });
  e.emit("reload", { result: "invalid" });
  e.emit("reload", { result: "applied" });
  e.emit("gobgpdRestart", { pid: 1, restarts: 1 });
  e.emit("dataplaneRestart", { reason: "the data-plane process ended: test", restarts: 1, restored: true });
  e.emit("reconciled", { reasons: ["health"], durationMs: 20, changes: {}, errors: {} });
  e.emit("reconciled", {
    reasons: ["retry"],
    durationMs: 2000,
    changes: {},
    errors: { bgp: "gobgpd is not reachable" },
  });

  f = await scrape(m);
  t.is(value(f, "egressd_probe_rtt_seconds_count", { probe: "tor" }), 3);
  t.is(value(f, "egressd_probe_rtt_seconds_bucket", { probe: "tor", le: "0.0005" }), 1);
  t.is(value(f, "egressd_probe_rtt_seconds_bucket", { probe: "tor", le: "0.001" }), 2);
  t.is(value(f, "egressd_probe_rtt_seconds_bucket", { probe: "tor", le: "0.005" }), 3);
  t.is(value(f, "egressd_probe_results_total", { probe: "tor", result: "ok" }), 3);
  t.is(value(f, "egressd_probe_results_total", { probe: "tor", result: "failed" }), 1);
  t.is(value(f, "egressd_probe_transitions_total", { probe: "tor", to: "down" }), 1);
  t.is(value(f, "egressd_bgp_peer_transitions_total", { peer: "tor", to: "idle" }), 1);
  t.is(value(f, "egressd_bgp_peer_transitions_total", { peer: "tor", to: "established" }), 1);
  t.is(value(f, "egressd_bfd_transitions_total", { peer: "tor", to: "down" }), 1);
  t.is(value(f, "egressd_bgp_withdrawn_routes_total", { reason: "probe" }), 2);
  t.is(value(f, "egressd_bgp_withdrawn_routes_total", { reason: "drain" }), 0);
  t.is(value(f, "egressd_failovers_total", { trigger: "probe" }), 1);
  t.is(value(f, "egressd_failovers_total", { trigger: "bfd" }), 1);
  t.is(value(f, "egressd_config_reloads_total", { result: "invalid" }), 1);
  t.is(value(f, "egressd_config_reloads_total", { result: "applied" }), 1);
  t.is(value(f, "egressd_gobgpd_restarts_total"), 1);
  t.is(value(f, "egressd_dataplane_restarts_total"), 1);
  t.is(value(f, "egressd_reconcile_duration_seconds_count"), 2);
  t.is(value(f, "egressd_reconcile_duration_seconds_sum"), 2.02);
  t.is(value(f, "egressd_reconcile_errors_total", { target: "bgp" }), 1);
  t.is(value(f, "egressd_reconcile_errors_total", { target: "kernel" }), 0);
  const last = value(f, "egressd_last_reconcile_timestamp_seconds")!;
  const good = value(f, "egressd_last_successful_reconcile_timestamp_seconds")!;
  t.true(last >= good && last > Date.now() / 1000 - 5);

  m.close();
  t.is(gw.events.listenerCount("probeSample"), 0, "close() unsubscribes");
});

test("SNAT counters are read at scrape time, once per cache period however many scrapes", async (t) => {
  const gw = new FakeGateway();
  gw.natDelayMs = 20;
  let clock = 0; // the cache's clock, driven by hand: no dependence on the machine's speed
  const m = new Metrics({ gateway: gw, version: "0.1.0", log, natCacheMs: 200, now: () => clock });
  gw.traffic("web", 10, 1500, 2);
  const [a, b, c] = await Promise.all([scrape(m), scrape(m), scrape(m)]);
  t.is(gw.natReads, 1, "three concurrent scrapes of three metrics: one nft call");
  for (const f of [a!, b!, c!]) {
    t.is(value(f, "egressd_snat_packets_total", { policy: "web", egress_ip: "10.100.0.0" }), 10);
    t.is(value(f, "egressd_snat_bytes_total", { policy: "web" }), 1500);
    t.is(value(f, "egressd_snat_connections_total", { policy: "web" }), 2);
    t.is(value(f, "egressd_snat_packets_total", { policy: "partner", egress_ip: "10.100.0.1" }), 0);
  }
  gw.traffic("web", 5, 500);
  t.is(value(await scrape(m), "egressd_snat_packets_total", { policy: "web" }), 10, "cached");
  clock += 250;
  t.is(value(await scrape(m), "egressd_snat_packets_total", { policy: "web" }), 15, "read again");
  t.is(gw.natReads, 2);

  // A failed read shows the last values (no gap in the series) and counts the error.
  gw.natError = new Error("nft: table not found");
  clock += 250;
  const f = await scrape(m);
  t.is(value(f, "egressd_snat_packets_total", { policy: "web" }), 15);
  t.is(value(f, "egressd_metrics_read_errors_total"), 1);
  m.close();
});

test("conntrackd's failures are read from conntrackd -s at scrape time, once per cache period, per conntrackd", async (t) => {
  const gw = new FakeGateway();
  let clock = 0;
  const m = new Metrics({ gateway: gw, version: "0.1.0", log, natCacheMs: 200, now: () => clock });
  // Without sync: the metrics exist, with no series.
  let f = await scrape(m);
  t.is(value(f, "egressd_conntrackd_cache_refused_total"), undefined);
  const stats = (cacheFailed: number, failed: number, lost: number) => ({
    injected: { created: 10, updated: 2, destroyed: 1, failed },
    local: 5,
    cacheFailed,
    lost,
    malformed: 0,
    received: 40,
  });
  gw.sync = [
    { conntrackd: "conntrackd", stats: stats(1200, 3, 7) },
    { conntrackd: "conntrackd-site-gw-b1", stats: stats(0, 0, 0) },
  ];
  clock += 250;
  const reads = gw.syncReads;
  f = await scrape(m);
  t.is(gw.syncReads - reads, 1, "three metrics of one scrape: one read of each conntrackd");
  t.is(value(f, "egressd_conntrackd_cache_refused_total", { conntrackd: "conntrackd" }), 1200);
  t.is(value(f, "egressd_conntrackd_injections_failed_total", { conntrackd: "conntrackd" }), 3);
  t.is(value(f, "egressd_conntrackd_messages_lost_total", { conntrackd: "conntrackd" }), 7);
  t.is(value(f, "egressd_conntrackd_cache_refused_total", { conntrackd: "conntrackd-site-gw-b1" }), 0);
  // A conntrackd that does not answer (restarting) drops out of the scrape.
  gw.sync = gw.sync.slice(1);
  clock += 250;
  f = await scrape(m);
  t.is(value(f, "egressd_conntrackd_cache_refused_total", { conntrackd: "conntrackd" }), undefined);
  t.is(value(f, "egressd_conntrackd_cache_refused_total", { conntrackd: "conntrackd-site-gw-b1" }), 0);
  m.close();
});

test("without conntrack in the namespace there are no conntrack metrics, and no error", async (t) => {
  const dir = mkdtempSync(join(tmpdir(), "egressd-ct-"));
  const m = new Metrics({ gateway: new FakeGateway(), version: "0.1.0", log, conntrackDir: dir });
  const f = await scrape(m);
  t.is(f.get("egressd_conntrack_entries"), undefined);
  t.is(f.get("egressd_conntrack_entries_limit"), undefined);
  m.close();
  rmSync(dir, { recursive: true });
});

test("series depend on the config only: traffic from any number of sources adds none", async (t) => {
  const series = async (policies: number, events: number) => {
    const gw = new FakeGateway(fakeStatus(policies));
    const m = new Metrics({ gateway: gw, version: "0.1.0", log, processMetrics: false, natCacheMs: 0 });
    for (let i = 0; i < events; i++) {
      // Many sources, many prefixes: none of them may become a label.
      gw.traffic(i % 2 ? "web" : "partner", 1, 100);
      gw.events.emit("probeSample", { name: "tor", kind: "icmp", ok: true, rttMs: i % 50 });
      gw.events.emit("withdrawn", { prefixes: [`10.${i >> 8}.${i & 255}.0/24`], reason: "probe" });
      gw.events.emit("failover", { trigger: "probe" });
      gw.events.emit("reconciled", {
        reasons: [`pod 10.244.${i >> 8}.${i & 255}`],
        durationMs: 1,
        changes: {},
        errors: {},
      });
    }
    const f = await scrape(m);
    m.close();
    const all = [...f.values()].flatMap((x) => x.samples);
    const labelNames = new Set(all.flatMap((s) => Object.keys(s.labels)));
    return { n: all.length, labelNames };
  };
  const quiet = await series(2, 1);
  const busy = await series(2, 5000);
  t.is(busy.n, quiet.n, "5000 events from 5000 sources add no series");
  const allowed = [
    "version",
    "nodejs",
    "gateway",
    "site",
    "probe",
    "kind",
    "state",
    "result",
    "to",
    "le",
    "peer",
    "address",
    "family",
    "reason",
    "policy",
    "egress_ip",
    "trigger",
    "target",
  ];
  t.deepEqual(
    [...busy.labelNames].filter((l) => !allowed.includes(l)),
    [],
  );
  // Per policy: policy_advertised + 3 SNAT counters.
  const big = await series(102, 1);
  t.is(big.n - quiet.n, 100 * 4);
});
