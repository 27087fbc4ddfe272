// conn-stream-agent: long-lived TCP streams whose every byte is accounted for,
// run inside a lab node (`ip netns exec NS node conn-stream-agent.js ...`).
// containerlab/conn-streams.ts starts it and reads its JSON lines.
//
// A ping stream (failover.ts) shows when packets stop flowing; it cannot show
// that a NATed TCP connection survived a gateway failure, because ICMP has no
// connection to lose. Here each pod-side connection sends numbered records
// and the server echoes them: a connection whose NAT state was lost gets a
// reset (or hangs), and one that survives resumes where it stopped, with the
// stall measured on the echoes.
//
// The module is also imported by the unit tests for the record codec, the
// sequence checker and the argument parser, so it only runs when it is the
// program itself, and it imports nothing but Node's own modules (types aside).
import { realpathSync } from "node:fs";
import { connect, createServer, isIP, type AddressInfo, type Socket } from "node:net";
import { performance } from "node:perf_hooks";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import type { ConnStats, StreamsReport } from "./conn-streams.js";

// --- Records ---------------------------------------------------------------
//
// A record is 16 bytes, big-endian: the connection id (u32), the sequence
// number (u64; only values up to 2^53 are ever written) and an FNV-1a hash of
// those 12 bytes. The hash is there so that a stream that lost its framing
// (bytes missing or repeated mid-record) is reported as such instead of as a
// string of nonsense sequence numbers: every FNV-1a step is a bijection, so
// any single changed byte changes the hash.

export const RECORD_SIZE = 16;

function fnv1a(buf: Buffer, start: number, end: number): number {
  let h = 0x811c9dc5;
  for (let i = start; i < end; i++) h = Math.imul(h ^ buf[i]!, 0x01000193);
  return h >>> 0;
}

/** Writes record (id, seq) into `into` at `at` (a new buffer by default). */
export function encodeRecord(id: number, seq: number, into = Buffer.alloc(RECORD_SIZE), at = 0): Buffer {
  if (!Number.isInteger(id) || id < 0 || id > 0xffffffff)
    throw new RangeError(`record id ${id} is not a u32`);
  if (!Number.isSafeInteger(seq) || seq < 0) throw new RangeError(`record sequence ${seq} is out of range`);
  into.writeUInt32BE(id, at);
  into.writeUInt32BE(Math.floor(seq / 2 ** 32), at + 4);
  into.writeUInt32BE(seq >>> 0, at + 8);
  into.writeUInt32BE(fnv1a(into, at, at + 12), at + 12);
  return into;
}

export type Decoded = { ok: true; id: number; seq: number } | { ok: false; reason: string };

/** Reads the record at `at` of `buf` (which holds at least RECORD_SIZE bytes from there). */
export function decodeRecord(buf: Buffer, at = 0): Decoded {
  if (buf.length - at < RECORD_SIZE) return { ok: false, reason: `${buf.length - at} bytes, not a record` };
  const sum = buf.readUInt32BE(at + 12);
  const want = fnv1a(buf, at, at + 12);
  if (sum !== want) {
    return { ok: false, reason: `checksum ${sum.toString(16)}, expected ${want.toString(16)}` };
  }
  const hi = buf.readUInt32BE(at + 4);
  if (hi > 0x1fffff) return { ok: false, reason: "sequence beyond 2^53" };
  return { ok: true, id: buf.readUInt32BE(at), seq: hi * 2 ** 32 + buf.readUInt32BE(at + 8) };
}

const NO_BYTES = Buffer.alloc(0);

/**
 * Cuts a byte stream into records, whatever the chunking TCP gives: a record
 * split across chunks is held until its last byte arrives.
 */
export class RecordReader {
  private partial: Buffer = NO_BYTES;

  /** Bytes of an incomplete record held back. */
  get pending(): number {
    return this.partial.length;
  }

