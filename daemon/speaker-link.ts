// The gateway's side of the BGP speaker: starts gobgpd (managed) or reaches
// it (sidecar), follows its peers' session states, applies the desired BGP
// state through the reconcilers, and withdraws paths at once when health
// demands it. It remembers what it has advertised, so the fast path and the
// reconcile make the same diff.
import { join } from "node:path";
import type { EventEmitter } from "node:events";
import { GobgpClient } from "../bgp/gobgp-client.js";
import { GobgpdProcess } from "../bgp/gobgpd-process.js";
import { diffPaths, PathReconciler } from "../bgp/path-reconciler.js";
import { PeerReconciler } from "../bgp/peer-reconciler.js";
import { diagnoseConnect, ReportBackoff } from "../bgp/peer-diagnosis.js";
import type { Speaker } from "../bgp/speaker.js";
import { canonicalAddress, canonicalPath, type BgpPath, type SessionState } from "../core/bgp.js";
import type { BgpConfig } from "../core/config/bgp-schema.js";
import type { ConfigView } from "../core/plan/index.js";
import type { BgpDesired } from "../core/plan/bgp.js";
import type { GatewayEvents, WithdrawReason } from "./events.js";
import type { Logger } from "./log.js";
import { within } from "../lib/wait.js";

export interface SpeakerLinkOptions {
  log: Logger;
  events: EventEmitter<GatewayEvents>;
  runDir: string;
  /** The config in force (peers, for names and reports). */
  config: () => ConfigView;
  /** Asks the controller for a reconcile. */
  trigger: (why: string) => void;
  /** Peers BFD has closed: not re-created after a drop, reported as closed by egressd. */
  bfdDown: () => ReadonlySet<string>;
  /** A peer reached Established (BFD may start now). */
  onEstablished: (address: string) => void;
  draining: () => boolean;
  /** Connects to a speaker instead of starting or reaching gobgpd (tests). */
  connect?: (bgp: BgpConfig) => Speaker;
  diagnose?: typeof diagnoseConnect;
  now?: () => number;
}

/** A peer whose session dropped is re-created at most this often (gobgpd's idle hold applies in between). */
const RECREATE_EVERY_MS = 3000;

export class SpeakerLink {
  private gobgpd: GobgpdProcess | undefined;
  private client: Speaker | undefined;
  private bgpStarted = false;
  /** The speaker answered at least once (until then, not reachable means not up yet). */
  private connectedOnce = false;
  /** gobgpd's global import policy rejects learned routes (set once per gobgpd connection). */
  private importGuarded = false;
  private advertisedPaths: BgpPath[] = [];
  private readonly states = new Map<string, SessionState>();
  /** Peers to delete and add again in the next apply (see afterSessionDrop). */
  private readonly recreate = new Set<string>();
  private readonly recreatedAt = new Map<string, number>();
  /** Since when each configured peer has not been Established (absent: it is). */
  private readonly downSince = new Map<string, number>();
  private readonly reports = new ReportBackoff();
  private readonly diagnose: typeof diagnoseConnect;
  private readonly now: () => number;

  constructor(private readonly opts: SpeakerLinkOptions) {
    this.diagnose = opts.diagnose ?? diagnoseConnect;
    this.now = opts.now ?? Date.now;
  }

  /** What gobgpd advertises now, as far as egressd knows. */
  get advertised(): readonly BgpPath[] {
    return this.advertisedPaths;
  }

  get peerStates(): ReadonlyMap<string, SessionState> {
    return this.states;
  }

  /** The speaker answers (the gobgpd self-check). */
  get ready(): boolean {
    return this.client?.isReady === true;
  }

  get managed(): boolean {
    return this.gobgpd !== undefined;
  }

  /** Starts (managed) or reaches (sidecar) gobgpd, and follows its peers. */
  async start(bgp: BgpConfig): Promise<void> {
    let target = "(injected)";
    let client: Speaker;
    if (this.opts.connect) client = this.opts.connect(bgp);
    else {
      target = await this.startGobgpd(bgp);
      client = new GobgpClient({ target });
    }
    this.client = client;
    const { log } = this.opts;
    client.on("ready", (info) => {
      this.connectedOnce = true;
      this.bgpStarted = info.started && info.asn === bgp.asn;
      log.info({ target, bgpStarted: info.started }, "connected to gobgpd");
      this.opts.trigger("gobgpd ready");
    });
    client.on("disconnected", (reason) => {
      this.bgpStarted = false;
      this.importGuarded = false;
      this.advertisedPaths = [];
      this.states.clear();
      // Before the first connection this is gobgpd still starting, not a loss.
      if (this.connectedOnce) log.warn({ reason }, "lost gobgpd");
      else log.info({ reason }, "waiting for gobgpd");
    });
    client.on("peer", (ev) => this.onPeer(ev.address, ev.state, ev.peerAsn));
    client.on("warning", (e) => log.warn({ err: e }, "gobgpd client"));
    client.watch({ peers: true });
    await client.waitReady(15_000);
  }

