// A small Kubernetes API server, in the test's own process, that speaks the
// documented wire protocol for what egressd uses. No real API server can run
// on these machines (no container engine, none packaged in Debian), so
// egressd's @kubernetes/client-node code is tested against this, unchanged.
//
// What it implements, as the API conventions and the API server document it:
// - list: `resourceVersion` (served from the latest state, which satisfies
//   "not older than"), `limit` and `continue` (a snapshot per list; a token
//   whose snapshot was dropped answers 410 Gone, reason Expired);
// - watch (`watch=true`): events after `resourceVersion` replayed from a
//   bounded event log, then live; ADDED, MODIFIED, DELETED, BOOKMARK (with
//   `allowWatchBookmarks`, every `bookmarkMs`), and ERROR with a 410 Status
//   when the version is older than the log holds; `timeoutSeconds`;
// - create, update and delete of objects (the tests drive the cluster through
//   these methods; over HTTP: POST refuses an existing name with 409
//   AlreadyExists, PUT and DELETE refuse another resourceVersion than the one
//   named with 409 Conflict); custom resources are validated against their CRD
//   (defaults, unknown fields, OpenAPI schema, CEL) and get a generation that
//   changes with their spec;
// - server-side apply of the `status` subresource (PATCH with
//   application/apply-patch+yaml and a fieldManager): entries of a list-map
//   are owned by the manager that applied them, a manager's apply replaces
//   what it owned before, another manager's entries stay, and taking
//   another's entry without force is a 409 Conflict;
// - Events (POST), kept for the tests to read.
// Faults for the tests: drop every watch connection, compact the event log,
// expire list snapshots, delay responses, and go down (refuse everything).
//
// Plain HTTP on loopback: the client code is the same as with TLS apart from
// the agent client-node picks.
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { Socket } from "node:net";
import { randomUUID } from "node:crypto";
import { parse as parseYaml } from "yaml";
import { allCrds } from "../../core/k8s/crd.js";
import { crdValidator, type CrdValidator } from "./crd-validator.js";

type Json = Record<string, unknown>;

/** Where unixForwarder listens in a namespace, and what the kubeconfig of a unix-socket server names. */
export const FORWARDER_PORT = 6443;

/**
 * A program (for `node -e`) that listens on 127.0.0.1:FORWARDER_PORT and
 * forwards each connection to the unix socket given as its argument: run in a
 * lab namespace, it lets egressd there reach the API server of the test's
 * process through the filesystem, with no traffic outside the namespace.
 * Without Nagle's algorithm, as a real API server (Go) answers: on a kept
 * connection, the last small piece of each answer would otherwise wait for
 * the client's delayed ACK (40 ms a list page, measured).
 */
export const unixForwarder = `
const net = require("net");
const path = process.argv[1];
net.createServer({ noDelay: true }, (c) => {
  const u = net.connect(path);
  c.pipe(u).pipe(c);
  c.on("error", () => u.destroy());
  u.on("error", () => c.destroy());
}).listen(${6443}, "127.0.0.1");`;

interface ResourceType {
  group: string; // "" for core
  version: string;
  plural: string;
  kind: string;
  namespaced: boolean;
  validator?: CrdValidator;
}

interface StoredEvent {
  type: "ADDED" | "MODIFIED" | "DELETED";
  rv: number;
  object: Json;
  /** The object before a MODIFIED (for watches with a field selector: did it leave or enter it?). */
  before?: Json;
}

interface Watcher {
  type: ResourceType;
  namespace: string | undefined;
  /** The watch's field selector (everything when absent). */
  fields?: (o: Json) => boolean;
  res: ServerResponse;
  bookmarks: boolean;
  timers: NodeJS.Timeout[];
}

const isObj = (x: unknown): x is Json => typeof x === "object" && x !== null && !Array.isArray(x);
const meta = (o: Json) => o.metadata as Json;
const keyOf = (ns: string | undefined, name: string) => `${ns ?? ""}/${name}`;

export interface ApiServerOptions {
  /**
   * The pod fields this server selects on (default: those of Kubernetes 1.28
   * and later that egressd uses); a selector on another field is a 400, as
   * an older API server answers one on spec.hostNetwork.
   */
  podFieldSelectors?: string[];
  /** How many events the watch log keeps (older versions answer 410). */
  logSize?: number;
  /** How often a watch that asked for bookmarks gets one. */
  bookmarkMs?: number;
}

