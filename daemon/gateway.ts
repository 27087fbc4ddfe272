// One gateway at run time: the imperative shell around plan().
//
//   config --plan()--> KernelState --reconcileKernel--> netlink + nftables
//                  \-> planBgp(health) --peers/paths--> gobgpd (gRPC)
//   probes, self-checks, BFD --> health --> planBgp (fast path: withdraw at once)
//
// The Controller serialises reconciles; every input change is a trigger. A
// probe going down does not wait for one: the paths it guards are withdrawn
// from gobgpd straight from the probe's callback, then the reconcile follows.
import { EventEmitter } from "node:events";
import { mkdirSync, readlinkSync, rmSync } from "node:fs";
import { join } from "node:path";
import { GobgpClient } from "../bgp/gobgp-client.js";
import { GobgpdProcess } from "../bgp/gobgpd-process.js";
import {
  canonicalAddress,
  canonicalPath,
  canonicalPeer,
  type BgpPath,
  type SessionState,
} from "../bgp/model.js";
import { diffPaths, PathReconciler } from "../bgp/path-reconciler.js";
import { PeerReconciler } from "../bgp/peer-reconciler.js";
import { diagnoseConnect, ReportBackoff } from "../bgp/peer-diagnosis.js";
import { BfdManager } from "../health/bfd/manager.js";
import {
  Prober,
  validateProbeSpec,
  type CheckSpec,
  type ProbeSpec,
  type ProbeTransition,
} from "../health/prober.js";
import { changed, type KernelChanges } from "../routing/reconcile.js";
import type { NatCounter } from "../routing/nft.js";
import { realKernel, type KernelActuator } from "../routing/kernel-actuator.js";
import type { Speaker } from "../bgp/speaker.js";
import { Controller, type ReconcileResult, type ReconcileTarget } from "./controller.js";
import type { BgpConfig } from "./config/bgp-schema.js";
import type { GatewayEvents, WithdrawReason } from "./events.js";
import type { Logger } from "./log.js";
import { plan } from "./plan.js";
import { advertiseScope, planBgp, type AdvertiseScope, type BgpDesired } from "./plan/bgp.js";
import { healthFrom, SELF_ADDRESS, type HealthView } from "./plan/health.js";
import type { KernelState } from "../core/state.js";
import type { StatusSnapshot } from "./status.js";
import { statusView } from "./status-view.js";
import { DEFAULTS } from "../core/defaults.js";
import { writePidFile } from "./pidfile.js";
import { BfdPeers } from "./bfd-peers.js";

export type { GatewayConfig } from "./gateway-config.js";
import type { GatewayConfig } from "./gateway-config.js";

export interface Desired {
  kernel: KernelState;
  bgp: BgpDesired | undefined;
}

/** Stand-ins for the real actuators (tests); each one left out is the real thing. */
export interface Actuators {
  kernel: KernelActuator;
  /** Connects to a BGP speaker instead of starting or reaching gobgpd. */
  speaker: (bgp: BgpConfig) => Speaker;
  bfd: BfdManager;
  /** Why a peer does not come up (default: a TCP connect to its port 179, see bgp/peer-diagnosis.ts). */
  diagnose: typeof diagnoseConnect;
}

export interface GatewayOptions {
  log: Logger;
  actuators?: Partial<Actuators>;
  /** Where gobgpd's API socket and the pid file live; default: per network namespace under /run/egressd. */
  runDir?: string;
  resyncMs?: number;
}

/** A run directory unique to this network namespace (gateways of a lab share one filesystem). */
export function defaultRunDir(): string {
  const m = /\[(\d+)\]/.exec(readlinkSync("/proc/self/ns/net"));
  return join("/run/egressd", `net-${m?.[1] ?? "default"}`);
}

function describeKernel(c: KernelChanges): string[] {
  if (!changed(c)) return [];
  return [
    ...c.addresses.added.map((a) => `+address ${a}`),
    ...c.addresses.removed.map((a) => `-address ${a}`),
    ...(c.nat.action !== "none" ? [`nft ${c.nat.action}`] : []),
    ...(c.guard !== "none" ? [`guard table ${c.guard}`] : []),
    ...c.routes.added.map((r) => `+route ${r}`),
    ...c.routes.removed.map((r) => `-route ${r}`),
    ...c.rules.added.map((r) => `+rule ${r}`),
    ...c.rules.removed.map((r) => `-rule ${r}`),
  ];
}

