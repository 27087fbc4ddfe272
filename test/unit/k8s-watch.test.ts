// The cluster input against the in-process API server (test/helpers/kube-apiserver.ts):
// paged lists, watches resumed and relisted, bookmarks, outages and slow
// answers, and egressd's own check of what the API hands out. Loopback only.
import test, { type ExecutionContext } from "ava";
import { KubeConfig } from "../../inputs/k8s/client.js";
import { KubeApiServer, type ApiServerOptions } from "../helpers/kube-apiserver.js";
import { Cluster } from "../../core/k8s/cluster.js";
import { ClusterWatch } from "../../inputs/k8s/watch.js";

type Json = Record<string, unknown>;

const podObj = (
  ns: string,
  name: string,
  ip: string,
  labels: Record<string, string> = {},
  extra: Json = {},
) => ({
  apiVersion: "v1",
  kind: "Pod",
  metadata: { name, namespace: ns, labels, uid: `uid-${ns}-${name}` },
  spec: {
    containers: [{ name: "c", image: "busybox", env: [{ name: "BIG", value: "x".repeat(200) }] }],
    ...extra,
  },
  status: { phase: "Running", podIP: ip, podIPs: [{ ip }], conditions: [{ type: "Ready", status: "True" }] },
});
const nsObj = (name: string, labels: Record<string, string> = {}) => ({
  apiVersion: "v1",
  kind: "Namespace",
  metadata: { name, labels },
});
const policyObj = (ns: string, name: string, spec: Json) => ({
  apiVersion: "egressd.io/v1alpha1",
  kind: "EgressPolicy",
  metadata: { name, namespace: ns },
  spec: { podSelector: {}, destinations: ["198.51.100.0/24"], egressIPGroup: "payments", ...spec },
});

async function setup(
  t: ExecutionContext,
  opts: ApiServerOptions = {},
  watchOpts: { pageSize?: number } = {},
) {
  const api = new KubeApiServer({ bookmarkMs: 100, ...opts });
  await api.start();
  t.teardown(() => api.stop());
  const kc = new KubeConfig();
  kc.loadFromString(api.kubeconfig());
  const cluster = new Cluster();
  cluster.setGateway(
    [{ name: "payments", egressIPs: ["192.0.2.11"], uplink: "tor", namespaceSelector: {} }],
    new Set(),
  );
  const warnings: string[] = [];
  let changes = 0;
  const w = new ClusterWatch({
    kc,
    cluster,
    onChange: () => changes++,
    log: { info: () => {}, warn: (m) => warnings.push(m) },
    backoffMs: { first: 50, max: 200 },
    ...watchOpts,
  });
  t.teardown(() => w.stop());
  const sources = () =>
    Object.fromEntries(cluster.policyConfigs().map((p) => [p.name, [...p.sources].sort()]));
  return { api, kc, cluster, w, warnings, sources, changes: () => changes };
}

async function until(t: ExecutionContext, what: string, ok: () => boolean, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!ok()) {
    if (Date.now() > end) {
      t.fail(`timed out waiting for ${what}`);
      throw new Error(`timed out waiting for ${what}`);
    }
    await new Promise((r) => setTimeout(r, 10));
  }
}

test("the first list is read in pages and trimmed; synced only once every kind is in", async (t) => {
  const s = await setup(t, {}, { pageSize: 7 });
  s.api.apply(nsObj("shop"));
  for (let i = 0; i < 50; i++) s.api.apply(podObj("shop", `p${i}`, `10.244.1.${i + 1}`, { app: "web" }));
  s.api.apply(policyObj("shop", "web", { podSelector: { matchLabels: { app: "web" } } }));
  s.w.start();
  await s.w.synced;
  t.is(s.sources()["shop/web:v4"]?.length, 50);
  const podLists = s.api.requests.filter((r) => r.startsWith("GET /api/v1/pods?") && !r.includes("watch"));
  t.is(podLists.length, 8, "50 pods in pages of 7");
  t.true(podLists.slice(1).every((r) => r.includes("continue=")));
  t.true(s.w.status().synced);
  t.true(s.api.requests.some((r) => r.includes("watch=true") && r.includes("allowWatchBookmarks=true")));
});

