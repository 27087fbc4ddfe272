// planStatic(), viewOf() and planDesired(): from the config to the static
// plan, from it to the small view the main thread keeps, and from the view
// and the health inputs to what is advertised.
import test from "ava";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { loadConfig } from "../../inputs/config/load.js";
import { canonicalPath } from "../../core/bgp.js";
import type { GatewayConfig } from "../../core/config/gateway-config.js";
import {
  NO_HEALTH_INPUTS,
  planDesired,
  planStatic,
  viewOf,
  type HealthInputs,
} from "../../core/plan/index.js";
import { advertiseScope, HEALTHY, planBgp } from "../../core/plan/bgp.js";
import { plan } from "../../core/plan/kernel.js";
import { REPO } from "../helpers/paths.js";

function labConfig(): GatewayConfig {
  const r = loadConfig(readFileSync(join(REPO, "containerlab", "two-dc", "gw-a1", "egressd.yaml"), "utf8"));
  if (!r.ok) throw new Error(r.errors.map((e) => `${e.path}: ${e.message}`).join("; "));
  return r.config as GatewayConfig;
}

const config = labConfig();
const view = viewOf(planStatic(config));
const probeNames = (config.probes ?? []).map((p) => p.name);
const allUp: HealthInputs = { ...NO_HEALTH_INPUTS, probes: new Map(probeNames.map((n) => [n, "up"])) };
const prefixes = (h: HealthInputs) =>
  (planDesired({ view, health: h }).bgp?.paths ?? []).map((p) => canonicalPath(p).prefix).sort();
const egressIPs = config.egressIPs.map((e) =>
  e.address.includes(":") ? `${e.address}/128` : `${e.address}/32`,
);

test("with every probe up, destinations and egress IPs are advertised", (t) => {
  const got = prefixes(allUp);
  for (const ip of egressIPs) t.true(got.includes(ip), `${ip} in ${got.join(", ")}`);
  t.true(got.length > egressIPs.length, "destinations are advertised too");
});

test("before any probe has answered, only the egress IPs are advertised", (t) => {
  t.deepEqual(prefixes(NO_HEALTH_INPUTS), [...egressIPs].sort());
});

test("draining withdraws every destination and keeps the egress IPs", (t) => {
  t.deepEqual(prefixes({ ...allUp, draining: true }), [...egressIPs].sort());
});

test("one policy's probe down withdraws that policy's destinations only", (t) => {
  const up = prefixes(allUp);
  const down = prefixes({ ...allUp, probes: new Map([...allUp.probes, ["partner", "down"]]) });
  const gone = up.filter((p) => !down.includes(p));
  t.true(gone.length > 0);
  t.deepEqual(
    down.filter((p) => !up.includes(p)),
    [],
  );
  const want = planDesired({
    view,
    health: { ...allUp, probes: new Map([...allUp.probes, ["partner", "down"]]) },
  });
  t.deepEqual(want.health.why.get("partner"), ["partner"]);
});

test("a peer BFD closed is left out of the desired peers", (t) => {
  const peer = config.bgp!.peers[0]!.address;
  const peers = planDesired({ view, health: { ...allUp, downPeers: new Set([peer]) } }).bgp!.peers;
  t.false(peers.some((p) => p.address === peer));
});

test("the view plans exactly what the whole static plan plans", (t) => {
  const full = planBgp(
    config as typeof config & { bgp: NonNullable<typeof config.bgp> },
    plan(config),
    HEALTHY,
    advertiseScope(config),
  );
  t.deepEqual(planDesired({ view, health: { ...allUp } }).bgp, full);
});

test("the view leaves the sources out, keeps their count and family, and cuts the scope to the destinations", (t) => {
  const planned = planStatic(config);
  for (const [i, p] of view.config.policies.entries()) {
    t.false("sources" in p);
    t.is(p.sourceCount, config.policies[i]!.sources.length);
  }
  t.deepEqual(
    view.config.policies.map((p) => p.family),
    [4, 4, 6],
  );
  t.true(view.scope.excluded.length < planned.scope.excluded.length);
  t.deepEqual(view.kernel.addresses, planned.kernel.addresses);
});

test("a view crosses a thread boundary whole (structured clone)", (t) => {
  const copy = structuredClone(view);
  t.deepEqual(copy, view);
  t.deepEqual(planDesired({ view: copy, health: allUp }), planDesired({ view, health: allUp }));
});
