// What one wake-up costs on this machine, in C and in Node: the floor under
// egressd's idle CPU. With one `ping` child per ICMP probe, each reply woke
// egressd's main thread once (a line), and each BFD packet sent or received
// wakes the BFD thread once: at 10 probes and 2 BFD sessions at 100 ms, about
// 100 + 40 wake-ups a second times the cost of one. The ICMP helper
// (native/icmp-prober.c) writes one line per round for all probes: 10 + 40.
//
// Runs, one at a time, against an address in a namespace of its own:
//   ping       `ping -i 0.01 -q`: 100 echoes sent and 100 replies read a second, in C
//   timer      a Node process whose only work is a 10 ms interval timer
//   ping lines a Node process reading a `ping -O -D -i 0.01` child's lines,
//              as an ICMP probe does (the child's CPU shown apart)
// CPU is read from /proc/PID/task/*/schedstat (nanoseconds the scheduler ran
// each thread), not from the tick-sampled utime/stime, which misses short
// runs that end between two ticks.
//
//   node dist/bench/wakeup-cost.js [--seconds 10]
import { spawn, type ChildProcess } from "node:child_process";
import { readFileSync } from "node:fs";
import { performance } from "node:perf_hooks";
import { fileURLToPath } from "node:url";
import { eachLine } from "../health/detector-process.js";
import { cleanupOnSignal, probeLab, runtimeMs, sleep } from "./probe-lab.js";

/** The pids of `pid`'s children. */
function childPids(pid: number): number[] {
  return readFileSync(`/proc/${pid}/task/${pid}/children`, "utf8")
    .trim()
    .split(/\s+/)
    .filter(Boolean)
    .map(Number);
}

interface Run {
  /** CPU % of a core of the process itself, and of its children. */
  self: number;
  children: number;
}

/** Starts `argv`, lets it settle, and measures it for `seconds`. */
async function measure(argv: string[], seconds: number): Promise<Run> {
  const child: ChildProcess = spawn(argv[0]!, argv.slice(1), { stdio: ["ignore", "ignore", "inherit"] });
  try {
    await sleep(1500);
    const pid = child.pid!;
    const kids = childPids(pid);
    const a = runtimeMs(pid);
    const ak = kids.map(runtimeMs);
    const t0 = performance.now();
    await sleep(seconds * 1000);
    const wallMs = performance.now() - t0;
    const b = runtimeMs(pid);
    const bk = kids.map(runtimeMs);
    const kidMs = bk.reduce((s, v, i) => s + v - ak[i]!, 0);
    return { self: ((b - a) / wallMs) * 100, children: (kidMs / wallMs) * 100 };
  } finally {
    child.kill("SIGTERM"); // the ping-lines child ends its ping first
    await new Promise((r) => child.once("close", r));
  }
}

/** The "ping lines" process: reads a ping child's output, a line per reply. */
function childReadingPing(target: string): void {
  const ping = spawn("ping", ["-n", "-O", "-D", "-i", "0.01", target], {
    stdio: ["ignore", "pipe", "ignore"],
  });
  let lines = 0;
  eachLine(ping.stdout!, () => lines++);
  process.on("SIGTERM", () => {
    ping.once("close", () => process.exit(0));
    ping.kill("SIGTERM");
  });
}

async function main(): Promise<void> {
  const i = process.argv.indexOf("--child-ping-lines");
  if (i > 0) return childReadingPing(process.argv[i + 1]!);
  const j = process.argv.indexOf("--seconds");
  const seconds = j > 0 ? Number(process.argv[j + 1]) : 10;
  const lab = await probeLab(1);
  cleanupOnSignal(lab);
  const target = lab.targets[0]!;
  const self = fileURLToPath(import.meta.url);
  try {
    const ping = await measure(["ping", "-n", "-q", "-i", "0.01", target], seconds);
    const timer = await measure([process.execPath, "-e", "setInterval(() => {}, 10)"], seconds);
    const lines = await measure([process.execPath, self, "--child-ping-lines", target], seconds);
    // µs of CPU per event: % of a core at 100 events a second.
    const us = (pct: number) => ((pct / 100) * 1e6) / 100;
    console.log(`wake-up cost, ${seconds} s each, CPU from schedstat:`);
    console.log(
      `  ping (C), 100 echoes/s:        ${ping.self.toFixed(2)} % of a core, ${us(ping.self).toFixed(0)} us per echo (send + reply)`,
    );
    console.log(
      `  Node, a 10 ms timer:           ${timer.self.toFixed(2)} % of a core, ${us(timer.self).toFixed(0)} us per wake-up`,
    );
    console.log(
      `  Node reading ping's lines:     ${lines.self.toFixed(2)} % of a core, ${us(lines.self).toFixed(0)} us per reply line (its ping child ${lines.children.toFixed(2)} %)`,
    );
    const floor = (replyLines: number) =>
      ((replyLines * us(lines.self) + 40 * us(timer.self)) / 1e4).toFixed(2);
    console.log(
      `  floor for 10 ICMP probes and 2 BFD sessions at 100 ms: ${floor(100)} % of a core with ping children ` +
        `(100 reply lines + 40 BFD wake-ups a second), ${floor(10)} % with the ICMP helper (10 round lines + 40)`,
    );
  } finally {
    await lab.cleanup();
  }
}

main().catch((e: unknown) => {
  console.error(e);
  process.exit(1);
});
