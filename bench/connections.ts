// Connections through a gateway failure, with connection sync and without.
//
// The two-dc lab, 64 long-lived TCP streams from pod-a (containerlab/
// conn-streams.ts), and the triggers of docs/connection-sync.md on DC A's
// gateway that carries most of them: frozen (power loss), egressd killed
// (kill -9), drained, all of DC A frozen; each followed by the gateway's
// return (failback). And "ecmp": on the lab with a third DC A gateway
// (containerlab/three-gateways.ts), gw-a3 leaves the ECMP group and joins it
// again, which moves flows between live gateways. For each: the fraction of connections that survive and
// the longest stall of any connection, median and worst over the trials.
// The same run measures the baseline, the same lab with connectionSync
// removed from the gateways' configs.
//
// Then the cost of sync: short connections from pod-a at each rate for a few
// seconds, conntrackd's CPU on both gateways and the whole machine's: with
// sync, conntrackd in the class egressd runs it in and in its own default
// real-time class (set by this bench); and in the baseline lab. Last, how
// many states a gateway restarted after that resyncs, and how fast.
//   node dist/bench/connections.js [--trials 10] [--connections 64]
//     [--triggers freeze,kill,drain,dc-a,ecmp|none] [--rates 1000,10000] [--seconds 3] [--no-baseline]
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import {
  ConnectionTrials,
  DC_A,
  POD_SOURCES,
  serving,
  standingBy,
  type Gateway,
  type Trigger,
  type TrialResult,
} from "../containerlab/connection-trials.js";
import { nodeProcesses } from "../containerlab/failover.js";
import { addThirdGateway } from "../containerlab/three-gateways.js";
import { Lab, sleep, waitFor } from "../containerlab/runner.js";
import { loadTopology, rebindCopies } from "../containerlab/topology.js";
import { tryRun } from "../lib/exec.js";
import { median } from "../lib/stats.js";
import { machineTicks, runGenerator, settle, startSink, tcpDrops } from "./conn-load.js";

const { values: opt } = parseArgs({
  options: {
    trials: { type: "string", default: "10" },
    connections: { type: "string", default: "64" },
    triggers: { type: "string", default: "freeze,kill,drain,dc-a,ecmp" },
    rates: { type: "string", default: "1000,10000" },
    seconds: { type: "string", default: "3" },
    "no-baseline": { type: "boolean", default: false },
  },
});
const TRIALS = Number(opt.trials);
const CONNECTIONS = Number(opt.connections);
const TRIGGERS = opt.triggers!.split(",").filter((t) => t && t !== "none") as Trigger[];
const RATES = opt.rates!.split(",").filter(Boolean).map(Number);
const SECONDS = Number(opt.seconds);
for (const t of TRIGGERS)
  if (!["freeze", "kill", "drain", "dc-a", "ecmp"].includes(t))
    throw new Error(`--triggers: unknown trigger ${t}`);
if (!(TRIALS >= 1 && CONNECTIONS >= 1 && SECONDS > 0))
  throw new Error("--trials, --connections, --seconds: positive numbers");

const TOPO = fileURLToPath(new URL("../../containerlab/two-dc/two-dc.clab.yml", import.meta.url));
const tmp = mkdtempSync(join(tmpdir(), "egressd-bench-connections-"));
const MODES = opt["no-baseline"] ? (["sync"] as const) : (["sync", "baseline"] as const);
type Mode = (typeof MODES)[number];

