// Status written back per gateway with server-side apply: each gateway owns
// its entry, a write replaces only its own, nothing unchanged is written
// again, conditions keep their transition time, and a refused policy gets
// one Warning Event per generation. Against the in-process API server.
import test from "ava";
import { KubeConfig } from "../../inputs/k8s/client.js";
import { KubeApiServer } from "../helpers/kube-apiserver.js";
import { StatusWriter, type Programmed } from "../../inputs/k8s/status-writer.js";
import { TokenBucket } from "../../lib/token-bucket.js";
import type { PolicyState } from "../../core/k8s/cluster.js";

type Json = Record<string, unknown>;

async function setup(t: import("ava").ExecutionContext) {
  const api = new KubeApiServer();
  await api.start();
  t.teardown(() => api.stop());
  const kc = new KubeConfig();
  kc.loadFromString(api.kubeconfig());
  const obj = api.apply({
    apiVersion: "egressd.io/v1alpha1",
    kind: "EgressPolicy",
    metadata: { name: "card-db", namespace: "payments" },
    spec: { podSelector: {}, destinations: ["198.51.100.0/24"], egressIPGroup: "payments" },
  });
  const m = obj.metadata as Json;
  let clock = Date.parse("2026-12-02T10:00:00Z");
  const writer = (gateway: string) =>
    new StatusWriter({ kc, gateway, site: "dc-a", now: () => new Date(clock), log: { warn: () => {} } });
  const state = (over: Partial<PolicyState> = {}): PolicyState => ({
    key: "EgressPolicy/payments/card-db",
    kind: "EgressPolicy",
    namespace: "payments",
    name: "card-db",
    uid: m.uid as string,
    generation: m.generation as number,
    accepted: { ok: true, reason: "Accepted", message: "ok" },
    selectedPods: 3,
    conflictingPods: 0,
    programmedAs: [],
    ...over,
  });
  const gateways = () =>
    ((api.get("EgressPolicy", "payments", "card-db")!.status as Json | undefined)?.gateways ?? []) as Json[];
  return { api, writer, state, gateways, tick: (ms: number) => (clock += ms) };
}

const done = (generation: number): Map<string, Programmed> =>
  new Map([["EgressPolicy/payments/card-db", { generation, ok: true, message: "in the data plane" }]]);

test("each gateway writes its own entry; one gateway's write leaves the other's alone", async (t) => {
  const s = await setup(t);
  const a = s.writer("gw-a1");
  const b = s.writer("gw-a2");
  await a.update([s.state()], done(1));
  await b.update([s.state({ selectedPods: 2 })], new Map());
  t.deepEqual(
    s
      .gateways()
      .map((g) => [
        g.gateway,
        g.selectedPods,
        (g.conditions as Json[]).map((c) => `${c.type}=${c.status}/${c.reason}`),
      ]),
    [
      ["gw-a1", 3, ["Accepted=True/Accepted", "Programmed=True/Programmed"]],
      ["gw-a2", 2, ["Accepted=True/Accepted", "Programmed=False/Pending"]],
    ],
  );
  const managers = (
    (s.api.get("EgressPolicy", "payments", "card-db")!.metadata as Json).managedFields as Json[]
  ).map((f) => f.manager);
  t.deepEqual(managers.sort(), ["egressd/gw-a1", "egressd/gw-a2"]);
  // gw-a1 again, with a change: only its entry moves.
  s.tick(5000);
  await a.update([s.state({ selectedPods: 4 })], done(1));
  t.deepEqual(
    s.gateways().map((g) => [g.gateway, g.selectedPods]),
    [
      ["gw-a1", 4],
      ["gw-a2", 2],
    ],
  );
  // Accepted did not change status: its transition time stays.
  const acc = (s.gateways()[0]!.conditions as Json[]).find((c) => c.type === "Accepted")!;
  t.is(acc.lastTransitionTime, "2026-12-02T10:00:00Z");
  t.is(s.gateways()[0]!.observedGeneration, 1);
});

test("nothing unchanged is written again", async (t) => {
  const s = await setup(t);
  const a = s.writer("gw-a1");
  await a.update([s.state()], done(1));
  const patches = () => s.api.requests.filter((r) => r.startsWith("PATCH")).length;
  const before = patches();
  s.tick(60_000);
  await a.update([s.state()], done(1));
  t.is(patches(), before);
  t.is(a.stats.writes, 1);
});