export class KubeApiServer {
  private server: Server | undefined;
  private readonly sockets = new Set<Socket>();
  private readonly types: ResourceType[];
  private readonly objects = new Map<ResourceType, Map<string, Json>>();
  private readonly log = new Map<ResourceType, StoredEvent[]>();
  private readonly watchers = new Set<Watcher>();
  private readonly snapshots = new Map<string, { rv: number; items: Json[] }>();
  /** Per object (type, key): the status list-map entries each field manager owns. */
  private readonly owners = new Map<string, Map<string, Set<string>>>();
  private rv = 1;
  private down = false;
  private stopped = false;
  private delayMs = 0;
  readonly events: Json[] = [];
  /** Milliseconds this process spent making list answers (the benchmarks subtract the API's own time). */
  listMs = 0;
  /** Connections accepted, for the tests to assert on. */
  connections = 0;
  /** Every request, as "METHOD path?query", for the tests to assert on. */
  readonly requests: string[] = [];
  url = "";

  constructor(private readonly opts: ApiServerOptions = {}) {
    this.types = [
      { group: "", version: "v1", plural: "pods", kind: "Pod", namespaced: true },
      { group: "", version: "v1", plural: "namespaces", kind: "Namespace", namespaced: false },
      { group: "", version: "v1", plural: "events", kind: "Event", namespaced: true },
      { group: "coordination.k8s.io", version: "v1", plural: "leases", kind: "Lease", namespaced: true },
      { group: "", version: "v1", plural: "nodes", kind: "Node", namespaced: false },
      ...allCrds().map(({ crd }) => {
        const spec = crd.spec as Json;
        const names = spec.names as Json;
        return {
          group: spec.group as string,
          version: ((spec.versions as Json[])[0]!.name as string) ?? "v1alpha1",
          plural: names.plural as string,
          kind: names.kind as string,
          namespaced: spec.scope === "Namespaced",
          validator: crdValidator(crd),
        };
      }),
    ];
    for (const t of this.types) {
      this.objects.set(t, new Map());
      this.log.set(t, []);
    }
  }

  /**
   * Listens on loopback, or on a unix socket at `socketPath` (which reaches
   * into the lab's network namespaces, where a forwarder listens on their
   * own loopback; see unixForwarder).
   */
  async start(socketPath?: string): Promise<string> {
    this.server = createServer((req, res) => void this.handle(req, res));
    this.server.on("connection", (s) => {
      this.connections++;
      this.sockets.add(s);
      s.on("close", () => this.sockets.delete(s));
      if (this.down) s.destroy();
    });
    if (socketPath !== undefined) {
      await new Promise<void>((resolve) => this.server!.listen(socketPath, resolve));
      this.url = `http://127.0.0.1:${FORWARDER_PORT}`;
      return this.url;
    }
    await new Promise<void>((resolve) => this.server!.listen(0, "127.0.0.1", resolve));
    const addr = this.server.address() as { port: number };
    this.url = `http://127.0.0.1:${addr.port}`;
    return this.url;
  }

  async stop(): Promise<void> {
    this.stopped = true;
    for (const w of this.watchers) this.endWatch(w);
    const closed = new Promise<void>((resolve) =>
      this.server ? this.server.close(() => resolve()) : resolve(),
    );
    this.server?.closeAllConnections();
    for (const s of this.sockets) s.destroy();
    await closed;
  }

  /** A kubeconfig (YAML) for this server. */
  kubeconfig(): string {
    return [
      "apiVersion: v1",
      "kind: Config",
      "clusters:",
      `- name: test\n  cluster:\n    server: ${this.url}\n    insecure-skip-tls-verify: true`,
      "users:",
      "- name: test\n  user:\n    token: test-token",
      "contexts:",
      "- name: test\n  context:\n    cluster: test\n    user: test",
      "current-context: test",
      "",
    ].join("\n");
  }

  // --- the tests' side: objects

  /** Creates or replaces an object; returns the stored object. Throws with the API's message if it is invalid. */
  apply(obj: Json): Json {
    return this.store(obj, true);
  }

  /** apply() without the CRD's validation: what a server with another CRD version, or a bug, could hand out. */
  applyUnchecked(obj: Json): Json {
    return this.store(obj, false);
  }

