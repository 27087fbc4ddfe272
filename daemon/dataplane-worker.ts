// The daemon's data plane, in a process of its own (dataplane-process.ts;
// see dataplane.ts): config texts go in, small plan views come back, and the
// kernel is programmed from that process. The main thread never holds the
// 100k-source plan, nor shares a heap, a collector's lock or V8's helper
// threads with it, so no reload, plan or diff can stall it.
//
// The process can end: a heap limit (heapMb) that a config is too large
// for, or a bug. Its calls in flight are then rejected, and a new process is
// started and given the committed config again (prepared and committed, as
// the first time), so the kernel keeps being programmed to the config in
// force; a reload that was being prepared is refused. A process that ends
// again and again is restarted with a growing delay. Its life is egressd's:
// it ends when its IPC channel closes, so a killed egressd leaves no data
// plane behind.
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync } from "node:fs";
import type { Socket } from "node:net";
import { fileURLToPath } from "node:url";
import type { NatCounter } from "../routing/nft.js";
import type { KernelChanges, TeardownSummary } from "../routing/reconcile.js";
import type { Dataplane, PrepareInput, Prepared } from "./dataplane.js";
import type { PolicyConfig } from "../core/config/schema.js";
import type { PlanView } from "../core/plan/index.js";
import { withSourceCounts } from "../core/plan/source-counts.js";
import type { DataplaneCall, DataplaneReply } from "./dataplane-process.js";
import { dataplaneNodeFlags, HEAP_MB, NODE_ENV } from "./node-flags.js";

export interface DataplaneWorkerOptions {
  /**
   * Limit of the process's old-generation heap, in MB (default: egressd's,
   * NODE_FLAGS). A config that needs more is refused instead of growing it.
   */
  heapMb?: number;
  /** Called when the process ended unasked, with why, and when it was restarted. */
  onRestart?: (e: { reason: string; restarts: number; restored: boolean; error?: string }) => void;
}

/** A call as sent (its op and arg as loose as send's). */
type Wire = { id: number; op: DataplaneCall["op"]; arg?: unknown; raw?: number };

const MAX_DELAY_MS = 30_000;
/** How much of the process's stderr is kept to say why it ended. */
const STDERR_KEPT = 16 << 10;
/** After close, how long the process has to exit before it is killed. */
const CLOSE_GRACE_MS = 5000;
const PRLIMIT = "/usr/bin/prlimit";

export class DataplaneWorker implements Dataplane {
  private child!: ChildProcess;
  private nextId = 1;
  private readonly pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  private closed: Error | undefined;
  /** What each prepared plan was made from (until it is committed or dropped), by its id. */
  private readonly inputs = new Map<number, PrepareInput>();
  /** The committed file (text, bytes or config) and cluster policies, given to a new process. */
  private committed: PrepareInput | undefined;
  /** Calls wait for this while a new process is being given the committed config. */
  private restoring: Promise<void> = Promise.resolve();
  private restarts = 0;
  private delayMs = 0;
  private exited: Promise<void> = Promise.resolve();

  constructor(private readonly opts: DataplaneWorkerOptions = {}) {
    this.start();
  }

