// The two-dc lab with its gateways following a Kubernetes API: the in-process
// API server (test/helpers/kube-apiserver.ts) holds namespaces, pods with the
// lab's real pod addresses, and EgressPolicies; each gateway's egressd
// watches it (through a forwarder on its own loopback to the server's unix
// socket) with the partner network left to the cluster's policies. What the
// server behind the firewall sees is the proof.
import test, { type ExecutionContext } from "ava";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { parseRecord, type AuditRecord } from "../../core/audit/record.js";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parse, stringify } from "yaml";
import { Lab, waitFor } from "../../containerlab/runner.js";
import { loadTopology, rebindCopies } from "../../containerlab/topology.js";
import { bgpTable, kernelNextHops, seenAs, startWhoami } from "../../containerlab/observe.js";
import { spawnDetached } from "../../lib/exec.js";
import { RUN_ID } from "../helpers/netns.js";
import { TWO_DC } from "../helpers/paths.js";
import { KubeApiServer, unixForwarder } from "../helpers/kube-apiserver.js";

type Json = Record<string, unknown>;

const tmp = mkdtempSync(join(tmpdir(), "egressd-k8s-lab-"));
const socket = join(tmp, "api.sock");
const kubeconfig = join(tmp, "kubeconfig");
const GATEWAYS = ["gw-a1", "gw-a2", "gw-b1"] as const;
/** Each gateway's partner egress IP: its "partner" group. */
const PARTNER: Record<string, string> = {};

// The lab's gateway configs without the file's partner policy (and its probe): the cluster's
// EgressPolicies decide who reaches the partner network, through the group "partner".
const topo = loadTopology(TWO_DC);
rebindCopies(topo, "/etc/egressd/egressd.yaml", tmp, (text) => {
  const c = parse(text) as Json & { policies: Json[]; probes?: Json[]; gateway: { name: string } };
  const partner = c.policies.find((p) => p.name === "partner")!;
  PARTNER[c.gateway.name] = partner.egressIP as string;
  c.policies = c.policies.filter((p) => p !== partner);
  c.probes = (c.probes ?? []).filter((p) => (p.affects as Json | undefined)?.policy !== "partner");
  // Only the payments team's namespaces may use the partner identity.
  c.egressIPGroups = [
    {
      name: "partner",
      egressIPs: [partner.egressIP],
      uplink: partner.uplink,
      namespaceSelector: { matchLabels: { team: "payments" } },
    },
  ];
  c.kubernetes = { kubeconfig };
  // The audit trail names the pod behind each connection from the cluster's pods.
  c.audit = { file: join(tmp, `${c.gateway.name}-audit.jsonl`) };
  return stringify(c);
});
const lab = new Lab(topo, `${RUN_ID}k8`, { quiet: true });
const api = new KubeApiServer({ bookmarkMs: 1000 });
const PARTNER_URL = "http://198.51.100.10:8080/";

const ns = (name: string, labels: Record<string, string> = {}) =>
  api.apply({ apiVersion: "v1", kind: "Namespace", metadata: { name, labels } });
const pod = (namespace: string, name: string, ip: string, labels: Record<string, string>, uid?: string) =>
  api.apply({
    apiVersion: "v1",
    kind: "Pod",
    metadata: { name, namespace, labels, ...(uid ? { uid } : {}) },
    spec: { containers: [{ name: "app", image: "example/app:1" }] },
    status: { phase: "Running", podIP: ip, podIPs: [{ ip }] },
  });

const partnerIPs = () => new Set(Object.values(PARTNER));

