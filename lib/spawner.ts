// The client of egressd-spawn (native/spawner.c): commands started by a small
// helper process instead of by egressd, which must not fork once it is large
// (see the helper's header and docs/dataplane.md). One helper per thread that
// runs commands, started while the process is still small.
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync } from "node:fs";
import { fileURLToPath } from "node:url";

export const SPAWN_HELPER = fileURLToPath(new URL("../native/egressd-spawn", import.meta.url));

export interface SpawnedResult {
  /** Exit code, or null when a signal ended the command. */
  code: number | null;
  signal: number | null;
  timedOut: boolean;
  stdout: string;
  stderr: string;
}

export interface SpawnRequest {
  argv: readonly string[];
  timeoutMs: number;
  env?: Record<string, string>;
  input?: string;
}

/** Encodes one request (native/spawner.c's protocol). Exported for tests. */
export function encodeRequest(id: number, r: SpawnRequest): Buffer {
  const strings = (list: readonly string[]) =>
    list.map((s) => {
      if (s.includes("\0"))
        throw new Error(`a command's argument or environment holds a NUL byte: ${JSON.stringify(s)}`);
      return Buffer.from(`${s}\0`, "utf8");
    });
  const env = Object.entries(r.env ?? {}).map(([k, v]) => {
    if (k === "" || k.includes("=")) throw new Error(`bad environment variable name ${JSON.stringify(k)}`);
    return `${k}=${v}`;
  });
  const input = Buffer.from(r.input ?? "", "utf8");
  const body = [...strings(r.argv), ...strings(env), input];
  const head = Buffer.alloc(24);
  const length = 20 + body.reduce((n, b) => n + b.length, 0);
  head.writeUInt32LE(length, 0);
  head.writeUInt32LE(id, 4);
  head.writeUInt32LE(Math.max(0, Math.min(Math.ceil(r.timeoutMs), 0xffffffff)), 8);
  head.writeUInt32LE(r.argv.length, 12);
  head.writeUInt32LE(env.length, 16);
  head.writeUInt32LE(input.length, 20);
  return Buffer.concat([head, ...body]);
}

export interface Answer {
  id: number;
  status: number;
  flags: number;
  stdout: Buffer;
  stderr: Buffer;
}

/** Splits complete answers off the front of `buf`; returns them and what is left. */
export function decodeAnswers(buf: Buffer): { answers: Answer[]; rest: Buffer } {
  const answers: Answer[] = [];
  let at = 0;
  while (buf.length - at >= 4) {
    const n = buf.readUInt32LE(at);
    if (n < 20) throw new Error(`egressd-spawn: an answer of ${n} bytes is shorter than its header`);
    if (buf.length - at - 4 < n) break;
    const p = at + 4;
    const outLen = buf.readUInt32LE(p + 12);
    const errLen = buf.readUInt32LE(p + 16);
    if (20 + outLen + errLen !== n) throw new Error("egressd-spawn: an answer's lengths do not add up");
    answers.push({
      id: buf.readUInt32LE(p),
      status: buf.readInt32LE(p + 4),
      flags: buf.readUInt32LE(p + 8),
      stdout: buf.subarray(p + 20, p + 20 + outLen),
      stderr: buf.subarray(p + 20 + outLen, p + n),
    });
    at = p + n;
  }
  return { answers, rest: buf.subarray(at) };
}

/**
 * Gathers the helper's output into answers. Chunks are kept in a list and
 * joined once a whole frame has arrived, not appended one by one: a 3 MB
 * answer (`nft -j list table`) arrives in 48 chunks of 64 KiB, and joining at
 * every chunk copied about 75 MB to read it.
 */
export class AnswerReader {
  private chunks: Buffer[] = [];
  private have = 0;
  /** Bytes needed before decoding can give an answer: the length word, then the whole frame. */
  private need = 4;

