// The native helpers' processes (egressd-icmp, egressd-bfd): started at the
// detection priority, and read line by line.
import { spawn, type ChildProcess } from "node:child_process";
import { setPriority } from "node:os";
import type { Readable } from "node:stream";
import { DEFAULTS } from "../core/defaults.js";

/**
 * Starts a process that detects failures, at the detection priority
 * (DEFAULTS.nice.detection) when egressd may set it (CAP_SYS_NICE); without
 * it, the process keeps egressd's priority.
 */
export function spawnDetector(argv: readonly string[], stdin: "pipe" | "ignore"): ChildProcess {
  const child = spawn(argv[0]!, argv.slice(1), { stdio: [stdin, "pipe", "pipe"] });
  if (child.pid !== undefined) {
    try {
      setPriority(child.pid, DEFAULTS.nice.detection);
    } catch {
      // no CAP_SYS_NICE
    }
  }
  return child;
}

/**
 * Calls `onLine` for each complete line of `stream` (ASCII, as the helper
 * writes). readline's interface does much more per line than this needs.
 */
export function eachLine(stream: Readable, onLine: (line: string) => void): void {
  let rest = "";
  stream.setEncoding("latin1");
  stream.on("data", (chunk: string) => {
    let start = 0;
    for (let nl = chunk.indexOf("\n"); nl >= 0; nl = chunk.indexOf("\n", start)) {
      const line = chunk.slice(start, nl);
      start = nl + 1;
      if (rest) {
        onLine(rest + line);
        rest = "";
      } else onLine(line);
    }
    if (start < chunk.length) rest += chunk.slice(start);
  });
}

/** A running helper: its process, and the last thing it (or the system) said went wrong. */
export interface HelperRun {
  readonly child: ChildProcess;
  lastError: string;
}

/**
 * Starts a native helper (spawnDetector) that takes commands on stdin and
 * answers in lines: `line` gets each line of its stdout, `gone` is called
 * once when it has exited, with `what` and the helper's last words.
 */
export function runHelper(
  argv: readonly string[],
  what: string,
  on: { line(line: string): void; gone(why: string): void },
): HelperRun {
  const child = spawnDetector(argv, "pipe");
  const run: HelperRun = { child, lastError: "" };
  child.stdin!.on("error", () => {}); // the helper died: 'close' below says so
  eachLine(child.stdout!, on.line);
  eachLine(child.stderr!, (line) => {
    if (line.trim()) run.lastError = line.trim();
  });
  child.on("error", (err) => {
    run.lastError = `${argv.at(-1)}: ${err.message}`;
  });
  child.on("close", (code, signal) =>
    on.gone(`${what} exited (${run.lastError || signal || `code ${code}`})`),
  );
  return run;
}
