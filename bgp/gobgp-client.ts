// A small typed client for the parts of gobgpd's gRPC API egressd uses.
//
// It speaks egressd's own types (model.ts) and hides the generated ones. Every
// call has a deadline. The client keeps (re)connecting with backoff while it
// is open, and emits "ready" each time gobgpd becomes reachable: after a
// gobgpd restart it holds no state, so the caller re-applies global settings,
// peers and paths on every "ready" (ready.started says whether BGP is
// already running there, e.g. in sidecar mode after egressd restarts).
import { EventEmitter } from "node:events";
import { readInSlices, TurnBudget } from "../lib/slices.js";
import {
  connectivityState,
  credentials,
  Metadata,
  status,
  type CallOptions,
  type ClientReadableStream,
  type ServiceError,
} from "@grpc/grpc-js";
import {
  GobgpApiClient,
  ListPathRequest_SortType,
  Conditions_RouteType,
  PolicyDirection,
  RouteAction,
  TableType,
  WatchEventRequest_Table_Filter_Type,
  WatchEventResponse_PeerEvent_Type,
  type AddPathResponse,
  type GetBgpResponse,
  type Path as ApiPath,
  type UpdatePeerResponse,
  type WatchEventResponse,
} from "./generated/gobgp.js";
import { decodePeer, encodePeer } from "./peer-codec.js";
import { apiFamily, decodePath, encodePath, isLocalPath, type DecodedPath } from "./path-codec.js";
import {
  BgpValidationError,
  canonicalAddress,
  validateAsn,
  type AddressFamily,
  type BgpGlobal,
  type BgpPath,
  type BgpPeer,
  type PeerStatus,
} from "../core/bgp.js";

export interface GobgpClientOptions {
  /** gRPC target: "unix:///run/egressd/gobgpd.sock" or "127.0.0.1:50051". */
  target: string;
  /** Deadline for unary calls (default 5 s). */
  deadlineMs?: number;
  /** Deadline for list calls and bulk path updates (default 60 s). */
  bulkDeadlineMs?: number;
  /** Reconnect backoff bounds (default 100 ms .. 2 s). */
  reconnectMinMs?: number;
  reconnectMaxMs?: number;
}

export interface ReadyInfo {
  /** Whether BGP is already started in this gobgpd (false after a gobgpd restart). */
  started: boolean;
  /** Its ASN when started. */
  asn?: number;
}

export interface TableEvent {
  /** Best-path changes; withdrawn ones have withdrawn: true. */
  paths: DecodedPath[];
}

export interface GobgpClientEvents {
  ready: [ReadyInfo];
  disconnected: [reason: string];
  /** A neighbor changed state (also sent for every neighbor when a watch starts). */
  peer: [PeerStatus];
  table: [TableEvent];
  /** Something went wrong in the background (a watch stream failed, ...); the client carries on. */
  warning: [Error];
}

/** A failed gobgpd call: names the call, the object and gobgpd's own message. */
export class GobgpError extends Error {
  constructor(
    readonly method: string,
    readonly code: number,
    readonly details: string,
    what: string,
  ) {
    const codeName = status[code] ?? String(code);
    super(`gobgpd ${method}${what ? ` (${what})` : ""} failed: ${codeName}: ${details}`);
    this.name = "GobgpError";
  }
}

/** Paths serialized in one write of AddPathStream: a few ms of work, so writes can be spread over turns. */
const MAX_PATHS_PER_WRITE = 200;

