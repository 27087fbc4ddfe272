// Writes each policy's status back to the API, this gateway's entry only:
// server-side apply of the status subresource under a field manager of the
// gateway's own ("egressd/<gateway>"), so that every gateway owns its entry of
// status.gateways (a list-map keyed by gateway) and none overwrites another's,
// as Gateway API's controllers do for their parents. Also emits a Warning
// Event for a policy this gateway refuses, once per generation and reason.
//
// Writes are coalesced: what changed since the last write, at most `concurrency`
// requests at once, and an entry is written again only when its content
// changes (a condition's lastTransitionTime moves only when its status does).
import { TokenBucket } from "../../lib/token-bucket.js";
import type { KubeConfig } from "./client.js";
import { API_GROUP_VERSION, type Condition, type GatewayStatus } from "../../core/k8s/api-schema.js";
import type { PolicyState } from "../../core/k8s/cluster.js";
import { apiRequest, okBody } from "./api.js";

export interface Programmed {
  /** The generation the data plane has in force; undefined before the first reload that included it. */
  generation: number | undefined;
  ok: boolean;
  message: string;
}

export interface StatusWriterOptions {
  kc: KubeConfig;
  gateway: string;
  site: string;
  now?: () => Date;
  concurrency?: number;
  /**
   * API writes (status and Events) a second, after a first burst of as many
   * (default WRITES_PER_SECOND); `bucket` replaces the bucket (tests).
   */
  writesPerSecond?: number;
  bucket?: TokenBucket;
  log: { warn(msg: string): void };
}

/**
 * Why writes are paced: the first round after a gateway programs 1,000
 * policies writes 1,000 statuses, and as one burst (4 at a time) it took the
 * CPU from the pod moves that came meanwhile: in bench/k8s-scale, the first
 * moves after programming took 11-37 ms from the watch event to the kernel,
 * 7-12 ms with no status written. At 50 a second the round takes 20 s, and
 * what a fleet of gateways sends the API server is bounded (client-go's
 * clients are paced the same way, at 5 a second by default).
 */
export const WRITES_PER_SECOND = 50;

type Entry = GatewayStatus;

const condition = (
  type: string,
  ok: boolean,
  reason: string,
  message: string,
  generation: number,
  at: string,
): Condition => ({
  type,
  status: ok ? "True" : "False",
  reason,
  message,
  lastTransitionTime: at,
  observedGeneration: generation,
});

const plural = (s: PolicyState) => (s.kind === "EgressPolicy" ? "egresspolicies" : "clusteregresspolicies");
const objectPath = (s: PolicyState) =>
  s.kind === "EgressPolicy"
    ? `/apis/${API_GROUP_VERSION}/namespaces/${s.namespace}/${plural(s)}/${s.name}`
    : `/apis/${API_GROUP_VERSION}/${plural(s)}/${s.name}`;

export class StatusWriter {
  /** Per policy key: what was last written (or is being written), to skip what did not change. */
  private readonly written = new Map<string, { uid: string; entry: Entry; text: string }>();
  /** Per policy UID: the events already emitted ("generation/reason"). */
  private readonly evented = new Map<string, Set<string>>();
  private running = false;
  /** States whose write failed: written again in the next round that does not bring a newer state of them. */
  private readonly failed = new Map<string, PolicyState>();
  /** The next round: the states by policy key, and whether they are every policy (else some, to merge). */
  private pending:
    | { states: Map<string, PolicyState>; programmed: Map<string, Programmed>; every: boolean }
    | undefined;
  readonly stats = { writes: 0, errors: 0, events: 0 };

  private readonly bucket: TokenBucket;

  constructor(private readonly o: StatusWriterOptions) {
    const rate = o.writesPerSecond ?? WRITES_PER_SECOND;
    this.bucket = o.bucket ?? new TokenBucket(rate, rate);
  }

  get fieldManager(): string {
    return `egressd/${this.o.gateway}`;
  }

  /**
   * Writes what changed. `states` is every policy, or with `some` only
   * policies whose state may have changed (the others are left as written).
   * A call while writing is folded into the next round.
   */
  update(states: PolicyState[], programmed: Map<string, Programmed>, some = false): Promise<void> {
    const p = this.pending;
    if (some && p) {
      for (const s of states) p.states.set(s.key, s);
      p.programmed = programmed;
    } else this.pending = { states: new Map(states.map((s) => [s.key, s])), programmed, every: !some };
    if (this.running) return Promise.resolve();
    return this.drain();
  }

  private async drain(): Promise<void> {
    this.running = true;
    try {
      while (this.pending) {
        const { states, programmed, every } = this.pending;
        this.pending = undefined;
        // A round of some policies may not include one whose write failed (its pods did not
        // move again); a round of every policy brings its state now, unless it is gone.
        if (!every) for (const [k, s] of this.failed) if (!states.has(k)) states.set(k, s);
        this.failed.clear();
        const jobs: (() => Promise<void>)[] = [];
        for (const s of states.values()) {
          const entry = this.entryFor(s, programmed.get(s.key));
          const text = JSON.stringify(entry, (k, v: unknown) => (k === "lastTransitionTime" ? undefined : v));
          const before = this.written.get(s.key);
          if (before && before.uid === s.uid && before.text === text) continue;
          this.written.set(s.key, { uid: s.uid, entry, text });
          jobs.push(() => this.bucket.take().then(() => this.apply(s, entry)));
          if (!s.accepted.ok) jobs.push(() => this.bucket.take().then(() => this.event(s)));
        }
        if (every) for (const k of this.written.keys()) if (!states.has(k)) this.written.delete(k);
        await runLimited(jobs, this.o.concurrency ?? 4);
      }
    } finally {
      this.running = false;
    }
  }