/** Self-checks: the gateway watches its own data plane and speaker. */
const SELF = {
  intervalMs: 500,
  timeoutMs: 1000,
  rise: 1,
  fall: 2,
  holdDownMs: 1000,
  damping: false,
} as const;

export class Gateway {
  readonly events = new EventEmitter<GatewayEvents>();
  readonly runDir: string;
  private config: GatewayConfig;
  private readonly log: Logger;
  private readonly kernel: KernelActuator;
  private readonly controller: Controller<Desired>;
  private readonly prober = new Prober();
  private readonly bfd: BfdManager;
  private readonly bfdPeers: BfdPeers;
  private readonly connectSpeaker: ((bgp: BgpConfig) => Speaker) | undefined;
  private readonly diagnose: typeof diagnoseConnect;
  /** What depends on the config alone, computed once per config rather than on every health change. */
  private planned: Planned | undefined;
  private health: HealthView;
  /** Canonical prefixes health allows now (undefined: not evaluated yet); guards adds of a running reconcile. */
  private allowed: Set<string> | undefined;
  private selfChecks = new Set<string>();
  private draining = false;
  private gobgpd: GobgpdProcess | undefined;
  private client: Speaker | undefined;
  private bgpStarted = false;
  /** gobgpd's global import policy rejects learned routes (set once per gobgpd connection). */
  private importGuarded = false;
  private advertised: BgpPath[] = [];
  private readonly peerStates = new Map<string, SessionState>();
  /** Peers to delete and add again in the next BGP apply (see afterSessionDrop). */
  private readonly recreate = new Set<string>();
  private readonly recreatedAt = new Map<string, number>();
  /** Since when each configured peer has not been Established (absent: it is). */
  private readonly downSince = new Map<string, number>();
  private readonly peerReports = new ReportBackoff();
  private kernelOk = false;
  private readonly startedAt = new Date();
  private lastReconcile: (ReconcileResult & { at: Date }) | undefined;
  private tick = Date.now();
  private readonly heartbeat: NodeJS.Timeout;

  constructor(config: GatewayConfig, opts: GatewayOptions) {
    this.config = config;
    this.log = opts.log;
    this.runDir = opts.runDir ?? defaultRunDir();
    this.health = healthFrom(config, new Map());
    this.kernel = opts.actuators?.kernel ?? realKernel();
    this.connectSpeaker = opts.actuators?.speaker;
    this.diagnose = opts.actuators?.diagnose ?? diagnoseConnect;
    this.bfd = opts.actuators?.bfd ?? new BfdManager({ logger: this.log });
    this.bfdPeers = new BfdPeers(this.bfd, {
      log: this.log,
      config: () => this.config,
      onChange: () => this.updateHealth("bfd"),
      onFailover: () => this.events.emit("failover", { trigger: "bfd" }),
    });
    const targets: ReconcileTarget<Desired>[] = [
      {
        name: "kernel",
        apply: async (d) => {
          this.kernelOk = false;
          const result = await this.kernel.apply(d.kernel);
          const missing = result.addresses.missingInterface;
          // Partly programmed is not programmed: BGP must not advertise on it.
          if (missing.length) {
            throw new Error(
              `${missing.join(", ")}: no such interface, so not programmed (retrying); ` +
                `applied: ${describeKernel(result).join(", ") || "nothing else to change"}`,
            );
          }
          this.kernelOk = true;
          return describeKernel(result);
        },
      },
      // Nothing is advertised that the kernel has not programmed: while the
      // kernel target fails, BGP applies withdrawals only.
      { name: "bgp", apply: (d, failed) => this.applyBgp(d.bgp, failed.has("kernel")) },
      { name: "bfd", apply: () => this.bfdPeers.apply(this.peerStates) },
    ];
    this.controller = new Controller<Desired>({
      log: this.log,
      desired: () => this.desired(),
      targets,
      resyncMs: opts.resyncMs ?? 30_000,
      onReconciled: (r) => {
        this.lastReconcile = { ...r, at: new Date() };
        this.events.emit("reconciled", r);
      },
    });
    this.heartbeat = setInterval(() => {
      this.tick = Date.now();
      void this.reportDownPeers(this.tick);
    }, 1000);
    this.heartbeat.unref();
    this.prober.on("transition", (t) => this.onProbe(t));
    // The prober survives a throwing listener; a health evaluation that threw
    // must not leave withdrawals disabled: fail safe.
    this.prober.on("error", (e) => this.failSafe(e));
    this.prober.on("sample", (s) => this.events.emit("probeSample", s));
    this.bfd.on("state", (e) => {
      const to =
        e.to.toLowerCase() === "admindown" ? "admin-down" : (e.to.toLowerCase() as "up" | "down" | "init");
      this.events.emit("bfd", { name: e.name ?? e.peer, peer: e.peer, state: to, reason: e.reason });
    });
  }

