// Probes against targets in a network namespace (root): ICMP (link down, nft
// drop, IPv6), TCP (listener killed, nft drop) and HTTP (200 then 500). The
// prober runs in the test process, in the host namespace, over a veth pair
// whose far end is in the sandbox; deleting the namespace deletes the pair.
// Detection times are logged; bounds are generous (the machine is noisy).
import test, { type ExecutionContext } from "ava";
import { spawn, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { getPriority } from "node:os";
import { performance } from "node:perf_hooks";
import { isRunning, run, tryRun } from "../../lib/exec.js";
import { sandbox, type Sandbox } from "../helpers/netns.js";
import { Prober, type ProbeSpec, type ProbeTransition } from "../../health/prober.js";
import { ICMP_HELPER } from "../../health/probes/icmp.js";
import { eachLine } from "../../health/detector-process.js";
import type { ProbeState } from "../../core/probe-state.js";
import { DEFAULTS } from "../../core/defaults.js";
import { canonicalText } from "../../core/ip.js";

const NFT = "/usr/sbin/nft";
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface Lab {
  sb: Sandbox;
  /** Target side interface (in the namespace). */
  peerIf: string;
  hostIp: string;
  targetIp: string;
  hostIp6: string;
  targetIp6: string;
}

/** A namespace "tgt" joined to the host namespace by a veth pair, with random test addresses. */
async function lab(t: ExecutionContext): Promise<Lab> {
  const sb = sandbox(t, "p");
  await sb.addNode("tgt");
  const rnd = randomBytes(4);
  const hostIf = `ep${rnd.toString("hex").slice(0, 8)}`;
  const peerIf = "eth0";
  t.teardown(() => tryRun(["ip", "link", "del", hostIf]).then(() => undefined));
  await run(["ip", "link", "add", hostIf, "type", "veth", "peer", "name", peerIf, "netns", sb.ns("tgt")]);
  // 198.18.0.0/15 (benchmarking range), a random /30; ULA fd.., a random /64.
  const o2 = 18 + (rnd[0]! & 1);
  const o3 = rnd[1]!;
  const o4 = rnd[2]! & 0xfc;
  const hostIp = `198.${o2}.${o3}.${o4 + 1}`;
  const targetIp = `198.${o2}.${o3}.${o4 + 2}`;
  const p6 = `fd${rnd.toString("hex").slice(0, 2)}:${rnd.toString("hex").slice(2, 6)}:${rnd.toString("hex").slice(6, 8)}::`;
  // Canonical text (no leading zeros), as the kernel and the probe's reasons print it.
  const hostIp6 = canonicalText(`${p6}1`);
  const targetIp6 = canonicalText(`${p6}2`);
  await run(["ip", "addr", "add", `${hostIp}/30`, "dev", hostIf]);
  await run(["ip", "-6", "addr", "add", `${hostIp6}/64`, "dev", hostIf, "nodad"]);
  await run(["ip", "link", "set", hostIf, "up"]);
  await sb.exec("tgt", ["ip", "addr", "add", `${targetIp}/30`, "dev", peerIf]);
  await sb.exec("tgt", ["ip", "-6", "addr", "add", `${targetIp6}/64`, "dev", peerIf, "nodad"]);
  await sb.exec("tgt", ["ip", "link", "set", peerIf, "up"]);
  return { sb, peerIf, hostIp, targetIp, hostIp6, targetIp6 };
}

/** A prober with transitions recorded (performance.now() timestamps). */
function prober(t: ExecutionContext, specs: ProbeSpec[]) {
  const p = new Prober();
  const log: Array<ProbeTransition & { t: number }> = [];
  p.on("transition", (tr) => log.push({ ...tr, t: performance.now() }));
  for (const s of specs) p.add(s);
  p.start();
  t.teardown(() => p.stop());
  const waitFor = async (name: string, state: ProbeState, timeoutMs: number): Promise<number> => {
    const end = performance.now() + timeoutMs;
    for (;;) {
      if (p.state(name) === state) {
        const last = [...log].reverse().find((x) => x.name === name && x.to === state);
        return last?.t ?? performance.now();
      }
      if (performance.now() > end) {
        throw new Error(`${name} not ${state} after ${timeoutMs} ms: ${JSON.stringify(p.status(name))}`);
      }
      await sleep(5);
    }
  };
  return { p, log, waitFor };
}

/** Starts a small node program inside the namespace (killed by the sandbox cleanup). */
function nodeIn(sb: Sandbox, code: string): void {
  const child = spawn("ip", ["netns", "exec", sb.ns("tgt"), process.execPath, "-e", code], {
    stdio: "ignore",
  });
  child.unref();
}

async function dropAll(sb: Sandbox, what: string): Promise<void> {
  await sb.exec("tgt", [
    NFT,
    `add table inet probetest; add chain inet probetest in { type filter hook input priority -10; policy accept; }; add rule inet probetest in ${what} drop`,
  ]);
}
async function undrop(sb: Sandbox): Promise<void> {
  await sb.exec("tgt", [NFT, "delete table inet probetest"]);
}

const fast = { intervalMs: 100, timeoutMs: 300, rise: 3, fall: 3, holdDownMs: 1000, damping: false } as const;
/** Every result moves the state: what one verdict does is seen at once. */
const everyResult = {
  intervalMs: 100,
  timeoutMs: 100,
  rise: 1,
  fall: 1,
  holdDownMs: 0,
  damping: false,
} as const;

test("icmp: link down -> down within the timeout budget; link up -> held -> up after hold-down", async (t) => {
  const l = await lab(t);
  const { p, log, waitFor } = prober(t, [{ name: "icmp", kind: "icmp", target: l.targetIp, ...fast }]);
  await waitFor("icmp", "up", 5000);
  await sleep(300);
  const cut = performance.now();
  await l.sb.exec("tgt", ["ip", "link", "set", l.peerIf, "down"]);
  const down = await waitFor("icmp", "down", 5000);
  t.log(`link down detected in ${Math.round(down - cut)} ms (${p.status("icmp")?.reason})`);
  t.true(down - cut < 3000);
  const restore = performance.now();
  await l.sb.exec("tgt", ["ip", "link", "set", l.peerIf, "up"]);
  const held = await waitFor("icmp", "held", 10_000);
  const up = await waitFor("icmp", "up", 10_000);
  t.log(`link up: held after ${Math.round(held - restore)} ms, up ${Math.round(up - held)} ms later`);
  t.true(up - held >= 990);
  t.deepEqual(
    log.map((x) => x.to),
    ["up", "down", "held", "up"],
  );
});

test("icmp: nft drop -> down (timeout reported within the timeout, not after several intervals); removed -> up", async (t) => {
  const l = await lab(t);
  const { p, waitFor } = prober(t, [{ name: "icmp", kind: "icmp", target: l.targetIp, ...fast }]);
  const results: Array<{ ok: boolean; t: number }> = [];
  p.on("sample", (s) => results.push({ ok: s.ok, t: performance.now() }));
  await waitFor("icmp", "up", 5000);
  await sleep(300);
  const cut = performance.now();
  await dropAll(l.sb, "meta l4proto icmp");
  const applied = performance.now();
  const down = await waitFor("icmp", "down", 5000);
  const firstFail = results.find((r) => !r.ok && r.t >= cut);
  t.log(
    `nft drop (applied in ${Math.round(applied - cut)} ms): first failure after ${Math.round(firstFail!.t - applied)} ms, ` +
      `down after ${Math.round(down - applied)} ms`,
  );
  // First failure: the first dropped echo was sent at most one interval after
  // the rule, and fails at send + timeout (300 ms): well under a second.
  t.true(firstFail!.t - applied < 1000);
  t.true(down - applied < 2000);
  const restore = performance.now();
  await undrop(l.sb);
  const up = await waitFor("icmp", "up", 10_000);
  t.log(`drop removed: up after ${Math.round(up - restore)} ms (hold-down 1000 ms)`);
  t.true(up - restore >= 1000);
});

test("icmp over IPv6 with a source address", async (t) => {
  const l = await lab(t);
  const { waitFor } = prober(t, [
    { name: "v6", kind: "icmp", target: l.targetIp6, sourceAddress: l.hostIp6, ...fast },
  ]);
  await waitFor("v6", "up", 5000);
  const cut = performance.now();
  await dropAll(l.sb, "meta l4proto ipv6-icmp icmpv6 type echo-request");
  const down = await waitFor("v6", "down", 5000);
  t.log(`IPv6 echo drop detected in ${Math.round(down - cut)} ms`);
  t.pass();
});

test("icmp: one helper for all probes, at the detection priority; a removed probe stops sending; stop ends the helper", async (t) => {
  const l = await lab(t);
  const { p, waitFor } = prober(t, [
    { name: "v4", kind: "icmp", target: l.targetIp, ...fast },
    { name: "v6", kind: "icmp", target: l.targetIp6, ...fast },
  ]);
  await waitFor("v4", "up", 5000);
  await waitFor("v6", "up", 5000);
  const pid = p.icmpHelperPid!;
  t.truthy(pid);
  // As root: ahead of the node's other work, so a busy CPU does not delay its echoes.
  t.is(getPriority(pid), DEFAULTS.nice.detection);
  await l.sb.exec("tgt", [
    NFT,
    "add table inet echoes; add chain inet echoes in { type filter hook input priority -20; policy accept; }; " +
      "add rule inet echoes in icmp type echo-request counter",
  ]);
  const echoes = async (): Promise<number> => {
    const out = await l.sb.exec("tgt", [NFT, "-j", "list", "chain", "inet", "echoes", "in"]);
    const rule = (
      JSON.parse(out.stdout) as {
        nftables: Array<{ rule?: { expr: Array<{ counter?: { packets: number } }> } }>;
      }
    ).nftables.find((x) => x.rule);
    return rule?.rule?.expr.find((e) => e.counter)?.counter?.packets ?? NaN;
  };
  await sleep(300);
  t.true((await echoes()) > 0);
  p.remove("v4");
  await sleep(150);
  const after = await echoes();
  await sleep(300);
  t.is(await echoes(), after, "no IPv4 echo after the probe was removed");
  t.is(p.icmpHelperPid, pid, "the same helper still runs the IPv6 probe");
  t.is(p.state("v6"), "up");
  await p.stop();
  await sleep(200);
  t.false(isRunning(pid));
});

test("icmp: the helper sends at most 16 echoes at one instant, and gives each group its own phase", async (t) => {
  const l = await lab(t);
  const helper = spawn(ICMP_HELPER, [], { stdio: ["pipe", "pipe", "inherit"] });
  t.teardown(() => helper.kill("SIGKILL"));
  const lines: string[] = [];
  eachLine(helper.stdout, (line) => lines.push(line));
  for (let id = 1; id <= 40; id++) helper.stdin.write(`add ${id} ${l.targetIp} - 100 100 56\n`);
  await sleep(850);
  // Groups of 16 in the order added (ids 1-16, 17-32, 33-40) send on the multiples of 100 ms of
  // CLOCK_MONOTONIC plus 12.5 ms times the group, and their verdicts are due a timeout (100 ms)
  // later: at the same phase. Each line carries the monotonic time it was written, so a line
  // written on time (within 10 ms of its first group's phase) is known to hold that group alone.
  // A line the scheduler delayed past the next group's phase may carry two groups: it says when
  // the helper ran, not what it sent, so it is counted and not judged.
  const INTERVAL_US = 100_000;
  const PHASE_US = INTERVAL_US / 8;
  const onTime = new Map<number, number>();
  let late = 0;
  for (const line of lines) {
    const [head, ...all] = line.split(" ");
    const items = all.filter((item) => !item.startsWith("!"));
    if (items.length === 0) continue;
    const groups = items.map((item) => Math.floor((Number(item.split(":")[0]) - 1) / 16));
    const first = groups[0]!;
    const lateness = (((Number(head) - first * PHASE_US) % INTERVAL_US) + INTERVAL_US) % INTERVAL_US;
    if (lateness >= 10_000) {
      late++;
      continue;
    }
    t.true(items.length <= 16, `${items.length} echoes in one round: ${line}`);
    t.true(
      groups.every((g) => g === first),
      `two groups in a line written on time: ${line}`,
    );
    t.true(
      items.every((item) => item.includes(":ok:")),
      `every echo answered: ${line}`,
    );
    onTime.set(first, (onTime.get(first) ?? 0) + 1);
  }
  t.log(`lines on time per group ${JSON.stringify([...onTime])}, late ${late}`);
  for (const g of [0, 1, 2])
    t.true((onTime.get(g) ?? 0) >= 2, `group ${g}: ${onTime.get(g) ?? 0} lines on time`);
});

test("icmp: an ICMP error says what came back and from where", async (t) => {
  const l = await lab(t);
  await l.sb.exec("tgt", [
    NFT,
    "add table inet rej; add chain inet rej in { type filter hook input priority -10; policy accept; }; " +
      "add rule inet rej in icmp type echo-request reject with icmp type host-unreachable; " +
      "add rule inet rej in icmpv6 type echo-request reject with icmpv6 type addr-unreachable",
  ]);
  const { p, waitFor } = prober(t, [
    { name: "v4", kind: "icmp", target: l.targetIp, ...fast },
    { name: "v6", kind: "icmp", target: l.targetIp6, ...fast },
  ]);
  await waitFor("v4", "down", 5000);
  await waitFor("v6", "down", 5000);
  // The first IPv6 echo may be lost to neighbour discovery: the errors follow.
  const reason = async (name: string, want: string): Promise<string | undefined> => {
    for (let i = 0; i < 100 && p.status(name)?.lastResult?.reason !== want; i++) await sleep(10);
    return p.status(name)?.lastResult?.reason;
  };
  const v4 = `icmp ${l.targetIp}: destination unreachable (type 3 code 1) from ${l.targetIp}`;
  const v6 = `icmp ${l.targetIp6}: destination unreachable (type 1 code 3) from ${l.targetIp6}`;
  t.is(await reason("v4", v4), v4);
  t.is(await reason("v6", v6), v6);
});

test("icmp: replies are judged by the kernel's time: a reply within the timeout counts though the helper ran late, a slower one fails", async (t) => {
  const l = await lab(t);
  // A 250 ms timeout: the slow responder below is a Python process, late by
  // tens of ms on a loaded machine (with 100 ms and a 50 ms responder, a fresh
  // root once saw a reply after more than 100 ms).
  const { p, waitFor } = prober(t, [
    { name: "icmp", kind: "icmp", target: l.targetIp, ...everyResult, intervalMs: 300, timeoutMs: 250 },
  ]);
  const results: Array<{ ok: boolean; reason?: string; rttMs?: number }> = [];
  p.on("sample", (s) => results.push(s));
  await waitFor("icmp", "up", 5000);
  // Stopped right after a round for 400 ms, past the next round's timeout,
  // the helper judges the echo it had just sent on its return, from the
  // reply that waited in its socket with the kernel's time: no failure, and
  // the round trip is the network's, not the stop's.
  const pid = p.icmpHelperPid!;
  await new Promise<void>((resolve) =>
    p.once("sample", () => {
      process.kill(pid, "SIGSTOP");
      resolve();
    }),
  );
  results.length = 0;
  await sleep(400);
  process.kill(pid, "SIGCONT");
  await sleep(700);
  t.deepEqual(
    results.filter((r) => !r.ok),
    [],
  );
  t.true(results.length >= 2 && results[0]!.rttMs! < 20, JSON.stringify(results));
  // A target that answers after 50 ms (the kernel's own echo replies off, a
  // responder on a raw socket instead): counted, with its RTT; after 450 ms:
  // failed. 200 ms either side of the 250 ms timeout for the responder's lateness.
  await l.sb.exec("tgt", ["sysctl", "-qw", "net.ipv4.icmp_echo_ignore_all=1"]);
  const slow = slowResponder(l.sb, 0.05);
  // Until python has started, echoes go unanswered; then its answers come.
  const answered = performance.now() + 10_000;
  while (!results.some((r) => r.ok && r.rttMs! >= 50)) {
    if (performance.now() > answered)
      return void t.fail(`the slow responder never answered: ${JSON.stringify(results)}`);
    await sleep(50);
  }
  await waitFor("icmp", "up", 10_000);
  results.length = 0;
  await sleep(1200);
  t.true(results.length >= 3 && results.every((r) => r.ok && r.rttMs! >= 50), JSON.stringify(results));
  slow.kill();
  slowResponder(l.sb, 0.45);
  await waitFor("icmp", "down", 5000);
  t.is(p.status("icmp")?.lastResult?.reason, `icmp ${l.targetIp}: no reply within 250 ms`);
});

/** Answers IPv4 echo requests in the namespace after `delay` seconds (killed by the sandbox cleanup). */
function slowResponder(sb: Sandbox, delay: number): ChildProcess {
  const code = `
import select, socket, struct, sys, time
delay = float(sys.argv[1])
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
def checksum(b):
    if len(b) % 2: b += b"\\0"
    n = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    while n >> 16: n = (n & 0xFFFF) + (n >> 16)
    return ~n & 0xFFFF
due = []
while True:
    wait = max(0.0, due[0][0] - time.monotonic()) if due else None
    if select.select([s], [], [], wait)[0]:
        data, (src, _) = s.recvfrom(65535)
        icmp = bytearray(data[(data[0] & 15) * 4:])
        if icmp[0] == 8:
            due.append((time.monotonic() + delay, src, icmp))
    while due and due[0][0] <= time.monotonic():
        _, src, icmp = due.pop(0)
        icmp[0] = 0
        icmp[2:4] = b"\\0\\0"
        icmp[2:4] = struct.pack("!H", checksum(bytes(icmp)))
        s.sendto(bytes(icmp), (src, 0))
`;
  return spawn("ip", ["netns", "exec", sb.ns("tgt"), "python3", "-c", code, String(delay)], {
    stdio: "ignore",
  });
}

test("icmp: a helper killed is restarted, and its probes carry on", async (t) => {
  const l = await lab(t);
  const { p, waitFor } = prober(t, [{ name: "icmp", kind: "icmp", target: l.targetIp, ...everyResult }]);
  await waitFor("icmp", "up", 5000);
  const pid = p.icmpHelperPid!;
  process.kill(pid, "SIGKILL");
  await waitFor("icmp", "down", 5000);
  t.regex(p.status("icmp")?.lastResult?.reason ?? "", /the ICMP helper (exited|is not running)/);
  await waitFor("icmp", "up", 5000);
  t.not(p.icmpHelperPid, pid);
});

test("tcp: listener killed -> down (refused); nft drop -> down (timeout); both recover", async (t) => {
  const l = await lab(t);
  const port = 7001;
  const server = `require("net").createServer((s) => s.destroy()).listen(${port}, "0.0.0.0")`;
  nodeIn(l.sb, server);
  const { waitFor } = prober(t, [{ name: "tcp", kind: "tcp", target: l.targetIp, port, ...fast }]);
  await waitFor("tcp", "up", 10_000);
  let cut = performance.now();
  await l.sb.sh("tgt", `pkill -f 'listen\\(${port},' || true`);
  let down = await waitFor("tcp", "down", 5000);
  t.log(`listener killed: down after ${Math.round(down - cut)} ms`);
  nodeIn(l.sb, server);
  await waitFor("tcp", "up", 10_000);
  await sleep(200);
  cut = performance.now();
  await dropAll(l.sb, `tcp dport ${port}`);
  down = await waitFor("tcp", "down", 5000);
  t.log(`nft drop of SYNs: down after ${Math.round(down - cut)} ms`);
  t.true(down - cut < 3000);
  await undrop(l.sb);
  await waitFor("tcp", "up", 10_000);
  t.pass();
});

test("http: 200 is up, 500 is down, 200 again is up after hold-down", async (t) => {
  const l = await lab(t);
  const port = 7080;
  nodeIn(
    l.sb,
    `let s = 200; require("http").createServer((q, r) => {
       if (q.url.startsWith("/set/")) { s = Number(q.url.slice(5)); r.end("ok"); return; }
       r.statusCode = s; r.end("status " + s);
     }).listen(${port}, "0.0.0.0")`,
  );
  const url = `http://${l.targetIp}:${port}/healthz`;
  const { p, waitFor } = prober(t, [{ name: "http", kind: "http", target: l.targetIp, url, ...fast }]);
  await waitFor("http", "up", 10_000);
  const cut = performance.now();
  await fetch(`http://${l.targetIp}:${port}/set/500`);
  const down = await waitFor("http", "down", 5000);
  t.log(`HTTP 500: down after ${Math.round(down - cut)} ms (${p.status("http")?.reason})`);
  t.regex(p.status("http")!.reason, /status 500, expected 200/);
  await fetch(`http://${l.targetIp}:${port}/set/200`);
  const held = await waitFor("http", "held", 5000);
  const up = await waitFor("http", "up", 5000);
  t.true(up - held >= 990);
  t.true(typeof p.status("http")?.lastRttMs === "number");
});
