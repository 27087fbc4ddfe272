// The cluster's policies in the data plane: planned after the file's own, a
// missing group planned as Deny, and the incremental path (the model's
// address edits, patched into the classifier) giving the same kernel plan as
// the whole list planned from scratch (property test). Fake kernel, no root.
import test from "ava";
import fc from "fast-check";
import { stringify } from "yaml";
import { InlineDataplane, withCluster } from "../../daemon/dataplane.js";
import { Cluster, type PodInfo } from "../../core/k8s/cluster.js";
import type { PolicyObject } from "../../core/k8s/policy.js";
import type { Config } from "../../core/config/schema.js";
import { assertSamePlan, DeltaKernel, FakeKernel, natDecisions } from "../helpers/fake-kernel.js";

const FILE: Config = {
  gateway: { name: "gw-a1", site: "dc-a" },
  egressIPs: [
    { address: "192.0.2.11", interface: "lo" },
    { address: "192.0.2.12", interface: "lo" },
  ],
  uplinks: [{ name: "tor", interface: "eth1", nextHop: "10.1.1.0" }],
  egressIPGroups: [
    { name: "a", egressIPs: ["192.0.2.11"], uplink: "tor", namespaceSelector: {} },
    { name: "b", egressIPs: ["192.0.2.12"], uplink: "tor", namespaceSelector: {} },
  ],
  policies: [
    {
      name: "web",
      sources: ["10.244.0.0/16"],
      destinations: ["203.0.113.0/24"],
      egressIP: "192.0.2.11",
      uplink: "tor",
    },
  ],
};

const policy = (ns: string, name: string, app: string, dest: string, group: string): PolicyObject => ({
  kind: "EgressPolicy",
  namespace: ns,
  name,
  uid: `u-${name}`,
  generation: 1,
  created: 1,
  spec: { podSelector: { matchLabels: { app } }, destinations: [dest], egressIPGroup: group },
});

async function commit(
  dp: InlineDataplane,
  input: Parameters<InlineDataplane["prepare"]>[0],
): Promise<boolean> {
  const p = await dp.prepare(input);
  if (!p.ok) throw new Error(p.errors.map((e) => e.message).join("; "));
  await dp.commit(p.id);
  await dp.apply();
  return p.unchanged;
}

test("the cluster's policies come after the file's, groups resolved; a group the file lacks is planned as Deny", (t) => {
  const merged = withCluster(FILE as never, [
    {
      name: "ns/p:v4",
      sources: ["10.245.0.1"],
      destinations: ["198.51.100.0/24"],
      action: "SNAT",
      egressIPGroup: "b",
    },
    {
      name: "ns/q:v4",
      sources: ["10.245.0.2"],
      destinations: ["198.51.100.0/24"],
      action: "SNAT",
      egressIPGroup: "gone",
    },
  ]);
  t.deepEqual(
    merged.policies.map((p) => [p.name, p.action ?? "SNAT", p.egressIP, p.uplink]),
    [
      ["web", "SNAT", "192.0.2.11", "tor"],
      ["ns/p:v4", "SNAT", "192.0.2.12", "tor"],
      ["ns/q:v4", "Deny", undefined, undefined],
    ],
  );
});

test("pod moves reach the kernel as a source delta, and the plan equals one made from the whole list", async (t) => {
  const kernel = new DeltaKernel();
  const dp = new InlineDataplane(kernel);
  const c = new Cluster();
  c.setGateway(FILE.egressIPGroups!, new Set(["web"]));
  c.upsertPolicy(policy("ns", "p", "x", "198.51.100.0/24", "a"));
  c.upsertPolicy(policy("ns", "q", "y", "192.0.2.128/25", "b"));
  const pods: PodInfo[] = Array.from({ length: 20 }, (_, i) => ({
    uid: `pod-${i}`,
    namespace: "ns",
    name: `pod-${i}`,
    labels: { app: i % 2 ? "x" : "y" },
    ips: [`10.245.0.${i + 1}`],
    hostNetwork: false,
    phase: "Running",
    created: i,
  }));
  for (const p of pods) c.upsertPod(p);
  await commit(dp, { text: stringify(FILE) });
  c.takeChanges();
  await commit(dp, { cluster: c.policyConfigs() });
  kernel.deltas = [];
  kernel.sourcesOnly = [];
  c.upsertPod({ ...pods[0]!, labels: { app: "x" } });
  c.upsertPod({ ...pods[1]!, labels: { app: "none" } });
  const ch = c.takeChanges();
  t.false(ch.structural);
  t.is(ch.edits.length, 3);
  await commit(dp, { clusterEdits: ch.edits });
  t.deepEqual(kernel.deltas, [true], "the kernel got a delta, not a whole plan");
  t.deepEqual(kernel.sourcesOnly, [true], "of the source sets alone");
  const incremental = natDecisions(kernel.applied!);
  const fullKernel = new FakeKernel();
  const full = new InlineDataplane(fullKernel);
  await commit(full, { text: stringify(FILE) });
  await commit(full, { cluster: c.policyConfigs() });
  t.is(incremental, natDecisions(fullKernel.applied!));
});

