// lib/byte-reader.ts: pieces of known length off a stream, however the
// stream cut them into chunks; and the data-plane process's last words
// (daemon/dataplane-worker.ts, whyEnded).
import test from "ava";
import fc from "fast-check";
import { PassThrough } from "node:stream";
import { ByteReader } from "../../lib/byte-reader.js";
import { whyEnded } from "../../daemon/dataplane-worker.js";

test("pieces come back whole and in order, however the stream was chunked", async (t) => {
  await fc.assert(
    fc.asyncProperty(
      fc.array(fc.uint8Array({ maxLength: 300 }), { maxLength: 8 }),
      fc.array(fc.integer({ min: 1, max: 97 }), { minLength: 1, maxLength: 10 }),
      fc.boolean(),
      async (pieces, cuts, takeFirst) => {
        const stream = new PassThrough();
        const reader = new ByteReader(stream);
        const all = Buffer.concat(pieces);
        const write = () => {
          // The bytes, in chunks of the sizes in `cuts` (over and over).
          for (let at = 0, i = 0; at < all.length; i++) {
            const n = cuts[i % cuts.length]!;
            stream.write(all.subarray(at, at + n));
            at += n;
          }
        };
        if (!takeFirst) write();
        const taken: Promise<Buffer>[] = [];
        let chain = Promise.resolve();
        for (const p of pieces) {
          const got = chain.then(() => reader.take(p.length));
          chain = got.then(() => undefined);
          taken.push(got);
        }
        if (takeFirst) write();
        const got = await Promise.all(taken);
        t.deepEqual(
          got.map((b) => Buffer.from(b).toString("hex")),
          pieces.map((p) => Buffer.from(p).toString("hex")),
        );
      },
    ),
  );
});

test("a take the stream ends before is refused, naming how short it fell", async (t) => {
  const stream = new PassThrough();
  const reader = new ByteReader(stream);
  stream.end(Buffer.from("abc"));
  t.is((await reader.take(2)).toString(), "ab");
  await t.throwsAsync(reader.take(5), { message: "the stream ended 4 bytes short of 5" });
  await t.throwsAsync(reader.take(-1), { message: "-1 is not a length in bytes" });
});

test("overlapping takes are refused", async (t) => {
  const stream = new PassThrough();
  const reader = new ByteReader(stream);
  const first = reader.take(3);
  await t.throwsAsync(reader.take(1), { message: "a take is already waiting" });
  stream.write("xyz");
  t.is((await first).toString(), "xyz");
});

test("why the data-plane process ended, from its stderr and exit", (t) => {
  const oom =
    "<--- Last few GCs --->\nFATAL ERROR: Reached heap limit Allocation failed - JavaScript heap out of memory\n";
  t.is(whyEnded(oom, "", null, "SIGABRT", 32), "it ran out of its 32 MB heap (--dataplane-heap-mb)");
  t.is(whyEnded(oom, "", null, "SIGABRT", undefined), "it ran out of its 1024 MB heap (--dataplane-heap-mb)");
  const uncaught = [
    "file:///x/dist/daemon/dataplane.js:10",
    "        throw new Error('boom');",
    "",
    "TypeError: cannot read properties of undefined (reading 'x')",
    "    at f (file:///x/dist/daemon/dataplane.js:10:15)",
    "",
    "Node.js v20.20.2",
    "",
  ].join("\n");
  t.is(
    whyEnded(uncaught, "", 1, null, undefined),
    "TypeError: cannot read properties of undefined (reading 'x') (exit code 1)",
  );
  t.is(whyEnded("", "", null, "SIGKILL", undefined), "signal SIGKILL");
  t.is(whyEnded("", "spawn /usr/bin/node EAGAIN", null, null, undefined), "spawn /usr/bin/node EAGAIN");
});
