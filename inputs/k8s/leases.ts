// The I/O of an egress IP group's claims (core/k8s/claims.ts decides): the
// group's coordination.k8s.io/v1 Leases in egressd's namespace, listed by
// label, and the creates, conditional updates and conditional deletes the
// claimer asks for. One tick lists, decides and sends; the daemon runs ticks
// on a timer, tests run them with their own clock.
//
// A lease per address, named egressd.GROUP.HEX (the address in hex) and one
// per gateway serving the group, egressd.GROUP.gw.NODE; both carry the label
// egressd.io/group=GROUP and their key in the annotation egressd.io/key.
// Their holderIdentity is the gateway's node name. renewTime and acquireTime
// are written for people (kubectl get lease); no gateway reads another's
// clock: each measures a lease's age by when it saw its version change.
import type { KubeConfig } from "./client.js";
import { apiRequest } from "./api.js";
import {
  PRESENCE,
  type Claimer,
  type LeaseRecord,
  type LeaseRequest,
  type LeaseResult,
} from "../../core/k8s/claims.js";
import { parseAddress } from "../../core/ip.js";

export const GROUP_LABEL = "egressd.io/group";
export const KEY_ANNOTATION = "egressd.io/key";

/** The Lease's name for a key of `group`: a DNS subdomain, as object names must be. */
export function leaseName(group: string, key: string): string {
  if (key.startsWith(PRESENCE)) return `egressd.${group}.gw.${key.slice(PRESENCE.length)}`;
  const a = parseAddress(key);
  if (!a) throw new Error(`not an address: ${key}`);
  return `egressd.${group}.${a.value.toString(16).padStart(a.family === 4 ? 8 : 32, "0")}`;
}

function nameOrUndefined(group: string, key: string): string | undefined {
  try {
    return leaseName(group, key);
  } catch {
    return undefined;
  }
}

interface LeaseObject {
  metadata?: {
    name?: string;
    resourceVersion?: string;
    labels?: Record<string, string>;
    annotations?: Record<string, string>;
  };
  spec?: { holderIdentity?: string | null; leaseDurationSeconds?: number };
}

/** The claimer's view of a listed Lease; undefined for one that is not a claim of `group` (or is malformed). */
export function recordOf(group: string, o: LeaseObject): LeaseRecord | undefined {
  const key = o.metadata?.annotations?.[KEY_ANNOTATION];
  const version = o.metadata?.resourceVersion;
  if (key === undefined || version === undefined || o.metadata?.labels?.[GROUP_LABEL] !== group)
    return undefined;
  if (o.metadata?.name !== nameOrUndefined(group, key)) return undefined;
  const seconds = o.spec?.leaseDurationSeconds;
  const durationMs = Number.isInteger(seconds) && seconds! > 0 && seconds! <= 3600 ? seconds! * 1000 : 15_000;
  return { key, holder: o.spec?.holderIdentity || undefined, version, durationMs };
}

/** RFC 3339 with microseconds, as a Lease's MicroTime fields are written. */
const microTime = (d: Date) => d.toISOString().replace(/\.(\d{3})Z$/, ".$1000Z");

export interface LeaseDriverOptions {
  kc: KubeConfig;
  namespace: string;
  group: string;
  claimer: Claimer;
  /** Monotonic milliseconds (the claimer's clock). */
  clock: () => number;
  /** For the timestamps people read only. */
  wallClock?: () => Date;
  /** Each request's time limit; an answer after it is an unknown outcome. Default: the claimer's renewMs. */
  timeoutMs?: number;
}

export class LeaseDriver {
  readonly stats = { lists: 0, listErrors: 0, writes: 0, conflicts: 0, unknown: 0 };
  lastError: string | undefined;

  constructor(private readonly o: LeaseDriverOptions) {}

  private get base(): string {
    return `/apis/coordination.k8s.io/v1/namespaces/${encodeURIComponent(this.o.namespace)}/leases`;
  }

