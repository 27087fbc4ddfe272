// Long-lived TCP streams through the lab, for the tests and benchmarks that
// check connections NATed by a gateway survive its failure (failover.ts
// measures the same failures on pings, which have no connection to lose).
//
// The work is done by conn-stream-agent.js, started in a node's namespace
// (`ip netns exec NS node conn-stream-agent.js ...`): a server that echoes
// numbered records, and a client holding N connections that send one record
// per interval each. We talk to an agent over its stdin (commands) and
// stdout (one JSON object a line); its stderr goes into our errors.
import { spawn, type ChildProcess } from "node:child_process";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { inNetns } from "../lib/exec.js";
import type { Lab } from "./runner.js";

export interface ConnStats {
  /** The id its records carry (--id-base + its index). */
  id: number;
  /** The local address it is bound to, and the port the kernel picked. */
  source: string;
  localPort: number;
  /** Records sent, and echoes received back in order. */
  sent: number;
  echoed: number;
  /**
   * The longest time, since the last resetStalls(), with records outstanding
   * and no echo coming back (ms). A stall still running counts up to now.
   */
  maxStallMs: number;
  /** Why it broke (e.g. "read ECONNRESET", "closed by the server", a sequence error), or null. */
  broken: string | null;
  /** When it broke, wall-clock ms (Date.now() scale), or null. */
  brokenAt: number | null;
}

export interface StreamsReport {
  connections: ConnStats[];
  alive: number;
  broken: number;
  /** Connections that broke since the last resetStalls() (since the start before the first). */
  brokenSinceReset: number;
  /** The largest maxStallMs of the connections. */
  maxStallMs: number;
}

export interface StreamServer {
  /** The port it listens on (what the kernel picked when asked for port 0). */
  port: number;
  /** The server's anomaly lines so far (gaps, duplicates, bad or truncated records), as JSON text. */
  anomalies(): string[];
  /** Stops the server, closing every connection it holds. */
  stop(): Promise<void>;
}

export interface Connections {
  report(): Promise<StreamsReport>;
  /** Restarts the stall measurement, so that each failure is measured alone. */
  resetStalls(): Promise<void>;
  /** The final report; the agent has exited when it resolves. */
  stop(): Promise<StreamsReport>;
}

export interface ConnectionsOptions {
  /** HOST:PORT, IPv6 as [addr]:port. */
  target: string;
  /** Local addresses; connection i binds sources[i % sources.length]. */
  sources: string[];
  count: number;
  /** Each connection sends a record this often (default 10 ms). */
  intervalMs?: number;
  /** The first connection id (default 0): distinct bases tell clients apart on one server. */
  idBase?: number;
}

/** The compiled agent, next to this module. */
export const AGENT_PATH = fileURLToPath(new URL("./conn-stream-agent.js", import.meta.url));

/** How long an agent may take to start (node in a namespace, on a loaded machine). */
const START_TIMEOUT_MS = 20_000;
/** How long an agent may take to answer a command. */
const ANSWER_TIMEOUT_MS = 10_000;
/** How long a stopped agent may take to exit before it is killed. */
const EXIT_TIMEOUT_MS = 3_000;
/** How much of an agent's stderr our errors quote. */
const STDERR_KEEP = 8 * 1024;

type Message = { event?: unknown; [key: string]: unknown };

interface Waiter {
  match: (m: Message) => boolean;
  resolve: (m: Message) => void;
  reject: (e: Error) => void;
}

/** One agent process and its line protocol. */
class Agent {
  private readonly child: ChildProcess;
  private stderr = "";
  private waiters: Waiter[] = [];
  private ended: string | undefined;
  /** Resolves once the agent exited and its output was read. */
  readonly closed: Promise<void>;
  /** Whether we asked it to stop (so that its exit is no failure). */
  stopping = false;

