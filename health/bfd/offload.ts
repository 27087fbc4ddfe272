// The BFD transport that runs each session's periodic half in egressd-bfd
// (native/bfd-offload.c): the helper owns the sockets, sends every session's
// current packet on its jittered schedule, keeps the detection deadlines by
// the kernel's receive times, and passes up only what is new. The session's
// protocol stays in session.ts; the manager tells the helper what changed
// (OffloadControl) and hears what it did (OffloadHooks).
//
// A thread of Node.js pays a few hundred microseconds of CPU for each
// wake-up on these machines; a session at 100 ms woke the BFD thread about 22
// times a second. With the helper it wakes when something changes
// (docs/bfd.md, "The periodic half in a helper").
//
// The helper is restarted with a backoff when it exits, and killed and
// restarted when it stops reporting (it reports once a second); its sockets,
// sessions and programs are given to the new one as they were.
import { performance } from "node:perf_hooks";
import { fileURLToPath } from "node:url";
import { runHelper, type HelperRun } from "../detector-process.js";
import { BFD_CONTROL_PORT } from "./packet.js";
import {
  SOURCE_PORT_MAX,
  SOURCE_PORT_MIN,
  type BfdTransport,
  type Listener,
  type OffloadControl,
  type OffloadHooks,
  type PacketHandler,
  type TransportStats,
  type TxChannel,
} from "./transport.js";

/** The helper as the build leaves it (scripts/build-native.sh). */
export const BFD_HELPER = fileURLToPath(new URL("../../native/egressd-bfd", import.meta.url));

/**
 * The helper's real-time priority (SCHED_FIFO), when egressd may set it (CAP_SYS_NICE): the lowest,
 * so it waits for no ordinary process and for every other real-time one. See docs/bfd.md.
 */
export const BFD_HELPER_REALTIME_PRIORITY = 1;

/** The helper reports once a second; this long without a line, it is taken for hung. */
const WATCHDOG_MS = 3000;

export interface OffloadTransportOptions {
  /** Path of egressd-bfd (default: the built one). */
  binary?: string;
  /** Real-time priority for the helper, 0 for none (default BFD_HELPER_REALTIME_PRIORITY). */
  realtimePriority?: number;
  /** Destination and listening port (default 3784; tests may change it). */
  port?: number;
  /** Source port range (default 49152-65535, as RFC 5881 requires). */
  sourcePorts?: [number, number];
  /** Called with what the helper says went wrong (a command refused, an exit). */
  onError?: (err: Error) => void;
}

export interface OffloadTransportStats extends TransportStats {
  /** Packets dropped because their TTL / hop limit was not 255 (RFC 5881 5). */
  ttlDrops: number;
  /** Packets the kernel dropped from a full receive buffer. */
  overflows: number;
  /** Helper processes started. */
  spawns: number;
}

/** CLOCK_MONOTONIC nanoseconds of performance.now()'s zero, in this thread. */
const ORIGIN_NS = process.hrtime.bigint() - BigInt(Math.round(performance.now() * 1e6));

/** A helper time (CLOCK_MONOTONIC ns) on the clock the manager uses (systemClock, ms). */
export function helperTimeToClock(ns: bigint): number {
  return Number(ns - ORIGIN_NS) / 1e6;
}

interface ListenerState {
  lid: number;
  local: string;
  onPacket: PacketHandler;
}

interface SessionState {
  sid: number;
  lid: number;
  local: string;
  peer: string;
  port: number;
  hooks?: OffloadHooks;
  /** The last T, A and D lines, given again to a new helper. */
  program?: string;
  accepted?: string;
  detection?: string;
}

type Waiter = { resolve: (v: string[]) => void; reject: (e: Error) => void };

/** One egressd-bfd process and the sockets and sessions it holds for a BfdManager. */
export class OffloadTransport implements BfdTransport {
  readonly stats: OffloadTransportStats = { txErrors: 0, rxErrors: 0, ttlDrops: 0, overflows: 0, spawns: 0 };
  private run: HelperRun | null = null;
  private readonly listeners = new Map<number, ListenerState>();
  private readonly sessions = new Map<number, SessionState>();
  /** Replies awaited: "l ID" / "o ID". */
  private readonly waiting = new Map<string, Waiter>();
  private nextId = 1;
  private closed = false;
  private restartTimer: NodeJS.Timeout | null = null;
  private restartDelayMs = 0;
  private lastLineAt = 0;
  private readonly watchdog: NodeJS.Timeout;
  private readonly port: number;
  private readonly sourcePorts: [number, number];