  push(chunk: Buffer): Decoded[] {
    const out: Decoded[] = [];
    let at = 0;
    if (this.partial.length > 0) {
      const need = RECORD_SIZE - this.partial.length;
      if (chunk.length < need) {
        this.partial = Buffer.concat([this.partial, chunk]);
        return out;
      }
      out.push(decodeRecord(Buffer.concat([this.partial, chunk.subarray(0, need)])));
      this.partial = NO_BYTES;
      at = need;
    }
    for (; at + RECORD_SIZE <= chunk.length; at += RECORD_SIZE) out.push(decodeRecord(chunk, at));
    // A copy: the remainder is a few bytes, and a view would keep the whole chunk alive.
    if (at < chunk.length) this.partial = Buffer.from(chunk.subarray(at));
    return out;
  }
}

export type SeqVerdict =
  | { kind: "ok" }
  | { kind: "gap"; expected: number; got: number }
  | { kind: "duplicate"; expected: number; got: number };

const SEQ_OK: SeqVerdict = { kind: "ok" };

/**
 * Checks that sequence numbers come as 0, 1, 2, ... After a gap it expects
 * the number after the one received, so that one lost stretch is reported
 * once rather than on every later record; a duplicate (a number already
 * seen) leaves the expectation alone.
 */
export class SequenceChecker {
  /** The number expected next. */
  next = 0;

  check(seq: number): SeqVerdict {
    const expected = this.next;
    if (seq === expected) {
      this.next++;
      return SEQ_OK;
    }
    if (seq > expected) {
      this.next = seq + 1;
      return { kind: "gap", expected, got: seq };
    }
    return { kind: "duplicate", expected, got: seq };
  }
}

// --- Arguments -------------------------------------------------------------

export const USAGE = `usage:
  conn-stream-agent server --listen HOST:PORT
  conn-stream-agent client --target HOST:PORT --sources A[,B...] --count N [--interval-ms MS] [--id-base K]
HOST is an IP address; IPv6 is written [addr]:port. PORT 0 (server) picks a free port.
Commands on stdin: report, reset-stalls (client), stop. The end of stdin stops either mode.`;

/** A bad command line: the message names the argument. */
export class UsageError extends Error {
  override name = "UsageError";
}

export interface Endpoint {
  host: string;
  port: number;
}

export interface ServerArgs {
  mode: "server";
  listen: Endpoint;
}

export interface ClientArgs {
  mode: "client";
  target: Endpoint;
  sources: string[];
  count: number;
  intervalMs: number;
  idBase: number;
}

/** The most connections one client opens (each takes an ephemeral port per source). */
export const MAX_COUNT = 10_000;

export function formatEndpoint(host: string, port: number): string {
  return host.includes(":") ? `[${host}]:${port}` : `${host}:${port}`;
}

/** Parses HOST:PORT (IPv6 as [addr]:port) for argument `flag`. */
export function parseEndpoint(flag: string, text: string, minPort = 1): Endpoint {
  const m = /^\[([^\]]+)\]:(\d+)$/.exec(text) ?? /^([^:[\]]+):(\d+)$/.exec(text);
  if (!m) {
    const hint = (text.match(/:/g) ?? []).length > 1 && !text.startsWith("[") ? " (IPv6 as [addr]:port)" : "";
    throw new UsageError(`${flag}: "${text}" is not HOST:PORT${hint}`);
  }
  const host = m[1]!;
  if (isIP(host) === 0) throw new UsageError(`${flag}: "${host}" is not an IP address`);
  if (text.startsWith("[") && isIP(host) !== 6) throw new UsageError(`${flag}: brackets are for IPv6 only`);
  const port = Number(m[2]);
  if (port < minPort || port > 65535)
    throw new UsageError(`${flag}: port ${m[2]} is not in ${minPort}-65535`);
  return { host, port };
}

