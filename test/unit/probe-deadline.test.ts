// Probe timeouts and a stalled event loop (health/deadline.ts): an answer
// that arrived during a stall is read before the timeout is judged, and a
// timeout that a stall swallowed is inconclusive, which the prober counts
// neither way. The stalls are synchronous busy loops, so each case holds
// however fast or loaded the machine is: the timer cannot fire during one.
import test from "ava";
import { MessageChannel } from "node:worker_threads";
import { deadline } from "../../health/deadline.js";
import { checkProbe } from "../../health/probes/check.js";
import { Prober, type StreamProbe } from "../../health/prober.js";
import type { ProbeResult } from "../../core/probe-state.js";

function stall(ms: number): void {
  const until = Date.now() + ms;
  while (Date.now() < until) {
    // the event loop cannot run
  }
}

test("a deadline reports how late it fired only when that means a stall", async (t) => {
  let clock = 0;
  const onTime = await new Promise<number>((resolve) => {
    deadline(10, resolve, () => clock);
    clock = 10; // fired exactly when due
  });
  t.is(onTime, 0);
  const late = await new Promise<number>((resolve) => {
    clock = 0;
    deadline(10, resolve, () => clock);
    clock = 510;
  });
  t.is(late, 500);
  const slightlyLate = await new Promise<number>((resolve) => {
    clock = 0;
    deadline(100, resolve, () => clock);
    clock = 130; // 30 ms late for a 100 ms deadline: under half of it
  });
  t.is(slightlyLate, 0);
});

test("a cancelled deadline never expires", async (t) => {
  let expired = false;
  const d = deadline(5, () => (expired = true));
  d.cancel();
  await new Promise((r) => setTimeout(r, 30));
  t.false(expired);
});

test("a deadline restarted after it expired expires again; one restarted before is not cancelled", async (t) => {
  let expired = 0;
  let fired: () => void = () => {};
  const next = () => new Promise<void>((r) => (fired = r));
  let wait = next();
  const d = deadline(5, () => {
    expired++;
    fired();
  });
  await wait;
  t.is(expired, 1);
  wait = next();
  d.restart(); // the watchdog case: activity after it fired
  await wait;
  t.is(expired, 2);
  wait = next();
  d.restart();
  d.restart(); // pushed back twice before expiring: still one expiry
  await wait;
  await new Promise((r) => setTimeout(r, 30));
  t.is(expired, 3);
});

test("an answer that arrived during a stall settles the check before its timeout is judged", async (t) => {
  const { port1, port2 } = new MessageChannel();
  t.teardown(() => port1.close());
  const probe = checkProbe(() => new Promise((resolve) => port1.once("message", () => resolve(true))));
  const result = probe.run(50);
  port2.postMessage("pong"); // waiting to be read when the stall ends
  stall(300);
  const r = await result;
  t.true(r.ok, JSON.stringify(r));
});

test("a check that stays unanswered through a stall is inconclusive, not failed", async (t) => {
  const probe = checkProbe(() => new Promise<boolean>(() => {}));
  const result = probe.run(50);
  stall(300);
  const r = await result;
  t.false(r.ok);
  t.true(r.inconclusive);
  t.regex(r.reason ?? "", /no verdict, the event loop stalled \d+ ms/);
});

test("the prober counts inconclusive results neither way", async (t) => {
  let push: ((r: ProbeResult) => void) | undefined;
  const stream: StreamProbe = { start: (f) => void (push = f), close: () => {} };
  const prober = new Prober({ random: () => 0 });
  prober.addStream({ name: "s", stream, rise: 1, fall: 1, holdDownMs: 0, damping: false });
  prober.start();
  const started = new Promise<(r: ProbeResult) => void>((resolve) => {
    const poll = () => (push ? resolve(push) : setTimeout(poll, 1));
    poll();
  });
  push = await started;
  push({ ok: true });
  t.is(prober.statuses()[0]?.state, "up");
  for (let i = 0; i < 5; i++) push({ ok: false, inconclusive: true, reason: "stalled" });
  const s = prober.statuses()[0]!;
  t.is(s.state, "up");
  t.deepEqual(s.results, { ok: 1, failed: 0, inconclusive: 5 });
  push({ ok: false, reason: "real" });
  t.is(prober.statuses()[0]?.state, "down");
  void prober.stop();
});