  constructor(private readonly opts: OffloadTransportOptions = {}) {
    this.port = opts.port ?? BFD_CONTROL_PORT;
    this.sourcePorts = opts.sourcePorts ?? [SOURCE_PORT_MIN, SOURCE_PORT_MAX];
    this.watchdog = setInterval(() => this.checkAlive(), 1000);
    this.watchdog.unref();
  }

  /** Pid of the running helper, if any. */
  get pid(): number | undefined {
    return this.run?.child.pid;
  }

  async listen(local: string, onPacket: PacketHandler): Promise<Listener> {
    const st: ListenerState = { lid: this.nextId++, local, onPacket };
    this.listeners.set(st.lid, st);
    try {
      await this.request(`l ${st.lid}`, `L ${st.lid} ${local} ${this.port}\n`);
    } catch (e) {
      this.listeners.delete(st.lid);
      throw new Error(`BFD: cannot listen on [${local}]:${this.port}: ${(e as Error).message}`, { cause: e });
    }
    return {
      close: () => {
        if (this.listeners.delete(st.lid)) this.write(`X ${st.lid}\n`);
      },
    };
  }

  async connect(local: string, peer: string, hooks?: OffloadHooks): Promise<TxChannel> {
    const lid = [...this.listeners.values()].find((l) => l.local === local)?.lid;
    if (lid === undefined) throw new Error(`BFD: no receiving socket on [${local}] for [${peer}]`);
    const st: SessionState = { sid: this.nextId++, lid, local, peer, port: 0, ...(hooks ? { hooks } : {}) };
    const [lo, hi] = this.sourcePorts;
    let reply: string[];
    // Held from now on, so that a helper started meanwhile opens it too.
    this.sessions.set(st.sid, st);
    try {
      reply = await this.request(
        `o ${st.sid}`,
        `O ${st.sid} ${lid} ${local} ${peer} ${lo} ${hi} ${this.port}\n`,
      );
    } catch (e) {
      this.sessions.delete(st.sid);
      throw new Error(`BFD: cannot connect [${local}] -> [${peer}]:${this.port}: ${(e as Error).message}`, {
        cause: e,
      });
    }
    st.port = Number(reply[0]);
    const offload: OffloadControl = {
      program: (p) => {
        st.program = p
          ? `T ${st.sid} ${p.intervalUs} ${p.mult1 ? 1 : 0} ${p.reschedule ? 1 : 0} ${p.packet.toString("hex")}\n`
          : `T ${st.sid} 0 0 0 -\n`;
        this.write(st.program);
      },
      accepted: (token, detectUs, steady) => {
        st.accepted = `A ${st.sid} ${token} ${detectUs} ${steady ? steady.toString("hex") : "-"}\n`;
        st.detection = undefined;
        this.write(st.accepted);
      },
      detection: (detectUs) => {
        st.detection = `D ${st.sid} ${detectUs}\n`;
        this.write(st.detection);
      },
    };
    return {
      localPort: st.port,
      offload,
      send: (packet) => this.write(`S ${st.sid} ${packet.toString("hex")}\n`),
      close: () => {
        if (this.sessions.delete(st.sid)) this.write(`C ${st.sid}\n`);
      },
    };
  }

  /** Stops the helper for good. */
  close(): void {
    this.closed = true;
    clearInterval(this.watchdog);
    if (this.restartTimer) clearTimeout(this.restartTimer);
    this.restartTimer = null;
    this.failWaiting(new Error("the BFD transport is closed"));
    const c = this.run?.child;
    this.run = null;
    if (c && c.exitCode === null && c.signalCode === null) c.kill("SIGKILL");
  }

  // --- the helper ------------------------------------------------------------

  private request(key: string, line: string): Promise<string[]> {
    if (this.closed) return Promise.reject(new Error("the BFD transport is closed"));
    if (this.waiting.has(key)) return Promise.reject(new Error(`${key} is already pending`));
    const p = new Promise<string[]>((resolve, reject) => this.waiting.set(key, { resolve, reject }));
    if (!this.run && !this.restartTimer) this.spawnChild();
    else this.write(line);
    // A helper started just now was given every listener and session, this one included.
    return p;
  }

  private write(text: string): void {
    this.run?.child.stdin?.write(text);
  }

  private failWaiting(err: Error): void {
    for (const w of this.waiting.values()) w.reject(err);
    this.waiting.clear();
  }