function parseInteger(flag: string, text: string, min: number, max: number): number {
  const n = /^\d+$/.test(text) ? Number(text) : NaN;
  if (!Number.isSafeInteger(n) || n < min || n > max) {
    throw new UsageError(`${flag}: "${text}" is not an integer in ${min}-${max}`);
  }
  return n;
}

const FLAGS = {
  server: ["--listen"],
  client: ["--target", "--sources", "--count", "--interval-ms", "--id-base"],
} as const;

/** Parses the agent's command line (without node and the script); throws UsageError. */
export function parseAgentArgs(argv: readonly string[]): ServerArgs | ClientArgs {
  const [mode, ...rest] = argv;
  if (mode !== "server" && mode !== "client") {
    throw new UsageError(
      mode === undefined ? "no mode: server or client" : `mode "${mode}" is neither server nor client`,
    );
  }
  const known: readonly string[] = FLAGS[mode];
  const values = new Map<string, string>();
  for (let i = 0; i < rest.length; i++) {
    const arg = rest[i]!;
    const eq = arg.indexOf("=");
    const flag = arg.startsWith("--") && eq > 0 ? arg.slice(0, eq) : arg;
    if (!known.includes(flag)) throw new UsageError(`unknown argument "${arg}" for ${mode}`);
    if (values.has(flag)) throw new UsageError(`${flag} is given twice`);
    let value: string | undefined;
    if (eq > 0 && arg.startsWith("--")) value = arg.slice(eq + 1);
    else value = rest[++i];
    if (value === undefined || value === "") throw new UsageError(`${flag} needs a value`);
    values.set(flag, value);
  }
  const need = (flag: string, what: string): string => {
    const v = values.get(flag);
    if (v === undefined) throw new UsageError(`${mode} needs ${flag} ${what}`);
    return v;
  };
  if (mode === "server") return { mode, listen: parseEndpoint("--listen", need("--listen", "HOST:PORT"), 0) };

  const target = parseEndpoint("--target", need("--target", "HOST:PORT"));
  const family = isIP(target.host);
  const sources = need("--sources", "A[,B...]")
    .split(",")
    .map((s) => s.trim());
  for (const s of sources) {
    if (s === "") throw new UsageError(`--sources: an empty address in the list`);
    const f = isIP(s);
    if (f === 0) throw new UsageError(`--sources: "${s}" is not an IP address`);
    if (f !== family) throw new UsageError(`--sources: ${s} is IPv${f} but the target is IPv${family}`);
  }
  const count = parseInteger("--count", need("--count", "N"), 1, MAX_COUNT);
  const intervalMs = parseInteger("--interval-ms", values.get("--interval-ms") ?? "10", 1, 60_000);
  const idBase = parseInteger("--id-base", values.get("--id-base") ?? "0", 0, 0xffffffff);
  if (idBase + count - 1 > 0xffffffff) {
    throw new UsageError(`--id-base: ${idBase} + --count ${count} runs past 2^32 connection ids`);
  }
  return { mode, target, sources, count, intervalMs, idBase };
}

// --- Running ---------------------------------------------------------------

function emit(line: object): void {
  process.stdout.write(`${JSON.stringify(line)}\n`);
}

/** Exits once what was written to stdout has gone out. */
function exitAfterOutput(code: number): void {
  process.stdout.write("", () => process.exit(code));
  // Should stdout be stuck (a reader that went away), do not hang on it.
  setTimeout(() => process.exit(code), 2000).unref();
}

let failed = false;

/**
 * A failure that ends the agent (exit 2): a JSON error line for the reader,
 * the message on stderr for a human. Only the first is told: the failures
 * that follow it (the other connections of a client) say nothing new.
 */
function fail(message: string): void {
  if (failed) return;
  failed = true;
  emit({ event: "error", error: message });
  process.stderr.write(`conn-stream-agent: ${message}\n`);
  exitAfterOutput(2);
}

