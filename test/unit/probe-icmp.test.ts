// The ICMP probe's parsing of ping output, with a fake `ping` that prints a
// script of lines (no root, no network).
import test from "ava";
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { IcmpProbe, eachLine, pingArgv, type IcmpProbeOptions } from "../../health/probes/icmp.js";
import { NO_STEAL } from "../../health/steal.js";
import { PassThrough } from "node:stream";
import type { ProbeResult } from "../../core/probe-state.js";

const dir = mkdtempSync(join(tmpdir(), "egressd-fakeping-"));
test.after.always(() => rmSync(dir, { recursive: true, force: true }));

let n = 0;
/** A fake ping: prints `lines` (with "sleep S" entries pausing), then sleeps or exits. */
function fakePing(lines: string[], end: "sleep" | "exit" = "sleep"): string {
  const path = join(dir, `ping${n++}.sh`);
  const body = lines.map((l) => (l.startsWith("sleep ") ? l : `printf '%s\\n' '${l}'`)).join("\n");
  writeFileSync(path, `#!/bin/sh\n${body}\n${end === "sleep" ? "exec sleep 60" : "exit 2"}\n`);
  chmodSync(path, 0o755);
  return path;
}

const reply = (seq: number, ms: number) =>
  `[1.0] 64 bytes from 10.0.0.2: icmp_seq=${seq} ttl=64 time=${ms} ms`;
const noAnswer = (seq: number) => `[1.0] no answer yet for icmp_seq=${seq}`;

type Timed = ProbeResult & { t: number };

/** A probe on a machine without CPU steal: its timeouts are judged, however the machine is doing. */
const icmpProbe = (o: IcmpProbeOptions) => new IcmpProbe({ steal: NO_STEAL, ...o });

/** A clock that never moves: no timeout is ever late, so a loaded machine cannot make a result inconclusive. */
const PINNED = () => 0;

/**
 * Runs the probe until it has delivered `count` results (or `maxMs` passed),
 * then `extraMs` more to catch anything unexpected. Times are relative to the
 * start; compare them with each other, not with the start, as a loaded
 * machine may take a while to start the fake ping.
 */
async function collect(probe: IcmpProbe, count: number, extraMs = 0, maxMs = 5000): Promise<Timed[]> {
  const out: Timed[] = [];
  const t0 = Date.now();
  probe.start((r) => out.push({ ...r, t: Date.now() - t0 }));
  while (out.length < count && Date.now() - t0 < maxMs) await new Promise((r) => setTimeout(r, 5));
  if (extraMs) await new Promise((r) => setTimeout(r, extraMs));
  probe.close();
  return out;
}

test("argv: ping -n -O -D -i, family, source, netns", (t) => {
  t.deepEqual(pingArgv({ target: "10.0.0.1", intervalMs: 100, timeoutMs: 300 }), [
    "ping",
    "-n",
    "-O",
    "-D",
    "-i",
    "0.100",
    "-4",
    "10.0.0.1",
  ]);
  t.deepEqual(
    pingArgv({ target: "fd00::1", intervalMs: 250, timeoutMs: 300, sourceAddress: "eth1", netns: "ns1" }),
    ["ip", "netns", "exec", "ns1", "ping", "-n", "-O", "-D", "-i", "0.250", "-6", "-I", "eth1", "fd00::1"],
  );
});

test("replies are successes with their RTT; an unanswered seq fails at send + timeout", async (t) => {
  const ping = fakePing([reply(1, 0.05), reply(2, 0.07), noAnswer(3)]);
  const probe = icmpProbe({ target: "10.0.0.2", intervalMs: 100, timeoutMs: 300, ping, now: PINNED });
  const out = await collect(probe, 3);
  t.is(out.length, 3, JSON.stringify(out));
  t.like(out[0], { ok: true, rttMs: 0.05 });
  t.like(out[1], { ok: true, rttMs: 0.07 });
  t.false(out[2]!.ok);
  // "no answer" comes one interval after the send; the failure 200 ms after that.
  t.true(out[2]!.t - out[1]!.t >= 180, JSON.stringify(out));
  t.regex(out[2]!.reason!, /no reply within 300 ms/);
});

