// Connection sync at run time: conntrackd, configured from the connectionSync
// section, started and kept running by egressd, and the resync that gates a
// (re)started gateway (docs/connection-sync.md).
//
//   start:  write conntrackd.conf, TCP window tracking made liberal, start
//           conntrackd (it asks its peers for their state), then wait until
//           their state has arrived (quiet for resyncQuietMs after a peer was
//           heard) or resyncTimeoutMs passed: only then does the gateway
//           advertise anything, so traffic never arrives before its state.
//   peer:   a member that asks for a resync gets this gateway's whole table,
//           the states it holds for others too (-R then -B): conntrackd alone
//           would send only its own connections, and a member that lost its
//           kernel table would get nothing of those this gateway carried for it.
//   crash:  conntrackd restarts with backoff; the backup paths are withdrawn
//           until it has resynced again; the kernel's table stays.
//   sites:  one more conntrackd per pair across sites (acrossSites): the sending
//           side's only sends, the holding side's only receives; a holding pair
//           gates like the group's (its state before the last-resort paths),
//           a sending pair gates nothing.
import { EventEmitter } from "node:events";
import { existsSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import type { ConnectionSyncConfig } from "../core/config/sync-schema.js";
import { DEFAULTS } from "../core/defaults.js";
import {
  cacheLimits,
  conntrackdChannels,
  conntrackdLine,
  parseConntrackdStats,
  refusedInAll,
  type ConntrackdChannel,
  type ConntrackdChannelStats,
  type ConntrackdStats,
} from "../core/plan/sync.js";
import { run } from "../lib/exec.js";
import { Supervised } from "../lib/supervised.js";
import type { Logger } from "./log.js";

/**
 * The library egressd loads into conntrackd (native/event-pace.c;
 * docs/connection-sync.md): it reads the kernel's events in batches, at most
 * once every `DEFAULTS.sync.eventPaceUs`, and keeps the entries a peer's state
 * would have conntrackd destroy and create again.
 */
export const EVENT_PACE_LIBRARY = fileURLToPath(new URL("../native/egressd-event-pace.so", import.meta.url));

/**
 * The front of conntrackd's command line: `env` with the library preloaded,
 * or nothing when the library is not there (a build without the native
 * helpers): conntrackd then runs as it would alone. With `trim` (egressd's
 * way), the library also reads each batch at once, merges a connection's
 * events within it, has the kernel drop the events of the states conntrackd
 * itself writes, keeps entries that exist, and writes the peers' new states
 * of a pass at once (unless `batchWrites` is false); without, it only paces
 * (for the benches' comparison).
 */
export function pacedCommand(
  library = EVENT_PACE_LIBRARY,
  paceUs: number = DEFAULTS.sync.eventPaceUs,
  trim = true,
  batchWrites = trim,
): string[] {
  if (paceUs <= 0 || !existsSync(library)) return [];
  return [
    "env",
    `LD_PRELOAD=${library}`,
    `EGRESSD_EVENT_PACE_US=${paceUs}`,
    ...(trim ? ["EGRESSD_EVENT_MERGE=1", "EGRESSD_EVENT_DROP_ECHO=1", "EGRESSD_INJECT_KEEP=1"] : []),
    ...(trim && batchWrites ? ["EGRESSD_INJECT_BATCH=1"] : []),
  ];
}

/** The sysctl that lets conntrack accept a TCP segment outside the window it saw (asymmetric paths). */
export const BE_LIBERAL = "/proc/sys/net/netfilter/nf_conntrack_tcp_be_liberal";

export interface ResyncResult {
  /** States written into the kernel table while waiting. */
  entries: number;
  ms: number;
  /** Whether a peer was heard; false: the wait ran out (no member is up, or none answered). */
  heard: boolean;
}

export interface ConnectionSyncEvents {
  /** Ready (resynced) or not (conntrackd restarting). */
  ready: [boolean];
}

export interface ConnectionSyncOptions {
  config: ConnectionSyncConfig;
  runDir: string;
  log: Logger;
  /** conntrackd binary (default from PATH). */
  binary?: string;
  /** The clock the resync wait is measured with (default: performance.now). */
  now?: () => number;
  /** The kernel's nf_conntrack_max, which sizes conntrackd's cache (default: read from /proc when egressd starts). */
  conntrackMax?: number;
}

/** The kernel's nf_conntrack_max, or undefined where it cannot be read (conntrack not loaded). */
function kernelConntrackMax(): number | undefined {
  try {
    const n = Number(readFileSync(CONNTRACK_MAX, "utf8").trim());
    return Number.isSafeInteger(n) && n > 0 ? n : undefined;
  } catch {
    return undefined;
  }
}

const CONNTRACK_MAX = "/proc/sys/net/netfilter/nf_conntrack_max";

/** One conntrackd: the group's, or one pair's across sites. Exported for tests. */
export class Conntrackd extends EventEmitter<ConnectionSyncEvents> {
  readonly configPath: string;
  private readonly process: Supervised;
  private readonly opts: ConnectionSyncOptions;
  private readonly now: () => number;
  private isReady = false;
  /** The first resync (after egressd started) completed: the gateway may advertise. */
  private firstDone = false;
  private generation = 0;
  private bulkRunning: Promise<void> | undefined;
  private bulkAgain = false;
  private stopped = false;
  /** What the last resync did, for the log and /status. */
  lastResync: ResyncResult | undefined;
  /** Times conntrackd was started again after it exited. */
  restarts = 0;
  /** Peers' states the kernel refused in the library's batched writes, since conntrackd started. */
  private libraryRefused = 0;

  constructor(
    opts: ConnectionSyncOptions,
    readonly channel: ConntrackdChannel,
  ) {
    super();
    this.opts = { ...opts, log: opts.log.child({ conntrackd: channel.name }) };
    this.now = opts.now ?? (() => performance.now());
    this.configPath = join(opts.runDir, `${channel.name}.conf`);
    const { lockFile, socket } = channel.paths;
    const paced = pacedCommand();
    if (!paced.length)
      this.opts.log.warn(
        { library: EVENT_PACE_LIBRARY },
        "conntrackd's library is missing (native helpers not built): it wakes for every event, at more CPU per connection, and replaces entries that exist when a peer restarts",
      );
    this.process = new Supervised({
      name: channel.name,
      argv: () => [
        "setpriv",
        "--pdeathsig",
        "KILL",
        "--",
        ...paced,
        opts.binary ?? "conntrackd",
        "-C",
        this.configPath,
      ],
      beforeStart: () => {
        // A killed conntrackd leaves both behind, and refuses to start over its lock file.
        rmSync(lockFile, { force: true });
        rmSync(socket, { force: true });
        writeFileSync(this.configPath, channel.text, { mode: 0o600 });
      },
    });
    this.process.on("log", (line) => this.onLog(line));
    this.process.on("started", ({ pid, restarts }) => {
      this.restarts = restarts;
      this.libraryRefused = 0;
      if (restarts > 0) this.opts.log.warn({ pid, restarts }, "conntrackd restarted");
      void this.resync();
    });
    this.process.on("exited", (e) => {
      this.setReady(false);
      this.opts.log.error(
        { code: e.code, signal: e.signal, restartInMs: e.restartInMs, lastLines: e.lastLines.slice(-5) },
        channel.role === "send"
          ? "conntrackd exited: this gateway's connections are not sent to the other site until it is back"
          : "conntrackd exited: backup paths withdrawn until it has resynced",
      );
    });
  }

  get ready(): boolean {
    return this.isReady;
  }

  /** Whether the first resync has completed (the gateway advertises nothing before). */
  get resynced(): boolean {
    return this.firstDone;
  }

  /** Starts conntrackd; the resync runs on its own (see `ready`). */
  async start(): Promise<void> {
    await this.process.start();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.setReady(false);
    await this.process.stop();
  }

  /** `conntrackd -C CONF ARGS`. */
  private ctl(...args: string[]): Promise<string> {
    return run([this.opts.binary ?? "conntrackd", "-C", this.configPath, ...args], {
      timeoutMs: 10_000,
    }).then((r) => r.stdout);
  }

  /** conntrackd's counters, its failed injections with the ones only its library saw (batched writes). */
  stats(): Promise<ConntrackdStats> {
    return this.ctl("-s").then((text) => {
      const s = parseConntrackdStats(text);
      return { ...s, injected: { ...s.injected, failed: s.injected.failed + this.libraryRefused } };
    });
  }

  private setReady(ready: boolean): void {
    if (this.isReady === ready) return;
    this.isReady = ready;
    this.emit("ready", ready);
  }

  private onLog(line: string): void {
    switch (conntrackdLine(line)) {
      case "peer-resync":
        this.opts.log.info("a sync peer asked for our connection state: sending the whole table");
        void this.sendAll();
        break;
      case "normal-class":
        this.opts.log.debug(
          { conntrackd: line },
          "conntrackd runs in the normal scheduling class, as configured",
        );
        break;
      case "library-refused":
        // conntrackd counted these as written: its counter of failures gets them from here (stats()).
        this.libraryRefused = refusedInAll(line) ?? this.libraryRefused;
        this.opts.log.warn({ conntrackd: line }, "the kernel refused peers' connection states");
        break;
      case "fault":
        this.opts.log.warn({ conntrackd: line }, "conntrackd");
        break;
      default:
        this.opts.log.debug({ conntrackd: line }, "conntrackd");
    }
  }

  /** -R (refresh its cache from the kernel table, which holds the states injected for peers) then -B. */
  private sendAll(): Promise<void> {
    if (this.bulkRunning) {
      this.bulkAgain = true;
      return this.bulkRunning;
    }
    this.bulkRunning = (async () => {
      do {
        this.bulkAgain = false;
        try {
          await this.ctl("-R");
          await this.ctl("-B");
        } catch (e) {
          this.opts.log.warn({ err: e }, "could not send the connection table to a sync peer");
        }
      } while (this.bulkAgain && !this.stopped);
    })().finally(() => (this.bulkRunning = undefined));
    return this.bulkRunning;
  }

  /**
   * Waits for conntrackd to answer, then for the peers' state; then ready.
   *
   * A peer answers a resync request twice. Its conntrackd answers at once,
   * from its cache: its own connections only. Its egressd then reloads that
   * cache from the kernel (-R), which takes time in proportion to the table
   * (93-326 ms for 26000 entries here), and sends it all (-B): the states
   * it holds for others, this gateway's among them. A quiet moment between
   * the two is not the end. So once the first answer has gone quiet, this
   * gateway asks again (-n): the peer's conntrackd answers after the
   * reload it is busy with, from the reloaded cache, so that answer has
   * everything. The wait ends when that answer has come and gone quiet, or
   * `resyncTimeoutMs` after the second request (a peer with nothing to send
   * sends nothing).
   */
  private async resync(): Promise<void> {
    const generation = ++this.generation;
    const S = DEFAULTS.sync;
    const timeoutMs = this.opts.config.resyncTimeoutMs ?? S.resyncTimeoutMs;
    const quietMs = S.resyncQuietMs;
    const started = this.now();
    const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
    let last = -1;
    let lastChange = started;
    let heard = false;
    let entries = 0;
    // After the first answer: when this gateway asked again, and the count then.
    let again: { at: number; base: number } | undefined;
    for (;;) {
      if (generation !== this.generation || this.stopped) return;
      const t = this.now();
      try {
        const s = await this.stats();
        // A conntrackd that just started counts from zero.
        const injected = s.injected.created + s.injected.updated;
        entries = injected;
        if (s.received > 0) heard = true;
        if (injected !== last) {
          last = injected;
          lastChange = t;
        }
        if (!again && heard && t - lastChange >= quietMs) {
          await this.ctl("-n");
          again = { at: this.now(), base: injected };
        } else if (again && injected !== again.base && t - lastChange >= quietMs) break;
      } catch {
        // Not answering yet (starting): keep asking until the timeout.
      }
      if (again ? t - again.at >= timeoutMs : t - started >= timeoutMs) break;
      await sleep(50);
    }
    if (generation !== this.generation || this.stopped) return;
    this.lastResync = { entries, ms: Math.round(this.now() - started), heard };
    if (this.channel.role !== "send")
      this.opts.log.info(
        this.lastResync,
        heard
          ? "connection state resynced from the sync peers"
          : "no sync peer answered: going on without their state",
      );
    this.firstDone = true;
    this.setReady(true);
  }
}

/**
 * Every conntrackd of the connectionSync section, as one: ready when each
 * one that receives state (the group's, the pairs that hold another site's
 * connections) has it; a pair that only sends is not waited for.
 */
export class ConnectionSync extends EventEmitter<ConnectionSyncEvents> {
  private readonly channels: Conntrackd[];
  private readonly gating: Conntrackd[];
  private isReady = false;

  constructor(opts: ConnectionSyncOptions) {
    super();
    const paths = (name: string) => ({
      lockFile: join(opts.runDir, `${name}.lock`),
      socket: join(opts.runDir, `${name}.ctl`),
    });
    const kernelMax = opts.conntrackMax ?? kernelConntrackMax();
    const limits = cacheLimits(kernelMax);
    opts.log.info(
      { hashLimit: limits.hashLimit, hashSize: limits.hashSize, nfConntrackMax: kernelMax ?? null },
      kernelMax === undefined
        ? `conntrackd's cache holds up to ${limits.hashLimit} connections (${CONNTRACK_MAX} could not be read)`
        : `conntrackd's cache holds up to ${limits.hashLimit} connections (at least twice nf_conntrack_max)`,
    );
    this.channels = conntrackdChannels(opts.config, paths, limits).map((c) => new Conntrackd(opts, c));
    this.gating = this.channels.filter((c) => c.channel.role !== "send");
    // Only pairs that send: nothing to wait for.
    this.isReady = this.gating.length === 0;
    for (const c of this.channels)
      c.on("ready", () => {
        const ready = this.gating.every((g) => g.ready);
        if (ready === this.isReady) return;
        this.isReady = ready;
        this.emit("ready", ready);
      });
  }

  get ready(): boolean {
    return this.isReady;
  }

  /** Whether the first resync of every conntrackd that receives state has completed. */
  get resynced(): boolean {
    return this.gating.every((c) => c.resynced);
  }

  /** Times a conntrackd was started again after it exited, all of them. */
  get restarts(): number {
    return this.channels.reduce((n, c) => n + c.restarts, 0);
  }

  /**
   * Each running conntrackd's counters (`conntrackd -s`), by its name; one
   * that does not answer (restarting) is left out.
   */
  async stats(): Promise<ConntrackdChannelStats[]> {
    const read = await Promise.all(
      this.channels.map((c) =>
        c.stats().then(
          (stats) => ({ conntrackd: c.channel.name, stats }),
          () => undefined,
        ),
      ),
    );
    return read.filter((r): r is ConntrackdChannelStats => r !== undefined);
  }

  /** The last resyncs of those that receive state, together: states summed, the longest wait. */
  get lastResync(): ResyncResult | undefined {
    const all = this.gating.map((c) => c.lastResync);
    if (!all.length || all.some((r) => r === undefined)) return undefined;
    const done = all as ResyncResult[];
    return {
      entries: done.reduce((n, r) => n + r.entries, 0),
      ms: Math.max(...done.map((r) => r.ms)),
      heard: done.every((r) => r.heard),
    };
  }

  async start(): Promise<void> {
    // Per network namespace. The owner of a connection sees every segment of it, but a member
    // that carries it after a failover, or one of two live members an ECMP change splits it
    // between, sees segments whose window it never saw: strict tracking marks them INVALID.
    try {
      writeFileSync(BE_LIBERAL, "1\n");
    } catch (e) {
      throw new Error(
        `connection sync: cannot write ${BE_LIBERAL} (${(e as Error).message}); ` +
          "a connection that moves between gateways needs liberal TCP window tracking",
      );
    }
    await Promise.all(this.channels.map((c) => c.start()));
  }

  async stop(): Promise<void> {
    await Promise.all(this.channels.map((c) => c.stop()));
  }
}
