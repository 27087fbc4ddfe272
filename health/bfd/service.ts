// What the gateway needs of BFD, whoever runs the sessions: the manager on
// this thread (tests, tools) or the manager in its own worker thread (the
// daemon, see worker.ts).
import type { EventEmitter } from "node:events";
import type { BfdManagerEvents, BfdManagerStats, BfdPeerConfig, BfdSessionInfo } from "./manager.js";

export interface BfdService extends EventEmitter<BfdManagerEvents> {
  /** Makes the sessions match `peers`; serialised; rejects naming the sessions that failed. */
  reconcile(peers: readonly BfdPeerConfig[]): Promise<void>;
  /** The sessions as last known (from a worker: at most a second old, and fresh after each reconcile). */
  list(): BfdSessionInfo[];
  /** Manager-wide counters (from a worker: as last sent; undefined before the first). */
  readonly stats: BfdManagerStats | undefined;
  /** Every session AdminDown, the peers told, sockets closed. */
  stop(): Promise<void>;
}