  get currentConfig(): GatewayConfig {
    return this.config;
  }

  private plannedNow(): Planned {
    if (this.planned?.config !== this.config) this.planned = planConfig(this.config);
    return this.planned;
  }

  private kernelPlan(): KernelState {
    return this.plannedNow().kernel;
  }

  desired(): Desired {
    const { kernel, scope } = this.plannedNow();
    const cfg = this.config;
    const bgp = cfg.bgp
      ? planBgp(cfg as GatewayConfig & { bgp: BgpConfig }, kernel, this.health, scope)
      : undefined;
    return { kernel, bgp };
  }

  async start(): Promise<void> {
    mkdirSync(this.runDir, { recursive: true, mode: 0o700 });
    writePidFile(join(this.runDir, "egressd.pid"));
    if (this.config.bgp) await this.startSpeaker(this.config.bgp);
    // Program the data plane first, so the self-checks have something to check.
    this.controller.start();
    await this.controller.idle();
    this.syncProbes();
    this.prober.start();
  }

  /** Configured probes and self-checks, from the current config; unchanged ones keep their state. */
  private syncProbes(): void {
    this.prober.sync(probeSpecs(this.config));
    const checks = new Map<string, CheckSpec>();
    const add = (c: CheckSpec) => checks.set(c.name, c);
    for (const a of this.kernelPlan().addresses) {
      add({
        name: `${SELF_ADDRESS}${a.address}`,
        target: a.address,
        check: this.kernel.checks.address(a.address),
        ...SELF,
      });
    }
    for (const family of new Set(this.kernelPlan().nat.policies.map((p) => p.family))) {
      add({ name: `self-forwarding-ipv${family}`, check: this.kernel.checks.forwarding(family), ...SELF });
    }
    add({ name: "self-nft-table", check: this.kernel.checks.nftTable(), ...SELF, intervalMs: 1000 });
    if (this.config.bgp)
      add({ name: "self-gobgpd", check: async () => this.client?.isReady === true, ...SELF });
    for (const name of this.selfChecks) if (!checks.has(name)) this.prober.remove(name);
    for (const [name, spec] of checks) if (!this.selfChecks.has(name)) this.prober.addCheck(spec);
    this.selfChecks = new Set(checks.keys());
  }

  private selfDown(): string[] {
    return this.prober
      .statuses()
      .filter((s) => s.kind === "check" && s.state !== "up" && s.state !== "unknown")
      .map((s) => s.name);
  }

  private onProbe(t: ProbeTransition): void {
    this.events.emit("probe", t);
    const log = t.to === "down" ? this.log.warn.bind(this.log) : this.log.info.bind(this.log);
    log(
      { probe: t.name, target: t.target, from: t.from, to: t.to, reason: t.reason, suppressed: t.suppressed },
      "probe state",
    );
    if (t.to === "down")
      this.events.emit("failover", { trigger: t.kind === "check" ? "self-check" : "probe" });
    this.updateHealth(t.kind === "check" ? "self-check" : "probe");
  }

