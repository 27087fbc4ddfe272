// The lab's sequence-numbered TCP streams (containerlab/conn-streams.ts and
// its agent): the record codec and the sequence checker as functions, then
// the agent itself on 127.0.0.1, without namespaces. Nothing here is timed:
// the tests wait for what must happen, they do not bound how long it takes.
import test from "ava";
import { spawnSync } from "node:child_process";
import { once } from "node:events";
import { connect, createServer, type AddressInfo, type Server } from "node:net";
import {
  RECORD_SIZE,
  RecordReader,
  SequenceChecker,
  decodeRecord,
  encodeRecord,
  parseAgentArgs,
  type Decoded,
} from "../../containerlab/conn-stream-agent.js";
import { AGENT_PATH, startConnectionsIn, startStreamServerIn } from "../../containerlab/conn-streams.js";
import { sleep, waitFor } from "../../lib/wait.js";

const SEQS = [0, 1, 255, 256, 0xffffffff, 2 ** 32, 2 ** 32 + 1, Number.MAX_SAFE_INTEGER];

/** FNV-1a, 32 bits, written out here as the reference for the record's hash. */
function fnv1a(bytes: Uint8Array): number {
  let h = 0x811c9dc5;
  for (const b of bytes) h = Math.imul(h ^ b, 0x01000193) >>> 0;
  return h;
}

test("a record is the id and the sequence, big-endian, then a hash; it decodes to what was encoded", (t) => {
  const r = encodeRecord(0x01020304, 2 ** 32 + 5);
  t.is(r.length, RECORD_SIZE);
  t.deepEqual([...r.subarray(0, 12)], [1, 2, 3, 4, 0, 0, 0, 1, 0, 0, 0, 5]);
  t.is(r.readUInt32BE(12), fnv1a(r.subarray(0, 12)));
  for (const id of [0, 7, 0xffffffff]) {
    for (const seq of SEQS) t.deepEqual(decodeRecord(encodeRecord(id, seq)), { ok: true, id, seq });
  }
  // Into a larger buffer, at an offset.
  const buf = Buffer.alloc(3 * RECORD_SIZE);
  encodeRecord(9, 42, buf, RECORD_SIZE);
  t.deepEqual(decodeRecord(buf, RECORD_SIZE), { ok: true, id: 9, seq: 42 });
  t.throws(() => encodeRecord(-1, 0), { message: /u32/ });
  t.throws(() => encodeRecord(2 ** 32, 0), { message: /u32/ });
  t.throws(() => encodeRecord(0, -1), { message: /sequence/ });
  t.throws(() => encodeRecord(0, 1.5), { message: /sequence/ });
  t.throws(() => encodeRecord(0, 2 ** 53), { message: /sequence/ });
});

test("any changed byte makes a record bad, as does a sequence beyond 2^53", (t) => {
  const good = encodeRecord(77, 123456789);
  for (let i = 0; i < RECORD_SIZE; i++) {
    for (const flip of [0x01, 0x80, 0xff]) {
      const bad = Buffer.from(good);
      bad[i]! ^= flip;
      const d = decodeRecord(bad);
      t.false(d.ok, `byte ${i} ^ ${flip}`);
    }
  }
  t.deepEqual(decodeRecord(Buffer.alloc(RECORD_SIZE, 0xaa)).ok, false);
  t.like(decodeRecord(good.subarray(0, 10)), { ok: false });
  // A record hashed right whose sequence does not fit a double exactly.
  const big = encodeRecord(1, 0);
  big.writeUInt32BE(0x00200000, 4);
  big.writeUInt32BE(fnv1a(big.subarray(0, 12)), 12);
  t.deepEqual(decodeRecord(big), { ok: false, reason: "sequence beyond 2^53" });
});

/** Four records back to back, and what they decode to. */
function stream(): { bytes: Buffer; records: Decoded[] } {
  const records: Decoded[] = [0, 1, 2 ** 32, 3].map((seq, i) => ({ ok: true, id: 100 + i, seq }));
  const bytes = Buffer.concat(records.map((r) => (r.ok ? encodeRecord(r.id, r.seq) : Buffer.alloc(0))));
  return { bytes, records };
}