/** Calls `stop` on a `stop` line, at the end of stdin (the parent went away), and on SIGTERM/SIGINT. */
function onCommands(commands: Record<string, () => void>, stop: () => void): void {
  const rl = createInterface({ input: process.stdin });
  rl.on("line", (raw) => {
    const line = raw.trim();
    if (line === "") return;
    if (line === "stop") return stop();
    const command = commands[line];
    if (command) return command();
    emit({ event: "error", error: `unknown command "${line}"` });
  });
  rl.on("close", stop);
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
}

function runServer(args: ServerArgs): void {
  const sockets = new Set<Socket>();
  let connections = 0;
  let stopping = false;

  const server = createServer({ noDelay: true, keepAlive: false }, (socket) => {
    const conn = ++connections; // the server's own number, to tell lines apart
    const remote = formatEndpoint(socket.remoteAddress ?? "?", socket.remotePort ?? 0);
    const reader = new RecordReader();
    const seqs = new SequenceChecker();
    let id: number | undefined;
    const counts = { records: 0, gaps: 0, duplicates: 0, bad: 0 };
    let error: string | null = null;
    sockets.add(socket);
    socket.setNoDelay(true);
    socket.setKeepAlive(false);

    const anomaly = (kind: string, detail: Record<string, unknown>) =>
      emit({ event: "anomaly", kind, conn, id: id ?? null, remote, ...detail });

    socket.on("data", (chunk: Buffer) => {
      const decoded = reader.push(chunk);
      const echo = Buffer.alloc(decoded.length * RECORD_SIZE);
      let n = 0;
      let badRecord = false;
      for (const d of decoded) {
        if (!d.ok || (id !== undefined && d.id !== id)) {
          counts.bad++;
          const reason = d.ok ? `connection id changed from ${id} to ${d.id}` : d.reason;
          anomaly("bad-record", { reason, after: counts.records });
          badRecord = true;
          break;
        }
        id ??= d.id;
        counts.records++;
        const v = seqs.check(d.seq);
        if (v.kind === "gap") counts.gaps++;
        if (v.kind === "duplicate") counts.duplicates++;
        if (v.kind !== "ok") anomaly(v.kind, { expected: v.expected, got: v.got });
        encodeRecord(d.id, d.seq, echo, n++ * RECORD_SIZE);
      }
      if (n > 0) socket.write(echo.subarray(0, n * RECORD_SIZE));
      // Past a bad record the framing cannot be trusted: end the connection, so
      // that the client sees it broken too.
      if (badRecord) socket.destroy();
    });
    socket.on("error", (e) => (error = e.message));
    socket.on("close", () => {
      sockets.delete(socket);
      // A connection that ended cleanly mid-record lost bytes; one that was
      // reset loses its tail by definition, and its error says so.
      if (reader.pending > 0 && error === null && !stopping) {
        anomaly("truncated", { bytes: reader.pending, after: counts.records });
      }
      emit({ event: "close", conn, id: id ?? null, remote, ...counts, error });
    });
  });

  server.on("error", (e) =>
    fail(`--listen ${formatEndpoint(args.listen.host, args.listen.port)}: ${e.message}`),
  );
  server.listen({ host: args.listen.host, port: args.listen.port }, () => {
    const a = server.address() as AddressInfo;
    emit({ event: "listening", host: a.address, port: a.port });
  });

  onCommands({}, () => {
    if (stopping) return;
    stopping = true;
    // Closing the connections is the point of stopping a server in a test:
    // every client must see its connection end.
    for (const s of sockets) s.destroy();
    server.close(() => exitAfterOutput(0));
    setTimeout(() => exitAfterOutput(0), 2000).unref();
  });
}

/** Send times of the records not yet echoed, oldest first. */
class TimeQueue {
  private items: number[] = [];
  private head = 0;

  get length(): number {
    return this.items.length - this.head;
  }

  push(t: number): void {
    this.items.push(t);
  }

  peek(): number | undefined {
    return this.items[this.head];
  }

