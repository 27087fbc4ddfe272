// The daemon's part in the API's egress IP groups (daemon/group-claims.ts)
// against the test API server: which groups a gateway serves by its node's
// labels, what it gives the data plane, and leases given back after a drain
// or a group's deletion. Rounds are run by hand, on the test's clock.
import test from "ava";
import { KubeConfig } from "../../inputs/k8s/client.js";
import { pino } from "pino";
import { GroupClaims } from "../../daemon/group-claims.js";
import type { HeldGroup } from "../../core/k8s/ip-groups.js";
import { KubeApiServer } from "../helpers/kube-apiserver.js";

const SPEC = {
  addresses: ["192.0.2.77-192.0.2.78"],
  uplink: "tor",
  gatewaySelector: { matchLabels: { "topology.kubernetes.io/zone": "dc-a" } },
  namespaceSelector: { matchLabels: { team: "payments" } },
  sites: [{ site: "dc-a", asPathPrepend: 1, communities: ["65010:77"] }],
};

async function setup(t: import("ava").ExecutionContext) {
  const api = new KubeApiServer();
  await api.start();
  t.teardown(() => api.stop());
  const kc = new KubeConfig();
  kc.loadFromString(api.kubeconfig());
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
  const gateway = (node: string) => {
    const g = { now: 0, given: [] as HeldGroup[][], claims: undefined as unknown as GroupClaims };
    g.claims = new GroupClaims({
      kc,
      namespace: "egressd",
      node,
      site: () => "dc-a",
      log: pino({ level: "silent" }),
      clock: () => g.now,
      apply: (held) => {
        g.given.push(held);
        return Promise.resolve(held);
      },
    });
    g.claims.setGroup("vault", SPEC);
    return g;
  };
  type G = ReturnType<typeof gateway>;
  const rounds = async (gs: G[], n: number) => {
    for (let i = 0; i < n; i++)
      for (const g of gs) {
        g.now += 1000;
        await g.claims.tick();
        await new Promise((r) => setImmediate(r)); // the data plane's answer
      }
  };
  return { api, gateway, rounds };
}

test("the gateways a group selects by node label hold one address each; the data plane is given them with the group's uplink and namespaces", async (t) => {
  const { gateway, rounds } = await setup(t);
  const [a1, a2, b1] = [gateway("gw-a1"), gateway("gw-a2"), gateway("gw-b1")];
  await rounds([a1, a2, b1], 5);
  const last = (g: typeof a1) => g.given.at(-1) ?? [];
  t.is(last(a1)[0]?.addresses.length, 1);
  t.is(last(a2)[0]?.addresses.length, 1);
  t.notDeepEqual(last(a1)[0]!.addresses, last(a2)[0]!.addresses);
  t.like(last(a1)[0], {
    name: "vault",
    uplink: "tor",
    namespaceSelector: SPEC.namespaceSelector,
    bgp: { asPathPrepend: 1, communities: ["65010:77"] },
  });
  t.deepEqual(b1.given, [], "DC B's gateway is not selected");
  t.deepEqual(
    b1.claims.status().map((s) => [s.group, s.serving]),
    [["vault", false]],
  );
});

test("after the drain every lease goes back, and a deleted group is given back and forgotten", async (t) => {
  const { api, gateway, rounds } = await setup(t);
  const [a1, a2] = [gateway("gw-a1"), gateway("gw-a2")];
  await rounds([a1, a2], 5);
  await a2.claims.release(3000);
  const holders = () =>
    (api.list("Lease") as { spec: { holderIdentity: string } }[]).map((l) => l.spec.holderIdentity).sort();
  t.deepEqual(holders(), ["gw-a1", "gw-a1"], "gw-a2's presence and address are deleted");
  await rounds([a1], 2);
  t.deepEqual(a1.given.at(-1)?.[0]?.addresses, ["192.0.2.77", "192.0.2.78"], "taken at once, not after 15 s");
  a1.claims.setGroup("vault", undefined);
  await rounds([a1], 3);
  t.deepEqual(a1.given.at(-1), [], "out of the data plane");
  t.deepEqual(holders(), [], "and out of the API");
  t.deepEqual(a1.claims.status(), []);
});