test("records split across chunks at any offset, or at any two, decode the same", (t) => {
  const { bytes, records } = stream();
  for (let a = 0; a <= bytes.length; a++) {
    for (let b = a; b <= bytes.length; b++) {
      const reader = new RecordReader();
      const got = [
        ...reader.push(bytes.subarray(0, a)),
        ...reader.push(bytes.subarray(a, b)),
        ...reader.push(bytes.subarray(b)),
      ];
      if (JSON.stringify(got) !== JSON.stringify(records) || reader.pending !== 0) {
        t.fail(`cut at ${a} and ${b}: ${JSON.stringify(got)}, ${reader.pending} bytes pending`);
        return;
      }
    }
  }
  // One byte at a time: each record comes out with its last byte, and only then.
  const reader = new RecordReader();
  for (let i = 0; i < bytes.length; i++) {
    const out = reader.push(bytes.subarray(i, i + 1));
    t.is(out.length, (i + 1) % RECORD_SIZE === 0 ? 1 : 0, `byte ${i}`);
    t.is(reader.pending, (i + 1) % RECORD_SIZE);
  }
  // A tail is held back until the rest comes.
  const tail = new RecordReader();
  t.is(tail.push(bytes.subarray(0, RECORD_SIZE + 5)).length, 1);
  t.is(tail.pending, 5);
  t.deepEqual(tail.push(Buffer.alloc(0)), []);
  t.deepEqual(tail.push(bytes.subarray(RECORD_SIZE + 5, 2 * RECORD_SIZE)), [records[1]!]);
});

test("the sequence checker: in order is fine; a gap is told once and skipped; a duplicate is told and ignored", (t) => {
  const s = new SequenceChecker();
  t.deepEqual(
    [0, 1, 2].map((n) => s.check(n)),
    [{ kind: "ok" }, { kind: "ok" }, { kind: "ok" }],
  );
  t.deepEqual(s.check(5), { kind: "gap", expected: 3, got: 5 });
  t.deepEqual(s.check(6), { kind: "ok" }, "after a gap, it follows on from the number received");
  t.deepEqual(s.check(6), { kind: "duplicate", expected: 7, got: 6 });
  t.deepEqual(s.check(2), { kind: "duplicate", expected: 7, got: 2 });
  t.deepEqual(s.check(7), { kind: "ok" }, "a duplicate does not move the expectation");
  t.deepEqual(new SequenceChecker().check(1), { kind: "gap", expected: 0, got: 1 }, "the first is 0");
});

test("the agent's arguments: what parses, and errors naming the bad argument", (t) => {
  t.deepEqual(parseAgentArgs(["server", "--listen", "[::]:0"]), {
    mode: "server",
    listen: { host: "::", port: 0 },
  });
  t.deepEqual(
    parseAgentArgs([
      "client",
      "--target=[2001:db8::1]:80",
      "--sources",
      "2001:db8::2, 2001:db8::3",
      "--count",
      "64",
    ]),
    {
      mode: "client",
      target: { host: "2001:db8::1", port: 80 },
      sources: ["2001:db8::2", "2001:db8::3"],
      count: 64,
      intervalMs: 10,
      idBase: 0,
    },
  );
  const ok = ["--target", "10.0.0.1:80", "--sources", "10.0.0.2"];
  const bad: [string[], RegExp][] = [
    [[], /no mode/],
    [["relay"], /mode "relay"/],
    [["server"], /needs --listen/],
    [["server", "--listen"], /--listen needs a value/],
    [["server", "--listen", "10.0.0.1"], /--listen: "10.0.0.1" is not HOST:PORT/],
    [["server", "--listen", "::1:80"], /--listen: .*IPv6 as \[addr\]:port/],
    [["server", "--listen", "[10.0.0.1]:80"], /--listen: brackets are for IPv6/],
    [["server", "--listen", "example.com:80"], /--listen: "example.com" is not an IP address/],
    [["server", "--listen", "10.0.0.1:65536"], /--listen: port 65536/],
    [["server", "--listen", "10.0.0.1:80", "--count", "1"], /unknown argument "--count" for server/],
    [["client", "--count", "1"], /needs --target/],
    [["client", "--target", "10.0.0.1:0", "--sources", "10.0.0.2", "--count", "1"], /--target: port 0/],
    [["client", "--target", "10.0.0.1:80", "--count", "1"], /needs --sources/],
    [["client", ...ok], /needs --count/],
    [["client", ...ok, "--count", "0"], /--count: "0"/],
    [["client", ...ok, "--count", "1e3"], /--count: "1e3"/],
    [["client", ...ok, "--count", "2", "--count", "3"], /--count is given twice/],
    [["client", ...ok, "--count", "1", "--interval-ms", "0"], /--interval-ms: "0"/],
    [["client", ...ok, "--count", "2", "--id-base", "4294967295"], /--id-base: .* past 2\^32/],
    [
      ["client", "--target", "10.0.0.1:80", "--sources", "10.0.0.2,,10.0.0.3", "--count", "1"],
      /--sources: an empty/,
    ],
    [
      ["client", "--target", "10.0.0.1:80", "--sources", "2001:db8::2", "--count", "1"],
      /--sources: .*IPv6 but/,
    ],
    [
      ["client", "--target", "10.0.0.1:80", "--sources", "pod", "--count", "1"],
      /--sources: "pod" is not an IP/,
    ],
  ];
  for (const [argv, message] of bad) t.throws(() => parseAgentArgs(argv), { message }, argv.join(" "));

  // The program itself: exit 2, the message and the usage on stderr.
  const r = spawnSync(process.execPath, [AGENT_PATH, "client", "--target", "10.0.0.1:80", "--count", "x"], {
    encoding: "utf8",
    timeout: 30_000,
  });
  t.is(r.status, 2);
  t.regex(r.stderr, /^conn-stream-agent: client needs --sources/);
  t.regex(r.stderr, /usage:/);
});

