// Benchmark: does the audit trail keep up with new connections, and what
// does it cost? egressd runs in the gateway namespace of the data-plane
// topology (pod -- gw -- srv) with an audit section (JSON lines, and IPFIX to
// Debian's nfcapd), and short TCP connections from the pod go through it at
// each rate. Printed per rate: connections made, connections the kernel NATed
// (the policy's nft counter), start records written, events lost (overruns),
// and egressd's CPU; then every connection's end, and what nfdump read back.
// The same run repeats it with egressd without an audit section (the
// baseline) and prints the CPU the trail adds.
//   node dist/bench/audit.js [--rates 1000,10000] [--seconds 5]
import { NODE_ENV, NODE_FLAGS } from "../daemon/node-flags.js";
import { mkdtempSync, openSync, readFileSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { isRunning, run, spawnDetached, tryRun } from "../lib/exec.js";
import { statFields } from "../lib/proc-file.js";
import { buildTopology } from "../test/helpers/dataplane-topology.js";
import type { Sandbox } from "../test/helpers/netns.js";
import { machineTicks, runGenerator, startSink, waitReady } from "./conn-load.js";
import { benchSandbox } from "./nat-lib.js";

const { values: opt } = parseArgs({
  options: { rates: { type: "string", default: "1000,10000" }, seconds: { type: "string", default: "5" } },
});
const RATES = opt.rates!.split(",").filter(Boolean).map(Number);
const SECONDS = Number(opt.seconds);
const CLI = fileURLToPath(new URL("../daemon/cli.js", import.meta.url));
// Sixteen pod addresses: a client's ephemeral ports to one server port run out near 28k per address.
const SOURCES = Array.from({ length: 16 }, (_, i) => `10.244.1.${20 + i}`);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** utime + stime of a process and all its threads, in ticks (1/100 s); 0 when it is gone. */
function ticksOf(pid: number): number {
  try {
    const rest = statFields(readFileSync(`/proc/${pid}/stat`, "utf8"));
    return Number(rest[11]) + Number(rest[12]);
  } catch {
    return 0;
  }
}

/** egressd's CPU with its helpers' (egressd-ctevents, egressd-icmp, ...: its children), in ticks. */
function cpuTicks(pid: number): number {
  let children: number[] = [];
  try {
    children = readFileSync(`/proc/${pid}/task/${pid}/children`, "utf8")
      .split(/\s+/)
      .filter(Boolean)
      .map(Number);
  } catch {
    // gone
  }
  return ticksOf(pid) + children.reduce((n, c) => n + ticksOf(c), 0);
}

interface Row {
  rate: number;
  made: number;
  failed: number;
  codes: Record<string, number>;
  natted: number;
  starts: number;
  egressdPct: number;
  machinePct: number;
}

async function natted(s: Sandbox): Promise<number> {
  const r = await s.tryExec("gw", ["/usr/sbin/nft", "-j", "list", "counters", "table", "inet", "egressd"]);
  const doc = JSON.parse(r.stdout || '{"nftables":[]}') as {
    nftables: { counter?: { name: string; packets: number } }[];
  };
  return doc.nftables
    .map((i) => i.counter)
    .filter((c) => c?.name.startsWith("conns_"))
    .reduce((n, c) => n + c!.packets, 0);
}

const metric = async (s: Sandbox, name: string): Promise<number> => {
  const r = await s.tryExec("gw", ["curl", "-sf", "http://127.0.0.1:9469/metrics"]);
  const m = new RegExp(`^${name}(?:\\{[^}]*\\})? (\\S+)$`, "m").exec(r.stdout);
  return m ? Number(m[1]) : 0;
};

async function mode(
  withAudit: boolean,
): Promise<{ rows: Row[]; ends?: number; nfdump?: number; overruns?: number; written?: number }> {
  const s = benchSandbox(withAudit ? "aa" : "ab");
  const dir = mkdtempSync(join(tmpdir(), "egressd-bench-audit-"));
  try {
    await buildTopology(s, { ipv6: false });
    await s.exec("gw", ["sysctl", "-qw", "net.netfilter.nf_conntrack_tcp_timeout_time_wait=1"]);
    await s.sh("pod", SOURCES.map((a) => `ip addr add ${a}/24 dev p0`).join("\n"));
    const trail = join(dir, "audit.jsonl");
    const flows = join(dir, "flows");
    await run(["mkdir", "-p", flows]);
    const nfcapd = withAudit
      ? // A collector's socket buffer of 16 MB: over UDP, a collector that falls behind loses messages
        // (the default buffer lost 2% here, with both cores busy); the sequence numbers tell it.
        spawnDetached(
          ["nfcapd", "-w", flows, "-p", "4739", "-b", "127.0.0.1", "-t", "3600", "-B", String(16 << 20)],
          {
            netns: s.ns("gw"),
          },
        )
      : undefined;
    writeFileSync(
      join(dir, "egressd.yaml"),
      `gateway: { name: gw-bench, site: a }
egressIPs: [{ address: 192.0.2.11, interface: lo }]
uplinks: [{ name: u1, interface: u1, nextHop: 100.64.1.2 }]
policies:
  - { name: web, sources: [10.244.1.0/24], destinations: [203.0.113.0/24], egressIP: 192.0.2.11, uplink: u1 }
${withAudit ? `audit: { file: ${trail}, ipfix: { collector: 127.0.0.1 } }\n` : ""}`,
    );
    const pid = spawnDetached(
      ["node", ...NODE_FLAGS, CLI, "run", "-c", join(dir, "egressd.yaml"), "--run-dir", dir],
      { netns: s.ns("gw"), logFile: openSync(join(dir, "egressd.log"), "a"), env: { ...NODE_ENV } },
    );
    const sink = await startSink(s.ns("srv"));
    const starts = () =>
      withAudit
        ? (readFileSync(trail, { encoding: "utf8", flag: "a+" }).match(/"event":"start"/g) ?? []).length
        : 0;
    try {
      await waitReady(s);
      await sleep(1000);
      const rows: Row[] = [];
      for (const rate of RATES) {
        const n0 = await natted(s);
        const s0 = starts();
        const e0 = cpuTicks(pid);
        const m0 = machineTicks();
        const t0 = performance.now();
        // The kernel removes expired entries (and reports their ends) when its collector
        // scans, which on an idle table can be a minute away; a listing every 200 ms
        // removes them as they expire, as a busy table's scans do.
        let listing = true;
        const lister = (async () => {
          while (listing) {
            await s.tryExec("gw", ["conntrack", "-L", "-p", "tcp"]);
            await sleep(200);
          }
        })();
        const out = await runGenerator(s.ns("pod"), rate, SECONDS, SOURCES);
        // The records of the last connections are written once egressd has read their events.
        await sleep(1000);
        listing = false;
        await lister;
        const secs = (performance.now() - t0) / 1000;
        const e1 = cpuTicks(pid);
        const m1 = machineTicks();
        rows.push({
          rate,
          made: out.ok,
          failed: out.failed,
          codes: out.codes,
          natted: (await natted(s)) - n0,
          starts: starts() - s0,
          egressdPct: ((e1 - e0) / 100 / secs) * 100,
          machinePct: ((m1.busy - m0.busy) / (m1.total - m0.total)) * 100,
        });
      }
      if (!withAudit) return { rows };
      // Every connection ends within a second of its close (TIME_WAIT is 1 s here); a listing
      // makes the kernel remove the expired entries now rather than at its next scan.
      const total = rows.reduce((n, r) => n + r.natted, 0);
      let ends = 0;
      for (let i = 0; i < 60 && ends < total; i++) {
        await s.tryExec("gw", ["conntrack", "-L", "-p", "tcp"]);
        await sleep(500);
        ends = (readFileSync(trail, "utf8").match(/"event":"end"/g) ?? []).length;
      }
      const overruns = await metric(s, "egressd_audit_overruns_total");
      process.kill(pid, "SIGTERM");
      for (let i = 0; i < 300 && isRunning(pid); i++) await sleep(100);
      process.kill(nfcapd!, "SIGTERM");
      for (let i = 0; i < 100 && isRunning(nfcapd!); i++) await sleep(100);
      // egressd's stop removes its table: connections still open end then, in both outputs.
      const written = (readFileSync(trail, "utf8").match(/"event":"(start|end)"/g) ?? []).length;
      let nfdump = 0;
      for (const f of readdirSync(flows).filter((x) => /^nfcapd\.\d+$/.test(x))) {
        const { stdout } = await run(["nfdump", "-q", "-r", join(flows, f), "-o", "fmt:%nevt"], {
          timeoutMs: 120_000,
        });
        nfdump += stdout.split("\n").filter((l) => l.trim()).length;
      }
      return { rows, ends, nfdump, overruns, written };
    } finally {
      sink.kill("SIGKILL");
      if (isRunning(pid)) process.kill(pid, "SIGKILL");
      if (nfcapd !== undefined && isRunning(nfcapd)) process.kill(nfcapd, "SIGKILL");
      await tryRun(["pkill", "-KILL", "-f", dir]);
    }
  } finally {
    await s.cleanup();
    rmSync(dir, { recursive: true, force: true });
  }
}

const audit = await mode(true);
const base = await mode(false);
const codes = (r: Row) =>
  r.failed
    ? ` (${Object.entries(r.codes)
        .map(([k, v]) => `${k} ${v}`)
        .join(", ")})`
    : "";
console.log(
  `audit trail: short TCP connections from 16 pod addresses for ${SECONDS} s at each rate (2 cores)`,
);
for (const [i, r] of audit.rows.entries()) {
  const b = base.rows[i]!;
  console.log(`  at ${r.rate}/s`);
  console.log(
    `    with the trail: ${r.made} made, ${r.failed} failed${codes(r)}; the kernel NATed ${r.natted}; ${r.starts} start records; ` +
      `egressd and its helpers ${r.egressdPct.toFixed(1)}% of a core, machine ${r.machinePct.toFixed(1)}%`,
  );
  console.log(
    `    without:        ${b.made} made, ${b.failed} failed${codes(b)}; the kernel NATed ${b.natted}; ` +
      `egressd ${b.egressdPct.toFixed(1)}% of a core, machine ${b.machinePct.toFixed(1)}%`,
  );
  const added = r.egressdPct - b.egressdPct;
  console.log(
    `    the trail adds ${added.toFixed(1)} points of a core to egressd: ${(((added / 100) * 1e6) / Math.max(1, r.natted / SECONDS)).toFixed(1)} µs per connection`,
  );
}
const natTotal = audit.rows.reduce((n, r) => n + r.natted, 0);
const startTotal = audit.rows.reduce((n, r) => n + r.starts, 0);
console.log(`  starts: ${startTotal} records for ${natTotal} connections the kernel NATed`);
console.log(`  ends:   ${audit.ends} records once every connection had expired`);
console.log(
  `  IPFIX:  ${audit.nfdump} records read back by nfdump (the trail has ${startTotal + audit.ends!})`,
);
console.log(`  events lost (overruns): ${audit.overruns}`);
