// BFD towards the BGP peers that ask for it, as the gateway uses it: which
// sessions run (bootstrapped by BGP), which peers BFD has closed, and when a
// closed peer is given back to BGP. The gateway hears about changes through
// onChange and plans with `down`.
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
  onChange: (what: "down" | "reopened", peer: string) => void;
  /** BFD says a peer's session is gone (an event for metrics and logs). */
  onFailover: () => void;
}

export class BfdPeers {
  private readonly closed = new Set<string>();
  private readonly reopenTimers = new Map<string, NodeJS.Timeout>();
  private readonly bootstrapped = new Set<string>();

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
    manager.on("up", (e) => this.reopen(e.peer, "BFD up"));
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
        if (!p.bfd || p.bfd.enabled === false || !p.localAddress) return false;
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
  }
}
