// When the data plane collects the garbage a new plan leaves: at once after a
// plan made from scratch, once per burst of source patches, never for an
// apply() that installs nothing new. And its rehearsal of a pod move once
// the cluster's first plan is in force. Timers are run by hand.
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

/** `warmRounds`: the pod-move rehearsal's rounds (none unless a test is about it). */
function setup(warmRounds = 0) {
  const kernel = new DeltaKernel();
  const timers: { fn: () => void; ms: number; cancelled: boolean }[] = [];
  let reclaimed = 0;
  const dp = new InlineDataplane(kernel, {
    reclaim: () => reclaimed++,
    patchReclaimMs: 200,
    warmRounds,
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

const CLUSTER = [
  {
    name: "ns/p:v4",
    sources: ["10.245.0.1", "10.245.0.2"],
    destinations: ["198.51.100.0/24"],
    egressIP: "192.0.2.11",
    uplink: "tor",
  },
  { name: "ns/q:v4", sources: ["10.245.0.3"], destinations: ["198.51.100.0/24"], action: "Deny" as const },
];
const MOVE = [
  { policy: "ns/p:v4", address: "10.245.0.2", add: false },
  { policy: "ns/q:v4", address: "10.245.0.2", add: true },
];

test("the first cluster plan in force is followed by a rehearsed pod move, one round per timer turn, that changes nothing", async (t) => {
  const s = setup(3);
  const plain = setup(0);
  for (const x of [s, plain]) {
    await x.reload({ text: text(["10.244.1.10"]) });
    await x.reload({ cluster: CLUSTER });
  }
  const applies = s.kernel.deltas.length;
  const before = structuredClone(s.kernel.applied);
  let rounds = 0;
  // The collection and the first round are due at once; each round sets the next.
  while (s.pending().length > 0) {
    t.true(
      s.pending().every((x) => x.ms === 0),
      "nothing waits",
    );
    rounds++;
    s.runPending();
  }
  t.is(rounds, 4, "the collection with the first round's timer, then the three rounds (the last sets none)");
  t.is(s.kernel.deltas.length, applies, "the rehearsal applied nothing");
  t.deepEqual(s.kernel.applied, before);
  // A real move afterwards: the same kernel state as without the rehearsal.
  plain.runPending();
  for (const x of [s, plain]) await x.reload({ clusterEdits: MOVE });
  t.deepEqual(s.kernel.sourcesOnly.slice(-1), [true]);
  t.deepEqual(s.kernel.applied, plain.kernel.applied);
  // Never again: not after another cluster plan from scratch.
  await s.reload({ cluster: CLUSTER.map((p) => ({ ...p, destinations: ["198.51.100.0/25"] })) });
  s.runPending();
  t.deepEqual(s.pending(), []);
});

test("the rehearsal stops when another plan is committed meanwhile, and is not needed once pods have moved", async (t) => {
  const s = setup(5);
  await s.reload({ text: text(["10.244.1.10"]) });
  await s.reload({ cluster: CLUSTER });
  s.runPending(); // the collection, and the first round
  t.is(s.pending().length, 1, "the second round is due");
  await s.reload({ clusterEdits: MOVE });
  s.runPending();
  t.deepEqual(s.pending(), [], "the plan it rehearsed on is no longer in force: no third round");

  const moved = setup(5);
  await moved.reload({ text: text(["10.244.1.10"]) });
  await moved.reload({ cluster: CLUSTER });
  await moved.reload({ clusterEdits: MOVE });
  moved.runPending();
  t.deepEqual(moved.pending(), [], "a real move came before the first round");
});
