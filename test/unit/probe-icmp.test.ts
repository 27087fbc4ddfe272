// The ICMP probes' side of the helper protocol (health/probes/icmp.ts), with a
// fake `egressd-icmp`: a shell script that logs the commands it is given and
// answers each `add` with scripted lines (no root, no network). The real
// helper is tested in namespaces (test/integration/probe-netns.test.ts).
import test from "ava";
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { PassThrough } from "node:stream";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  IcmpHelper,
  addCommand,
  icmpOptionProblems,
  parseHelperLine,
  type IcmpProbeOptions,
} from "../../health/probes/icmp.js";
import { eachLine } from "../../health/detector-process.js";
import { MAX_STEAL_EXCUSES, NO_STEAL } from "../../health/steal.js";
import { allStolen } from "../helpers/steal.js";
import type { ProbeResult } from "../../core/probe-state.js";
import type { StreamProbe } from "../../health/probe-types.js";

const dir = mkdtempSync(join(tmpdir(), "egressd-fakeicmp-"));
test.after.always(() => rmSync(dir, { recursive: true, force: true }));

let n = 0;
/**
 * A fake helper: logs every command to `log`, and after each `add` prints
 * `lines` with ID replaced by the probe's id ("sleep S" entries pause). With
 * `exitAfter`, it exits with code 3 after that many adds.
 */
function fakeHelper(lines: string[], exitAfter = 0): { path: string; log: string } {
  const path = join(dir, `helper${n}.sh`);
  const log = join(dir, `helper${n++}.log`);
  const body = lines
    .map((l) => (l.startsWith("sleep ") ? `    ${l}` : `    printf '%s\\n' "${l.replaceAll("ID", "$id")}"`))
    .join("\n");
  writeFileSync(
    path,
    `#!/bin/sh
adds=0
: > ${log}
while read -r cmd id rest; do
  echo "$cmd $id $rest" >> ${log}
  [ "$cmd" = add ] || continue
${body}
  adds=$((adds + 1))
  [ ${exitAfter} -gt 0 ] && [ $adds -ge ${exitAfter} ] && { echo "fake helper gives up" >&2; exit 3; }
done
`,
  );
  chmodSync(path, 0o755);
  return { path, log };
}

const OPTS: IcmpProbeOptions = { target: "10.0.0.2", intervalMs: 100, timeoutMs: 100 };
/** A clock that never moves: no watchdog is ever late, so a loaded machine cannot make a result inconclusive. */
const PINNED = () => 0;

/** Runs one probe on `helper` until it has delivered `count` results (or `maxMs` passed). */
async function collect(probe: StreamProbe, count: number, maxMs = 5000): Promise<ProbeResult[]> {
  const out: ProbeResult[] = [];
  probe.start((r) => out.push(r));
  for (const t0 = Date.now(); out.length < count && Date.now() - t0 < maxMs; )
    await new Promise((r) => setTimeout(r, 5));
  probe.close();
  return out;
}

function helper(path: string, steal = NO_STEAL): IcmpHelper {
  return new IcmpHelper({ binary: path, now: PINNED, steal });
}

test("parseHelperLine: verdicts, ICMP errors with IPv6 sources, drops and refusals", (t) => {
  t.deepEqual(
    parseHelperLine("123 4:0:ok:1500 4:1:lost:0 5:9:unreach:800:1-3@fd00::1 6:2:senderr:0:ENETUNREACH"),
    {
      monoUs: 123,
      verdicts: [
        { id: 4, seq: 0, kind: "ok", rttUs: 1500 },
        { id: 4, seq: 1, kind: "lost", rttUs: 0 },
        { id: 5, seq: 9, kind: "unreach", rttUs: 800, detail: "1-3@fd00::1" },
        { id: 6, seq: 2, kind: "senderr", rttUs: 0, detail: "ENETUNREACH" },
      ],
      drops: 0,
      refused: [],
    },
  );
  t.deepEqual(parseHelperLine("9 !drops:3 !refused:7:source 7:0:late:120000"), {
    monoUs: 9,
    verdicts: [{ id: 7, seq: 0, kind: "late", rttUs: 120000 }],
    drops: 3,
    refused: [{ id: 7, why: "source" }],
  });
  t.is(parseHelperLine("PING 10.0.0.2"), null);
  t.is(parseHelperLine(""), null);
  t.deepEqual(parseHelperLine("5 x:y:ok:1 3:0:bogus:1")?.verdicts, [], "malformed items are skipped");
});