test("a reply that arrives after 'no answer yet' but within the timeout is a success", async (t) => {
  const ping = fakePing([noAnswer(1), "sleep 0.05", reply(1, 150)]);
  const probe = icmpProbe({ target: "10.0.0.2", intervalMs: 100, timeoutMs: 300, ping, now: PINNED });
  const out = await collect(probe, 1, 100);
  t.deepEqual(
    out.map((r) => r.ok),
    [true],
  );
});

test("a reply slower than the timeout is a failure, reported once", async (t) => {
  const ping = fakePing([noAnswer(1), reply(1, 2040), reply(2, 0.1)]);
  const probe = icmpProbe({ target: "10.0.0.2", intervalMs: 100, timeoutMs: 300, ping, now: PINNED });
  const out = await collect(probe, 2, 100);
  t.deepEqual(
    out.map((r) => r.ok),
    [false, true],
  );
  t.regex(out[0]!.reason!, /2040 ms/);
});

test("timeout <= interval: 'no answer yet' fails at once", async (t) => {
  const ping = fakePing([noAnswer(1), noAnswer(2)]);
  const probe = icmpProbe({ target: "10.0.0.2", intervalMs: 100, timeoutMs: 100, ping, now: PINNED });
  const out = await collect(probe, 2);
  t.deepEqual(
    out.map((r) => r.ok),
    [false, false],
  );
});

test("timeout = interval: a reply ping prints right after 'no answer yet' counts by its own time", async (t) => {
  // One write each, as ping late for a CPU prints them: the line, then the reply already received.
  const ping = fakePing([`${noAnswer(1)}\n${reply(1, 0.2)}`, `${noAnswer(2)}\n${reply(2, 150)}`]);
  const probe = icmpProbe({ target: "10.0.0.2", intervalMs: 100, timeoutMs: 100, ping, now: PINNED });
  const out = await collect(probe, 2, 50);
  t.deepEqual(
    out.map((r) => [r.ok, r.ok ? undefined : r.reason]),
    [
      [true, undefined],
      [false, "ping 10.0.0.2: reply after 150 ms"],
    ],
  );
});

test("a newer reply makes an older pending seq moot (results stay in order)", async (t) => {
  const ping = fakePing([noAnswer(1), reply(2, 0.1)]);
  const probe = icmpProbe({ target: "10.0.0.2", intervalMs: 100, timeoutMs: 300, ping, now: PINNED });
  // Seq 1 would have failed 200 ms after its "no answer" line; wait past that.
  const out = await collect(probe, 1, 300);
  t.deepEqual(
    out.map((r) => r.ok),
    [true],
  );
});

test("repeated 'no answer yet' for the same seq (ping cannot send) fails each time", async (t) => {
  const ping = fakePing([noAnswer(5), noAnswer(5), noAnswer(5), noAnswer(5)]);
  const probe = icmpProbe({ target: "10.0.0.2", intervalMs: 100, timeoutMs: 300, ping, now: PINNED });
  const out = await collect(probe, 3, 50);
  t.is(out.filter((r) => !r.ok).length, 3);
});

test("unreachable replies fail", async (t) => {
  const ping = fakePing(["[1.0] From 10.0.0.1 icmp_seq=1 Destination Host Unreachable"]);
  const probe = icmpProbe({ target: "10.0.0.2", intervalMs: 100, timeoutMs: 300, ping, now: PINNED });
  const out = await collect(probe, 1, 50);
  t.is(out.length, 1);
  t.regex(out[0]!.reason!, /Destination Host Unreachable/);
});

test("a silent ping fails at interval + timeout, then every interval", async (t) => {
  const ping = fakePing([reply(1, 0.1)]);
  const probe = icmpProbe({ target: "10.0.0.2", intervalMs: 100, timeoutMs: 200, ping, now: PINNED });
  const out = await collect(probe, 4);
  t.true(out[0]!.ok);
  const fails = out.filter((r) => !r.ok);
  t.is(fails.length, 3, JSON.stringify(out));
  t.true(fails[0]!.t - out[0]!.t >= 280, JSON.stringify(out));
  t.true(fails[1]!.t - fails[0]!.t >= 90, JSON.stringify(out));
  t.regex(fails[0]!.reason!, /silent/);
});

