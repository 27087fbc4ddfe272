// egressd-spawn (native/spawner.c) and its client (lib/spawner.ts): the
// frames, and the helper itself running real commands (it is built by
// `npm run build`, as the tests' command does first).
import test from "ava";
import { AnswerReader, decodeAnswers, encodeRequest, Spawner, SPAWN_HELPER } from "../../lib/spawner.js";
import { CommandError, run, runCommandsViaHelper, tryRun } from "../../lib/exec.js";

function answerFrame(id: number, status: number, flags: number, out: string, err: string): Buffer {
  const o = Buffer.from(out);
  const e = Buffer.from(err);
  const head = Buffer.alloc(24);
  head.writeUInt32LE(20 + o.length + e.length, 0);
  head.writeUInt32LE(id, 4);
  head.writeInt32LE(status, 8);
  head.writeUInt32LE(flags, 12);
  head.writeUInt32LE(o.length, 16);
  head.writeUInt32LE(e.length, 20);
  return Buffer.concat([head, o, e]);
}

test("a request frame: lengths, then arguments and environment NUL-terminated, then the input", (t) => {
  const f = encodeRequest(7, { argv: ["nft", "-f", "-"], timeoutMs: 1500.2, env: { A: "b=c" }, input: "é" });
  const body = f.subarray(24).toString("utf8");
  t.is(f.readUInt32LE(0), f.length - 4);
  t.deepEqual(
    [1, 2, 3, 4, 5].map((i) => f.readUInt32LE(i * 4)),
    [7, 1501, 3, 1, 2],
  );
  t.is(body, "nft\0-f\0-\0A=b=c\0é");
  t.throws(() => encodeRequest(1, { argv: ["a\0b"], timeoutMs: 1 }), { message: /NUL/ });
  t.throws(() => encodeRequest(1, { argv: ["a"], timeoutMs: 1, env: { "A=B": "x" } }), { message: /name/ });
});

test("answers are taken whole, however the bytes are split; a frame that does not add up is an error", (t) => {
  const two = Buffer.concat([answerFrame(1, 0, 0, "out", ""), answerFrame(2, -9, 1, "", "err")]);
  for (let cut = 0; cut <= two.length; cut++) {
    const a = decodeAnswers(two.subarray(0, cut));
    const b = decodeAnswers(Buffer.concat([a.rest, two.subarray(cut)]));
    const all = [...a.answers, ...b.answers];
    t.deepEqual(
      all.map((x) => [x.id, x.status, x.flags, x.stdout.toString(), x.stderr.toString()]),
      [
        [1, 0, 0, "out", ""],
        [2, -9, 1, "", "err"],
      ],
    );
    t.is(b.rest.length, 0);
  }
  const bad = answerFrame(3, 0, 0, "x", "");
  bad.writeUInt32LE(5, 20); // stdout length beyond the frame
  t.throws(() => decodeAnswers(bad), { message: /do not add up/ });
});

test("the reader gives each answer once, whole, for any chunking, and joins chunks only when a frame is whole", (t) => {
  const big = "x".repeat(200_000);
  const frames = Buffer.concat([
    answerFrame(1, 0, 0, "out", ""),
    answerFrame(2, 1, 0, big, "e"),
    answerFrame(3, -9, 1, "", ""),
  ]);
  const expected = [
    [1, 0, 0, 3, 0],
    [2, 1, 0, big.length, 1],
    [3, -9, 1, 0, 0],
  ];
  const chunkings = [1, 3, 4, 5, 23, 24, 25, 4096, 65536, frames.length];
  for (const size of chunkings) {
    const reader = new AnswerReader();
    const got: number[][] = [];
    for (let at = 0; at < frames.length; at += size) {
      for (const a of reader.push(frames.subarray(at, at + size)))
        got.push([a.id, a.status, a.flags, a.stdout.length, a.stderr.length]);
    }
    t.deepEqual(got, expected, `chunks of ${size} bytes`);
  }
  // One byte at a time, the reader joins only when a frame is whole (twice per frame: at its
  // length word, then at its end), not at every byte.
  let joins = 0;
  const concat = Buffer.concat;
  Buffer.concat = ((list: readonly Uint8Array[], n?: number) => {
    joins++;
    return concat(list, n);
  }) as typeof Buffer.concat;
  try {
    const reader = new AnswerReader();
    let answers = 0;
    for (let at = 0; at < frames.length; at++) answers += reader.push(frames.subarray(at, at + 1)).length;
    t.is(answers, 3);
    t.true(joins <= 6, `${joins} joins for 3 frames`);
  } finally {
    Buffer.concat = concat;
  }
  const bad = new AnswerReader();
  const frame = answerFrame(1, 0, 0, "out", "");
  frame.writeUInt32LE(99, 16); // a stdout length that does not add up
  t.throws(() => bad.push(frame), { message: /do not add up/ });
});