test.before(async () => {
  await api.start(socket);
  writeFileSync(kubeconfig, api.kubeconfig());
  ns("payments", { team: "payments" });
  ns("shop", { team: "shop" });
  ns("guest");
  pod("payments", "api-0", "10.244.1.10", { app: "payments" });
  pod("payments", "worker-0", "10.244.1.11", { app: "worker" });
  pod("payments", "api-b", "10.244.2.10", { app: "payments" });
  api.apply({
    apiVersion: "egressd.io/v1alpha1",
    kind: "EgressPolicy",
    metadata: { name: "partner-db", namespace: "payments" },
    spec: {
      podSelector: { matchLabels: { app: "payments" } },
      destinations: ["198.51.100.0/24"],
      egressIPGroup: "partner",
    },
  });
  await lab.up();
  for (const g of GATEWAYS) spawnDetached(["node", "-e", unixForwarder, socket], { netns: lab.ns(g) });
  await startWhoami(lab, "server");
  await waitFor(
    "both DC A gateways advertise the partner network (from the cluster's policy)",
    async () => ((await bgpTable(lab, "tor-a")).get("198.51.100.0/24") ?? []).length === 2,
    90_000,
  );
  // And in tor-a's kernel: its bgpd has the paths some tens of milliseconds before its FIB, and a
  // first request in between went the old way, through DC B (seen as gw-b1 in one full run).
  await waitFor(
    "tor-a's kernel routes the partner network to both DC A gateways",
    async () => (await kernelNextHops(lab, "tor-a", "198.51.100.0/24")).length === 2,
    10_000,
  );
});

test.after.always(async () => {
  await lab.down();
  await api.stop();
  rmSync(tmp, { recursive: true, force: true });
});

/** What the partner network's server sees from `source`; undefined when nothing answered within `timeoutS`. */
async function seenFrom(source: string, timeoutS = 1): Promise<string | undefined> {
  return seenAs(lab, source.startsWith("10.244.2.") ? "pod-b" : "pod-a", PARTNER_URL, source, timeoutS);
}

async function status(g: string): Promise<Json> {
  const r = await lab.exec(g, ["curl", "-s", "-m", "2", "http://127.0.0.1:9469/status"]);
  return JSON.parse(r.stdout) as Json;
}

test.serial(
  "a pod an EgressPolicy selects leaves with its group's egress IP; one it does not select does not pass",
  async (t) => {
    // The first answer may wait for the return route to the egress IP (advertised with it).
    let a: string | undefined;
    await waitFor(
      "the payments pod answered",
      async () => (a = await seenFrom("10.244.1.10")) !== undefined,
      10_000,
    );
    t.true(a !== undefined && [PARTNER["gw-a1"], PARTNER["gw-a2"]].includes(a), `seen as ${a}`);
    t.log(`payments pod in DC A seen as ${a}`);
    t.is(await seenFrom("10.244.1.11"), undefined, "the worker pod is not selected: the firewall drops it");
    // DC B's gateway is the backup site (a longer AS path): DC B's pods leave through DC A's too.
    const b = await seenFrom("10.244.2.10");
    t.true(b !== undefined && partnerIPs().has(b), `the DC B pod seen as ${b}`);
    // The audit trail of the gateway that carried it names the pod; the unselected pod's
    // attempts were dropped at the gateway (no policy allows it) and are named too.
    const carrier = GATEWAYS.find((g) => PARTNER[g] === a)!;
    const trail = () =>
      (existsSync(join(tmp, `${carrier}-audit.jsonl`))
        ? readFileSync(join(tmp, `${carrier}-audit.jsonl`), "utf8")
        : ""
      )
        .split("\n")
        .map(parseRecord)
        .filter((r): r is AuditRecord => r !== undefined);
    const uid = (name: string) => (api.get("Pod", "payments", name)!.metadata as Json).uid;
    await waitFor(
      "the payments pod's start record",
      async () => trail().some((r) => r.event === "start"),
      10_000,
    );
    t.like(
      trail().find((r) => r.event === "start" && r.src === "10.244.1.10"),
      {
        gateway: carrier,
        policy: "payments/partner-db:v4",
        egressIP: a,
        dst: "198.51.100.10",
        dport: 8080,
        pod: { namespace: "payments", name: "api-0", uid: uid("api-0") },
      },
    );
    const workerDrops = () =>
      GATEWAYS.flatMap((g) =>
        (existsSync(join(tmp, `${g}-audit.jsonl`)) ? readFileSync(join(tmp, `${g}-audit.jsonl`), "utf8") : "")
          .split("\n")
          .map(parseRecord)
          .filter((r): r is AuditRecord => r?.event === "drop" && r.src === "10.244.1.11"),
      );
    // Records reach the file in batches (at most 50 ms apart).
    await waitFor("the worker pod's attempts as drop records", async () => workerDrops().length >= 1, 5_000);
    const drops = workerDrops();
    t.like(drops[0], {
      unmatched: true,
      pod: { namespace: "payments", name: "worker-0", uid: uid("worker-0") },
    });
    const s = await status("gw-a1");
    const k = s.kubernetes as {
      synced: boolean;
      connected: boolean;
      counts: { pods: number; policies: number };
    };
    t.true(k.synced && k.connected);
    t.is(k.counts.policies, 1);
    // Every gateway wrote its own status entry (server-side apply), and each says Programmed.
    await waitFor(
      "three status entries, each Programmed",
      async () => {
        const st = api.get("EgressPolicy", "payments", "partner-db")!.status as Json | undefined;
        const entries = (st?.gateways ?? []) as Json[];
        return (
          entries.length === 3 &&
          entries.every((e) =>
            (e.conditions as Json[]).some((c) => c.type === "Programmed" && c.status === "True"),
          )
        );
      },
      10_000,
    );
    const entries = (api.get("EgressPolicy", "payments", "partner-db")!.status as Json).gateways as Json[];
    t.deepEqual(
      entries.map((e) => [e.gateway, e.selectedPods]),
      [
        ["gw-a1", 2],
        ["gw-a2", 2],
        ["gw-b1", 2],
      ],
    );
    const policy = (s.policies as Json[]).find((p) => p.name === "payments/partner-db:v4");
    t.like(policy, { egressIP: PARTNER["gw-a1"], advertised: true });
  },
);

