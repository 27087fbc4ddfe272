// planBgp(): what is advertised is exactly what the NAT plan serves, cut at
// the configured destinations, never special-use space or pod networks; the
// default route only where allowed; the export filter agrees with the plan.
import test from "ava";
import fc from "fast-check";
import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { stringify } from "yaml";
import { loadConfig } from "../../inputs/config/load.js";
import type { Config } from "../../core/config/schema.js";
import type { BgpConfig } from "../../core/config/bgp-schema.js";
import { mustParsePrefix } from "../../core/ip.js";
import { plan } from "../../core/plan/kernel.js";
import { indexNat } from "../../core/plan/nat.js";
import { policyModels } from "../../core/plan/model.js";
import {
  advertiseScope,
  advertisedDestinations,
  exportFilter,
  mergeRanges,
  parseInterval,
  planBgp,
  rangeToCidrs,
  servedRanges,
  type Range,
} from "../../core/plan/bgp.js";
import type { KernelState } from "../../core/state.js";
import { NO_HEALTH_INPUTS, planDesired, viewOf } from "../../core/plan/index.js";

const cidrs = (lo: string, hi: string) => {
  const a = parseInterval(lo);
  const b = parseInterval(hi);
  return rangeToCidrs({ family: a.family, lo: a.lo, hi: b.hi });
};

