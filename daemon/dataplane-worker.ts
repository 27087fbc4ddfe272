// The daemon's data plane, in a worker thread (see dataplane.ts): config
// texts go in, small plan views come back, and the kernel is programmed from
// the worker. The main thread never holds the 100k-source plan, so no
// reload, plan or diff can stall it.
import { Worker } from "node:worker_threads";
import type { NatCounter } from "../routing/nft.js";
import type { KernelChanges, TeardownSummary } from "../routing/reconcile.js";
import type { Dataplane, PrepareInput, Prepared } from "./dataplane.js";
import type { DataplaneCall, DataplaneReply } from "./dataplane-thread.js";

export class DataplaneWorker implements Dataplane {
  private readonly worker: Worker;
  private nextId = 1;
  private readonly pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  private ended: Error | undefined;

  constructor() {
    this.worker = new Worker(new URL("./dataplane-thread.js", import.meta.url));
    this.worker.unref();
    this.worker.on("message", (m: DataplaneReply) => {
      const p = this.pending.get(m.id);
      this.pending.delete(m.id);
      if (m.error !== undefined) p?.reject(new Error(m.error));
      else p?.resolve(m.value);
    });
    const end = (e: Error) => {
      this.ended ??= e;
      for (const p of this.pending.values()) p.reject(e);
      this.pending.clear();
    };
    this.worker.on("error", end);
    this.worker.on("exit", (code) => end(new Error(`the data-plane worker thread exited (code ${code})`)));
  }

  private call<T>(op: DataplaneCall["op"], arg?: unknown): Promise<T> {
    if (this.ended) return Promise.reject(this.ended);
    const id = this.nextId++;
    return new Promise<T>((resolve, reject) => {
      this.pending.set(id, { resolve: resolve as (v: unknown) => void, reject });
      this.worker.postMessage({ id, op, arg });
    });
  }

  prepare(input: PrepareInput): Promise<Prepared> {
    return this.call("prepare", input);
  }

  commit(id: number): Promise<void> {
    return this.call("commit", id);
  }

  discard(id: number): Promise<void> {
    return this.call("discard", id);
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

  async close(): Promise<void> {
    if (this.ended) return;
    await this.call("close");
    this.ended = new Error("the data-plane worker was closed");
    await this.worker.terminate();
  }
}
