// The lab of the scale and soak benchmarks: egressd as a process in a
// network namespace, with a config of many policies and sources, peering with
// an FRR ToR (bgpd + bfdd) over one veth: one BGP session with BFD per peer.
//
//   [tor] FRR  10.0.0.1 (+ 10.0.1.1..N)  tor0 <--veth--> gw0  10.0.0.2 (+ 10.0.1.101..100+N)  [gw] egressd
import { spawn, type ChildProcess } from "node:child_process";
import { createInterface } from "node:readline";
import {
  closeSync,
  existsSync,
  mkdtempSync,
  openSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { stringify } from "yaml";
import { isRunning, run, spawnDetached, tryRun } from "../lib/exec.js";
import { NODE_ENV, NODE_FLAGS } from "../daemon/node-flags.js";
import { sleep, waitFor } from "../lib/wait.js";
import type { GatewayConfig } from "../core/config/gateway-config.js";
import type { Sandbox } from "../test/helpers/netns.js";
import { buildTopology, Frr, GW_ASN, GW_V4, TOR_ASN, TOR_V4 } from "../test/helpers/bgp-lab.js";
import { BfdSpeaker } from "../test/helpers/bfd-speaker.js";
import { parseExposition, value, type Family } from "../test/helpers/exposition.js";
import { runtimeMs } from "./probe-lab.js";
import { benchSandbox } from "./nat-lib.js";
import { gatewayAtScale } from "./scale-config.js";
import { LoopTrace, TRACEFS, type TurnSummary } from "../lib/loop-trace.js";
import { v8HelperThreads } from "../lib/threads.js";
import { statFields } from "../lib/proc-file.js";

export const DEFAULT_EGRESSD = fileURLToPath(new URL("../daemon/cli.js", import.meta.url));
const HTTP = "127.0.0.1:9901";

export interface ScaleLabOptions {
  tag: string;
  policies: number;
  sources: number;
  probes: number;
  probeIntervalMs: number;
  /** Each probe's timeout (default: the interval). */
  probeTimeoutMs?: number;
  /** BGP sessions, each with BFD. */
  peers: number;
  bfdIntervalMs: number;
  /** dist/daemon/cli.js of the tree to run. */
  egressd: string;
  /** Extra arguments of `egressd run` (e.g. --dataplane-heap-mb 128). */
  runArgs?: string[];
  /** Flags for node itself (default: NODE_FLAGS, as egressd's launchers give). */
  nodeFlags?: readonly string[];
  /** Egress IPs (default 50). */
  egressIPs?: number;
  /**
   * Who answers BFD at the ToR: FRR's bfdd (default), or egressd's own BFD
   * (test/fixtures/bfd-peer.js in a worker thread), to tell a slow ToR from
   * a slow gateway. FRR keeps the BGP sessions either way.
   */
  bfdPeer?: "frr" | "egressd";
  /** The caller handles SIGINT/SIGTERM and calls stop() (default: the lab is removed and the process exits). */
  ownSignals?: boolean;
  /** Trace the main thread's loop turns (lib/loop-trace.ts); loopDelay() then reports them. */
  traceLoop?: boolean;
  /** Changes the generated config before it is written. */
  configure?: (c: GatewayConfig) => GatewayConfig;
  /** Runs in the gateway's namespace before egressd starts (e.g. a forwarder egressd needs). */
  beforeStart?: (sb: Sandbox) => Promise<void>;
}

/** The session addresses of peer i: the ToR's end and the gateway's. */
function peerAddresses(n: number): { tor: string; gw: string }[] {
  if (n === 1) return [{ tor: TOR_V4, gw: GW_V4 }];
  return Array.from({ length: n }, (_, i) => ({ tor: `10.0.1.${i + 1}`, gw: `10.0.1.${i + 101}` }));
}

/** A window's event-loop delay (from /metrics), the main thread's wait for a CPU, and its loop turns when traced. */
export interface LoopDelay {
  maxMs: number;
  p99Ms: number;
  cpuWaitMs: number;
  turns: TurnSummary | undefined;
}

export class ScaleLab {
  readonly dir = mkdtempSync(join(tmpdir(), "egressd-scale-"));
  readonly file = join(this.dir, "egressd.yaml");
  readonly logPath = join(this.dir, "egressd.log");
  frr: Frr | undefined;
  /** The ToR's BFD when it is egressd's own. */
  bfdSpeaker: BfdSpeaker | undefined;
  pid: number | undefined;
  config!: GatewayConfig;
  startedAt = 0;
  /** startedAt on the wall clock, which egressd's log lines are stamped with. */
  startedWall = 0;
  loopTrace: LoopTrace | undefined;
  /** Why the loop's turns are not traced, when traceLoop asked for them. */
  loopTraceMissing: string | undefined;

  private constructor(
    readonly sb: Sandbox,
    readonly o: ScaleLabOptions,
  ) {}

  /** Builds the lab, writes the config and starts egressd (not waiting for it). */
  static async start(o: ScaleLabOptions): Promise<ScaleLab> {
    const lab = new ScaleLab(benchSandbox(o.tag, { signals: !o.ownSignals }), o);
    try {
      await lab.build();
    } catch (e) {
      await lab.stop();
      throw e;
    }
    return lab;
  }

  private async build(): Promise<void> {
    const { sb, o } = this;
    await buildTopology(sb);
    await sb.exec("gw", ["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
    const peers = peerAddresses(o.peers);
    if (o.peers > 1) {
      await sb.sh("tor", peers.map((p) => `ip addr add ${p.tor}/24 dev tor0`).join("\n"));
      await sb.sh("gw", peers.map((p) => `ip addr add ${p.gw}/24 dev gw0`).join("\n"));
    }
    const frrBfd = (o.bfdPeer ?? "frr") === "frr";
    this.frr = await Frr.start(sb.ns("tor"), {
      // In a network the ToR is another machine. Here it shares the gateway's
      // two cores, and FRR's bfdd alone takes a third of one for 50 sessions
      // at 100 ms; at nice -10 it still waited up to 250 ms of every 500 for
      // a CPU, and the sessions it then expired were counted against
      // egressd. In the real-time class it runs as on a CPU of its own.
      realtime: 20,
      ...(frrBfd ? { bfd: { intervalMs: o.bfdIntervalMs, multiplier: 3 } } : {}),
      neighbors: peers.map((p) => ({ address: p.gw, ...(o.peers > 1 ? { updateSource: p.tor } : {}) })),
    });
    this.config = gatewayAtScale({
      policies: o.policies,
      sources: o.sources,
      peers: peers.map((p) => ({ address: p.tor, local: p.gw })),
      peerAsn: TOR_ASN,
      self: { routerId: GW_V4, asn: GW_ASN, interface: "gw0" },
      nextHop: TOR_V4,
      probes: o.probes,
      probeTargets: peers.map((p) => p.tor),
      probeIntervalMs: o.probeIntervalMs,
      ...(o.probeTimeoutMs !== undefined ? { probeTimeoutMs: o.probeTimeoutMs } : {}),
      bfd: { intervalMs: o.bfdIntervalMs, multiplier: 3 },
      httpListen: HTTP,
      ...(o.egressIPs ? { egressIPs: o.egressIPs } : {}),
    });
    if (o.configure) this.config = o.configure(this.config);
    this.writeConfig(this.config);
    await o.beforeStart?.(sb);
    if (!frrBfd) {
      const ms = o.bfdIntervalMs;
      this.bfdSpeaker = new BfdSpeaker(sb.ns("tor"), {
        sessions: peers.map((p) => ({
          peer: p.gw,
          local: p.tor,
          desiredMinTxMs: ms,
          requiredMinRxMs: ms,
          detectMultiplier: 3,
        })),
        thread: "worker",
      });
    }
    const log = openSync(this.logPath, "a");
    this.startedAt = performance.now();
    this.startedWall = Date.now();
    this.pid = spawnDetached(
      [
        "node",
        ...(o.nodeFlags ?? NODE_FLAGS),
        o.egressd,
        "run",
        "-c",
        this.file,
        "--run-dir",
        join(this.dir, "run"),
        ...(o.runArgs ?? []),
      ],
      {
        netns: sb.ns("gw"),
        logFile: log,
        env: { ...NODE_ENV },
      },
    );
    closeSync(log);
    if (o.traceLoop) {
      // tracefs is not always mounted (on these machines it is not until someone does).
      if (!existsSync(join(TRACEFS, "instances"))) await tryRun(["mount", "-t", "tracefs", "nodev", TRACEFS]);
      const trace = await LoopTrace.open(this.pid);
      if (typeof trace === "string") this.loopTraceMissing = trace;
      else this.loopTrace = trace;
    }
  }

  get configBytes(): number {
    return readFileSync(this.file).length;
  }

  /**
   * Writes the config as an editor would: a new file renamed over the old
   * one. Rendering 100k sources as YAML takes this process a few hundred ms:
   * a caller that times from the write passes the text rendered beforehand.
   */
  writeConfig(c: GatewayConfig, text = stringify(c)): void {
    this.config = c;
    writeFileSync(`${this.file}.new`, text);
    renameSync(`${this.file}.new`, this.file);
  }

  /**
   * Resolves (when called) with performance.now() at the kernel's notice that
   * element `text` (an address, canonical) was added to a set in the
   * gateway's namespace, after this call. One watcher process (nft-watch.js)
   * serves every call; it is idle between notifications. The watcher's own
   * wall-clock time of that notice is kept in `noticedAt` (by address).
   */
  async elementAdded(text: string, timeoutMs = 60_000): Promise<() => Promise<number>> {
    const waiters = await this.elementWatcher();
    const seen = new Promise<number>((resolve, reject) => {
      const timer = setTimeout(() => {
        waiters.delete(text);
        reject(new Error(`no element ${text} added in ${timeoutMs} ms`));
      }, timeoutMs);
      waiters.set(text, (at) => {
        clearTimeout(timer);
        resolve(at);
      });
    });
    seen.catch(() => undefined); // awaited by the caller
    return () => seen;
  }

  private watcher: { child: ChildProcess; waiters: Map<string, (at: number) => void> } | undefined;
  /** The watcher's wall-clock time (ms) of the last notice of each address. */
  readonly noticedAt = new Map<string, number>();

  private async elementWatcher(): Promise<Map<string, (at: number) => void>> {
    if (this.watcher) return this.watcher.waiters;
    const script = fileURLToPath(new URL("./nft-watch.js", import.meta.url));
    const child = spawn("ip", ["netns", "exec", this.sb.ns("gw"), "node", script], {
      stdio: ["ignore", "pipe", "inherit"],
    });
    const waiters = new Map<string, (at: number) => void>();
    this.watcher = { child, waiters };
    await new Promise<void>((resolve, reject) => {
      child.on("exit", (code) => reject(new Error(`nft-watch.js ended (exit ${code})`)));
      createInterface({ input: child.stdout! }).on("line", (l) => {
        if (l === "ready") return resolve();
        const at = performance.now();
        const [wall, ...keys] = l.split(" ");
        for (const key of keys) {
          this.noticedAt.set(key, Number(wall));
          const w = waiters.get(key);
          waiters.delete(key);
          w?.(at);
        }
      });
    });
    return waiters;
  }

  sighup(): void {
    process.kill(this.pid!, "SIGHUP");
  }

  async http(path: string): Promise<string | undefined> {
    const r = await this.sb.tryExec("gw", ["curl", "-sf", "-m", "5", `http://${HTTP}${path}`]);
    return r.code === 0 ? r.stdout : undefined;
  }

  async waitReady(timeoutMs = 120_000): Promise<number> {
    // egressd exits on a config it refuses: say why at once rather than time out.
    const r = await waitFor(
      "/readyz",
      async () => {
        if (this.pid !== undefined && !isRunning(this.pid)) return { exited: true };
        return (await this.http("/readyz")) !== undefined && { exited: false };
      },
      timeoutMs,
      20,
    );
    if (r.exited) {
      const said = this.logLines().filter((l) => /"level":"(error|fatal)"/.test(l));
      throw new Error(`egressd exited before it was ready; it logged:\n${said.join("\n") || "(nothing)"}`);
    }
    return performance.now() - this.startedAt;
  }

  /**
   * The event-loop delay since the last scrape (prom-client resets its
   * histogram on each), and how long egressd's main thread waited, runnable,
   * for a CPU in that time (the kernel's schedstat for the thread): a delay
   * mostly made of that wait was the machine's, not egressd's own work.
   */
  async loopDelay(): Promise<LoopDelay> {
    const lag = loopLag(parseExposition((await this.http("/metrics")) ?? ""));
    const wait = this.mainThreadWaitMs();
    const cpuWaitMs = wait - this.lastMainWaitMs;
    this.lastMainWaitMs = wait;
    return { ...lag, cpuWaitMs, turns: this.loopTrace?.take() };
  }
  /** At the first call: the wait since egressd started. */
  private lastMainWaitMs = 0;

  /** ms egressd's main thread (its thread id is the process id) has waited runnable for a CPU; NaN when gone. */
  mainThreadWaitMs(): number {
    try {
      return Number(readFileSync(`/proc/${this.pid}/task/${this.pid}/schedstat`, "utf8").split(" ")[1]) / 1e6;
    } catch {
      return NaN;
    }
  }

  logLines(): string[] {
    return readFileSync(this.logPath, "utf8").split("\n").filter(Boolean);
  }

  /**
   * Where the start went, from egressd's log, in ms after the bench started it:
   * the config read, checked and planned; the first BGP session Established;
   * the first reconcile that programmed the kernel.
   */
  startSteps(): { planned?: number; established?: number; programmed?: number } {
    const lines = this.logLines();
    const at = (match: (l: string) => boolean): number | undefined => {
      const l = lines.find(match);
      const time = l === undefined ? undefined : /"time":"([^"]+)"/.exec(l)?.[1];
      return time === undefined ? undefined : Date.parse(time) - this.startedWall;
    };
    return {
      planned: at((l) => l.includes('"msg":"config read, checked and planned"')),
      established: at((l) => l.includes('"state":"established"')),
      programmed: at((l) => l.includes('"msg":"reconciled"') && l.includes('"kernel":[')),
    };
  }

  /** startSteps as one line for a bench's output. */
  startStepsText(): string {
    const steps = this.startSteps();
    const at = (ms: number | undefined) => (ms === undefined ? "?" : `${ms.toFixed(0)} ms`);
    return (
      `config read, checked and planned at ${at(steps.planned)}; kernel programmed at ${at(steps.programmed)}; ` +
      `first BGP session Established at ${at(steps.established)} (egressd's log)`
    );
  }

  reloadsLogged(): number {
    return this.logLines().filter((l) => l.includes('"config reloaded"')).length;
  }

  /** Warnings and errors egressd logged, counted by message. */
  complaints(): Map<string, number> {
    const byMsg = new Map<string, number>();
    for (const l of this.logLines()) {
      if (!/"level":"(warn|error|fatal)"/.test(l)) continue;
      const msg = /"msg":"([^"]*)"/.exec(l)?.[1] ?? l.slice(0, 80);
      byMsg.set(msg, (byMsg.get(msg) ?? 0) + 1);
    }
    return byMsg;
  }

  async torHas(prefix: string): Promise<boolean> {
    return (await this.frr!.path(prefix)) !== undefined;
  }

  async torRoutes(): Promise<number> {
    return (await this.frr!.prefixes(4)).length;
  }

  /** BGP sessions FRR saw drop, and BFD sessions it saw go down, since they first came up. */
  async torResets(): Promise<{ bgpDropped: number; bfdDown: number; bfdUp: number }> {
    const n =
      await this.frr!.json<Record<string, { connectionsDropped?: number }>>("show bgp neighbors json");
    if (this.bfdSpeaker) {
      const count = (what: string) => this.bfdSpeaker!.events.filter((e) => e.event === what).length;
      return {
        bgpDropped: Object.values(n).reduce((s, x) => s + (x.connectionsDropped ?? 0), 0),
        bfdDown: count("down"),
        bfdUp: count("up"),
      };
    }
    const b = await this.frr!.json<{ "session-down"?: number; "session-up"?: number }[]>(
      "show bfd peers counters json",
    );
    return {
      bgpDropped: Object.values(n).reduce((s, x) => s + (x.connectionsDropped ?? 0), 0),
      bfdDown: b.reduce((s, x) => s + (x["session-down"] ?? 0), 0),
      bfdUp: b.reduce((s, x) => s + (x["session-up"] ?? 0), 0),
    };
  }

  /**
   * CPU time one of the ToR's FRR daemons has run, and has waited runnable
   * for a CPU, in ms (the kernel's schedstat). A peer that waits for a CPU
   * longer than a detection time expires sessions that are healthy.
   */
  torSched(daemon = "bfdd"): { runMs: number; waitMs: number } | undefined {
    if (!this.frr) return undefined;
    try {
      const [run, wait] = readFileSync(`/proc/${this.frr.pid(daemon)}/schedstat`, "utf8")
        .split(" ")
        .map(Number);
      return { runMs: run! / 1e6, waitMs: wait! / 1e6 };
    } catch {
      return undefined;
    }
  }

  /**
   * How long the kernel's softirq threads (ksoftirqd/N) have waited for a
   * CPU, in ms, summed. Packets that the kernel cannot handle at once (and
   * every veth hop of the lab is one) are handled by these ordinary threads:
   * when real-time or busy tasks keep them from a CPU, every packet of the
   * machine waits, probes and BFD alike.
   */
  softirqWaitMs(): number {
    this.softirqPids ??= readdirSync("/proc")
      .filter((d) => /^\d+$/.test(d))
      .filter((d) => {
        try {
          return readFileSync(`/proc/${d}/comm`, "utf8").startsWith("ksoftirqd/");
        } catch {
          return false;
        }
      });
    let ms = 0;
    for (const pid of this.softirqPids) {
      try {
        ms += Number(readFileSync(`/proc/${pid}/schedstat`, "utf8").split(" ")[1]) / 1e6;
      } catch {
        // gone (CPU unplugged): not counted
      }
    }
    return ms;
  }
  private softirqPids: string[] | undefined;

  /**
   * CPU time the hypervisor gave to other guests while this VM wanted it
   * (steal, all CPUs, ms since boot; /proc/stat). Every thread of the lab,
   * egressd, ping and the ToR alike, stands still meanwhile.
   */
  stealMs(): number {
    const cpu = readFileSync("/proc/stat", "utf8").split("\n", 1)[0]!.trim().split(/\s+/);
    return Number(cpu[8] ?? 0) * 10; // USER_HZ = 100
  }

  /**
   * egressd's data-plane process (daemon/dataplane-process.ts): the child of
   * egressd that names itself egressd-dataplane (cut to 15 characters by the
   * kernel). Looked up again when it has been restarted.
   */
  dataplanePid(): number | undefined {
    if (this.dpPid !== undefined && existsSync(`/proc/${this.dpPid}`)) return this.dpPid;
    this.dpPid = undefined;
    try {
      for (const c of readFileSync(`/proc/${this.pid}/task/${this.pid}/children`, "utf8").split(" ")) {
        if (!c.trim()) continue;
        if (readFileSync(`/proc/${c}/comm`, "utf8").trim() === "egressd-datapla") this.dpPid = Number(c);
      }
    } catch {
      // egressd is gone
    }
    return this.dpPid;
  }
  private dpPid: number | undefined;

  /** egressd's memory in MB: its process and its data-plane process, each by RSS and by PSS. */
  memory(): { main: number; dataplane: number; pss: number } {
    const field = (pid: number | undefined, file: string, name: string) => {
      if (pid === undefined) return 0;
      try {
        const m = new RegExp(`^${name}:\\s+(\\d+) kB`, "m").exec(
          readFileSync(`/proc/${pid}/${file}`, "utf8"),
        );
        return Number(m?.[1] ?? 0) / 1024;
      } catch {
        return 0;
      }
    };
    const dp = this.dataplanePid();
    return {
      main: field(this.pid, "status", "VmRSS"),
      dataplane: field(dp, "status", "VmRSS"),
      // Proportional: pages both processes map (node's own code, shared libraries) counted half in each.
      pss: field(this.pid, "smaps_rollup", "Pss") + field(dp, "smaps_rollup", "Pss"),
    };
  }

  /** egressd's RSS in MB: its process's and its data-plane process's, summed (pages both map count twice). */
  rssMb(): number {
    const m = this.memory();
    return m.main + m.dataplane;
  }

  /**
   * CPU time (seconds the scheduler ran their live threads) of egressd (its
   * data-plane process included, and also given alone), of its helpers
   * (egressd-icmp, egressd-bfd) and of everything in its namespace (but the
   * benchmark's own element watcher).
   */
  async cpuSeconds(): Promise<{
    egressd: number;
    dataplane: number;
    icmpHelper: number;
    bfdHelper: number;
    namespace: number;
  }> {
    const r = await run(["ip", "netns", "pids", this.sb.ns("gw")]);
    const pids = r.stdout
      .split("\n")
      .filter(Boolean)
      .map(Number)
      .filter((p) => p !== this.watcher?.child.pid);
    const comm = (pid: number) => {
      try {
        return readFileSync(`/proc/${pid}/comm`, "utf8").trim();
      } catch {
        return "";
      }
    };
    const dp = this.dataplanePid();
    const dataplane = dp === undefined ? 0 : runtimeMs(dp) / 1000;
    return {
      egressd: runtimeMs(this.pid!) / 1000 + dataplane,
      dataplane,
      icmpHelper: pids.filter((p) => comm(p) === "egressd-icmp").reduce((s, p) => s + runtimeMs(p), 0) / 1000,
      bfdHelper: pids.filter((p) => comm(p) === "egressd-bfd").reduce((s, p) => s + runtimeMs(p), 0) / 1000,
      namespace: pids.reduce((s, p) => s + runtimeMs(p), 0) / 1000,
    };
  }

  /** A thread of egressd by what it is: V8's helpers are found as egressd finds them (lib/threads.ts). */
  threadName(tid: number): string {
    if (tid === this.pid) return "the main thread";
    this.v8Helpers ??= v8HelperThreads(this.o.nodeFlags ?? NODE_FLAGS, this.pid);
    if (this.v8Helpers.includes(tid)) return `a V8 helper thread (${tid})`;
    try {
      const stat = readFileSync(`/proc/${this.pid}/task/${tid}/stat`, "utf8");
      return `egressd's thread ${tid} (nice ${statFields(stat)[19 - 3]})`;
    } catch {
      // not a thread of egressd's own process
    }
    const dp = this.dataplanePid();
    if (dp !== undefined) {
      try {
        const stat = readFileSync(`/proc/${dp}/task/${tid}/stat`, "utf8");
        return `the data-plane process's thread ${tid} (nice ${statFields(stat)[19 - 3]})`;
      } catch {
        // not one of the data plane's either
      }
    }
    return `thread ${tid} (not egressd's)`;
  }
  private v8Helpers: number[] | undefined;

  stopLoopTrace(): void {
    this.loopTrace?.close();
    this.loopTrace = undefined;
  }

  async stop(): Promise<void> {
    this.stopLoopTrace();
    this.watcher?.child.kill();
    await this.bfdSpeaker?.kill();
    if (this.pid !== undefined) {
      // A clean stop first (egressd withdraws and removes what it programmed, and node writes what
      // --node-flags asked for, e.g. --cpu-prof); SIGKILL after 5 s.
      const signal = (sig: NodeJS.Signals | 0): boolean => {
        try {
          process.kill(this.pid!, sig);
          return true;
        } catch {
          return false; // gone
        }
      };
      if (signal("SIGTERM")) {
        const deadline = performance.now() + 5000;
        while (signal(0) && performance.now() < deadline) await sleep(50);
        signal("SIGKILL");
      }
    }
    await this.sb.cleanup();
    this.frr?.cleanup();
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/**
 * The event-loop delay of one /metrics scrape (NaN when absent). prom-client's
 * nodejs_eventloop_lag_* are the times between the samples of node's delay
 * monitor, each due one sampling interval after the last (20 ms before
 * f62a3f9, 50 ms since): the delay is what exceeds the interval. The
 * scrape's minimum, one interval when any sample was on time, is taken off.
 */
export function loopLag(fams: Map<string, Family>): { maxMs: number; p99Ms: number } {
  const ms = (name: string) => (value(fams, name) ?? NaN) * 1000;
  const interval = ms("nodejs_eventloop_lag_min_seconds");
  const off = Number.isFinite(interval) ? interval : 0;
  return {
    maxMs: Math.max(0, ms("nodejs_eventloop_lag_max_seconds") - off),
    p99Ms: Math.max(0, ms("nodejs_eventloop_lag_p99_seconds") - off),
  };
}