test.serial(
  "relabelling a pod moves it to the policy's egress IP: timed from the API write to the first answer",
  async (t) => {
    const started = performance.now();
    pod("payments", "worker-0", "10.244.1.11", { app: "payments" });
    let seen: string | undefined;
    await waitFor(
      "the relabelled pod through the gateway",
      async () => partnerIPs().has((seen = await seenFrom("10.244.1.11", 0.3)) ?? ""),
      10_000,
    );
    const ms = Math.round(performance.now() - started);
    t.log(`relabel: API write to the first answer as ${seen}: ${ms} ms (each try waits up to 0.3 s)`);
    // ... and back: its traffic no longer passes.
    pod("payments", "worker-0", "10.244.1.11", { app: "worker" });
    await waitFor(
      "the pod unselected again",
      async () => (await seenFrom("10.244.1.11")) === undefined,
      10_000,
    );
    t.pass();
  },
);

test.serial(
  "a deleted pod's address reused by a pod of another namespace never reaches the firewall with the old identity",
  async (t) => {
    // The new pod (guest, no policy) is reported before the old pod's deletion: the worst order.
    pod("guest", "visitor", "10.244.1.10", {}, "uid-visitor");
    const seen: (string | undefined)[] = [];
    const end = Date.now() + 3000;
    // Give the gateways a moment to hear of it; from then on, nothing from that address may pass.
    await waitFor(
      "the address taken from the policy",
      async () => (await seenFrom("10.244.1.10")) === undefined,
      10_000,
    );
    while (Date.now() < end) seen.push(await seenFrom("10.244.1.10"));
    api.remove("Pod", "payments", "api-0");
    for (let i = 0; i < 3; i++) seen.push(await seenFrom("10.244.1.10"));
    t.deepEqual(
      seen.filter((s) => s !== undefined),
      [],
      "the guest pod never leaves with the payments identity",
    );
    // The payments pod comes back with another address.
    api.remove("Pod", "guest", "visitor");
    pod("payments", "api-0", "10.244.1.12", { app: "payments" });
    await waitFor(
      "the new payments pod",
      async () => partnerIPs().has((await seenFrom("10.244.1.12")) ?? ""),
      10_000,
    );
  },
);

