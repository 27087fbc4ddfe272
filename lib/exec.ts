// Runs external programs (ip, nft, vtysh, ...) and turns failures into errors
// that say which command failed and what it printed.
import { execFile, spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import { Spawner } from "./spawner.js";

export interface RunResult {
  stdout: string;
  stderr: string;
}

export class CommandError extends Error {
  constructor(
    readonly argv: readonly string[],
    readonly code: number | null,
    readonly stdout: string,
    readonly stderr: string,
  ) {
    super(`command failed (exit ${code ?? "signal"}): ${argv.join(" ")}\n${stderr.trim() || stdout.trim()}`);
    this.name = "CommandError";
  }
}

export interface RunOptions {
  /** Run inside this network namespace (ip netns exec NAME ...). */
  netns?: string;
  /** Kill the command after this many milliseconds (default 60 s). */
  timeoutMs?: number;
  /** Extra environment variables. */
  env?: Record<string, string>;
  /** Text written to the command's standard input. */
  input?: string;
}

/** Builds the argv that runs `argv` inside namespace `netns` (or as is). */
export function inNetns(netns: string | undefined, argv: readonly string[]): string[] {
  return netns ? ["ip", "netns", "exec", netns, ...argv] : [...argv];
}

/** This thread's egressd-spawn helper, once runCommandsViaHelper() has started it. */
let helper: Spawner | undefined;

/**
 * Runs this thread's commands (run, tryRun) through an egressd-spawn helper
 * started now, so that this process does not fork for them once it is large
 * (lib/spawner.ts). Call it early, while the process is small. False when
 * the helper is not built: commands are then started by this process.
 */
export function runCommandsViaHelper(): boolean {
  if (helper && !helper.ended) return true;
  if (!Spawner.available()) return false;
  helper = new Spawner();
  helper.start();
  return true;
}

/** Runs a program to completion; rejects with CommandError on a non-zero exit. */
export function run(argv: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
  const full = inNetns(opts.netns, argv);
  if (!full[0]) throw new Error("run: empty command");
  const h = helper;
  if (h === undefined || h.ended) return forkAndRun(full, opts);
  const timeoutMs = opts.timeoutMs ?? 60_000;
  return h
    .run({
      argv: full,
      timeoutMs,
      ...(opts.env ? { env: opts.env } : {}),
      ...(opts.input !== undefined ? { input: opts.input } : {}),
    })
    .then(
      (r) => {
        if (r.code === 0 && !r.timedOut) return { stdout: r.stdout, stderr: r.stderr };
        const why = r.timedOut
          ? `killed after ${timeoutMs} ms\n`
          : r.signal !== null
            ? `ended by signal ${r.signal}\n`
            : "";
        throw new CommandError(full, r.timedOut ? null : r.code, r.stdout, why + r.stderr);
      },
      (e: unknown) => {
        // The helper ended: this command, and the next ones, are started here.
        if (h.ended) return forkAndRun(full, opts);
        throw new CommandError(full, null, "", (e as Error).message);
      },
    );
}

function forkAndRun(full: string[], opts: RunOptions): Promise<RunResult> {
  const [file, ...args] = full as [string, ...string[]];
  return new Promise((resolve, reject) => {
    const child = execFile(
      file,
      args,
      {
        timeout: opts.timeoutMs ?? 60_000,
        maxBuffer: 256 * 1024 * 1024,
        env: { ...process.env, ...opts.env },
      },
      (err, stdout, stderr) => {
        if (err) {
          const code = typeof err.code === "number" ? err.code : null;
          reject(new CommandError(full, code, stdout, stderr));
        } else resolve({ stdout, stderr });
      },
    );
    if (opts.input !== undefined) child.stdin?.end(opts.input);
  });
}

/** Like run(), but resolves with the exit code instead of rejecting. */
export async function tryRun(
  argv: readonly string[],
  opts: RunOptions = {},
): Promise<RunResult & { code: number }> {
  try {
    return { ...(await run(argv, opts)), code: 0 };
  } catch (e) {
    if (e instanceof CommandError) return { stdout: e.stdout, stderr: e.stderr, code: e.code ?? -1 };
    throw e;
  }
}

/** Starts a long-running program detached from our process group; returns its pid. */
export function spawnDetached(
  argv: readonly string[],
  opts: { netns?: string; logFile?: number; env?: Record<string, string> } = {},
): number {
  const full = inNetns(opts.netns, argv);
  const [file, ...args] = full;
  if (!file) throw new Error("spawnDetached: empty command");
  const out = opts.logFile ?? "ignore";
  const child = spawn(file, args, {
    detached: true,
    stdio: ["ignore", out, out],
    env: { ...process.env, ...opts.env },
  });
  child.unref();
  if (child.pid === undefined) throw new Error(`could not start ${full.join(" ")}`);
  return child.pid;
}

/**
 * Whether a process runs: it exists and is not a zombie. (PID 1 on these
 * machines reaps orphans late, so a killed process can linger in state Z.)
 */
export function isRunning(pid: number): boolean {
  try {
    return !/^State:\s+Z/m.test(readFileSync(`/proc/${pid}/status`, "utf8"));
  } catch {
    return false;
  }
}