test("watch events move pods: added, relabelled, deleted", async (t) => {
  const s = await setup(t);
  s.api.apply(policyObj("shop", "web", { podSelector: { matchLabels: { app: "web" } } }));
  s.w.start();
  await s.w.synced;
  s.api.apply(podObj("shop", "a", "10.244.1.10", { app: "web" }));
  await until(t, "pod a", () => s.sources()["shop/web:v4"]?.length === 1);
  s.api.apply(podObj("shop", "a", "10.244.1.10", { app: "db" }));
  await until(t, "pod a relabelled", () => s.sources()["shop/web:v4"]?.length === 0);
  s.api.apply(podObj("shop", "a", "10.244.1.10", { app: "web" }));
  await until(t, "pod a back", () => s.sources()["shop/web:v4"]?.length === 1);
  s.api.remove("Pod", "shop", "a");
  await until(t, "pod a deleted", () => s.sources()["shop/web:v4"]?.length === 0);
  t.pass();
});

test("pods that hold no pod address are left out by the API server: ended and hostNetwork pods, a pod that ends leaves", async (t) => {
  const s = await setup(t);
  s.api.apply(policyObj("shop", "web", { podSelector: { matchLabels: { app: "web" } } }));
  s.api.apply(podObj("shop", "live", "10.244.1.10", { app: "web" }));
  s.api.apply({ ...podObj("shop", "host", "10.0.0.5", { app: "web" }, { hostNetwork: true }) });
  const done = podObj("shop", "done", "10.244.1.11", { app: "web" });
  s.api.apply({ ...done, status: { ...done.status, phase: "Succeeded" } });
  s.w.start();
  await s.w.synced;
  t.is(s.cluster.counts().pods, 1, "only the live pod is listed");
  const podRequests = s.api.requests.filter((r) => r.startsWith("GET /api/v1/pods?"));
  t.true(podRequests.length >= 2);
  for (const r of podRequests)
    t.true(
      decodeURIComponent(r).includes(
        "fieldSelector=status.phase!=Succeeded,status.phase!=Failed,spec.hostNetwork=false",
      ),
      r,
    );
  // one more pod comes, then ends: the watch says it left (DELETED), and its address is gone
  s.api.apply(podObj("shop", "job", "10.244.1.12", { app: "web" }));
  await until(t, "pod job", () => s.sources()["shop/web:v4"]?.length === 2);
  const job = podObj("shop", "job", "10.244.1.12", { app: "web" });
  s.api.apply({ ...job, status: { ...job.status, phase: "Failed" } });
  await until(
    t,
    "pod job ended",
    () => s.sources()["shop/web:v4"]?.length === 1 && s.cluster.counts().pods === 1,
  );
  t.deepEqual(s.sources()["shop/web:v4"], ["10.244.1.10"]);
});

test("an API server that cannot select on spec.hostNetwork (before 1.28): a warning, and pods are selected on their phase alone", async (t) => {
  const s = await setup(t, { podFieldSelectors: ["status.phase"] });
  s.api.apply(policyObj("shop", "web", { podSelector: { matchLabels: { app: "web" } } }));
  s.api.apply(podObj("shop", "live", "10.244.1.10", { app: "web" }));
  s.api.apply(podObj("shop", "host", "10.0.0.5", { app: "web" }, { hostNetwork: true }));
  s.w.start();
  await s.w.synced;
  t.true(s.warnings.some((w) => w.includes("spec.hostNetwork")));
  // the hostNetwork pod is in the model now, and still never selected
  t.is(s.cluster.counts().pods, 2);
  t.deepEqual(s.sources()["shop/web:v4"], ["10.244.1.10"]);
  s.api.apply(podObj("shop", "b", "10.244.1.13", { app: "web" }));
  await until(t, "pod b over the watch", () => s.sources()["shop/web:v4"]?.length === 2);
  t.true(
    s.api.requests.some(
      (r) =>
        r.includes("watch=true") &&
        decodeURIComponent(r).includes("fieldSelector=status.phase!=Succeeded,status.phase!=Failed") &&
        !r.includes("hostNetwork"),
    ),
  );
});

test("a dropped watch resumes from its version without a new list; what happened meanwhile arrives", async (t) => {
  const s = await setup(t);
  s.api.apply(policyObj("shop", "web", {}));
  s.w.start();
  await s.w.synced;
  const lists = s.w.status().resources.find((r) => r.kind === "pods")!.lists;
  s.api.dropWatches();
  s.api.apply(podObj("shop", "a", "10.244.1.10"));
  await until(t, "pod a after the drop", () => s.sources()["shop/web:v4"]?.length === 1);
  t.is(s.w.status().resources.find((r) => r.kind === "pods")!.lists, lists, "no relist");
});