  private spawnChild(): void {
    if (this.closed) return;
    const binary = this.opts.binary ?? BFD_HELPER;
    // Its packets are the deadlines of the peers' detection: it runs at the detection priority.
    const rt = this.opts.realtimePriority ?? BFD_HELPER_REALTIME_PRIORITY;
    const run: HelperRun = runHelper([binary, "--realtime", String(rt)], "the BFD helper", {
      line: (line) => {
        if (this.run === run) this.onLine(line);
      },
      gone: (why) => this.gone(run, why),
    });
    this.run = run;
    this.lastLineAt = performance.now();
    this.stats.spawns++;
    // Everything the last helper held, in order: sockets, sessions (on the same source ports), programs.
    let text = "";
    for (const l of this.listeners.values()) text += `L ${l.lid} ${l.local} ${this.port}\n`;
    for (const s of this.sessions.values()) {
      const [lo, hi] = s.port ? [s.port, s.port] : this.sourcePorts;
      text += `O ${s.sid} ${s.lid} ${s.local} ${s.peer} ${lo} ${hi} ${this.port}\n`;
      // The last helper kept the detection deadline, moved by packets egressd never saw: the
      // new one starts it from now, which gives a peer that died meanwhile one detection time more.
      const accepted = s.accepted?.replace(/^A (\d+) \d+ /, "A $1 now ");
      text += (s.program ?? "") + (accepted ?? "") + (s.detection ?? "");
    }
    this.write(text);
  }

  private gone(run: HelperRun, why: string): void {
    if (this.run !== run) return;
    this.run = null;
    this.failWaiting(new Error(why));
    if (this.closed) return;
    this.opts.onError?.(new Error(why));
    this.restartDelayMs = Math.min(Math.max(this.restartDelayMs * 2, 100), 5000);
    this.restartTimer = setTimeout(() => {
      this.restartTimer = null;
      this.spawnChild();
    }, this.restartDelayMs);
  }

  private checkAlive(): void {
    const run = this.run;
    if (!run || performance.now() - this.lastLineAt < WATCHDOG_MS) return;
    run.lastError = `no report for ${WATCHDOG_MS} ms`;
    run.child.kill("SIGKILL"); // 'gone' restarts it
  }

  private onLine(line: string): void {
    this.lastLineAt = performance.now();
    try {
      this.parseLine(line);
    } catch (e) {
      this.opts.onError?.(
        new Error(`BFD helper: unreadable line ${JSON.stringify(line.slice(0, 200))}`, { cause: e }),
      );
    }
  }

  private parseLine(line: string): void {
    const f = line.split(" ");
    switch (f[0]) {
      case "r": {
        // r LID TS TTL FROM HEX
        const l = this.listeners.get(Number(f[1]));
        if (!l || f.length !== 6) return;
        const token = BigInt(f[2]!);
        const msg = f[5] === "-" ? Buffer.alloc(0) : Buffer.from(f[5]!, "hex");
        l.onPacket(msg, f[4]!, 0, { at: helperTimeToClock(token), token });
        return;
      }
      case "x": {
        this.sessions.get(Number(f[1]))?.hooks?.expired(BigInt(f[2] ?? "0"));
        return;
      }
      case "s": {
        // s SID RX TX LAST_RX LAST_TX SLACK_MIN_US LATE_MAX_US TXERR
        const s = this.sessions.get(Number(f[1]));
        if (!s || f.length !== 9) return;
        const at = (v: string) => (v === "0" ? -Infinity : helperTimeToClock(BigInt(v)));
        this.stats.txErrors += Number(f[8]);
        s.hooks?.activity({
          rxPackets: Number(f[2]),
          txPackets: Number(f[3]),
          lastRxAt: at(f[4]!),
          lastTxAt: at(f[5]!),
          rxSlackMinUs: f[6] === "-" ? null : Number(f[6]),
          txLateMaxUs: Number(f[7]),
        });
        return;
      }
      case "h":
        this.restartDelayMs = 0;
        this.stats.ttlDrops = Number(f[1]);
        this.stats.overflows = Number(f[2]);
        return;
      case "l":
      case "o": {
        const w = this.waiting.get(`${f[0]} ${f[1]}`);
        if (!w) {
          // A socket given again to a restarted helper.
          if (f[2] !== "ok") this.opts.onError?.(new Error(`BFD helper: ${line}`));
          return;
        }
        this.waiting.delete(`${f[0]} ${f[1]}`);
        if (f[2] === "ok") w.resolve(f.slice(3));
        else w.reject(new Error(f[3] ?? "refused"));
        return;
      }
      case "!":
        this.opts.onError?.(new Error(`BFD helper: ${line.slice(2)}`));
        return;
    }
  }
}
