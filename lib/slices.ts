// Reading a stream of messages without holding the event loop. A readable
// stream in flowing mode hands over every message it can get before the loop
// moves on: grpc-js decodes the next message of a server stream as soon as
// the last one was taken (process.nextTick and promise jobs, which run before
// timers and sockets), so gobgpd's answer to ListPath, 250 messages that
// arrive together, was decoded and mapped in one task of 20-60 ms on the
// main thread. Pausing the stream stops that: grpc-js reads no further
// message until the stream is resumed, and resuming from setImmediate lets
// timers and sockets run first.

import type { Readable } from "node:stream";

/** How long one turn of the event loop may spend on a stream's messages before it is given back. */
export const SLICE_MS = 4;

export interface SliceOptions {
  /** Monotonic clock in ms (default performance.now). */
  now?: () => number;
  /** Default SLICE_MS. */
  sliceMs?: number;
  /** What the promise rejects with when the stream fails (default: the stream's error). */
  streamError?: (e: Error) => Error;
}

/**
 * Calls `onItem` for each message of `stream` until it ends, pausing the
 * stream for a turn of the event loop whenever `sliceMs` have passed since
 * the turn began. Resolves when the stream ends; rejects with the stream's
 * error (through `streamError`), or with what `onItem` threw (the stream is
 * then ended through `cancel`, e.g. a gRPC call's cancel()).
 */
export function readInSlices<T>(
  stream: Readable,
  onItem: (item: T) => void,
  cancel: () => void,
  opts: SliceOptions = {},
): Promise<void> {
  const now = opts.now ?? (() => performance.now());
  const sliceMs = opts.sliceMs ?? SLICE_MS;
  return new Promise((resolve, reject) => {
    let turnStart: number | undefined;
    let failed = false;
    stream.on("data", (item: T) => {
      if (failed) return;
      turnStart ??= now();
      try {
        onItem(item);
      } catch (e) {
        failed = true;
        cancel();
        reject(e);
        return;
      }
      if (now() - turnStart >= sliceMs) {
        stream.pause();
        setImmediate(() => {
          turnStart = undefined;
          stream.resume();
        });
      }
    });
    stream.on("error", (e) => {
      if (failed) return;
      failed = true;
      reject(opts.streamError ? opts.streamError(e) : e);
    });
    stream.on("end", () => resolve());
  });
}

/**
 * A turn's budget for work written as a loop: `spent` once `sliceMs` have
 * passed since the turn began, and `nextTurn()` gives the event loop back
 * (timers and sockets run) and starts a new turn.
 */
export class TurnBudget {
  private readonly now: () => number;
  private readonly sliceMs: number;
  private start: number;

  constructor(opts: SliceOptions = {}) {
    this.now = opts.now ?? (() => performance.now());
    this.sliceMs = opts.sliceMs ?? SLICE_MS;
    this.start = this.now();
  }

  get spent(): boolean {
    return this.now() - this.start >= this.sliceMs;
  }

  async nextTurn(): Promise<void> {
    await new Promise((r) => setImmediate(r));
    this.start = this.now();
  }
}