test.serial(
  "an API outage changes nothing in the data plane; what changed meanwhile is applied on its return",
  async (t: ExecutionContext) => {
    api.setDown(true);
    await waitFor(
      "the outage reported",
      async () => ((await status("gw-a1")).kubernetes as { connected: boolean }).connected === false,
      15_000,
    );
    const s = await status("gw-a1");
    t.true(s.ready as boolean, "/readyz stays ready");
    t.true(
      partnerIPs().has((await seenFrom("10.244.1.12")) ?? ""),
      "the selected pod still leaves through the gateway",
    );
    t.true(partnerIPs().has((await seenFrom("10.244.2.10")) ?? ""));
    // Meanwhile, in the cluster: the DC B pod is relabelled out of the policy.
    pod("payments", "api-b", "10.244.2.10", { app: "batch" });
    await new Promise((r) => setTimeout(r, 1000));
    t.true(partnerIPs().has((await seenFrom("10.244.2.10")) ?? ""), "unchanged while the API is away");
    // egressd on gw-a1 restarts while the API is away: it starts with the cluster's policies of its
    // last run (kept in its run directory), not with the file's alone.
    await new Promise((r) => setTimeout(r, 2500)); // the last run's policies are kept at most 2 s after a change
    process.kill(lab.cmdPid("gw-a1")!, "SIGKILL");
    await waitFor("gw-a1's egressd gone", () => lab.cmdPid("gw-a1") === undefined, 5000);
    await lab.startCmd("gw-a1");
    await waitFor(
      "gw-a1's egressd running (its cluster input started)",
      async () => (await status("gw-a1").catch(() => undefined))?.kubernetes !== undefined,
      30_000,
    );
    const restarted = await status("gw-a1");
    t.false((restarted.kubernetes as { synced: boolean }).synced, "the API is still away");
    t.like(
      (restarted.policies as Json[]).find((p) => p.name === "payments/partner-db:v4"),
      { egressIP: PARTNER["gw-a1"] },
      "the cluster's policy is in force after the restart",
    );
    api.setDown(false);
    await waitFor(
      "reconciled after the outage",
      async () => (await seenFrom("10.244.2.10")) === undefined,
      60_000,
    );
    // Each gateway's informers retry on their own backoff (at most 30 s apart): every one reconnects.
    for (const g of GATEWAYS)
      await waitFor(
        `${g} reconnected`,
        async () => ((await status(g)).kubernetes as { connected: boolean }).connected,
        45_000,
      );
    t.pass();
  },
);

