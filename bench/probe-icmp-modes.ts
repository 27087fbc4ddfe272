// ICMP probing two ways, for the choice made in health/probes/icmp.ts:
//   stream: one long-running `ping -O -i` child per target (what the prober does)
//   spawn:  one `ping -c 1 -W 1` process per probe, every interval
// Prints this process's CPU and the ping processes' CPU for each.
//
//   node dist/bench/probe-icmp-modes.js [--targets 50] [--seconds 10] [--interval 100]
import { execFile } from "node:child_process";
import { performance } from "node:perf_hooks";
import { IcmpProbe } from "../health/probes/icmp.js";
import { childrenCpu, cleanupOnSignal, probeLab, reapedChildrenCpuMs, sleep } from "./probe-lab.js";

function arg(name: string, def: number): number {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? Number(process.argv[i + 1]) : def;
}

interface Figures {
  results: number;
  failed: number;
  selfPct: number;
  pingPct: number;
}

async function measure(
  seconds: number,
  startAll: (onResult: (ok: boolean) => void) => () => void,
): Promise<Figures> {
  let results = 0;
  let failed = 0;
  const stop = startAll((ok) => {
    results++;
    if (!ok) failed++;
  });
  await sleep(1500); // warm-up
  const r0 = results;
  const f0 = failed;
  const cpu0 = process.cpuUsage();
  const live0 = childrenCpu("ping");
  const reaped0 = reapedChildrenCpuMs();
  const t0 = performance.now();
  await sleep(seconds * 1000);
  const wall = performance.now() - t0;
  const cpu = process.cpuUsage(cpu0);
  const live1 = childrenCpu("ping");
  let pingMs = reapedChildrenCpuMs() - reaped0;
  for (const [pid, ms] of live1) pingMs += ms - (live0.get(pid) ?? 0);
  stop();
  await sleep(1200);
  return {
    results: (results - r0) / (wall / 1000),
    failed: failed - f0,
    selfPct: ((cpu.user + cpu.system) / 1000 / wall) * 100,
    pingPct: (pingMs / wall) * 100,
  };
}

async function main(): Promise<void> {
  const count = arg("targets", 50);
  const seconds = arg("seconds", 10);
  const intervalMs = arg("interval", 100);
  const lab = await probeLab(count);
  cleanupOnSignal(lab);
  try {
    const stream = await measure(seconds, (onResult) => {
      const probes = lab.targets.map((target) => new IcmpProbe({ target, intervalMs, timeoutMs: 300 }));
      for (const p of probes) p.start((r) => onResult(r.ok));
      return () => probes.forEach((p) => p.close());
    });
    const spawned = await measure(seconds, (onResult) => {
      const timers = lab.targets.map((target, i) =>
        setTimeout(function tick() {
          execFile("ping", ["-n", "-c", "1", "-W", "1", target], (err) => onResult(!err));
          timers[i] = setTimeout(tick, intervalMs);
        }, Math.random() * intervalMs),
      );
      return () => timers.forEach((t) => clearTimeout(t));
    });
    const show = (name: string, f: Figures) =>
      console.log(
        `${name.padEnd(7)} ${f.results.toFixed(0).padStart(5)} results/s, failed ${f.failed}, ` +
          `daemon CPU ${f.selfPct.toFixed(1)}%, ping CPU ${f.pingPct.toFixed(1)}%, total ${(f.selfPct + f.pingPct).toFixed(1)}% of one core`,
      );
    console.log(`${count} ICMP targets at ${intervalMs} ms, ${seconds} s each`);
    show("stream", stream);
    show("spawn", spawned);
    console.log(
      `spawn / stream total CPU: ${((spawned.selfPct + spawned.pingPct) / (stream.selfPct + stream.pingPct)).toFixed(1)}x`,
    );
  } finally {
    await lab.cleanup();
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