  private async startGobgpd(bgp: BgpConfig): Promise<string> {
    const speaker = bgp.speaker ?? {};
    if ((speaker.mode ?? "managed") !== "managed") return speaker.address as string;
    const { log, events } = this.opts;
    this.gobgpd = new GobgpdProcess({
      socketPath: join(this.opts.runDir, "gobgpd.sock"),
      binary: speaker.binary ?? "/usr/bin/gobgpd",
      logLevel: "warn",
    });
    this.gobgpd.on("exited", (e) =>
      log.error(
        {
          pid: e.pid,
          code: e.code,
          signal: e.signal,
          restartInMs: e.restartInMs,
          lastLines: e.lastLines.slice(-5),
        },
        "gobgpd exited; restarting it",
      ),
    );
    this.gobgpd.on("started", (s) => {
      log.info({ pid: s.pid, restarts: s.restarts }, "gobgpd started");
      if (s.restarts > 0) events.emit("gobgpdRestart", s);
    });
    await this.gobgpd.start();
    return this.gobgpd.target;
  }

  private onPeer(eventAddress: string, state: SessionState, peerAsn: number | undefined): void {
    // gobgpd's events name a link-local peer without its interface: match on the address alone.
    const configured = this.opts.config().bgp?.peers.find((x) => sameHost(x.address, eventAddress));
    const address = configured?.address ?? eventAddress;
    const name = configured?.name ?? eventAddress;
    const before = this.states.get(address);
    if (before === state) return;
    this.states.set(address, state);
    this.opts.log.info({ peer: name, address, asn: peerAsn, state }, "BGP peer state");
    this.opts.events.emit("peer", { name, address, state });
    if (before === "established" && state === "idle") this.afterSessionDrop(address, name);
    if (state === "established") this.opts.onEstablished(address);
  }

  /**
   * gobgpd keeps a session that dropped (the ToR's `clear bgp`, a hold-timer
   * expiry, a notification) Idle for a fixed 5 s and closes the ToR's
   * reconnects meanwhile; the idle hold cannot be configured over its API. A
   * peer that is deleted and added again starts with no idle hold, so the
   * next reconcile re-creates it: the session is back in about a second. At
   * most once per RECREATE_EVERY_MS per peer, so a peer that keeps dropping
   * still gets gobgpd's hold between attempts. Not for a session egressd
   * closed itself (BFD down removes the peer from the desired state).
   */
  private afterSessionDrop(address: string, name: string): void {
    if (this.opts.draining() || this.opts.bfdDown().has(address)) return;
    const last = this.recreatedAt.get(address) ?? -Infinity;
    if (this.now() - last < RECREATE_EVERY_MS) return;
    this.recreatedAt.set(address, this.now());
    this.recreate.add(address);
    this.opts.log.info(
      { peer: name, address },
      "BGP session dropped: re-creating the peer to skip gobgpd's 5 s idle hold",
    );
    this.opts.trigger("session dropped");
  }

  /**
   * A peer that is not Established is reported with the reason a TCP connect
   * to it gives (refused, no route, timed out, ...): first after 10 s, then at
   * doubling intervals up to 5 minutes. Without this, a peer that never comes
   * up leaves no trace in the log.
   */
  async reportDownPeers(now: number): Promise<void> {
    for (const p of this.opts.config().bgp?.peers ?? []) {
      if (this.states.get(p.address) === "established") {
        if (this.downSince.delete(p.address)) this.reports.reset(p.address);
        continue;
      }
      if (!this.downSince.has(p.address)) this.downSince.set(p.address, now);
      if (!this.reports.due(p.address, this.downSince.get(p.address)!, now)) continue;
      const state = this.states.get(p.address) ?? "not configured in gobgpd yet";
      const connect = this.opts.bfdDown().has(p.address)
        ? "closed by egressd: BFD is down"
        : await this.diagnose(p.address, p.localAddress ? { localAddress: p.localAddress } : {});
      this.opts.log.warn(
        {
          peer: p.name,
          address: p.address,
          state,
          downForS: Math.round((now - this.downSince.get(p.address)!) / 1000),
          connect,
        },
        `BGP peer not established: ${connect === "reachable" ? "the port answers, so look at the peer's config (AS, address, password)" : connect}`,
      );
    }
  }

  /** The paths of `desired` that are advertised now and must go (the reconcile's own diff). */
  urgentWithdrawals(desired: BgpPath[]): BgpPath[] {
    return diffPaths(desired, this.advertisedPaths).withdraw;
  }

  /** Sends withdrawals to the speaker now, ahead of the reconcile that follows. */
  withdrawAtOnce(gone: BgpPath[], reason: WithdrawReason): void {
    if (!gone.length) return;
    const drop = new Set(gone.map((p) => canonicalPath(p).prefix));
    this.advertisedPaths = this.advertisedPaths.filter((p) => !drop.has(canonicalPath(p).prefix));
    const client = this.client;
    if (client?.isReady) {
      void Promise.all(gone.map((p) => client.deletePath(p))).then(
        () => this.opts.log.warn({ withdrawn: [...drop], reason }, "withdrawn at once"),
        (e: Error) => this.opts.log.error({ err: e }, "fast withdraw failed; the reconcile retries"),
      );
    }
    this.opts.events.emit("withdrawn", { prefixes: [...drop], reason });
  }

