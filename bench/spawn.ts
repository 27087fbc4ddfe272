// What starting one short command costs a large egressd, started by egressd
// itself (Node.js's execFile: fork, then exec) against started by the
// egressd-spawn helper (lib/spawner.ts: posix_spawn from a small process),
// alternated in one run.
//
// The process first holds --heap-mb of memory (typed arrays and small
// objects, as egressd's data plane does at 100k sources). Per command it
// prints, as medians over --runs:
//   - how long the call blocked this thread (the fork happens inside it);
//   - the time to the command's answer;
//   - what writing all of that memory again cost right after: the faults
//     (each page a fork left copy-on-write) and the time, beside the same
//     write with no command before it.
//
//   node dist/bench/spawn.js [--heap-mb 240] [--runs 7] [--command /bin/true]
import { execFile } from "node:child_process";
import { readFileSync } from "node:fs";
import { parseArgs } from "node:util";
import { median } from "../lib/stats.js";
import { statFields } from "../lib/proc-file.js";
import { Spawner } from "../lib/spawner.js";
const ms = (n: number) => `${n.toFixed(2)} ms`;

const { values: args } = parseArgs({
  options: {
    "heap-mb": { type: "string", default: "240" },
    runs: { type: "string", default: "7" },
    command: { type: "string", default: "/bin/true" },
  },
});

/** Minor faults of this thread so far (/proc/thread-self/stat, field 10). */
function minorFaults(): number {
  return Number(statFields(readFileSync("/proc/thread-self/stat", "utf8"))[10 - 3]);
}

const ARRAY = 1 << 20; // 8 MB of float64 each
const held = Array.from({ length: Math.max(1, Math.round(Number(args["heap-mb"]) / 8)) }, () =>
  new Float64Array(ARRAY).fill(1),
);
// Small objects too: V8's own pages, as the informers' caches and the plan have.
const objects = Array.from({ length: 300_000 }, (_, i) => ({ i, name: `pod-${i}` }));

let stamp = 1;
/** Writes all held memory; its time and the faults it took. */
function rewrite(): { ms: number; faults: number } {
  const f0 = minorFaults();
  const t = performance.now();
  stamp++;
  for (const a of held) a.fill(stamp);
  for (const o of objects) o.i = stamp;
  return { ms: performance.now() - t, faults: minorFaults() - f0 };
}

const argv = [args.command!];
const spawner = new Spawner();
spawner.start();
await spawner.run({ argv, timeoutMs: 10_000 }); // the helper started and warm

type Row = { blockMs: number; answerMs: number; rewriteMs: number; faults: number };
const rows: Record<"fork" | "helper" | "none", Row[]> = { fork: [], helper: [], none: [] };
rewrite();
for (let r = 0; r < Number(args.runs); r++) {
  for (const how of ["fork", "helper", "none"] as const) {
    const t0 = performance.now();
    let blockMs = 0;
    if (how === "fork")
      await new Promise<void>((resolve, reject) => {
        execFile(argv[0]!, argv.slice(1), (err) => (err ? reject(err) : resolve()));
        blockMs = performance.now() - t0;
      });
    else if (how === "helper") {
      const answered = spawner.run({ argv, timeoutMs: 10_000 });
      blockMs = performance.now() - t0;
      const res = await answered;
      if (res.code !== 0) throw new Error(`${argv.join(" ")} exited with ${res.code}`);
    }
    const answerMs = performance.now() - t0;
    const w = rewrite();
    rows[how].push({ blockMs, answerMs, rewriteMs: w.ms, faults: w.faults });
  }
}
spawner.close();

const rss = process.memoryUsage().rss / 1e6;
console.log(
  `one command (${argv.join(" ")}) from a process of ${rss.toFixed(0)} MB RSS, medians over ${args.runs} runs of each, alternated:`,
);
const m = (how: keyof typeof rows, k: keyof Row) => median(rows[how].map((x) => x[k]));
for (const how of ["fork", "helper", "none"] as const) {
  const label = {
    fork: "started by this process (execFile)",
    helper: "started by egressd-spawn",
    none: "no command (baseline)",
  }[how];
  console.log(
    `  ${label.padEnd(36)} this thread blocked ${ms(m(how, "blockMs")).padStart(9)}, answered in ${ms(m(how, "answerMs")).padStart(9)}; ` +
      `writing the ${args["heap-mb"]} MB again after: ${ms(m(how, "rewriteMs")).padStart(10)}, ${m(how, "faults").toFixed(0).padStart(6)} page faults`,
  );
}
const extra = (how: "fork" | "helper") => m(how, "rewriteMs") - m("none", "rewriteMs") + m(how, "blockMs");
console.log(
  `cost to this process per command (block + extra write time): execFile ${ms(extra("fork"))}, helper ${ms(extra("helper"))}; ratio ${(extra("fork") / Math.max(extra("helper"), 0.001)).toFixed(0)}x`,
);