  private store(obj: Json, validate: boolean): Json {
    const t = this.typeOfKind(obj.kind as string);
    const m = { ...(meta(obj) ?? {}) };
    const name = m.name as string;
    const ns = t.namespaced ? ((m.namespace as string | undefined) ?? "default") : undefined;
    const body = structuredClone(obj);
    if (t.validator && validate) {
      const errors = t.validator.validate(body);
      if (errors.length > 0) throw new Error(`${t.kind} ${keyOf(ns, name)} is invalid: ${errors.join("; ")}`);
    }
    const store = this.objects.get(t)!;
    const old = store.get(keyOf(ns, name));
    const om = old ? meta(old) : undefined;
    const specChanged = !old || JSON.stringify(old.spec) !== JSON.stringify(body.spec);
    const stored: Json = {
      ...body,
      apiVersion: t.group ? `${t.group}/${t.version}` : t.version,
      kind: t.kind,
      metadata: {
        ...m,
        name,
        ...(ns !== undefined ? { namespace: ns } : {}),
        uid: (om?.uid as string | undefined) ?? (m.uid as string | undefined) ?? randomUUID(),
        creationTimestamp:
          (om?.creationTimestamp as string | undefined) ?? m.creationTimestamp ?? new Date().toISOString(),
        resourceVersion: String(++this.rv),
        ...(t.validator
          ? { generation: ((om?.generation as number | undefined) ?? 0) + (specChanged ? 1 : 0) }
          : {}),
      },
    };
    if (t.validator && old?.status !== undefined && body.status === undefined) stored.status = old.status;
    store.set(keyOf(ns, name), stored);
    this.emit(t, old ? "MODIFIED" : "ADDED", stored, old);
    return stored;
  }

  /** Deletes an object; false when there was none. */
  remove(kind: string, namespace: string | undefined, name: string): boolean {
    const t = this.typeOfKind(kind);
    const store = this.objects.get(t)!;
    const k = keyOf(t.namespaced ? namespace : undefined, name);
    const old = store.get(k);
    if (!old) return false;
    store.delete(k);
    this.owners.delete(`${t.plural}|${k}`);
    this.emit(t, "DELETED", { ...old, metadata: { ...meta(old), resourceVersion: String(++this.rv) } });
    return true;
  }

  get(kind: string, namespace: string | undefined, name: string): Json | undefined {
    const t = this.typeOfKind(kind);
    return this.objects.get(t)!.get(keyOf(t.namespaced ? namespace : undefined, name));
  }

  list(kind: string): Json[] {
    return [...this.objects.get(this.typeOfKind(kind))!.values()];
  }

  // --- the tests' side: faults

  /** Ends every watch connection abruptly (as a load balancer that drops idle connections would). */
  dropWatches(): void {
    for (const w of [...this.watchers]) {
      w.res.socket?.destroy();
      this.endWatch(w);
    }
  }

  /** Forgets the event log: a watch that resumes from an older version gets 410 Gone. */
  compact(): void {
    for (const l of this.log.values()) l.length = 0;
    this.snapshots.clear();
  }

  /** Down: every connection is refused and open watches are cut. Up again: served as before. */
  setDown(down: boolean): void {
    this.down = down;
    if (down) {
      this.dropWatches();
      for (const s of this.sockets) s.destroy();
    }
  }

  /** Delays every response by `ms`. */
  setDelay(ms: number): void {
    this.delayMs = ms;
  }

  get resourceVersion(): number {
    return this.rv;
  }

  get watchCount(): number {
    return this.watchers.size;
  }

  // --- HTTP

  private typeOfKind(kind: string): ResourceType {
    const t = this.types.find((x) => x.kind === kind);
    if (!t) throw new Error(`unknown kind ${kind}`);
    return t;
  }

  private emit(t: ResourceType, type: StoredEvent["type"], object: Json, before?: Json): void {
    const rv = Number(meta(object).resourceVersion);
    const log = this.log.get(t)!;
    const e: StoredEvent = { type, rv, object, ...(before ? { before } : {}) };
    log.push(e);
    const max = this.opts.logSize ?? 10_000;
    if (log.length > max) log.splice(0, log.length - max);
    for (const w of this.watchers) {
      if (w.type !== t) continue;
      if (w.namespace !== undefined && meta(object).namespace !== w.namespace) continue;
      this.sendEvent(w, e);
    }
  }

