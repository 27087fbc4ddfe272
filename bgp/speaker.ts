// What egressd needs from a BGP speaker, as an interface: GobgpClient (gobgpd
// over gRPC) is the real one; tests give a fake that records calls. The path
// and peer reconcilers and the gateway depend on this, never on gRPC.
import type { EventEmitter } from "node:events";
import type { BgpGlobal, BgpPath, BgpPeer, PeerStatus } from "../core/bgp.js";
import type { DecodedPath } from "./path-codec.js";
import type { GobgpClientEvents, ReadyInfo } from "./gobgp-client.js";

export interface Speaker extends EventEmitter<GobgpClientEvents> {
  readonly isReady: boolean;
  waitReady(timeoutMs?: number): Promise<ReadyInfo>;
  watch(what: { peers?: boolean; table?: boolean }): void;
  close(): Promise<void>;

  getBgp(): Promise<BgpGlobal | undefined>;
  startBgp(g: BgpGlobal): Promise<void>;
  stopBgp(): Promise<void>;
  rejectLearnedRoutes(): Promise<void>;

  listPeers(address?: string): Promise<PeerStatus[]>;
  addPeer(p: BgpPeer): Promise<void>;
  updatePeer(p: BgpPeer): Promise<{ needsSoftResetIn: boolean }>;
  deletePeer(address: string): Promise<void>;

  listLocalPaths(): Promise<DecodedPath[] | BgpPath[]>;
  addPath(p: BgpPath): Promise<string>;
  deletePath(p: Pick<BgpPath, "prefix" | "nextHop">): Promise<void>;
  /**
   * Withdraws and adds many paths in one call. `stillWanted` is asked about
   * each add right before it is sent (health can change while the call
   * yields); resolves with the adds sent.
   */
  applyPaths(d: {
    add: BgpPath[];
    withdraw: BgpPath[];
    stillWanted?: (p: BgpPath) => boolean;
  }): Promise<BgpPath[]>;
}
