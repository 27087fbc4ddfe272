// The Kubernetes side of the daemon: the cluster watch (inputs/k8s) feeds
// the cluster model (core/k8s), and every batch of changes becomes a reload
// with the cluster's policies planned after the file's own, through the
// same path as a file reload (prepared off the main thread, checked,
// committed, reconciled), one at a time with the file's reloads.
//
// Nothing from the cluster is planned before every watch has listed once:
// a partial view would take away pods and policies that are only not read
// yet. During an outage the model keeps what it knows, so the data plane
// keeps it too; the watch reports the outage and reconciles on its return.
import { KubeConfig } from "../inputs/k8s/client.js";
import type { Logger } from "pino";
import type { KubernetesConfig } from "../core/config/ops-schema.js";
import type { ConfigView } from "../core/plan/index.js";
import type { PolicyConfig } from "../core/config/schema.js";
import { Cluster } from "../core/k8s/cluster.js";
import { ClusterWatch, type ClusterWatchStatus } from "../inputs/k8s/watch.js";
import { StatusWriter, type Programmed } from "../inputs/k8s/status-writer.js";
import type { Prepared, PrepareInput } from "./dataplane.js";
import { ReloadRefused, type Gateway } from "./gateway.js";
import { GroupClaims } from "./group-claims.js";
import { claimedParts, fileOnly, type HeldGroup } from "../core/k8s/ip-groups.js";
import type { EgressIPGroupConfig } from "../core/config/schema.js";

export interface ClusterInputOptions {
  config: KubernetesConfig;
  gateway: Gateway;
  prepare: (input: PrepareInput) => Promise<Prepared>;
  log: Logger;
  /** Runs `fn` after every reload already queued (file or cluster), before any queued later. */
  serialize: (fn: () => Promise<void>) => void;
  /** The file's part of the config in force. */
  view: () => ConfigView;
  /** Keeps the policies last applied for a restart during an API outage (Dataplane.saveCluster). */
  keep?: () => Promise<void>;
  /** This gateway's node (the holder of its leases; whose labels the egress IP groups select). */
  node: string;
  /** Where the egress IP groups' leases are. */
  leaseNamespace: string;
}

/** The kubeconfig egressd uses: the configured file, else the pod's service account, else the default one. */
export function kubeConfigFor(c: KubernetesConfig): KubeConfig {
  const kc = new KubeConfig();
  if (c.kubeconfig !== undefined) kc.loadFromFile(c.kubeconfig);
  else if (process.env.KUBERNETES_SERVICE_HOST) kc.loadFromCluster();
  else kc.loadFromDefault();
  return kc;
}

/** File policy names: the cluster's data-plane policies are named "<...>:v4" / ":v6", which a file name cannot be. */
const fileNames = (v: ConfigView) => new Set(v.policies.map((p) => p.name).filter((n) => !n.includes(":")));

export class ClusterInput {
  readonly cluster = new Cluster();
  private readonly watch: ClusterWatch;
  private readonly writer: StatusWriter;
  /** Per policy key: the generation in force in the data plane, and how its reload went. */
  private readonly programmed = new Map<string, Programmed>();
  private queued = false;
  /**
   * When the oldest change not yet taken by a reload came from the watch: wall-clock
   * milliseconds, sub-millisecond (logged with each reload, so that a benchmark can time
   * the path from the watch event to the kernel).
   */
  private changeAt: number | undefined;
  /** The data plane's committed cluster policies are the model's as of the last takeChanges(): edits may follow. */
  private inSync = false;
  private synced = false;
  private stopped = false;
  /** Reloads from the cluster, by result. */
  readonly reloads: Record<"applied" | "unchanged" | "failed" | "refused", number> = {
    applied: 0,
    unchanged: 0,
    failed: 0,
    refused: 0,
  };

  readonly claims: GroupClaims;
  /** The addresses of the API's groups the data plane is given (GroupClaims.apply). */
  private held: HeldGroup[] = [];
  /** Callers of applyClaims, told when the next full reload is done. */
  private claimWaiters: ((inForce: HeldGroup[] | undefined) => void)[] = [];

  constructor(private readonly o: ClusterInputOptions) {
    const kc = kubeConfigFor(o.config);
    this.claims = new GroupClaims({
      kc,
      namespace: o.leaseNamespace,
      node: o.node,
      site: () => o.view().gateway.site,
      log: o.log,
      apply: (held) => this.applyClaims(held),
    });
    this.fileChanged();
    const gw = o.view().gateway;
    this.writer = new StatusWriter({
      kc,
      gateway: gw.name,
      site: gw.site,
      log: { warn: (m) => o.log.warn(m) },
    });
    this.watch = new ClusterWatch({
      kc,
      cluster: this.cluster,
      onChange: () => this.changed(),
      onGroup: (name, spec) => {
        this.claims.setGroup(name, spec);
        this.fileChanged();
      },
      log: {
        info: (m) => o.log.info(m),
        warn: (m) => o.log.warn(m),
      },
    });
  }

