// Benchmark: what connection sync costs per connection on each side, with
// conntrackd as egressd runs it ("trimmed": it reads the kernel's events at
// most once every DEFAULTS.sync.eventPaceUs, each batch at once, merges a
// connection's events within a batch, the kernel drops the events of the
// states it writes itself, and it writes a pass's new states from its peer at
// once; native/event-pace.c) and, in the same run, trimmed but writing each
// state on its own ("one by one", as at the stop before), paced only (as at
// the pace's first version) and as conntrackd runs alone (woken for each
// event).
//
// The lab is test/helpers/sync-pair.ts: gw1 SNATs a pod's short connections, gw2 is
// its sync peer, both with egressd's conntrackd config. For each rate, all
// ways are measured, in turns (the order alternates from trial to trial),
// each from a flushed table and freshly started conntrackds. Printed for each:
// connections made, conntrackd's CPU per connection on the sending side
// (gw1) and on the receiving side (gw2), its wake-ups per connection, and
// the share of gw1's entries that gw2 holds a second after the load. The
// load's window ends before the connections' "destroy" events (TIME_WAIT,
// 120 s): those are in docs/facts.md.
//   node dist/bench/sync-cost.js [--rates 1000,3000,6000,10000] [--seconds 5] [--trials 2]
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { DEFAULTS } from "../core/defaults.js";
import { pacedCommand } from "../daemon/connection-sync.js";
import { median } from "../lib/stats.js";
import type { Sandbox } from "../test/helpers/netns.js";
import { runGenerator, settle, startSink } from "./conn-load.js";
import { benchSandbox } from "./nat-lib.js";
import { runtimeMs } from "./probe-lab.js";
import { buildPair, pairEntries, SOURCES, startPair } from "../test/helpers/sync-pair.js";

const { values: opt } = parseArgs({
  options: {
    rates: { type: "string", default: "1000,3000,6000,10000" },
    seconds: { type: "string", default: "5" },
    trials: { type: "string", default: "2" },
  },
});
const RATES = opt.rates.split(",").map(Number);
const SECONDS = Number(opt.seconds);
const TRIALS = Number(opt.trials);
if (!(RATES.every((r) => r > 0) && SECONDS > 0 && TRIALS >= 1))
  throw new Error("--rates: positive numbers, comma-separated; --seconds: positive; --trials: 1 or more");
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * trimmed: as egressd runs it (paced, batches read at once, merged, its own
 * writes' events dropped, its peer's new states written at once); one-by-one:
 * the same but each state written on its own; paced: the pace only; alone:
 * conntrackd as it is.
 */
type Way = "trimmed" | "one-by-one" | "paced" | "alone";
const WAYS: Way[] = ["trimmed", "one-by-one", "paced", "alone"];

interface Trial {
  made: number;
  /** conntrackd's CPU per connection made (µs), and its wake-ups per connection: gw1 (sends), gw2 (receives). */
  us: [number, number];
  wakes: [number, number];
  /** gw2's entries as a share of gw1's, a second after the load. */
  share: number;
}

/** Voluntary context switches: one for each time the process blocked and was woken. */
function wakeUps(pid: number): number {
  return Number(/^voluntary_ctxt_switches:\s+(\d+)$/m.exec(readFileSync(`/proc/${pid}/status`, "utf8"))?.[1]);
}

async function trial(s: Sandbox, dir: string, rate: number, way: Way): Promise<Trial> {
  const front = way === "alone" ? [] : pacedCommand(undefined, undefined, way !== "paced", way === "trimmed");
  if (way !== "alone" && !front.length) throw new Error("the pacing library is not built (npm run build)");
  const daemons = await startPair(s, dir, { front });
  try {
    await sleep(2000);
    await settle();
    const pids = daemons.map((d) => d.pid);
    const cpu0 = pids.map(runtimeMs);
    const wake0 = pids.map(wakeUps);
    const made = (await runGenerator(s.ns("pod"), rate, SECONDS, SOURCES)).ok;
    await sleep(1000);
    const cpu1 = pids.map(runtimeMs);
    const wake1 = pids.map(wakeUps);
    const [held, peer] = [await pairEntries(s, "gw1"), await pairEntries(s, "gw2")];
    const per = (a: number[], b: number[], scale: number, i: number) =>
      ((b[i]! - a[i]!) * scale) / Math.max(1, made);
    return {
      made,
      us: [per(cpu0, cpu1, 1000, 0), per(cpu0, cpu1, 1000, 1)],
      wakes: [per(wake0, wake1, 1, 0), per(wake0, wake1, 1, 1)],
      share: peer / Math.max(1, held),
    };
  } finally {
    for (const d of daemons) d.child.kill("SIGKILL");
    await sleep(300);
  }
}

