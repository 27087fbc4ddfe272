// The gateway's part in the egress IP groups of the API: for each group, a
// claimer (core/k8s/claims.ts) and its Lease driver (inputs/k8s/leases.ts),
// run on one timer; what they hold goes to the data plane through `apply`,
// and an address given back is deleted from the API only once the data plane
// has let go of it.
//
// The node's labels (for the groups' gatewaySelector) are read from its Node
// object at start and every NODE_EVERY_MS; until they are, the gateway serves
// no group.
import type { KubeConfig } from "../inputs/k8s/client.js";
import type { Logger } from "pino";
import { Claimer, DEFAULT_TIMING, type ClaimTiming } from "../core/k8s/claims.js";
import { apiGroup, serves, siteAttributes, type ApiGroup, type HeldGroup } from "../core/k8s/ip-groups.js";
import type { EgressIPGroupSpec } from "../core/k8s/api-schema.js";
import type { Labels } from "../core/k8s/selector.js";
import { LeaseDriver } from "../inputs/k8s/leases.js";
import { apiRequest } from "../inputs/k8s/api.js";

const NODE_EVERY_MS = 30_000;

export interface GroupClaimsOptions {
  kc: KubeConfig;
  /** Where the leases are (egressd's namespace). */
  namespace: string;
  /** This gateway's node: the holder's identity, and whose labels the groups select by. */
  node: string;
  /** This gateway's site (gateway.site): which of a group's `sites` attributes its paths carry. */
  site?: () => string;
  log: Logger;
  timing?: ClaimTiming;
  /**
   * Gives the data plane what is held; resolves with what is in force once a
   * reload with it (or with a later list) is done, undefined if that failed.
   */
  apply: (held: HeldGroup[]) => Promise<HeldGroup[] | undefined>;
  /** Monotonic milliseconds (default performance.now). */
  clock?: () => number;
}

interface Run {
  group: ApiGroup;
  claimer: Claimer;
  driver: LeaseDriver;
}

const sameHeld = (a: readonly HeldGroup[], b: readonly HeldGroup[]) =>
  JSON.stringify(a) === JSON.stringify(b);

/** Both lists' addresses, group by group. */
function union(a: readonly HeldGroup[], b: readonly HeldGroup[]): HeldGroup[] {
  const out = new Map<string, HeldGroup>();
  for (const h of [...a, ...b]) {
    const had = out.get(h.name);
    out.set(h.name, had ? { ...h, addresses: [...new Set([...had.addresses, ...h.addresses])].sort() } : h);
  }
  return [...out.values()];
}

export class GroupClaims {
  private readonly groups = new Map<string, ApiGroup>();
  private readonly runs = new Map<string, Run>();
  private labels: Labels | undefined;
  private labelsReadAt = -Infinity;
  /** In the data plane (confirmed), and asked for since (not yet confirmed, in order). */
  private applied: HeldGroup[] = [];
  private pending: HeldGroup[][] = [];
  private timer: NodeJS.Timeout | undefined;
  private ticking: Promise<void> | undefined;
  private stopped = false;
  private readonly clock: () => number;

  constructor(private readonly o: GroupClaimsOptions) {
    this.clock = o.clock ?? (() => performance.now());
  }

  /** A group as the watch saw it; undefined: deleted. */
  setGroup(name: string, spec: unknown): void {
    if (spec === undefined) this.groups.delete(name);
    else {
      const g = apiGroup(name, spec as EgressIPGroupSpec);
      for (const e of g.errors) this.o.log.warn({ group: name }, `egress IP group: ${e}; not served`);
      this.groups.set(name, g);
    }
    this.schedule(0);
  }

  /** Every group the API has, by name (the cluster model checks policies against them). */
  apiGroups(): ReadonlyMap<string, ApiGroup> {
    return this.groups;
  }

  /** What the data plane has of the groups, or is being given: the latest list asked for. */
  held(): HeldGroup[] {
    return this.pending.at(-1) ?? this.applied;
  }

  /** Runs rounds on timers; without start(), a caller runs tick() itself (tests, with their clock). */
  start(): void {
    this.started = true;
    this.stopped = false;
    this.schedule(0);
  }

  private started = false;