test.serial(
  "an EgressIPGroup's address is held by one gateway at a time: cut off from the API, the holder lets go before the other takes it",
  async (t: ExecutionContext) => {
    const VAULT = "192.0.2.77";
    const POD = "10.244.1.13";
    // The gateways' nodes, by zone; the group is DC A's.
    for (const [name, zone] of [
      ["gw-a1", "dc-a"],
      ["gw-a2", "dc-a"],
      ["gw-b1", "dc-b"],
    ])
      api.apply({
        apiVersion: "v1",
        kind: "Node",
        metadata: { name, labels: { "topology.kubernetes.io/zone": zone } },
      });
    api.apply({
      apiVersion: "egressd.io/v1alpha1",
      kind: "EgressIPGroup",
      metadata: { name: "vault" },
      spec: {
        addresses: [VAULT],
        uplink: "tor",
        gatewaySelector: { matchLabels: { "topology.kubernetes.io/zone": "dc-a" } },
        namespaceSelector: { matchLabels: { team: "payments" } },
      },
    });
    await lab.exec("pod-a", ["ip", "addr", "add", `${POD}/24`, "dev", "eth1"]);
    pod("payments", "vault-0", POD, { app: "vault" });
    api.apply({
      apiVersion: "egressd.io/v1alpha1",
      kind: "EgressPolicy",
      metadata: { name: "vault-db", namespace: "payments" },
      spec: {
        podSelector: { matchLabels: { app: "vault" } },
        destinations: ["198.51.100.10/32"],
        egressIPGroup: "vault",
      },
    });
    const holder = () =>
      (
        api.list("Lease") as {
          metadata: { annotations?: Record<string, string> };
          spec: { holderIdentity?: string };
        }[]
      ).find((l) => l.metadata.annotations?.["egressd.io/key"] === VAULT)?.spec.holderIdentity;
    await waitFor(
      "one DC A gateway holds the address and advertises the destination for it",
      async () => holder() !== undefined && (await seenFrom(POD)) === VAULT,
      60_000,
    ).catch(async (e: unknown) => {
      for (const g of GATEWAYS) {
        const st = await status(g);
        t.log(g, JSON.stringify(st.kubernetes), JSON.stringify(st.policies), JSON.stringify(st.egressIPs));
      }
      t.log(JSON.stringify([...(await bgpTable(lab, "tor-a")).entries()]));
      t.log(await seenFrom(POD));
      t.log(JSON.stringify(api.list("Lease")));
      throw e;
    });
    const first = holder()!;
    const other = first === "gw-a1" ? "gw-a2" : "gw-a1";
    t.true(["gw-a1", "gw-a2"].includes(first), `held by ${first}`);
    // Count what leaves each DC A gateway's uplink with the address, after its NAT.
    for (const g of ["gw-a1", "gw-a2"])
      await lab.exec(g, [
        "/usr/sbin/nft",
        `add table inet egtest; add chain inet egtest post { type filter hook postrouting priority 300; }; add rule inet egtest post oifname "eth1" ip saddr ${VAULT} counter`,
      ]);
    const count = async (g: string) =>
      Number(
        /packets (\d+)/.exec(
          (await lab.exec(g, ["/usr/sbin/nft", "list", "chain", "inet", "egtest", "post"])).stdout,
        )?.[1] ?? 0,
      );
    // The pod sends all along: 50 packets a second to the server.
    const ping = spawnDetached(["ping", "-q", "-i", "0.02", "-I", POD, "198.51.100.10"], {
      netns: lab.ns("pod-a"),
    });
    t.teardown(() => {
      try {
        process.kill(ping, "SIGKILL");
      } catch {
        // gone already
      }
    });
    // The holder loses the API server (its forwarder's port is blackholed).
    await new Promise((r) => setTimeout(r, 1000));
    await lab.exec(first, [
      "/usr/sbin/nft",
      "add table inet cut; add chain inet cut out { type filter hook output priority 0; }; add rule inet cut out tcp dport 6443 drop; add rule inet cut out tcp sport 6443 drop",
    ]);
    const cutAt = performance.now();
    const seen: { at: number; first: number; other: number }[] = [];
    let firstLast = 0;
    let otherFirst = 0;
    for (
      let last = { first: await count(first), other: await count(other) };
      performance.now() - cutAt < 45_000;

    ) {
      const now = { first: await count(first), other: await count(other) };
      const at = performance.now() - cutAt;
      seen.push({ at, ...now });
      if (now.first > last.first) firstLast = at;
      if (now.other > last.other && otherFirst === 0) otherFirst = at;
      last = now;
      if (otherFirst > 0 && at > otherFirst + 2000) break;
      await new Promise((r) => setTimeout(r, 50));
    }
    if (otherFirst === 0) {
      for (const g of [first, other]) {
        const st = await status(g);
        t.log(g, JSON.stringify((st.kubernetes as Json).egressIPGroups), JSON.stringify(st.policies));
      }
      t.log(
        holder(),
        JSON.stringify(seen.filter((_, i) => i % 20 === 0).map((x) => [Math.round(x.at), x.first, x.other])),
      );
    }
    t.true(otherFirst > 0, `${other} took the address over`);
    t.log(
      `cut ${first} from the API: it sent its last packet from ${VAULT} ${Math.round(firstLast)} ms later; ` +
        `${other} sent its first ${Math.round(otherFirst)} ms after the cut (${Math.round(otherFirst - firstLast)} ms apart)`,
    );
    t.true(firstLast < otherFirst, "never both: the holder's last packet came before the other's first");
    t.is(holder(), other, "the lease is the other gateway's");
    // Healed: the first one learns it lost the address and sends nothing more with it.
    await lab.exec(first, ["/usr/sbin/nft", "delete table inet cut"]);
    const before = await count(first);
    await new Promise((r) => setTimeout(r, 5000));
    t.is(await count(first), before, `${first} does not use ${VAULT} once back`);
    t.is(holder(), other);
    t.is(await seenFrom(POD), VAULT, "the pod still leaves with the group's address");
    for (const g of ["gw-a1", "gw-a2"]) await lab.exec(g, ["/usr/sbin/nft", "delete table inet egtest"]);
  },
);
