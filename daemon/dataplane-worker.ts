// The daemon's data plane, in a worker thread (see dataplane.ts): config
// texts go in, small plan views come back, and the kernel is programmed from
// the worker. The main thread never holds the 100k-source plan, so no
// reload, plan or diff can stall it.
//
// The thread can end: a heap limit (heapMb) that a config is too large for,
// or a bug. Its calls in flight are then rejected, and a new thread is
// started and given the committed config again (prepared and committed, as
// the first time), so the kernel keeps being programmed to the config in
// force; a reload that was being prepared is refused. A thread that ends
// again and again is restarted with a growing delay.
import { Worker } from "node:worker_threads";
import type { NatCounter } from "../routing/nft.js";
import type { KernelChanges, TeardownSummary } from "../routing/reconcile.js";
import type { Dataplane, PrepareInput, Prepared } from "./dataplane.js";
import type { PolicyConfig } from "../core/config/schema.js";
import type { PlanView } from "../core/plan/index.js";
import { withSourceCounts } from "../core/plan/source-counts.js";
import type { DataplaneCall, DataplaneReply } from "./dataplane-thread.js";

export interface DataplaneWorkerOptions {
  /**
   * Limit of the thread's old-generation heap, in MB (default: V8's own). A
   * config that needs more is refused instead of growing the process.
   */
  heapMb?: number;
  /** Called when the thread ended unasked, with why, and when it was restarted. */
  onRestart?: (e: { reason: string; restarts: number; restored: boolean; error?: string }) => void;
  /** The thread's module (tests); default dataplane-thread.js. */
  threadUrl?: URL;
}

const MAX_DELAY_MS = 30_000;

export class DataplaneWorker implements Dataplane {
  private worker!: Worker;
  private nextId = 1;
  private readonly pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  private closed: Error | undefined;
  /** What each prepared plan was made from (until it is committed or dropped), by its id. */
  private readonly inputs = new Map<number, PrepareInput>();
  /** The committed file (text, bytes or config) and cluster policies, given to a new thread. */
  private committed: PrepareInput | undefined;
  /** Calls wait for this while a new thread is being given the committed config. */
  private restoring: Promise<void> = Promise.resolve();
  private restarts = 0;
  private delayMs = 0;

  constructor(private readonly opts: DataplaneWorkerOptions = {}) {
    this.start();
  }

  private start(): void {
    const worker = new Worker(this.opts.threadUrl ?? new URL("./dataplane-thread.js", import.meta.url), {
      resourceLimits: {
        // Bounded (V8 grows it to 16 MB per semi-space here); a full reload's cost did not change with it.
        maxYoungGenerationSizeMb: 8,
        ...(this.opts.heapMb ? { maxOldGenerationSizeMb: this.opts.heapMb } : {}),
      },
    });
    this.worker = worker;
    worker.unref();
    worker.on("message", (m: DataplaneReply) => {
      const p = this.pending.get(m.id);
      this.pending.delete(m.id);
      if (m.error !== undefined) p?.reject(new Error(m.error));
      else p?.resolve(m.value);
    });
    let why = "";
    worker.on("error", (e: Error & { code?: string }) => {
      why =
        e.code === "ERR_WORKER_OUT_OF_MEMORY"
          ? `it ran out of its ${this.opts.heapMb ?? "default"} MB heap (--dataplane-heap-mb)`
          : e.message;
    });
    worker.on("exit", (code) => {
      if (this.worker !== worker) return;
      const reason = `the data-plane thread ended: ${why || `exit code ${code}`}`;
      const err = new Error(reason);
      for (const p of this.pending.values()) p.reject(err);
      this.pending.clear();
      this.inputs.clear();
      if (this.closed) return;
      this.restart(reason);
    });
  }

  /** A new thread, given the committed config again before any other call reaches it. */
  private restart(reason: string): void {
    this.restarts++;
    const delay = this.delayMs;
    this.delayMs = Math.min(Math.max(this.delayMs * 2, 1000), MAX_DELAY_MS);
    this.restoring = new Promise<void>((resolve) => {
      const timer = setTimeout(() => {
        if (this.closed) return resolve();
        this.start();
        // The cluster's policies as the cluster model has them now (the thread applied edits to its own copy);
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
              // The thread's plan now (the cluster's policies as the model has them): the next moved pods' base.
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
      this.worker.postMessage({ id, op, arg });
    });
  }

  private async call<T>(op: DataplaneCall["op"], arg?: unknown): Promise<T> {
    // A thread that ends while being restored is restarted again, with a new promise.
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
    // Moved pods: the thread sent the source counts, not the view (dataplane-thread.ts).
    if ((p.view as PlanView | undefined) === undefined) {
      if (!this.committedView || !p.sourceCounts)
        throw new Error("the data-plane thread sent a plan without its view");
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
   * Where a new thread gets the cluster's policies from: the thread applies
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
    // What a new thread is given: the last file with the last cluster policies.
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

  /** Times the thread was restarted after it ended unasked. */
  get restartCount(): number {
    return this.restarts;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    await this.call("close").catch(() => undefined);
    this.closed = new Error("the data-plane worker was closed");
    await this.worker.terminate();
  }
}
