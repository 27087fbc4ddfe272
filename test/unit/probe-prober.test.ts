// The prober: scheduling, synchronous transitions, ordering, status, and the
// TCP/HTTP/check probe kinds against loopback listeners (no root needed).
import test, { type ExecutionContext } from "ava";
import { spawn } from "node:child_process";
import { createServer as createHttpServer, type Server as HttpServer } from "node:http";
import { connect, createServer, type Server, type Socket } from "node:net";
import type { AddressInfo } from "node:net";
import {
  Prober,
  resolveTiming,
  validateProbeSpec,
  PROBE_DEFAULTS,
  type ProbeTransition,
  type StreamProbe,
} from "../../health/prober.js";
import { tcpProbe } from "../../health/probes/tcp.js";
import { httpProbe, httpProbeUrl } from "../../health/probes/http.js";
import { checkProbe, forwardingCheck } from "../../health/probes/check.js";
import type { ProbeResult } from "../../core/probe-state.js";
import { NO_STEAL } from "../../health/steal.js";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function until(cond: () => boolean, timeoutMs: number): Promise<boolean> {
  const end = Date.now() + timeoutMs;
  while (Date.now() < end) {
    if (cond()) return true;
    await sleep(5);
  }
  return cond();
}

class FakeStream implements StreamProbe {
  push: (r: ProbeResult) => void = () => {};
  closed = false;
  start(onResult: (r: ProbeResult) => void): void {
    this.push = onResult;
  }
  close(): void {
    this.closed = true;
  }
}

test("the down transition is emitted synchronously, inside the call that delivers the fall-th failure", async (t) => {
  const prober = new Prober({ random: () => 0 });
  const stream = new FakeStream();
  prober.addStream({ name: "s", stream, rise: 1, fall: 3, holdDownMs: 0, damping: false });
  const seen: ProbeTransition[] = [];
  prober.on("transition", (tr) => seen.push(tr));
  prober.start();
  await until(() => stream.push.length > 0 || seen.length > 0, 200);
  await sleep(5);
  stream.push({ ok: true });
  t.is(seen.length, 1);
  t.is(seen[0]?.to, "up");
  stream.push({ ok: false, reason: "x" });
  stream.push({ ok: false, reason: "x" });
  t.is(seen.length, 1);
  stream.push({ ok: false, reason: "boom" });
  t.is(seen.length, 2, "emitted before push() returned");
  t.like(seen[1], { name: "s", from: "up", to: "down" });
  t.regex(seen[1]!.reason, /boom/);
  t.is(prober.state("s"), "down");
  await prober.stop();
  t.true(stream.closed);
});

test("hold-down runs on a timer: held, then up without further results", async (t) => {
  const prober = new Prober({ random: () => 0 });
  const stream = new FakeStream();
  prober.addStream({ name: "s", stream, rise: 1, fall: 1, holdDownMs: 150, damping: false });
  const seen: string[] = [];
  prober.on("transition", (tr) => seen.push(`${tr.from}>${tr.to}`));
  prober.start();
  await sleep(5);
  stream.push({ ok: true });
  stream.push({ ok: false });
  stream.push({ ok: true });
  t.is(prober.state("s"), "held");
  t.truthy(prober.status("s")?.heldUntil);
  await until(() => prober.state("s") === "up", 1000);
  t.deepEqual(seen, ["unknown>up", "up>down", "down>held", "held>up"]);
  await prober.stop();
});

test("a throwing transition listener does not stop the prober", async (t) => {
  const prober = new Prober({ random: () => 0 });
  const stream = new FakeStream();
  prober.addStream({ name: "s", stream, rise: 1, fall: 1, holdDownMs: 0, damping: false });
  const errors: Error[] = [];
  prober.on("error", (e) => errors.push(e));
  prober.on("transition", () => {
    throw new Error("listener bug");
  });
  prober.start();
  await sleep(5);
  stream.push({ ok: true });
  stream.push({ ok: false });
  t.is(errors.length, 2);
  t.is(prober.state("s"), "down");
  await prober.stop();
});

test("poll probes: a stale result (older run finishing later) is dropped", async (t) => {
  // Run 0 answers "failed" slowly, run 1 answers "ok" fast: only run 1 counts.
  let n = 0;
  const prober = new Prober({ random: () => 0 });
  prober.addCheck({
    name: "c",
    intervalMs: 20,
    timeoutMs: 200,
    rise: 1,
    fall: 1,
    damping: false,
    check: async () => {
      const i = n++;
      if (i === 0) {
        await sleep(100);
        return { ok: false, reason: "slow failure" };
      }
      return true;
    },
  });
  const seen: string[] = [];
  prober.on("transition", (tr) => seen.push(tr.to));
  prober.start();
  await sleep(250);
  await prober.stop();
  t.deepEqual(seen, ["up"]);
  t.is(prober.status("c")?.results.failed, 0);
});

