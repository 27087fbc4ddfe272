// Follows the cluster: pods, namespaces, EgressPolicies and
// ClusterEgressPolicies, each with @kubernetes/client-node's own ListWatch
// informer, into the cluster model (core/k8s/cluster.ts); and EgressIPGroups,
// handed to the caller (the gateway claims their addresses).
//
// - Lists are read in pages (limit/continue) and trimmed page by page;
//   watch events are trimmed before the informer caches them (a wrapper
//   around client-node's Watch that also asks for bookmarks and a server-side
//   timeout, so a watch is renewed every few minutes from its last version).
// - A watch that ends is resumed by the informer from its last resource
//   version; an answer of 410 Gone (an expired version or continue token)
//   makes it list again, and the informer reports what vanished meanwhile as
//   deletions. Any other error (the API server unreachable, a dropped
//   connection) is an outage: the model keeps everything it knows, the
//   informer is started again with a growing delay, and the outage is
//   reported until every informer has heard from the server again.
// - Nothing is reported as synced until every informer has listed once:
//   before that, the model would lack pods and policies it has not read yet.
import { ListWatch, Watch, type KubeConfig, type KubernetesObject } from "./client.js";
import { API_GROUP_VERSION } from "../../core/k8s/api-schema.js";
import type { Cluster } from "../../core/k8s/cluster.js";
import type { PolicyKind } from "../../core/k8s/policy.js";
import { apiRequest, okBody } from "./api.js";
import { policyObject, trimNamespace, trimPod, trimPolicy, type Kept, type KeptPod } from "./objects.js";

export interface WatchLog {
  info(msg: string): void;
  warn(msg: string): void;
}

export interface ClusterWatchOptions {
  kc: KubeConfig;
  cluster: Cluster;
  /** Called after every change to the model (the caller batches). */
  onChange: () => void;
  /** EgressIPGroups, which are not the model's: each change, as it comes (a deletion has no spec). */
  onGroup?: (name: string, spec: unknown) => void;
  log: WatchLog;
  /** Items per list page (default 500). */
  pageSize?: number;
  /** Restart delays after an error: first, and the cap (default 500 ms, 30 s). */
  backoffMs?: { first: number; max: number };
  /** Longest a watch lasts before the server ends it and it is renewed (default 300-600 s, random). */
  watchTimeoutSeconds?: () => number;
}

type Kind = "pods" | "namespaces" | PolicyKind | "EgressIPGroup";

interface Informer {
  kind: Kind;
  path: string;
  lw: ListWatch<KubernetesObject & Kept>;
  synced: boolean;
  /** Heard from the server since the last error. */
  connected: boolean;
  lastError: string | undefined;
  errors: number;
  lists: number;
  delay: number;
  timer: NodeJS.Timeout | undefined;
}

export interface ResourceStatus {
  kind: Kind;
  synced: boolean;
  connected: boolean;
  lastError?: string;
  errors: number;
  lists: number;
}

export interface ClusterWatchStatus {
  synced: boolean;
  connected: boolean;
  /** When the API was last lost (ms since the epoch), while it is. */
  outageSince?: number;
  resources: ResourceStatus[];
}

const PATHS: Record<Kind, string> = {
  pods: "/api/v1/pods",
  namespaces: "/api/v1/namespaces",
  EgressPolicy: `/apis/${API_GROUP_VERSION}/egresspolicies`,
  ClusterEgressPolicy: `/apis/${API_GROUP_VERSION}/clusteregresspolicies`,
  EgressIPGroup: `/apis/${API_GROUP_VERSION}/egressipgroups`,
};

/**
 * Pods the API server leaves out for egressd: those that can hold no pod
 * address, so that the model loses nothing by not seeing them. A pod that
 * ended (Succeeded, Failed) has given its address back, and a hostNetwork
 * pod's address is its node's. A pod that ends while watched leaves the
 * selection, and the watch says DELETED for it, which the model treats as
 * it treats an ended pod. Not a label selector: the model must see every pod
 * that holds an address, selected by a policy or not, to tell whose an
 * address reused by the network is (docs/kubernetes.md).
 */