test("the helper is built", (t) => {
  t.true(Spawner.available(), `${SPAWN_HELPER} is missing: npm run build`);
});

test("the helper runs commands: output, exit code, input, environment, timeout, signal, a missing program", async (t) => {
  const s = new Spawner();
  try {
    const ok = await s.run({
      argv: ["sh", "-c", 'printf "%s|%s" "$X" "$(cat)"; echo oops >&2; exit 4'],
      timeoutMs: 5000,
      env: { X: "ü=1" },
      input: "in",
    });
    t.deepEqual(ok, { code: 4, signal: null, timedOut: false, stdout: "ü=1|in", stderr: "oops\n" });
    const slow = await s.run({ argv: ["sleep", "10"], timeoutMs: 100 });
    t.true(slow.timedOut);
    t.is(slow.signal, 9);
    const killed = await s.run({ argv: ["sh", "-c", "kill -TERM $$"], timeoutMs: 5000 });
    t.deepEqual([killed.code, killed.signal, killed.timedOut], [null, 15, false]);
    await t.throwsAsync(s.run({ argv: ["/nonexistent/egressd-test"], timeoutMs: 1000 }), {
      message: /errno 2/,
    });
    // Large outputs and inputs, and more commands at once than it runs together.
    const big = await s.run({ argv: ["cat"], timeoutMs: 10_000, input: "y".repeat(3_000_000) });
    t.is(big.stdout.length, 3_000_000);
    const many = await Promise.all(
      Array.from({ length: 150 }, (_, i) => s.run({ argv: ["echo", String(i)], timeoutMs: 10_000 })),
    );
    t.deepEqual(
      many.map((r) => r.stdout),
      Array.from({ length: 150 }, (_, i) => `${i}\n`),
    );
  } finally {
    s.close();
  }
});

test("run() through the helper fails as it does without it: CommandError with the code and what was printed", async (t) => {
  t.true(runCommandsViaHelper());
  t.deepEqual(await run(["echo", "hi"]), { stdout: "hi\n", stderr: "" });
  const e = await t.throwsAsync(run(["sh", "-c", "echo no >&2; exit 2"]), { instanceOf: CommandError });
  t.is(e?.code, 2);
  t.regex(e?.message ?? "", /exit 2.*\n.*no/s);
  t.is((await tryRun(["sh", "-c", "exit 3"])).code, 3);
  const late = await t.throwsAsync(run(["sleep", "5"], { timeoutMs: 100 }), { instanceOf: CommandError });
  t.is(late?.code, null);
  t.regex(late?.stderr ?? "", /killed after 100 ms/);
});

test("a helper that ended answers what it had with an error, and takes no more", async (t) => {
  const s = new Spawner();
  const pending = s.run({ argv: ["sleep", "10"], timeoutMs: 20_000 });
  s.close(); // end of its input: it kills what runs and exits
  await t.throwsAsync(pending, { message: /egressd-spawn/ });
  t.true(s.ended);
  await t.throwsAsync(s.run({ argv: ["true"], timeoutMs: 1000 }));
});
