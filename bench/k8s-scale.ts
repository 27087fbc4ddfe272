// egressd following a large cluster: PODS pods in NAMESPACES namespaces and
// POLICIES policies, served by the in-process API server of the tests
// (test/helpers/kube-apiserver.ts; no real API server runs here, so the
// API's own time is the test server's, and is printed apart).
//
// Part 1, in this process: the cluster input alone (informers, trimming,
// the cluster model). Prints the time to list and sync, the API server's
// share of it (serving the pages), the heap the model keeps, the time
// from an API write to the model's change, and the data plane's own work
// per relabel (planned and patched over a recording kernel: no netlink,
// no thread, no other process).
//
// Part 2, egressd as a process in a network namespace with the real kernel
// (bench/scale-lab.ts, policies only from the cluster): prints the time from
// start to every policy programmed (and the API server's share of it), the
// RSS, and for EVENTS pod relabels the time from the API write to the element
// in the kernel (`nft monitor`), as median and p99.
//
//   node dist/bench/k8s-scale.js [--pods 100000] [--namespaces 10000] [--policies 1000]
//                                [--events 30] [--gap-ms 250] [--part 1|2|both]
//
// The cluster: namespaces ns-N labelled tenant=t-(N % 100); each holds
// PODS/NAMESPACES pods labelled app=a-(their index there % 10). 50 ClusterEgressPolicies
// select every pod (tenants two by two); the other policies are
// EgressPolicies, one per namespace ns-0.., each selecting app=a-(i % 10)
// there, each with its own destination. Egress IP groups g-0..g-9.
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { KubeConfig } from "../inputs/k8s/client.js";
import { KubeApiServer, unixForwarder } from "../test/helpers/kube-apiserver.js";
import { Cluster } from "../core/k8s/cluster.js";
import { ClusterWatch } from "../inputs/k8s/watch.js";
import { isRunning, spawnDetached } from "../lib/exec.js";
import { median, percentile } from "../lib/stats.js";
import { sleep, waitFor } from "../lib/wait.js";
import { destination } from "./scale-config.js";
import { ScaleLab } from "./scale-lab.js";
import { podObject as podAt } from "./k8s-objects.js";
import { NODE_FLAGS } from "../daemon/node-flags.js";
import { InlineDataplane, type PrepareInput } from "../daemon/dataplane.js";
import type { GatewayConfig } from "../core/config/gateway-config.js";
import { FakeKernel } from "../test/helpers/fake-kernel.js";

const { values: args } = parseArgs({
  options: {
    pods: { type: "string", default: "100000" },
    namespaces: { type: "string", default: "10000" },
    policies: { type: "string", default: "1000" },
    events: { type: "string", default: "30" },
    // Between two relabels of part 2: the latency of one event, not the queue behind a burst of them.
    "gap-ms": { type: "string", default: "250" },
    part: { type: "string", default: "both" },
    // Extra flags for egressd's node, e.g. "--cpu-prof --cpu-prof-dir=/tmp/prof".
    "node-flags": { type: "string", default: "" },
  },
});
const PODS = Number(args.pods);
const NAMESPACES = Number(args.namespaces);
const POLICIES = Number(args.policies);
const EVENTS = Number(args.events);
const CLUSTER_POLICIES = Math.min(50, POLICIES);
const GROUPS = 10;
/** How long after its first programming egressd is taken as settled (part 2 prints events after it apart). */
const SETTLE_MS = 2000;

type Json = Record<string, unknown>;

const podIp = (k: number) => `10.${64 + (k >> 16)}.${(k >> 8) & 255}.${k & 255}`;
const nsOf = (k: number) => k % NAMESPACES;
/** The pod's index in its namespace, modulo 10: every namespace has pods of every app. */
const appOf = (k: number) => Math.floor(k / NAMESPACES) % 10;

/** Pod k of the cluster (in namespace ns-(k % NAMESPACES)), with app label `app`. */
const podObject = (k: number, app = appOf(k)): Json => podAt(k, `ns-${nsOf(k)}`, podIp(k), `a-${app}`);