  /**
   * Recomputes health; whatever it newly withdraws is sent to gobgpd at once,
   * before the full reconcile (which follows through the controller).
   */
  private updateHealth(reason: "probe" | "bfd" | "drain" | "self-check" | "reload"): void {
    try {
      this.evaluateHealth(reason);
    } catch (e) {
      this.failSafe(e as Error);
    }
  }

  private evaluateHealth(reason: "probe" | "bfd" | "drain" | "self-check" | "reload"): void {
    this.health = this.healthFor(this.config);
    const desired = this.desired().bgp?.paths ?? [];
    this.allowed = new Set(desired.map((p) => canonicalPath(p).prefix));
    // The same diff the BGP reconcile makes; only its withdrawals are urgent.
    const gone = diffPaths(desired, this.advertised).withdraw;
    this.withdrawAtOnce(gone, reason === "reload" ? "config" : reason);
    this.controller.trigger(`health (${reason})`);
  }

  /** Sends withdrawals to the speaker now, ahead of the reconcile that follows. */
  private withdrawAtOnce(gone: BgpPath[], reason: WithdrawReason): void {
    if (!gone.length) return;
    const drop = new Set(gone.map((p) => canonicalPath(p).prefix));
    this.advertised = this.advertised.filter((p) => !drop.has(canonicalPath(p).prefix));
    const client = this.client;
    if (client?.isReady) {
      void Promise.all(gone.map((p) => client.deletePath(p))).then(
        () => this.log.warn({ withdrawn: [...drop], reason }, "withdrawn at once"),
        (e: Error) => this.log.error({ err: e }, "fast withdraw failed; the reconcile retries"),
      );
    }
    this.events.emit("withdrawn", { prefixes: [...drop], reason });
  }

  private healthFor(config: GatewayConfig): HealthView {
    const states = new Map(this.prober.statuses().map((s) => [s.name, s.state as string]));
    return healthFrom(config, states, {
      selfDown: this.selfDown(),
      downPeers: this.bfdPeers.down,
      draining: this.draining,
    });
  }

  /**
   * Health could not be evaluated (a bug, or a listener that threw): withdraw
   * every destination at once, keep the egress IPs (replies to flows already
   * forwarded still arrive), and say so loudly. The next reconcile that plans
   * successfully restores what health allows.
   */
  private failSafe(e: Error): void {
    this.log.error({ err: e }, "health evaluation failed: withdrawing every destination (fail safe)");
    const owned = new Set(this.kernelPlan().addresses.map((a) => `${a.address}/${a.prefixLength}`));
    this.allowed = owned;
    this.withdrawAtOnce(
      this.advertised.filter((p) => !owned.has(canonicalPath(p).prefix)),
      "fail-safe",
    );
    this.events.emit("failover", { trigger: "fail-safe" });
    this.controller.trigger("health (fail-safe)");
  }

  /** Starts (managed) or reaches (sidecar) gobgpd; returns its API address. */
  private async startGobgpd(bgp: BgpConfig): Promise<string> {
    const speaker = bgp.speaker ?? {};
    let target: string;
    if ((speaker.mode ?? "managed") === "managed") {
      const socketPath = join(this.runDir, "gobgpd.sock");
      this.gobgpd = new GobgpdProcess({
        socketPath,
        binary: speaker.binary ?? "/usr/bin/gobgpd",
        logLevel: "warn",
      });
      this.gobgpd.on("exited", (e) =>
        this.log.error(
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
        this.log.info({ pid: s.pid, restarts: s.restarts }, "gobgpd started");
        if (s.restarts > 0) this.events.emit("gobgpdRestart", s);
      });
      await this.gobgpd.start();
      target = this.gobgpd.target;
    } else {
      target = speaker.address as string;
    }
    return target;
  }

