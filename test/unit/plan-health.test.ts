import test from "ava";
import type { Config } from "../../core/config/schema.js";
import type { ProbeConfig } from "../../core/config/ops-schema.js";
import { healthFrom } from "../../core/plan/health.js";

const config = {
  gateway: { name: "gw", site: "a" },
  egressIPs: [],
  uplinks: [
    { name: "red", interface: "eth1", nextHop: "10.0.0.1" },
    { name: "blue", interface: "eth2", nextHop: "10.0.1.1" },
  ],
  policies: [
    {
      name: "p1",
      sources: ["10.244.0.0/16"],
      destinations: ["203.0.113.0/24"],
      egressIP: "192.0.2.1",
      uplink: "red",
    },
    {
      name: "p2",
      sources: ["10.244.0.0/16"],
      destinations: ["198.51.100.0/24"],
      egressIP: "192.0.2.1",
      uplink: "red",
    },
    {
      name: "p3",
      sources: ["10.244.0.0/16"],
      destinations: ["192.0.2.128/25"],
      egressIP: "192.0.2.1",
      uplink: "blue",
    },
  ],
  probes: [
    { name: "red-hop", kind: "icmp", target: "10.0.0.1", affects: { uplink: "red" } },
    { name: "svc3", kind: "tcp", target: "192.0.2.130", port: 443, affects: { policy: "p3" } },
    { name: "core", kind: "icmp", target: "10.9.9.9", affects: "gateway" },
  ] as ProbeConfig[],
} as unknown as Config & { probes: ProbeConfig[] };

const up = (...down: [string, string][]) =>
  new Map([["red-hop", "up"], ["svc3", "up"], ["core", "up"], ...down]);

test("all probes up: nothing withdrawn", (t) => {
  const h = healthFrom(config, up());
  t.deepEqual([...h.downPolicies], []);
  t.false(h.gatewayDown);
});

test("an uplink probe withdraws every policy on that uplink and nothing else", (t) => {
  const h = healthFrom(config, up(["red-hop", "down"]));
  t.deepEqual([...h.downPolicies].sort(), ["p1", "p2"]);
  t.deepEqual(h.why.get("p1"), ["red-hop"]);
  t.false(h.gatewayDown);
});

test("a policy probe withdraws only its policy; held and unknown count as not up", (t) => {
  t.deepEqual([...healthFrom(config, up(["svc3", "held"])).downPolicies], ["p3"]);
  t.deepEqual([...healthFrom(config, up(["svc3", "unknown"])).downPolicies], ["p3"]);
  t.deepEqual(
    [
      ...healthFrom(
        config,
        new Map([
          ["red-hop", "up"],
          ["core", "up"],
        ]),
      ).downPolicies,
    ],
    ["p3"],
  );
});

test("a gateway probe or a failing self-check takes the whole gateway down", (t) => {
  t.deepEqual(healthFrom(config, up(["core", "down"])).gatewayDownBy, ["core"]);
  const h = healthFrom(config, up(), { selfDown: ["self-nft"] });
  t.true(h.gatewayDown);
  t.deepEqual(h.gatewayDownBy, ["self-nft"]);
});

test("a missing egress IP takes down the policies using it and its own advertisement, not the gateway", (t) => {
  const h = healthFrom(config, up(), { selfDown: ["self-address-192.0.2.1"] });
  t.false(h.gatewayDown);
  t.deepEqual([...h.downPolicies].sort(), ["p1", "p2", "p3"], "all three use 192.0.2.1");
  t.deepEqual([...(h.downAddresses ?? [])], ["192.0.2.1"]);
  t.deepEqual(h.why.get("p1"), ["self-address-192.0.2.1"]);
});