  private schedule(ms: number): void {
    if (this.stopped || !this.started) return;
    clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      this.ticking ??= this.tick()
        .catch((e: unknown) => {
          // Never the end of the loop: the deadlines depend on it.
          this.o.log.error({ err: (e as Error).message }, "egress IP groups: a round failed; retrying");
          this.schedule(1000);
        })
        .finally(() => (this.ticking = undefined));
    }, ms);
    this.timer.unref();
  }

  private async readLabels(): Promise<void> {
    const now = this.clock();
    if (now - this.labelsReadAt < NODE_EVERY_MS) return;
    this.labelsReadAt = now;
    try {
      const r = await apiRequest(this.o.kc, "GET", `/api/v1/nodes/${encodeURIComponent(this.o.node)}`, {
        timeoutMs: 5000,
      });
      if (r.status !== 200) throw new Error(`node ${this.o.node}: ${r.status}`);
      this.labels = (r.body as { metadata?: { labels?: Record<string, string> } }).metadata?.labels ?? {};
    } catch (e) {
      this.o.log.warn({ err: (e as Error).message }, "egress IP groups: cannot read this node's labels");
    }
  }

  /** The addresses of `group` the data plane has or is being given. */
  private programmed(group: string): Set<string> {
    const out = new Set<string>();
    for (const list of [this.applied, ...this.pending])
      for (const h of list) if (h.name === group) for (const a of h.addresses) out.add(a);
    return out;
  }

  async tick(): Promise<void> {
    // What is in use can only have shrunk since the last tick (a deadline): the data plane hears of
    // it before any request, which may wait for a timeout on an unreachable API server.
    this.push();
    void this.readLabels();
    for (const [name, g] of this.groups) {
      let run = this.runs.get(name);
      if (!run) {
        const claimer = new Claimer(this.o.node, this.o.timing ?? DEFAULT_TIMING);
        const driver = new LeaseDriver({
          kc: this.o.kc,
          namespace: this.o.namespace,
          group: name,
          claimer,
          clock: this.clock,
        });
        this.runs.set(name, (run = { group: g, claimer, driver }));
      }
      run.group = g;
      run.claimer.setGroup(g.pool, this.labels !== undefined && serves(g, this.labels));
    }
    // A deleted group: given back like any other, then forgotten once nothing of it is held.
    for (const [name, run] of this.runs)
      if (!this.groups.has(name)) {
        run.claimer.setGroup([], false);
        if (this.programmed(name).size === 0 && run.claimer.holdsNothing()) this.runs.delete(name);
      }
    await Promise.all([...this.runs].map(([name, run]) => run.driver.tick(this.programmed(name))));
    this.push();
    this.scheduleDeadline();
    let next = 1000;
    const now = this.clock();
    for (const run of this.runs.values()) next = Math.min(next, run.claimer.nextWake(now) - now);
    this.schedule(Math.max(10, next));
  }

  private deadlineTimer: NodeJS.Timeout | undefined;

  /**
   * A deadline does not wait for the next tick (which may be waiting for an
   * answer): at the earliest time an address in use must go, push again.
   */
  private scheduleDeadline(): void {
    clearTimeout(this.deadlineTimer);
    if (this.stopped || !this.started) return;
    const now = this.clock();
    let at = Infinity;
    for (const run of this.runs.values()) {
      const until = run.claimer.usableUntil();
      if (until !== undefined) at = Math.min(at, until);
    }
    if (at === Infinity) return;
    this.deadlineTimer = setTimeout(
      () => {
        this.push();
        this.scheduleDeadline();
      },
      Math.max(0, at - now),
    );
    this.deadlineTimer.unref();
  }

  /**
   * Gives the data plane what the claimers say is in use now, if that
   * changed, without waiting for it: renewals go on meanwhile, and an address
   * whose deadline comes is taken out by the next list even while an earlier
   * one is being applied.
   */
  private push(): void {
    const now = this.clock();
    const held: HeldGroup[] = [];
    const site = this.o.site?.();
    const bgpOf = (g: ApiGroup) => {
      const bgp = site === undefined ? undefined : siteAttributes(g.spec, site);
      return bgp ? { bgp } : undefined;
    };
    for (const [name, run] of this.runs) {
      const addresses = [...run.claimer.using(now)].sort();
      if (addresses.length === 0) continue;
      held.push({
        name,
        uplink: run.group.spec.uplink,
        ...(run.group.spec.namespaceSelector ? { namespaceSelector: run.group.spec.namespaceSelector } : {}),
        addresses,
        ...(bgpOf(run.group) ?? {}),
      });
    }
    if (sameHeld(held, this.held())) return;
    this.pending.push(held);
    void this.o
      .apply(held)
      .catch(() => undefined)
      .then((inForce) => {
        const i = this.pending.indexOf(held);
        // Failed: what it asked for may be partly in the kernel; both count as programmed until a success.
        if (inForce) {
          this.applied = inForce;
          this.pending.splice(0, i + 1);
          this.o.log.info(
            { held: inForce.map((h) => `${h.name}: ${h.addresses.join(" ")}`) },
            "egress IP groups: in force",
          );
        } else {
          this.pending.splice(i, 1);
          this.applied = union(this.applied, held);
        }
        this.schedule(0);
      });
  }

  /**
   * After the drain, with the data plane torn down: every lease is given
   * back (deleted), so that the other gateways take the addresses at once.
   * Bounded by `ms`; what is not deleted by then expires.
   */
  async release(ms = 3000): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    clearTimeout(this.deadlineTimer);
    await this.ticking;
    this.applied = [];
    this.pending = [];
    const until = this.clock() + ms;
    for (const run of this.runs.values()) run.claimer.drain();
    while (this.clock() < until) {
      await Promise.all([...this.runs.values()].map((r) => r.driver.tick(new Set())));
      if ([...this.runs.values()].every((r) => r.claimer.holdsNothing())) return;
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  status(): { group: string; serving: boolean; using: string[]; errors: string[]; lastError?: string }[] {
    const now = this.clock();
    return [...this.runs].map(([name, run]) => ({
      group: name,
      serving: this.labels !== undefined && serves(run.group, this.labels),
      using: [...run.claimer.using(now)],
      errors: run.group.errors,
      ...(run.driver.lastError ? { lastError: run.driver.lastError } : {}),
    }));
  }
}
