import test from "ava";
import {
  bridgeDevice,
  isBridgeNode,
  isFrrNode,
  loadTopology,
  parseTopology,
  TopologyError,
} from "../../containerlab/topology.js";
import { TWO_DC } from "../helpers/paths.js";

const problems = (yaml: string): string[] => {
  try {
    parseTopology(yaml, "/tmp");
  } catch (e) {
    if (e instanceof TopologyError) return e.problems;
    throw e;
  }
  return [];
};

const base = (nodes: string, links = "") => `name: lab\ntopology:\n  nodes:\n${nodes}\n  links:\n${links}`;

test("two-dc reference topology parses", (t) => {
  const topo = loadTopology(TWO_DC);
  t.is(topo.name, "two-dc");
  t.deepEqual(topo.nodes.map((n) => n.name).sort(), [
    "core",
    "fw",
    "gw-a1",
    "gw-a2",
    "gw-b1",
    "pod-a",
    "pod-b",
    "server",
    "sync-a",
    "tor-a",
    "tor-b",
  ]);
  t.is(topo.links.length, 12);
  t.is(topo.nodes.find((n) => n.name === "sync-a")?.kind, "bridge");
  t.deepEqual(
    topo.nodes
      .filter(isFrrNode)
      .map((n) => n.name)
      .sort(),
    ["core", "fw", "tor-a", "tor-b"],
  );
  const torA = topo.nodes.find((n) => n.name === "tor-a");
  t.true(
    torA?.binds.some((b) => b.target === "/etc/frr/frr.conf" && b.source.endsWith("two-dc/tor-a/frr.conf")),
  );
  // kinds.linux.image is inherited by nodes that set none.
  t.is(topo.nodes.find((n) => n.name === "server")?.image, "alpine:3.20");
});

test("a valid minimal topology gives nodes and links", (t) => {
  const topo = parseTopology(
    base(
      "    a: {kind: linux, image: alpine}\n    b: {kind: linux, image: alpine, exec: ['ip link']}",
      '    - endpoints: ["a:eth1", "b:eth1"]',
    ),
    "/tmp",
  );
  t.deepEqual(topo.links, [{ a: { node: "a", interface: "eth1" }, b: { node: "b", interface: "eth1" } }]);
  t.deepEqual(topo.nodes[1]?.exec, ["ip link"]);
});

test("not YAML", (t) => {
  t.regex(problems("name: [unclosed")[0] ?? "", /not valid YAML/);
});

test("missing name and topology", (t) => {
  t.deepEqual(problems("foo: 1"), [
    "name: required: lower-case letters, digits and '-'",
    "topology: required: a mapping with `nodes` and `links`",
  ]);
});

test("a link to an unknown node names the endpoint", (t) => {
  t.deepEqual(problems(base("    a: {kind: linux, image: x}", '    - endpoints: ["a:eth1", "c:eth1"]')), [
    'topology.links[0].endpoints[1]: node "c" is not defined in topology.nodes',
  ]);
});

test("an interface used twice is refused", (t) => {
  const p = problems(
    base(
      "    a: {kind: linux, image: x}\n    b: {kind: linux, image: x}",
      '    - endpoints: ["a:eth1", "b:eth1"]\n    - endpoints: ["a:eth1", "b:eth2"]',
    ),
  );
  t.deepEqual(p, ["topology.links[1].endpoints[0]: a:eth1 is already used by topology.links[0]"]);
});

test("bad endpoints, interface names and link keys", (t) => {
  const p = problems(
    base(
      "    a: {kind: linux, image: x}\n    b: {kind: linux, image: x}",
      '    - endpoints: ["a-eth1", "b:eth1"]\n    - endpoints: ["a:averyveryverylongname", "b:eth2"]\n    - endpoints: ["a:eth3"]\n    - {endpoints: ["a:eth4", "b:eth4"], mtu: 9000}',
    ),
  );
  t.deepEqual(p, [
    'topology.links[0].endpoints[0]: "a-eth1" is not "node:interface"',
    'topology.links[1].endpoints[0]: "averyveryverylongname" is not a usable interface name (1-15 characters; lo and eth0 are reserved)',
    'topology.links[2].endpoints: required: exactly two "node:interface" strings',
    "topology.links[3].mtu: unknown key",
  ]);
});

test("node fields are checked with their path", (t) => {
  const p = problems(
    base(
      "    a: {kind: docker-thing, image: x}\n    b: {image: x}\n    c: {kind: linux}\n    d: {kind: linux, image: x, binds: ['onlyone'], exec: [''], colour: red}\n    E: {kind: linux, image: x}",
    ),
  );
  t.deepEqual(p, [
    'topology.nodes.a.kind: "docker-thing" is not supported by the netns runner (supported: linux, bridge)',
    "topology.nodes.b.kind: required (or set topology.defaults.kind)",
    "topology.nodes.c.image: required: the container image",
    "topology.nodes.d.colour: unknown key",
    'topology.nodes.d.binds[0]: "onlyone" is not host-path:container-path[:ro|rw]',
    "topology.nodes.d.exec[0]: must be a non-empty command string",
    "topology.nodes.E: node names use lower-case letters, digits and '-'",
  ]);
});

