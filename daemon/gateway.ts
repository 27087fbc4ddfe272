// One gateway at run time: the imperative shell around the core's planner.
//
//   config --Dataplane.prepare (a worker thread)--> static plan --apply--> netlink + nftables
//                                               \-> view --planDesired(health)--> gobgpd (gRPC)
//   probes, self-checks, BFD --> health --> planDesired (fast path: withdraw at once)
//
// The Controller serialises reconciles; every input change is a trigger. A
// probe going down does not wait for one: the paths it guards are withdrawn
// from gobgpd straight from the probe's callback, then the reconcile follows.
import { EventEmitter } from "node:events";
import { mkdirSync, rmSync } from "node:fs";
import { defaultRunDir } from "./run-dir.js";
import { join } from "node:path";
import { canonicalPath, canonicalPeer } from "../core/bgp.js";
import { diffPaths } from "../bgp/path-reconciler.js";
import type { diagnoseConnect } from "../bgp/peer-diagnosis.js";
import type { BfdService } from "../health/bfd/service.js";
import { BfdWorker } from "../health/bfd/worker.js";
import {
  Prober,
  validateProbeSpec,
  type CheckSpec,
  type ProbeSample,
  type ProbeSpec,
  type ProbeTransition,
} from "../health/prober.js";
import { changed, type KernelChanges } from "../routing/reconcile.js";
import type { NatCounter } from "../routing/nft.js";
import { realChecks, type KernelChecks } from "../routing/kernel-actuator.js";
import type { Speaker } from "../bgp/speaker.js";
import { Controller, type ReconcileResult, type ReconcileTarget } from "./controller.js";
import type { BgpConfig } from "../core/config/bgp-schema.js";
import type { GatewayEvents } from "./events.js";
import type { Logger } from "./log.js";
import {
  NO_HEALTH_INPUTS,
  planDesired,
  type ConfigView,
  type Desired,
  type HealthInputs,
  type PlanView,
} from "../core/plan/index.js";
import type { Dataplane, Prepared } from "./dataplane.js";
import { SELF_ADDRESS, type HealthView } from "../core/plan/health.js";
import type { KubernetesStatus, StatusSnapshot } from "./status.js";
import { statusView } from "./status-view.js";
import { DEFAULTS } from "../core/defaults.js";
import { dataplaneOf } from "../core/plan/model.js";
import { writePidFile } from "./pidfile.js";
import { BfdPeers } from "./bfd-peers.js";
import { SpeakerLink } from "./speaker-link.js";
import { within } from "../lib/wait.js";
import { ConnectionSync } from "./connection-sync.js";
import type { ConntrackdChannelStats } from "../core/plan/sync.js";
import { AuditTrail } from "./audit.js";
import { RepairReconciler } from "../routing/local-repair.js";
import type { RepairPlan } from "../core/plan/repair.js";
import type { PodRef } from "../core/audit/record.js";

/** The self-check name under which a gateway that has not yet resynced its connection state is down. */
export const SYNC_PENDING = "self-connection-sync";
/** The same, until the BFD sessions with the peers are Up after a start. */
export const BFD_PENDING = "self-bfd";

export type { GatewayConfig } from "../core/config/gateway-config.js";

/** A plan the data plane prepared and accepted. */
export type PreparedPlan = Extract<Prepared, { ok: true }>;

export type { Desired } from "../core/plan/index.js";

/** Stand-ins for the real actuators (tests); each one left out is the real thing. */
export interface Actuators {
  /** The self-checks of the kernel state (default: the real ones). */
  checks: KernelChecks;
  /** Connects to a BGP speaker instead of starting or reaching gobgpd. */
  speaker: (bgp: BgpConfig) => Speaker;
  /** BFD sessions (default: a BfdManager in its own worker thread). */
  bfd: BfdService;
  /** Why a peer does not come up (default: a TCP connect to its port 179, see bgp/peer-diagnosis.ts). */
  diagnose: typeof diagnoseConnect;
  /** Local repair's nftables table (default: routing/local-repair.ts). */
  repair: RepairActuator;
}

