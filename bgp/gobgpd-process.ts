// Runs gobgpd as egressd's child ("managed mode").
//
// - The gRPC API listens on a unix socket (gobgpd accepts "unix://PATH" in
//   --api-hosts) or on a loopback address; never on all addresses.
// - pprof is off; there is no config file: everything goes through gRPC.
// - gobgpd dies with egressd: it runs under `setpriv --pdeathsig KILL`, so the
//   kernel kills it when the process that started it dies, even by SIGKILL.
//   (The death signal follows the thread that forked; Node forks from its main
//   thread. It survives `ip netns exec`, which execs without forking.)
// - If gobgpd exits on its own it is restarted with backoff; "started" is
//   emitted each time, and the client's "ready" tells when to re-apply state.
// - Sidecar mode needs none of this: just point GobgpClient at the address.
import { spawn, type ChildProcess } from "node:child_process";
import { EventEmitter } from "node:events";
import { mkdirSync, rmSync } from "node:fs";
import { dirname } from "node:path";
import { createInterface } from "node:readline";

export interface GobgpdProcessOptions {
  /** Unix socket path for the API (preferred). */
  socketPath?: string;
  /** Or a loopback host:port, e.g. "127.0.0.1:50051". */
  apiHost?: string;
  /** gobgpd binary (default "gobgpd" from PATH). */
  binary?: string;
  /** Start gobgpd inside this network namespace (ip netns exec). */
  netns?: string;
  /** gobgpd log level (default "info"). */
  logLevel?: "debug" | "info" | "warn" | "error";
  /** Restart backoff bounds (default 200 ms .. 10 s); reset after 30 s of uptime. */
  restartMinMs?: number;
  restartMaxMs?: number;
  /** Lines of gobgpd output kept for error messages (default 50). */
  keepLogLines?: number;
}

export interface GobgpdExit {
  pid: number;
  code: number | null;
  signal: NodeJS.Signals | null;
  /** The last lines gobgpd printed. */
  lastLines: string[];
}

export interface GobgpdProcessEvents {
  /** gobgpd was (re)started; restarts counts earlier starts. */
  started: [{ pid: number; restarts: number }];
  /** gobgpd exited while it should have been running; a restart is scheduled in restartInMs. */
  exited: [GobgpdExit & { restartInMs: number }];
  /** One line of gobgpd output (JSON log lines). */
  log: [line: string];
}

export class GobgpdProcess extends EventEmitter<GobgpdProcessEvents> {
  /** The gRPC target GobgpClient should use. */
  readonly target: string;
  private readonly opts: GobgpdProcessOptions;
  private child: ChildProcess | undefined;
  private stopping = false;
  private restarts = 0;
  private backoff: number;
  private restartTimer: NodeJS.Timeout | undefined;
  private startedAt = 0;
  private readonly lines: string[] = [];

  constructor(opts: GobgpdProcessOptions) {
    super();
    if (!!opts.socketPath === !!opts.apiHost) {
      throw new Error("GobgpdProcess: give exactly one of socketPath and apiHost");
    }
    if (opts.socketPath && Buffer.byteLength(opts.socketPath) > 100) {
      throw new Error(
        `GobgpdProcess: socket path ${opts.socketPath} is too long for a unix socket (max ~107 bytes)`,
      );
    }
    if (opts.apiHost && !/^(127\.\d+\.\d+\.\d+|\[::1\]|localhost):\d+$/.test(opts.apiHost)) {
      throw new Error(
        `GobgpdProcess: apiHost ${opts.apiHost} is not a loopback address (gobgpd's API has no auth)`,
      );
    }
    this.opts = opts;
    this.backoff = opts.restartMinMs ?? 200;
    this.target = opts.socketPath ? `unix://${opts.socketPath}` : (opts.apiHost as string);
  }

  get pid(): number | undefined {
    return this.child?.pid;
  }

  /** The last lines of gobgpd output. */
  get recentLog(): string[] {
    return [...this.lines];
  }