test("probe options are checked before they reach the helper's command line", (t) => {
  t.deepEqual(icmpOptionProblems(OPTS), []);
  t.deepEqual(icmpOptionProblems({ ...OPTS, target: "fd00::2", sourceAddress: "eth0.100" }), []);
  t.deepEqual(icmpOptionProblems({ ...OPTS, target: "gw.example" }), [
    "target gw.example is not an IP address",
  ]);
  t.deepEqual(icmpOptionProblems({ ...OPTS, sourceAddress: "fd00::1" }), [
    "sourceAddress fd00::1 is neither an address of the target's family nor an interface name",
  ]);
  t.deepEqual(icmpOptionProblems({ ...OPTS, sourceAddress: "eth0 add 9 10.0.0.9" }), [
    "sourceAddress eth0 add 9 10.0.0.9 is neither an address of the target's family nor an interface name",
  ]);
  t.deepEqual(icmpOptionProblems({ ...OPTS, intervalMs: 5, size: 4 }), [
    "intervalMs must be an integer >= 10",
    "size must be an integer 8-1400",
  ]);
  t.deepEqual(icmpOptionProblems({ ...OPTS, timeoutMs: 6300 }), ["timeoutMs must be under 63 intervals"]);
  t.is(addCommand(3, { ...OPTS, sourceAddress: "10.0.0.1" }), "add 3 10.0.0.2 10.0.0.1 100 100 56\n");
  t.throws(() => new IcmpHelper().probe({ ...OPTS, target: "x" }), { message: /^icmp probe: target x/ });
});

test("verdicts become results: RTT in ms, a lost echo, an ICMP error in words, a refused send", async (t) => {
  const fake = fakeHelper([
    "1 ID:0:ok:1500",
    "2 ID:1:lost:0",
    "3 ID:2:unreach:900:3-1@10.0.0.1",
    "4 ID:3:senderr:0:ENETUNREACH",
    "5 ID:4:late:150250",
  ]);
  const h = helper(fake.path);
  const out = await collect(h.probe(OPTS), 5);
  h.close();
  t.deepEqual(out, [
    { ok: true, rttMs: 1.5 },
    { ok: false, reason: "icmp 10.0.0.2: no reply within 100 ms" },
    { ok: false, reason: "icmp 10.0.0.2: destination unreachable (type 3 code 1) from 10.0.0.1" },
    { ok: false, reason: "icmp 10.0.0.2: cannot send (ENETUNREACH)" },
    { ok: false, reason: "icmp 10.0.0.2: reply after 150.25 ms" },
  ]);
  t.is(readFileSync(fake.log, "utf8").split("\n")[0], "add 1 10.0.0.2 - 100 100 56");
});

test("an older verdict after a newer one is dropped; verdicts of other probes are not this one's", async (t) => {
  const fake = fakeHelper(["1 ID:5:ok:1000 ID:4:lost:0 999:6:lost:0 ID:6:ok:2000"]);
  const h = helper(fake.path);
  const out = await collect(h.probe(OPTS), 2);
  h.close();
  t.deepEqual(out, [
    { ok: true, rttMs: 1 },
    { ok: true, rttMs: 2 },
  ]);
});

test("a lost echo in a line that reports dropped replies is inconclusive; an answered one still counts", async (t) => {
  const fake = fakeHelper(["1 ID:0:ok:1000 ID:1:lost:0 !drops:12"]);
  const h = helper(fake.path);
  const out = await collect(h.probe(OPTS), 2);
  h.close();
  t.deepEqual(out[0], { ok: true, rttMs: 1 });
  t.true(out[1]!.inconclusive);
  t.is(
    out[1]!.reason,
    "icmp 10.0.0.2: no reply within 100 ms: no verdict, the probe socket dropped 12 replies meanwhile",
  );
});

test("lost echoes and silence while the machine was stolen: inconclusive, then failures once the excuses run out", async (t) => {
  const lost = helper(fakeHelper(["1 ID:0:ok:100", "1 ID:1:lost:0", "1 ID:2:lost:0"]).path, allStolen());
  const a = await collect(lost.probe(OPTS), 3);
  lost.close();
  t.true(a[0]!.ok);
  t.regex(a[1]!.reason!, /^icmp 10\.0\.0\.2: no reply within 100 ms: no verdict, the hypervisor stole/);
  t.true(a[2]!.inconclusive);

  const silent = helper(fakeHelper(["1 ID:0:ok:100"]).path, allStolen());
  const b = await collect(silent.probe({ ...OPTS, intervalMs: 20, timeoutMs: 20 }), MAX_STEAL_EXCUSES + 3);
  silent.close();
  t.true(b[0]!.ok);
  for (const r of b.slice(1, MAX_STEAL_EXCUSES + 1)) {
    t.true(r.inconclusive, JSON.stringify(r));
    t.regex(r.reason!, /^icmp 10\.0\.0\.2: no verdict for \d+ ms: no verdict, the hypervisor stole/);
  }
  for (const r of b.slice(MAX_STEAL_EXCUSES + 1)) {
    t.falsy(r.inconclusive, JSON.stringify(r));
    t.regex(r.reason!, /the ICMP helper gave no verdict for \d+ ms/);
  }
});

