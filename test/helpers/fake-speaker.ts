// A stand-in for a BGP speaker (gobgpd behind GobgpClient) that keeps its
// state in memory and records every call in order: global settings, peers,
// locally originated paths. Failures can be queued per method, a hook runs
// while a path read is in flight (to change the world between a reconcile's
// read and its writes), and peer state changes are emitted on demand.
import { EventEmitter } from "node:events";
import {
  canonicalPath,
  canonicalPeer,
  type BgpGlobal,
  type BgpPath,
  type BgpPeer,
  type PeerStatus,
  type SessionState,
} from "../../core/bgp.js";
import type { GobgpClientEvents, ReadyInfo } from "../../bgp/gobgp-client.js";
import type { Speaker } from "../../bgp/speaker.js";

export class FakeSpeaker extends EventEmitter<GobgpClientEvents> implements Speaker {
  readonly paths = new Map<string, BgpPath>();
  readonly peers = new Map<string, BgpPeer>();
  global: BgpGlobal | undefined;
  importRejected = false;
  isReady = true;
  /** Every call, in order: "+prefix", "-prefix", "list", "+peer addr", "-peer addr", ... */
  readonly calls: string[];
  /** Runs inside listLocalPaths, after the read and before it resolves. */
  duringRead: (() => void) | undefined;
  private readonly failures = new Map<string, Error[]>();

  /** `log` may be shared with other fakes, to see the order of everything. */
  constructor(log: string[] = []) {
    super();
    this.calls = log;
  }

  /** The next call of `method` throws `error` (queue several to fail several). */
  failNext(method: string, error = new Error(`${method} failed (injected)`)): void {
    this.failures.set(method, [...(this.failures.get(method) ?? []), error]);
  }

  private call(method: string, record?: string): void {
    if (record !== undefined) this.calls.push(record);
    const queued = this.failures.get(method);
    const e = queued?.shift();
    if (e) throw e;
  }

  /** Emits a session state change for a peer, as gobgpd's watch would. */
  setPeerState(address: string, state: SessionState): void {
    const p = this.peers.get(address);
    this.emit("peer", this.status(address, p?.peerAsn ?? 0, state));
  }

  private status(address: string, peerAsn: number, state: SessionState): PeerStatus {
    const p = this.peers.get(address);
    return {
      address,
      peerAsn,
      state,
      adminDown: false,
      flops: 0,
      negotiatedHoldTime: 0,
      families: [],
      config: p ?? { address, peerAsn },
    };
  }

  asClient(): Speaker {
    return this;
  }

  waitReady(): Promise<ReadyInfo> {
    return Promise.resolve({ started: this.global !== undefined, asn: this.global?.asn ?? 0 } as ReadyInfo);
  }

  watch(): void {
    // As the real client does once connected: say so, after the caller has subscribed.
    setImmediate(() =>
      this.emit("ready", { started: this.global !== undefined, asn: this.global?.asn ?? 0 } as ReadyInfo),
    );
  }

  close(): Promise<void> {
    this.isReady = false;
    return Promise.resolve();
  }

  getBgp(): Promise<BgpGlobal | undefined> {
    this.call("getBgp");
    return Promise.resolve(this.global);
  }

  startBgp(g: BgpGlobal): Promise<void> {
    this.call("startBgp", `start AS${g.asn}`);
    this.global = g;
    return Promise.resolve();
  }

  stopBgp(): Promise<void> {
    this.call("stopBgp", "stop");
    this.global = undefined;
    return Promise.resolve();
  }

  rejectLearnedRoutes(): Promise<void> {
    this.call("rejectLearnedRoutes", "import reject");
    this.importRejected = true;
    return Promise.resolve();
  }

  listPeers(): Promise<PeerStatus[]> {
    this.call("listPeers");
    return Promise.resolve([...this.peers.values()].map((p) => this.status(p.address, p.peerAsn, "active")));
  }

  addPeer(p: BgpPeer): Promise<void> {
    this.call("addPeer", `+peer ${p.address}`);
    this.peers.set(p.address, canonicalPeer(p));
    return Promise.resolve();
  }

  updatePeer(p: BgpPeer): Promise<{ needsSoftResetIn: boolean }> {
    this.call("updatePeer", `~peer ${p.address}`);
    this.peers.set(p.address, canonicalPeer(p));
    return Promise.resolve({ needsSoftResetIn: false });
  }

  deletePeer(address: string): Promise<void> {
    this.call("deletePeer", `-peer ${address}`);
    this.peers.delete(address);
    return Promise.resolve();
  }

  listLocalPaths(): Promise<BgpPath[]> {
    this.call("listLocalPaths", "list");
    const out = [...this.paths.values()];
    this.duringRead?.();
    return Promise.resolve(out);
  }

  addPath(p: BgpPath): Promise<string> {
    this.call("addPath", `+${p.prefix}`);
    this.paths.set(canonicalPath(p).prefix, canonicalPath(p));
    return Promise.resolve(p.prefix);
  }

  deletePath(p: Pick<BgpPath, "prefix" | "nextHop">): Promise<void> {
    this.call("deletePath", `-${p.prefix}`);
    this.paths.delete(canonicalPath({ ...p }).prefix);
    return Promise.resolve();
  }

  async applyPaths(d: {
    add: BgpPath[];
    withdraw: BgpPath[];
    stillWanted?: (p: BgpPath) => boolean;
  }): Promise<BgpPath[]> {
    for (const p of d.withdraw) await this.deletePath(p);
    const added: BgpPath[] = [];
    for (const p of d.add) {
      if (d.stillWanted && !d.stillWanted(p)) continue;
      await this.addPath(p);
      added.push(p);
    }
    return added;
  }
}