  constructor(
    private readonly what: string,
    netns: string | undefined,
    args: readonly string[],
    onMessage: (m: Message, line: string) => void = () => undefined,
  ) {
    const [file, ...rest] = inNetns(netns, [process.execPath, AGENT_PATH, ...args]) as [string, ...string[]];
    this.child = spawn(file, rest, { stdio: ["pipe", "pipe", "pipe"] });
    // Writes to an agent that died fail with EPIPE; its exit is what we report.
    this.child.stdin?.on("error", () => undefined);
    this.child.stderr?.setEncoding("utf8");
    this.child.stderr?.on("data", (s: string) => {
      this.stderr = (this.stderr + s).slice(-STDERR_KEEP);
    });
    createInterface({ input: this.child.stdout! }).on("line", (line) => {
      let m: Message;
      try {
        m = JSON.parse(line) as Message;
      } catch {
        return; // not ours to read (nothing but JSON is printed there)
      }
      if (typeof m !== "object" || m === null) return;
      onMessage(m, line);
      const i = this.waiters.findIndex((w) => w.match(m));
      if (i >= 0) this.waiters.splice(i, 1)[0]!.resolve(m);
    });
    // 'close' comes after stdout was read to its end, so a last line (the
    // final report) reaches its waiter before the others are failed.
    this.closed = new Promise((resolve) => {
      this.child.on("error", (e) => {
        this.end(`could not start: ${e.message}`);
        resolve();
      });
      this.child.on("close", (code, signal) => {
        this.end(signal ? `ended by signal ${signal}` : `exited with code ${code}`);
        resolve();
      });
    });
  }

  private end(why: string): void {
    if (this.ended !== undefined) return;
    this.ended = why;
    for (const w of this.waiters.splice(0)) w.reject(this.error(`${why} before it answered`));
  }

  /** Whether it ended, and how, or undefined while it runs. */
  get exit(): string | undefined {
    return this.ended;
  }

  error(why: string): Error {
    const err = this.stderr.trim();
    return new Error(`${this.what}: ${why}${err ? `\n${err}` : ""}`);
  }

  /** The next message `match` accepts; rejects if the agent ends first or after `timeoutMs`. */
  next(match: (m: Message) => boolean, timeoutMs: number, what: string): Promise<Message> {
    if (this.ended !== undefined) return Promise.reject(this.error(`${this.ended}, no ${what}`));
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiters = this.waiters.filter((w) => w !== waiter);
        reject(this.error(`no ${what} within ${timeoutMs} ms`));
      }, timeoutMs);
      const waiter: Waiter = {
        match,
        resolve: (m) => {
          clearTimeout(timer);
          resolve(m);
        },
        reject: (e) => {
          clearTimeout(timer);
          reject(e);
        },
      };
      this.waiters.push(waiter);
    });
  }

  /** Sends a command and waits for the message that answers it. */
  ask(command: string, match: (m: Message) => boolean, what: string): Promise<Message> {
    const answer = this.next(match, ANSWER_TIMEOUT_MS, what);
    this.child.stdin?.write(`${command}\n`);
    return answer;
  }

  /** Stops it (a `stop` line and the end of stdin), killing it if it does not exit in time. */
  async stop(): Promise<void> {
    this.stopping = true;
    if (this.ended === undefined) {
      this.child.stdin?.end("stop\n");
      const timer = setTimeout(() => this.child.kill("SIGKILL"), EXIT_TIMEOUT_MS);
      await this.closed;
      clearTimeout(timer);
    }
  }

  /** Kills it at once (a start that failed). */
  kill(): void {
    this.stopping = true;
    this.child.kill("SIGKILL");
  }
}

/** Waits for the agent's ready line; on failure kills it and rejects with what it said. */
async function started(agent: Agent, event: string): Promise<Message> {
  let ready: Message;
  try {
    ready = await agent.next(
      (m) => m.event === event || m.event === "error",
      START_TIMEOUT_MS,
      `"${event}" line`,
    );
  } catch (e) {
    agent.kill();
    throw e;
  }
  if (ready.event === "error") {
    agent.kill();
    await agent.closed; // for the whole of its stderr
    throw agent.error(String(ready.error));
  }
  return ready;
}

