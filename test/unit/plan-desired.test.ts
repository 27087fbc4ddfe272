// planDesired(): the core's one entry point, from every input to the whole
// desired state. Health inputs change only what is advertised, never the
// kernel plan; the config-only part is reused while the config is the same.
import test from "ava";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { loadConfig } from "../../inputs/config/load.js";
import { canonicalPath } from "../../core/bgp.js";
import type { GatewayConfig } from "../../core/config/gateway-config.js";
import { NO_HEALTH_INPUTS, planDesired, planStatic, type HealthInputs } from "../../core/plan/index.js";
import { REPO } from "../helpers/paths.js";

function labConfig(): GatewayConfig {
  const r = loadConfig(readFileSync(join(REPO, "containerlab", "two-dc", "gw-a1", "egressd.yaml"), "utf8"));
  if (!r.ok) throw new Error(r.errors.map((e) => `${e.path}: ${e.message}`).join("; "));
  return r.config as GatewayConfig;
}

const config = labConfig();
const probeNames = (config.probes ?? []).map((p) => p.name);
const allUp: HealthInputs = { ...NO_HEALTH_INPUTS, probes: new Map(probeNames.map((n) => [n, "up"])) };
const prefixes = (h: HealthInputs) =>
  (planDesired({ config, health: h }).bgp?.paths ?? []).map((p) => canonicalPath(p).prefix).sort();
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
    config,
    health: { ...allUp, probes: new Map([...allUp.probes, ["partner", "down"]]) },
  });
  t.deepEqual(want.health.why.get("partner"), ["partner"]);
});

test("a peer BFD closed is left out of the desired peers", (t) => {
  const peer = config.bgp!.peers[0]!.address;
  const peers = planDesired({ config, health: { ...allUp, downPeers: new Set([peer]) } }).bgp!.peers;
  t.false(peers.some((p) => p.address === peer));
});

test("health never changes the kernel plan, and the static part is reused", (t) => {
  const planned = planStatic(config);
  const a = planDesired({ config, health: allUp }, planned);
  const b = planDesired(
    { config, health: { ...allUp, draining: true, selfDown: ["self-nft-table"] } },
    planned,
  );
  t.is(a.kernel, planned.kernel);
  t.is(b.kernel, planned.kernel);
  t.deepEqual(planDesired({ config, health: allUp }).kernel, planned.kernel);
  t.true(b.health.gatewayDown);
});
