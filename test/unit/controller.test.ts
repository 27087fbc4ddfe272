import test from "ava";
import { pino } from "pino";
import { Controller, type ReconcileTarget } from "../../daemon/controller.js";

const log = pino({ level: "silent" });

function recorder(fail = () => false) {
  const calls: number[] = [];
  let active = 0;
  let maxActive = 0;
  const target: ReconcileTarget<number> = {
    name: "rec",
    async apply(d) {
      active++;
      maxActive = Math.max(maxActive, active);
      await new Promise((r) => setTimeout(r, 5));
      active--;
      if (fail()) throw new Error("boom");
      calls.push(d);
      return [`applied ${d}`];
    },
  };
  return { target, calls, maxActive: () => maxActive };
}

test("triggers during a reconcile coalesce into one follow-up, never overlapping", async (t) => {
  let n = 0;
  const r = recorder();
  const c = new Controller({ log, desired: () => ++n, targets: [r.target], resyncMs: 60_000 });
  c.start();
  for (let i = 0; i < 10; i++) c.trigger(`t${i}`);
  await c.idle();
  c.stop();
  t.deepEqual(r.calls, [1, 2]);
  t.is(r.maxActive(), 1);
  t.deepEqual(c.last?.reasons, ["t0", "t1", "t2", "t3", "t4", "t5", "t6", "t7", "t8", "t9"]);
});

test("a failing target is retried and the others still run", async (t) => {
  let failures = 1;
  const bad = recorder(() => failures-- > 0);
  const good = recorder();
  good.target = { ...good.target, name: "good" };
  const c = new Controller({
    log,
    desired: () => 7,
    targets: [bad.target, good.target],
    resyncMs: 60_000,
    retryMs: 10,
  });
  c.start();
  await c.idle();
  t.deepEqual(c.last?.errors, { rec: "boom" });
  t.deepEqual(good.calls, [7]);
  // The retry comes on its own (retryMs); wait for it, however slow the machine.
  for (const deadline = Date.now() + 10_000; bad.calls.length === 0 && Date.now() < deadline; ) {
    await new Promise((r) => setTimeout(r, 5));
  }
  await c.idle();
  c.stop();
  t.deepEqual(c.last?.errors, {});
  t.deepEqual(bad.calls, [7]);
});

test("a planning error keeps the current state and touches no target", async (t) => {
  const r = recorder();
  const c = new Controller<number>({
    log,
    desired: () => {
      throw new Error("bad plan");
    },
    targets: [r.target],
    resyncMs: 60_000,
    retryMs: 60_000,
  });
  c.start();
  await c.idle();
  c.stop();
  t.deepEqual(r.calls, []);
  t.deepEqual(c.last?.errors, { plan: "bad plan" });
});

test("a target learns which earlier targets failed in the same reconcile", async (t) => {
  const seen: string[][] = [];
  const kernel: ReconcileTarget<number> = {
    name: "kernel",
    apply: () => Promise.reject(new Error("nft -f failed")),
  };
  const bgp: ReconcileTarget<number> = {
    name: "bgp",
    apply: (_d, failed) => {
      seen.push([...failed]);
      return Promise.resolve([]);
    },
  };
  const c = new Controller({
    log,
    desired: () => 1,
    targets: [kernel, bgp],
    resyncMs: 60_000,
    retryMs: 60_000,
  });
  c.start();
  await c.idle();
  c.stop();
  t.deepEqual(seen, [["kernel"]]);
  t.deepEqual(c.last?.errors, { kernel: "nft -f failed" });
});