  /**
   * A stored event as a watch with a field selector sees it: an object that
   * stops matching is DELETED for it, one that starts matching is ADDED, as
   * the API server does.
   */
  private sendEvent(w: Watcher, e: StoredEvent): void {
    if (!w.fields) return this.send(w, { type: e.type, object: e.object });
    const now = w.fields(e.object);
    if (e.type !== "MODIFIED") return now ? this.send(w, { type: e.type, object: e.object }) : undefined;
    const was = e.before !== undefined && w.fields(e.before);
    if (was || now)
      this.send(w, { type: was && now ? "MODIFIED" : now ? "ADDED" : "DELETED", object: e.object });
  }

  /** The field selector of a request, or the error answered for it. */
  private fieldMatcher(t: ResourceType, text: string | null): ((o: Json) => boolean) | string | undefined {
    if (!text) return undefined;
    const known = t.kind === "Pod" ? (this.opts.podFieldSelectors ?? Object.keys(POD_FIELDS)) : [];
    const terms: { get: (o: Json) => string; value: string; equal: boolean }[] = [];
    for (const part of text.split(",")) {
      const m = /^([A-Za-z.]+)\s*(==|=|!=)\s*([A-Za-z0-9._-]*)$/.exec(part.trim());
      if (!m) return `fieldSelector: cannot parse ${JSON.stringify(part)}`;
      const field = m[1]!;
      const get = Object.hasOwn(META_FIELDS, field)
        ? META_FIELDS[field]
        : known.includes(field) && Object.hasOwn(POD_FIELDS, field)
          ? POD_FIELDS[field]
          : undefined;
      if (!get) return `field label not supported: ${field}`;
      terms.push({ get, value: m[3]!, equal: m[2] !== "!=" });
    }
    return (o) => terms.every((x) => (x.get(o) === x.value) === x.equal);
  }

  private send(w: Watcher, event: Json): void {
    w.res.write(JSON.stringify(event) + "\n");
  }

  private endWatch(w: Watcher): void {
    for (const t of w.timers) clearTimeout(t);
    this.watchers.delete(w);
    if (!w.res.writableEnded) w.res.end();
  }

  private status(res: ServerResponse, code: number, reason: string, message: string): void {
    res.writeHead(code, { "content-type": "application/json" });
    res.end(JSON.stringify({ kind: "Status", apiVersion: "v1", status: "Failure", code, reason, message }));
  }