  shift(): number | undefined {
    const t = this.items[this.head];
    if (t === undefined) return undefined;
    this.head++;
    // Drop the consumed front now and then, not on every shift.
    if (this.head >= 1024 && this.head * 2 >= this.items.length) {
      this.items = this.items.slice(this.head);
      this.head = 0;
    }
    return t;
  }

  clear(): void {
    this.items = [];
    this.head = 0;
  }
}

interface ClientConn {
  id: number;
  source: string;
  socket: Socket;
  localPort: number;
  sent: number;
  echoed: number;
  outstanding: TimeQueue;
  reader: RecordReader;
  seqs: SequenceChecker;
  /** performance.now() of the last echo (0: none yet). */
  lastEchoAt: number;
  /** Longest stall since the last reset-stalls, ms. */
  maxStall: number;
  broken: string | null;
  /** When it broke: performance.now(), and wall-clock ms for the report. */
  brokenPerf: number | null;
  brokenAt: number | null;
}

const round3 = (ms: number) => Math.round(ms * 1000) / 1000;

function runClient(args: ClientArgs): void {
  const conns: ClientConn[] = [];
  let allConnected = false;
  let stopping = false;
  let timer: NodeJS.Timeout | undefined;
  // performance.now() of the last reset-stalls: stalls are measured from there on.
  let resetAt = 0;

  // A stall is time during which records were outstanding and no echo came:
  // it runs from the later of the previous echo and the send of the oldest
  // record still outstanding (and of the last reset-stalls), to the next echo.
  // Time with nothing outstanding is not a stall, so the figure does not
  // depend on the sending interval; an outage makes it about the outage.
  const openStallStart = (c: ClientConn): number | undefined => {
    const oldest = c.outstanding.peek();
    return oldest === undefined ? undefined : Math.max(oldest, c.lastEchoAt, resetAt);
  };

  const breakConn = (c: ClientConn, reason: string) => {
    if (c.broken !== null || stopping) return;
    const now = performance.now();
    const start = openStallStart(c);
    if (start !== undefined) c.maxStall = Math.max(c.maxStall, now - start);
    c.outstanding.clear();
    c.broken = reason;
    c.brokenPerf = now;
    c.brokenAt = Math.round(performance.timeOrigin + now);
    emit({ event: "broken", id: c.id, source: c.source, localPort: c.localPort, reason });
    c.socket.destroy();
  };

  const onEchoes = (c: ClientConn, chunk: Buffer) => {
    if (c.broken !== null) return;
    const now = performance.now();
    for (const d of c.reader.push(chunk)) {
      if (!d.ok) return breakConn(c, `bad record: ${d.reason}`);
      if (d.id !== c.id) return breakConn(c, `bad record: echo of connection ${d.id}, this is ${c.id}`);
      const v = c.seqs.check(d.seq);
      if (v.kind !== "ok")
        return breakConn(c, `sequence error: ${v.kind}, expected ${v.expected}, got ${v.got}`);
      const start = openStallStart(c);
      if (start === undefined) return breakConn(c, `sequence error: echo of ${d.seq}, which was never sent`);
      c.maxStall = Math.max(c.maxStall, now - start);
      c.outstanding.shift();
      c.lastEchoAt = now;
      c.echoed++;
    }
  };

  const report = (final: boolean) => {
    const now = performance.now();
    const connections: ConnStats[] = conns.map((c) => {
      const start = c.broken === null ? openStallStart(c) : undefined;
      const stall = start === undefined ? c.maxStall : Math.max(c.maxStall, now - start);
      return {
        id: c.id,
        source: c.source,
        localPort: c.localPort,
        sent: c.sent,
        echoed: c.echoed,
        maxStallMs: round3(stall),
        broken: c.broken,
        brokenAt: c.brokenAt,
      };
    });
    const broken = connections.filter((c) => c.broken !== null).length;
    const out: StreamsReport & { event: string; final: boolean } = {
      event: "report",
      final,
      connections,
      alive: connections.length - broken,
      broken,
      brokenSinceReset: conns.filter((c) => c.brokenPerf !== null && c.brokenPerf >= resetAt).length,
      maxStallMs: connections.reduce((m, c) => Math.max(m, c.maxStallMs), 0),
    };
    emit(out);
  };

  const tick = () => {
    const now = performance.now();
    for (const c of conns) {
      if (c.broken !== null || c.sent > Number.MAX_SAFE_INTEGER - 1) continue;
      c.socket.write(encodeRecord(c.id, c.sent));
      c.outstanding.push(now);
      c.sent++;
    }
  };

  const connectTimer = setTimeout(() => {
    const up = conns.filter((c) => c.localPort !== 0).length;
    fail(
      `--target ${formatEndpoint(args.target.host, args.target.port)}: ${up} of ${args.count} connections up after 5 s`,
    );
  }, 5000);

  for (let i = 0; i < args.count; i++) {
    const source = args.sources[i % args.sources.length]!;
    const socket = connect({
      host: args.target.host,
      port: args.target.port,
      localAddress: source,
      noDelay: true,
      keepAlive: false,
    });
    const c: ClientConn = {
      id: args.idBase + i,
      source,
      socket,
      localPort: 0,
      sent: 0,
      echoed: 0,
      outstanding: new TimeQueue(),
      reader: new RecordReader(),
      seqs: new SequenceChecker(),
      lastEchoAt: 0,
      maxStall: 0,
      broken: null,
      brokenPerf: null,
      brokenAt: null,
    };
    conns.push(c);
    socket.once("connect", () => {
      c.localPort = socket.localPort ?? 0;
      socket.setNoDelay(true);
      socket.setKeepAlive(false);
      if (!allConnected && !failed && conns.every((x) => x.localPort !== 0)) {
        allConnected = true;
        clearTimeout(connectTimer);
        emit({ event: "connected", count: args.count });
        timer = setInterval(tick, args.intervalMs);
        tick();
      }
    });
    socket.on("data", (chunk: Buffer) => onEchoes(c, chunk));
    socket.on("error", (e) => {
      if (allConnected || stopping) return breakConn(c, e.message);
      fail(
        `connection ${c.id} from ${source} to ${formatEndpoint(args.target.host, args.target.port)}: ${e.message}`,
      );
    });
    // Never reconnected: a connection that ends stays broken, which is what a test looks for.
    socket.on("end", () => breakConn(c, "closed by the server"));
    socket.on("close", () => {
      if (allConnected || stopping) return breakConn(c, "closed");
      fail(`connection ${c.id} from ${source} closed before all were up`);
    });
  }

  onCommands(
    {
      report: () => report(false),
      "reset-stalls": () => {
        resetAt = performance.now();
        for (const c of conns) c.maxStall = 0;
        emit({ event: "stalls-reset" });
      },
    },
    () => {
      if (stopping || failed) return;
      report(true);
      stopping = true;
      clearInterval(timer);
      clearTimeout(connectTimer);
      for (const c of conns) c.socket.destroy();
      exitAfterOutput(0);
    },
  );
}

export function main(argv: readonly string[]): void {
  let args: ServerArgs | ClientArgs;
  try {
    args = parseAgentArgs(argv);
  } catch (e) {
    if (!(e instanceof UsageError)) throw e;
    process.stderr.write(`conn-stream-agent: ${e.message}\n${USAGE}\n`);
    process.exit(2);
  }
  // A reader that went away must not kill the agent with an unhandled EPIPE
  // before it has stopped its connections.
  process.stdout.on("error", () => process.exit(1));
  if (args.mode === "server") runServer(args);
  else runClient(args);
}

/** Whether this module is the program node was started with (not imported). */
function isMain(): boolean {
  const script = process.argv[1];
  if (!script) return false;
  try {
    return realpathSync(script) === realpathSync(fileURLToPath(import.meta.url));
  } catch {
    return false;
  }
}

if (isMain()) main(process.argv.slice(2));
