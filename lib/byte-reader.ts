// Reads a byte stream in pieces of known length: the data-plane process takes
// each config file's bytes off its stdin this way, the length given in the
// call's message (daemon/dataplane-process.ts). Readable.read(n) looks made
// for this, but when the bytes had arrived before it was called for more than
// the stream's buffer holds, no 'readable' came, and it waited forever.
import type { Readable } from "node:stream";

export class ByteReader {
  private readonly chunks: Buffer[] = [];
  private buffered = 0;
  private ended: string | undefined;
  private wanted: { n: number; resolve: (b: Buffer) => void; reject: (e: Error) => void } | undefined;

  constructor(stream: Readable) {
    stream.on("data", (chunk: Buffer) => {
      this.chunks.push(chunk);
      this.buffered += chunk.length;
      this.serve();
    });
    const end = (why: string) => {
      this.ended ??= why;
      this.serve();
    };
    stream.on("end", () => end("the stream ended"));
    stream.on("error", (e: Error) => end(`the stream failed: ${e.message}`));
    stream.on("close", () => end("the stream was closed"));
  }

  /**
   * The next `n` bytes, once they have all arrived. One caller at a time:
   * calls must not overlap. Rejects when the stream ends first.
   */
  take(n: number): Promise<Buffer> {
    if (!Number.isInteger(n) || n < 0) return Promise.reject(new Error(`${n} is not a length in bytes`));
    if (this.wanted) return Promise.reject(new Error("a take is already waiting"));
    return new Promise<Buffer>((resolve, reject) => {
      this.wanted = { n, resolve, reject };
      this.serve();
    });
  }

  private serve(): void {
    const w = this.wanted;
    if (!w) return;
    if (this.buffered >= w.n) {
      this.wanted = undefined;
      w.resolve(this.shift(w.n));
    } else if (this.ended !== undefined) {
      this.wanted = undefined;
      w.reject(new Error(`${this.ended} ${w.n - this.buffered} bytes short of ${w.n}`));
    }
  }

  /** The first `n` bytes buffered, removed (`n` ≤ buffered). */
  private shift(n: number): Buffer {
    this.buffered -= n;
    const first = this.chunks[0];
    if (first && first.length === n) return this.chunks.shift()!;
    if (first && first.length > n) {
      this.chunks[0] = first.subarray(n);
      return first.subarray(0, n);
    }
    const out = Buffer.allocUnsafe(n);
    let at = 0;
    while (at < n) {
      const c = this.chunks[0]!;
      const part = Math.min(c.length, n - at);
      c.copy(out, at, 0, part);
      at += part;
      if (part === c.length) this.chunks.shift();
      else this.chunks[0] = c.subarray(part);
    }
    return out;
  }
}
