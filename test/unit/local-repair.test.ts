// Local repair, without root: which destinations a gateway hands to its sync
// peer (core/plan/repair.ts), the nft table that does it
// (routing/local-repair.ts), and the rule that what is forwarded is exactly
// what health withdrew: forwarded and advertised together make what a
// healthy gateway advertises, and never overlap.
import test from "ava";
import fc from "fast-check";
import { stringify } from "yaml";
import { loadConfig } from "../../inputs/config/load.js";
import type { Config } from "../../core/config/schema.js";
import type { BgpConfig } from "../../core/config/bgp-schema.js";
import { plan } from "../../core/plan/kernel.js";
import { advertiseScope, mergeRanges, parseInterval, planBgp, rangeToCidrs } from "../../core/plan/bgp.js";
import { repairPlan } from "../../core/plan/repair.js";
import { NO_HEALTH_INPUTS, planDesired, planStatic, viewOf } from "../../core/plan/index.js";
import { renderRepair } from "../../routing/local-repair.js";

type Pol = { name: string; sources: string[]; destinations: string[] };

/**
 * The config's text as loadConfig reads it; `sync` changes its connectionSync section, `more.probes`
 * adds probes and `more.patch` rewrites the policies.
 */
function raw(
  policies: Pol[],
  sync: Record<string, unknown> = { localRepair: true },
  more: { probes?: unknown[]; patch?: (p: Record<string, unknown>[]) => Record<string, unknown>[] } = {},
): string {
  const pols: Record<string, unknown>[] = policies.map((p) => ({
    ...p,
    egressIP: p.sources[0]!.includes(":") ? "2001:db8:e::11" : "192.0.2.11",
    uplink: "tor",
  }));
  return stringify({
    gateway: { name: "gw", site: "a" },
    egressIPs: [
      { address: "192.0.2.11", interface: "lo" },
      { address: "2001:db8:e::11", interface: "lo" },
    ],
    uplinks: [{ name: "tor", interface: "eth1", nextHop: "10.1.1.0", nextHop6: "fd00:1::" }],
    policies: more.patch ? more.patch(pols) : pols,
    ...(more.probes ? { probes: more.probes } : {}),
    connectionSync: {
      interface: "eth2",
      address: "10.1.9.1",
      peers: [{ name: "gw-b", address: "10.1.9.2", egressIPs: ["192.0.2.12"] }],
      sources: ["10.244.0.0/16"],
      ...sync,
    },
    bgp: { asn: 65011, routerId: "10.1.1.1", peers: [{ name: "tor", address: "10.1.1.0", asn: 65010 }] },
  });
}

function config(policies: Pol[], localRepair = true): Config & { bgp: BgpConfig } {
  const r = loadConfig(raw(policies, localRepair ? { localRepair: true } : {}));
  if (!r.ok) throw new Error(r.errors.map((e) => `${e.path}: ${e.message}`).join("\n"));
  return r.config as Config & { bgp: BgpConfig };
}

const repaired = (c: Config & { bgp: BgpConfig }, down: string[], more: object = {}) =>
  repairPlan(c.connectionSync, c.uplinks, advertiseScope(c), plan(c), {
    downPolicies: new Set(down),
    gatewayDown: false,
    ...more,
  });

const POLICIES: Pol[] = [
  { name: "web", sources: ["10.244.0.0/16"], destinations: ["203.0.113.0/24"] },
  { name: "partner", sources: ["10.244.1.11"], destinations: ["198.51.100.0/24", "203.0.113.128/25"] },
  { name: "web6", sources: ["fd00:244::/32"], destinations: ["2001:db8:203::/48"] },
];

test("a failed policy's destinations are forwarded to the first peer over the sync link, from every uplink", (t) => {
  const c = config(POLICIES);
  t.deepEqual(repaired(c, []), {
    via: { address: "10.1.9.2", interface: "eth2" },
    uplinks: ["eth1"],
    prefixes4: [],
  });
  t.deepEqual(repaired(c, ["partner"])?.prefixes4, ["198.51.100.0/24"], "what web still serves stays here");
  t.deepEqual(repaired(c, ["web", "partner"])?.prefixes4, ["198.51.100.0/24", "203.0.113.0/24"]);
  t.deepEqual(repaired(c, ["web6"])?.prefixes4, [], "IPv6: the sync link is IPv4");
});

test("nothing is forwarded while the gateway is down as a whole or draining, nor without localRepair", (t) => {
  const c = config(POLICIES);
  t.deepEqual(repaired(c, ["web"], { gatewayDown: true })?.prefixes4, []);
  t.deepEqual(repaired(c, ["web"], { draining: true })?.prefixes4, []);
  t.is(repaired(config(POLICIES, false), ["web"]), undefined);
});