function populate(api: KubeApiServer): void {
  for (let n = 0; n < NAMESPACES; n++)
    api.apply({
      apiVersion: "v1",
      kind: "Namespace",
      metadata: { name: `ns-${n}`, labels: { tenant: `t-${n % 100}` } },
    });
  for (let k = 0; k < PODS; k++) api.apply(podObject(k));
  for (let i = 0; i < CLUSTER_POLICIES; i++)
    api.apply({
      apiVersion: "egressd.io/v1alpha1",
      kind: "ClusterEgressPolicy",
      metadata: { name: `tenants-${i}` },
      spec: {
        namespaceSelector: {
          matchExpressions: [{ key: "tenant", operator: "In", values: [`t-${2 * i}`, `t-${2 * i + 1}`] }],
        },
        podSelector: {},
        destinations: [destination(i)],
        egressIPGroup: `g-${i % GROUPS}`,
      },
    });
  for (let i = 0; i < POLICIES - CLUSTER_POLICIES; i++)
    api.apply({
      apiVersion: "egressd.io/v1alpha1",
      kind: "EgressPolicy",
      metadata: { name: `app-${i}`, namespace: `ns-${i}` },
      spec: {
        podSelector: { matchLabels: { app: `a-${i % 10}` } },
        destinations: [destination(CLUSTER_POLICIES + i)],
        egressIPGroup: `g-${i % GROUPS}`,
      },
    });
}

/** The k-th pod to relabel in event e: one of namespace ns-e's pods that policy app-e does not select yet. */
function relabelled(e: number): { k: number; app: number } {
  const i = e % (POLICIES - CLUSTER_POLICIES);
  // pods of ns-i are i, i + NAMESPACES, ...; pick one whose app differs from the policy's
  for (let k = i; k < PODS; k += NAMESPACES) if (appOf(k) !== i % 10) return { k, app: i % 10 };
  throw new Error(`no pod to relabel in ns-${i}`);
}

/** What the gateway's file holds besides the lab's own settings: no policies of its own, the groups. */
const fileSettings = () => ({
  policies: [],
  probes: [],
  dataplane: { markMask: 0x0fff0000 },
  egressIPGroups: Array.from({ length: GROUPS }, (_, g) => ({
    name: `g-${g}`,
    egressIPs: [`192.0.2.${g + 1}`],
    uplink: "tor",
    namespaceSelector: {},
  })),
});

/** A gateway file for the data plane alone (part 1): the groups' addresses on lo, one uplink. */
const fileConfig = (): GatewayConfig => ({
  gateway: { name: "gw", site: "a" },
  egressIPs: Array.from({ length: GROUPS }, (_, g) => ({ address: `192.0.2.${g + 1}`, interface: "lo" })),
  uplinks: [{ name: "tor", interface: "eth1", nextHop: "10.1.1.0" }],
  ...fileSettings(),
});

const fmt = (ms: number) => `${ms.toFixed(ms < 10 ? 2 : 0)} ms`;
const mb = (b: number) => `${(b / 2 ** 20).toFixed(0)} MB`;

async function part1(): Promise<void> {
  const api = new KubeApiServer({ logSize: PODS + NAMESPACES + POLICIES + 10_000 });
  await api.start();
  const t0 = performance.now();
  populate(api);
  console.log(
    `cluster: ${PODS} pods, ${NAMESPACES} namespaces, ${POLICIES} policies (${CLUSTER_POLICIES} cluster-scoped) made in ${fmt(performance.now() - t0)}`,
  );
  const kc = new KubeConfig();
  kc.loadFromString(api.kubeconfig());
  const cluster = new Cluster();
  cluster.setGateway(
    Array.from({ length: GROUPS }, (_, g) => ({
      name: `g-${g}`,
      egressIPs: [`192.0.2.${g + 1}`],
      uplink: "tor",
      namespaceSelector: {},
    })),
    new Set(),
  );
  let changed: (() => void) | undefined;
  const w = new ClusterWatch({
    kc,
    cluster,
    onChange: () => changed?.(),
    log: { info: () => {}, warn: (m) => console.log(`warn: ${m}`) },
  });
  global.gc?.();
  const heap0 = process.memoryUsage().heapUsed;
  const s0 = performance.now();
  w.start();
  await w.synced;
  const syncMs = performance.now() - s0;
  const c0 = performance.now();
  const configs = cluster.policyConfigs();
  const configsMs = performance.now() - c0;
  global.gc?.();
  const heap = process.memoryUsage().heapUsed - heap0;
  const selected = new Set(configs.flatMap((p) => p.sources)).size;
  console.log(
    `part 1 (this process): synced in ${fmt(syncMs)} (list pages, trimming, model), of which the API server's own answers ${fmt(api.listMs)} ` +
      `(here in the same process): ${fmt(syncMs - api.listMs)} without; ${selected} pod addresses selected; ` +
      `the policies as the data plane takes them made in ${fmt(configsMs)}; the model and the informers' caches hold ${mb(heap)} of heap` +
      (global.gc ? "" : " (run with --expose-gc for a collected figure)"),
  );
  const lat: number[] = [];
  for (let e = 0; e < EVENTS; e++) {
    const { k, app } = relabelled(e);
    const done = new Promise<number>((resolve) => (changed = () => resolve(performance.now())));
    const t = performance.now();
    api.apply(podObject(k, app));
    lat.push((await done) - t);
    changed = undefined;
    cluster.takeChanges();
  }
  console.log(
    `part 1: API write to the model's change (watch delivery included): median ${fmt(median(lat))}, p99 ${fmt(percentile(lat, 99))} over ${EVENTS}`,
  );

  // The data plane's own work per event, alone: the model's edits prepared, committed and applied by an
  // InlineDataplane over a recording kernel (no netlink, no other thread, no other process).
  const dp = new InlineDataplane(new FakeKernel());
  const put = async (input: PrepareInput) => {
    const p = await dp.prepare(input);
    if (!p.ok) throw new Error(p.errors.map((e) => e.message).join("; "));
    await dp.commit(p.id);
    await dp.apply();
    return p;
  };
  await put({ config: fileConfig() });
  await put({ cluster: cluster.policyConfigs() });
  cluster.takeChanges();
  const own: number[] = [];
  let alone = 0;
  for (let e = EVENTS; e < 2 * EVENTS; e++) {
    const { k, app } = relabelled(e);
    const done = new Promise<void>((resolve) => (changed = resolve));
    api.apply(podObject(k, app));
    await done;
    changed = undefined;
    const ch = cluster.takeChanges();
    const t = performance.now();
    const p = await put(ch.structural ? { cluster: cluster.policyConfigs() } : { clusterEdits: ch.edits });
    own.push(performance.now() - t);
    if (p.ok && p.sourcesOnly) alone++;
  }
  console.log(
    `part 1: a relabel's edits prepared, committed and applied by the data plane alone (recording kernel): ` +
      `median ${fmt(median(own))}, p99 ${fmt(percentile(own, 99))} over ${EVENTS} (${alone} of them the kernel's source sets alone)`,
  );
  await w.stop();
  await api.stop();
}

