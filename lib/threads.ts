// Threads of a node process, by what they are, and their priority.
//
// V8 runs the heavy parts of garbage collection (parallel and concurrent
// marking, sweeping) and of compilation on a pool of threads that node
// creates at start-up, one pool for all the isolates of the process. Nothing
// names these threads (every thread of node 20 is called "node"), so they are
// found by the order in which they started: node's platform starts its
// delayed-task thread and then its workers (--v8-pool-size, 4 unless set)
// before anything else. libuv's file-system and DNS pool starts later, with
// the first file read by the module loader. bench/scale names the threads
// that wake egressd's main loop this way.
//
// egressd's main process set these helpers to nice 10 while the data plane
// was a thread of it: they collected the data plane's heap too, and at nice
// 0 they kept the main thread from a CPU. With the data plane in a process
// of its own, the main thread's collections waited for its helpers at nice
// 10 instead: 3 of 20 bench/scale windows had a turn of 23-30 ms, asleep for
// 17-27 ms of it, against 2 of 24 of 20-22 ms (7-12 ms asleep) with the
// helpers at nice 0, runs alternated in the same hour (docs/scale.md). So
// they keep the process's priority now. The data-plane
// process sets all of its threads to nice 10 (reniceProcess): the whole of
// it is background work. On Linux the nice value belongs to a thread
// (setpriority with a thread id), and raising it needs no privilege.

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

/**
 * Sets every thread of this process to `nice`, the calling thread included
 * (threads started later take the value of the thread that starts them);
 * returns how many were set. For a process that is background work as a
 * whole.
 */
export function reniceProcess(nice: number): number {
  let tids: number[];
  try {
    tids = readdirSync("/proc/self/task").map(Number);
  } catch {
    tids = [0]; // threads cannot be listed: the calling thread alone
  }
  let done = 0;
  for (const tid of tids) {
    try {
      setPriority(tid === process.pid ? 0 : tid, nice);
      done++;
    } catch {
      // ended meanwhile, or the value may not be set here
    }
  }
  return done;
}