test("a round of some policies leaves what was written for the others; a round of every policy forgets those gone", async (t) => {
  const s = await setup(t);
  const a = s.writer("gw-a1");
  await a.update([s.state()], done(1));
  // Pods moved in other policies only: nothing to write, and card-db is not forgotten.
  await a.update([], done(1), true);
  await a.update([s.state()], done(1), true);
  t.is(a.stats.writes, 1);
  await a.update([s.state({ selectedPods: 5 })], done(1), true);
  t.is(a.stats.writes, 2);
  t.is(s.gateways()[0]!.selectedPods, 5);
  // Every policy, and card-db is not among them: forgotten, so written again when it is back.
  await a.update([], done(1));
  await a.update([s.state({ selectedPods: 5 })], done(1), true);
  t.is(a.stats.writes, 3);
});

test("a write that failed is made again by the next round, also a round of other policies", async (t) => {
  const s = await setup(t);
  const a = s.writer("gw-a1");
  s.api.setDown(true);
  await a.update([s.state({ selectedPods: 7 })], done(1));
  t.is(a.stats.errors, 1);
  s.api.setDown(false);
  await a.update([], done(1), true);
  t.is(a.stats.writes, 1);
  t.is(s.gateways()[0]!.selectedPods, 7);
});

test("a refused policy: Accepted False with the field, one Warning Event per generation and reason", async (t) => {
  const s = await setup(t);
  const a = s.writer("gw-a1");
  const refused = s.state({
    accepted: {
      ok: false,
      reason: "EgressIPGroupNotFound",
      message: 'egress IP group "payments" has no IPv4 address on this gateway',
      field: "spec.egressIPGroup",
    },
  });
  await a.update([refused], done(1));
  await a.update([{ ...refused, selectedPods: 9 }], done(1));
  const [entry] = s.gateways();
  const conds = Object.fromEntries((entry!.conditions as Json[]).map((c) => [c.type, c]));
  t.like(conds.Accepted, { status: "False", reason: "EgressIPGroupNotFound" });
  t.regex(conds.Accepted!.message as string, /^spec\.egressIPGroup: egress IP group/);
  t.like(conds.Programmed, { status: "False", reason: "Blocked" });
  t.is(s.api.events.length, 1);
  t.like(s.api.events[0], {
    reason: "EgressIPGroupNotFound",
    type: "Warning",
    involvedObject: { kind: "EgressPolicy", name: "card-db", namespace: "payments" },
  });
});

test("the test server's apply semantics: taking another manager's entry without force is a conflict", async (t) => {
  const s = await setup(t);
  await s.writer("gw-a1").update([s.state()], done(1));
  const body = JSON.stringify({
    apiVersion: "egressd.io/v1alpha1",
    kind: "EgressPolicy",
    metadata: { name: "card-db", namespace: "payments" },
    status: { gateways: [{ gateway: "gw-a1", observedGeneration: 1, selectedPods: 0, conditions: [] }] },
  });
  const r = await fetch(
    `${s.api.url}/apis/egressd.io/v1alpha1/namespaces/payments/egresspolicies/card-db/status?fieldManager=intruder`,
    {
      method: "PATCH",
      body,
      headers: { "content-type": "application/apply-patch+yaml", authorization: "Bearer test-token" },
    },
  );
  t.is(r.status, 409);
  t.is(s.gateways()[0]!.selectedPods, 3);
});

test("a gateway that holds no address of the policy's group says so: Programmed False, EgressIPGroupNotHeld", async (t) => {
  const s = await setup(t);
  await s.writer("gw-a2").update([s.state({ notHeld: true })], done(1));
  const programmed = ((s.gateways()[0]!.conditions as Json[]) ?? []).find((c) => c.type === "Programmed");
  t.like(programmed, { status: "False", reason: "EgressIPGroupNotHeld" });
  t.regex(programmed!.message as string, /gateways that hold one serve its pods/);
});

test("every API write waits for a token of the writer's bucket: a status, and the Warning Event of a refused policy", async (t) => {
  const s = await setup(t);
  class Counting extends TokenBucket {
    taken = 0;
    override take(): Promise<void> {
      this.taken++;
      return super.take();
    }
  }
  const bucket = new Counting(1000, 1000);
  const kc = new KubeConfig();
  kc.loadFromString(s.api.kubeconfig());
  const w = new StatusWriter({ kc, gateway: "gw-a1", site: "dc-a", bucket, log: { warn: () => {} } });
  await w.update([s.state()], done(1));
  t.is(bucket.taken, 1);
  await w.update([s.state()], done(1));
  t.is(bucket.taken, 1, "nothing changed: nothing written, no token");
  await w.update(
    [s.state({ accepted: { ok: false, reason: "Invalid", message: "bad", field: "spec.destinations" } })],
    done(1),
  );
  t.is(bucket.taken, 3, "the status and the Event");
  t.is(w.stats.writes + w.stats.events, 3);
});