async function part2(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), "egressd-k8s-bench-"));
  const socket = join(dir, "api.sock");
  const kubeconfig = join(dir, "kubeconfig");
  const api = new KubeApiServer({ logSize: PODS + NAMESPACES + POLICIES + 10_000 });
  await api.start(socket);
  writeFileSync(kubeconfig, api.kubeconfig());
  populate(api);
  const lab = await ScaleLab.start({
    tag: "k8s",
    policies: 1,
    sources: 1,
    probes: 0,
    probeIntervalMs: 100,
    peers: 1,
    bfdIntervalMs: 100,
    egressd: new URL("../daemon/cli.js", import.meta.url).pathname,
    egressIPs: GROUPS,
    ownSignals: false,
    // Each event's own reload time is logged at debug.
    runArgs: ["--log-level", "debug"],
    ...(args["node-flags"] ? { nodeFlags: [...NODE_FLAGS, ...args["node-flags"].split(" ")] } : {}),
    configure: (c) => ({ ...c, ...fileSettings(), kubernetes: { kubeconfig } }),
    beforeStart: async (sb) => {
      spawnDetached(["node", "-e", unixForwarder, socket], { netns: sb.ns("gw") });
      await sleep(200);
    },
  });
  try {
    const started = Date.now();
    const at = (j: Json) => Date.parse(j.time as string);
    const readyMs = await lab.waitReady(300_000);
    const applied = () =>
      lab
        .logLines()
        .map((l) => JSON.parse(l) as Json)
        .filter((j) => j.msg === "kubernetes: policies applied");
    await waitFor("the cluster's policies programmed", async () => applied().length > 0, 600_000, 200);
    const first = applied()[0]!;
    // The test API server runs in this process: the time it spent making list answers is the API's own.
    const apiMs = api.listMs;
    const synced = lab
      .logLines()
      .map((l) => JSON.parse(l) as Json)
      .find((j) => j.msg === "kubernetes: synced");
    console.log(
      `part 2 (egressd in a namespace): /readyz ${fmt(readyMs)} after start; synced ${fmt(at(synced!) - started)} after start; ` +
        `every policy programmed ${fmt(at(first) - started)} after start (that reload: ${first.ms as number} ms), ` +
        `of which the API server's own answers ${fmt(apiMs)}: ${fmt(at(first) - started - apiMs)} without; RSS ${lab.rssMb().toFixed(0)} MB`,
    );
    console.log(`part 2: the start: ${lab.startStepsText()}`);
    const lat: number[] = [];
    /** Latencies of the events sent more than SETTLE_MS after the first programming (see below). */
    const settled: number[] = [];
    const early: string[] = [];
    // RSS read after every event: V8 collects when its heap has grown, so the last reading alone can miss the peak.
    const rss: number[] = [];
    for (let e = 0; e < EVENTS; e++) {
      const { k, app } = relabelled(e);
      const seen = await lab.elementAdded(podIp(k));
      const t = performance.now();
      const sentAt = Date.now();
      api.apply(podObject(k, app));
      lat.push((await seen()) - t);
      if (sentAt - at(first) > SETTLE_MS) settled.push(lat.at(-1)!);
      else early.push(`${fmt(lat.at(-1)!)} (sent ${sentAt - at(first)} ms after)`);
      rss.push(lab.rssMb());
      await sleep(Number(args["gap-ms"]));
    }
    const perEvent = applied().slice(1);
    // From the watch event in egressd (its handler's wall-clock time, logged as changeAt) to the
    // watcher's notice of the element: egressd's path alone, without the API server and the link to it.
    // Each event's reload: the last one whose change came before the element's notice.
    const changeAts = perEvent.map((j) => j.changeAt).filter((x): x is number => typeof x === "number");
    const fromEvent: number[] = [];
    for (let e = 0; e < EVENTS; e++) {
      const seen = lab.noticedAt.get(podIp(relabelled(e).k));
      const from = seen === undefined ? undefined : changeAts.filter((c) => c <= seen).at(-1);
      if (seen !== undefined && from !== undefined) fromEvent.push(seen - from);
    }
    const ms = perEvent.map((j) => j.ms as number);
    const full = perEvent.filter((j) => j.edits === undefined).length;
    const planned = perEvent.filter((j) => j.edits !== undefined && j.sourcesOnly !== true).length;
    if (planned > 0)
      console.log(
        `part 2: ${planned} of ${perEvent.length} reloads of edits were planned again (not the kernel's source sets alone)`,
      );
    if (full > 0)
      console.log(
        `part 2: ${full} of ${perEvent.length} reloads after the first carried the whole list, not edits`,
      );
    // The events of the first seconds after the first programming wait behind what follows it once:
    // the data plane's collection of the initial plan's garbage, the first status write of every
    // policy, the first restart cache. Printed apart, so that neither hides the other.
    console.log(
      `part 2: API write to the element in the kernel: median ${fmt(median(lat))}, p99 ${fmt(percentile(lat, 99))}, max ${fmt(Math.max(...lat))} over ${EVENTS} relabels ${args["gap-ms"]} ms apart; ` +
        (settled.length > 0
          ? `of those sent ${SETTLE_MS / 1000} s or more after the first programming (${settled.length}): median ${fmt(median(settled))}, p99 ${fmt(percentile(settled, 99))}; `
          : "") +
        `egressd's own reload time per event: median ${fmt(median(ms))} (prepared off the main thread in ${fmt(median(perEvent.map((j) => j.prepareMs as number)))}); ` +
        `RSS over the events ${Math.min(...rss).toFixed(0)}-${Math.max(...rss).toFixed(0)} MB, after ${lab.rssMb().toFixed(0)} MB`,
    );
    if (early.length > 0) console.log(`part 2: the events sent before then, in order: ${early.join(", ")}`);
    if (fromEvent.length > 0)
      console.log(
        `part 2: the watch event in egressd to the element in the kernel: median ${fmt(median(fromEvent))}, p99 ${fmt(percentile(fromEvent, 99))}, ` +
          `max ${fmt(Math.max(...fromEvent))} over ${fromEvent.length}`,
      );
    // Where the reconciles of the events went: per target, the median of the logged times.
    const targets = new Map<string, number[]>();
    for (const j of lab
      .logLines()
      .map((l) => JSON.parse(l) as Json)
      .filter((j) => j.msg === "reconciled")
      .slice(-EVENTS))
      for (const [k, v] of Object.entries((j.targetMs ?? {}) as Record<string, number>))
        targets.set(k, [...(targets.get(k) ?? []), v]);
    console.log(
      `part 2: reconcile time per target, median over the events: ${[...targets].map(([k, v]) => `${k} ${fmt(median(v))}`).join(", ")}`,
    );
    // A clean stop (profiles, when asked for with --node-flags, are written at exit).
    process.kill(lab.pid!, "SIGTERM");
    await waitFor("egressd to exit", async () => !isRunning(lab.pid!), 60_000).catch(() => undefined);
  } finally {
    await lab.stop();
    await api.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

if (args.part === "1" || args.part === "both") await part1();
if (args.part === "2" || args.part === "both") await part2();