  private start(): void {
    const script = fileURLToPath(new URL("./dataplane-process.js", import.meta.url));
    const argv = [process.execPath, ...dataplaneNodeFlags(this.opts.heapMb), script];
    // A config over the heap limit ends the process with V8's abort: no core dump of a heap
    // that size for bad input. Node cannot set its own limits; prlimit (util-linux, in every
    // Debian) sets it and then runs node in its place, so the pid and the channel stay the same.
    if (existsSync(PRLIMIT)) argv.unshift(PRLIMIT, "--core=0", "--");
    // stdin: config bytes; stdout: nothing is written there (egressd's log is its own stdout);
    // stderr: kept, to say why the process ended, and passed on (a crash's trace is the operator's).
    const child = spawn(argv[0]!, argv.slice(1), {
      stdio: ["pipe", "ignore", "pipe", "ipc"],
      serialization: "advanced",
      // Its malloc arenas (NODE_ENV), whoever started egressd.
      env: { ...process.env, ...NODE_ENV },
    });
    this.child = child;
    // These do not keep egressd running (its servers and timers do), but a call waiting for
    // its answer does: the process and its channel are held while one is pending (hold).
    this.hold(false);
    (child.stdin as Socket).unref();
    (child.stderr as Socket).unref();
    child.stdin!.on("error", () => {}); // the process ended: 'exit' below says so
    let stderr = "";
    child.stderr!.setEncoding("utf8");
    child.stderr!.on("data", (s: string) => {
      process.stderr.write(s);
      stderr = (stderr + s).slice(-STDERR_KEPT);
    });
    child.on("message", (m: DataplaneReply) => {
      const p = this.pending.get(m.id);
      this.pending.delete(m.id);
      if (this.pending.size === 0) this.hold(false);
      if (m.error !== undefined) p?.reject(new Error(m.error));
      else p?.resolve(m.value);
    });
    let spawnError = "";
    // Why it ended is known once its stderr is read to the end, which may come after 'exit'.
    const stderrRead = new Promise<void>((resolve) => child.stderr!.once("close", resolve));
    let ended = false;
    this.exited = new Promise<void>((resolve) => {
      const end = (code: number | null, signal: NodeJS.Signals | null) => {
        if (ended) return;
        ended = true;
        // Held until read to its end: calls still waiting are rejected then, and a program with
        // nothing else to do must not exit before (a pending call kept it running until now).
        (child.stderr as Socket).ref();
        void stderrRead.then(() => {
          resolve();
          if (this.child !== child) return;
          const reason = `the data-plane process ended: ${whyEnded(stderr, spawnError, code, signal, this.opts.heapMb)}`;
          const err = new Error(reason);
          for (const p of this.pending.values()) p.reject(err);
          this.pending.clear();
          this.inputs.clear();
          if (this.closed) return;
          this.restart(reason);
        });
      };
      child.once("exit", end);
      child.on("error", (e) => {
        spawnError = e.message;
        // Not started at all (no 'exit' follows): it ended as it began.
        if (child.pid === undefined) end(null, null);
      });
    });
  }

  /**
   * Whether the process (its exit) and its channel keep this program running: while a call
   * waits for its answer, or learns that the process ended.
   */
  private hold(on: boolean): void {
    if (on) {
      this.child.ref();
      this.child.channel?.ref();
    } else {
      this.child.unref();
      this.child.channel?.unref();
    }
  }

  /** A new process, given the committed config again before any other call reaches it. */
  private restart(reason: string): void {
    this.restarts++;
    const delay = this.delayMs;
    this.delayMs = Math.min(Math.max(this.delayMs * 2, 1000), MAX_DELAY_MS);
    this.restoring = new Promise<void>((resolve) => {
      const timer = setTimeout(() => {
        if (this.closed) return resolve();
        this.start();
        // The cluster's policies as the cluster model has them now (the process applied edits to its own copy);
        // before the model's first sync, the list committed last (the last run's, during an API outage).
        const fromModel = this.clusterSource?.();
        const committed =
          this.committed && fromModel
            ? ({ ...this.committed, cluster: fromModel } as PrepareInput)
            : this.committed;
        const restore = committed
          ? this.send<Prepared>("prepare", committed).then(async (p) => {
              if (!p.ok) throw new Error(`the committed config no longer prepares: ${p.errors[0]?.message}`);
              await this.send("commit", p.id);
              // The process's plan now (the cluster's policies as the model has them): the next moved pods' base.
              this.committedView = p.view;
            })
          : Promise.resolve();
        restore.then(
          () => {
            this.delayMs = 0;
            this.opts.onRestart?.({ reason, restarts: this.restarts, restored: committed !== undefined });
            resolve();
          },
          (e: unknown) => {
            // The exit handler restarts it again, later; until then calls wait.
            this.opts.onRestart?.({ reason, restarts: this.restarts, restored: false, error: String(e) });
            resolve();
          },
        );
      }, delay);
      timer.unref();
    });
  }

  private send<T>(op: DataplaneCall["op"], arg?: unknown): Promise<T> {
    const id = this.nextId++;
    return new Promise<T>((resolve, reject) => {
      this.pending.set(id, { resolve: resolve as (v: unknown) => void, reject });
      this.hold(true);
      const failed = (e: Error | null) => {
        if (!e || !this.pending.delete(id)) return;
        reject(new Error(`the data-plane process is gone: ${e.message}`));
      };
      const bytes = op === "prepare" ? (arg as { bytes?: Uint8Array }).bytes : undefined;
      if (bytes === undefined) return void this.child.send({ id, op, arg } satisfies Wire, failed);
      // The bytes go on stdin, written from the caller's buffer: a message would copy
      // them twice on this thread (serialized, then framed), into pages never touched before.
      this.child.stdin!.write(bytes);
      const call = { id, op, arg: { ...arg!, bytes: new Uint8Array(0) }, raw: bytes.byteLength };
      this.child.send(call satisfies Wire, failed);
    });
  }