test("a silent helper fails the probe after two intervals and the timeout (500 ms at least), then every interval; a stalled loop is no verdict", async (t) => {
  const fake = fakeHelper(["1 ID:0:ok:100"]);
  const h = helper(fake.path);
  const t0 = Date.now();
  const out = await collect(h.probe({ ...OPTS, intervalMs: 50, timeoutMs: 100 }), 3);
  const took = Date.now() - t0;
  h.close();
  t.true(out[0]!.ok);
  t.deepEqual(out[1], { ok: false, reason: "icmp 10.0.0.2: the ICMP helper gave no verdict for 500 ms" });
  t.deepEqual(out[2], { ok: false, reason: "icmp 10.0.0.2: the ICMP helper gave no verdict for 50 ms" });
  t.true(took >= 550, `took ${took} ms`);

  let clock = 0;
  const stalled = new IcmpHelper({ binary: fake.path, now: () => clock, steal: NO_STEAL });
  const res: ProbeResult[] = [];
  const probe = stalled.probe(OPTS);
  probe.start((r) => {
    res.push(r);
    if (res.length === 1) clock += 10_000; // the loop "stalls" for 10 s by this clock
  });
  for (const s = Date.now(); res.length < 3 && Date.now() - s < 5000; )
    await new Promise((r) => setTimeout(r, 5));
  probe.close();
  stalled.close();
  t.true(res[1]!.inconclusive);
  t.regex(res[1]!.reason!, /no verdict, the event loop stalled/);
  t.regex(res[2]!.reason!, /the ICMP helper gave no verdict/);
});

test("a probe's first verdict gets a grace for the helper's start; without one it fails", async (t) => {
  const fake = fakeHelper([]);
  const h = helper(fake.path);
  const t0 = Date.now();
  const out = await collect(h.probe({ ...OPTS, intervalMs: 20, timeoutMs: 20 }), 1);
  const took = Date.now() - t0;
  h.close();
  t.deepEqual(out[0], { ok: false, reason: "icmp 10.0.0.2: the ICMP helper gave no verdict for 1060 ms" });
  t.true(took >= 1060, `took ${took} ms`);
});

test("one helper serves every probe; a closed probe is deleted from it", async (t) => {
  const fake = fakeHelper(["1 ID:0:ok:100"]);
  const h = helper(fake.path);
  const a = h.probe(OPTS);
  const b = h.probe({ ...OPTS, target: "fd00::2", sourceAddress: "eth1" });
  const got: string[] = [];
  a.start(() => got.push("a"));
  b.start(() => got.push("b"));
  for (const s = Date.now(); got.length < 2 && Date.now() - s < 5000; )
    await new Promise((r) => setTimeout(r, 5));
  a.close();
  await new Promise((r) => setTimeout(r, 100));
  const pid = h.pid;
  b.close();
  await new Promise((r) => setTimeout(r, 100));
  h.close();
  t.deepEqual(got.sort(), ["a", "b"]);
  t.is(h.spawns, 1);
  t.truthy(pid);
  t.is(
    readFileSync(fake.log, "utf8"),
    "add 1 10.0.0.2 - 100 100 56\nadd 2 fd00::2 eth1 100 100 56\ndel 1 \ndel 2 \n",
  );
});

test("a helper that exits fails its probes with its last words, and comes back with them", async (t) => {
  const fake = fakeHelper(["1 ID:0:ok:100"], 1);
  const h = helper(fake.path);
  const out = await collect(h.probe(OPTS), 6);
  h.close();
  t.true(out[0]!.ok);
  t.deepEqual(out[1], { ok: false, reason: "icmp 10.0.0.2: the ICMP helper exited (fake helper gives up)" });
  t.true(
    out.slice(2).some((r) => r.ok),
    JSON.stringify(out),
  );
  t.true(h.spawns >= 2);
});

test("a probe the helper refuses fails every interval, and is offered again after a backoff", async (t) => {
  const fake = fakeHelper(["1 !refused:ID:source"]);
  const h = helper(fake.path);
  const out = await collect(h.probe({ ...OPTS, sourceAddress: "eth9" }), Infinity, 750);
  await new Promise((r) => setTimeout(r, 100));
  h.close();
  t.true(out.length >= 4, `${out.length} results in 750 ms at 100 ms`);
  for (const r of out)
    t.deepEqual(r, { ok: false, reason: "icmp 10.0.0.2: the ICMP helper refused the probe (source)" });
  t.is(
    readFileSync(fake.log, "utf8"),
    "add 1 10.0.0.2 eth9 100 100 56\n".repeat(2) + "del 1 \n",
    "offered again after 500 ms",
  );
});

test("a missing helper binary is a failure that names it", async (t) => {
  const h = helper(join(dir, "no-such-helper"));
  const out = await collect(h.probe(OPTS), 1);
  h.close();
  t.regex(out[0]!.reason!, /^icmp 10\.0\.0\.2: the ICMP helper exited \(.*no-such-helper.*ENOENT/);
});

test("lines split across reads are joined; a line without its newline waits for it", async (t) => {
  const s = new PassThrough();
  const lines: string[] = [];
  eachLine(s, (l) => lines.push(l));
  s.write("1 1:0:o");
  s.write("k:5\n2 1:1:ok:6\n3 1:2");
  await new Promise((r) => setImmediate(r));
  t.deepEqual(lines, ["1 1:0:ok:5", "2 1:1:ok:6"]);
  s.write(":ok:7\n");
  await new Promise((r) => setImmediate(r));
  t.deepEqual(lines, ["1 1:0:ok:5", "2 1:1:ok:6", "3 1:2:ok:7"]);
});