test("410 Gone after the log was compacted: a new list, and a pod deleted meanwhile is deleted here too", async (t) => {
  const s = await setup(t, { bookmarkMs: 60_000 });
  s.api.apply(policyObj("shop", "web", {}));
  s.api.apply(podObj("shop", "a", "10.244.1.10"));
  s.api.apply(podObj("shop", "b", "10.244.1.11"));
  s.w.start();
  await s.w.synced;
  t.is(s.sources()["shop/web:v4"]?.length, 2);
  const lists = s.w.status().resources.find((r) => r.kind === "pods")!.lists;
  s.api.setDown(true);
  s.api.remove("Pod", "shop", "a");
  s.api.apply(nsObj("other")); // moves the version past the pods' last one
  s.api.compact();
  s.api.setDown(false);
  await until(t, "pod a gone", () => s.sources()["shop/web:v4"]?.join() === "10.244.1.11");
  t.true(s.w.status().resources.find((r) => r.kind === "pods")!.lists > lists, "listed again");
});

test("bookmarks keep a quiet watch's version current: resumed after a compaction without a relist", async (t) => {
  const s = await setup(t, { bookmarkMs: 50 });
  s.api.apply(policyObj("shop", "web", {}));
  s.w.start();
  await s.w.synced;
  // Other kinds change: the pods watch is quiet, only bookmarks move its version.
  for (let i = 0; i < 5; i++) s.api.apply(nsObj(`ns${i}`));
  await new Promise((r) => setTimeout(r, 300));
  const lists = s.w.status().resources.find((r) => r.kind === "pods")!.lists;
  s.api.compact();
  s.api.dropWatches();
  s.api.apply(podObj("shop", "a", "10.244.1.10"));
  await until(t, "pod a", () => s.sources()["shop/web:v4"]?.length === 1);
  t.is(s.w.status().resources.find((r) => r.kind === "pods")!.lists, lists, "resumed from the bookmark");
});

test("an outage keeps the model, is reported until the server is back, and what changed meanwhile is reconciled", async (t) => {
  const s = await setup(t);
  s.api.apply(policyObj("shop", "web", {}));
  s.api.apply(podObj("shop", "a", "10.244.1.10"));
  s.w.start();
  await s.w.synced;
  s.api.setDown(true);
  await until(t, "the outage seen", () => s.w.status().outageSince !== undefined);
  t.false(s.w.status().connected);
  t.deepEqual(s.sources(), { "shop/web:v4": ["10.244.1.10"] }, "nothing forgotten");
  await new Promise((r) => setTimeout(r, 300));
  t.deepEqual(s.sources(), { "shop/web:v4": ["10.244.1.10"] }, "still nothing forgotten");
  s.api.apply(podObj("shop", "b", "10.244.1.11"));
  s.api.setDown(false);
  await until(t, "reconciled", () => s.sources()["shop/web:v4"]?.length === 2 && s.w.status().connected);
  t.is(s.w.status().outageSince, undefined);
  t.true(s.warnings.some((m) => /keeping what is known/.test(m)));
});

test("slow answers: the sync waits for them", async (t) => {
  const s = await setup(t);
  s.api.apply(policyObj("shop", "web", {}));
  s.api.apply(podObj("shop", "a", "10.244.1.10"));
  s.api.setDelay(200);
  s.w.start();
  await s.w.synced;
  t.deepEqual(s.sources(), { "shop/web:v4": ["10.244.1.10"] });
});

test("what the API hands out is checked here: a bad spec is refused with its field, a bad pod address is dropped and named", async (t) => {
  const s = await setup(t);
  s.api.applyUnchecked(policyObj("shop", "bad", { egressIP: "192.0.2.99" }));
  s.api.apply(policyObj("shop", "good", { destinations: ["203.0.113.0/24"] }));
  s.api.applyUnchecked(podObj("shop", "weird", "not-an-address"));
  s.api.apply(podObj("shop", "a", "10.244.1.10"));
  s.w.start();
  await s.w.synced;
  const bad = s.cluster.policyStates().find((p) => p.name === "bad")!;
  t.false(bad.accepted.ok);
  t.is(bad.accepted.field, "spec.egressIP");
  t.regex(bad.accepted.message, /unknown field/);
  t.deepEqual(s.sources(), { "shop/good:v4": ["10.244.1.10"] });
  t.true(
    s.warnings.some((m) =>
      m.includes('pod shop/weird: status.podIPs: "not-an-address" is not an IP address'),
    ),
  );
});