test("check probes: timeout, throw and boolean outcomes", async (t) => {
  // A pinned clock: however late a loaded machine fires the timer, this is a timeout, not a stall.
  const slow = checkProbe(
    () => new Promise(() => {}),
    () => 0,
    NO_STEAL,
  );
  const r1 = await slow.run(30);
  t.false(r1.ok);
  t.regex(r1.reason!, /timed out/);
  const r2 = await checkProbe(async () => {
    throw new Error("gobgpd unreachable");
  }).run(100);
  t.deepEqual({ ok: r2.ok, reason: r2.reason }, { ok: false, reason: "gobgpd unreachable" });
  t.true((await checkProbe(async () => true).run(100)).ok);
  const fwd = await checkProbe(forwardingCheck(4)).run(100);
  t.is(typeof fwd.ok, "boolean");
});

test("check probes run together on the multiples of their interval: one wake-up for all of them", async (t) => {
  const prober = new Prober();
  // Which turn of the event loop each run happened in: a turn ends at the next setImmediate.
  let turn = 0;
  let turnOpen = false;
  const currentTurn = (): number => {
    if (!turnOpen) {
      turnOpen = true;
      turn++;
      setImmediate(() => (turnOpen = false));
    }
    return turn;
  };
  const runs = new Map<string, number[]>();
  for (let i = 0; i < 10; i++) {
    const name = `c${i}`;
    runs.set(name, []);
    prober.addCheck({
      name,
      intervalMs: 40,
      check: async () => {
        runs.get(name)!.push(currentTurn());
        return true;
      },
    });
  }
  prober.start();
  await until(() => [...runs.values()].every((r) => r.length >= 3), 2000);
  await prober.stop();
  // Round k of every check ran in the same turn of the loop, one timer callback (random phases would spread them).
  for (let k = 0; k < 3; k++) {
    const turns = new Set([...runs.values()].map((r) => r[k]!));
    t.is(turns.size, 1, `round ${k}: turns ${[...turns].join(" ")}`);
  }
});

async function listen(server: Server | HttpServer): Promise<number> {
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  return (server.address() as AddressInfo).port;
}

test("tcp probe: connect ok, refused fails fast, blackhole times out", async (t) => {
  const server = createServer((s) => s.destroy());
  const port = await listen(server);
  const ok = await tcpProbe({ target: "127.0.0.1", port }).run(300);
  t.true(ok.ok);
  t.true(ok.rttMs! >= 0);
  await new Promise((r) => server.close(r));
  const refused = await tcpProbe({ target: "127.0.0.1", port }).run(300);
  t.false(refused.ok);
  t.regex(refused.reason!, /ECONNREFUSED/);
  // A listener that never accepts, with its accept queue full: the kernel
  // drops further SYNs, so a connect hangs until the probe's timeout, on any
  // machine, whatever its routes.
  const stuck = await stuckListener(t);
  const bh = await tcpProbe({ target: "127.0.0.1", port: stuck, steal: NO_STEAL }).run(150);
  t.false(bh.ok);
  t.regex(bh.reason!, /time/i);
});

/** A port whose listener is stopped (SIGSTOP) with its accept queue filled: new connects hang. */
async function stuckListener(t: ExecutionContext): Promise<number> {
  const child = spawn(
    process.execPath,
    [
      "-e",
      `const s = require("node:net").createServer();
       s.listen({ host: "127.0.0.1", port: 0, backlog: 1 }, () => {
         console.log(s.address().port);
         process.kill(process.pid, "SIGSTOP");
       });`,
    ],
    { stdio: ["ignore", "pipe", "inherit"] },
  );
  t.teardown(() => child.kill("SIGKILL"));
  const port = await new Promise<number>((resolve) =>
    child.stdout.once("data", (d: Buffer) => resolve(Number(String(d).trim()))),
  );
  // Fill the accept queue (backlog + 1 on Linux) with connections nobody accepts.
  const fillers: Socket[] = [];
  t.teardown(() => fillers.forEach((f) => f.destroy()));
  for (let i = 0; i < 8; i++) {
    const f = connect({ host: "127.0.0.1", port });
    f.on("error", () => undefined);
    fillers.push(f);
  }
  await new Promise((r) => setTimeout(r, 200));
  return port;
}

