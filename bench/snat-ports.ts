// Benchmark: SNAT port exhaustion. egressd runs in the gateway namespace of
// the data-plane topology (pod -- gw -- srv) with an audit section and a
// SNAT port range of --ports ports (dataplane.snatPorts), and a pod opens
// connections to one server address and port, in batches, holding them all
// open, until new ones fail. After each batch it reads egressd's port metrics.
// Printed: a row per batch (connections open, failed, ports in use as the
// metric says, the usage ratio, whether EgressdSnatPortsNearExhaustion's
// condition holds), where that condition first held, the most connections one
// egress IP carried to the destination, and what happened to new connections
// at the limit (and the kernel's conntrack statistics).
//   node dist/bench/snat-ports.js [--ports 1000] [--batch 50] [--mode random|fully-random|persistent|kernel]
import { NODE_ENV, NODE_FLAGS } from "../daemon/node-flags.js";
import { spawn } from "node:child_process";
import { mkdtempSync, openSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { isRunning, spawnDetached, tryRun } from "../lib/exec.js";
import { buildTopology } from "../test/helpers/dataplane-topology.js";
import type { Sandbox } from "../test/helpers/netns.js";
import { FD_LIMIT, waitReady } from "./conn-load.js";
import { benchSandbox } from "./nat-lib.js";

const { values: opt } = parseArgs({
  options: {
    ports: { type: "string", default: "1000" },
    batch: { type: "string", default: "50" },
    mode: { type: "string", default: "kernel" },
  },
});
const PORTS = Number(opt.ports);
const BATCH = Number(opt.batch);
const MODE = opt.mode!;
const LO = 40000;
const CLI = fileURLToPath(new URL("../daemon/cli.js", import.meta.url));
const THRESHOLD = 0.8; // monitoring/alerts.yml: EgressdSnatPortsNearExhaustion
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

// The server holds every connection open.
const SERVER = `require("net").createServer((s) => { s.on("error", () => {}); }).listen(9100, "203.0.113.10");`;
// On each line of input: BATCH more connections (a 2 s connect timeout each), kept open; then a line of totals.
const CLIENT = `
const net = require("net");
const [batch] = process.argv.slice(1);
let open = 0, failed = 0;
const keep = [];
require("readline").createInterface({ input: process.stdin }).on("line", async () => {
  await Promise.all(Array.from({ length: Number(batch) }, () => new Promise((done) => {
    const c = net.connect({ host: "203.0.113.10", port: 9100, localAddress: "10.244.1.10" });
    c.setTimeout(2000);
    c.once("connect", () => { open++; c.setTimeout(0); keep.push(c); done(); });
    c.once("timeout", () => { failed++; c.destroy(); done(); });
    c.once("error", () => { failed++; done(); });
  })));
  process.stdout.write(JSON.stringify({ open, failed }) + "\\n");
});`;

async function metric(s: Sandbox, name: string): Promise<number> {
  const r = await s.tryExec("gw", ["curl", "-sf", "http://127.0.0.1:9469/metrics"]);
  let max = 0;
  for (const m of r.stdout.matchAll(new RegExp(`^${name}(?:\\{[^}]*\\})? (\\S+)$`, "gm")))
    max = Math.max(max, Number(m[1]));
  return max;
}

/** The kernel's conntrack statistics summed over CPUs: drop, insert_failed, ... */
async function ctStats(s: Sandbox): Promise<Record<string, number>> {
  const r = await s.tryExec("gw", ["conntrack", "-S"]);
  const out: Record<string, number> = {};
  for (const m of r.stdout.matchAll(/(\w+)=(\d+)/g))
    if (m[1] !== "cpu") out[m[1]!] = (out[m[1]!] ?? 0) + Number(m[2]);
  return out;
}

const s = benchSandbox("sp");
const dir = mkdtempSync(join(tmpdir(), "egressd-bench-ports-"));
try {
  await buildTopology(s, { ipv6: false });
  writeFileSync(
    join(dir, "egressd.yaml"),
    `gateway: { name: gw-ports, site: a }
egressIPs: [{ address: 192.0.2.11, interface: lo }]
uplinks: [{ name: u1, interface: u1, nextHop: 100.64.1.2 }]
policies:
  - { name: web, sources: [10.244.1.0/24], destinations: [203.0.113.0/24], egressIP: 192.0.2.11, uplink: u1 }
dataplane: { snatPorts: "${LO}-${LO + PORTS - 1}"${MODE === "kernel" ? "" : `, snatMode: ${MODE}`} }
audit: { file: ${join(dir, "audit.jsonl")} }
`,
  );
  const pid = spawnDetached(
    ["node", ...NODE_FLAGS, CLI, "run", "-c", join(dir, "egressd.yaml"), "--run-dir", dir],
    {
      netns: s.ns("gw"),
      logFile: openSync(join(dir, "egressd.log"), "a"),
      env: { ...NODE_ENV },
    },
  );
  const server = spawn(
    "ip",
    ["netns", "exec", s.ns("srv"), "prlimit", `--nofile=${FD_LIMIT}`, process.execPath, "-e", SERVER],
    {
      stdio: "ignore",
    },
  );
  const client = spawn(
    "ip",
    [
      "netns",
      "exec",
      s.ns("pod"),
      "prlimit",
      `--nofile=${FD_LIMIT}`,
      process.execPath,
      "-e",
      CLIENT,
      String(BATCH),
    ],
    { stdio: ["pipe", "pipe", "inherit"] },
  );
  const answers = createInterface({ input: client.stdout })[Symbol.asyncIterator]();
  try {
    await waitReady(s);
    await sleep(500);
    const before = await ctStats(s);
    console.log(
      `SNAT ports: one egress IP (192.0.2.11), one destination (203.0.113.10:9100), a range of ${PORTS} ports (${LO}-${LO + PORTS - 1}), mode ${MODE}; batches of ${BATCH} held open`,
    );
    console.log("  open  failed  in use (metric)  ratio   alert condition (> 0.8)");
    let alertAt: { open: number; ratio: number } | undefined;
    let firstFailAt: number | undefined;
    let last = { open: 0, failed: 0 };
    let failedBatches = 0;
    while (failedBatches < 3 && last.open < PORTS * 1.5) {
      client.stdin.write("\n");
      const line = await answers.next();
      if (line.done) throw new Error("the client ended");
      const now = JSON.parse(line.value) as { open: number; failed: number };
      await sleep(300); // the audit trail reads the connections' events
      const inUse = await metric(s, "egressd_snat_ports_in_use");
      const ratio = await metric(s, "egressd_snat_port_usage_ratio");
      const fails = now.failed - last.failed;
      if (fails > 0 && firstFailAt === undefined) firstFailAt = last.open;
      if (fails >= BATCH / 2) failedBatches++;
      if (ratio > THRESHOLD && !alertAt) alertAt = { open: now.open, ratio };
      console.log(
        `  ${String(now.open).padStart(4)}  ${String(now.failed).padStart(6)}  ${String(inUse).padStart(15)}  ${ratio.toFixed(3)}   ${ratio > THRESHOLD ? "holds" : ""}`,
      );
      last = now;
    }
    const after = await ctStats(s);
    const delta = Object.entries(after)
      .map(([k, v]) => [k, v - (before[k] ?? 0)] as const)
      .filter(([, d]) => d !== 0)
      .map(([k, d]) => `${k} +${d}`)
      .join(", ");
    console.log(
      alertAt
        ? `  the alert's condition first held at ${alertAt.open} connections open (ratio ${alertAt.ratio.toFixed(3)}); it fires after holding for 1 minute`
        : "  the alert's condition never held",
    );
    console.log(
      `  the first connection failed after ${firstFailAt ?? "none"} were open; at most ${last.open} were open at once (${((last.open / PORTS) * 100).toFixed(1)}% of the range)`,
    );
    console.log(
      `  at the limit, a new connection's first packet is dropped at the gateway (no port is free); the client's connect times out. conntrack -S on the gateway: ${delta || "no change"}`,
    );
  } finally {
    client.kill("SIGKILL");
    server.kill("SIGKILL");
    if (isRunning(pid)) process.kill(pid, "SIGTERM");
    for (let i = 0; i < 50 && isRunning(pid); i++) await sleep(100);
    if (isRunning(pid)) process.kill(pid, "SIGKILL");
    await tryRun(["pkill", "-KILL", "-f", dir]);
  }
} finally {
  await s.cleanup();
  rmSync(dir, { recursive: true, force: true });
}
