// BFD towards the BGP peers that ask for it, as the gateway uses it: which
// sessions run (bootstrapped by BGP), which peers BFD has closed, when a
// closed peer is given back to BGP, and whether the gateway may advertise yet
// after its start (`holdsBack`). The gateway hears about changes through
// onChange and plans with `down` and `holdsBack`.
import type { SessionState } from "../core/bgp.js";
import { DEFAULTS } from "../core/defaults.js";
import type { BfdPeerConfig } from "../health/bfd/manager.js";
import type { BfdService } from "../health/bfd/service.js";
import type { ConfigView } from "../core/plan/index.js";
import type { Logger } from "./log.js";

export interface BfdPeersOptions {
  log: Logger;
  /** The config in force (hold times, BFD settings). */
  config: () => ConfigView;
  /** A peer was closed by BFD, or given back: health must be evaluated again. */
  onChange: (what: "down" | "reopened" | "armed", peer: string) => void;
  /** BFD says a peer's session is gone (an event for metrics and logs). */
  onFailover: () => void;
}

export class BfdPeers {
  private readonly closed = new Set<string>();
  private readonly reopenTimers = new Map<string, NodeJS.Timeout>();
  private readonly bootstrapped = new Set<string>();
  /** Since the start, until armed: the peers seen Established, the BFD peers seen Up, and those whose hold time ran out first. */
  private readonly seenEstablished = new Set<string>();
  private readonly upOnce = new Set<string>();
  private readonly heldOut = new Set<string>();
  private readonly armTimers: NodeJS.Timeout[] = [];
  private armed = false;

  constructor(
    readonly manager: BfdService,
    private readonly opts: BfdPeersOptions,
  ) {
    manager.on("down", (e) => {
      // Our own AdminDown (stopping) and the peer's (BFD deconfigured or the
      // peer shutting it down on purpose, RFC 5882 3.2) are not failures.
      if (e.to === "AdminDown" || e.peerAdminDown || this.closed.has(e.peer)) return;
      opts.log.warn(
        { peer: e.peer, name: e.name, reason: e.reason },
        "BFD down: closing the BGP session to this peer",
      );
      this.closed.add(e.peer);
      opts.onFailover();
      opts.onChange("down", e.peer);
      // A BFD that stays down must not keep BGP closed for good: after the
      // hold time, BGP's own liveness decides again.
      const hold =
        opts.config().bgp?.peers.find((p) => p.address === e.peer)?.holdTime ?? DEFAULTS.bgp.holdTime;
      clearTimeout(this.reopenTimers.get(e.peer));
      const timer = setTimeout(() => this.reopen(e.peer, "BFD still down after the hold time"), hold * 1000);
      timer.unref();
      this.reopenTimers.set(e.peer, timer);
    });
    manager.on("up", (e) => {
      this.reopen(e.peer, "BFD up");
      if (this.armed) return;
      this.upOnce.add(e.peer);
      this.opts.onChange("armed", e.peer);
    });
  }

  /**
   * Why nothing may be advertised yet, or undefined once it may. After the
   * start, the gateway waits until each BFD peer whose BGP session came up has
   * had its BFD session Up once. A BGP session comes up about a second before
   * its BFD session (BFD is bootstrapped by BGP, see desired(), and a peer's
   * BFD sends once a second until it is Up); traffic attracted in that second
   * would, if this gateway then failed, be lost for the peer's whole BGP hold
   * time, as the lab's demo showed (a 9.6 s stall after a freeze 3 s after a
   * restart). Once armed, it stays armed: a session that comes back later is
   * BFD's and BGP's usual business. A peer whose BFD is not Up within its BGP
   * hold time stops holding the gateway back: BGP's own liveness is then the
   * detection, as it would be without BFD.
   */
  holdsBack(): string | undefined {
    if (this.armed) return undefined;
    const peers = this.opts.config().bgp?.peers ?? [];
    if (this.seenEstablished.size === 0)
      return peers.some(bfdPeer) ? "no BGP session established yet" : undefined;
    const waiting = peers.filter(
      (p) =>
        bfdPeer(p) &&
        this.seenEstablished.has(p.address) &&
        !this.upOnce.has(p.address) &&
        !this.heldOut.has(p.address),
    );
    if (waiting.length > 0) return `BFD with ${waiting.map((p) => p.name).join(", ")} not up yet (BGP is)`;
    this.armed = true;
    for (const t of this.armTimers.splice(0)) clearTimeout(t);
    const late = peers.filter(
      (p) => bfdPeer(p) && this.heldOut.has(p.address) && !this.upOnce.has(p.address),
    );
    if (late.length > 0)
      this.opts.log.warn(
        { peers: late.map((p) => p.name) },
        "BFD not up within the BGP hold time: advertising without it (the peers' hold timers detect a failure of this gateway)",
      );
    else {
      const up = peers.filter((p) => this.upOnce.has(p.address)).map((p) => p.name);
      if (up.length > 0) this.opts.log.info({ peers: up }, "BFD up with the peers: advertising");
    }
    return undefined;
  }