test("a policy with advertise: false is withdrawn for good, not for a failure: never forwarded", (t) => {
  const c = loadConfig(
    raw(
      [
        { name: "web", sources: ["10.244.0.0/16"], destinations: ["203.0.113.0/24"] },
        { name: "partner", sources: ["10.244.1.11"], destinations: ["198.51.100.0/24"] },
      ],
      { localRepair: true },
      {
        probes: [{ name: "webp", kind: "icmp", target: "203.0.113.10", affects: { policy: "web" } }],
        patch: (pols: Record<string, unknown>[]) =>
          pols.map((p) => (p.name === "partner" ? { ...p, advertise: false } : p)),
      },
    ),
  );
  if (!c.ok) throw new Error(c.errors.map((e) => `${e.path}: ${e.message}`).join("\n"));
  const view = viewOf(planStatic(c.config));
  const at = (state: string) =>
    planDesired({ view, health: { ...NO_HEALTH_INPUTS, probes: new Map([["webp", state]]) } }).repair
      ?.prefixes4;
  t.deepEqual(at("up"), [], "web's probe up: nothing, though partner is never advertised");
  t.deepEqual(at("down"), ["203.0.113.0/24"], "web's probe down: web's destination, still not partner's");
});

test("the table: one set, an ingress hook on each uplink, no table when nothing is repaired", (t) => {
  const via = { address: "10.1.9.2", interface: "eth2" };
  const script = renderRepair({
    via,
    uplinks: ["eth1", "eth3"],
    prefixes4: ["198.51.100.0/24", "203.0.113.0/24"],
  });
  t.is(
    script,
    [
      "table netdev egressd_repair {}",
      "delete table netdev egressd_repair",
      "table netdev egressd_repair {",
      "  set repair4 {",
      "    type ipv4_addr",
      "    flags interval",
      "    elements = { 198.51.100.0/24, 203.0.113.0/24 }",
      "  }",
      "  chain uplink0 {",
      '    type filter hook ingress device "eth1" priority -500;',
      '    ip daddr @repair4 counter fwd ip to 10.1.9.2 device "eth2"',
      "  }",
      "  chain uplink1 {",
      '    type filter hook ingress device "eth3" priority -500;',
      '    ip daddr @repair4 counter fwd ip to 10.1.9.2 device "eth2"',
      "  }",
      "}",
      "",
    ].join("\n"),
  );
  t.is(
    renderRepair({ via, uplinks: ["eth1"], prefixes4: [] }),
    "table netdev egressd_repair {}\ndelete table netdev egressd_repair\n",
  );
});

test("a sync link that is also an uplink is refused with localRepair", (t) => {
  const r = loadConfig(raw(POLICIES, { interface: "eth1", address: "10.1.1.1", localRepair: true }));
  t.false(r.ok);
  if (!r.ok)
    t.true(
      r.errors.some(
        (e) =>
          e.path === "connectionSync.localRepair" && /eth1 is also uplinks\[0\]\.interface/.test(e.message),
      ),
      r.errors.map((e) => `${e.path}: ${e.message}`).join("; "),
    );
});

test("property: forwarded and advertised destinations together are what a healthy gateway advertises, and never overlap", (t) => {
  // Policies over a small space so that destinations nest, overlap and touch.
  const prefix = fc
    .tuple(fc.integer({ min: 0, max: 63 }), fc.integer({ min: 26, max: 32 }))
    .map(([i, len]) => {
      const base = (0xcb007100 + i * 4) >>> 0; // 203.0.113.0 + 4i
      const mask = len === 32 ? 0xffffffff : (~0 << (32 - len)) >>> 0;
      const a = (base & mask) >>> 0;
      return `${a >>> 24}.${(a >>> 16) & 255}.${(a >>> 8) & 255}.${a & 255}/${len}`;
    });
  let checked = 0;
  fc.assert(
    fc.property(
      fc.array(fc.array(prefix, { minLength: 1, maxLength: 3 }), { minLength: 1, maxLength: 5 }),
      fc.array(fc.boolean(), { minLength: 5, maxLength: 5 }),
      (dests, downFlags) => {
        const pols = dests.map((d, i) => ({ name: `p${i}`, sources: [`10.244.${i}.0/24`], destinations: d }));
        let c: Config & { bgp: BgpConfig };
        try {
          c = config(pols);
        } catch {
          return; // a config validation refuses (ambiguous policies): nothing to check
        }
        checked++;
        const down = pols.filter((_, i) => downFlags[i]).map((p) => p.name);
        const scope = advertiseScope(c);
        const kernel = plan(c);
        const adv = (d: string[]) =>
          planBgp(c, kernel, { downPolicies: new Set(d), gatewayDown: false }, scope)
            .paths.map((p) => p.prefix)
            .filter((p) => p !== "192.0.2.11/32" && !p.includes(":")); // the destinations: not the egress IPs
        const healthy = mergeRanges(adv([]).map(parseInterval));
        const now = adv(down).map(parseInterval);
        const forwarded = (repaired(c, down)?.prefixes4 ?? []).map(parseInterval);
        t.deepEqual(mergeRanges([...now, ...forwarded]).flatMap(rangeToCidrs), healthy.flatMap(rangeToCidrs));
        const total = (rs: ReturnType<typeof parseInterval>[]) =>
          rs.reduce((s, r) => s + (r.hi - r.lo + 1n), 0n);
        t.is(total(now) + total(forwarded), total(healthy), "no address is both advertised and forwarded");
      },
    ),
    { numRuns: 200 },
  );
  t.true(checked >= 100, `only ${checked} of 200 generated configs were valid`);
});
