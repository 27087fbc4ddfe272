// ICMP probing, the helper against the way before, in the same run:
//   helper: one egressd-icmp process for every target (native/icmp-prober.c),
//           one line per round (what the prober runs)
//   ping:   one long-running `ping -O -i` child per target, one line per reply
//           (bench/ping-probe.ts, the prober's ICMP probe until the helper)
// Prints, for each, results per second, this process's CPU and wake-ups (the
// daemon's side) and the probe processes' CPU, all from /proc (schedstat),
// and the ratio of the totals.
//
//   node dist/bench/probe-icmp-modes.js [--targets 50] [--seconds 10] [--interval 100]
import { readFileSync } from "node:fs";
import { performance } from "node:perf_hooks";
import { IcmpHelper } from "../health/probes/icmp.js";
import { NO_STEAL } from "../health/steal.js";
import type { StreamProbe } from "../health/probe-types.js";
import { PingProbe } from "./ping-probe.js";
import { cleanupOnSignal, probeLab, runtimeMs, sleep } from "./probe-lab.js";

function arg(name: string, def: number): number {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? Number(process.argv[i + 1]) : def;
}

interface Figures {
  results: number;
  failed: number;
  selfPct: number;
  wakes: number;
  probePct: number;
}

/** Voluntary context switches of this process's main thread: how often it went to sleep and woke. */
function mainWakes(): number {
  const m = /^voluntary_ctxt_switches:\s+(\d+)/m.exec(readFileSync(`/proc/${process.pid}/status`, "utf8"));
  return Number(m?.[1] ?? 0);
}

async function measure(
  seconds: number,
  probes: StreamProbe[],
  probePids: () => number[],
  stop: () => void,
): Promise<Figures> {
  let results = 0;
  let failed = 0;
  for (const p of probes)
    p.start((r) => {
      results++;
      if (!r.ok) failed++;
    });
  await sleep(1500); // warm-up
  const r0 = results;
  const f0 = failed;
  const self0 = runtimeMs(process.pid);
  const wakes0 = mainWakes();
  const pids = probePids();
  const probe0 = pids.reduce((s, pid) => s + runtimeMs(pid), 0);
  const t0 = performance.now();
  await sleep(seconds * 1000);
  const wall = performance.now() - t0;
  const probe1 = pids.reduce((s, pid) => s + runtimeMs(pid), 0);
  const f: Figures = {
    results: (results - r0) / (wall / 1000),
    failed: failed - f0,
    selfPct: ((runtimeMs(process.pid) - self0) / wall) * 100,
    wakes: (mainWakes() - wakes0) / (wall / 1000),
    probePct: ((probe1 - probe0) / wall) * 100,
  };
  for (const p of probes) p.close();
  stop();
  await sleep(1200);
  return f;
}

async function main(): Promise<void> {
  const count = arg("targets", 50);
  const seconds = arg("seconds", 10);
  const intervalMs = arg("interval", 100);
  const timeoutMs = intervalMs;
  const lab = await probeLab(count);
  cleanupOnSignal(lab);
  try {
    const helper = new IcmpHelper({ steal: NO_STEAL });
    const viaHelper = await measure(
      seconds,
      lab.targets.map((target) => helper.probe({ target, intervalMs, timeoutMs })),
      () => (helper.pid ? [helper.pid] : []),
      () => helper.close(),
    );
    const pings = lab.targets.map(
      (target) => new PingProbe({ target, intervalMs, timeoutMs, steal: NO_STEAL }),
    );
    const viaPing = await measure(
      seconds,
      pings,
      () => pings.map((p) => p.pid).filter((pid): pid is number => pid !== undefined),
      () => {},
    );
    const total = (f: Figures) => f.selfPct + f.probePct;
    const show = (name: string, f: Figures) =>
      console.log(
        `  ${name.padEnd(28)} ${f.results.toFixed(0).padStart(5)} results/s, failed ${f.failed}; ` +
          `daemon side ${f.selfPct.toFixed(2)} % of a core, ${f.wakes.toFixed(0)} wake-ups/s; ` +
          `probe processes ${f.probePct.toFixed(2)} %; total ${total(f).toFixed(2)} %`,
      );
    console.log(
      `${count} ICMP targets at ${intervalMs} ms (timeout ${timeoutMs} ms), ${seconds} s each, CPU from schedstat:`,
    );
    show("helper (egressd-icmp)", viaHelper);
    show("ping children (before)", viaPing);
    console.log(
      `  ping children / helper: total CPU ${(total(viaPing) / total(viaHelper)).toFixed(1)}x, ` +
        `daemon side ${(viaPing.selfPct / viaHelper.selfPct).toFixed(1)}x, ` +
        `wake-ups ${(viaPing.wakes / viaHelper.wakes).toFixed(1)}x`,
    );
  } finally {
    await lab.cleanup();
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
