// EgressIPGroups from the API as a gateway uses them (core/k8s/ip-groups.ts):
// pools, which gateways serve them, and what the held addresses make of the
// config; and a policy naming a group this gateway holds nothing of is
// blocked here and not advertised from here.
import test from "ava";
import {
  fileOnly,
  apiGroup,
  claimedParts,
  expandPool,
  serves,
  siteAttributes,
  withClaims,
  MAX_POOL,
} from "../../core/k8s/ip-groups.js";
import { Cluster } from "../../core/k8s/cluster.js";
import { healthFrom, NOT_ADVERTISED } from "../../core/plan/health.js";
import type { GatewayConfig } from "../../core/config/gateway-config.js";

test("a pool's addresses and ranges, each once, canonical; what is wrong is named with its index", (t) => {
  t.deepEqual(expandPool(["192.0.2.11-192.0.2.13", "2001:db8:e::0011", "192.0.2.12"]).addresses, [
    "192.0.2.11",
    "192.0.2.12",
    "192.0.2.13",
    "2001:db8:e::11",
  ]);
  t.deepEqual(expandPool(["192.0.2.13-192.0.2.11", "banana", "192.0.2.1-2001:db8::1"]).errors, [
    'addresses[0]: "192.0.2.13-192.0.2.11": the range must run upwards within one family',
    'addresses[1]: "banana" is not an address or a range first-last',
    'addresses[2]: "192.0.2.1-2001:db8::1": the range must run upwards within one family',
  ]);
  t.regex(expandPool(["10.0.0.0-10.0.4.0"]).errors[0]!, new RegExp(`more than ${MAX_POOL}`));
});

test("a group is served by the gateways its gatewaySelector selects (none given: all); a broken one by none", (t) => {
  const g = apiGroup("payments", {
    addresses: ["192.0.2.11"],
    uplink: "tor",
    gatewaySelector: { matchLabels: { "topology.kubernetes.io/zone": "dc-a" } },
  });
  t.true(serves(g, { "topology.kubernetes.io/zone": "dc-a" }));
  t.false(serves(g, { "topology.kubernetes.io/zone": "dc-b" }));
  t.true(serves(apiGroup("any", { addresses: ["192.0.2.11"], uplink: "tor" }), {}));
  t.false(serves(apiGroup("bad", { addresses: ["nope"], uplink: "tor" }), {}));
});

const FILE: GatewayConfig = {
  gateway: { name: "gw-a1", site: "dc-a" },
  egressIPs: [{ address: "192.0.2.50", interface: "lo" }],
  egressIPGroups: [{ name: "partner", egressIPs: ["192.0.2.50"], uplink: "tor" }],
  uplinks: [{ name: "tor", interface: "eth1", nextHop: "10.1.1.0" }],
  policies: [],
};

test("held addresses become the config's egress IPs and a group (SNAT to the lowest of each family); the file's group wins", (t) => {
  const held = [
    {
      name: "payments",
      uplink: "tor",
      addresses: ["192.0.2.13", "192.0.2.11", "2001:db8:e::11"],
      bgp: { med: 200 },
    },
    { name: "partner", uplink: "tor", addresses: ["192.0.2.99"] },
    { name: "elsewhere", uplink: "no-such-uplink", addresses: ["192.0.2.98"] },
  ];
  const parts = claimedParts(FILE, held);
  t.deepEqual(parts.groups, [
    { name: "payments", egressIPs: ["192.0.2.11", "2001:db8:e::11"], uplink: "tor" },
  ]);
  t.deepEqual(
    parts.egressIPs.map((e) => `${e.address} ${e.interface}`),
    ["192.0.2.13 lo", "192.0.2.11 lo", "2001:db8:e::11 lo"],
  );
  t.deepEqual(parts.skipped, ["partner", "elsewhere"]);
  const config = withClaims(FILE, held);
  t.is(config.egressIPs.length, 4);
  t.deepEqual(
    config.egressIPGroups?.map((g) => g.name),
    ["partner", "payments"],
  );
  t.deepEqual(config.claimed, {
    groups: ["payments"],
    addresses: ["192.0.2.13", "192.0.2.11", "2001:db8:e::11"],
    attributes: { "192.0.2.13": { med: 200 }, "192.0.2.11": { med: 200 }, "2001:db8:e::11": { med: 200 } },
  });
  const sites = { addresses: [], uplink: "tor", sites: [{ site: "dc-b", med: 5 }] };
  t.deepEqual(siteAttributes(sites, "dc-b"), { med: 5 }, "a site's attributes");
  t.is(siteAttributes(sites, "dc-a"), undefined, "none for a site it does not name");
  const own = fileOnly(config);
  t.deepEqual(
    [own.egressIPs, own.egressIPGroups],
    [FILE.egressIPs, FILE.egressIPGroups],
    "the file's own part",
  );
  t.is(withClaims(FILE, []), FILE, "nothing held: the file as it is");
});

test("a policy naming an API group this gateway holds nothing of is blocked here and not advertised from here", (t) => {
  const c = new Cluster();
  c.upsertNamespace("payments", { team: "payments" });
  c.upsertPod({
    uid: "u1",
    namespace: "payments",
    name: "api-0",
    labels: { app: "api" },
    ips: ["10.244.1.10"],
  } as never);
  c.upsertPolicy({
    kind: "EgressPolicy",
    namespace: "payments",
    name: "db",
    uid: "p1",
    generation: 1,
    spec: {
      podSelector: { matchLabels: { app: "api" } },
      destinations: ["198.51.100.0/24"],
      egressIPGroup: "payments",
    },
  } as never);
  const group = { name: "payments", uplink: "tor", namespaceSelector: { matchLabels: { team: "payments" } } };
  c.setGateway([{ ...group, egressIPs: [] }], new Set(), new Set(["payments"]));
  const [blocked] = c.policyConfigs();
  t.like(blocked, { action: "Deny", advertise: false });
  t.like(c.policyStates()[0], { accepted: { ok: true }, notHeld: true }, "accepted, and not held here");
  t.deepEqual(healthFrom({ policies: [blocked!] }, new Map()).why.get(blocked!.name), [NOT_ADVERTISED]);
  // Holding an address: SNAT through the group, advertised.
  c.setGateway([{ ...group, egressIPs: ["192.0.2.11"] }], new Set(), new Set(["payments"]));
  const [served] = c.policyConfigs();
  t.like(served, { action: "SNAT", egressIPGroup: "payments" });
  t.is(c.policyStates()[0]!.notHeld, undefined);
  t.is(served!.advertise, undefined);
  // Not from the API: a group the file lacks is NotFound, blocked and advertised as before.
  c.setGateway([], new Set());
  t.is(c.policyConfigs()[0]!.advertise, undefined);
});
