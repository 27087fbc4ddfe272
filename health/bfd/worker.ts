// BFD in a worker thread, as the daemon runs it: the sessions' timers and
// sockets live on the worker's event loop, so a busy main thread cannot make
// egressd miss its own transmit times (and the ToR declare it dead), nor
// read late packets as a missed detection time. State changes arrive here as
// events, in order; list() answers from the last snapshot the worker sent.
import { EventEmitter } from "node:events";
import { Worker } from "node:worker_threads";
import type {
  BfdLogger,
  BfdManagerEvents,
  BfdManagerStats,
  BfdPeerConfig,
  BfdSessionInfo,
} from "./manager.js";
import type { BfdService } from "./service.js";
import type { BfdRequest, FromWorker, ToWorker } from "./worker-protocol.js";

export class BfdWorker extends EventEmitter<BfdManagerEvents> implements BfdService {
  private readonly worker: Worker;
  private sessions: BfdSessionInfo[] = [];
  private lastStats: BfdManagerStats | undefined;
  private nextId = 1;
  private readonly pending = new Map<number, { resolve: () => void; reject: (e: Error) => void }>();
  private exited: Error | undefined;

  constructor(opts: { logger?: BfdLogger } = {}) {
    super();
    this.worker = new Worker(new URL("./worker-thread.js", import.meta.url), {
      // A small young generation: the thread allocates little, and each scavenge stays far shorter than
      // a BFD interval (docs/scale.md, Memory).
      resourceLimits: { maxYoungGenerationSizeMb: 2 },
    });
    this.worker.unref();
    this.worker.on("message", (m: FromWorker) => {
      switch (m.kind) {
        case "reply": {
          this.sessions = m.sessions;
          this.lastStats = m.stats;
          const p = this.pending.get(m.id);
          this.pending.delete(m.id);
          if (m.error === undefined) p?.resolve();
          else p?.reject(new Error(m.error));
          break;
        }
        case "sessions":
          this.sessions = m.sessions;
          this.lastStats = m.stats;
          break;
        case "up":
          this.emit("up", m.event);
          break;
        case "down":
          this.emit("down", m.event);
          break;
        case "state":
          this.emit("state", m.event);
          break;
        case "log":
          opts.logger?.[m.level](m.obj, m.msg);
          break;
      }
    });
    const fail = (e: Error) => {
      this.exited = e;
      for (const p of this.pending.values()) p.reject(e);
      this.pending.clear();
      opts.logger?.error({ err: e }, "the BFD worker thread ended");
    };
    this.worker.on("error", fail);
    this.worker.on("exit", (code) => {
      if (!this.exited) fail(new Error(`the BFD worker thread exited (code ${code})`));
    });
  }

  private request(m: BfdRequest): Promise<void> {
    if (this.exited) return Promise.reject(this.exited);
    const id = this.nextId++;
    return new Promise<void>((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.worker.postMessage({ ...m, id } satisfies ToWorker);
    });
  }

  reconcile(peers: readonly BfdPeerConfig[]): Promise<void> {
    return this.request({ op: "reconcile", peers: [...peers] });
  }

  list(): BfdSessionInfo[] {
    return this.sessions;
  }

  /** The manager's counters as the worker last sent them (at most a second old). */
  get stats(): BfdManagerStats | undefined {
    return this.lastStats;
  }

  async stop(): Promise<void> {
    if (this.exited) return;
    await this.request({ op: "stop" });
    this.exited = new Error("the BFD worker was stopped");
    await this.worker.terminate();
  }
}
