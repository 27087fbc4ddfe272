// The Gateway's logic with fake actuators (a FakeKernel and a FakeSpeaker that
// share one call log): the fast withdraw of a failing probe, the fail-safe
// when health cannot be evaluated, a failed BGP apply retried, BFD down closing
// the peer and reopening it after the hold time, and the drain's ordering.
// Nothing here touches the host's kernel; the only probe is a TCP connect to a
// listener on loopback that the test opens and closes.
import test, { type ExecutionContext } from "ava";
import { mkdtempSync, rmSync } from "node:fs";
import { createServer, type Server } from "node:net";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pino } from "pino";
import { stringify } from "yaml";
import { loadConfig } from "../../inputs/config/load.js";
import { Gateway, type GatewayConfig } from "../../daemon/gateway.js";
import { BfdManager } from "../../health/bfd/manager.js";
import { FakeKernel } from "../helpers/fake-kernel.js";
import { FakeSpeaker } from "../helpers/fake-speaker.js";
import { InlineDataplane } from "../../daemon/dataplane.js";

const log = pino({ level: "silent" });
const stubDiagnose = () => Promise.resolve("not diagnosed (test)");

async function listener(): Promise<{ server: Server; port: number }> {
  const server = createServer((s) => s.destroy());
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  return { server, port: (server.address() as AddressInfo).port };
}

function config(extra: Record<string, unknown> = {}, peer: Record<string, unknown> = {}): GatewayConfig {
  const c = {
    gateway: { name: "gw", site: "a" },
    egressIPs: [
      { address: "192.0.2.11", interface: "lo" },
      { address: "192.0.2.12", interface: "lo" },
    ],
    uplinks: [{ name: "tor", interface: "eth1", nextHop: "10.1.1.0" }],
    policies: [
      {
        name: "red",
        sources: ["10.244.1.0/24"],
        destinations: ["198.51.100.0/24"],
        egressIP: "192.0.2.11",
        uplink: "tor",
      },
      {
        name: "blue",
        sources: ["10.244.2.0/24"],
        destinations: ["203.0.113.0/24"],
        egressIP: "192.0.2.12",
        uplink: "tor",
      },
    ],
    bgp: {
      asn: 65011,
      routerId: "10.1.1.1",
      peers: [{ name: "tor", address: "10.1.1.0", asn: 65010, holdTime: 3, ...peer }],
    },
    drain: { periodMs: 300 },
    ...extra,
  };
  const r = loadConfig(stringify(c));
  if (!r.ok) throw new Error(r.errors.map((e) => `${e.path}: ${e.message}`).join("\n"));
  return r.config as GatewayConfig;
}