async function listening(server: Server): Promise<number> {
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  return (server.address() as AddressInfo).port;
}

test.serial(
  "8 connections through the echo server: all alive and echoed; the server stops, all are broken",
  async (t) => {
    const server = await startStreamServerIn(undefined, "127.0.0.1:0");
    t.teardown(() => server.stop().catch(() => undefined));
    t.true(server.port > 0);
    const conns = await startConnectionsIn(undefined, {
      target: `127.0.0.1:${server.port}`,
      sources: ["127.0.0.1", "127.0.0.2"],
      count: 8,
      intervalMs: 10,
    });
    t.teardown(() => conns.stop().catch(() => undefined));
    await sleep(1000);

    // Echoes in flight at the moment of a report are not lost ones: wait for a
    // report where each connection has at most two outstanding.
    const r = await waitFor("a report with the echoes caught up", async () => {
      const rep = await conns.report();
      return rep.connections.every((c) => c.sent - c.echoed <= 2) && rep;
    });
    t.is(r.alive, 8);
    t.is(r.broken, 0);
    t.deepEqual(
      r.connections.map((c) => [c.id, c.source]),
      [0, 1, 2, 3, 4, 5, 6, 7].map((i) => [i, i % 2 ? "127.0.0.2" : "127.0.0.1"]),
    );
    t.is(new Set(r.connections.map((c) => c.localPort)).size, 8);
    for (const c of r.connections) {
      t.true(c.localPort > 0);
      t.true(c.sent > 0 && c.echoed > 0 && c.echoed <= c.sent, JSON.stringify(c));
      t.true(c.maxStallMs > 0, "every echo takes some time");
      t.is(c.broken, null);
      t.is(c.brokenAt, null);
    }
    t.true(r.maxStallMs >= Math.max(...r.connections.map((c) => c.maxStallMs)));
    t.deepEqual(server.anomalies(), []);

    await conns.resetStalls();
    const before = Date.now();
    await server.stop();
    const after = await waitFor("every connection broken", async () => {
      const rep = await conns.report();
      return rep.broken === 8 && rep;
    });
    t.is(after.alive, 0);
    t.is(after.brokenSinceReset, 8);
    for (const c of after.connections) {
      t.regex(c.broken ?? "", /closed by the server|ECONNRESET|EPIPE/);
      t.true(c.brokenAt !== null && c.brokenAt >= before - 1000, "broken after the server stopped");
    }
    // Broken stays broken: nothing is sent on them any more, nor reconnected.
    await sleep(100);
    const final = await conns.stop();
    t.is(final.broken, 8);
    t.deepEqual(
      final.connections.map((c) => [c.sent, c.localPort, c.broken]),
      after.connections.map((c) => [c.sent, c.localPort, c.broken]),
    );
    t.deepEqual(server.anomalies(), []);
  },
);