/** Starts a stream server on `node`, listening on `listen` (HOST:PORT; port 0 picks one). */
export function startStreamServer(lab: Lab, node: string, listen: string): Promise<StreamServer> {
  return startStreamServerIn(lab.ns(node), listen, `stream server on ${node}`);
}

/**
 * startStreamServer() in namespace `netns`, or in ours when undefined (the
 * unit tests run the agent on 127.0.0.1).
 */
export async function startStreamServerIn(
  netns: string | undefined,
  listen: string,
  what = "stream server",
): Promise<StreamServer> {
  const anomalies: string[] = [];
  const agent = new Agent(what, netns, ["server", "--listen", listen], (m, line) => {
    if (m.event === "anomaly") anomalies.push(line);
  });
  const ready = await started(agent, "listening");
  let stopped: Promise<void> | undefined;
  return {
    port: Number(ready.port),
    anomalies: () => [...anomalies],
    stop() {
      stopped ??= (async () => {
        // An agent that died on its own is a failure the caller must hear of.
        const died = agent.exit;
        await agent.stop();
        if (died !== undefined) throw agent.error(`${died} while it served`);
      })();
      return stopped;
    },
  };
}

/** Opens `opts.count` connections from `node` to `opts.target`, each sending a record per interval. */
export function startConnections(lab: Lab, node: string, opts: ConnectionsOptions): Promise<Connections> {
  return startConnectionsIn(lab.ns(node), opts, `connections from ${node}`);
}

/** startConnections() in namespace `netns`, or in ours when undefined. */
export async function startConnectionsIn(
  netns: string | undefined,
  opts: ConnectionsOptions,
  what = "connections",
): Promise<Connections> {
  const args = [
    "client",
    "--target",
    opts.target,
    "--sources",
    opts.sources.join(","),
    "--count",
    String(opts.count),
    "--interval-ms",
    String(opts.intervalMs ?? 10),
  ];
  if (opts.idBase !== undefined) args.push("--id-base", String(opts.idBase));
  const agent = new Agent(`${what} (${opts.count} to ${opts.target})`, netns, args);
  await started(agent, "connected");
  let stopped: Promise<StreamsReport> | undefined;
  return {
    async report() {
      return toReport(agent, await agent.ask("report", (m) => m.event === "report", "report"));
    },
    async resetStalls() {
      await agent.ask("reset-stalls", (m) => m.event === "stalls-reset", "answer to reset-stalls");
    },
    stop() {
      stopped ??= (async () => {
        const last = agent.next(
          (m) => m.event === "report" && m.final === true,
          ANSWER_TIMEOUT_MS,
          "final report",
        );
        // Do not leave the rejection unhandled if stop() below is what fails.
        last.catch(() => undefined);
        await agent.stop();
        return toReport(agent, await last);
      })();
      return stopped;
    },
  };
}

/** The report in an agent's line, checked for the fields we read. */
function toReport(agent: Agent, m: Message): StreamsReport {
  const list = m.connections;
  if (!Array.isArray(list)) throw agent.error(`a report without connections: ${JSON.stringify(m)}`);
  const connections = list.map((c: Record<string, unknown>) => ({
    id: Number(c.id),
    source: String(c.source),
    localPort: Number(c.localPort),
    sent: Number(c.sent),
    echoed: Number(c.echoed),
    maxStallMs: Number(c.maxStallMs),
    broken: typeof c.broken === "string" ? c.broken : null,
    brokenAt: typeof c.brokenAt === "number" ? c.brokenAt : null,
  }));
  return {
    connections,
    alive: Number(m.alive),
    broken: Number(m.broken),
    brokenSinceReset: Number(m.brokenSinceReset),
    maxStallMs: Number(m.maxStallMs),
  };
}