  /** The resource a path names: /api/v1[/namespaces/NS]/PLURAL[/NAME[/status]] or /apis/G/V/... */
  private route(path: string): { t: ResourceType; ns?: string; name?: string; sub?: string } | undefined {
    const parts = path.split("/").filter(Boolean);
    let group = "";
    let rest: string[];
    if (parts[0] === "api" && parts[1] === "v1") rest = parts.slice(2);
    else if (parts[0] === "apis" && parts.length >= 3) {
      group = parts[1]!;
      rest = parts.slice(3);
    } else return undefined;
    let ns: string | undefined;
    if (rest[0] === "namespaces" && rest.length >= 3) {
      ns = rest[1];
      rest = rest.slice(2);
    }
    const t = this.types.find((x) => x.group === group && x.plural === rest[0]);
    if (!t) {
      // /api/v1/namespaces/NAME is the namespace itself
      if (group === "" && parts[2] === "namespaces" && parts.length === 4)
        return { t: this.typeOfKind("Namespace"), name: parts[3]! };
      return undefined;
    }
    return {
      t,
      ...(ns !== undefined ? { ns } : {}),
      ...(rest[1] ? { name: rest[1] } : {}),
      ...(rest[2] ? { sub: rest[2] } : {}),
    };
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    if (this.down || this.stopped) {
      req.socket.destroy();
      return;
    }
    const url = new URL(req.url ?? "/", this.url);
    this.requests.push(`${req.method} ${url.pathname}${url.search}`);
    if (this.delayMs > 0) await new Promise((r) => setTimeout(r, this.delayMs));
    if (req.headers.authorization !== "Bearer test-token")
      return this.status(res, 401, "Unauthorized", "no valid bearer token");
    const r = this.route(url.pathname);
    if (!r) return this.status(res, 404, "NotFound", `no resource at ${url.pathname}`);
    const q = url.searchParams;
    if (req.method === "GET" && r.name === undefined) {
      if (q.get("watch") === "true" || q.get("watch") === "1") return this.watch(r.t, r.ns, q, res);
      return this.listResponse(r.t, r.ns, q, res);
    }
    if (req.method === "GET" && r.name !== undefined) {
      const o = this.objects.get(r.t)!.get(keyOf(r.ns, r.name));
      if (!o) return this.status(res, 404, "NotFound", `${r.t.plural} "${r.name}" not found`);
      res.writeHead(200, { "content-type": "application/json" });
      return void res.end(JSON.stringify(o));
    }
    const body = await new Promise<string>((resolve) => {
      let b = "";
      req.on("data", (d: Buffer) => (b += d.toString()));
      req.on("end", () => resolve(b));
    });
    if (req.method === "POST" && r.name === undefined) {
      const obj = JSON.parse(body) as Json;
      if (r.t.kind === "Event") {
        const stored = {
          ...obj,
          metadata: { ...meta(obj), namespace: r.ns, resourceVersion: String(++this.rv) },
        };
        this.events.push(stored);
        res.writeHead(201, { "content-type": "application/json" });
        return void res.end(JSON.stringify(stored));
      }
      const name = meta(obj)?.name as string | undefined;
      if (name !== undefined && this.objects.get(r.t)!.has(keyOf(r.ns, name)))
        return this.status(res, 409, "AlreadyExists", `${r.t.plural} "${name}" already exists`);
      try {
        const stored = this.apply({
          ...obj,
          metadata: { ...meta(obj), ...(r.ns ? { namespace: r.ns } : {}) },
        });
        res.writeHead(201, { "content-type": "application/json" });
        return void res.end(JSON.stringify(stored));
      } catch (e) {
        return this.status(res, 422, "Invalid", (e as Error).message);
      }
    }
    // Update (PUT) and delete, each conditioned on the resourceVersion the client names.
    if ((req.method === "PUT" || req.method === "DELETE") && r.name !== undefined && r.sub === undefined) {
      const cur = this.objects.get(r.t)!.get(keyOf(r.ns, r.name));
      if (!cur) return this.status(res, 404, "NotFound", `${r.t.plural} "${r.name}" not found`);
      const parsed = (body ? JSON.parse(body) : {}) as Json;
      const want =
        req.method === "PUT"
          ? (meta(parsed)?.resourceVersion as string | undefined)
          : ((parsed.preconditions as Json | undefined)?.resourceVersion as string | undefined);
      if (want !== undefined && want !== meta(cur).resourceVersion)
        return this.status(
          res,
          409,
          "Conflict",
          `Operation cannot be fulfilled on ${r.t.plural} "${r.name}": the object has been modified; please apply your changes to the latest version and try again`,
        );
      if (req.method === "DELETE") {
        this.remove(r.t.kind, r.ns, r.name);
        res.writeHead(200, { "content-type": "application/json" });
        return void res.end(JSON.stringify({ kind: "Status", apiVersion: "v1", status: "Success" }));
      }
      try {
        const stored = this.apply({
          ...parsed,
          metadata: { ...meta(parsed), name: r.name, ...(r.ns ? { namespace: r.ns } : {}) },
        });
        res.writeHead(200, { "content-type": "application/json" });
        return void res.end(JSON.stringify(stored));
      } catch (e) {
        return this.status(res, 422, "Invalid", (e as Error).message);
      }
    }
    if (req.method === "PATCH" && r.name !== undefined && r.sub === "status")
      return this.applyStatus(r.t, r.ns, r.name, q, req.headers["content-type"] ?? "", body, res);
    return this.status(res, 405, "MethodNotAllowed", `${req.method} ${url.pathname} is not served here`);
  }

  private listResponse(
    t: ResourceType,
    ns: string | undefined,
    q: URLSearchParams,
    res: ServerResponse,
  ): void {
    const started = performance.now();
    try {
      this.listPage(t, ns, q, res);
    } finally {
      this.listMs += performance.now() - started;
    }
  }

