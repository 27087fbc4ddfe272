// Short TCP connections at a steady rate, for the benchmarks that measure a
// cost per new connection (bench/connections.ts, bench/audit.ts): a generator
// script run with node -e inside the client's namespace, and the machine's CPU
// from /proc/stat.
import { spawn, type ChildProcess } from "node:child_process";
import { readFileSync } from "node:fs";
import { run, tryRun } from "../lib/exec.js";
import type { Sandbox } from "../test/helpers/netns.js";

/**
 * node -e GENERATOR HOST PORT RATE SECONDS SOURCES: connects RATE times a
 * second for SECONDS from the comma-separated SOURCES in turn, closes each
 * once connected, and prints {started, ok, failed, codes} a second after.
 */
export const GENERATOR = `
const net = require("net");
const [host, port, rate, secs, srcs] = process.argv.slice(1);
const sources = srcs.split(",");
let started = 0, ok = 0, failed = 0;
const codes = {};
const t0 = Date.now();
const end = t0 + Number(secs) * 1000;
const tick = setInterval(() => {
  const now = Date.now();
  const due = Math.min(now, end) - t0;
  while (started < (due / 1000) * Number(rate)) {
    const c = net.connect({ host, port: Number(port), localAddress: sources[started % sources.length] });
    started++;
    c.once("connect", () => { ok++; c.end(); });
    c.once("error", (e) => { failed++; codes[e.code] = (codes[e.code] || 0) + 1; });
  }
  if (now >= end) {
    clearInterval(tick);
    setTimeout(() => { process.stdout.write(JSON.stringify({ started, ok, failed, codes }) + "\\n"); process.exit(0); }, 1000);
  }
}, 2);`;

/** Accept queues of the sink: deep enough that a busy machine does not drop its SYNs (see startSink). */
const BACKLOG = 65535;

/**
 * Starts the sink that answers the generator (accepts and closes) on
 * 203.0.113.10:9001 in namespace `ns`. Its accept queue is deep: with the
 * default (node's 511) a machine saturated by the gateways, the generator
 * and the sink overflowed it (7663 SYNs dropped in 5 s at 10k/s with sync),
 * and each dropped SYN cost its connection a one-second retransmission, so
 * the generator's connections piled up and the run measured the sink.
 */
export async function startSink(ns: string): Promise<ChildProcess> {
  await run([
    "ip",
    "netns",
    "exec",
    ns,
    "sysctl",
    "-qw",
    `net.core.somaxconn=${BACKLOG}`,
    `net.ipv4.tcp_max_syn_backlog=${BACKLOG}`,
  ]);
  const sink = `require("net").createServer((s) => { s.on("error", () => {}); s.end(); }).listen({ port: 9001, host: "203.0.113.10", backlog: ${BACKLOG} });`;
  return spawn("ip", ["netns", "exec", ns, "prlimit", `--nofile=${FD_LIMIT}`, process.execPath, "-e", sink], {
    stdio: "ignore",
  });
}

/** TCP's counters of namespace `ns` that tell where connects were lost (nstat, absolute values). */
export async function tcpDrops(ns: string): Promise<{ synRetrans: number; listenDrops: number }> {
  const r = await tryRun(["ip", "netns", "exec", ns, "nstat", "-saz", "--json"]);
  const j = JSON.parse(r.stdout || "{}") as { kernel?: Record<string, number> };
  const k = j.kernel ?? {};
  return { synRetrans: k.TcpExtTCPSynRetrans ?? 0, listenDrops: k.TcpExtListenDrops ?? 0 };
}

/** This process's hard limit on open files: the generator and the sink raise their soft limit to it. */
export const FD_LIMIT =
  /^Max open files\s+\d+\s+(\d+)/m.exec(readFileSync("/proc/self/limits", "utf8"))?.[1] ?? "4096";

/** Jiffies of the machine (busy, total) from /proc/stat. */
export function machineTicks(): { busy: number; total: number } {
  const f = readFileSync("/proc/stat", "utf8").split("\n")[0]!.split(/\s+/).slice(1).map(Number);
  const total = f.reduce((a, b) => a + b, 0);
  return { busy: total - f[3]! - f[4]!, total };
}

/**
 * Waits until the machine is quiet: a second in which it was under `busyPct`
 * busy, or `maxMs` at most (a lab just brought up is still starting its
 * daemons, and the first rate measured would carry that). Returns the last
 * second's busy %.
 */
export async function settle(maxMs = 30_000, busyPct = 40): Promise<number> {
  const end = performance.now() + maxMs;
  for (;;) {
    const a = machineTicks();
    await new Promise((r) => setTimeout(r, 1000));
    const b = machineTicks();
    const pct = ((b.busy - a.busy) / Math.max(1, b.total - a.total)) * 100;
    if (pct < busyPct || performance.now() >= end) return pct;
  }
}

export interface GeneratorResult {
  ok: number;
  failed: number;
  /** Why connects failed: errno name -> count. */
  codes: Record<string, number>;
}

/**
 * Runs the generator in network namespace `ns` against 203.0.113.10:9001
 * (where the benchmarks' sinks listen). Connections in flight need
 * descriptors: at 10k/s on a loaded machine, over 1024 (the default) were
 * open at once, and the generator's own EMFILE counted as failures; so it
 * runs with its limit raised to the hard limit.
 */
export async function runGenerator(
  ns: string,
  rate: number,
  seconds: number,
  sources: readonly string[],
): Promise<GeneratorResult> {
  const argv = ["prlimit", `--nofile=${FD_LIMIT}`, process.execPath, "-e", GENERATOR];
  const r = await tryRun(
    [
      "ip",
      "netns",
      "exec",
      ns,
      ...argv,
      "203.0.113.10",
      "9001",
      String(rate),
      String(seconds),
      sources.join(","),
    ],
    { timeoutMs: (seconds + 30) * 1000 },
  );
  const out = JSON.parse(r.stdout.trim().split("\n").pop() ?? "{}") as Partial<GeneratorResult>;
  return { ok: out.ok ?? 0, failed: out.failed ?? 0, codes: out.codes ?? {} };
}

/** Waits for egressd in `node`'s namespace to answer /readyz on its default listener (30 s at most). */
export async function waitReady(s: Sandbox, node = "gw"): Promise<void> {
  for (let i = 0; i < 150; i++) {
    if ((await s.tryExec(node, ["curl", "-sf", "http://127.0.0.1:9469/readyz"])).code === 0) return;
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error("egressd did not become ready");
}
