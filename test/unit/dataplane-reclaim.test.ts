// When the data plane collects the garbage a new plan leaves: at once after a
// plan made from scratch, once per burst of source patches, never for an
// apply() that installs nothing new. Timers are run by hand.
import test from "ava";
import { stringify } from "yaml";
import { InlineDataplane } from "../../daemon/dataplane.js";
import { DeltaKernel, FakeKernel } from "../helpers/fake-kernel.js";
import { twoEgressIPs } from "../helpers/configs.js";

/** A config whose policy "a" has `sources` (and enough others that a change is patched). */
function text(sources: string[]): string {
  const pad = Array.from({ length: 50 }, (_, i) => `10.250.0.${i}`);
  return stringify(
    twoEgressIPs([
      {
        name: "a",
        sources: [...sources, ...pad],
        destinations: ["203.0.113.0/24"],
        egressIP: "192.0.2.11",
        uplink: "tor",
      },
      {
        name: "b",
        sources: ["10.251.0.0/24"],
        destinations: ["203.0.113.0/24"],
        egressIP: "192.0.2.12",
        uplink: "tor",
      },
    ]),
  );
}

function setup() {
  const kernel = new DeltaKernel();
  const timers: { fn: () => void; ms: number; cancelled: boolean }[] = [];
  let reclaimed = 0;
  const dp = new InlineDataplane(kernel, {
    reclaim: () => reclaimed++,
    patchReclaimMs: 200,
    timer: (fn, ms) => {
      const t = { fn, ms, cancelled: false };
      timers.push(t);
      return () => (t.cancelled = true);
    },
  });
  const reload = async (input: Parameters<InlineDataplane["prepare"]>[0]) => {
    const p = await dp.prepare(input);
    if (!p.ok) throw new Error(JSON.stringify(p.errors));
    await dp.commit(p.id);
    await dp.apply();
  };
  /** The timers still pending (not run, not cancelled). */
  const pending = () => timers.filter((t) => !t.cancelled);
  const runPending = () => {
    for (const t of pending()) {
      t.cancelled = true;
      t.fn();
    }
  };
  return {
    dp,
    kernel,
    reload,
    pending,
    runPending,
    reclaimed: () => reclaimed,
    timersSet: () => timers.length,
  };
}

test("a plan made from scratch is collected at once; a burst of patches once, after patchReclaimMs", async (t) => {
  const s = setup();
  await s.reload({ text: text(["10.244.1.10"]) });
  t.deepEqual(
    s.pending().map((x) => x.ms),
    [0],
  );
  s.runPending();
  t.is(s.reclaimed(), 1);

  for (const pod of ["10.244.1.11", "10.244.1.12", "10.244.1.13"]) await s.reload({ text: text([pod]) });
  t.deepEqual(s.kernel.deltas, [false, true, true, true], "the three reloads were patches");
  t.deepEqual(
    s.pending().map((x) => x.ms),
    [200],
    "one collection for the burst",
  );
  t.is(s.timersSet(), 2, "the burst's first patch set it; the others did not push it back");
  s.runPending();
  t.is(s.reclaimed(), 2);

  // A patch pending, then a plan from scratch: collected at once instead.
  await s.reload({ text: text(["10.244.1.14"]) });
  await s.reload({ text: text(["10.244.1.14"]).replace("203.0.113.0/24", "198.51.100.0/24") });
  t.deepEqual(s.kernel.deltas.slice(4), [true, false]);
  t.deepEqual(
    s.pending().map((x) => x.ms),
    [0],
  );
  s.runPending();
  t.is(s.reclaimed(), 3);
});

test("an apply() that installs nothing new, or an unchanged reload, collects nothing", async (t) => {
  const s = setup();
  const first = text(["10.244.1.10"]);
  await s.reload({ text: first });
  s.runPending();
  await s.dp.apply();
  await s.reload({ text: first });
  await s.reload({ bytes: Buffer.from(first) });
  t.deepEqual(s.pending(), []);
  t.is(s.reclaimed(), 1);
});

test("moved pods of the cluster (the kernel's source sets alone) force no collection", async (t) => {
  const s = setup();
  await s.reload({ text: text(["10.244.1.10"]) });
  await s.reload({
    cluster: [
      {
        name: "ns/p:v4",
        sources: ["10.245.0.1", "10.245.0.2"],
        destinations: ["198.51.100.0/24"],
        action: "Deny",
      },
      { name: "ns/q:v4", sources: ["10.245.0.3"], destinations: ["198.51.100.0/24"], action: "Deny" },
    ],
  });
  s.runPending();
  const before = s.reclaimed();
  await s.reload({
    clusterEdits: [
      { policy: "ns/p:v4", address: "10.245.0.2", add: false },
      { policy: "ns/q:v4", address: "10.245.0.2", add: true },
    ],
  });
  t.deepEqual(s.kernel.sourcesOnly.slice(-1), [true]);
  t.deepEqual(s.pending(), []);
  t.is(s.reclaimed(), before);
});

test("the file's bytes prepare as its text does", async (t) => {
  const dp = new InlineDataplane(new FakeKernel());
  const body = `# the café's pods\n${text(["10.244.1.10"])}`;
  const a = await dp.prepare({ text: body });
  const b = await dp.prepare({ bytes: new TextEncoder().encode(body) });
  t.true(a.ok && b.ok);
  if (a.ok && b.ok) t.deepEqual(a.view, b.view);
  const bad = await dp.prepare({ bytes: Buffer.from("gateway: [\n") });
  t.false(bad.ok);
});