  private listPage(t: ResourceType, ns: string | undefined, q: URLSearchParams, res: ServerResponse): void {
    const limit = Number(q.get("limit") ?? 0);
    const token = q.get("continue");
    let snap: { rv: number; items: Json[] };
    let start = 0;
    if (token) {
      const [id, at] = Buffer.from(token, "base64url").toString().split(":");
      const s = this.snapshots.get(id!);
      if (!s)
        return this.status(
          res,
          410,
          "Expired",
          "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.",
        );
      snap = s;
      start = Number(at);
    } else {
      const selector = labelMatcher(q.get("labelSelector"));
      if (!selector)
        return this.status(res, 400, "BadRequest", `labelSelector: only k=v, k==v and k!=v are served here`);
      const fields = this.fieldMatcher(t, q.get("fieldSelector"));
      if (typeof fields === "string") return this.status(res, 400, "BadRequest", fields);
      const items = [...this.objects.get(t)!.values()].filter(
        (o) =>
          (ns === undefined || meta(o).namespace === ns) &&
          selector((meta(o).labels ?? {}) as Record<string, string>) &&
          (fields === undefined || fields(o)),
      );
      snap = { rv: this.rv, items };
    }
    const end = limit > 0 ? Math.min(snap.items.length, start + limit) : snap.items.length;
    const metadata: Json = { resourceVersion: String(snap.rv) };
    if (end < snap.items.length) {
      const id = token ? Buffer.from(token, "base64url").toString().split(":")[0]! : randomUUID();
      this.snapshots.set(id, snap);
      metadata.continue = Buffer.from(`${id}:${end}`).toString("base64url");
      metadata.remainingItemCount = snap.items.length - end;
    }
    res.writeHead(200, { "content-type": "application/json" });
    res.end(
      JSON.stringify({
        kind: `${t.kind}List`,
        apiVersion: t.group ? `${t.group}/${t.version}` : t.version,
        metadata,
        items: snap.items.slice(start, end),
      }),
    );
  }

  private watch(t: ResourceType, ns: string | undefined, q: URLSearchParams, res: ServerResponse): void {
    const fields = this.fieldMatcher(t, q.get("fieldSelector"));
    if (typeof fields === "string") return this.status(res, 400, "BadRequest", fields);
    res.writeHead(200, { "content-type": "application/json", "transfer-encoding": "chunked" });
    const w: Watcher = {
      type: t,
      namespace: ns,
      ...(fields ? { fields } : {}),
      res,
      bookmarks: q.get("allowWatchBookmarks") === "true",
      timers: [],
    };
    const from = Number(q.get("resourceVersion") || 0);
    const log = this.log.get(t)!;
    const oldest = log.length > 0 ? log[0]!.rv : this.rv + 1;
    if (from > 0 && from < oldest - 1 && from < this.rv) {
      // The versions after `from` are no longer in the log.
      this.send(w, {
        type: "ERROR",
        object: {
          kind: "Status",
          apiVersion: "v1",
          status: "Failure",
          code: 410,
          reason: "Expired",
          message: `too old resource version: ${from} (${oldest - 1})`,
        },
      });
      res.end();
      return;
    }
    // A client that went while this request waited (a delay, a stop) gets no watch.
    if (this.stopped || res.destroyed || res.socket?.destroyed) return void res.end();
    this.watchers.add(w);
    res.on("close", () => this.endWatch(w));
    if (from === 0) {
      for (const o of this.objects.get(t)!.values())
        if ((ns === undefined || meta(o).namespace === ns) && (!w.fields || w.fields(o)))
          this.send(w, { type: "ADDED", object: o });
    } else
      for (const e of log)
        if (e.rv > from && (ns === undefined || meta(e.object).namespace === ns)) this.sendEvent(w, e);
    if (w.bookmarks) {
      const tick = () => {
        if (!this.watchers.has(w)) return;
        this.send(w, {
          type: "BOOKMARK",
          object: {
            kind: t.kind,
            apiVersion: t.group ? `${t.group}/${t.version}` : t.version,
            metadata: { resourceVersion: String(this.rv) },
          },
        });
        w.timers[0] = setTimeout(tick, this.opts.bookmarkMs ?? 1000);
      };
      w.timers[0] = setTimeout(tick, this.opts.bookmarkMs ?? 1000);
    }
    const timeout = Number(q.get("timeoutSeconds") ?? 0);
    if (timeout > 0) w.timers[1] = setTimeout(() => this.endWatch(w), timeout * 1000);
  }

