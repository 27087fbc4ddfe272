// V8's helper threads, found by start order and set to background priority,
// in a node process of their own (raising a nice value needs no privilege).
import test from "ava";
import { spawnSync } from "node:child_process";
import { v8PoolSize } from "../../lib/threads.js";

const THREADS = new URL("../../lib/threads.js", import.meta.url).href;

/**
 * Runs node with `flags`: a file is read first (libuv's pool starts; the
 * threads that appear with it are its), then reniceV8Helpers(10), then a
 * worker thread starts. Reports each thread's nice value, which were set,
 * and which are the pool's and the worker's.
 */
function run(flags: string[]) {
  const script = `
    import { readFile } from "node:fs/promises";
    import { readFileSync, readdirSync } from "node:fs";
    import { Worker } from "node:worker_threads";
    const before = readdirSync("/proc/self/task").map(Number);
    await readFile("/proc/self/stat");
    const pool = readdirSync("/proc/self/task").map(Number).filter((t) => !before.includes(t));
    const { reniceV8Helpers } = await import(${JSON.stringify(THREADS)});
    const set = reniceV8Helpers(10);
    // (node runs an eval'd worker as a module too here: --input-type=module.)
    const worker = new Worker(
      "import { parentPort } from 'node:worker_threads'; import { readlinkSync } from 'node:fs';" +
        "parentPort.postMessage(readlinkSync('/proc/thread-self').split('/').pop()); setInterval(() => {}, 1000);",
      { eval: true },
    );
    const workerTid = Number(await new Promise((r) => worker.once("message", r)));
    const nice = {};
    for (const t of readdirSync("/proc/self/task")) {
      const st = readFileSync("/proc/self/task/" + t + "/stat", "utf8");
      nice[t] = Number(st.slice(st.lastIndexOf(")") + 2).split(" ")[16]);
    }
    console.log(JSON.stringify({ pid: process.pid, before, pool, set, workerTid, nice }));
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
    set: number[];
    workerTid: number;
    nice: Record<string, number>;
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
  test(`V8's ${helpers} helper threads go to background priority; the main thread, libuv's pool and later threads do not (${flags.join(" ") || "default pool"})`, (t) => {
    const r = run([...flags]);
    t.is(r.set.length, helpers, JSON.stringify(r));
    for (const tid of r.set) t.is(r.nice[tid], 10, `thread ${tid}`);
    t.is(r.nice[r.pid], 0, "the main thread");
    t.is(r.nice[r.workerTid], 0, "a thread started afterwards");
    // Only threads that were there before the first file was read: libuv's pool started with that read.
    t.true(
      r.set.every((tid) => r.before.includes(tid)),
      JSON.stringify(r),
    );
    t.is(r.pool.length, 4, "libuv's pool started with the read");
    for (const tid of r.pool) t.is(r.nice[tid], 0, `libuv's thread ${tid}`);
    const others = Object.keys(r.nice)
      .map(Number)
      .filter((tid) => tid !== r.pid && !r.set.includes(tid));
    for (const tid of others) t.is(r.nice[tid], 0, `thread ${tid}`);
  });
}
