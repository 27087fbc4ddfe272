// The priority of V8's helper threads. V8 runs the heavy parts of garbage
// collection (parallel and concurrent marking, sweeping) and of compilation
// on a pool of threads that node creates at start-up, one pool for every
// isolate in the process. They took the process's priority, so the
// data-plane thread's collections (a heap of 100k sources, and a forced one
// after each plan; lib/gc.ts) ran at nice 0 on up to four helper threads
// although that thread runs at nice 10: on two cores the main thread waited
// for a CPU, and its loop was late (docs/scale.md). On Linux the nice value belongs to a
// thread (setpriority with a thread id), and raising it needs no privilege.
//
// Nothing names these threads (every thread of node 20 is called "node"), so
// they are found by the order in which they started: node's platform starts
// its delayed-task thread and then its workers (--v8-pool-size, 4 unless
// set) before anything else. libuv's file-system and DNS pool starts later,
// with the first file read by the module loader; it is left alone, as DNS
// lookups of HTTP probes run there.

import { readdirSync, readFileSync } from "node:fs";
import { setPriority } from "node:os";
import { statFields } from "./proc-file.js";

/** The size of V8's worker pool from node's flags: --v8-pool-size=N, 4 unless set, undefined for 0 (node's own choice). */
export function v8PoolSize(execArgv: readonly string[] = process.execArgv): number | undefined {
  let n = 4;
  for (const a of execArgv) {
    const m = /^--v8-pool-size=(\d+)$/.exec(a);
    if (m) n = Number(m[1]);
  }
  return n > 0 ? n : undefined;
}

/** When a thread of process `pid` started (clock ticks since boot), from /proc/PID/task/TID/stat. */
function startTicks(pid: number, tid: number): number {
  const stat = readFileSync(`/proc/${pid}/task/${tid}/stat`, "utf8");
  return Number(statFields(stat)[22 - 3]); // starttime
}

/**
 * The thread ids of V8's helper threads (the delayed-task thread and the
 * workers), the first to start after the main thread, in this process or
 * node process `pid` started with `execArgv`. Empty where threads cannot be
 * listed (not Linux) or the pool's size is not known.
 */
export function v8HelperThreads(execArgv: readonly string[] = process.execArgv, pid = process.pid): number[] {
  const pool = v8PoolSize(execArgv);
  if (pool === undefined) return [];
  try {
    return readdirSync(`/proc/${pid}/task`)
      .map(Number)
      .filter((t) => Number.isInteger(t) && t !== pid)
      .map((tid) => ({ tid, start: startTicks(pid, tid) }))
      .sort((a, b) => a.start - b.start || a.tid - b.tid)
      .slice(0, pool + 1)
      .map((t) => t.tid);
  } catch {
    return [];
  }
}

/** Sets V8's helper threads to `nice`; returns the ids of those set. Must run on the main thread. */
export function reniceV8Helpers(nice: number): number[] {
  const done: number[] = [];
  for (const tid of v8HelperThreads()) {
    try {
      setPriority(tid, nice);
      done.push(tid);
    } catch {
      // the value may not be set here: the thread keeps its priority
    }
  }
  return done;
}