test.serial("the client breaks a connection whose echoes skip a record, or are not records", async (t) => {
  // An echo server that drops the echo of record 2 on every connection.
  const skipping = createServer((socket) => {
    const reader = new RecordReader();
    socket.on("error", () => undefined);
    socket.on("data", (chunk: Buffer) => {
      for (const d of reader.push(chunk)) if (d.ok && d.seq !== 2) socket.write(encodeRecord(d.id, d.seq));
    });
  });
  // One that answers with bytes of no record.
  const garbage = createServer((socket) => {
    socket.on("error", () => undefined);
    socket.once("data", () => socket.write(Buffer.alloc(RECORD_SIZE, 0xaa)));
  });
  t.teardown(() => {
    skipping.close();
    garbage.close();
  });
  for (const [server, reason] of [
    [skipping, /^sequence error: gap, expected 2, got 3$/],
    [garbage, /^bad record: checksum/],
  ] as const) {
    const port = await listening(server);
    const conns = await startConnectionsIn(undefined, {
      target: `127.0.0.1:${port}`,
      sources: ["127.0.0.1"],
      count: 2,
      idBase: 40,
    });
    t.teardown(() => conns.stop().catch(() => undefined));
    const r = await waitFor("both broken", async () => {
      const rep = await conns.report();
      return rep.broken === 2 && rep;
    });
    for (const c of r.connections) t.regex(c.broken ?? "", reason);
    t.deepEqual((await conns.stop()).broken, 2);
  }
});

test.serial(
  "the server echoes every record, reports gaps, duplicates and bad records, and closes on a bad one",
  async (t) => {
    const server = await startStreamServerIn(undefined, "127.0.0.1:0");
    t.teardown(() => server.stop().catch(() => undefined));
    const socket = connect({ host: "127.0.0.1", port: server.port });
    t.teardown(() => socket.destroy());
    await once(socket, "connect");
    const echoes = new RecordReader();
    const got: Decoded[] = [];
    socket.on("data", (chunk: Buffer) => got.push(...echoes.push(chunk)));
    const closed = once(socket, "close");

    // Records 0, 1, 3, 3 of connection 7, the second half of the stream in small pieces.
    const bytes = Buffer.concat([0, 1, 3, 3].map((s) => encodeRecord(7, s)));
    socket.write(bytes.subarray(0, 21));
    for (let at = 21; at < bytes.length; at += 5) socket.write(bytes.subarray(at, at + 5));
    await waitFor("four echoes", () => got.length === 4);
    t.deepEqual(
      got.map((d) => (d.ok ? [d.id, d.seq] : d.reason)),
      [
        [7, 0],
        [7, 1],
        [7, 3],
        [7, 3],
      ],
    );
    const anomalies = () => server.anomalies().map((l) => JSON.parse(l) as Record<string, unknown>);
    await waitFor("two anomalies", () => anomalies().length === 2);
    t.like(anomalies()[0], { event: "anomaly", kind: "gap", id: 7, expected: 2, got: 3 });
    t.like(anomalies()[1], { event: "anomaly", kind: "duplicate", id: 7, expected: 4, got: 3 });

    // Another connection's id on this one is a bad record: the server ends the connection.
    socket.write(encodeRecord(8, 4));
    await closed;
    await waitFor("a third anomaly", () => anomalies().length === 3);
    t.like(anomalies()[2], { kind: "bad-record", reason: "connection id changed from 7 to 8", after: 4 });
    await server.stop();
  },
);

test.serial("the library rejects with the agent's own words when it cannot start", async (t) => {
  const probe = createServer();
  const port = await listening(probe);
  await new Promise((r) => probe.close(r));
  // Nothing listens there any more.
  await t.throwsAsync(
    startConnectionsIn(undefined, { target: `127.0.0.1:${port}`, sources: ["127.0.0.1"], count: 3 }),
    { message: /connections \(3 to 127\.0\.0\.1:\d+\): .*ECONNREFUSED/ },
  );
  await t.throwsAsync(
    startConnectionsIn(undefined, { target: "10.0.0.1", sources: ["10.0.0.2"], count: 1 }),
    {
      message: /exited with code 2 .*\n.*--target: "10\.0\.0\.1" is not HOST:PORT/,
    },
  );
  // A port taken already.
  const taken = createServer();
  t.teardown(() => taken.close());
  const used = await listening(taken);
  await t.throwsAsync(startStreamServerIn(undefined, `127.0.0.1:${used}`), {
    message: new RegExp(`^stream server: --listen 127\\.0\\.0\\.1:${used}: listen EADDRINUSE`),
  });
});
