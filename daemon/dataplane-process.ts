// The data-plane process: an InlineDataplane over the real kernel, in a node
// process of its own, started by dataplane-worker.ts. Each IPC message is one
// call, answered with its value or its error's message; a config file's
// bytes come on stdin instead (DataplaneCall.raw), so the main thread never
// copies them into a message.
//
// A process and not a worker thread: a thread shares the main thread's V8,
// and with it cppgc's process-wide lock, which a collection holds through
// its final pause, and V8's helper threads, which every parallel phase
// waits for. The data plane's forced collections after each plan
// (lib/gc.ts) then kept the main loop waiting 20-50 ms (docs/scale.md, "The
// loop's turns, from the kernel").
import { DEFAULTS } from "../core/defaults.js";
import { realKernel } from "../routing/kernel-actuator.js";
import { collectGarbage } from "../lib/gc.js";
import { runCommandsViaHelper } from "../lib/exec.js";
import { ByteReader } from "../lib/byte-reader.js";
import { reniceProcess } from "../lib/threads.js";
import { InlineDataplane, type Dataplane, type Prepared } from "./dataplane.js";

export type DataplaneCall = {
  [K in keyof Dataplane]: {
    id: number;
    op: K;
    arg: Parameters<Dataplane[K]>[0];
    /** prepare of `bytes`: the bytes are the next `raw` bytes on stdin, and arg.bytes is empty. */
    raw?: number;
  };
}[keyof Dataplane];

export type DataplaneReply = { id: number; value?: unknown; error?: string };

const send = process.send?.bind(process);
if (!send) throw new Error("dataplane-process.js runs as egressd's data-plane process only (an IPC channel)");
// What ps and top show (the kernel's name for it is the first 15 characters).
process.title = "egressd-dataplane";
// Its life is egressd's: when the channel closes (egressd stopped, or was
// killed), this process ends too, whatever it was doing.
process.on("disconnect", () => process.exit(0));
// Signals meant for egressd reach this process too when they are sent to its
// process group (a terminal's ^C, `kill -- -PGID`): egressd drains on SIGTERM
// and SIGINT and reloads on SIGHUP, and needs its data plane for both.
for (const signal of ["SIGINT", "SIGTERM", "SIGHUP"] as const) process.on(signal, () => {});
// Background work: under CPU contention, this process (parsing, planning,
// diffing 100k sources, and V8 collecting their heap) gives way to egressd's
// main thread and to BFD. On Linux the nice value belongs to a thread, and
// threads take their creator's: all of this process's threads are set now
// (V8's helpers and libuv's pool started before this code ran), and what
// starts later (the command helper process, more of libuv's threads) takes it
// from them. Raising it needs no privilege.
reniceProcess(DEFAULTS.nice.background);
// This process's commands (nft -f, conntrack) are started by a helper process, started now
// while the process is small (lib/spawner.ts); without the helper built, by this process.
runCommandsViaHelper();
const dataplane = new InlineDataplane(realKernel(), { reclaim: collectGarbage });
const stdin = new ByteReader(process.stdin);

// Calls start in the order they arrive (a prepare first waits for its bytes);
// each answers when it is done.
let arriving: Promise<void> = Promise.resolve();
process.on("message", (m: DataplaneCall) => {
  arriving = arriving.then(async () => {
    let arg: unknown = m.arg;
    if (m.raw !== undefined) {
      try {
        arg = { ...(m.arg as object), bytes: await stdin.take(m.raw) };
      } catch (e) {
        // stdin ended: egressd is gone, and 'disconnect' ends this process.
        return reply(m.id, Promise.reject(e as Error));
      }
    }
    const call = dataplane[m.op] as ((arg: unknown) => Promise<unknown>) | undefined;
    if (typeof call !== "function")
      return reply(m.id, Promise.reject(new Error(`no such call: ${String(m.op)}`)));
    // A call that throws before it returns a promise is answered with its error too, and
    // must not break this chain: every later call would wait on it for ever.
    reply(m.id, new Promise((resolve) => resolve(call.call(dataplane, arg))));
  });
});

function reply(id: number, value: Promise<unknown>): void {
  value.then(
    (v) => send!({ id, value: sent(v) } satisfies DataplaneReply),
    (e: unknown) => send!({ id, error: e instanceof Error ? e.message : String(e) } satisfies DataplaneReply),
  );
}

/**
 * What crosses to the main thread. A plan of moved pods leaves its view out
 * (at 1,000 policies, copying it cost milliseconds of each side): the main
 * side makes it from the committed view and the source counts (DataplaneWorker).
 */
function sent(value: unknown): unknown {
  const p = value as Prepared | undefined;
  if (p?.ok !== true || !p.sourcesOnly || p.sourceCounts === undefined) return value;
  const { view: _, ...rest } = p;
  return rest;
}