  /** The argv that runs gobgpd (inside the namespace, with the parent-death signal). */
  argv(): string[] {
    const api = this.opts.socketPath ? `unix://${this.opts.socketPath}` : (this.opts.apiHost as string);
    const gobgpd = [
      this.opts.binary ?? "gobgpd",
      "--api-hosts",
      api,
      "--pprof-disable",
      "--log-level",
      this.opts.logLevel ?? "info",
    ];
    const withDeathSig = ["setpriv", "--pdeathsig", "KILL", "--", ...gobgpd];
    return this.opts.netns ? ["ip", "netns", "exec", this.opts.netns, ...withDeathSig] : withDeathSig;
  }

  /** Starts gobgpd; resolves once the process is running (not yet serving: use GobgpClient.waitReady). */
  async start(): Promise<number> {
    if (this.child) throw new Error("GobgpdProcess: already started");
    this.stopping = false;
    return this.spawnOnce();
  }

  private spawnOnce(): Promise<number> {
    if (this.opts.socketPath) {
      // gobgpd cannot bind over a socket file left by a killed predecessor.
      mkdirSync(dirname(this.opts.socketPath), { recursive: true, mode: 0o700 });
      rmSync(this.opts.socketPath, { force: true });
    }
    const [file, ...args] = this.argv();
    const child = spawn(file as string, args, { stdio: ["ignore", "pipe", "pipe"] });
    this.child = child;
    for (const s of [child.stdout, child.stderr]) {
      if (!s) continue;
      createInterface({ input: s }).on("line", (line) => {
        this.lines.push(line);
        if (this.lines.length > (this.opts.keepLogLines ?? 50)) this.lines.shift();
        this.emit("log", line);
      });
    }
    return new Promise((resolve, reject) => {
      child.once("error", (err) => {
        this.child = undefined;
        reject(new Error(`could not start gobgpd (${this.argv().join(" ")}): ${err.message}`));
      });
      child.once("spawn", () => {
        this.startedAt = Date.now();
        const pid = child.pid as number;
        this.emit("started", { pid, restarts: this.restarts });
        resolve(pid);
      });
      child.once("exit", (code, signal) => this.onExit(child, code, signal));
    });
  }

  private onExit(child: ChildProcess, code: number | null, signal: NodeJS.Signals | null): void {
    if (this.child !== child) return;
    this.child = undefined;
    if (this.stopping) return;
    if (Date.now() - this.startedAt > 30_000) this.backoff = this.opts.restartMinMs ?? 200;
    this.scheduleRestart({ pid: child.pid ?? 0, code, signal, lastLines: this.recentLog });
  }

  private scheduleRestart(exit: GobgpdExit): void {
    const restartInMs = this.backoff;
    this.backoff = Math.min(this.backoff * 2, this.opts.restartMaxMs ?? 10_000);
    this.emit("exited", { ...exit, restartInMs });
    this.restartTimer = setTimeout(() => {
      this.restartTimer = undefined;
      if (this.stopping) return;
      this.restarts++;
      // Could not even exec: report it like an exit and keep trying.
      this.spawnOnce().catch((err: Error) =>
        this.scheduleRestart({ pid: 0, code: null, signal: null, lastLines: [err.message] }),
      );
    }, restartInMs);
  }

  /** Stops gobgpd (SIGTERM, then SIGKILL after graceMs) and does not restart it. */
  async stop(graceMs = 3000): Promise<void> {
    this.stopping = true;
    if (this.restartTimer) clearTimeout(this.restartTimer);
    this.restartTimer = undefined;
    const child = this.child;
    if (!child || child.exitCode !== null || child.signalCode !== null) {
      this.child = undefined;
      return;
    }
    const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
    child.kill("SIGTERM");
    const timer = setTimeout(() => child.kill("SIGKILL"), graceMs);
    await exited;
    clearTimeout(timer);
    this.child = undefined;
    if (this.opts.socketPath) rmSync(this.opts.socketPath, { force: true });
  }
}