  /** Takes one chunk; returns the answers it completed. Throws on a frame that does not add up. */
  push(chunk: Buffer): Answer[] {
    this.chunks.push(chunk);
    this.have += chunk.length;
    if (this.have < this.need) return [];
    const all = this.chunks.length === 1 ? this.chunks[0]! : Buffer.concat(this.chunks, this.have);
    const { answers, rest } = decodeAnswers(all);
    this.chunks = rest.length ? [rest] : [];
    this.have = rest.length;
    this.need = rest.length >= 4 ? 4 + rest.readUInt32LE(0) : 4;
    return answers;
  }
}

const TIMED_OUT = 1;
const NOT_STARTED = 2;

/** One egressd-spawn process and the commands it runs. */
export class Spawner {
  private child: ChildProcess | undefined;
  private nextId = 1;
  private readonly waiting = new Map<
    number,
    { resolve: (r: SpawnedResult) => void; reject: (e: Error) => void }
  >();
  private readonly reader = new AnswerReader();
  private gone: Error | undefined;

  constructor(private readonly path = SPAWN_HELPER) {}

  /** Whether the helper is built (a bare `tsc` leaves it out). */
  static available(path = SPAWN_HELPER): boolean {
    return existsSync(path);
  }

  /** Starts the helper now (else: with the first command). */
  start(): void {
    if (this.child || this.gone) return;
    const child = spawn(this.path, [], { stdio: ["pipe", "pipe", "inherit"] });
    this.child = child;
    child.stdout!.on("data", (chunk: Buffer) => {
      let answers: Answer[];
      try {
        answers = this.reader.push(chunk);
      } catch (e) {
        this.fail(e as Error);
        child.kill("SIGKILL");
        return;
      }
      for (const a of answers) this.settle(a);
    });
    child.on("error", (e) => this.fail(new Error(`egressd-spawn: ${e.message}`)));
    child.on("exit", (code, signal) =>
      this.fail(new Error(`egressd-spawn exited (${signal ?? `code ${code}`}) with commands unanswered`)),
    );
    child.stdin!.on("error", () => undefined); // seen as the exit above
    this.idle();
  }

  private settle(a: Answer): void {
    const w = this.waiting.get(a.id);
    if (!w) return;
    this.waiting.delete(a.id);
    this.idle();
    if (a.flags & NOT_STARTED) {
      w.reject(
        Object.assign(new Error(`could not start the command: errno ${a.status}`), { errno: a.status }),
      );
      return;
    }
    w.resolve({
      code: a.status >= 0 ? a.status : null,
      signal: a.status < 0 ? -a.status : null,
      timedOut: (a.flags & TIMED_OUT) !== 0,
      stdout: a.stdout.toString("utf8"),
      stderr: a.stderr.toString("utf8"),
    });
  }

  private fail(e: Error): void {
    this.gone ??= e;
    this.child = undefined;
    for (const w of this.waiting.values()) w.reject(e);
    this.waiting.clear();
  }

  /** A helper with no command running keeps no Node.js process alive. */
  private idle(): void {
    const c = this.child;
    if (!c) return;
    const busy = this.waiting.size > 0;
    for (const h of [c, c.stdout, c.stdin] as { ref(): void; unref(): void }[]) {
      if (busy) h.ref();
      else h.unref();
    }
  }

  /** Runs one command to its end. Rejects only when it could not be run (the helper is gone, or exec failed). */
  run(r: SpawnRequest): Promise<SpawnedResult> {
    this.start();
    if (this.gone || !this.child)
      return Promise.reject(this.gone ?? new Error("egressd-spawn is not running"));
    const id = this.nextId;
    this.nextId = (this.nextId % 0xfffffffe) + 1;
    const frame = encodeRequest(id, r);
    return new Promise((resolve, reject) => {
      this.waiting.set(id, { resolve, reject });
      this.idle();
      this.child!.stdin!.write(frame);
    });
  }

  /** Whether the helper has ended (its commands fall back to being started by this process). */
  get ended(): boolean {
    return this.gone !== undefined;
  }

  close(): void {
    this.child?.stdin?.end();
    this.child = undefined;
    this.gone ??= new Error("egressd-spawn was closed");
  }
}
