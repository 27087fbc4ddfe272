// V8's helper threads found by start order (lib/threads.ts; bench/scale names
// the threads that wake egressd's main loop with it), and a whole process set
// to background priority (the data-plane process), each in a node process
// of its own (raising a nice value needs no privilege).
import test from "ava";
import { spawnSync } from "node:child_process";
import { v8PoolSize } from "../../lib/threads.js";

const THREADS = new URL("../../lib/threads.js", import.meta.url).href;
const PROC_FILE = new URL("../../lib/proc-file.js", import.meta.url).href;

/**
 * Runs node with `flags`: a file is read first (libuv's pool starts; the
 * threads that appear with it are its), then V8's helpers are looked up,
 * then a worker thread starts. Reports which threads were found, which are
 * the pool's and the worker's.
 */
function run(flags: string[]) {
  const script = `
    import { readFile } from "node:fs/promises";
    import { readdirSync } from "node:fs";
    import { Worker } from "node:worker_threads";
    const before = readdirSync("/proc/self/task").map(Number);
    await readFile("/proc/self/stat");
    const pool = readdirSync("/proc/self/task").map(Number).filter((t) => !before.includes(t));
    const { v8HelperThreads } = await import(${JSON.stringify(THREADS)});
    const found = v8HelperThreads();
    // (node runs an eval'd worker as a module too here: --input-type=module.)
    const worker = new Worker(
      "import { parentPort } from 'node:worker_threads'; import { readlinkSync } from 'node:fs';" +
        "parentPort.postMessage(readlinkSync('/proc/thread-self').split('/').pop()); setInterval(() => {}, 1000);",
      { eval: true },
    );
    const workerTid = Number(await new Promise((r) => worker.once("message", r)));
    const again = v8HelperThreads();
    console.log(JSON.stringify({ pid: process.pid, before, pool, found, again, workerTid }));
    process.exit(0);
  `;
  const r = spawnSync(process.execPath, [...flags, "--input-type=module", "-e", script], {
    encoding: "utf8",
  });
  if (r.status !== 0) throw new Error(r.stderr);
  return JSON.parse(r.stdout) as {
    pid: number;
    before: number[];
    pool: number[];
    found: number[];
    again: number[];
    workerTid: number;
  };
}

test("the pool's size comes from --v8-pool-size, 4 unless set, unknown for 0", (t) => {
  t.is(v8PoolSize([]), 4);
  t.is(v8PoolSize(["--max-old-space-size=1024", "--v8-pool-size=2"]), 2);
  t.is(v8PoolSize(["--v8-pool-size=0"]), undefined);
});

for (const [flags, helpers] of [
  [[], 5],
  [["--v8-pool-size=2"], 3],
] as const) {
  test(`V8's ${helpers} helper threads are found; the main thread, libuv's pool and later threads are not (${flags.join(" ") || "default pool"})`, (t) => {
    const r = run([...flags]);
    t.is(r.found.length, helpers, JSON.stringify(r));
    t.false(r.found.includes(r.pid), "the main thread");
    // Only threads that were there before the first file was read: libuv's pool started with that read.
    t.true(
      r.found.every((tid) => r.before.includes(tid)),
      JSON.stringify(r),
    );
    t.is(r.pool.length, 4, "libuv's pool started with the read");
    t.false(
      r.found.some((tid) => r.pool.includes(tid)),
      "libuv's threads",
    );
    t.deepEqual(r.again, r.found, "the same after a worker thread started");
    t.false(r.again.includes(r.workerTid), "a thread started afterwards");
  });
}

test("reniceProcess sets every thread, and threads started afterwards take the value", (t) => {
  const script = `
    import { readFileSync, readdirSync } from "node:fs";
    import { readFile } from "node:fs/promises";
    import { Worker } from "node:worker_threads";
    await readFile("/proc/self/stat"); // libuv's pool is there before
    const { reniceProcess } = await import(${JSON.stringify(THREADS)});
    const set = reniceProcess(10);
    const worker = new Worker(
      "import { parentPort } from 'node:worker_threads'; parentPort.postMessage(1); setInterval(() => {}, 1000);",
      { eval: true },
    );
    await new Promise((r) => worker.once("message", r));
    const { statFields } = await import(${JSON.stringify(PROC_FILE)});
    const nice = readdirSync("/proc/self/task").map(
      (tid) => Number(statFields(readFileSync("/proc/self/task/" + tid + "/stat", "utf8"))[19 - 3]),
    );
    console.log(JSON.stringify({ set, nice }));
    process.exit(0);
  `;
  const r = spawnSync(process.execPath, ["--input-type=module", "-e", script], { encoding: "utf8" });
  if (r.status !== 0) return t.fail(r.stderr);
  const { set, nice } = JSON.parse(r.stdout) as { set: number; nice: number[] };
  t.true(set >= 10, `threads set: ${set}`); // main, V8's 5, libuv's 4
  t.true(nice.length > set, "the worker's threads came after");
  t.deepEqual([...new Set(nice)], [10]);
});