  private get timeoutMs(): number {
    return this.o.timeoutMs ?? this.o.claimer.timing.renewMs;
  }

  /** Lists the group's leases into the claimer; false when the list failed. */
  async observe(): Promise<boolean> {
    const requestedAt = this.o.clock();
    try {
      const r = await apiRequest(this.o.kc, "GET", this.base, {
        query: { labelSelector: `${GROUP_LABEL}=${this.o.group}` },
        timeoutMs: this.timeoutMs,
      });
      if (r.status !== 200) throw new Error(`list: ${r.status}`);
      const items = ((r.body as { items?: LeaseObject[] }).items ?? [])
        .map((o) => recordOf(this.o.group, o))
        .filter((x): x is LeaseRecord => x !== undefined);
      this.o.claimer.observe(items, this.o.clock(), requestedAt);
      this.stats.lists++;
      return true;
    } catch (e) {
      this.stats.listErrors++;
      this.lastError = (e as Error).message;
      return false;
    }
  }

  /** One round: list, then send what the claimer asks for and hand it the outcomes. */
  async tick(programmed: ReadonlySet<string>): Promise<void> {
    await this.observe();
    const requests = this.o.claimer.step(this.o.clock(), programmed);
    await Promise.all(
      requests.map(async (req) => {
        const result = await this.send(req);
        this.o.claimer.done(req, result, this.o.clock());
      }),
    );
  }

  private body(req: Extract<LeaseRequest, { holder: string }>, version?: string): string {
    const now = microTime(this.o.wallClock?.() ?? new Date());
    return JSON.stringify({
      apiVersion: "coordination.k8s.io/v1",
      kind: "Lease",
      metadata: {
        name: leaseName(this.o.group, req.key),
        namespace: this.o.namespace,
        labels: { [GROUP_LABEL]: this.o.group, "app.kubernetes.io/name": "egressd" },
        annotations: { [KEY_ANNOTATION]: req.key },
        ...(version !== undefined ? { resourceVersion: version } : {}),
      },
      spec: {
        holderIdentity: req.holder,
        leaseDurationSeconds: Math.ceil(req.durationMs / 1000),
        ...(req.op === "create" ? { acquireTime: now } : {}),
        renewTime: now,
      },
    });
  }

  async send(req: LeaseRequest): Promise<LeaseResult> {
    const name = leaseName(this.o.group, req.key);
    this.stats.writes++;
    try {
      const r =
        req.op === "create"
          ? await apiRequest(this.o.kc, "POST", this.base, {
              body: this.body(req),
              timeoutMs: this.timeoutMs,
            })
          : req.op === "update"
            ? await apiRequest(this.o.kc, "PUT", `${this.base}/${name}`, {
                body: this.body(req, req.version),
                timeoutMs: this.timeoutMs,
              })
            : await apiRequest(this.o.kc, "DELETE", `${this.base}/${name}`, {
                body: JSON.stringify({
                  apiVersion: "v1",
                  kind: "DeleteOptions",
                  preconditions: { resourceVersion: req.version },
                }),
                timeoutMs: this.timeoutMs,
              });
      if (r.status === 200 || r.status === 201) {
        const version = (r.body as LeaseObject).metadata?.resourceVersion;
        if (req.op === "delete") return { outcome: "ok", version: "" };
        if (version !== undefined) return { outcome: "ok", version };
      }
      // Refused by its precondition: another version (409), or no lease any more (404).
      if (r.status === 409 || (r.status === 404 && req.op === "update")) {
        this.stats.conflicts++;
        return { outcome: "conflict" };
      }
      if (r.status === 404 && req.op === "delete") return { outcome: "ok", version: "" };
      const why = (r.body as { message?: string } | undefined)?.message ?? String(r.body).slice(0, 200);
      throw new Error(`${req.op} ${name}: ${r.status} ${why}`);
    } catch (e) {
      this.stats.unknown++;
      this.lastError = (e as Error).message;
      return { outcome: "unknown" };
    }
  }
}