  /** This gateway's entry; a condition keeps its lastTransitionTime while its status stays. */
  private entryFor(s: PolicyState, p: Programmed | undefined): Entry {
    const at = (this.o.now?.() ?? new Date()).toISOString().replace(/\.\d{3}Z$/, "Z");
    const before = this.written.get(s.key);
    const since = (type: string, ok: boolean) => {
      const c = before?.uid === s.uid ? before.entry.conditions.find((x) => x.type === type) : undefined;
      return c && c.status === (ok ? "True" : "False") ? c.lastTransitionTime : at;
    };
    const { field, message } = s.accepted;
    const accepted = condition(
      "Accepted",
      s.accepted.ok,
      s.accepted.reason,
      field && !message.startsWith(field) ? `${field}: ${message}` : message,
      s.generation,
      since("Accepted", s.accepted.ok),
    );
    const [ok, reason, text] = programmedOf(s, p);
    const programmed = condition("Programmed", ok, reason, text, s.generation, since("Programmed", ok));
    return {
      gateway: this.o.gateway,
      site: this.o.site,
      observedGeneration: s.generation,
      selectedPods: s.selectedPods,
      conditions: [accepted, programmed],
    };
  }

  private async apply(s: PolicyState, entry: Entry): Promise<void> {
    const body = {
      apiVersion: API_GROUP_VERSION,
      kind: s.kind,
      metadata: { name: s.name, ...(s.namespace !== undefined ? { namespace: s.namespace } : {}) },
      status: { gateways: [entry] },
    };
    try {
      const r = await apiRequest(this.o.kc, "PATCH", `${objectPath(s)}/status`, {
        query: { fieldManager: this.fieldManager, force: true },
        body: JSON.stringify(body),
        contentType: "application/apply-patch+yaml",
      });
      if (r.status === 404) return; // deleted meanwhile
      okBody(r, `status of ${s.key}`);
      this.stats.writes++;
    } catch (e) {
      this.stats.errors++;
      this.written.delete(s.key);
      this.failed.set(s.key, s); // written again next round
      this.o.log.warn(`kubernetes: cannot write the status of ${s.key}: ${(e as Error).message}`);
    }
  }

  private async event(s: PolicyState): Promise<void> {
    const seen = this.evented.get(s.uid) ?? new Set<string>();
    this.evented.set(s.uid, seen);
    const key = `${s.generation}/${s.accepted.reason}`;
    if (seen.has(key)) return;
    seen.add(key);
    const namespace = s.namespace ?? "default";
    const at = (this.o.now?.() ?? new Date()).toISOString();
    const body = {
      apiVersion: "v1",
      kind: "Event",
      metadata: {
        name: `${s.name}.${Date.now().toString(16)}${Math.floor(Math.random() * 0x10000).toString(16)}`,
        namespace,
      },
      involvedObject: {
        apiVersion: API_GROUP_VERSION,
        kind: s.kind,
        name: s.name,
        ...(s.namespace !== undefined ? { namespace: s.namespace } : {}),
        uid: s.uid,
      },
      reason: s.accepted.reason,
      message: `${this.o.gateway}: ${s.accepted.message}`,
      type: "Warning",
      source: { component: "egressd", host: this.o.gateway },
      reportingComponent: "egressd.io/gateway",
      reportingInstance: this.o.gateway,
      firstTimestamp: at,
      lastTimestamp: at,
      count: 1,
    };
    try {
      okBody(
        await apiRequest(this.o.kc, "POST", `/api/v1/namespaces/${namespace}/events`, {
          body: JSON.stringify(body),
        }),
        "event",
      );
      this.stats.events++;
    } catch (e) {
      seen.delete(key);
      this.o.log.warn(`kubernetes: cannot record an event for ${s.key}: ${(e as Error).message}`);
    }
  }
}

/** The Programmed condition: whether this generation is in force here, and why not. */
function programmedOf(s: PolicyState, p: Programmed | undefined): [boolean, string, string] {
  const inForce = p !== undefined && p.generation === s.generation;
  if (s.accepted.reason === "EgressIPGroupNotFound" || s.accepted.reason === "EgressIPGroupNotAllowed")
    return inForce && p.ok
      ? [false, "Blocked", "its pods are blocked here (dropped) until the group is defined on this gateway"]
      : [false, "Pending", "the block of its pods is not in the data plane yet"];
  if (!s.accepted.ok) return [false, "NotAccepted", "not programmed: the policy is not accepted here"];
  if (!inForce) return [false, "Pending", "this generation is not in the data plane yet"];
  if (s.notHeld && p.ok)
    return [
      false,
      "EgressIPGroupNotHeld",
      "this gateway holds no address of the group: the gateways that hold one serve its pods; here they are blocked and its destinations are not advertised",
    ];
  return p.ok ? [true, "Programmed", p.message] : [false, "ReconcileFailed", p.message];
}

/** Runs the jobs, at most `n` at once. */
async function runLimited(jobs: (() => Promise<void>)[], n: number): Promise<void> {
  let next = 0;
  const worker = async () => {
    while (next < jobs.length) await jobs[next++]!();
  };
  await Promise.all(Array.from({ length: Math.min(n, jobs.length) }, worker));
}