test("defaults and kinds are inherited, node values win", (t) => {
  const topo = parseTopology(
    "name: lab\ntopology:\n  defaults: {kind: linux}\n  kinds: {linux: {image: base, exec: ['true']}}\n  nodes:\n    a: {}\n    b: {image: own}\n",
    "/tmp",
  );
  t.deepEqual(
    topo.nodes.map((n) => [n.name, n.kind, n.image, n.exec]),
    [
      ["a", "linux", "base", ["true"]],
      ["b", "linux", "own", ["true"]],
    ],
  );
});

test("relative bind paths resolve against the topology's folder", (t) => {
  const topo = parseTopology(
    base("    a: {kind: linux, image: frrouting/frr, binds: ['a/frr.conf:/etc/frr/frr.conf:ro']}"),
    "/labs/x",
  );
  t.deepEqual(topo.nodes[0]?.binds, [
    { source: "/labs/x/a/frr.conf", target: "/etc/frr/frr.conf", readOnly: true },
  ]);
  t.true(isFrrNode(topo.nodes[0]!));
});

const bridgeLinks = [
  '    - endpoints: ["br-sync:eth1", "gw-a1:eth2"]',
  '    - endpoints: ["br-sync:eth2", "gw-a2:eth2"]',
  '    - endpoints: ["gw-b1:eth2", "br-sync:eth3"]',
].join("\n");

test("a bridge node with three linux nodes linked to it", (t) => {
  // topology.defaults' image is the containers': the bridge does not inherit it.
  const topo = parseTopology(
    "name: lab\ntopology:\n  defaults: {kind: linux, image: alpine}\n  nodes:\n" +
      "    br-sync: {kind: bridge, labels: {role: sync}}\n    gw-a1: {}\n    gw-a2: {}\n    gw-b1: {}\n" +
      `  links:\n${bridgeLinks}\n`,
    "/tmp",
  );
  const br = topo.nodes.find((n) => n.name === "br-sync")!;
  t.deepEqual(br, {
    name: "br-sync",
    kind: "bridge",
    image: "",
    binds: [],
    exec: [],
    env: {},
    labels: { role: "sync" },
  });
  t.true(isBridgeNode(br));
  t.false(isFrrNode(br));
  t.is(bridgeDevice(br), "br-sync");
  t.deepEqual(
    topo.nodes.filter((n) => !isBridgeNode(n)).map((n) => [n.name, n.kind, n.image]),
    [
      ["gw-a1", "linux", "alpine"],
      ["gw-a2", "linux", "alpine"],
      ["gw-b1", "linux", "alpine"],
    ],
  );
  t.deepEqual(
    topo.links.map(({ a, b }) => `${a.node}:${a.interface}-${b.node}:${b.interface}`),
    ["br-sync:eth1-gw-a1:eth2", "br-sync:eth2-gw-a2:eth2", "gw-b1:eth2-br-sync:eth3"],
  );
});

test("a bridge node's device name is the node name cut to 15 characters", (t) => {
  const topo = parseTopology(base("    state-sync-bridge-1: {kind: bridge}"), "/tmp");
  t.is(bridgeDevice(topo.nodes[0]!), "state-sync-brid");
});

test("a bridge node with a container's fields is refused, field by field", (t) => {
  const p = problems(
    base(
      "    br: {kind: bridge, image: alpine, binds: ['a:/b'], exec: ['ip link'], cmd: sleep 1, colour: red}\n" +
        "    br2: {kind: bridge, exec: []}\n    a: {kind: linux, image: x}",
      '    - endpoints: ["br:eth1", "a:eth1"]',
    ),
  );
  t.deepEqual(p, [
    "topology.nodes.br.colour: unknown key",
    "topology.nodes.br.image: a bridge node has no image (it is a Linux bridge, not a container)",
    "topology.nodes.br.binds: a bridge node has no binds (it is a Linux bridge, not a container)",
    "topology.nodes.br.exec: a bridge node has no exec (it is a Linux bridge, not a container)",
    "topology.nodes.br.cmd: a bridge node has no cmd (it is a Linux bridge, not a container)",
    "topology.nodes.br2.exec: a bridge node has no exec (it is a Linux bridge, not a container)",
  ]);
});

test("kinds.bridge with a container's field is refused once, by its path", (t) => {
  const p = problems(
    "name: lab\ntopology:\n  kinds: {bridge: {image: x, cmd: y}}\n  nodes:\n    b1: {kind: bridge}\n    b2: {kind: bridge}\n",
  );
  t.deepEqual(p, [
    "topology.kinds.bridge.image: a bridge node has no image (it is a Linux bridge, not a container)",
    "topology.kinds.bridge.cmd: a bridge node has no cmd (it is a Linux bridge, not a container)",
  ]);
});

test("a bridge port named like the bridge, and a link from a bridge to itself, are refused", (t) => {
  const p = problems(
    base(
      "    br: {kind: bridge}\n    a: {kind: linux, image: x}",
      '    - endpoints: ["br:br", "a:eth1"]\n    - endpoints: ["br:eth2", "br:eth3"]',
    ),
  );
  t.deepEqual(p, [
    'topology.links[0].endpoints[0]: "br" is the name of the bridge device itself',
    "topology.links[1].endpoints: both ends on bridge br would make a loop",
  ]);
});
