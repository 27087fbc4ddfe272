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

test("a trigger naming its targets runs those alone, without planning for a target that ignores it; any trigger without names runs all", async (t) => {
  let planned = 0;
  const ran: string[] = [];
  const target = (name: string, ignoresDesired: boolean): ReconcileTarget<number> => ({
    name,
    ignoresDesired,
    apply: () => {
      ran.push(name);
      return Promise.resolve([]);
    },
  });
  const c = new Controller({
    log,
    desired: () => ++planned,
    targets: [target("kernel", true), target("bgp", false), target("bfd", true)],
    resyncMs: 60_000,
  });
  c.trigger("sources", ["kernel"]);
  await c.idle();
  t.deepEqual(ran, ["kernel"]);
  t.is(planned, 0, "nothing that reads the desired state ran");
  t.deepEqual(Object.keys(c.last?.targetMs ?? {}), ["kernel"]);

  ran.length = 0;
  // The first trigger starts a reconcile at once; those during it coalesce into one follow-up.
  c.trigger("sources", ["kernel"]);
  c.trigger("sources", ["bfd"]);
  c.trigger("sources", ["kernel"]);
  await c.idle();
  t.deepEqual(ran, ["kernel", "kernel", "bfd"], "in the targets' order");
  ran.length = 0;
  c.trigger("sources", ["kernel"]);
  c.trigger("sources", ["bfd"]);
  c.trigger("health");
  await c.idle();
  t.deepEqual(ran, ["kernel", "kernel", "bgp", "bfd"]);
  t.is(planned, 1);
  c.stop();
});

test("a target that overlaps the next runs beside it; the target after them waits for both and sees their failures", async (t) => {
  const order: string[] = [];
  let releaseFirst!: () => void;
  const firstHeld = new Promise<void>((r) => (releaseFirst = r));
  let seenByLast: string[] = [];
  const targets: ReconcileTarget<number>[] = [
    {
      name: "sessions",
      overlapsNext: true,
      async apply() {
        order.push("sessions start");
        await firstHeld;
        order.push("sessions end");
        throw new Error("not reachable");
      },
    },
    {
      name: "kernel",
      async apply() {
        order.push("kernel start");
        releaseFirst(); // only reached if it started while "sessions" still ran
        await Promise.resolve();
        order.push("kernel end");
        return ["programmed"];
      },
    },
    {
      name: "bgp",
      async apply(_d, failed) {
        order.push("bgp");
        seenByLast = [...failed];
        return [];
      },
    },
  ];
  const c = new Controller({ log, desired: () => 1, targets, resyncMs: 60_000, retryMs: 60_000 });
  c.start();
  await c.idle();
  c.stop();
  t.deepEqual(order.slice(0, 2), ["sessions start", "kernel start"]);
  t.is(order.at(-1), "bgp");
  t.deepEqual(seenByLast, ["sessions"]);
  t.deepEqual(c.last?.errors, { sessions: "not reachable" });
  t.deepEqual(c.last?.changes, { kernel: ["programmed"] });
});
