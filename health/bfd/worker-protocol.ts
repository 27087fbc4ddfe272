// The messages between the BFD worker thread and the thread that owns it.
import type {
  BfdDownEvent,
  BfdManagerStats,
  BfdPeerConfig,
  BfdSessionInfo,
  BfdStateEvent,
  BfdUpEvent,
} from "./manager.js";

export type BfdRequest = { op: "reconcile"; peers: BfdPeerConfig[] } | { op: "stop" };
export type ToWorker = BfdRequest & { id: number };

export type FromWorker =
  | { kind: "reply"; id: number; error?: string; sessions: BfdSessionInfo[]; stats: BfdManagerStats }
  | { kind: "sessions"; sessions: BfdSessionInfo[]; stats: BfdManagerStats }
  | { kind: "up"; event: BfdUpEvent }
  | { kind: "down"; event: BfdDownEvent }
  | { kind: "state"; event: BfdStateEvent }
  | { kind: "log"; level: "debug" | "info" | "warn" | "error"; obj: object; msg: string };
