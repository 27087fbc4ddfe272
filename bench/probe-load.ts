// Load of the prober: N ICMP + N TCP probes at 100 ms (default 150 + 150 =
// 300 probes, 3000 results/s) against targets in a network namespace. Prints
// this process's CPU, event-loop delay, and the ICMP helper's CPU.
//
//   node dist/bench/probe-load.js [--per-kind 150] [--seconds 20] [--interval 100]
import { spawn } from "node:child_process";
import { monitorEventLoopDelay, performance } from "node:perf_hooks";
import { Prober, type ProbeTransition } from "../health/prober.js";
import { childrenCpu, cleanupOnSignal, probeLab, sleep } from "./probe-lab.js";

function arg(name: string, def: number): number {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? Number(process.argv[i + 1]) : def;
}

async function main(): Promise<void> {
  const perKind = arg("per-kind", 150);
  const seconds = arg("seconds", 20);
  const intervalMs = arg("interval", 100);
  const lab = await probeLab(perKind);
  cleanupOnSignal(lab);
  const prober = new Prober();
  try {
    // One TCP listener in the namespace answers every target address.
    spawn(
      "ip",
      [
        "netns",
        "exec",
        lab.sb.ns("tgt"),
        process.execPath,
        "-e",
        `require("net").createServer((s) => s.destroy()).listen(7001, "0.0.0.0")`,
      ],
      { stdio: "ignore" },
    ).unref();
    await sleep(500);
    // Idle baseline of the event-loop delay (the histogram counts the 10 ms
    // sampling period too: figures below are the excess over it).
    const idle = monitorEventLoopDelay({ resolution: 10 });
    idle.enable();
    await sleep(2000);
    idle.disable();
    const transitions: ProbeTransition[] = [];
    prober.on("transition", (t) => transitions.push(t));
    let results = 0;
    let failed = 0;
    prober.on("sample", (s) => {
      results++;
      if (!s.ok) failed++;
    });
    const common = { intervalMs, timeoutMs: 300, rise: 3, fall: 3, holdDownMs: 1000 };
    for (const [i, target] of lab.targets.entries()) {
      prober.add({ name: `icmp${i}`, kind: "icmp", target, ...common });
      prober.add({ name: `tcp${i}`, kind: "tcp", target, port: 7001, ...common });
    }
    prober.start();
    // Warm up: every probe up.
    const warmEnd = performance.now() + 10_000;
    while (prober.statuses().some((s) => s.state !== "up") && performance.now() < warmEnd) await sleep(50);
    const notUp = prober.statuses().filter((s) => s.state !== "up").length;
    await sleep(1000);

    const h = monitorEventLoopDelay({ resolution: 10 });
    const cpu0 = process.cpuUsage();
    const helper0 = childrenCpu("egressd-icmp");
    const t0 = performance.now();
    const r0 = results;
    const f0 = failed;
    const tr0 = transitions.length;
    h.enable();
    await sleep(seconds * 1000);
    h.disable();
    const wall = performance.now() - t0;
    const cpu = process.cpuUsage(cpu0);
    const helper1 = childrenCpu("egressd-icmp");
    let helperMs = 0;
    for (const [pid, ms] of helper1) helperMs += ms - (helper0.get(pid) ?? 0);

    const pct = (ms: number) => ((ms / wall) * 100).toFixed(1);
    const ms = (ns: number) => Math.max(0, ns / 1e6 - 10).toFixed(2);
    console.log(`probes: ${perKind} icmp + ${perKind} tcp at ${intervalMs} ms, ${seconds} s measured`);
    console.log(`not up after warm-up: ${notUp}`);
    console.log(
      `results: ${((results - r0) / (wall / 1000)).toFixed(0)}/s, failed ${failed - f0}, transitions ${transitions.length - tr0}`,
    );
    console.log(
      `daemon CPU: ${pct((cpu.user + cpu.system) / 1000)}% of one core (user ${pct(cpu.user / 1000)}%, system ${pct(cpu.system / 1000)}%)`,
    );
    console.log(
      `event-loop delay idle: p50 ${ms(idle.percentile(50))} ms, p99 ${ms(idle.percentile(99))} ms, max ${ms(idle.max)} ms`,
    );
    console.log(
      `event-loop delay under load: p50 ${ms(h.percentile(50))} ms, p99 ${ms(h.percentile(99))} ms, max ${ms(h.max)} ms`,
    );
    console.log(`ICMP helper (egressd-icmp): ${helper1.size} process, CPU ${pct(helperMs)}% of one core`);
    console.log(`RSS: ${(process.memoryUsage().rss / 1048576).toFixed(0)} MiB`);
  } finally {
    await prober.stop();
    await lab.cleanup();
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