export const POD_FIELD_SELECTOR = "status.phase!=Succeeded,status.phase!=Failed,spec.hostNetwork=false";
/** For API servers before Kubernetes 1.28, which cannot select on spec.hostNetwork. */
export const POD_FIELD_SELECTOR_OLD = "status.phase!=Succeeded,status.phase!=Failed";

const TRIM: Record<Kind, (raw: unknown) => Kept> = {
  pods: trimPod,
  namespaces: trimNamespace,
  EgressPolicy: trimPolicy,
  ClusterEgressPolicy: trimPolicy,
  EgressIPGroup: trimPolicy,
};

export class ClusterWatch {
  private readonly informers: Informer[] = [];
  private stopped = false;
  private outageSince: number | undefined;
  private syncedResolve: (() => void) | undefined;
  /** Resolves when every informer has listed once. */
  readonly synced: Promise<void>;

  constructor(private readonly o: ClusterWatchOptions) {
    this.synced = new Promise((resolve) => (this.syncedResolve = resolve));
    for (const kind of Object.keys(PATHS) as Kind[]) this.informers.push(this.informer(kind));
  }

  start(): void {
    this.stopped = false;
    for (const i of this.informers) void i.lw.start();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    for (const i of this.informers) {
      clearTimeout(i.timer);
      await i.lw.stop();
    }
  }

  status(): ClusterWatchStatus {
    return {
      synced: this.informers.every((i) => i.synced),
      connected: this.informers.every((i) => i.connected),
      ...(this.outageSince !== undefined ? { outageSince: this.outageSince } : {}),
      resources: this.informers.map((i) => ({
        kind: i.kind,
        synced: i.synced,
        connected: i.connected,
        ...(i.lastError !== undefined ? { lastError: i.lastError } : {}),
        errors: i.errors,
        lists: i.lists,
      })),
    };
  }

  private informer(kind: Kind): Informer {
    const path = PATHS[kind];
    const trim = TRIM[kind];
    const watch = new Watch(this.o.kc);
    const timeout = this.o.watchTimeoutSeconds ?? (() => 300 + Math.floor(Math.random() * 300));
    const heard = () => this.heard(inf);
    let fieldSelector = kind === "pods" ? POD_FIELD_SELECTOR : undefined;
    // client-node's Watch, with bookmarks and a server-side timeout asked for, and every object
    // trimmed before the informer sees (and caches) it.
    const trimming = {
      watch(
        p: string,
        params: Record<string, unknown>,
        cb: (phase: string, obj: unknown, raw: unknown) => void,
        done: (err: unknown) => void,
      ) {
        return watch.watch(
          p,
          {
            ...params,
            allowWatchBookmarks: true,
            timeoutSeconds: timeout(),
            ...(fieldSelector ? { fieldSelector } : {}),
          },
          (phase, obj, raw) => {
            heard();
            cb(
              phase,
              phase === "ADDED" || phase === "MODIFIED" || phase === "DELETED" ? trim(obj) : obj,
              raw,
            );
          },
          done,
        );
      },
    } as unknown as Watch;
    const list = async () => {
      const items: Kept[] = [];
      let token: string | undefined;
      let rv = "";
      for (;;) {
        const r = await apiRequest(this.o.kc, "GET", path, {
          query: { limit: this.o.pageSize ?? 500, continue: token, fieldSelector },
        });
        if (
          r.status === 400 &&
          fieldSelector === POD_FIELD_SELECTOR &&
          /spec\.hostNetwork/.test(JSON.stringify(r.body))
        ) {
          // An API server before 1.28: hostNetwork pods come too (the model never selects them).
          this.o.log.warn(
            `kubernetes: the API server cannot select pods on spec.hostNetwork (before 1.28?); watching them too`,
          );
          fieldSelector = POD_FIELD_SELECTOR_OLD;
          token = undefined;
          items.length = 0;
          continue; // the first page again
        }
        const body = okBody(r, `list ${kind}`) as {
          metadata?: { continue?: string; resourceVersion?: string };
          items?: unknown[];
        };
        for (const raw of body.items ?? []) items.push(trim(raw));
        token = body.metadata?.continue || undefined;
        rv = body.metadata?.resourceVersion ?? rv;
        if (!token) break;
      }
      inf.lists++;
      this.heard(inf);
      return { metadata: { resourceVersion: rv }, items } as never;
    };
    const lw = new ListWatch<KubernetesObject & Kept>(path, trimming, list, false);
    const inf: Informer = {
      kind,
      path,
      lw,
      synced: false,
      connected: false,
      lastError: undefined,
      errors: 0,
      lists: 0,
      delay: 0,
      timer: undefined,
    };
    lw.on("add", (k) => this.apply(kind, "upsert", k));
    lw.on("update", (k) => this.apply(kind, "upsert", k));
    lw.on("delete", (k) => this.apply(kind, "delete", k));
    lw.on("error", (err) => this.failed(inf, err));
    return inf;
  }