test("ranges are cut into the fewest CIDRs", (t) => {
  t.deepEqual(cidrs("203.0.113.0", "203.0.113.255"), ["203.0.113.0/24"]);
  t.deepEqual(cidrs("203.0.113.0", "203.0.113.127"), ["203.0.113.0/25"]);
  t.deepEqual(cidrs("10.0.0.1", "10.0.0.6"), ["10.0.0.1/32", "10.0.0.2/31", "10.0.0.4/31", "10.0.0.6/32"]);
  t.deepEqual(cidrs("0.0.0.0", "255.255.255.255"), ["0.0.0.0/0"]);
  t.deepEqual(cidrs("::", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"), ["::/0"]);
  t.deepEqual(cidrs("2001:db8::", "2001:db8::ffff"), ["2001:db8::/112"]);
});

test("adjacent and overlapping ranges merge, families stay apart", (t) => {
  const merged = mergeRanges(
    ["10.0.1.0/24", "10.0.0.0/24", "10.0.0.128/25", "2001:db8::/64", "10.0.3.0/24"].map(parseInterval),
  );
  t.deepEqual(merged.flatMap(rangeToCidrs), ["10.0.0.0/23", "10.0.3.0/24", "2001:db8::/64"]);
});

test("property: many IPv4 ranges (the typed-array path) merge as a plain sort and sweep does", (t) => {
  // The reference: every range sorted as bigints by family and start, then swept.
  const reference = (rs: Range[]) => {
    const out: Range[] = [];
    for (const r of [...rs].sort((a, b) => a.family - b.family || (a.lo < b.lo ? -1 : a.lo > b.lo ? 1 : 0))) {
      const last = out[out.length - 1];
      if (last && last.family === r.family && r.lo <= last.hi + 1n) last.hi = r.hi > last.hi ? r.hi : last.hi;
      else out.push({ ...r });
    }
    return out;
  };
  const v4 = fc
    .tuple(fc.integer({ min: 0, max: 2 ** 32 - 1 }), fc.integer({ min: 0, max: 300 }), fc.boolean())
    .map(([lo, span, top]): Range => {
      const start = top ? 2 ** 32 - 1 - span : lo; // some reach 255.255.255.255
      return { family: 4, lo: BigInt(start), hi: BigInt(Math.min(2 ** 32 - 1, start + span)) };
    });
  const dense = fc
    .tuple(fc.integer({ min: 0, max: 2000 }), fc.integer({ min: 0, max: 3 }))
    .map(([lo, span]): Range => ({ family: 4, lo: BigInt(lo), hi: BigInt(lo + span) }));
  const v6 = fc
    .tuple(fc.bigInt({ min: 0n, max: 2n ** 128n - 1000n }), fc.integer({ min: 0, max: 999 }))
    .map(([lo, span]): Range => ({ family: 6, lo, hi: lo + BigInt(span) }));
  fc.assert(
    fc.property(
      fc.array(fc.oneof(v4, dense, dense), { minLength: 64, maxLength: 400 }),
      fc.array(v6, { maxLength: 5 }),
      (a, b) => {
        const input = fc.sample(fc.shuffledSubarray([...a, ...b], { minLength: a.length + b.length }), 1)[0]!;
        t.deepEqual(mergeRanges(input), reference(input));
      },
    ),
  );
});

type Pol = { name: string; sources: string[]; destinations: string[]; gateway?: boolean; egressIP?: string };

/** A validated config (loadConfig must accept it) with a bgp section. */
function config(policies: Pol[], advertise: BgpConfig["advertise"] = {}): Config & { bgp: BgpConfig } {
  const c = {
    gateway: { name: "gw", site: "a" },
    egressIPs: [
      { address: "192.0.2.11", interface: "lo" },
      { address: "2001:db8:e::11", interface: "lo" },
    ],
    uplinks: [{ name: "tor", interface: "eth1", nextHop: "10.1.1.0", nextHop6: "fd00:1::" }],
    policies: policies.map((p) =>
      p.gateway === false
        ? { name: p.name, sources: p.sources, destinations: p.destinations, gateway: false }
        : {
            name: p.name,
            sources: p.sources,
            destinations: p.destinations,
            egressIP: p.egressIP ?? (p.sources[0]!.includes(":") ? "2001:db8:e::11" : "192.0.2.11"),
            uplink: "tor",
          },
    ),
    bgp: {
      asn: 65011,
      routerId: "10.1.1.1",
      peers: [{ name: "tor", address: "10.1.1.0", asn: 65010 }],
      advertise,
    },
  };
  const r = loadConfig(stringify(c));
  if (!r.ok) throw new Error(r.errors.map((e) => `${e.path}: ${e.message}`).join("\n"));
  return r.config as Config & { bgp: BgpConfig };
}

const advertised = (c: Config & { bgp: BgpConfig }, down: string[] = []) =>
  planBgp(c, plan(c), { downPolicies: new Set(down), gatewayDown: false }, advertiseScope(c)).paths.map(
    (p) => p.prefix,
  );

test("adjacent destinations of two policies are both advertised, each on its own", (t) => {
  const c = config([
    { name: "red", sources: ["10.244.1.0/24"], destinations: ["198.51.100.0/24"] },
    { name: "blue", sources: ["10.244.2.0/24"], destinations: ["198.51.101.0/24"] },
  ]);
  t.deepEqual(advertised(c), ["192.0.2.11/32", "2001:db8:e::11/128", "198.51.100.0/24", "198.51.101.0/24"]);
  t.deepEqual(advertised(c, ["red"]), ["192.0.2.11/32", "2001:db8:e::11/128", "198.51.101.0/24"]);
});

test("one policy's two adjacent halves are advertised as the two halves configured", (t) => {
  const c = config([
    { name: "web", sources: ["10.244.0.0/16"], destinations: ["203.0.113.0/25", "203.0.113.128/25"] },
  ]);
  t.deepEqual(advertised(c).slice(2), ["203.0.113.0/25", "203.0.113.128/25"]);
});

test("a nested destination does not split the outer one", (t) => {
  const c = config([
    { name: "wide", sources: ["10.244.1.0/24"], destinations: ["198.18.0.0/15"] },
    { name: "narrow", sources: ["10.244.2.0/24"], destinations: ["198.18.5.0/24"] },
  ]);
  t.deepEqual(advertised(c).slice(2), ["198.18.0.0/15"]);
});

test("a nested destination not advertised here is cut out of the outer one: no traffic for it is drawn here", (t) => {
  const c = config([
    { name: "wide", sources: ["10.244.1.0/24"], destinations: ["198.51.100.0/24"] },
    { name: "vault", sources: ["10.244.1.13"], destinations: ["198.51.100.10/32"] },
  ]);
  c.policies[1]!.advertise = false;
  t.deepEqual(advertised(c).slice(2), [
    "198.51.100.0/29",
    "198.51.100.8/31",
    "198.51.100.11/32",
    "198.51.100.12/30",
    "198.51.100.16/28",
    "198.51.100.32/27",
    "198.51.100.64/26",
    "198.51.100.128/25",
  ]);
});

test("an address claimed from an egress IP group carries its group's attributes for this site", (t) => {
  const c = config([{ name: "web", sources: ["10.244.1.0/24"], destinations: ["198.51.100.0/24"] }]);
  const attributes = { med: 50, asPathPrepend: 2, communities: ["65010:200"] };
  const paths = planBgp(
    {
      ...c,
      claimed: { groups: ["payments"], addresses: ["192.0.2.11"], attributes: { "192.0.2.11": attributes } },
    },
    plan(c),
    { downPolicies: new Set(), gatewayDown: false },
    advertiseScope(c),
  ).paths;
  t.like(
    paths.find((p) => p.prefix === "192.0.2.11/32"),
    attributes,
  );
  const other = paths.find((p) => p.prefix === "2001:db8:e::11/128")!;
  t.deepEqual([other.med, other.asPathPrepend, other.communities], [undefined, undefined, undefined]);
});

test("a /0 destination: the default route when allowed, nothing spelled out when not", (t) => {
  const pols: Pol[] = [
    { name: "all", sources: ["10.244.0.0/16"], destinations: ["0.0.0.0/0"] },
    { name: "partner", sources: ["10.244.1.0/24"], destinations: ["203.0.113.0/24"] },
  ];
  t.deepEqual(advertised(config(pols)).slice(2), ["203.0.113.0/24"], "no 0.0.0.0/5 and its kin");
  t.deepEqual(advertised(config(pols, { allowDefaultRoute: true })).slice(2), [
    "0.0.0.0/0",
    "203.0.113.0/24",
  ]);
  t.deepEqual(advertised(config(pols, { allowDefaultRoute: true }), ["all"]).slice(2), ["203.0.113.0/24"]);
});

test("special-use space and pod networks inside a destination are never advertised", (t) => {
  const c = config([{ name: "low", sources: ["10.244.0.0/16"], destinations: ["0.0.0.0/1"] }]);
  const out = advertised(c).slice(2).map(mustParsePrefix);
  const hits = (cidr: string) => {
    const x = mustParsePrefix(cidr);
    return out.filter((p) => p.lo <= x.hi && x.lo <= p.hi).length;
  };
  t.is(hits("0.0.0.0/8"), 0);
  t.is(hits("127.0.0.0/8"), 0);
  t.is(hits("10.244.0.0/16"), 0);
  t.true(hits("10.0.0.0/16") > 0 && hits("100.64.0.0/10") > 0);
  const wide = config([{ name: "rfc1918", sources: ["10.244.0.0/16"], destinations: ["10.0.0.0/8"] }]);
  t.deepEqual(advertised(wide).slice(2), [
    "10.0.0.0/9",
    "10.128.0.0/10",
    "10.192.0.0/11",
    "10.224.0.0/12",
    "10.240.0.0/14",
    "10.245.0.0/16",
    "10.246.0.0/15",
    "10.248.0.0/13",
  ]);
});

test("the export filter keeps what the plan made and drops what it must never let out", (t) => {
  const c = config([
    { name: "red", sources: ["10.244.1.0/24"], destinations: ["198.51.100.0/24"] },
    { name: "blue", sources: ["10.244.2.0/24"], destinations: ["198.51.101.0/24"] },
  ]);
  const scope = advertiseScope(c);
  const path = (prefix: string) => ({ prefix, nextHop: "0.0.0.0" });
  const kept = exportFilter(
    scope,
    [
      "192.0.2.11/32",
      "198.51.100.0/24",
      "198.51.101.0/25",
      "198.51.100.0/23",
      "0.0.0.0/0",
      "10.244.1.0/24",
      "127.0.0.1/32",
      "192.0.2.12/32",
    ].map(path),
  ).map((p) => p.prefix);
  t.deepEqual(kept, ["192.0.2.11/32", "198.51.100.0/24", "198.51.101.0/25"]);
});

// The property: for random valid policy sets, the advertised destinations are
// (1) pairwise disjoint, (2) each inside one configured non-default
// destination, (3) clear of special-use space and of every source, and (4)
// together exactly the served space less (3), within those destinations.
const octet = fc.integer({ min: 0, max: 255 });
const v4prefix = fc
  .tuple(fc.constantFrom(10, 100, 172, 198, 203), octet, octet, fc.integer({ min: 8, max: 28 }))
  .map(([a, b, c, len]) => {
    const v = ((a << 24) | (b << 16) | (c << 8)) >>> 0;
    const masked = len === 0 ? 0 : (v >>> (32 - len)) << (32 - len);
    return `${masked >>> 24}.${(masked >>> 16) & 255}.${(masked >>> 8) & 255}.${masked & 255}/${len}`;
  });

function toRanges(cidrs: string[]): Range[] {
  return cidrs.map((c) => {
    const p = mustParsePrefix(c);
    return { family: p.family, lo: p.lo, hi: p.hi };
  });
}
const NEVER = ["0.0.0.0/8", "127.0.0.0/8", "169.254.0.0/16", "224.0.0.0/3"];
/** a less b, both merged and sorted. */
function minus(a: Range[], b: Range[]): Range[] {
  const out: Range[] = [];
  for (const r of a) {
    let lo = r.lo;
    for (const x of b) {
      if (x.family !== r.family || x.hi < lo || x.lo > r.hi) continue;
      if (x.lo > lo) out.push({ family: r.family, lo, hi: x.lo - 1n });
      lo = x.hi + 1n;
    }
    if (lo <= r.hi) out.push({ family: r.family, lo, hi: r.hi });
  }
  return out;
}
const within = (r: Range, outer: Range[]) =>
  outer.some((o) => o.family === r.family && o.lo <= r.lo && r.hi <= o.hi);
const overlaps = (r: Range, set: Range[]) =>
  set.some((o) => o.family === r.family && o.lo <= r.hi && r.lo <= o.hi);

test("property: advertised equals served, cut at configured destinations, nothing outside them; the view plans the same", (t) => {
  const policy = fc.record({
    sources: fc.uniqueArray(v4prefix, { minLength: 1, maxLength: 3 }),
    destinations: fc.uniqueArray(v4prefix, { minLength: 1, maxLength: 3 }),
    gateway: fc.boolean(),
  });
  let checked = 0;
  fc.assert(
    fc.property(
      fc.array(policy, { minLength: 1, maxLength: 5 }),
      fc.array(fc.boolean(), { maxLength: 5 }),
      (ps, downs) => {
        const pols: Pol[] = ps.map((p, i) => ({ name: `p${i}`, ...p, gateway: p.gateway || i === 0 }));
        let c: Config & { bgp: BgpConfig };
        try {
          c = config(pols);
        } catch {
          return; // invalid (ambiguous) sets are refused by validation: not a case for the planner
        }
        checked++;
        const down = new Set(pols.filter((_, i) => downs[i]).map((p) => p.name));
        const kernel: KernelState = plan(c);
        const scope = advertiseScope(c);
        // Made from the NAT classifier's entries instead of the config's sources: the same.
        t.deepEqual(advertiseScope(c, indexNat(policyModels(c))), scope);
        const adv = toRanges(advertisedDestinations(scope, kernel, down));
        const dests = toRanges(pols.filter((p) => p.gateway !== false).flatMap((p) => p.destinations));
        const sources = toRanges(pols.flatMap((p) => p.sources));
        const sorted = [...adv].sort((a, b) => (a.lo < b.lo ? -1 : 1));
        for (let i = 1; i < sorted.length; i++) t.true(sorted[i - 1]!.hi < sorted[i]!.lo, "disjoint");
        for (const r of adv) {
          t.true(within(r, dests), "inside a configured destination");
          t.false(overlaps(r, sources), "no pod network");
          t.false(overlaps(r, toRanges(NEVER)), "no special-use space");
        }
        // Exactly the served space less what is never advertised (the NAT plan
        // only serves inside configured destinations, so "within" adds nothing).
        const never = mergeRanges([...toRanges(NEVER), ...sources]);
        t.deepEqual(
          mergeRanges(adv),
          mergeRanges(minus(servedRanges(kernel, down), never)),
          "served less excluded",
        );
        const paths = advertisedDestinations(scope, kernel, down).map((prefix) => ({
          prefix,
          nextHop: "0.0.0.0",
        }));
        t.is(
          exportFilter(scope, paths).length,
          paths.length,
          "the export filter drops nothing the plan made",
        );
        // The main thread plans from the small view: it must plan the same.
        const view = viewOf({ config: c, kernel, scope });
        t.deepEqual(
          advertisedDestinations(view.scope, view.kernel, down),
          advertisedDestinations(scope, kernel, down),
        );
        const fromView = planDesired({ view, health: NO_HEALTH_INPUTS });
        t.deepEqual(fromView.bgp, planBgp(c, kernel, fromView.health, scope));
      },
    ),
    { numRuns: 300 },
  );
  t.true(checked > 100, `${checked} valid configs checked`);
});

test("egressd plan prints each peer's paths with their attributes, and --json has them without the password", (t) => {
  const c = config([{ name: "web", sources: ["10.244.0.0/16"], destinations: ["203.0.113.0/24"] }], {
    med: 10,
    asPathPrepend: 2,
    communities: ["65011:200"],
  });
  const yaml = stringify({
    ...c,
    bgp: {
      ...c.bgp,
      peers: [
        { name: "tor", address: "10.1.1.0", asn: 65010, password: "s3cret-md5", localAddress: "10.1.1.1" },
      ],
    },
  });
  const dir = mkdtempSync(join(tmpdir(), "egressd-plan-"));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const file = join(dir, "egressd.yaml");
  writeFileSync(file, yaml);
  const cli = join(import.meta.dirname, "..", "..", "daemon", "cli.js");
  const text = execFileSync(process.execPath, [cli, "plan", file], { encoding: "utf8" });
  t.regex(text, /^# BGP \(AS 65011, router id 10\.1\.1\.1\): paths per peer while all probes are up$/m);
  t.regex(text, /^peer tor 10\.1\.1\.0 AS 65010 \(2 paths\)$/m);
  t.regex(text, /^ {2}192\.0\.2\.11\/32 {2}next-hop self \(10\.1\.1\.1\)$/m);
  t.regex(
    text,
    /^ {2}203\.0\.113\.0\/24 {2}next-hop self \(10\.1\.1\.1\) {2}med 10 {2}as-path-prepend 2 {2}communities 65011:200$/m,
  );
  t.false(text.includes("s3cret-md5"));
  const json = execFileSync(process.execPath, [cli, "plan", "--json", file], { encoding: "utf8" });
  t.false(json.includes("s3cret-md5"));
  const parsed = JSON.parse(json) as {
    addresses: unknown[];
    bgp: { peers: { password?: string }[]; paths: { prefix: string }[] };
  };
  t.is(parsed.addresses.length, 2);
  t.is(parsed.bgp.peers[0]!.password, "(set)");
  t.deepEqual(
    parsed.bgp.paths.map((p) => p.prefix),
    ["192.0.2.11/32", "2001:db8:e::11/128", "203.0.113.0/24"],
  );
});