const s = benchSandbox("sc");
const dir = mkdtempSync(join(tmpdir(), "egressd-bench-sync-cost-"));
try {
  await buildPair(s);
  const sink = await startSink(s.ns("srv"));
  try {
    const rows: { rate: number; way: Way; trials: Trial[] }[] = [];
    let turn = 0;
    for (const rate of RATES) {
      const by: Record<Way, Trial[]> = { trimmed: [], "one-by-one": [], paced: [], alone: [] };
      for (let i = 0; i < TRIALS; i++) {
        // The order turns from trial to trial, so that no way always runs first.
        const k = turn++ % WAYS.length;
        for (const way of [...WAYS.slice(k), ...WAYS.slice(0, k)])
          by[way].push(await trial(s, dir, rate, way));
      }
      for (const way of WAYS) rows.push({ rate, way, trials: by[way] });
    }
    console.log(
      `sync cost: short connections through gw1 for ${SECONDS} s, ${TRIALS} trial(s) each way; conntrackd trimmed (as egressd runs it: paced at ${DEFAULTS.sync.eventPaceUs} µs, each batch read at once and merged, its own writes' events dropped, a pass's states from its peer written at once), trimmed but writing them one by one, paced only, and alone (woken for each event); per connection made`,
    );
    const f = (v: number) => v.toFixed(1);
    const m = (list: Trial[], pick: (t: Trial) => number) => median(list.map(pick));
    for (const { rate, way, trials } of rows)
      console.log(
        `  ${way.padEnd(10)} asked ${String(rate).padStart(5)}/s: made ${trials.map((t) => t.made).join(", ")}; conntrackd µs per connection: sending ${trials.map((t) => f(t.us[0])).join(", ")}, receiving ${trials.map((t) => f(t.us[1])).join(", ")}; wake-ups per connection: sending ${trials.map((t) => t.wakes[0].toFixed(2)).join(", ")}, receiving ${trials.map((t) => t.wakes[1].toFixed(2)).join(", ")}; gw2 holds ${trials.map((t) => `${(100 * t.share).toFixed(1)}%`).join(", ")} of gw1's`,
      );
    for (const rate of RATES) {
      const of = (way: Way) => rows.find((r) => r.rate === rate && r.way === way)!.trials;
      const p = of("trimmed");
      const names: [Way, string][] = [
        ["one-by-one", "one by one"],
        ["paced", "paced only"],
        ["alone", "alone"],
      ];
      const against = (value: (l: Trial[]) => number) => {
        const mp = value(p);
        return `${f(mp)} µs against ${names
          .map(([way, name]) => {
            const mb = value(of(way));
            return `${f(mb)} ${name} (${(mp / mb).toFixed(2)}x)`;
          })
          .join(", ")}`;
      };
      const side = (i: 0 | 1) => against((l) => m(l, (t) => t.us[i]));
      const both = (l: Trial[]) => m(l, (t) => (t.us[0] + t.us[1]) / 2);
      console.log(
        `at ${rate}/s (medians): sending ${side(0)}; receiving ${side(1)}; per connection per gateway ${against(both)}, ${f((both(p) * rate) / 1e4)}% of a core per gateway at this rate`,
      );
    }
  } finally {
    sink.kill("SIGKILL");
  }
} finally {
  await s.cleanup();
  rmSync(dir, { recursive: true, force: true });
}