function makeLab(mode: Mode, third = false): Lab {
  const dir = mkdtempSync(join(tmp, `${mode}-`));
  const topo = third ? addThirdGateway(loadTopology(TOPO), dir) : loadTopology(TOPO);
  rebindCopies(topo, "/etc/egressd/egressd.yaml", dir, (text) => {
    // A shorter hold-down, so that a failback trial does not wait 3 s for it (the same in both modes).
    const t = text.replaceAll("holdDownMs: 3000", "holdDownMs: 1000");
    if (mode === "sync") return t;
    const cut = t.replace(/\n# Connections survive[\s\S]*?\nconnectionSync:[\s\S]*?\n\n/, "\n");
    if (t.includes("connectionSync:") && cut.includes("connectionSync:"))
      throw new Error("could not remove connectionSync from a gateway's config");
    return cut;
  });
  return new Lab(topo, `bcn${mode === "sync" ? "s" : "b"}${third ? 3 : 2}${process.pid % 10000}`, {
    quiet: true,
  });
}

interface TriggerRow {
  fail: TrialResult[];
  back: TrialResult[];
}

/** The resyncs a gateway's egressd logged (entries and ms), oldest first. */
function resyncs(lab: Lab, gateway: string): { entries: number; ms: number }[] {
  return readFileSync(lab.cmdLog(gateway), "utf8")
    .split("\n")
    .filter((l) => l.includes("connection state resynced"))
    .map((l) => JSON.parse(l) as { entries: number; ms: number })
    .map(({ entries, ms }) => ({ entries, ms }));
}

/** utime + stime of every conntrackd in DC A's gateways, in ticks. */
async function conntrackdTicks(lab: Lab): Promise<number> {
  let sum = 0;
  for (const g of DC_A)
    for (const { stat } of await nodeProcesses(lab, g, "conntrackd"))
      sum += Number(stat[11]) + Number(stat[12]);
  return sum;
}

/**
 * Puts every conntrackd of the lab's gateways in a scheduling class: "rr" is
 * conntrackd's own default (SCHED_RR, priority 99), which egressd's config
 * turns off (core/plan/sync.ts); "normal" is how egressd runs it. The
 * former is the baseline of that choice, measured in the same lab.
 */
async function conntrackdClass(
  lab: Lab,
  cls: SchedClass,
  gateways: readonly string[] = [...DC_A, "gw-b1"],
  /** Only those in this class now (policy 0 normal, 2 RR); all when undefined. */
  from?: SchedClass,
): Promise<void> {
  for (const g of gateways)
    for (const { pid, stat } of await nodeProcesses(lab, g, "conntrackd"))
      if (from === undefined || stat[38] === (from === "rr" ? "2" : "0"))
        await tryRun(["chrt", ...(cls === "rr" ? ["-r", "-p", "99"] : ["-o", "-p", "0"]), String(pid)]);
}

type SchedClass = "normal" | "rr";

interface CpuRow {
  rate: number;
  /** The scheduling class conntrackd ran in (sync only). */
  cls: SchedClass;
  achieved: number;
  failed: number;
  /** Why connects failed: errno name -> count. */
  codes: Record<string, number>;
  /** SYNs the pod sent again (a SYN or its answer lost on the way), and SYNs the server's accept queue dropped. */
  synRetrans: number;
  listenDrops: number;
  conntrackdPct: number;
  machinePct: number;
  /** The machine's busy % in the second before (settle). */
  quietPct: number;
}

async function cpuAt(lab: Lab, rate: number, cls: SchedClass = "normal"): Promise<CpuRow> {
  const sink = await startSink(lab.ns("server"));
  try {
    const quiet = await settle();
    const pod0 = await tcpDrops(lab.ns("pod-a"));
    const srv0 = await tcpDrops(lab.ns("server"));
    const m0 = machineTicks();
    const c0 = await conntrackdTicks(lab);
    const t0 = performance.now();
    const out = await runGenerator(lab.ns("pod-a"), rate, SECONDS, POD_SOURCES);
    const secs = (performance.now() - t0) / 1000;
    const c1 = await conntrackdTicks(lab);
    const m1 = machineTicks();
    const pod1 = await tcpDrops(lab.ns("pod-a"));
    const srv1 = await tcpDrops(lab.ns("server"));
    return {
      rate,
      cls,
      achieved: Math.round(out.ok / SECONDS),
      failed: out.failed,
      codes: out.codes,
      synRetrans: pod1.synRetrans - pod0.synRetrans,
      listenDrops: srv1.listenDrops - srv0.listenDrops,
      // ticks are 1/100 s; as % of one core over the measured wall time
      conntrackdPct: ((c1 - c0) / 100 / secs) * 100,
      machinePct: ((m1.busy - m0.busy) / (m1.total - m0.total)) * 100,
      quietPct: quiet,
    };
  } finally {
    sink.kill("SIGKILL");
  }
}

interface Resync {
  cls: SchedClass;
  entries: number;
  ms: number;
  /** Entries in gw-a2's table when gw-a1 was killed. */
  table: number;
  /** gw-a1's table when its resync was logged. */
  held: number;
  /**
   * gw-a2's table just after: entries of the load expire meanwhile (its
   * TIME_WAIT, 120 s, may end between the kill and the resync).
   */
  peerThen: number;
  /** gw-a1's table two seconds after that: states still arriving when the resync ended. */
  heldLater: number;
}

/**
 * gw-a1 killed, its table flushed, started again: what it resynced from
 * gw-a2, and how long it took. With "rr", the conntrackds of both are put in
 * the real-time class: gw-a2's before the kill, gw-a1's as soon as they appear.
 */
async function resyncOf(lab: Lab, cls: SchedClass): Promise<Resync> {
  /** The entries in a gateway's kernel table. */
  const entries = async (gateway: string) =>
    Number((await tryRun(["ip", "netns", "exec", lab.ns(gateway), "conntrack", "-C"])).stdout.trim());
  await conntrackdClass(lab, cls);
  const table = await entries("gw-a2");
  const pid = lab.cmdPid("gw-a1");
  if (pid !== undefined) await tryRun(["kill", "-KILL", String(pid)]);
  await sleep(500);
  await tryRun(["ip", "netns", "exec", lab.ns("gw-a1"), "conntrack", "-F"]);
  const seen = resyncs(lab, "gw-a1").length;
  await lab.startCmd("gw-a1");
  const r = await waitFor(
    "gw-a1's resync",
    async () => {
      if (cls === "rr") await conntrackdClass(lab, "rr", ["gw-a1"], "normal");
      return resyncs(lab, "gw-a1")[seen];
    },
    30_000,
  );
  // What gw-a1's table holds the moment the resync was logged, before it advertised anything.
  const held = await entries("gw-a1");
  const peerThen = await entries("gw-a2");
  await sleep(2000);
  const heldLater = await entries("gw-a1");
  await conntrackdClass(lab, "normal");
  for (const g of DC_A) await serving(lab, g, 60_000);
  return { cls, ...r, table, held, peerThen, heldLater };
}

/** `trials` of each trigger on a lab whose gateways serve; failed connections are replaced after a trial. */
async function runTriggers(
  lab: Lab,
  mode: Mode,
  triggers: Trigger[],
  rows: Map<Trigger, TriggerRow>,
  gateways: readonly Gateway[],
): Promise<void> {
  const trials = new ConnectionTrials(lab);
  try {
    await trials.start(CONNECTIONS);
    for (const trigger of triggers) {
      const row: TriggerRow = { fail: [], back: [] };
      rows.set(trigger, row);
      for (let i = 0; i < TRIALS; i++) {
        const g = trigger === "ecmp" ? "gw-a3" : await trials.busiest();
        // With sync, DC B's gateway holds DC A's connections before the site fails (as in a steady state).
        if (trigger === "dc-a" && mode === "sync") await standingBy(lab, 60_000);
        const { result, restore } = await trials.fail(trigger, g);
        // Broken ones are replaced before the return: it is measured on a full set (after a site
        // failure, on connections made through the other site).
        if (result.survived < result.before) await trials.reconnect();
        const back = await trials.failback(trigger, g, restore);
        row.fail.push(result);
        row.back.push(back);
        process.stderr.write(
          `${mode} ${trigger} ${i + 1}/${TRIALS} ${g}: ${result.survived}/${result.before} survived, stall ${result.maxStallMs} ms; back: ${back.survived}/${back.before}, stall ${back.maxStallMs} ms\n`,
        );
        if (back.survived < back.before) await trials.reconnect();
        for (const x of gateways) await serving(lab, x, 60_000);
      }
    }
  } finally {
    await trials.stop();
  }
}

async function runMode(mode: Mode) {
  const rows = new Map<Trigger, TriggerRow>();
  const cpu: CpuRow[] = [];
  const resync: Resync[] = [];
  const lab = makeLab(mode);
  await lab.down();
  try {
    process.stderr.write(`${mode}: bringing the lab up\n`);
    await lab.up();
    for (const g of DC_A) await serving(lab, g, 90_000);
    const two = TRIGGERS.filter((t) => t !== "ecmp");
    if (two.length) await runTriggers(lab, mode, two, rows, DC_A);
    for (const [i, rate] of RATES.entries()) {
      if (mode === "baseline") {
        cpu.push(await cpuAt(lab, rate));
        continue;
      }
      // Both classes at each rate, in turn, their order alternating from one rate to the next.
      for (const cls of i % 2 ? (["rr", "normal"] as const) : (["normal", "rr"] as const)) {
        await conntrackdClass(lab, cls);
        cpu.push(await cpuAt(lab, rate, cls));
      }
      await conntrackdClass(lab, "normal");
    }
    // A gateway restarted with the table those connections left (TIME_WAIT states included),
    // twice: conntrackd as egressd runs it, then in its own real-time default on both sides.
    if (mode === "sync") for (const cls of ["normal", "rr"] as const) resync.push(await resyncOf(lab, cls));
  } finally {
    await lab.down();
  }
  if (TRIGGERS.includes("ecmp")) {
    const lab3 = makeLab(mode, true);
    await lab3.down();
    try {
      process.stderr.write(`${mode}: bringing the lab with gw-a3 up\n`);
      await lab3.up();
      const all = [...DC_A, "gw-a3"] as const;
      for (const g of all) await serving(lab3, g, 90_000);
      await runTriggers(lab3, mode, ["ecmp"], rows, all);
    } finally {
      await lab3.down();
    }
  }
  return { rows, cpu, resync };
}

const pct = (ok: number, all: number) => (all === 0 ? "-" : `${((ok / all) * 100).toFixed(0)}%`);
function describe(results: TrialResult[]): string {
  const survived = results.map((r) => r.survived / Math.max(1, r.before));
  const stalls = results.map((r) => r.maxStallMs);
  const all = results.reduce((n, r) => n + r.before, 0);
  const ok = results.reduce((n, r) => n + r.survived, 0);
  return `${pct(ok, all).padStart(5)} survived (worst trial ${pct(Math.min(...survived) * 100, 100)}), longest stall median ${String(median(stalls)).padStart(4)} ms, worst ${String(Math.max(...stalls)).padStart(5)} ms`;
}

try {
  const out = new Map<Mode, Awaited<ReturnType<typeof runMode>>>();
  for (const mode of MODES) out.set(mode, await runMode(mode));
  console.log(
    `\n${CONNECTIONS} long-lived TCP connections from pod-a through DC A's gateways, ${TRIALS} trials per trigger, on the gateway carrying most of them:`,
  );
  for (const trigger of TRIGGERS) {
    for (const phase of ["fail", "back"] as const) {
      const label =
        trigger === "ecmp"
          ? phase === "fail"
            ? "ecmp: gw-a3 leaves the ECMP group (drained)"
            : "ecmp: gw-a3 joins it again"
          : phase === "fail"
            ? trigger
            : `back after ${trigger}`;
      console.log(`  ${label}`);
      for (const mode of MODES) {
        const row = out.get(mode)!.rows.get(trigger);
        if (row) console.log(`    ${mode === "sync" ? "with sync " : "without   "} ${describe(row[phase])}`);
      }
    }
  }
  console.log(`\nthe cost of sync: short connections from pod-a for ${SECONDS} s at each rate (2 cores)`);
  const who = (mode: Mode, c: CpuRow) =>
    mode === "baseline"
      ? "without sync            "
      : c.cls === "rr"
        ? "with sync, conntrackd RR"
        : "with sync               ";
  for (const mode of MODES) {
    for (const c of out.get(mode)!.cpu) {
      console.log(
        `  ${who(mode, c)} asked ${String(c.rate).padStart(6)}/s, made ${String(c.achieved).padStart(6)}/s (${c.failed} failed${
          c.failed
            ? `: ${Object.entries(c.codes)
                .map(([k, n]) => `${k} ${n}`)
                .join(", ")}`
            : ""
        }): conntrackd ${c.conntrackdPct.toFixed(1)}% of a core (DC A's gateways), machine ${c.machinePct.toFixed(1)}% busy (${c.quietPct.toFixed(0)}% before); SYNs sent again ${c.synRetrans}, dropped by the server's accept queue ${c.listenDrops}`,
      );
    }
  }
  console.log(
    '  ("conntrackd RR": set by this bench to conntrackd\'s own default, SCHED_RR at priority 99; egressd runs it in the normal class)',
  );
  // Per connection and gateway: conntrackd's CPU over DC A's two gateways, per connection made.
  const perConn = (c: CpuRow) => ((c.conntrackdPct / 100) * 1e6) / Math.max(1, c.achieved) / 2;
  const syncRows = out.get("sync")!.cpu;
  const base = MODES.length === 2 ? out.get("baseline")!.cpu : [];
  for (const rate of RATES) {
    const n = syncRows.find((c) => c.rate === rate && c.cls === "normal")!;
    const rr = syncRows.find((c) => c.rate === rate && c.cls === "rr")!;
    const b = base.find((c) => c.rate === rate);
    const adds = (c: CpuRow) =>
      b ? `${(c.machinePct - b.machinePct).toFixed(1)} points of machine CPU` : "-";
    console.log(
      `  at ${rate}/s: conntrackd ${perConn(n).toFixed(1)} µs per connection per gateway (RR: ${perConn(rr).toFixed(1)} µs, ${(perConn(rr) / Math.max(0.1, perConn(n))).toFixed(2)}x as much); sync adds ${adds(n)} (RR: ${adds(rr)})`,
    );
  }
  for (const r of out.get("sync")!.resync)
    console.log(
      `${r.cls === "normal" ? "\n" : ""}resync${r.cls === "rr" ? ", conntrackd RR" : ""}: gw-a1 killed, its table flushed, restarted: ${r.entries} states from gw-a2 (whose table held ${r.table}) in ${r.ms} ms (${Math.round((r.entries / Math.max(1, r.ms)) * 1000)}/s), before it advertised anything; gw-a1's table then held ${r.held} (gw-a2's ${r.peerThen}), ${r.heldLater} two seconds later`,
    );
} finally {
  rmSync(tmp, { recursive: true, force: true });
}