test("http probe: expected status is healthy, another status fails, and a timeout fails", async (t) => {
  let status = 200;
  let delay = 0;
  const server = createHttpServer((_req, res) => {
    setTimeout(() => {
      res.statusCode = status;
      res.end("x");
    }, delay);
  });
  const port = await listen(server);
  const probe = httpProbe({ target: "127.0.0.1", port, steal: NO_STEAL });
  t.true((await probe.run(300)).ok);
  status = 500;
  const r = await probe.run(300);
  t.false(r.ok);
  t.regex(r.reason!, /status 500, expected 200/);
  t.true((await httpProbe({ url: `http://127.0.0.1:${port}/healthz`, expectStatus: 500 }).run(300)).ok);
  status = 200;
  delay = 400;
  const slow = await probe.run(100);
  t.false(slow.ok);
  t.regex(slow.reason!, /timeout/);
  server.closeAllConnections();
  await new Promise((r) => server.close(r));
  t.is(httpProbeUrl({ target: "2001:db8::1", port: 8080 }).toString(), "http://[2001:db8::1]:8080/");
});

test("prober with a tcp probe: up, down on close, up again after hold-down", async (t) => {
  const server = createServer((s) => s.destroy());
  const port = await listen(server);
  const prober = new Prober();
  const seen: ProbeTransition[] = [];
  prober.on("transition", (tr) => seen.push(tr));
  let samples = 0;
  prober.on("sample", () => samples++);
  prober.add({
    name: "tcp",
    kind: "tcp",
    target: "127.0.0.1",
    port,
    intervalMs: 20,
    timeoutMs: 100,
    holdDownMs: 100,
  });
  prober.start();
  t.true(await until(() => prober.state("tcp") === "up", 2000));
  await new Promise((r) => server.close(r));
  t.true(await until(() => prober.state("tcp") === "down", 2000));
  server.listen(port, "127.0.0.1");
  t.true(await until(() => prober.state("tcp") === "up", 3000));
  await prober.stop();
  server.close();
  t.deepEqual(
    seen.map((x) => x.to),
    ["up", "down", "held", "up"],
  );
  const st = prober.status("tcp")!;
  t.true(st.results.ok > 0 && st.results.failed >= 3);
  t.true(samples > 0);
  t.is(typeof st.lastRttMs, "number");
});

test("sync(): adds, keeps unchanged, replaces changed, removes missing", (t) => {
  const prober = new Prober();
  const a = { name: "a", kind: "tcp" as const, target: "127.0.0.1", port: 1 };
  const b = { name: "b", kind: "http" as const, target: "127.0.0.1", damping: { halfLifeMs: 1000 } };
  t.deepEqual(prober.sync([a, b]), ["a", "b"]);
  t.deepEqual(prober.sync([{ ...b, damping: { halfLifeMs: 1000 } }, { ...a }]), []);
  t.deepEqual(prober.sync([{ ...b, damping: { halfLifeMs: 2000 } }]), ["b"]);
  t.deepEqual(prober.names(), ["b"]);
});

test("spec validation and defaults", (t) => {
  t.deepEqual(validateProbeSpec({ name: "x", kind: "icmp", target: "192.0.2.1" }), []);
  t.deepEqual(validateProbeSpec({ name: "x", kind: "icmp", target: "gw.example" }), [
    "probe x: icmp target gw.example is not an IP address",
  ]);
  t.deepEqual(
    validateProbeSpec({ name: "x", kind: "icmp", target: "192.0.2.1", sourceAddress: "2001:db8::1" }),
    [
      "probe x: icmp sourceAddress 2001:db8::1 is neither an address of the target's family nor an interface name",
    ],
  );
  t.deepEqual(
    validateProbeSpec({ name: "x", kind: "icmp", target: "2001:db8::2", sourceAddress: "bond0.100" }),
    [],
  );
  t.true(validateProbeSpec({ name: "x", kind: "tcp", target: "192.0.2.1" }).length > 0);
  t.true(validateProbeSpec({ name: "x", kind: "icmp", target: "192.0.2.1", rise: 0 }).length > 0);
  const r = resolveTiming({});
  t.is(r.intervalMs, PROBE_DEFAULTS.intervalMs);
  t.is(r.fall, 3);
  t.deepEqual(r.damping, PROBE_DEFAULTS.damping);
  t.is(resolveTiming({ damping: false }).damping, null);
  t.is(resolveTiming({ damping: { penalty: 500 } }).damping?.penalty, 500);
  const prober = new Prober();
  t.throws(() => prober.add({ name: "x", kind: "tcp", target: "192.0.2.1" }));
});