  private applyStatus(
    t: ResourceType,
    ns: string | undefined,
    name: string,
    q: URLSearchParams,
    contentType: string,
    body: string,
    res: ServerResponse,
  ): void {
    if (!contentType.startsWith("application/apply-patch+yaml"))
      return this.status(
        res,
        415,
        "UnsupportedMediaType",
        `status is written here by server-side apply, not ${contentType}`,
      );
    const manager = q.get("fieldManager");
    if (!manager) return this.status(res, 422, "Invalid", "fieldManager is required for apply patch");
    const force = q.get("force") === "true";
    const store = this.objects.get(t)!;
    const k = keyOf(ns, name);
    const old = store.get(k);
    if (!old) return this.status(res, 404, "NotFound", `${t.plural} "${name}" not found`);
    let patch: Json;
    try {
      patch = parseYaml(body) as Json;
    } catch (e) {
      return this.status(res, 400, "BadRequest", (e as Error).message);
    }
    const entries = (isObj(patch.status) ? (patch.status.gateways as Json[] | undefined) : undefined) ?? [];
    const ownerKey = `${t.plural}|${k}`;
    let owners = this.owners.get(ownerKey);
    if (!owners) this.owners.set(ownerKey, (owners = new Map()));
    const mine = owners.get(manager) ?? new Set<string>();
    const applied = new Set(entries.map((e) => String(e.gateway)));
    for (const g of applied)
      for (const [m, keys] of owners)
        if (m !== manager && keys.has(g)) {
          if (!force)
            return this.status(
              res,
              409,
              "Conflict",
              `Apply failed with 1 conflict: conflict with "${m}": .status.gateways[gateway="${g}"]`,
            );
          keys.delete(g);
        }
    const current = ((old.status as Json | undefined)?.gateways as Json[] | undefined) ?? [];
    const kept = current.filter((e) => !applied.has(String(e.gateway)) && !mine.has(String(e.gateway)));
    const gateways = [...kept, ...entries].sort((a, b) => String(a.gateway).localeCompare(String(b.gateway)));
    owners.set(manager, applied);
    const managedFields = [...owners]
      .filter(([, keys]) => keys.size > 0)
      .map(([m, keys]) => ({
        manager: m,
        operation: "Apply",
        subresource: "status",
        fieldsType: "FieldsV1",
        fieldsV1: {
          "f:status": {
            "f:gateways": Object.fromEntries([...keys].map((g) => [`k:{"gateway":"${g}"}`, {}])),
          },
        },
      }));
    const stored: Json = {
      ...old,
      metadata: { ...meta(old), resourceVersion: String(++this.rv), managedFields },
      status: { ...(old.status as Json | undefined), gateways },
    };
    if (t.validator) {
      const errors = t.validator.validate(structuredClone(stored));
      if (errors.length > 0) return this.status(res, 422, "Invalid", errors.join("; "));
    }
    store.set(k, stored);
    this.emit(t, "MODIFIED", stored, old);
    res.writeHead(200, { "content-type": "application/json" });
    res.end(JSON.stringify(stored));
  }
}

/** Fields every kind is selected on. */
const META_FIELDS: Record<string, (o: Json) => string> = {
  "metadata.name": (o) => String(meta(o).name),
  "metadata.namespace": (o) => String(meta(o).namespace ?? ""),
};

/** The pod fields this server can select on (what egressd asks for). */
const POD_FIELDS: Record<string, (o: Json) => string> = {
  "spec.hostNetwork": (o) => String((o.spec as Json | undefined)?.hostNetwork === true),
  "status.phase": (o) => String((o.status as Json | undefined)?.phase ?? ""),
};

/** The equality-based label selectors (k=v, k==v, k!=v, comma-separated); undefined for another form. */
function labelMatcher(text: string | null): ((labels: Record<string, string>) => boolean) | undefined {
  if (!text) return () => true;
  const terms: { key: string; value: string; equal: boolean }[] = [];
  for (const part of text.split(",")) {
    const m = /^([A-Za-z0-9./_-]+)\s*(==|=|!=)\s*([A-Za-z0-9._-]*)$/.exec(part.trim());
    if (!m) return undefined;
    terms.push({ key: m[1]!, value: m[3]!, equal: m[2] !== "!=" });
  }
  return (labels) => terms.every((x) => (labels[x.key] === x.value) === x.equal);
}