/** What the gateway needs of local repair's table (routing/local-repair.ts). */
export type RepairActuator = Pick<RepairReconciler, "reconcile" | "teardown" | "prefixes">;

export interface GatewayOptions {
  log: Logger;
  /** Plans configs and programs the kernel (the daemon: a DataplaneWorker). */
  dataplane: Dataplane;
  actuators?: Partial<Actuators>;
  /** Where gobgpd's API socket and the pid file live; default: per network namespace under /run/egressd. */
  runDir?: string;
  resyncMs?: number;
  /** The pod that owns a source address now (the Kubernetes input), for the audit trail. */
  podAt?: (address: string) => PodRef | undefined;
}

function describeKernel(c: KernelChanges): string[] {
  if (!changed(c)) return [];
  return [
    ...c.addresses.added.map((a) => `+address ${a}`),
    ...c.addresses.removed.map((a) => `-address ${a}`),
    ...(c.nat.action === "none"
      ? []
      : c.nat.action === "patch"
        ? [
            `nft patch (+${c.nat.added} -${c.nat.removed} via ${c.nat.via}, ${(c.nat.applyMs ?? 0).toFixed(1)} ms)`,
          ]
        : [`nft ${c.nat.action}`]),
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

/**
 * A self-check whose results are pushed (an egress IP's presence, from one
 * address listing for all of them): a listing is the kernel's word, so one
 * absence is enough. The interval is only shown; the listing keeps its own.
 */
const SELF_PUSHED = { ...SELF, fall: 1 } as const;

export class Gateway {
  readonly events = new EventEmitter<GatewayEvents>();
  readonly runDir: string;
  /** The committed plan's view (the config without its sources, the kernel plan's summary). */
  private view: PlanView;
  /** Prepared at construction, committed by start(). */
  private firstId: number | undefined;
  private readonly log: Logger;
  private readonly dataplane: Dataplane;
  private readonly checks: KernelChecks;
  private readonly controller: Controller<Desired>;
  private readonly prober = new Prober();
  private readonly bfd: BfdService;
  private readonly bfdPeers: BfdPeers;
  private readonly speaker: SpeakerLink;
  private health: HealthView;
  /** The run-time inputs health was last evaluated with; reconciles plan with these. */
  private healthIn: HealthInputs = NO_HEALTH_INPUTS;
  /** Canonical prefixes health allows now (undefined: not evaluated yet); guards adds of a running reconcile. */
  private allowed: Set<string> | undefined;
  /** Local repair's table (core/plan/repair.ts). */
  private readonly repair: RepairActuator;
  private selfChecks = new Set<string>();
  /** Each probe's and self-check's state, kept from the prober's transitions. */
  private probeStates = new Map<string, string>();
  private draining = false;
  /** Connection sync (conntrackd), when configured. */
  private readonly sync: ConnectionSync | undefined;
  /** The audit trail, when configured. */
  private readonly audit: AuditTrail | undefined;
  private kernelOk = false;
  private readonly startedAt = new Date();
  private lastReconcile: (ReconcileResult & { at: Date }) | undefined;
  private tick = Date.now();
  private readonly heartbeat: NodeJS.Timeout;

  constructor(first: PreparedPlan, opts: GatewayOptions) {
    this.view = first.view;
    this.firstId = first.id;
    this.log = opts.log;
    this.runDir = opts.runDir ?? defaultRunDir();
    this.health = planDesired({ view: this.view, health: NO_HEALTH_INPUTS }).health;
    this.dataplane = opts.dataplane;
    this.checks = opts.actuators?.checks ?? realChecks({ onError: (m) => this.log.warn(m) });
    this.bfd = opts.actuators?.bfd ?? new BfdWorker({ logger: this.log });
    this.repair = opts.actuators?.repair ?? new RepairReconciler();
    this.bfdPeers = new BfdPeers(this.bfd, {
      log: this.log,
      config: () => this.config,
      onChange: () => this.updateHealth("bfd"),
      onFailover: () => this.events.emit("failover", { trigger: "bfd" }),
    });
    this.speaker = new SpeakerLink({
      log: this.log,
      events: this.events,
      runDir: this.runDir,
      config: () => this.config,
      trigger: (why) => this.controller.trigger(why),
      bfdDown: () => this.bfdPeers.down,
      onEstablished: (address) => {
        this.bfdPeers.established(address);
        if (!this.bfdPeers.isBootstrapped(address)) this.controller.trigger("peer established");
      },
      draining: () => this.draining,
      ...(opts.actuators?.speaker ? { connect: opts.actuators.speaker } : {}),
      ...(opts.actuators?.diagnose ? { diagnose: opts.actuators.diagnose } : {}),
    });
    const targets: ReconcileTarget<Desired>[] = [
      // At start, the BGP sessions open while the kernel is first programmed
      // (1-2 s at 100k sources): the peers are added now, paths only by the
      // "bgp" target once the kernel is in. Later reconciles leave peers to it.
      {
        name: "sessions",
        overlapsNext: true,
        apply: (d) => (this.speaker.peersApplied ? Promise.resolve([]) : this.speaker.applySessions(d.bgp)),
      },
      {
        name: "kernel",
        ignoresDesired: true,
        apply: async () => {
          this.kernelOk = false;
          const result = await this.dataplane.apply();
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
      {
        name: "bgp",
        apply: (d, failed) =>
          this.speaker.apply(
            d.bgp,
            failed.has("kernel"),
            (p) => this.allowed === undefined || this.allowed.has(p),
          ),
      },
      { name: "bfd", ignoresDesired: true, apply: () => this.bfdPeers.apply(this.speaker.peerStates) },
      // Applied at once on a health change (applyRepair); here it is made good after a failure,
      // and a table an earlier run left is removed by the first reconcile.
      {
        name: "repair",
        apply: async (d) => {
          const change = await this.repair.reconcile(d.repair);
          return change === "none"
            ? []
            : [`local repair ${change} (${this.repair.prefixes.length} destinations)`];
        },
      },
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
      void this.speaker.reportDownPeers(this.tick);
    }, 1000);
    this.heartbeat.unref();
    if (this.view.config.connectionSync) {
      this.sync = new ConnectionSync({
        config: this.view.config.connectionSync,
        runDir: this.runDir,
        log: this.log.child({ component: "connection-sync" }),
      });
      this.sync.on("ready", () => this.updateHealth("sync"));
    }
    if (this.view.config.audit) {
      this.audit = new AuditTrail({
        config: this.view.config.audit,
        gateway: this.view.config.gateway.name,
        log: this.log.child({ component: "audit" }),
        ...(opts.podAt ? { podAt: opts.podAt } : {}),
      });
    }
    // Until the first resync, the gateway advertises nothing (see healthInputs).
    this.healthIn = this.healthInputs();
    this.prober.on("transition", (t) => this.onProbe(t));
    // The prober survives a throwing listener; a health evaluation that threw
    // must not leave withdrawals disabled: fail safe.
    this.prober.on("error", (e) => this.failSafe(e));
    this.prober.on("sample", (s) => {
      this.noteFirstFailure(s);
      this.events.emit("probeSample", s);
    });
    this.bfd.on("state", (e) => {
      const to =
        e.to.toLowerCase() === "admindown" ? "admin-down" : (e.to.toLowerCase() as "up" | "down" | "init");
      this.events.emit("bfd", { name: e.name ?? e.peer, peer: e.peer, state: to, reason: e.reason });
    });
  }

  /** The config in force, without its sources. */
  get config(): ConfigView {
    return this.view.config;
  }

  /** Every run-time input as it is now, as the core plans from it (a snapshot: later events do not change it). */
  private healthInputs(): HealthInputs {
    const down = (name: string) => {
      const state = this.probeStates.get(name);
      return state !== undefined && state !== "up" && state !== "unknown";
    };
    const selfDown = [...this.selfChecks].filter(down);
    // Traffic must not come here before the state it needs: nothing is advertised until the
    // peers' connection state has arrived (or the wait for it ran out).
    if (this.sync && !this.sync.resynced) selfDown.push(SYNC_PENDING);
    // Nor before the peers can see it fail within BFD's detection time (BfdPeers.holdsBack).
    if (this.bfdPeers.holdsBack() !== undefined) selfDown.push(BFD_PENDING);
    return {
      probes: new Map(this.probeStates),
      selfDown,
      downPeers: new Set(this.bfdPeers.down),
      draining: this.draining,
      syncReady: this.sync?.ready ?? false,
    };
  }

  /** The desired state for the config in force and the health last evaluated. */
  desired(): Desired {
    return planDesired({ view: this.view, health: this.healthIn });
  }

  async start(): Promise<void> {
    if (this.firstId !== undefined) await this.dataplane.commit(this.firstId);
    this.firstId = undefined;
    mkdirSync(this.runDir, { recursive: true, mode: 0o700 });
    writePidFile(join(this.runDir, "egressd.pid"));
    await this.sync?.start();
    // Before the data plane is programmed: the first connection it NATs is recorded.
    this.auditPlan();
    await this.audit?.start();
    if (this.config.bgp) await this.speaker.start(this.config.bgp);
    // Program the data plane first, so the self-checks have something to check.
    this.controller.start();
    await this.controller.idle();
    this.syncProbes();
    this.prober.start();
  }

  /** Tells the audit trail the plan in force: which mark is which policy, which addresses are this gateway's. */
  private auditPlan(): void {
    if (!this.audit) return;
    const nat = this.view.kernel.nat;
    const snat = nat.policies.filter((p) => p.deny !== true);
    this.audit.setPlan(
      nat.policies.map((p) => ({ name: p.name, mark: p.mark, ...(p.deny ? { deny: true } : {}) })),
      dataplaneOf(this.config).markMask,
      [...this.config.egressIPs.map((e) => e.address), ...snat.map((p) => p.egressIP)],
      dataplaneOf(this.config).snatPorts,
    );
  }

  /** Configured probes and self-checks, from the current config; unchanged ones keep their state. */
  private syncProbes(): void {
    this.prober.sync(probeSpecs(this.config));
    // Each check as the prober takes it: polled, or pushed (an egress IP's presence, from the listing).
    const checks = new Map<string, () => void>();
    const add = (c: CheckSpec) => checks.set(c.name, () => this.prober.addCheck(c));
    for (const a of this.view.kernel.addresses) {
      const name = `${SELF_ADDRESS}${a.address}`;
      const stream = this.checks.address(a.address);
      checks.set(name, () =>
        this.prober.addStream({ name, target: a.address, stream, ...SELF_PUSHED, atOnce: true }),
      );
    }
    for (const family of new Set(this.view.kernel.nat.policies.map((p) => p.family))) {
      add({ name: `self-forwarding-ipv${family}`, check: this.checks.forwarding(family), ...SELF });
    }
    add({ name: "self-nft-table", check: this.checks.nftTable(), ...SELF, intervalMs: 1000 });
    if (this.config.bgp) add({ name: "self-gobgpd", check: async () => this.speaker.ready, ...SELF });
    for (const name of this.selfChecks) if (!checks.has(name)) this.prober.remove(name);
    for (const [name, addTo] of checks) if (!this.selfChecks.has(name)) addTo();
    this.selfChecks = new Set(checks.keys());
    this.probeStates = new Map(this.prober.statuses().map((st) => [st.name, st.state as string]));
    for (const name of this.failing) if (!this.probeStates.has(name)) this.failing.delete(name);
  }

  /** Probes whose last judged result failed. */
  private failing = new Set<string>();

  /**
   * A failed result after a good one is logged, with its reason, even when it
   * does not take the probe down: a single false failure must be traceable.
   * Further failures in a row are counted only (a dead target fails at every
   * interval, and the transition to down is logged on its own).
   */
  private noteFirstFailure(s: ProbeSample): void {
    if (s.inconclusive) return;
    if (s.ok) {
      this.failing.delete(s.name);
    } else if (!this.failing.has(s.name)) {
      this.failing.add(s.name);
      this.log.info({ probe: s.name, reason: s.reason }, "probe result failed");
    }
  }

  private onProbe(t: ProbeTransition): void {
    this.probeStates.set(t.name, t.to);
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
   *
   * Probe and self-check transitions come in bursts (a round of 50 address
   * checks coming up at start, every probe of a dead uplink): each one
   * re-planned BGP on its own, and at 200 policies a burst held the main
   * thread for 100 ms. They are evaluated once, in a microtask after the
   * burst's last one: after the task that reported them, before any timer or
   * I/O. Other reasons evaluate at once (a reload waits for the reconcile it
   * triggers), and take in whatever transitions were pending.
   */
  private updateHealth(reason: HealthReason): void {
    if (reason === "probe" || reason === "self-check") {
      const first = this.healthPending === undefined;
      (this.healthPending ??= new Set()).add(reason);
      if (first) queueMicrotask(() => this.evaluatePending());
      return;
    }
    // The pending transitions are evaluated with it (their microtask then finds nothing).
    const pending = this.healthPending ?? [];
    this.healthPending = undefined;
    this.evaluateGuarded([reason, ...pending]);
  }

  /** Probe and self-check transitions not yet evaluated (see updateHealth). */
  private healthPending: Set<HealthReason> | undefined;

  private evaluatePending(): void {
    const reasons = this.healthPending;
    this.healthPending = undefined;
    if (reasons?.size) this.evaluateGuarded([...reasons]);
  }

  private evaluateGuarded(reasons: HealthReason[]): void {
    try {
      this.evaluateHealth(reasons);
    } catch (e) {
      this.failSafe(e as Error);
    }
  }

  private evaluateHealth(reasons: HealthReason[]): void {
    const reason = reasons[0]!;
    this.healthIn = this.healthInputs();
    const want = this.desired();
    this.health = want.health;
    const desired = want.bgp?.paths ?? [];
    this.allowed = new Set(desired.map((p) => canonicalPath(p).prefix));
    // The same diff the BGP reconcile makes; only its withdrawals are urgent.
    this.speaker.withdrawAtOnce(
      this.speaker.urgentWithdrawals(desired),
      reason === "reload" ? "config" : reason,
    );
    // Beside the withdrawals: the traffic the routers still send for them goes to the peer meanwhile.
    this.applyRepair(want.repair);
    for (const r of reasons) this.controller.trigger(`health (${r})`);
    this.events.emit("health", { reasons });
  }

  /**
   * Hands the latest repair plan to the table, without waiting: plans that
   * come while one is applied are merged (RepairReconciler). Without a plan
   * there is no table, which costs nothing once the table is known absent.
   */
  private applyRepair(plan: RepairPlan | undefined): void {
    const before = this.repair.prefixes.length;
    this.repair.reconcile(plan).then(
      (change) => {
        if (change === "applied")
          this.log.info(
            { destinations: this.repair.prefixes, via: plan?.via },
            `local repair: ${this.repair.prefixes.length} withdrawn destinations forwarded to the sync peer until the routers stop sending them`,
          );
        else if (change === "removed")
          this.log.info({ before }, "local repair: nothing withdrawn any more, nothing forwarded");
      },
      (e: Error) =>
        this.log.warn({ err: e }, "local repair: the forwarding table could not be written (retrying)"),
    );
  }

  /**
   * Health could not be evaluated (a bug, or a listener that threw): withdraw
   * every destination at once, keep the egress IPs (replies to flows already
   * forwarded still arrive), and say so loudly. The next reconcile that plans
   * successfully restores what health allows.
   */
  private failSafe(e: Error): void {
    this.log.error({ err: e }, "health evaluation failed: withdrawing every destination (fail safe)");
    const owned = new Set(this.view.kernel.addresses.map((a) => `${a.address}/${a.prefixLength}`));
    this.allowed = owned;
    this.speaker.withdrawAtOnce(
      this.speaker.advertised.filter((p) => !owned.has(canonicalPath(p).prefix)),
      "fail-safe",
    );
    this.events.emit("failover", { trigger: "fail-safe" });
    this.controller.trigger("health (fail-safe)");
  }

  /**
   * Switches to a prepared plan and reconciles to it. Everything the new
   * config needs is checked first (the BGP plan with its attributes, the
   * probes, fields only a restart can change): if any of it fails, the plan is
   * discarded, the reload refused, and the running config stays in force,
   * untouched. "failed" means the switch happened but applying it failed; the
   * controller retries, and /status shows the errors.
   */
  async reload(next: PreparedPlan): Promise<"applied" | "unchanged" | "failed"> {
    if (next.unchanged) {
      await this.dataplane.discard(next.id);
      this.events.emit("reload", { result: "unchanged" });
      return "unchanged";
    }
    // Pods moved: the same config but for the kernel's source sets. Nothing
    // health or BGP read changed, so only the kernel is reconciled.
    const scope = next.sourcesOnly ? ["kernel"] : undefined;
    if (scope) {
      // The kernel's apply is asked for with the commit, not after its answer: the data plane
      // takes calls in order, so it applies the plan just committed, and a pod's move waits for
      // one hand-off between the threads fewer. Should the commit fail, the apply finds the old
      // plan in place and changes nothing, and the error is this reload's.
      const committed = this.dataplane.commit(next.id);
      this.controller.trigger("sources", scope);
      await committed;
      this.view = next.view;
    } else {
      await this.checkReload(next);
      await this.dataplane.commit(next.id);
      this.view = next.view;
      // Sources alone do not change what the audit trail reads from the plan (marks, names, addresses).
      this.auditPlan();
      this.syncProbes();
      this.updateHealth("reload");
    }
    await this.controller.idle();
    const errors = this.controller.last?.errors ?? {};
    if (Object.keys(errors).length) {
      this.events.emit("reload", { result: "failed" });
      return "failed";
    }
    this.events.emit("reload", { result: "applied" });
    return "applied";
  }

  /** Refuses (ReloadRefused) a plan that cannot be switched to, and discards it; see reload(). */
  private async checkReload(next: PreparedPlan): Promise<void> {
    try {
      const config = next.view.config;
      const restart = restartOnly(this.config, config);
      if (restart.length) throw new Error(`${restart.join("; ")}: restart egressd to apply`);
      const { bgp } = planDesired({ view: next.view, health: this.healthInputs() });
      if (bgp) {
        diffPaths(bgp.paths, []);
        for (const p of bgp.peers) canonicalPeer(p);
      }
      for (const spec of probeSpecs(config)) {
        const errs = validateProbeSpec(spec);
        if (errs.length) throw new Error(`probe ${spec.name}: ${errs.join("; ")}`);
      }
    } catch (e) {
      await this.dataplane.discard(next.id);
      this.events.emit("reload", { result: "refused" });
      throw new ReloadRefused((e as Error).message);
    }
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
    // AdminDown once the paths are gone: the ToR drops the session at once.
    const closed = await this.speaker.withdrawAllAndClose(STOP_STEP_MS, () => this.bfdPeers.stop());
    const withdrawn = !this.config.bgp || closed;
    // After the withdrawals: the members keep receiving this gateway's updates until then.
    await this.sync?.stop();
    await this.repair
      .teardown()
      .catch((e: Error) => this.log.warn({ err: e }, "local repair: its table could not be removed"));
    clearInterval(this.heartbeat);
    rmSync(join(this.runDir, "egressd.pid"), { force: true });
    if (!withdrawn) {
      await this.close();
      this.log.error(
        { speaker: this.config.bgp?.speaker?.address },
        "the sidecar gobgpd could not be told to withdraw: leaving the data plane in place so that what it " +
          "still advertises keeps working; the next egressd start adopts it",
      );
      return false;
    }
    const summary = await this.dataplane.teardown();
    await this.close();
    // Last: the connections the teardown ended are recorded.
    await this.audit?.stop();
    this.log.info({ removed: summary }, "removed everything egressd owned");
    return true;
  }

  private async close(): Promise<void> {
    this.checks.close();
    await this.dataplane.close();
  }

  // --- observation (metrics, /status) ---

  /** The event loop runs and reconciles are not stuck. */
  /** Reconciles every target now (after the data plane was restored, say). */
  resync(reason: string): void {
    this.controller.trigger(reason);
  }

  loopAlive(): boolean {
    return Date.now() - this.tick < 5000;
  }

  natCounters(): Promise<NatCounter[]> {
    return this.dataplane.natCounters();
  }

  syncStats(): Promise<ConntrackdChannelStats[]> {
    return this.sync ? this.sync.stats() : Promise.resolve([]);
  }

  private clusterStatus: (() => KubernetesStatus) | undefined;

  /** Where /status reads the Kubernetes input's state from. */
  setClusterStatus(fn: () => KubernetesStatus): void {
    this.clusterStatus = fn;
  }

  status(): StatusSnapshot {
    const s = statusView({
      config: this.config,
      kernel: this.view.kernel,
      kernelOk: this.kernelOk,
      health: this.health,
      draining: this.draining,
      startedAt: this.startedAt,
      probes: this.prober.statuses(),
      peerStates: this.speaker.peerStates,
      bfd: this.bfd.list(),
      bfdStats: this.bfd.stats,
      advertised: [...this.speaker.advertised],
      lastReconcile: this.lastReconcile,
      ...(this.sync ? { syncResynced: this.sync.resynced } : {}),
    });
    if (this.sync) {
      s.connectionSync = {
        ready: this.sync.ready,
        resynced: this.sync.resynced,
        restarts: this.sync.restarts,
        ...(this.sync.lastResync ? { lastResync: this.sync.lastResync } : {}),
      };
    }
    if (this.audit) {
      const u = this.audit.portUsage();
      s.audit = { ...this.audit.counts, open: this.audit.open };
      s.snatPorts = { top: u.top, fullest: Object.fromEntries(u.fullest) };
    }
    return this.clusterStatus ? { ...s, kubernetes: this.clusterStatus() } : s;
  }
}

type HealthReason = "probe" | "bfd" | "drain" | "self-check" | "reload" | "sync";

/** How long each step of a stop may wait on the speaker or a reconcile. */
const STOP_STEP_MS = 5000;

/** A reload that was not applied: the running config stays in force. */
export class ReloadRefused extends Error {
  override name = "ReloadRefused";
}

function probeSpecs(config: ConfigView): ProbeSpec[] {
  return (config.probes ?? []).map(({ affects: _a, ...spec }) => spec as ProbeSpec);
}

/**
 * Fields that are read once, at start: the BGP speaker's identity and how it
 * runs, and the HTTP listener. A reload that changes one is refused, naming it.
 */
export function restartOnly(from: ConfigView, to: ConfigView): string[] {
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
  field("kubernetes", from.kubernetes, to.kubernetes);
  field("connectionSync", from.connectionSync, to.connectionSync);
  field("audit", from.audit, to.audit);
  return out;
}