async function until(what: string, f: () => boolean, ms = 10_000): Promise<void> {
  for (const deadline = Date.now() + ms; !f(); ) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** A gateway over an InlineDataplane with `kernel`, its config prepared as the daemon prepares it. */
async function gateway(
  cfg: GatewayConfig,
  kernel: FakeKernel,
  speaker: FakeSpeaker,
  runDir: string,
  bfd?: BfdManager,
  logger = log,
): Promise<Gateway> {
  const dataplane = new InlineDataplane(kernel);
  const first = await dataplane.prepare({ config: cfg });
  if (!first.ok) throw new Error(first.errors.map((e) => e.message).join("; "));
  return new Gateway(first, {
    log: logger,
    runDir,
    resyncMs: 60_000,
    dataplane,
    // No test sends anything to the config's peer addresses: the diagnosis of a peer that is down is stubbed.
    actuators: {
      checks: kernel.checks,
      speaker: () => speaker,
      diagnose: stubDiagnose,
      repair: kernel.repair,
      ...(bfd ? { bfd } : {}),
    },
  });
}

async function started(t: ExecutionContext, cfg: GatewayConfig, bfd?: BfdManager, logger = log) {
  const calls: string[] = [];
  const kernel = new FakeKernel(calls);
  const speaker = new FakeSpeaker(calls);
  const runDir = mkdtempSync(join(tmpdir(), "egressd-gw-"));
  const gw = await gateway(cfg, kernel, speaker, runDir, bfd, logger);
  let stopped = false;
  t.teardown(async () => {
    if (!stopped) await gw.stop();
    rmSync(runDir, { recursive: true, force: true });
  });
  await gw.start();
  const prefixes = () => [...speaker.paths.keys()].sort();
  return { gw, kernel, speaker, calls, prefixes, markStopped: () => (stopped = true) };
}

/** A TCP probe of the loopback listener on `port`, guarding policy red. */
function redProbe(port: number, extra: Record<string, unknown>): Record<string, unknown> {
  return {
    name: "red-svc",
    kind: "tcp",
    target: "127.0.0.1",
    port,
    intervalMs: 50,
    timeoutMs: 50,
    rise: 1,
    damping: false,
    affects: { policy: "red" },
    ...extra,
  };
}

const ALL = ["192.0.2.11/32", "192.0.2.12/32", "198.51.100.0/24", "203.0.113.0/24"];

test("a failing probe withdraws exactly its policy's routes, first, and nothing re-adds them", async (t) => {
  const { server, port } = await listener();
  t.teardown(() => server.close());
  const cfg = config({ probes: [redProbe(port, { fall: 1, holdDownMs: 60_000 })] });
  const { gw, speaker, calls, prefixes } = await started(t, cfg);
  await until("everything advertised", () => prefixes().length === 4);
  t.deepEqual(prefixes(), ALL);
  t.true(speaker.importRejected, "the import policy is set");
  const mark = calls.length;
  // Where the log stands at the very moment the probe is declared down.
  let atDown = -1;
  gw.events.on("probe", (p) => {
    if (p.name === "red-svc" && p.to === "down") atDown = calls.length;
  });
  await new Promise<void>((r) => server.close(() => r()));
  await until("red withdrawn", () => !speaker.paths.has("198.51.100.0/24"));
  t.is(calls[atDown], "-198.51.100.0/24", `the fast path goes first: ${calls.slice(atDown).join(", ")}`);
  await new Promise((r) => setTimeout(r, 300)); // the reconcile that follows, and then some
  t.false(calls.slice(mark).includes("+198.51.100.0/24"), "never re-advertised while the probe is down");
  t.deepEqual(prefixes(), ["192.0.2.11/32", "192.0.2.12/32", "203.0.113.0/24"]);
});

test("a failed result after good ones is logged with its reason, once per run of failures", async (t) => {
  const first = await listener();
  let server = first.server;
  const port = first.port;
  t.teardown(() => server.close());
  const lines: { msg: string; probe?: string; reason?: string }[] = [];
  const logger = pino({ level: "info" }, { write: (s: string) => void lines.push(JSON.parse(s)) });
  // It does not go down here: only single results fail.
  const cfg = config({ probes: [redProbe(port, { fall: 100 })] });
  const { gw } = await started(t, cfg, undefined, logger);
  const results = (ok: boolean) =>
    gw.status().probes.find((p) => p.name === "red-svc")?.results[ok ? "ok" : "failed"] ?? 0;
  const logged = () => lines.filter((l) => l.msg === "probe result failed");
  for (let round = 1; round <= 2; round++) {
    const good = results(true);
    await until("good results", () => results(true) >= good + 3);
    await new Promise<void>((r) => server.close(() => r()));
    const bad = results(false);
    await until("several failed results in a row", () => results(false) >= bad + 4);
    t.is(logged().length, round, "one line per run of failures, however long");
    t.is(logged()[round - 1]!.probe, "red-svc");
    t.regex(logged()[round - 1]!.reason ?? "", /ECONNREFUSED|refused/);
    server = createServer().listen(port, "127.0.0.1");
    await new Promise((r) => server.once("listening", r));
  }
});

test("health that cannot be evaluated fails safe: every destination withdrawn, egress IPs kept", async (t) => {
  const { gw, prefixes } = await started(t, config());
  await until("everything advertised", () => prefixes().length === 4);
  const withdrawn: string[] = [];
  gw.events.on("withdrawn", (e) => e.reason === "fail-safe" && withdrawn.push(...e.prefixes));
  // What the prober does when a transition listener throws.
  (gw as unknown as { prober: { emit(e: "error", err: Error): void } }).prober.emit(
    "error",
    new Error("listener threw"),
  );
  await until("destinations gone", () => prefixes().length === 2);
  t.deepEqual(prefixes(), ["192.0.2.11/32", "192.0.2.12/32"]);
  t.deepEqual(withdrawn.sort(), ["198.51.100.0/24", "203.0.113.0/24"]);
});

test("a failed BGP apply is reported and retried until it succeeds", async (t) => {
  const calls: string[] = [];
  const speaker = new FakeSpeaker(calls);
  speaker.failNext("addPath", new Error("gobgpd said no"));
  const runDir = mkdtempSync(join(tmpdir(), "egressd-gw-"));
  t.teardown(() => rmSync(runDir, { recursive: true, force: true }));
  const gw = await gateway(config(), new FakeKernel(calls), speaker, runDir);
  t.teardown(() => gw.stop());
  const errors: string[] = [];
  gw.events.on("reconciled", (r) => r.errors.bgp && errors.push(r.errors.bgp));
  await gw.start();
  await until("retried and complete", () => speaker.paths.size === 4);
  t.true(errors.some((e) => /gobgpd said no/.test(e)));
});

const bfdUp = (bfd: BfdManager) =>
  bfd.emit("up", {
    key: "10.1.1.0",
    peer: "10.1.1.0",
    local: "10.1.1.1",
    at: 0,
    from: "Init",
    to: "Up",
    diag: 0,
    reason: "peer Up",
    remoteDiag: 0,
    remoteState: "Up",
    peerAdminDown: false,
  } as never);

test("after a start, nothing is advertised before the BFD session with the peer is Up, though BGP is", async (t) => {
  const bfd = new BfdManager({ logger: log });
  const { gw, speaker, prefixes } = await started(
    t,
    config({}, { localAddress: "10.1.1.1", bfd: { minRxMs: 100, minTxMs: 100 } }),
    bfd,
  );
  await until("peer added", () => speaker.peers.has("10.1.1.0"));
  speaker.setPeerState("10.1.1.0", "established");
  await new Promise((r) => setTimeout(r, 300));
  t.deepEqual(prefixes(), [], "BGP is up, BFD is not: nothing yet");
  t.is(gw.status().policies[0]!.withdrawnBecause, "self-bfd");
  bfdUp(bfd);
  await until("everything advertised", () => prefixes().length === 4);
  t.deepEqual(prefixes(), ALL);
  // Armed for good: a later establishment (a ToR's restart) holds nothing back.
  speaker.setPeerState("10.1.1.0", "idle");
  speaker.setPeerState("10.1.1.0", "established");
  await new Promise((r) => setTimeout(r, 100));
  t.is(prefixes().length, 4);
});

test("a BFD session that does not come up holds the gateway back for the peer's hold time, no longer", async (t) => {
  const bfd = new BfdManager({ logger: log });
  const lines: string[] = [];
  const logger = pino({ level: "warn" }, { write: (l: string) => void lines.push(l) });
  const { speaker, prefixes } = await started(
    t,
    config({}, { localAddress: "10.1.1.1", bfd: { minRxMs: 100, minTxMs: 100 } }),
    bfd,
    logger,
  );
  await until("peer added", () => speaker.peers.has("10.1.1.0"));
  const t0 = Date.now();
  speaker.setPeerState("10.1.1.0", "established");
  await until("advertised after the hold time", () => prefixes().length === 4, 10_000);
  t.log(`advertised ${Date.now() - t0} ms after the session came up (hold time 3 s), BFD never up`);
  t.true(Date.now() - t0 >= 2900, "not before the hold time");
  t.true(lines.some((l) => l.includes("BFD not up within the BGP hold time")));
});

test("BFD down closes that peer's session; after the hold time BGP gets it back", async (t) => {
  const bfd = new BfdManager({ logger: log });
  const { speaker, prefixes } = await started(
    t,
    config({}, { localAddress: "10.1.1.1", bfd: { minRxMs: 100, minTxMs: 100 } }),
    bfd,
  );
  await until("peer added", () => speaker.peers.has("10.1.1.0"));
  speaker.setPeerState("10.1.1.0", "established");
  bfdUp(bfd);
  await until("everything advertised", () => prefixes().length === 4);
  bfd.emit("down", {
    key: "10.1.1.0",
    peer: "10.1.1.0",
    local: "10.1.1.1",
    at: 0,
    from: "Up",
    to: "Down",
    diag: 1,
    reason: "control detection time expired",
    remoteDiag: 0,
    remoteState: "Up",
    peerAdminDown: false,
  } as never);
  await until("peer removed", () => !speaker.peers.has("10.1.1.0"));
  const t0 = Date.now();
  await until("peer back after the hold time", () => speaker.peers.has("10.1.1.0"), 10_000);
  t.log(`reopened ${Date.now() - t0} ms after the close (hold time 3 s)`);
  t.true(Date.now() - t0 >= 2500, "not before the hold time");
});

test("drain: destinations first, egress IPs kept for the period, then everything, then the kernel", async (t) => {
  const { gw, calls, prefixes, kernel, markStopped } = await started(t, config());
  await until("everything advertised", () => prefixes().length === 4);
  const mark = calls.length;
  const drained = gw.drain();
  await until("destinations withdrawn", () => prefixes().length === 2);
  t.deepEqual(prefixes(), ["192.0.2.11/32", "192.0.2.12/32"], "egress IPs stay: replies still come back");
  t.false(kernel.tornDown, "the data plane forwards on during the period");
  t.true(await drained);
  markStopped();
  t.deepEqual(prefixes(), []);
  const log = calls.slice(mark);
  const lastWithdraw = Math.max(log.lastIndexOf("-192.0.2.11/32"), log.lastIndexOf("-192.0.2.12/32"));
  t.true(lastWithdraw >= 0 && lastWithdraw < log.indexOf("kernel teardown"), log.join(", "));
});

test("a burst of probe transitions is one health evaluation: 20 address checks coming up plan BGP once", async (t) => {
  const addresses = Array.from({ length: 20 }, (_, i) => ({ address: `192.0.2.${11 + i}`, interface: "lo" }));
  const cfg = config({ egressIPs: addresses });
  const calls: string[] = [];
  const kernel = new FakeKernel(calls);
  const runDir = mkdtempSync(join(tmpdir(), "egressd-gw-"));
  const gw = await gateway(cfg, kernel, new FakeSpeaker(calls), runDir);
  t.teardown(async () => {
    await gw.stop();
    rmSync(runDir, { recursive: true, force: true });
  });
  const evaluations: string[][] = [];
  gw.events.on("health", (h) => evaluations.push(h.reasons));
  let transitions = 0;
  gw.events.on("probe", () => transitions++);
  await gw.start();
  await until("every self-check up", () => gw.status().probes.filter((p) => p.state === "up").length >= 22);
  t.true(transitions >= 22, `${transitions} transitions`);
  t.true(
    evaluations.length <= 3,
    `${transitions} transitions, ${evaluations.length} evaluations: ${JSON.stringify(evaluations)}`,
  );
});
