// The BFD worker thread: one BfdManager with its sockets and timers, on an
// event loop of its own. Whatever the main thread does (parsing a large
// config, planning, a long garbage collection) does not delay a packet sent
// or a packet received here. Started by worker.ts; speaks worker-protocol.ts.
import { setPriority } from "node:os";
import { parentPort } from "node:worker_threads";
import { DEFAULTS } from "../../core/defaults.js";
import { BfdManager, type BfdLogger } from "./manager.js";
import { OffloadTransport } from "./offload.js";
import type { FromWorker, ToWorker } from "./worker-protocol.js";

const port = parentPort;
if (!port) throw new Error("bfd worker-thread.js runs as a worker thread only");
// Deadlines of tens of milliseconds: ask the scheduler to run this thread
// before the rest of the process when the CPU is contended. On Linux the nice
// value is per thread; lowering it needs CAP_SYS_NICE, without which the
// thread keeps the process's priority (and the data-plane process, which
// lowers its own, still gives way).
try {
  setPriority(DEFAULTS.nice.detection);
} catch {
  // no CAP_SYS_NICE: default priority
}
const post = (m: FromWorker) => port.postMessage(m);

const logger: BfdLogger = {
  debug: (obj, msg) => post({ kind: "log", level: "debug", obj, msg }),
  info: (obj, msg) => post({ kind: "log", level: "info", obj, msg }),
  warn: (obj, msg) => post({ kind: "log", level: "warn", obj, msg }),
  error: (obj, msg) => post({ kind: "log", level: "error", obj, msg }),
};
// The sessions' periodic half runs in egressd-bfd: this thread wakes when something changes.
const transport = new OffloadTransport({ onError: (err) => logger.warn({ err: err.message }, "BFD helper") });
const manager = new BfdManager({ logger, transport });
manager.on("up", (event) => post({ kind: "up", event }));
manager.on("down", (event) => post({ kind: "down", event }));
manager.on("state", (event) => post({ kind: "state", event }));

// Counters and slack for /status and /metrics, once a second.
const refresh = setInterval(
  () => post({ kind: "sessions", sessions: manager.list(), stats: manager.stats }),
  1000,
);

port.on("message", (m: ToWorker) => {
  const done = (error?: unknown) =>
    post({
      kind: "reply",
      id: m.id,
      ...(error === undefined ? {} : { error: error instanceof Error ? error.message : String(error) }),
      sessions: manager.list(),
      stats: manager.stats,
    });
  const work = m.op === "reconcile" ? manager.reconcile(m.peers) : manager.stop();
  work.then(
    () => {
      if (m.op === "stop") clearInterval(refresh);
      done();
    },
    (e: unknown) => done(e),
  );
});
