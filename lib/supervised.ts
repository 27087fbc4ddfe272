// A child process that egressd keeps running: restarted with backoff when it
// exits on its own, its output kept (the last lines) and passed on line by
// line, stopped with TERM then KILL. gobgpd and conntrackd run this way.
//
// The child should die with egressd: argv should start it under
// `setpriv --pdeathsig KILL` (the kernel kills it when the thread that forked
// it dies, even by SIGKILL; Node forks from its main thread; `ip netns exec`
// execs without forking, so it survives that).
import { spawn, type ChildProcess } from "node:child_process";
import { EventEmitter } from "node:events";
import { createInterface } from "node:readline";

export interface SupervisedOptions {
  /** What the process is called in errors. */
  name: string;
  /** The command; called at every start. */
  argv: () => string[];
  /** Runs before every start (e.g. removing a socket a killed predecessor left). */
  beforeStart?: () => void;
  /** Restart backoff bounds (default 200 ms .. 10 s); reset after 30 s of uptime. */
  restartMinMs?: number;
  restartMaxMs?: number;
  /** Lines of output kept for error messages (default 50). */
  keepLogLines?: number;
}

export interface SupervisedExit {
  pid: number;
  code: number | null;
  signal: NodeJS.Signals | null;
  /** The last lines the process printed. */
  lastLines: string[];
}

export interface SupervisedEvents {
  /** The process was (re)started; restarts counts earlier starts. */
  started: [{ pid: number; restarts: number }];
  /** The process exited while it should have been running; a restart is scheduled in restartInMs. */
  exited: [SupervisedExit & { restartInMs: number }];
  /** One line of its output (stdout or stderr). */
  log: [line: string];
}

export class Supervised extends EventEmitter<SupervisedEvents> {
  private child: ChildProcess | undefined;
  private stopping = false;
  private restarts = 0;
  private backoff: number;
  private restartTimer: NodeJS.Timeout | undefined;
  private startedAt = 0;
  private readonly lines: string[] = [];

  constructor(private readonly opts: SupervisedOptions) {
    super();
    this.backoff = opts.restartMinMs ?? 200;
  }

  get pid(): number | undefined {
    return this.child?.pid;
  }

  /** The last lines of output. */
  get recentLog(): string[] {
    return [...this.lines];
  }

  /** Starts the process; resolves with its pid once it runs (not once it serves). */
  async start(): Promise<number> {
    if (this.child) throw new Error(`${this.opts.name}: already started`);
    this.stopping = false;
    return this.spawnOnce();
  }

  private spawnOnce(): Promise<number> {
    this.opts.beforeStart?.();
    const argv = this.opts.argv();
    const [file, ...args] = argv;
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
        reject(new Error(`could not start ${this.opts.name} (${argv.join(" ")}): ${err.message}`));
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

  private scheduleRestart(exit: SupervisedExit): void {
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

  /** Stops the process (SIGTERM, then SIGKILL after graceMs) and does not restart it. */
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
  }
}
