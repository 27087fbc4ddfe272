import test from "ava";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { CommandError, run } from "../../lib/exec.js";
import { KubeApiServer } from "../helpers/kube-apiserver.js";
import { REPO } from "../helpers/paths.js";
import { loadConfig, nodesOf } from "../../inputs/config/load.js";
import { selectNode } from "../../inputs/config/fleet.js";
import { podEvent, podFromEnv } from "../../daemon/pod-event.js";

// Shared settings, a site, and two nodes of it (one with its own uplink list).
const FLEET = `bgp:
  asn: 65010
  routerId: 0.0.0.1
  peers: [{ name: tor, address: 10.1.1.0, asn: 65000 }]
policies:
  - { name: internet, sources: [10.244.0.0/16], destinations: [0.0.0.0/0], egressIP: 192.0.2.11, uplink: tor }
sites:
  dc-a:
    uplinks: [{ name: tor, interface: eth1, nextHop: 10.1.1.0 }]
nodes:
  gw-a1:
    site: dc-a
    bgp: { routerId: 10.0.0.11 }
    egressIPs: [{ address: 192.0.2.11, interface: lo }]
  gw-a2.example.net:
    site: dc-a
    gateway: { name: gw-a2 }
    bgp: { routerId: 10.0.0.12 }
    egressIPs: [{ address: 192.0.2.11, interface: dummy0 }]
    uplinks: [{ name: tor, interface: eth2, nextHop: 10.1.2.0 }]
`;

test("a node's config is the top level, its site's section, then its own: maps merge, lists are replaced", (t) => {
  const a1 = loadConfig(FLEET, { node: "gw-a1" });
  if (!a1.ok) return t.fail(JSON.stringify(a1.errors));
  t.deepEqual(a1.config.gateway, { name: "gw-a1", site: "dc-a" }, "the node's name and its site's");
  t.is(a1.config.bgp?.routerId, "10.0.0.11");
  t.is(a1.config.bgp?.asn, 65010, "a map merges: the shared ASN stays");
  t.deepEqual(
    a1.config.uplinks.map((u) => u.interface),
    ["eth1"],
  );
  const a2 = loadConfig(FLEET, { node: "gw-a2.example.net" });
  if (!a2.ok) return t.fail(JSON.stringify(a2.errors));
  t.deepEqual(a2.config.gateway, { name: "gw-a2", site: "dc-a" }, "a dotted node name needs gateway.name");
  t.deepEqual(
    a2.config.uplinks.map((u) => u.interface),
    ["eth2"],
    "a list is replaced whole",
  );
  t.deepEqual(nodesOf(FLEET), ["gw-a1", "gw-a2.example.net"]);
  t.is(nodesOf("gateway: { name: a, site: b }"), undefined, "a plain file has no nodes");
});

test("a finding is reported at the section that wrote the value, with its line", (t) => {
  const bad = FLEET.replace("routerId: 10.0.0.11", "routerId: 10.0.0.300").replace(
    "nextHop: 10.1.1.0 }]\nnodes",
    "nextHop: banana }]\nnodes",
  );
  const r = loadConfig(bad, { node: "gw-a1" });
  if (r.ok) return t.fail("accepted");
  const paths = r.errors.map((e) => `${e.line}: ${e.path}`);
  t.true(paths.includes('13: nodes["gw-a1"].bgp.routerId'), paths.join(" | "));
  t.true(paths.includes('9: sites["dc-a"].uplinks[0].nextHop'), paths.join(" | "));
  // gw-a2 has its own uplinks: the site's bad next hop is not in its config.
  const a2 = loadConfig(bad, { node: "gw-a2.example.net" });
  t.true(a2.ok, JSON.stringify(!a2.ok && a2.errors));
});

test("a node without a section, a fleet file without --node, and --node on a plain file are refused", (t) => {
  const missing = loadConfig(FLEET, { node: "gw-b9" });
  t.false(missing.ok);
  if (!missing.ok) {
    t.is(missing.errors.length, 1);
    t.is(missing.errors[0]!.path, "nodes");
    t.regex(missing.errors[0]!.message, /^no section for node "gw-b9": .*\(gw-a1, gw-a2\.example\.net\)$/);
    t.is(missing.errors[0]!.line, 10);
  }
  const unnamed = loadConfig(FLEET);
  t.false(unnamed.ok);
  if (!unnamed.ok) t.regex(unnamed.errors[0]!.message, /--node/);
  const plain = loadConfig("gateway: { name: a, site: b }\negressIPs: []\nuplinks: []\npolicies: []\n", {
    node: "gw-a1",
  });
  t.false(plain.ok);
  if (!plain.ok) t.regex(plain.errors[0]!.message, /no nodes: section/);
});