  /**
   * Makes gobgpd match `d`: identity, the import guard, peers, paths. While
   * the kernel is not programmed (`kernelFailed`) only withdrawals are sent.
   * `stillWanted` is asked again just before each add, so a path health took
   * back while this ran is not added.
   */
  async apply(
    d: BgpDesired | undefined,
    kernelFailed: boolean,
    stillWanted: (prefix: string) => boolean,
  ): Promise<string[]> {
    const client = this.client;
    if (!d || !client) return [];
    const out = await this.applySessions(d);
    const pathDiff = await new PathReconciler(client).reconcile(d.paths, {
      withdrawOnly: kernelFailed,
      stillWanted: (p) => stillWanted(p.prefix),
    });
    for (const p of pathDiff.withdraw) out.push(`-path ${p.prefix}`);
    for (const p of pathDiff.add) out.push(`+path ${p.prefix}`);
    if (pathDiff.held.length) {
      out.push(
        `held ${pathDiff.held.length} path(s) back: ${kernelFailed ? "the kernel is not programmed" : "withdrawn meanwhile"}`,
      );
    }
    const held = new Set(pathDiff.held.map((p) => p.prefix));
    this.advertisedPaths = d.paths.filter((p) => !held.has(canonicalPath(p).prefix));
    this.opts.events.emit("advertised", { paths: this.advertisedPaths.length });
    if (pathDiff.withdraw.length) {
      this.opts.events.emit("withdrawn", {
        prefixes: pathDiff.withdraw.map((p) => p.prefix),
        reason: "config",
      });
    }
    return out;
  }

  /**
   * Makes gobgpd's identity, import guard and peers match `d`, leaving the
   * paths alone. At start it runs beside the kernel's first programming
   * (the "sessions" target), so that the sessions open meanwhile; apply()
   * runs it again, which then changes nothing.
   */
  async applySessions(d: BgpDesired | undefined): Promise<string[]> {
    const client = this.client;
    if (!d || !client) return [];
    if (!client.isReady) throw new Error("gobgpd is not reachable yet");
    const out: string[] = [];
    if (!this.bgpStarted) {
      const current = await client.getBgp();
      const same = current && current.asn === d.global.asn && current.routerId === d.global.routerId;
      if (current && current.asn !== 0 && !same) {
        // A different identity cannot be changed in place.
        await client.stopBgp();
        out.push(`stopped BGP AS${current.asn}`);
      }
      if (!same) {
        await client.startBgp(d.global);
        out.push(`started BGP AS${d.global.asn} router-id ${d.global.routerId}`);
      }
      this.bgpStarted = true;
    }
    if (!this.importGuarded) {
      // Before any peer is added: a session must never bring learned routes in.
      await client.rejectLearnedRoutes();
      this.importGuarded = true;
    }
    for (const address of this.recreate) {
      this.recreate.delete(address);
      if (!d.peers.some((p) => p.address === address)) continue;
      await client.deletePeer(address).catch(() => undefined); // gone already: added below all the same
      out.push(`-peer ${address} (re-created after a session drop)`);
    }
    const peerDiff = await new PeerReconciler(client).reconcile(d.peers);
    for (const p of peerDiff.add) out.push(`+peer ${p.address} AS${p.peerAsn}`);
    for (const p of [...peerDiff.update, ...peerDiff.replace]) out.push(`~peer ${p.address}`);
    for (const a of peerDiff.delete) out.push(`-peer ${a}`);
    this.peersApplied = true;
    return out;
  }

  /** applySessions has brought the peers in line once since start. */
  peersApplied = false;

  /**
   * Withdraws every path, then closes the connection and stops a managed
   * gobgpd (its sessions close, so whatever it advertised is gone). Returns
   * whether nothing is advertised any more; false when a sidecar could not be
   * told to withdraw.
   */
  async withdrawAllAndClose(stepMs: number, beforeClose: () => Promise<void>): Promise<boolean> {
    let withdrawn = false;
    if (this.client && !this.client.isReady) await this.client.waitReady(3000).catch(() => undefined);
    if (this.client?.isReady) {
      try {
        await within(new PathReconciler(this.client).reconcile([]), stepMs, "withdrawing every path");
        withdrawn = true;
      } catch (e) {
        this.opts.log.warn({ err: e }, "could not withdraw paths before stopping");
      }
    }
    await beforeClose();
    await this.client?.close();
    if (this.gobgpd) {
      await this.gobgpd.stop();
      withdrawn = true;
    }
    return withdrawn;
  }
}

/** Whether two peer addresses name the same host, whatever the interface suffix ("fe80::1%eth1" vs "fe80::1"). */
function sameHost(a: string, b: string): boolean {
  const host = (x: string) => {
    const bare = x.split("%")[0]!;
    try {
      return canonicalAddress(bare);
    } catch {
      return bare;
    }
  };
  return host(a) === host(b);
}