  private async startSpeaker(bgp: BgpConfig): Promise<void> {
    let target = "(injected)";
    let client: Speaker;
    if (this.connectSpeaker) client = this.connectSpeaker(bgp);
    else {
      target = await this.startGobgpd(bgp);
      client = new GobgpClient({ target });
    }
    this.client = client;
    client.on("ready", (info) => {
      this.bgpStarted = info.started && info.asn === bgp.asn;
      this.log.info({ target, bgpStarted: info.started }, "connected to gobgpd");
      this.controller.trigger("gobgpd ready");
    });
    client.on("disconnected", (reason) => {
      this.bgpStarted = false;
      this.importGuarded = false;
      this.advertised = [];
      this.peerStates.clear();
      this.log.warn({ reason }, "lost gobgpd");
    });
    client.on("peer", (ev) => {
      // gobgpd's events name a link-local peer without its interface: match on the address alone.
      const configured = this.config.bgp?.peers.find((x) => sameHost(x.address, ev.address));
      const address = configured?.address ?? ev.address;
      const name = configured?.name ?? ev.address;
      const before = this.peerStates.get(address);
      if (before === ev.state) return;
      this.peerStates.set(address, ev.state);
      this.log.info({ peer: name, address, asn: ev.peerAsn, state: ev.state }, "BGP peer state");
      this.events.emit("peer", { name, address, state: ev.state });
      if (before === "established" && ev.state === "idle") this.afterSessionDrop(address, name);
      if (ev.state === "established" && !this.bfdPeers.isBootstrapped(address))
        this.controller.trigger("peer established");
    });
    client.on("warning", (e) => this.log.warn({ err: e }, "gobgpd client"));
    client.watch({ peers: true });
    await client.waitReady(15_000);
  }