test("the sections themselves are checked: maps, node names, and the site a node names", (t) => {
  const issues = (raw: unknown) => {
    const r = selectNode(raw, "gw-a1");
    return r.ok ? [] : r.issues.map((i) => `${i.segments.join(".")}: ${i.message}`);
  };
  t.deepEqual(issues({ nodes: [] }), ["nodes: must be a map of node name to its settings"]);
  t.deepEqual(issues({ sites: {} }), [
    "nodes: sites: needs nodes: (a map of node name to its settings, each naming its site)",
  ]);
  t.deepEqual(issues({ nodes: { "gw-a1": { site: "dc-x" } }, sites: { "dc-a": {} } }), [
    'nodes.gw-a1.site: "dc-x" is not a site of sites: (dc-a)',
  ]);
  t.deepEqual(issues({ nodes: { GW_A1: {} } }), ['nodes.GW_A1: "GW_A1" is not a Kubernetes node name']);
  t.deepEqual(issues({ nodes: { "gw-a1": 3 } }), ["nodes.gw-a1: must be a map of settings"]);
  const ok = selectNode({ nodes: { "gw-a1": null } }, "gw-a1");
  t.true(ok.ok, "an empty section is a section");
});

test("valid fleet files take the fast path and agree with the path that keeps lines", (t) => {
  // An alias is read by the path that keeps lines only; the same file without one takes the fast path.
  const fast = loadConfig(FLEET, { node: "gw-a1" });
  const aliased = FLEET.replace("routerId: 10.0.0.11", "routerId: &rid 10.0.0.11").replace(
    "routerId: 10.0.0.12",
    "routerId: *rid",
  );
  const slow = loadConfig(aliased, { node: "gw-a1" });
  t.true(fast.ok && slow.ok);
  if (fast.ok && slow.ok) t.deepEqual(fast.config, slow.config);
  t.is(fast.ok && fast.layout, undefined, "no source layout for a fleet file");
});

test("the refusal event names the pod, is a Warning, and is cut to 1 kB", (t) => {
  t.is(podFromEnv({}), undefined);
  const pod = podFromEnv({
    EGRESSD_POD_NAME: "egressd-x7",
    EGRESSD_POD_NAMESPACE: "egressd",
    EGRESSD_NODE: "gw-a1",
  });
  t.deepEqual(pod, { name: "egressd-x7", namespace: "egressd", node: "gw-a1" });
  const e = podEvent(pod!, "NoNodeSection", "x".repeat(5000), new Date(0));
  t.like(e, {
    type: "Warning",
    reason: "NoNodeSection",
    involvedObject: { kind: "Pod", name: "egressd-x7", namespace: "egressd" },
    metadata: { generateName: "egressd-x7.", namespace: "egressd" },
    firstTimestamp: "1970-01-01T00:00:00.000Z",
  });
  t.is((e.message as string).length, 1024);
});

test("egressd run on a node without a section exits 1 having programmed nothing, and records a Warning event on its pod", async (t) => {
  const api = new KubeApiServer();
  await api.start();
  t.teardown(() => api.stop());
  const dir = mkdtempSync(join(tmpdir(), "egressd-fleet-"));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  writeFileSync(join(dir, "kubeconfig"), api.kubeconfig());
  writeFileSync(join(dir, "egressd.yaml"), FLEET);
  const r = await run(
    ["node", join(REPO, "dist/daemon/cli.js"), "run", "-c", join(dir, "egressd.yaml"), "--run-dir", dir],
    {
      env: {
        KUBECONFIG: join(dir, "kubeconfig"),
        KUBERNETES_SERVICE_HOST: "",
        EGRESSD_NODE: "gw-b9",
        EGRESSD_POD_NAME: "egressd-7k2x",
        EGRESSD_POD_NAMESPACE: "egressd",
      },
    },
  ).then(
    () => ({ code: 0, stdout: "", stderr: "" }),
    (e: CommandError) => e,
  );
  const log = r.stdout + r.stderr;
  t.is(r.code, 1, log);
  t.regex(log, /no section for node \\"gw-b9\\"/);
  t.is(api.events.length, 1);
  t.like(api.events[0], {
    type: "Warning",
    reason: "NoNodeSection",
    involvedObject: { kind: "Pod", name: "egressd-7k2x", namespace: "egressd" },
    source: { component: "egressd", host: "gw-b9" },
  });
  t.regex(
    (api.events[0] as { message: string }).message,
    /^egressd refused its config, nothing was programmed: egressd\.yaml:10: nodes: no section for node "gw-b9"/,
  );
});