  private async call<T>(op: DataplaneCall["op"], arg?: unknown): Promise<T> {
    // A process that ends while being restored is restarted again, with a new promise.
    for (let r = this.restoring; ; r = this.restoring) {
      await r;
      if (r === this.restoring) break;
    }
    if (this.closed) throw this.closed;
    return this.send<T>(op, arg);
  }

  async prepare(input: PrepareInput): Promise<Prepared> {
    const p = await this.call<Prepared>("prepare", input);
    if (!p.ok) return p;
    // Moved pods: the process sent the source counts, not the view (dataplane-process.ts).
    if ((p.view as PlanView | undefined) === undefined) {
      if (!this.committedView || !p.sourceCounts)
        throw new Error("the data-plane process sent a plan without its view");
      p.view = withSourceCounts(this.committedView, new Map(p.sourceCounts));
    }
    this.inputs.set(p.id, input);
    this.views.set(p.id, p.view);
    return p;
  }

  /** The view of each prepared plan, by id, and of the committed one: a plan of moved pods is made from it. */
  private readonly views = new Map<number, PlanView>();
  private committedView: PlanView | undefined;

  private clusterSource: (() => PolicyConfig[] | undefined) | undefined;

  /**
   * Where a new process gets the cluster's policies from: the process applies
   * the cluster's edits to its own copy, which dies with it. Undefined from
   * `fn`: it has none yet (not synced), and the committed list is given.
   */
  setClusterSource(fn: () => PolicyConfig[] | undefined): void {
    this.clusterSource = fn;
  }

  async commit(id: number): Promise<void> {
    await this.call("commit", id);
    const input = this.inputs.get(id);
    this.committedView = this.views.get(id) ?? this.committedView;
    this.views.clear();
    this.inputs.clear();
    if (input === undefined || "clusterEdits" in input) return;
    // What a new process is given: the last file with the last cluster policies.
    const cluster = input.cluster ?? this.committed?.cluster;
    const claims = input.claims ?? this.committed?.claims;
    const file = "text" in input || "bytes" in input || "config" in input ? input : this.committed;
    if (file === undefined) return;
    const { cluster: _, claims: _c, ...fileOnly } = file;
    this.committed = {
      ...fileOnly,
      ...(cluster ? { cluster } : {}),
      ...(claims ? { claims } : {}),
    } as PrepareInput;
  }

  async discard(id: number): Promise<void> {
    this.inputs.delete(id);
    await this.call("discard", id);
  }

  apply(): Promise<KernelChanges> {
    return this.call("apply");
  }

  teardown(): Promise<TeardownSummary> {
    return this.call("teardown");
  }

  natCounters(): Promise<NatCounter[]> {
    return this.call("natCounters");
  }

  saveCluster(runDir: string): Promise<void> {
    return this.call("saveCluster", runDir);
  }

  /** The process's id (undefined while it could not be started). */
  get pid(): number | undefined {
    return this.child.pid;
  }

  /** Times the process was restarted after it ended unasked. */
  get restartCount(): number {
    return this.restarts;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    // A process that has ended has nothing to close, and its restart is not waited for: that
    // timer does not hold the program, and one with nothing else to do would end waiting (13).
    if (this.child.exitCode === null && this.child.signalCode === null)
      await this.call("close").catch(() => undefined);
    this.closed = new Error("the data-plane process was closed");
    // The closed channel ends the process (dataplane-process.ts); one that does not is killed.
    const child = this.child;
    // Held until it has exited (and then until its stderr is read to the end: start's 'exit').
    child.ref();
    if (child.connected) child.disconnect();
    const kill = setTimeout(() => child.kill("SIGKILL"), CLOSE_GRACE_MS);
    await this.exited;
    clearTimeout(kill);
  }
}

/** Why the data-plane process ended, from what it wrote last and how it exited. */
export function whyEnded(
  stderr: string,
  spawnError: string,
  code: number | null,
  signal: NodeJS.Signals | null,
  heapMb: number | undefined,
): string {
  if (/heap out of memory|Reached heap limit/.test(stderr))
    return `it ran out of its ${heapMb ?? HEAP_MB} MB heap (--dataplane-heap-mb)`;
  if (spawnError) return spawnError;
  // node's last words for an uncaught error: its message, the stack, then its version.
  const lines = stderr.split("\n").map((l) => l.trim());
  const said = lines.find((l) => /^(\w*Error|Uncaught)\b/.test(l)) ?? lines.filter(Boolean).at(-1);
  const how = signal ? `signal ${signal}` : `exit code ${code}`;
  return said ? `${said} (${how})` : how;
}
