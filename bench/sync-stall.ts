// Benchmark: what a stalled conntrackd loses, and what brings it back.
//
// Two gateways in namespaces of their own: gw1 SNATs a pod's connections to a
// server, and gw2 is its sync peer. Each runs conntrackd with the config
// egressd writes (conntrackdConfig) and paced as egressd runs it
// (pacedCommand), over a veth of their own (test/helpers/sync-pair.ts). Short
// connections go through gw1 at a steady rate, and gw1's conntrackd is
// stopped (SIGSTOP) for a while in the middle of them, as a starved or
// throttled process would be. Printed: the connections made, the entries
// gw1 holds for them, and the entries gw2 holds, right after the load and
// every 5 s until the overrun resync has run (conntrackd's 30 s), and what
// the two conntrackds spent after the load (that read, mostly). The same
// run repeats it with reliable netlink events on, the config before
// e8e4d0b, as the baseline.
//   node dist/bench/sync-stall.js [--rate 6000] [--seconds 5] [--stop-ms 2000] [--wait 40]
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import type { Sandbox } from "../test/helpers/netns.js";
import { pacedCommand } from "../daemon/connection-sync.js";
import { runGenerator, startSink } from "./conn-load.js";
import { benchSandbox } from "./nat-lib.js";
import { runtimeMs } from "./probe-lab.js";
import { buildPair, pairEntries, SOURCES, startPair } from "../test/helpers/sync-pair.js";

const { values: opt } = parseArgs({
  options: {
    rate: { type: "string", default: "6000" },
    seconds: { type: "string", default: "5" },
    "stop-ms": { type: "string", default: "2000" },
    wait: { type: "string", default: "40" },
  },
});
const RATE = Number(opt.rate);
const SECONDS = Number(opt.seconds);
const STOP_MS = Number(opt["stop-ms"]);
const WAIT_S = Number(opt.wait);
if (!(RATE > 0 && SECONDS > 0 && STOP_MS >= 0 && WAIT_S >= 0))
  throw new Error("--rate, --seconds: positive numbers; --stop-ms, --wait: 0 or more");
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface Trial {
  label: string;
  made: number;
  held: number;
  /** gw2's entries right after the load, then every 5 s. */
  peer: number[];
  /** CPU of gw1's and gw2's conntrackd after the load (the overrun resync, if any), ms. */
  afterMs: [number, number];
  /** gw2's conntrackd at the end: injections the kernel refused, sync messages lost. */
  refused: number;
  lost: number;
}

async function trial(s: Sandbox, dir: string, label: string, reliable: boolean): Promise<Trial> {
  const edit = (text: string) => {
    if (!reliable) return text;
    const out = text.replace(
      "NetlinkEventsReliable Off\n  NetlinkOverrunResync On",
      "NetlinkEventsReliable On",
    );
    if (out === text) throw new Error("the config no longer has the lines this bench replaces");
    return out;
  };
  const daemons = await startPair(s, dir, { edit, front: pacedCommand() });
  try {
    await sleep(2000);
    const sender = daemons[0]!.pid;
    const load = runGenerator(s.ns("pod"), RATE, SECONDS, SOURCES);
    if (STOP_MS > 0) {
      await sleep(500);
      process.kill(sender, "SIGSTOP");
      await sleep(STOP_MS);
      process.kill(sender, "SIGCONT");
    }
    const made = (await load).ok;
    const pids = daemons.map((d) => d.pid);
    const cpu0 = pids.map(runtimeMs);
    const held = await pairEntries(s, "gw1");
    const peer: number[] = [];
    for (let t = 0; t <= WAIT_S; t += 5) {
      peer.push(await pairEntries(s, "gw2"));
      if (t < WAIT_S) await sleep(5000);
    }
    const cpu1 = pids.map(runtimeMs);
    const stats = await daemons[1]!.stats();
    return {
      label,
      made,
      held,
      peer,
      afterMs: [Math.round(cpu1[0]! - cpu0[0]!), Math.round(cpu1[1]! - cpu0[1]!)],
      refused: stats.injected.failed,
      lost: stats.lost,
    };
  } finally {
    for (const d of daemons) d.child.kill("SIGKILL");
    await sleep(300);
  }
}

const s = benchSandbox("ss");
const dir = mkdtempSync(join(tmpdir(), "egressd-bench-sync-stall-"));
try {
  await buildPair(s);
  const sink = await startSink(s.ns("srv"));
  try {
    const out: Trial[] = [];
    out.push(await trial(s, dir, "as egressd configures it (reliable events off, overrun resync on)", false));
    out.push(await trial(s, dir, "reliable events on (before e8e4d0b)", true));
    console.log(
      `sync stall: ${RATE} short connections/s for ${SECONDS} s through gw1, its conntrackd stopped for ${STOP_MS} ms from 0.5 s in; gw2's entries right after the load, then every 5 s`,
    );
    for (const t of out)
      console.log(
        `  ${t.label}: made ${t.made}, gw1 holds ${t.held}; gw2 holds ${t.peer.join(", ")} (${((100 * t.peer.at(-1)!) / Math.max(1, t.held)).toFixed(1)}% of gw1's at the end); conntrackd's CPU after the load: gw1 ${t.afterMs[0]} ms, gw2 ${t.afterMs[1]} ms; gw2's injections refused ${t.refused}, sync messages lost ${t.lost}`,
      );
  } finally {
    sink.kill("SIGKILL");
  }
} finally {
  await s.cleanup();
  rmSync(dir, { recursive: true, force: true });
}