  start(): void {
    this.watch.start();
    this.claims.start();
    void this.watch.synced.then(() => {
      if (this.stopped) return;
      this.synced = true;
      const c = this.cluster.counts();
      this.o.log.info(c, "kubernetes: synced");
      this.changed();
    });
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.statusTimer);
    clearTimeout(this.cacheTimer);
    await this.watch.stop();
  }

  status(): ClusterWatchStatus & {
    counts: ReturnType<Cluster["counts"]>;
    statusWrites: StatusWriter["stats"];
    egressIPGroups: ReturnType<GroupClaims["status"]>;
  } {
    return {
      ...this.watch.status(),
      counts: this.cluster.counts(),
      statusWrites: { ...this.writer.stats },
      egressIPGroups: this.claims.status(),
    };
  }

  /** The cluster's policies as the model has them, once it has synced (before that it knows none). */
  policiesIfSynced(): PolicyConfig[] | undefined {
    return this.synced ? this.cluster.policyConfigs() : undefined;
  }

  /**
   * The file was reloaded, or the API's groups or what this gateway holds of
   * them changed: the file's groups and the API's (with the addresses held
   * here, or none), and the file's policy names, are what the cluster's
   * policies are checked against. A file's group wins over the API's of the
   * same name.
   */
  fileChanged(): void {
    const v = fileOnly(this.o.view());
    const fileGroups = v.egressIPGroups ?? [];
    const own = new Set(fileGroups.map((g) => g.name));
    const { groups: heldGroups } = claimedParts(v, this.held);
    const held = new Map(heldGroups.map((g) => [g.name, g]));
    const api = [...this.claims.apiGroups().values()]
      .filter((g) => !own.has(g.name))
      .map(
        (g): EgressIPGroupConfig =>
          held.get(g.name) ?? {
            name: g.name,
            egressIPs: [],
            uplink: g.spec.uplink,
            ...(g.spec.namespaceSelector ? { namespaceSelector: g.spec.namespaceSelector } : {}),
          },
      );
    this.cluster.setGateway([...fileGroups, ...api], fileNames(v), new Set(api.map((g) => g.name)));
    this.changed();
  }

  /** Plans with `held` (the next full reload); resolves with what is in force after it, undefined if it failed. */
  private applyClaims(held: HeldGroup[]): Promise<HeldGroup[] | undefined> {
    this.held = held;
    this.inSync = false;
    this.fileChanged();
    return new Promise((resolve) => this.claimWaiters.push(resolve));
  }

  /** After the drain: gives the leases back (see GroupClaims.release). */
  async releaseClaims(): Promise<void> {
    await this.claims.release();
  }

  /** A reload with the whole list even if nothing changed since. */
  private changedAnyway(): void {
    this.inSync = false;
    this.changed();
  }

  /** Something changed: one reload for everything that changes until it runs. */
  private changed(): void {
    if (this.synced) this.changeAt ??= performance.timeOrigin + performance.now();
    if (!this.synced || this.queued || this.stopped) return;
    this.queued = true;
    this.o.serialize(async () => {
      this.queued = false;
      if (this.stopped) return;
      const waiters = this.claimWaiters;
      this.claimWaiters = [];
      const held = this.held;
      const ok = await this.reload().catch((e: unknown) => {
        for (const w of waiters) w(undefined);
        throw e;
      });
      for (const w of waiters) w(ok ? held : undefined);
    });
  }

  /**
   * One reload with what changed: the addresses added and removed when only
   * pods moved and the data plane is in step with the model (one pod, one
   * element), else the whole list of the cluster's policies.
   */
  private async reload(): Promise<boolean> {
    const started = performance.now();
    const changeAt = this.changeAt;
    this.changeAt = undefined;
    const changes = this.cluster.takeChanges();
    const edits = this.inSync && !changes.structural;
    if (edits && changes.edits.length === 0) return true;
    // Pod moves change no policy: their generations are the last reload's.
    const generations = edits ? this.generations : this.cluster.policyGenerations();
    this.generations = generations;
    this.inSync = false;
    const input: PrepareInput = edits
      ? { clusterEdits: changes.edits }
      : { cluster: this.cluster.policyConfigs(), claims: this.held };
    const preparing = performance.now();
    const next = await this.o.prepare(input).catch((e: unknown) => {
      this.o.log.error(
        { err: (e as Error).message },
        "kubernetes: the cluster's policies could not be prepared",
      );
      return undefined;
    });
    if (!next) {
      this.reloads.refused++;
      // Edits that could not be prepared: the whole list, once (not again if that fails too).
      if (edits) this.changedAnyway();
      return false;
    }
    if (!next.ok) {
      for (const e of next.errors) this.o.log.error({ path: e.path }, `kubernetes: ${e.message}`);
      this.reloads.refused++;
      // Edits that did not fit: the whole list, at once.
      if (edits) this.changedAnyway();
      return false;
    }
    const prepareMs = performance.now() - preparing;
    let result: "applied" | "unchanged" | "failed" | "refused";
    let message: string;
    try {
      result = await this.o.gateway.reload(next);
      this.inSync = true;
      message =
        result === "failed"
          ? "the data plane could not be brought to it; retrying (see egressd status)"
          : "in the data plane of this gateway";
    } catch (e) {
      if (!(e instanceof ReloadRefused)) throw e;
      result = "refused";
      message = `refused: ${e.message}`;
      this.o.log.error(
        { reason: e.message },
        "kubernetes: reload refused; the running config stays in force",
      );
    }
    this.reloads[result]++;
    const ok = result === "applied" || result === "unchanged";
    const inForce = result !== "failed" && result !== "refused";
    // Pod moves with the last reload's outcome leave every policy's Programmed as it is:
    // 1,000 policies are not gone through for every pod.
    const outcome = `${ok} ${inForce} ${message}`;
    if (!edits || outcome !== this.outcome) {
      for (const [key, generation] of generations)
        if (ok || this.programmed.get(key)?.generation !== generation)
          this.programmed.set(key, { generation, ok: inForce, message });
      for (const k of this.programmed.keys()) if (!generations.has(k)) this.programmed.delete(k);
      this.statusOfEvery = true;
    }
    this.outcome = outcome;
    // Pod moves change only counts in the status: written at most every STATUS_EVERY_MS.
    this.scheduleStatus(edits ? STATUS_EVERY_MS : 0);
    if (ok) this.scheduleCache();
    if (result === "applied")
      this.o.log[edits ? "debug" : "info"](
        {
          result,
          ms: Number((performance.now() - started).toFixed(1)),
          prepareMs: Number(prepareMs.toFixed(1)),
          ...(changeAt !== undefined ? { changeAt: Number(changeAt.toFixed(3)) } : {}),
          ...(next.sourcesOnly ? { sourcesOnly: true } : {}),
          ...(edits ? { edits: changes.edits.length } : this.cluster.counts()),
        },
        "kubernetes: policies applied",
      );
    return ok && result !== "failed";
  }

  private cacheTimer: NodeJS.Timeout | undefined;

  /** Keeps the policies in force for a restart, at most every STATUS_EVERY_MS. */
  private scheduleCache(): void {
    const keep = this.o.keep;
    if (keep === undefined || this.cacheTimer) return;
    this.cacheTimer = setTimeout(() => {
      this.cacheTimer = undefined;
      keep().catch((e: unknown) =>
        this.o.log.warn(
          { err: (e as Error).message },
          "kubernetes: cannot keep the cluster's policies for a restart",
        ),
      );
    }, STATUS_EVERY_MS);
    this.cacheTimer.unref();
  }

  private statusTimer: NodeJS.Timeout | undefined;
  private statusDue = Infinity;
  /** The last reload's policy generations, and its outcome (see reload). */
  private generations = new Map<string, number>();
  private outcome = "";
  /** Every policy's status is to be made again (a policy's Programmed may have changed), not only the moved pods' policies'. */
  private statusOfEvery = true;

  /** Writes the policies' status in `ms` (sooner if already due sooner). */
  private scheduleStatus(ms: number): void {
    const due = Date.now() + ms;
    if (due >= this.statusDue) return;
    clearTimeout(this.statusTimer);
    this.statusDue = due;
    this.statusTimer = setTimeout(() => {
      this.statusDue = Infinity;
      if (this.stopped) return;
      const some = this.statusOfEvery ? undefined : this.cluster.changedPolicyStates();
      if (some) void this.writer.update(some, this.programmed, true);
      else {
        this.statusOfEvery = false;
        void this.writer.update(this.cluster.policyStates(), this.programmed);
      }
    }, ms);
    this.statusTimer.unref();
  }
}

/** How often pod moves alone refresh the policies' status (their pod counts). */
const STATUS_EVERY_MS = 2000;