function serviceError(method: string, what: string, target: string, e: ServiceError): GobgpError {
  if (e.code === status.UNAVAILABLE) {
    return new GobgpError(method, e.code, `gobgpd is not reachable at ${target} (${e.details})`, what);
  }
  if (e.code === status.DEADLINE_EXCEEDED) {
    return new GobgpError(method, e.code, `no answer from gobgpd at ${target} in time (${e.details})`, what);
  }
  return new GobgpError(method, e.code, e.details, what);
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

export class GobgpClient extends EventEmitter<GobgpClientEvents> {
  readonly target: string;
  private readonly raw: GobgpApiClient;
  private readonly deadlineMs: number;
  private readonly bulkDeadlineMs: number;
  private readonly reconnectMinMs: number;
  private readonly reconnectMaxMs: number;
  private running = false;
  private closed = false;
  private ready = false;
  /** Our ASN as gobgpd knows it, cached per connection (for AS-path prepending). */
  private asn: number | undefined;
  private watchWanted: { peers: boolean; table: boolean } | undefined;
  private watchStream: ClientReadableStream<WatchEventResponse> | undefined;
  private loopDone: Promise<void> | undefined;

  constructor(opts: GobgpClientOptions) {
    super();
    this.target = opts.target;
    this.deadlineMs = opts.deadlineMs ?? 5000;
    this.bulkDeadlineMs = opts.bulkDeadlineMs ?? 60_000;
    this.reconnectMinMs = opts.reconnectMinMs ?? 100;
    this.reconnectMaxMs = opts.reconnectMaxMs ?? 2000;
    this.raw = new GobgpApiClient(opts.target, credentials.createInsecure(), {
      "grpc.initial_reconnect_backoff_ms": this.reconnectMinMs,
      "grpc.max_reconnect_backoff_ms": this.reconnectMaxMs,
      // gobgpd answers big ListPath streams; its own limit is 256 MiB.
      "grpc.max_receive_message_length": 256 * 1024 * 1024,
      "grpc.max_send_message_length": 256 * 1024 * 1024,
    });
  }

  /** Starts the connect loop; "ready" follows whenever gobgpd is reachable. Idempotent. */
  start(): this {
    if (this.closed) throw new Error("GobgpClient: start() after close()");
    if (!this.running) {
      this.running = true;
      this.loopDone = this.connectLoop();
    }
    return this;
  }

  get isReady(): boolean {
    return this.ready;
  }

  /** Resolves once connected (starting the loop if needed), or rejects after timeoutMs. */
  waitReady(timeoutMs = 10_000): Promise<ReadyInfo> {
    this.start();
    return new Promise((resolve, reject) => {
      if (this.ready) {
        this.readyInfo().then(resolve, reject);
        return;
      }
      const timer = setTimeout(() => {
        this.off("ready", onReady);
        reject(new Error(`gobgpd at ${this.target} not reachable within ${timeoutMs} ms`));
      }, timeoutMs);
      const onReady = (info: ReadyInfo) => {
        clearTimeout(timer);
        resolve(info);
      };
      this.once("ready", onReady);
    });
  }

  async close(): Promise<void> {
    this.closed = true;
    this.watchStream?.cancel();
    this.raw.close();
    await this.loopDone;
  }

  // ---- connection management ----

  private async connectLoop(): Promise<void> {
    let backoff = this.reconnectMinMs;
    let announcedDown = false;
    while (!this.closed) {
      const ok = await new Promise<boolean>((resolve) =>
        this.raw.waitForReady(Date.now() + Math.max(backoff, 500), (err) => resolve(!err)),
      );
      if (this.closed) break;
      if (!ok) {
        if (!announcedDown) {
          announcedDown = true;
          this.emit("disconnected", `gobgpd at ${this.target} is not reachable`);
        }
        backoff = Math.min(backoff * 2, this.reconnectMaxMs);
        continue;
      }
      backoff = this.reconnectMinMs;
      announcedDown = false;
      this.ready = true;
      this.asn = undefined;
      let info: ReadyInfo;
      try {
        info = await this.readyInfo();
      } catch (e) {
        // Connected but gobgpd does not answer: treat as down and retry.
        this.ready = false;
        this.emit("warning", e instanceof Error ? e : new Error(String(e)));
        await sleep(backoff);
        continue;
      }
      this.openWatch();
      this.emit("ready", info);
      await this.waitUntilNotReady();
      this.ready = false;
      this.asn = undefined;
      this.watchStream?.cancel();
      this.watchStream = undefined;
      if (!this.closed) {
        announcedDown = true;
        this.emit("disconnected", `lost connection to gobgpd at ${this.target}`);
      }
    }
    this.ready = false;
  }

  private async waitUntilNotReady(): Promise<void> {
    const channel = this.raw.getChannel();
    while (!this.closed) {
      const state = channel.getConnectivityState(false);
      if (state !== connectivityState.READY) return;
      await new Promise<void>((resolve) =>
        channel.watchConnectivityState(state, Date.now() + 60_000, () => resolve()),
      );
    }
  }

  private async readyInfo(): Promise<ReadyInfo> {
    const g = await this.getBgp();
    return g ? { started: true, asn: g.asn } : { started: false };
  }

  // ---- call helpers ----

  private opts(bulk = false): Partial<CallOptions> {
    return { deadline: Date.now() + (bulk ? this.bulkDeadlineMs : this.deadlineMs) };
  }

  private unary<T>(
    method: string,
    what: string,
    invoke: (md: Metadata, o: Partial<CallOptions>, cb: (err: ServiceError | null, res: T) => void) => void,
  ): Promise<T> {
    return new Promise((resolve, reject) => {
      invoke(new Metadata(), this.opts(), (err, res) => {
        if (err) reject(serviceError(method, what, this.target, err));
        else resolve(res);
      });
    });
  }

  /** A server stream's messages, mapped; read in slices of the event loop (lib/slices.ts). */
  private async collect<T, R>(
    method: string,
    what: string,
    stream: ClientReadableStream<T>,
    map: (item: T, out: R[]) => void,
  ): Promise<R[]> {
    const out: R[] = [];
    await readInSlices<T>(
      stream,
      (item) => map(item, out),
      () => stream.cancel(),
      { streamError: (err) => serviceError(method, what, this.target, err as ServiceError) },
    );
    return out;
  }

  private async localAsn(): Promise<number> {
    if (this.asn !== undefined) return this.asn;
    const g = await this.getBgp();
    if (!g) throw new Error(`gobgpd at ${this.target}: BGP is not started (call startBgp first)`);
    this.asn = g.asn;
    return g.asn;
  }

  // ---- global ----

  /** Starts the BGP speaker. Validates the ASN and router id first (gobgpd would accept ASN 0 and stay unstarted). */
  async startBgp(g: BgpGlobal): Promise<void> {
    validateAsn(g.asn, "local ASN");
    if (!/^\d{1,3}(\.\d{1,3}){3}$/.test(g.routerId) || g.routerId.split(".").some((o) => Number(o) > 255)) {
      throw new BgpValidationError(`invalid router id "${g.routerId}": must be a dotted quad`);
    }
    if (!Number.isInteger(g.listenPort) || g.listenPort < -1 || g.listenPort > 65535 || g.listenPort === 0) {
      throw new BgpValidationError(
        `invalid listen port ${g.listenPort}: use 1..65535, or -1 for "do not listen"`,
      );
    }
    const listenAddresses = (g.listenAddresses ?? []).map((a) => canonicalAddress(a, "listen address"));
    await this.unary("StartBgp", `AS ${g.asn}`, (md, o, cb) =>
      this.raw.startBgp(
        {
          global: {
            asn: g.asn,
            routerId: g.routerId,
            listenPort: g.listenPort,
            listenAddresses,
            families: [],
            useMultiplePaths: false,
            bindToDevice: "",
          },
        },
        md,
        o,
        cb,
      ),
    );
    this.asn = g.asn;
  }

  /** The running global settings, or undefined when BGP is not started. */
  async getBgp(): Promise<BgpGlobal | undefined> {
    const res = await this.unary<GetBgpResponse>("GetBgp", "", (md, o, cb) => this.raw.getBgp({}, md, o, cb));
    const g = res.global;
    if (!g || g.asn === 0) return undefined;
    return { asn: g.asn, routerId: g.routerId, listenPort: g.listenPort, listenAddresses: g.listenAddresses };
  }

  /**
   * An egress gateway is never a transit router: the global import policy
   * accepts only locally originated paths (route type LOCAL, the ones egressd
   * adds) and rejects every route a peer sends, so nothing learned enters
   * gobgpd's RIB and nothing learned can be passed on to another peer. (No
   * feature of egressd uses learned routes: uplinks have configured next
   * hops.) A plain default REJECT would reject egressd's own paths as well:
   * gobgpd runs AddPath through the global import policy too. Idempotent.
   */
  async rejectLearnedRoutes(): Promise<void> {
    const name = "egressd-own-paths-only";
    const existing = await this.collect(
      "ListPolicy",
      name,
      this.raw.listPolicy({ name: "" }, new Metadata(), this.opts()),
      (r, out: string[]) => {
        if (r.policy) out.push(r.policy.name);
      },
    );
    if (!existing.includes(name)) {
      await this.unary("AddPolicy", name, (md, o, cb) =>
        this.raw.addPolicy(
          {
            policy: {
              name,
              statements: [
                {
                  name: `${name}-local`,
                  conditions: {
                    routeType: Conditions_RouteType.ROUTE_TYPE_LOCAL,
                    rpkiResult: -1,
                    nextHopInList: [],
                    afiSafiIn: [],
                  },
                  actions: { routeAction: RouteAction.ACCEPT },
                },
              ],
            },
            referExistingStatements: false,
          },
          md,
          o,
          cb,
        ),
      );
    }
    await this.unary("SetPolicyAssignment", "global import", (md, o, cb) =>
      this.raw.setPolicyAssignment(
        {
          assignment: {
            name: "global",
            direction: PolicyDirection.IMPORT,
            policies: [{ name, statements: [] }],
            defaultAction: RouteAction.REJECT,
          },
        },
        md,
        o,
        cb,
      ),
    );
  }

  /** The global import policy's default action (REJECT once rejectLearnedRoutes ran). */
  async importDefault(): Promise<RouteAction | undefined> {
    const stream = this.raw.listPolicyAssignment(
      { name: "global", direction: PolicyDirection.IMPORT },
      new Metadata(),
      this.opts(),
    );
    const all = await this.collect(
      "ListPolicyAssignment",
      "global import",
      stream,
      (r, out: RouteAction[]) => {
        if (r.assignment) out.push(r.assignment.defaultAction);
      },
    );
    return all[0];
  }

  async stopBgp(): Promise<void> {
    await this.unary("StopBgp", "", (md, o, cb) => this.raw.stopBgp({}, md, o, cb));
    this.asn = undefined;
  }

  // ---- peers ----

  async addPeer(p: BgpPeer): Promise<void> {
    const peer = encodePeer(p);
    await this.unary("AddPeer", `neighbor ${p.address}`, (md, o, cb) =>
      this.raw.addPeer({ peer }, md, o, cb),
    );
  }

  /**
   * UpdatePeer. Measured with gobgpd 3.10: it compares the new settings with
   * its defaulted copy, finds them different, and deletes and re-adds the
   * neighbor, so even a timer-only change resets the session (and, as a side
   * effect, every other field is applied too). Treat it as a reset.
   */
  async updatePeer(p: BgpPeer): Promise<{ needsSoftResetIn: boolean }> {
    const peer = encodePeer(p);
    const res = await this.unary<UpdatePeerResponse>("UpdatePeer", `neighbor ${p.address}`, (md, o, cb) =>
      this.raw.updatePeer({ peer, doSoftResetIn: false }, md, o, cb),
    );
    return { needsSoftResetIn: res.needsSoftResetIn };
  }

  async deletePeer(address: string): Promise<void> {
    const a = canonicalAddress(address, "neighbor address");
    await this.unary("DeletePeer", `neighbor ${a}`, (md, o, cb) =>
      this.raw.deletePeer({ address: a, interface: "" }, md, o, cb),
    );
  }

  /** All neighbors (or one), with session state and the configuration gobgpd holds. */
  listPeers(address?: string): Promise<PeerStatus[]> {
    const a = address === undefined ? "" : canonicalAddress(address, "neighbor address");
    const stream = this.raw.listPeer({ address: a, enableAdvertised: true }, new Metadata(), this.opts(true));
    return this.collect("ListPeer", a ? `neighbor ${a}` : "", stream, (r, out: PeerStatus[]) => {
      if (r.peer) out.push(decodePeer(r.peer));
    });
  }

  // ---- paths ----

  /** Adds (or replaces: same prefix, new attributes) a locally originated path. Returns gobgpd's UUID for it. */
  async addPath(p: BgpPath): Promise<string> {
    const path = encodePath(p, await this.localAsn());
    const res = await this.unary<AddPathResponse>("AddPath", p.prefix, (md, o, cb) =>
      this.raw.addPath({ tableType: TableType.GLOBAL, vrfId: "", path }, md, o, cb),
    );
    return Buffer.from(res.uuid).toString("hex");
  }

  /** Withdraws a locally originated path (only its prefix matters). */
  async deletePath(p: Pick<BgpPath, "prefix" | "nextHop">): Promise<void> {
    const path = encodePath({ prefix: p.prefix, nextHop: p.nextHop }, await this.localAsn(), true);
    if (!path.nlri) throw new Error(`deletePath ${p.prefix}: no NLRI`);
    // Never send an empty path: DeletePath without one deletes every local path.
    await this.unary("DeletePath", p.prefix, (md, o, cb) =>
      this.raw.deletePath(
        { tableType: TableType.GLOBAL, vrfId: "", family: path.family, path, uuid: Buffer.alloc(0) },
        md,
        o,
        cb,
      ),
    );
  }

  /**
   * Applies many adds and withdraws in one AddPathStream call (gobgpd treats
   * a path with isWithdraw as a withdraw there). Much faster than one AddPath
   * per prefix; sent in messages of at most `chunk` paths. `stillWanted` is
   * asked about each add right before its message is written. Resolves with
   * the adds sent.
   */
  async applyPaths(
    change: {
      add?: BgpPath[];
      withdraw?: Pick<BgpPath, "prefix" | "nextHop">[];
      stillWanted?: (p: BgpPath) => boolean;
    },
    chunk = 1000,
  ): Promise<BgpPath[]> {
    const asn = await this.localAsn();
    // Encoding and serializing a thousand paths takes tens of ms, so both give
    // the event loop back whenever a turn's budget is spent. Every path is
    // encoded before the call opens: one that cannot be sends nothing.
    const budget = new TurnBudget();
    const encoded: { api: ApiPath; add?: BgpPath }[] = [];
    for (const p of change.withdraw ?? []) {
      encoded.push({ api: encodePath({ prefix: p.prefix, nextHop: p.nextHop }, asn, true) });
      if (budget.spent) await budget.nextTurn();
    }
    for (const p of change.add ?? []) {
      encoded.push({ api: encodePath(p, asn), add: p });
      if (budget.spent) await budget.nextTurn();
    }
    const stillWanted = change.stillWanted ?? (() => true);
    const added: BgpPath[] = [];
    let failed = false;
    let settle: (err: ServiceError | null) => void = () => undefined;
    const done = new Promise<void>((resolve, reject) => {
      settle = (err) => {
        failed = err !== null;
        if (err) reject(serviceError("AddPathStream", `${encoded.length} paths`, this.target, err));
        else resolve();
      };
    });
    done.catch(() => undefined); // awaited after the writes; it may fail while they yield
    let stream: ReturnType<typeof this.raw.addPathStream> | undefined;
    const perMessage = Math.min(chunk, MAX_PATHS_PER_WRITE);
    for (let i = 0; i < encoded.length && !failed; i += perMessage) {
      const paths: ApiPath[] = [];
      for (const e of encoded.slice(i, i + perMessage)) {
        if (e.add && !stillWanted(e.add)) continue;
        paths.push(e.api);
        if (e.add) added.push(e.add);
      }
      if (paths.length === 0) continue;
      stream ??= this.openAddPathStream(settle);
      stream.write({ tableType: TableType.GLOBAL, vrfId: "", paths });
      if (budget.spent) await budget.nextTurn();
    }
    if (!stream) return [];
    stream.end();
    await done;
    return added;
  }

  private openAddPathStream(settle: (err: ServiceError | null) => void) {
    const stream = this.raw.addPathStream(new Metadata(), this.opts(true), (err) => settle(err));
    stream.on("error", () => undefined); // reported through the callback
    return stream;
  }

  /**
   * Paths in gobgpd's global RIB for one family. By default only the locally
   * originated ones (what egressd added), which is what the path reconciler
   * diffs against.
   */
  async listPaths(family: AddressFamily, opts: { includeLearnt?: boolean } = {}): Promise<DecodedPath[]> {
    const asn = await this.localAsn();
    const stream = this.raw.listPath(
      {
        tableType: TableType.GLOBAL,
        name: "",
        family: apiFamily(family),
        prefixes: [],
        sortType: ListPathRequest_SortType.NONE,
        enableFiltered: false,
        enableNlriBinary: false,
        enableAttributeBinary: false,
        enableOnlyBinary: false,
      },
      new Metadata(),
      this.opts(true),
    );
    return this.collect("ListPath", family, stream, (r, out: DecodedPath[]) => {
      for (const p of r.destination?.paths ?? []) {
        if (!opts.includeLearnt && !isLocalPath(p)) continue;
        const d = decodePath(p, asn);
        if (d) out.push(d);
      }
    });
  }

  /** Locally originated paths of both unicast families. */
  async listLocalPaths(): Promise<DecodedPath[]> {
    const [v4, v6] = await Promise.all([this.listPaths("ipv4-unicast"), this.listPaths("ipv6-unicast")]);
    return [...v4, ...v6];
  }

  // ---- events ----

  /**
   * Subscribes to peer state changes ("peer" events) and/or best-path changes
   * ("table" events). The subscription survives reconnects: it is re-opened on
   * every "ready" (and gobgpd then replays the current state).
   */
  watch(what: { peers?: boolean; table?: boolean }): void {
    this.watchWanted = { peers: what.peers ?? false, table: what.table ?? false };
    this.watchStream?.cancel();
    this.watchStream = undefined;
    if (this.ready) this.openWatch();
  }

  private openWatch(): void {
    const want = this.watchWanted;
    if (!want || (!want.peers && !want.table) || this.closed) return;
    const stream = this.raw.watchEvent(
      {
        peer: want.peers ? {} : undefined,
        table: want.table
          ? { filters: [{ type: WatchEventRequest_Table_Filter_Type.BEST, init: true }] }
          : undefined,
      },
      new Metadata(),
      {}, // long-lived: no deadline; cancelled on disconnect/close
    );
    this.watchStream = stream;
    stream.on("data", (ev: WatchEventResponse) => {
      if (ev.peer?.peer && ev.peer.type !== WatchEventResponse_PeerEvent_Type.END_OF_INIT) {
        this.emit("peer", decodePeer(ev.peer.peer));
      }
      if (ev.table) {
        const asn = this.asn ?? 0;
        const paths: DecodedPath[] = [];
        for (const p of ev.table.paths) {
          const d = decodePath(p, asn);
          if (d) paths.push(d);
        }
        if (paths.length) this.emit("table", { paths });
      }
    });
    stream.on("error", (err: ServiceError) => {
      if (this.watchStream !== stream) return;
      this.watchStream = undefined;
      if (err.code === status.CANCELLED) return;
      this.emit("warning", serviceError("WatchEvent", "", this.target, err));
      // Still connected (e.g. gobgpd refused the watch before StartBgp): retry shortly.
      if (this.ready && !this.closed)
        setTimeout(() => this.ready && !this.watchStream && this.openWatch(), 1000).unref();
    });
    stream.on("end", () => {
      if (this.watchStream === stream) this.watchStream = undefined;
    });
  }
}