  /** A peer's BGP session reached Established (from the speaker). */
  established(address: string): void {
    if (this.armed || this.seenEstablished.has(address)) return;
    this.seenEstablished.add(address);
    const p = this.opts.config().bgp?.peers.find((x) => x.address === address);
    if (p && bfdPeer(p)) {
      const timer = setTimeout(() => {
        this.heldOut.add(address);
        this.opts.onChange("armed", address);
      }, holdMs(p));
      timer.unref();
      this.armTimers.push(timer);
    }
    this.opts.onChange("armed", address);
  }

  /** Peers whose BGP session BFD has closed. */
  get down(): ReadonlySet<string> {
    return this.closed;
  }

  private reopen(peer: string, why: string): void {
    clearTimeout(this.reopenTimers.get(peer));
    this.reopenTimers.delete(peer);
    if (!this.closed.delete(peer)) return;
    this.opts.log.info({ peer, why }, "reopening the BGP session");
    this.opts.onChange("reopened", peer);
  }

  /**
   * The sessions that should run. A peer's BFD session starts once its BGP
   * session has been Established, and then stays (BGP dropping is what BFD is
   * there to see). Starting it earlier costs a BGP session with FRR: bgpd
   * registers its BFD session again when the BGP session comes up (it learns
   * the source address then), and a BFD session that was already Up reports
   * Down to bgpd through that re-registration, which tears the brand-new BGP
   * session down (Cease/BFD Down) and adds about 2 s to every start.
   * Bootstrapping BFD from the client protocol is what RFC 5882 describes.
   */
  desired(peerStates: ReadonlyMap<string, SessionState>): BfdPeerConfig[] {
    return (this.opts.config().bgp?.peers ?? [])
      .filter((p) => {
        if (!bfdPeer(p)) return false;
        if (peerStates.get(p.address) === "established") this.bootstrapped.add(p.address);
        return this.bootstrapped.has(p.address);
      })
      .map((p) => ({
        peer: p.address,
        local: p.localAddress as string,
        name: p.name,
        desiredMinTxMs: p.bfd?.minTxMs ?? DEFAULTS.bfd.minTxMs,
        requiredMinRxMs: p.bfd?.minRxMs ?? DEFAULTS.bfd.minRxMs,
        detectMultiplier: p.bfd?.multiplier ?? DEFAULTS.bfd.multiplier,
        ...(p.bfd?.auth ? { auth: p.bfd.auth } : {}),
      }));
  }

  /** Whether a peer's BFD session has been bootstrapped by its BGP session. */
  isBootstrapped(peer: string): boolean {
    return this.bootstrapped.has(peer);
  }

  /** Makes the sessions match desired(); returns what changed. */
  async apply(peerStates: ReadonlyMap<string, SessionState>): Promise<string[]> {
    const before = new Set(this.manager.list().map((s) => s.peer));
    await this.manager.reconcile(this.desired(peerStates));
    const after = new Set(this.manager.list().map((s) => s.peer));
    return [
      ...[...after].filter((p) => !before.has(p)).map((p) => `+bfd ${p}`),
      ...[...before].filter((p) => !after.has(p)).map((p) => `-bfd ${p}`),
    ];
  }

  /** AdminDown to every peer, then no more timers. */
  async stop(): Promise<void> {
    await this.manager.stop();
    for (const t of this.reopenTimers.values()) clearTimeout(t);
    for (const t of this.armTimers.splice(0)) clearTimeout(t);
  }
}

type PeerConfig = NonNullable<ReturnType<BfdPeersOptions["config"]>["bgp"]>["peers"][number];

/** A peer that runs BFD (it needs the local address to bind to). */
function bfdPeer(p: PeerConfig): boolean {
  return !!p.bfd && p.bfd.enabled !== false && !!p.localAddress;
}

function holdMs(p: PeerConfig): number {
  return (p.holdTime ?? DEFAULTS.bgp.holdTime) * 1000;
}