test("edits that do not fit the committed policies are refused (the caller sends the whole list)", async (t) => {
  const dp = new InlineDataplane(new FakeKernel());
  await commit(dp, { text: stringify(FILE) });
  await commit(dp, {
    cluster: [
      {
        name: "ns/p:v4",
        sources: ["10.245.0.1"],
        destinations: ["198.51.100.0/24"],
        action: "SNAT",
        egressIPGroup: "a",
      },
    ],
  });
  const p = await dp.prepare({ clusterEdits: [{ policy: "ns/p:v4", address: "10.245.0.9", add: false }] });
  t.false(p.ok);
  const q = await dp.prepare({ clusterEdits: [{ policy: "ns/zz:v4", address: "10.245.0.9", add: true }] });
  t.false(q.ok);
});

test("property: any sequence of pod events, applied as edits, plans what the whole list plans", async (t) => {
  let sourcesOnly = 0;
  let planned = 0;
  await fc.assert(
    fc.asyncProperty(
      fc.array(
        fc.record({
          pod: fc.nat(9),
          app: fc.constantFrom("x", "y", "z"),
          ip: fc.nat(5),
          // Some pods get an address inside a destination (never advertised): that edit is planned again.
          inDestination: fc.boolean(),
          del: fc.boolean(),
        }),
        { minLength: 1, maxLength: 15 },
      ),
      async (events) => {
        const kernel = new DeltaKernel();
        const dp = new InlineDataplane(kernel);
        const c = new Cluster();
        c.setGateway(FILE.egressIPGroups!, new Set(["web"]));
        c.upsertPolicy(policy("ns", "p", "x", "198.51.100.0/24", "a"));
        c.upsertPolicy(policy("ns", "q", "y", "198.51.100.0/25", "b"));
        c.upsertPolicy(policy("ns", "r", "z", "192.0.2.128/25", "a"));
        await commit(dp, { text: stringify(FILE) });
        c.takeChanges();
        const first = await dp.prepare({ cluster: c.policyConfigs() });
        if (!first.ok) throw new Error("the first cluster plan failed");
        let view = first.view;
        await dp.commit(first.id);
        await dp.apply();
        for (const e of events) {
          if (e.del) c.deletePod(`pod-${e.pod}`);
          else
            c.upsertPod({
              uid: `pod-${e.pod}`,
              namespace: "ns",
              name: `pod-${e.pod}`,
              labels: { app: e.app },
              ips: [e.inDestination ? `192.0.2.${200 + e.ip}` : `10.245.0.${e.ip + 1}`],
              hostNetwork: false,
              phase: "Running",
              created: e.pod,
            });
          const ch = c.takeChanges();
          const p = await dp.prepare(
            ch.structural ? { cluster: c.policyConfigs() } : { clusterEdits: ch.edits },
          );
          if (!p.ok) throw new Error(p.errors.map((x) => x.message).join("; "));
          await dp.commit(p.id);
          await dp.apply();
          view = p.view;
        }
        sourcesOnly += kernel.sourcesOnly.filter(Boolean).length;
        planned += kernel.sourcesOnly.filter((x) => !x).length;
        const full = new FakeKernel();
        const fdp = new InlineDataplane(full);
        await commit(fdp, { text: stringify(FILE) });
        const whole = await fdp.prepare({ cluster: c.policyConfigs() });
        if (!whole.ok) throw new Error("the whole list failed to plan");
        await fdp.commit(whole.id);
        await fdp.apply();
        // What is not NAT sources, and what health and BGP read, is the same too.
        assertSamePlan({ kernel: kernel.applied!, view }, { kernel: full.applied!, view: whole.view });
      },
    ),
    { numRuns: 80 },
  );
  t.log(`applies of the source sets alone: ${sourcesOnly}; planned again: ${planned}`);
  t.true(sourcesOnly > 0 && planned > 0, "both paths were taken");
});

test("at 12k pods (arrays reused from replaced plans), a run of moves plans what the whole list plans", async (t) => {
  const ip = (k: number) => `10.${64 + (k >> 16)}.${(k >> 8) & 255}.${k & 255}`;
  const names = ["ns/p:v4", "ns/q:v4", "ns/r:v4"];
  const dests = ["198.51.100.0/24", "192.0.2.128/25", "203.0.113.0/25"];
  const lists: string[][] = [[], [], []];
  for (let k = 0; k < 12_000; k++) lists[k % 3]!.push(ip(k));
  const configs = () =>
    names.map((name, i) => ({
      name,
      sources: [...lists[i]!],
      destinations: [dests[i]!],
      action: "SNAT" as const,
      egressIPGroup: i === 1 ? "b" : "a",
    }));
  const kernel = new DeltaKernel();
  const dp = new InlineDataplane(kernel);
  await commit(dp, { text: stringify(FILE) });
  await commit(dp, { cluster: configs() });
  let seed = 7;
  const rand = (n: number) => (seed = (seed * 1103515245 + 12345) % 2 ** 31) % n;
  for (let e = 0; e < 60; e++) {
    const from = rand(3);
    const to = (from + 1 + rand(2)) % 3;
    const at = rand(lists[from]!.length);
    const address = lists[from]![at]!;
    lists[from]!.splice(at, 1);
    lists[to]!.push(address);
    await commit(dp, {
      clusterEdits: [
        { policy: names[from]!, address, add: false },
        { policy: names[to]!, address, add: true },
      ],
    });
    if (e % 20 === 19) {
      const full = new FakeKernel();
      const fdp = new InlineDataplane(full);
      await commit(fdp, { text: stringify(FILE) });
      await commit(fdp, { cluster: configs() });
      t.is(natDecisions(kernel.applied!), natDecisions(full.applied!), `after ${e + 1} moves`);
    }
  }
  t.true(kernel.sourcesOnly.filter(Boolean).length >= 50, "moves took the sources-only path");
});
