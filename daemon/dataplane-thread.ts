// The data-plane worker thread: an InlineDataplane over the real kernel, on
// an event loop of its own. Started by dataplane-worker.ts; each message is
// one call, answered with its value or its error's message.
import { setPriority } from "node:os";
import { parentPort } from "node:worker_threads";
import { realKernel } from "../routing/kernel-actuator.js";
import { DEFAULTS } from "../core/defaults.js";
import { collectGarbage } from "../lib/gc.js";
import { runCommandsViaHelper } from "../lib/exec.js";
import { InlineDataplane, type Dataplane, type Prepared } from "./dataplane.js";

export type DataplaneCall = {
  [K in keyof Dataplane]: { id: number; op: K; arg: Parameters<Dataplane[K]>[0] };
}[keyof Dataplane];

export type DataplaneReply = { id: number; value?: unknown; error?: string };

const port = parentPort;
if (!port) throw new Error("dataplane-thread.js runs as a worker thread only");
// Background work: under CPU contention, this thread (parsing, planning,
// diffing 100k sources) gives way to the main thread and to BFD. On Linux
// the nice value is per thread, and raising it needs no privilege.
try {
  setPriority(DEFAULTS.nice.background);
} catch {
  // not on Linux: the thread runs at the process's priority
}
// This thread's commands (nft -f, conntrack) are started by a helper process, started now
// while the process is small (lib/spawner.ts); without the helper built, by this thread.
runCommandsViaHelper();
const dataplane = new InlineDataplane(realKernel(), { reclaim: collectGarbage });

port.on("message", (m: DataplaneCall) => {
  // Calls run in the order they arrive; each answers when it is done.
  const call = dataplane[m.op] as (arg: unknown) => Promise<unknown>;
  call.call(dataplane, m.arg).then(
    (value) => port.postMessage({ id: m.id, value: sent(value) } satisfies DataplaneReply),
    (e: unknown) =>
      port.postMessage({
        id: m.id,
        error: e instanceof Error ? e.message : String(e),
      } satisfies DataplaneReply),
  );
});

/**
 * What crosses to the main thread. A plan of moved pods leaves its view out
 * (at 1,000 policies, copying it cost milliseconds of each thread): the main
 * side makes it from the committed view and the source counts (DataplaneWorker).
 */
function sent(value: unknown): unknown {
  const p = value as Prepared | undefined;
  if (p?.ok !== true || !p.sourcesOnly || p.sourceCounts === undefined) return value;
  const { view: _, ...rest } = p;
  return rest;
}
