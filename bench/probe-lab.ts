// Shared set-up of the probe benchmarks: a namespace with many target
// addresses, joined to the host namespace (where the prober runs) by a veth
// pair; CPU accounting from /proc.
import { randomBytes } from "node:crypto";
import { readFileSync, readdirSync } from "node:fs";
import { run, tryRun } from "../lib/exec.js";
import { statFields } from "../lib/proc-file.js";
import { Sandbox } from "../test/helpers/netns.js";

export interface ProbeLab {
  sb: Sandbox;
  /** Target addresses inside the namespace. */
  targets: string[];
  cleanup(): Promise<void>;
}

/** Creates the namespace "tgt" with `count` target addresses in 198.18.X.0/24. */
export async function probeLab(count: number): Promise<ProbeLab> {
  if (count > 250) throw new Error("at most 250 targets");
  const rnd = randomBytes(3);
  const sb = new Sandbox(`bp${rnd.toString("hex")}`);
  const hostIf = `bp${rnd.toString("hex")}h`;
  let cleaned = false;
  const cleanup = async () => {
    if (cleaned) return;
    cleaned = true;
    await tryRun(["ip", "link", "del", hostIf]);
    await sb.cleanup();
  };
  try {
    await sb.addNode("tgt");
    await run(["ip", "link", "add", hostIf, "type", "veth", "peer", "name", "eth0", "netns", sb.ns("tgt")]);
    const net = `198.${18 + (rnd[0]! & 1)}.${rnd[1]!}`;
    await run(["ip", "addr", "add", `${net}.254/24`, "dev", hostIf]);
    await run(["ip", "link", "set", hostIf, "up"]);
    const targets: string[] = [];
    const batch: string[] = [];
    for (let i = 1; i <= count; i++) {
      targets.push(`${net}.${i}`);
      batch.push(`address add ${net}.${i}/24 dev eth0`);
    }
    await sb.sh("tgt", `ip -batch - <<'EOF'\n${batch.join("\n")}\nEOF`);
    await sb.exec("tgt", ["ip", "link", "set", "eth0", "up"]);
    return { sb, targets, cleanup };
  } catch (e) {
    await cleanup();
    throw e;
  }
}

/** Removes the lab on SIGINT/SIGTERM too. */
export function cleanupOnSignal(lab: ProbeLab): void {
  for (const sig of ["SIGINT", "SIGTERM"] as const) {
    process.once(sig, () => {
      void lab.cleanup().finally(() => process.exit(130));
    });
  }
}

const TICK = 100; // USER_HZ on Linux

/**
 * CPU (ms) the scheduler has run the live threads of a process, from
 * /proc/PID/task/TID/schedstat (nanoseconds), or 0 if gone. Unlike utime +
 * stime, sampled at each tick, it sees runs shorter than a tick, which is
 * what a daemon woken a few hundred times a second mostly does.
 */
export function runtimeMs(pid: number): number {
  let ns = 0;
  let tasks: string[];
  try {
    tasks = readdirSync(`/proc/${pid}/task`);
  } catch {
    return 0;
  }
  for (const t of tasks) {
    try {
      ns += Number(readFileSync(`/proc/${pid}/task/${t}/schedstat`, "utf8").split(" ")[0]);
    } catch {
      // the thread ended meanwhile
    }
  }
  return ns / 1e6;
}

/** CPU (ms) of this process's reaped children (cutime + cstime). */
export function reapedChildrenCpuMs(): number {
  const f = statFields(readFileSync(`/proc/self/stat`, "utf8"));
  return ((Number(f[13]) + Number(f[14])) * 1000) / TICK;
}

/** Live children of this process whose command name is `comm`, with their CPU (ms). */
export function childrenCpu(comm: string): Map<number, number> {
  const out = new Map<number, number>();
  for (const d of readdirSync("/proc")) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const stat = readFileSync(`/proc/${d}/stat`, "utf8");
      const name = stat.slice(stat.indexOf("(") + 1, stat.lastIndexOf(")"));
      const f = statFields(stat);
      if (name === comm && Number(f[1]) === process.pid) {
        out.set(Number(d), ((Number(f[11]) + Number(f[12])) * 1000) / TICK);
      }
    } catch {
      // gone
    }
  }
  return out;
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