  /**
   * A peer that is not Established is reported with the reason a TCP connect
   * to it gives (refused, no route, timed out, ...): first after 10 s, then at
   * doubling intervals up to 5 minutes. Without this, a peer that never comes
   * up leaves no trace in the log.
   */
  private async reportDownPeers(now: number): Promise<void> {
    for (const p of this.config.bgp?.peers ?? []) {
      if (this.peerStates.get(p.address) === "established") {
        if (this.downSince.delete(p.address)) this.peerReports.reset(p.address);
        continue;
      }
      if (!this.downSince.has(p.address)) this.downSince.set(p.address, now);
      if (!this.peerReports.due(p.address, this.downSince.get(p.address)!, now)) continue;
      const state = this.peerStates.get(p.address) ?? "not configured in gobgpd yet";
      const connect = this.bfdPeers.down.has(p.address)
        ? "closed by egressd: BFD is down"
        : await this.diagnose(p.address, p.localAddress ? { localAddress: p.localAddress } : {});
      this.log.warn(
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
    if (this.draining || this.bfdPeers.down.has(address)) return;
    const last = this.recreatedAt.get(address) ?? -Infinity;
    if (Date.now() - last < RECREATE_EVERY_MS) return;
    this.recreatedAt.set(address, Date.now());
    this.recreate.add(address);
    this.log.info(
      { peer: name, address },
      "BGP session dropped: re-creating the peer to skip gobgpd's 5 s idle hold",
    );
    this.controller.trigger("session dropped");
  }

  private async applyBgp(d: BgpDesired | undefined, kernelFailed = false): Promise<string[]> {
    const client = this.client;
    if (!d || !client) return [];
    if (!client.isReady) throw new Error("gobgpd is not reachable yet");
    const out: string[] = [];
    if (!this.bgpStarted) {
      const current = await client.getBgp();
      if (
        current &&
        current.asn !== 0 &&
        (current.asn !== d.global.asn || current.routerId !== d.global.routerId)
      ) {
        // A different identity cannot be changed in place.
        await client.stopBgp();
        out.push(`stopped BGP AS${current.asn}`);
      }
      if (!current || current.asn !== d.global.asn || current.routerId !== d.global.routerId) {
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
    const pathDiff = await new PathReconciler(client).reconcile(d.paths, {
      withdrawOnly: kernelFailed,
      stillWanted: (p) => this.allowed === undefined || this.allowed.has(p.prefix),
    });
    for (const p of pathDiff.withdraw) out.push(`-path ${p.prefix}`);
    for (const p of pathDiff.add) out.push(`+path ${p.prefix}`);
    if (pathDiff.held.length) {
      out.push(
        `held ${pathDiff.held.length} path(s) back: ${kernelFailed ? "the kernel is not programmed" : "withdrawn meanwhile"}`,
      );
    }
    const held = new Set(pathDiff.held.map((p) => p.prefix));
    this.advertised = d.paths.filter((p) => !held.has(canonicalPath(p).prefix));
    this.events.emit("advertised", { paths: this.advertised.length });
    if (pathDiff.withdraw.length) {
      this.events.emit("withdrawn", { prefixes: pathDiff.withdraw.map((p) => p.prefix), reason: "config" });
    }
    return out;
  }

  /**
   * Replaces the config (already validated) and reconciles to it. Everything
   * the new config needs is built first (kernel plan, BGP plan with its
   * attributes, probes): if any of it fails, or a field changed that only a
   * restart can apply, the reload is refused and the running config stays in
   * force, untouched. "failed" means the switch happened but applying it
   * failed; the controller retries, and /status shows the errors.
   */
  async reload(config: GatewayConfig): Promise<"applied" | "unchanged" | "failed"> {
    if (JSON.stringify(config) === JSON.stringify(this.config)) {
      this.events.emit("reload", { result: "unchanged" });
      return "unchanged";
    }
    let planned: Planned;
    try {
      const restart = restartOnly(this.config, config);
      if (restart.length) throw new Error(`${restart.join("; ")}: restart egressd to apply`);
      planned = planConfig(config);
      if (config.bgp) {
        const bgp = planBgp(
          config as GatewayConfig & { bgp: BgpConfig },
          planned.kernel,
          this.healthFor(config),
          planned.scope,
        );
        diffPaths(bgp.paths, []);
        for (const p of bgp.peers) canonicalPeer(p);
      }
      for (const spec of probeSpecs(config)) {
        const errs = validateProbeSpec(spec);
        if (errs.length) throw new Error(`probe ${spec.name}: ${errs.join("; ")}`);
      }
    } catch (e) {
      this.events.emit("reload", { result: "refused" });
      throw new ReloadRefused((e as Error).message);
    }
    this.config = config;
    this.planned = planned;
    this.syncProbes();
    this.updateHealth("reload");
    await this.controller.idle();
    const errors = this.controller.last?.errors ?? {};
    if (Object.keys(errors).length) {
      this.events.emit("reload", { result: "failed" });
      return "failed";
    }
    this.events.emit("reload", { result: "applied" });
    return "applied";
  }

  /**
   * Graceful drain: withdraw the served destinations at once (the fabric moves
   * new flows to other gateways), keep forwarding and keep the egress IPs
   * advertised for the drain period (replies still come back), then stop.
   */
  async drain(): Promise<boolean> {
    const periodMs = this.config.drain?.periodMs ?? DEFAULTS.drain.periodMs;
    this.log.info({ periodMs }, "draining: destinations withdrawn, forwarding continues");
    this.draining = true;
    this.events.emit("draining", { periodMs });
    this.events.emit("failover", { trigger: "drain" });
    this.updateHealth("drain");
    await within(this.controller.idle(), periodMs, "the drain's reconcile").catch((e: Error) =>
      this.log.warn({ err: e }, "draining on without waiting for the reconcile"),
    );
    await new Promise((r) => setTimeout(r, periodMs));
    return this.stop();
  }

  /**
   * Withdraws every path, stops gobgpd and BFD, and removes everything
   * egressd owns in the kernel, in that order: nothing is removed from the
   * kernel while it may still be advertised. A sidecar gobgpd that cannot be
   * told to withdraw goes on advertising, so then the kernel state stays and
   * stop() reports false (the next start adopts it).
   */
  async stop(): Promise<boolean> {
    this.controller.stop();
    // A reconcile stuck on a hung speaker must not hold the stop for long.
    await within(this.controller.idle(), STOP_STEP_MS, "the running reconcile").catch((e: Error) =>
      this.log.warn({ err: e }, "stopping without waiting for the running reconcile"),
    );
    await this.prober.stop();
    let withdrawn = !this.config.bgp;
    if (this.client && !this.client.isReady) await this.client.waitReady(3000).catch(() => undefined);
    if (this.client?.isReady) {
      try {
        await within(new PathReconciler(this.client).reconcile([]), STOP_STEP_MS, "withdrawing every path");
        withdrawn = true;
      } catch (e) {
        this.log.warn({ err: e }, "could not withdraw paths before stopping");
      }
    }
    await this.bfdPeers.stop(); // AdminDown: the ToR drops the session at once
    await this.client?.close();
    if (this.gobgpd) {
      await this.gobgpd.stop(); // its sessions close, so whatever it advertised is gone
      withdrawn = true;
    }
    clearInterval(this.heartbeat);
    rmSync(join(this.runDir, "egressd.pid"), { force: true });
    if (!withdrawn) {
      this.kernel.close();
      this.log.error(
        { speaker: this.config.bgp?.speaker?.address },
        "the sidecar gobgpd could not be told to withdraw: leaving the data plane in place so that what it " +
          "still advertises keeps working; the next egressd start adopts it",
      );
      return false;
    }
    const summary = await this.kernel.teardown();
    this.kernel.close();
    this.log.info({ removed: summary }, "removed everything egressd owned");
    return true;
  }

  // --- observation (metrics, /status) ---

  /** The event loop runs and reconciles are not stuck. */
  loopAlive(): boolean {
    return Date.now() - this.tick < 5000;
  }

  natCounters(): Promise<NatCounter[]> {
    return this.kernel.natCounters(this.kernelPlan().nat);
  }

  status(): StatusSnapshot {
    return statusView({
      config: this.config,
      kernel: this.kernelPlan(),
      kernelOk: this.kernelOk,
      health: this.health,
      draining: this.draining,
      startedAt: this.startedAt,
      probes: this.prober.statuses(),
      peerStates: this.peerStates,
      bfd: this.bfd.list(),
      advertised: this.advertised,
      lastReconcile: this.lastReconcile,
    });
  }
}

/** The kernel plan and the BGP advertise scope of one config. */
interface Planned {
  config: GatewayConfig;
  kernel: KernelState;
  scope: AdvertiseScope;
}

function planConfig(config: GatewayConfig): Planned {
  return { config, kernel: plan(config), scope: advertiseScope(config) };
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

/** A peer whose session dropped is re-created at most this often (gobgpd's idle hold applies in between). */
const RECREATE_EVERY_MS = 3000;

/** How long each step of a stop may wait on the speaker or a reconcile. */
const STOP_STEP_MS = 5000;

/** `p`, or a rejection naming `what` after `ms`. */
function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} took longer than ${ms} ms`)), ms);
  });
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
}

/** A reload that was not applied: the running config stays in force. */
export class ReloadRefused extends Error {
  override name = "ReloadRefused";
}

function probeSpecs(config: GatewayConfig): ProbeSpec[] {
  return (config.probes ?? []).map(({ affects: _a, ...spec }) => spec as ProbeSpec);
}

/**
 * Fields that are read once, at start: the BGP speaker's identity and how it
 * runs, and the HTTP listener. A reload that changes one is refused, naming it.
 */
export function restartOnly(from: GatewayConfig, to: GatewayConfig): string[] {
  const out: string[] = [];
  const show = (v: unknown) => (v === undefined ? "unset" : JSON.stringify(v));
  const field = (name: string, a: unknown, b: unknown) => {
    if (JSON.stringify(a) !== JSON.stringify(b)) out.push(`${name} changed (${show(a)} -> ${show(b)})`);
  };
  if (!from.bgp !== !to.bgp) out.push(`the bgp section was ${to.bgp ? "added" : "removed"}`);
  else if (from.bgp && to.bgp) {
    field("bgp.asn", from.bgp.asn, to.bgp.asn);
    field("bgp.routerId", from.bgp.routerId, to.bgp.routerId);
    field("bgp.listenPort", from.bgp.listenPort, to.bgp.listenPort);
    field("bgp.speaker", from.bgp.speaker, to.bgp.speaker);
  }
  field("http.listen", from.http?.listen, to.http?.listen);
  return out;
}
