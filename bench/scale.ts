// egressd at scale, as a process, in a network namespace, peering with an
// FRR ToR (bgpd + bfdd, BFD 100 ms x 3): a gateway with POLICIES policies,
// SOURCES pod addresses and 10 ICMP probes. It prints, each as measured:
//
//   start to /readyz, and to every route at the ToR
//   one source changed: file write to the element in the kernel
//   one destination added: file write to the route at the ToR
//   an unchanged SIGHUP: signal to the daemon's "config reloaded (unchanged)"
//   the event-loop delay (max and p99, from /metrics) during each of those
//   BGP session and BFD resets at the ToR (must be 0)
//   RSS across RELOADS reloads, each with one source changed
//   idle CPU of egressd, and of everything in its namespace
//
//   node dist/bench/scale.js [--policies 200] [--sources 100000] [--reloads 100]
//                            [--egressd PATH/TO/dist/daemon/cli.js]
// --egressd runs another build (an older tree, for before/after figures).
import { closeSync, mkdtempSync, openSync, readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { stringify } from "yaml";
import { run, spawnDetached, tryRun } from "../lib/exec.js";
import { sleep, waitFor } from "../lib/wait.js";
import { planStatic } from "../core/plan/index.js";
import type { GatewayConfig } from "../core/config/gateway-config.js";
import { buildTopology, Frr, GW_ASN, GW_V4, TOR_ASN, TOR_V4 } from "../test/helpers/bgp-lab.js";
import { benchSandbox, fmt } from "./nat-lib.js";
import { destination, gatewayAtScale } from "./scale-config.js";

const { values: args } = parseArgs({
  options: {
    policies: { type: "string", default: "200" },
    sources: { type: "string", default: "100000" },
    reloads: { type: "string", default: "100" },
    egressd: { type: "string", default: fileURLToPath(new URL("../daemon/cli.js", import.meta.url)) },
  },
});
const POLICIES = Number(args.policies);
const SOURCES = Number(args.sources);
const RELOADS = Number(args.reloads);
const HTTP = "127.0.0.1:9901";
const CLK_TCK = 100;

const sb = benchSandbox("sc");
const dir = mkdtempSync(join(tmpdir(), "egressd-scale-"));
const file = join(dir, "egressd.yaml");
const logPath = join(dir, "egressd.log");
let frr: Frr | undefined;
let pid: number | undefined;

/** Writes the config as an editor would: a new file renamed over the old one. */
function writeConfig(c: GatewayConfig): void {
  writeFileSync(`${file}.new`, stringify(c));
  renameSync(`${file}.new`, file);
}

async function http(path: string): Promise<string | undefined> {
  const r = await sb.tryExec("gw", ["curl", "-sf", "-m", "5", `http://${HTTP}${path}`]);
  return r.code === 0 ? r.stdout : undefined;
}

/** The event-loop delay since the last scrape (prom-client resets its histogram on each). */
async function loopDelay(): Promise<{ maxMs: number; p99Ms: number }> {
  const text = (await http("/metrics")) ?? "";
  const read = (name: string) => Number(new RegExp(`^${name} (\\S+)`, "m").exec(text)?.[1] ?? NaN) * 1000;
  return { maxMs: read("nodejs_eventloop_lag_max_seconds"), p99Ms: read("nodejs_eventloop_lag_p99_seconds") };
}

const logLines = (): string[] => readFileSync(logPath, "utf8").split("\n").filter(Boolean);
const reloadsLogged = () => logLines().filter((l) => l.includes('"config reloaded"')).length;

async function torHas(prefix: string): Promise<boolean> {
  const r = await tryRun(["vtysh", "-N", sb.ns("tor"), "-c", `show bgp ipv4 unicast ${prefix} json`]);
  return r.code === 0 && (JSON.parse(r.stdout) as { paths?: unknown[] }).paths?.length !== undefined;
}

async function torRoutes(): Promise<number> {
  const j = await frr!.json<{ routes?: Record<string, unknown> }>("show bgp ipv4 unicast json");
  return Object.keys(j.routes ?? {}).length;
}

async function resets(): Promise<{ bgpDropped: number; bfdDown: number }> {
  const n = await frr!.json<Record<string, { connectionsDropped?: number }>>(
    `show bgp neighbors ${GW_V4} json`,
  );
  const b = await frr!.json<{ "session-down"?: number }[]>("show bfd peers counters json");
  return {
    bgpDropped: n[GW_V4]?.connectionsDropped ?? 0,
    bfdDown: b.reduce((s, x) => s + (x["session-down"] ?? 0), 0),
  };
}

function cpuTicks(p: number): number {
  const f = readFileSync(`/proc/${p}/stat`, "utf8").split(") ")[1]!.split(" ");
  return Number(f[11]) + Number(f[12]); // utime, stime
}

function rssMb(p: number): number {
  const m = /^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${p}/status`, "utf8"));
  return Number(m?.[1] ?? 0) / 1024;
}

async function namespacePids(): Promise<number[]> {
  const r = await run(["ip", "netns", "pids", sb.ns("gw")]);
  return r.stdout.split("\n").filter(Boolean).map(Number);
}

/** Which nft set holds source `address` in this config's plan. */
function hostSet(c: GatewayConfig, address: string): string {
  const entry = planStatic(c).kernel.nat.sources.find((s) => s.interval === address);
  if (!entry) throw new Error(`${address} is not in the plan`);
  return `c${entry.classId}_hosts`;
}

async function inKernel(set: string, address: string): Promise<boolean> {
  const r = await sb.tryExec("gw", ["nft", "get", "element", "inet", "egressd", set, `{ ${address} }`]);
  return r.code === 0;
}

const line = (what: string, ms: number, delay?: { maxMs: number; p99Ms: number }) =>
  console.log(
    `  ${what.padEnd(52)} ${fmt(ms, 0).padStart(7)} ms` +
      (delay ? `   loop delay max ${fmt(delay.maxMs, 0)} ms, p99 ${fmt(delay.p99Ms, 0)} ms` : ""),
  );

async function main(): Promise<void> {
  await buildTopology(sb);
  await sb.exec("gw", ["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
  frr = await Frr.start(sb.ns("tor"), { bfd: { intervalMs: 100, multiplier: 3 } });
  let config = gatewayAtScale({
    policies: POLICIES,
    sources: SOURCES,
    probes: 10,
    tor: { address: TOR_V4, asn: TOR_ASN },
    self: { address: GW_V4, asn: GW_ASN, interface: "gw0" },
    bfd: { intervalMs: 100, multiplier: 3 },
    httpListen: HTTP,
  });
  writeConfig(config);
  const expectedRoutes = POLICIES + (config.egressIPs.length ?? 0);
  console.log(
    `scale: ${POLICIES} policies, ${SOURCES} sources, ${config.probes?.length} probes, ` +
      `BFD 100 ms x 3 to FRR; config ${(readFileSync(file).length / 1e6).toFixed(1)} MB; egressd ${args.egressd}`,
  );

  const log = openSync(logPath, "a");
  const t0 = performance.now();
  pid = spawnDetached(["node", args.egressd, "run", "-c", file, "--run-dir", join(dir, "run")], {
    netns: sb.ns("gw"),
    logFile: log,
  });
  closeSync(log);
  await waitFor("/readyz", async () => (await http("/readyz")) !== undefined, 120_000, 20);
  const ready = performance.now() - t0;
  const startDelay = await loopDelay();
  line("start to /readyz", ready, startDelay);
  await waitFor("every route at the ToR", async () => (await torRoutes()) >= expectedRoutes, 120_000, 50);
  line(`start to all ${expectedRoutes} routes at the ToR`, performance.now() - t0);
  await waitFor(
    "BFD up at the ToR",
    async () => (await frr!.vtysh("show bfd peers brief")).includes("up"),
    30_000,
  );
  await sleep(2000);
  const before = await resets();

  // One source changed: a new pod in policy p-0.
  await loopDelay();
  const pod = "10.250.0.1";
  config = structuredClone(config);
  config.policies[0]!.sources = [pod, ...config.policies[0]!.sources.slice(1)];
  const set = hostSet(config, pod);
  let t = performance.now();
  writeConfig(config);
  process.kill(pid, "SIGHUP");
  await waitFor("the new source in the kernel", () => inKernel(set, pod), 60_000, 5);
  line("one source changed: write to the kernel", performance.now() - t, await loopDelay());

  // One destination added: a new route at the ToR.
  const dest = destination(POLICIES + 1);
  config = structuredClone(config);
  config.policies[0]!.destinations = [...config.policies[0]!.destinations, dest];
  t = performance.now();
  writeConfig(config);
  process.kill(pid, "SIGHUP");
  await waitFor("the new destination at the ToR", () => torHas(dest), 60_000, 5);
  line("one destination added: write to the ToR's RIB", performance.now() - t, await loopDelay());

  // An unchanged SIGHUP.
  await waitFor("reloads settled", async () => {
    const n = reloadsLogged();
    await sleep(300);
    return n === reloadsLogged();
  });
  const n0 = reloadsLogged();
  t = performance.now();
  process.kill(pid, "SIGHUP");
  await waitFor("the unchanged reload", () => reloadsLogged() > n0, 60_000, 2);
  line("unchanged SIGHUP", performance.now() - t, await loopDelay());

  // RSS across reloads, each with one source changed.
  const rss: number[] = [rssMb(pid)];
  let worstDelay = 0;
  const tr = performance.now();
  for (let i = 0; i < RELOADS; i++) {
    config = structuredClone(config);
    config.policies[1]!.sources = [`10.251.${i >> 8}.${i & 255}`, ...config.policies[1]!.sources.slice(1)];
    const n = reloadsLogged();
    writeConfig(config);
    process.kill(pid, "SIGHUP");
    await waitFor(`reload ${i + 1}`, () => reloadsLogged() > n, 60_000, 5);
    rss.push(rssMb(pid));
    if (i % 10 === 9) worstDelay = Math.max(worstDelay, (await loopDelay()).maxMs);
  }
  const perReload = (performance.now() - tr) / Math.max(1, RELOADS);
  console.log(
    `  RSS across ${RELOADS} reloads (MB)                        start ${fmt(rss[0]!, 0)}  ` +
      `min ${fmt(Math.min(...rss), 0)}  max ${fmt(Math.max(...rss), 0)}  end ${fmt(rss.at(-1)!, 0)}` +
      `   (${fmt(perReload, 0)} ms per reload; loop delay max ${fmt(worstDelay, 0)} ms)`,
  );

  // Idle CPU over 10 s.
  await sleep(2000);
  const pids = await namespacePids();
  const ticks = () => pids.map((p) => ({ p, t: safeTicks(p) }));
  const a = ticks();
  const w0 = performance.now();
  await sleep(10_000);
  const b = ticks();
  const wall = (performance.now() - w0) / 1000;
  const pct = (d: number) => ((d / CLK_TCK / wall) * 100).toFixed(1);
  const self = b.find((x) => x.p === pid)!.t - a.find((x) => x.p === pid)!.t;
  const all = b.reduce((s, x, i) => s + x.t - a[i]!.t, 0);
  console.log(`  idle CPU: egressd ${pct(self)} % of a core; everything in its namespace ${pct(all)} %`);

  const after = await resets();
  console.log(
    `  resets at the ToR after start: BGP sessions dropped ${after.bgpDropped - before.bgpDropped}, ` +
      `BFD down ${after.bfdDown - before.bfdDown}   (since start: ${after.bgpDropped}, ${after.bfdDown})`,
  );
  const warn = logLines().filter((l) => /"level":"(warn|error|fatal)"/.test(l));
  const byMsg = new Map<string, number>();
  for (const w of warn) {
    const msg = /"msg":"([^"]*)"/.exec(w)?.[1] ?? w.slice(0, 80);
    byMsg.set(msg, (byMsg.get(msg) ?? 0) + 1);
  }
  console.log(`  warnings and errors logged by egressd: ${warn.length}`);
  for (const [msg, n] of [...byMsg].sort((a, b) => b[1] - a[1]).slice(0, 8)) console.log(`    ${n} x ${msg}`);
}

function safeTicks(p: number): number {
  try {
    return cpuTicks(p);
  } catch {
    return 0;
  }
}

try {
  await main();
} finally {
  if (pid !== undefined) {
    try {
      process.kill(pid, "SIGKILL");
    } catch {
      // gone already
    }
  }
  await sb.cleanup();
  frr?.cleanup();
  rmSync(dir, { recursive: true, force: true });
}