  /** The server answered this informer: its list is in, or a watch event came. */
  private heard(inf: Informer): void {
    inf.delay = 0;
    if (!inf.connected) {
      inf.connected = true;
      if (inf.lastError !== undefined) this.o.log.info(`kubernetes: ${inf.kind} back (${inf.path})`);
    }
    if (this.outageSince !== undefined && this.informers.every((i) => i.connected)) {
      this.o.log.info(
        `kubernetes: the API server is reachable again after ${Date.now() - this.outageSince} ms`,
      );
      this.outageSince = undefined;
    }
    if (!inf.synced && inf.lists > 0)
      // After the informer has taken the list in (it does so as soon as the list function returns).
      setImmediate(() => {
        inf.synced = true;
        if (this.informers.every((i) => i.synced)) this.syncedResolve?.();
      });
  }

  private failed(inf: Informer, err: unknown): void {
    if (this.stopped) return;
    const message = err instanceof Error ? err.message : String(err);
    inf.errors++;
    inf.lastError = message;
    if (inf.connected || inf.errors === 1)
      this.o.log.warn(`kubernetes: ${inf.kind}: ${message}; keeping what is known, retrying`);
    inf.connected = false;
    this.outageSince ??= Date.now();
    const b = this.o.backoffMs ?? { first: 500, max: 30_000 };
    inf.delay = Math.min(b.max, inf.delay === 0 ? b.first : inf.delay * 2);
    clearTimeout(inf.timer);
    inf.timer = setTimeout(
      () => {
        if (!this.stopped) void inf.lw.start();
      },
      inf.delay * (0.8 + 0.4 * Math.random()),
    );
    inf.timer.unref?.();
  }

  private apply(kind: Kind, op: "upsert" | "delete", k: Kept): void {
    const c = this.o.cluster;
    const m = k.metadata;
    if (kind === "namespaces") {
      if (op === "delete") c.deleteNamespace(m.name);
      else c.upsertNamespace(m.name, m.labels ?? {});
    } else if (kind === "pods") {
      if (op === "delete") c.deletePod(m.uid);
      else {
        const pod = k as unknown as KeptPod;
        for (const p of pod.problems ?? []) this.o.log.warn(`kubernetes: pod ${m.namespace}/${m.name}: ${p}`);
        if (pod.uid !== "") c.upsertPod(pod);
      }
    } else if (kind === "EgressIPGroup") {
      this.o.onGroup?.(m.name, op === "delete" ? undefined : k.spec);
    } else if (op === "delete") c.deletePolicy(kind, m.namespace, m.name);
    else {
      const r = policyObject(kind, k);
      c.upsertPolicy(r.obj, r.ok ? undefined : r.problems);
    }
    this.o.onChange();
  }
}