test("replies push the silence back: none is reported while they come, one follows the last", async (t) => {
  // Replies every 100 ms for two seconds; silence is interval + timeout = 1 s.
  const lines = [];
  for (let seq = 1; seq <= 20; seq++) lines.push(reply(seq, 0.1), "sleep 0.1");
  const probe = icmpProbe({
    target: "10.0.0.2",
    intervalMs: 100,
    timeoutMs: 900,
    ping: fakePing(lines),
    now: PINNED,
  });
  const out = await collect(probe, 21, 0, 8000);
  t.is(out.length, 21, JSON.stringify(out));
  t.true(
    out.slice(0, 20).every((r) => r.ok),
    JSON.stringify(out),
  );
  t.regex(out[20]!.reason!, /ping silent within 900 ms/);
  t.true(out[20]!.t - out[19]!.t >= 980, JSON.stringify(out));
});

test("silence measured across a stall of the loop is inconclusive; the next silence fails", async (t) => {
  const ping = fakePing([reply(1, 0.1)]);
  let clock = 0;
  const probe = icmpProbe({
    target: "10.0.0.2",
    intervalMs: 100,
    timeoutMs: 200,
    ping,
    now: () => clock,
  });
  const out: ProbeResult[] = [];
  probe.start((r) => {
    out.push(r);
    // After the first result, the loop "stalls" for 10 s by this clock.
    if (out.length === 1) clock += 10_000;
  });
  for (const t0 = Date.now(); out.length < 3 && Date.now() - t0 < 5000; )
    await new Promise((r) => setTimeout(r, 5));
  probe.close();
  t.true(out[0]!.ok);
  t.true(out[1]!.inconclusive, JSON.stringify(out));
  t.regex(out[1]!.reason!, /no verdict, the event loop stalled/);
  t.false(out[2]!.ok);
  t.falsy(out[2]!.inconclusive);
  t.regex(out[2]!.reason!, /ping silent/);
});

test("a dying ping is reported and restarted with a backoff", async (t) => {
  const ping = fakePing([reply(1, 0.1)], "exit");
  const probe = icmpProbe({ target: "10.0.0.2", intervalMs: 100, timeoutMs: 200, ping, now: PINNED });
  const out: Timed[] = [];
  probe.start((r) => out.push({ ...r, t: 0 }));
  const end = Date.now() + 5000;
  while (probe.spawns < 2 && Date.now() < end) await new Promise((r) => setTimeout(r, 5));
  probe.close();
  t.true(probe.spawns >= 2, `spawns ${probe.spawns}`);
  t.true(
    out.some((r) => !r.ok && /exited|not running/.test(r.reason ?? "")),
    JSON.stringify(out),
  );
});

test("16-bit icmp_seq wrap-around keeps working", async (t) => {
  const ping = fakePing([reply(65534, 0.1), reply(65535, 0.1), reply(0, 0.1), reply(1, 0.1)]);
  const probe = icmpProbe({ target: "10.0.0.2", intervalMs: 100, timeoutMs: 200, ping, now: PINNED });
  const out = await collect(probe, 4);
  t.deepEqual(
    out.map((r) => r.ok),
    [true, true, true, true],
  );
});

test("lines split across reads are joined; a line without its newline waits for it", async (t) => {
  const s = new PassThrough();
  const lines: string[] = [];
  eachLine(s, (l) => lines.push(l));
  for (const chunk of [
    "64 bytes from 10.0.0.2: icmp_",
    "seq=1 time=0.1 ms\nno answer yet",
    " for icmp_seq=2\n\nx\ny",
    "z",
  ])
    s.write(chunk);
  await new Promise((r) => setImmediate(r));
  t.deepEqual(lines, [
    "64 bytes from 10.0.0.2: icmp_seq=1 time=0.1 ms",
    "no answer yet for icmp_seq=2",
    "",
    "x",
  ]);
  s.write("\n");
  await new Promise((r) => setImmediate(r));
  t.is(lines.at(-1), "yz");
});
