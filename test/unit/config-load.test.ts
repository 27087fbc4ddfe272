// Validation: every class of error is reported, with its path and line, and
// all of them at once; valid files load into a typed Config.
import test from "ava";
import { readdirSync, readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import fc from "fast-check";
import { load as loadFast } from "js-yaml";
import { parse, stringify } from "yaml";
import { loadConfig, type LoadResult } from "../../inputs/config/load.js";
import { formatIssue } from "../../inputs/config/issues.js";
import type { Config } from "../../core/config/schema.js";

const BASE: Config = {
  gateway: { name: "gw-a1", site: "dc-a" },
  egressIPs: [
    { address: "192.0.2.11", interface: "lo" },
    { address: "192.0.2.12", interface: "lo" },
    { address: "2001:db8:e::11", interface: "lo" },
  ],
  uplinks: [{ name: "tor", interface: "eth1", nextHop: "10.1.1.0", nextHop6: "fd00:1:1::" }],
  policies: [
    {
      name: "red",
      sources: ["10.244.1.0/24", "10.244.2.5"],
      destinations: ["203.0.113.0/24"],
      exceptions: ["203.0.113.128/25"],
      egressIP: "192.0.2.11",
      uplink: "tor",
    },
    { name: "direct", sources: ["10.244.0.0/16"], destinations: ["10.0.0.0/8"], gateway: false },
  ],
};

type Mutable = Record<string, unknown> & Config;
function withChange(change: (c: Mutable) => void): string {
  const c = structuredClone(BASE) as Mutable;
  change(c);
  return stringify(c);
}

function errorsOf(r: LoadResult): string[] {
  return r.ok ? [] : r.errors.map((e) => `${e.path}: ${e.message}`);
}

function expectError(t: import("ava").ExecutionContext, text: string, path: string, pattern: RegExp): void {
  const r = loadConfig(text);
  t.false(r.ok, "expected the config to be rejected");
  const hits = r.ok ? [] : r.errors.filter((e) => e.path === path && pattern.test(e.message));
  t.is(hits.length, 1, `expected one error at ${path} matching ${pattern}; got:\n${errorsOf(r).join("\n")}`);
}

test("the base config and the examples are valid", (t) => {
  const r = loadConfig(stringify(BASE));
  t.true(r.ok, errorsOf(r).join("\n"));
  if (r.ok) t.deepEqual(r.warnings, []);
  const dir = fileURLToPath(new URL("../../../examples/", import.meta.url));
  const files = readdirSync(dir).filter((f) => f.endsWith(".yaml"));
  t.true(files.length >= 3);
  for (const f of files) {
    const ex = loadConfig(readFileSync(dir + f, "utf8"));
    t.true(ex.ok, `${f}: ${errorsOf(ex).join("\n")}`);
    t.deepEqual(ex.warnings, [], f);
  }
});

test("malformed CIDRs and addresses, with the canonical form for host bits", (t) => {
  const text = withChange((c) => {
    c.policies[0]!.destinations = [
      "10.0.0.0/33",
      "10.0.0.1/8",
      "300.1.1.1",
      "10.1.01.0/24",
      "2001:db8::/129",
    ];
  });
  expectError(t, text, "policies[0].destinations[0]", /10\.0\.0\.0\/33 is not a CIDR/);
  expectError(t, text, "policies[0].destinations[1]", /host bits set \(did you mean 10\.0\.0\.0\/8\?\)/);
  expectError(t, text, "policies[0].destinations[2]", /"300\.1\.1\.1" is not an IP address or CIDR/);
  expectError(t, text, "policies[0].destinations[3]", /is not a CIDR/);
  expectError(t, text, "policies[0].destinations[4]", /0-128/);
  expectError(
    t,
    withChange((c) => (c.egressIPs[0]!.address = "192.0.2.300")),
    "egressIPs[0].address",
    /not an IP address/,
  );
  expectError(
    t,
    withChange((c) => (c.egressIPs[0]!.address = "192.0.2.11/32")),
    "egressIPs[0].address",
    /without a prefix length/,
  );
  expectError(
    t,
    withChange((c) => (c.uplinks[0]!.nextHop = "fe80::1%eth0")),
    "uplinks[0].nextHop",
    /not an IP address/,
  );
});

test("IPv4/IPv6 mixes inside one policy name the path", (t) => {
  const text = withChange((c) => {
    c.policies[0]!.sources.push("fd00:10:244::/64");
    c.policies[0]!.exceptions = ["2001:db8::/64"];
  });
  expectError(
    t,
    text,
    "policies[0].sources[2]",
    /is IPv6 but this policy is IPv4 \(egressIP 192\.0\.2\.11\)/,
  );
  expectError(t, text, "policies[0].exceptions[0]", /is IPv6 but this policy is IPv4/);
  expectError(
    t,
    withChange((c) => (c.policies[0]!.egressIP = "2001:db8:e::11")),
    "policies[0].sources[0]",
    /IPv4 but this policy is IPv6/,
  );
  expectError(
    t,
    withChange((c) => (c.policies[1]!.destinations = ["10.0.0.0/8", "2001:db8::/32"])),
    "policies[1].destinations[1]",
    /IPv6 but this policy is IPv4 \(sources\[0\] 10\.244\.0\.0\/16\)/,
  );
  expectError(
    t,
    withChange((c) => (c.uplinks[0]!.nextHop = "fd00::1")),
    "uplinks[0].nextHop",
    /use nextHop6/,
  );
});

test("egress IP not owned, unknown uplink, uplink without a next hop of the family", (t) => {
  expectError(
    t,
    withChange((c) => (c.policies[0]!.egressIP = "192.0.2.99")),
    "policies[0].egressIP",
    /192\.0\.2\.99 is not owned by this gateway/,
  );
  expectError(
    t,
    withChange((c) => (c.policies[0]!.uplink = "tar")),
    "policies[0].uplink",
    /unknown uplink "tar" \(known: "tor"\)/,
  );
  expectError(
    t,
    withChange((c) => delete c.uplinks[0]!.nextHop),
    "policies[0].uplink",
    /has no IPv4 nextHop/,
  );
  expectError(
    t,
    withChange((c) => {
      delete c.uplinks[0]!.nextHop;
      delete c.uplinks[0]!.nextHop6;
    }),
    "uplinks[0]",
    /needs nextHop/,
  );
});

test("duplicates: policy names, uplink names, egress IPs, routing tables", (t) => {
  expectError(
    t,
    withChange((c) => (c.policies[1]!.name = "red")),
    "policies[1].name",
    /duplicate policy name "red" \(also policies\[0\]\)/,
  );
  expectError(
    t,
    withChange((c) => c.uplinks.push({ ...c.uplinks[0]! })),
    "uplinks[1].name",
    /duplicate uplink name/,
  );
  expectError(
    t,
    withChange((c) => c.egressIPs.push({ address: "2001:db8:e:0::11", interface: "lo" })),
    "egressIPs[3].address",
    /already listed at egressIPs\[2\]/,
  );
  expectError(
    t,
    withChange((c) => {
      c.uplinks.push({ name: "tor2", interface: "eth2", nextHop: "10.1.2.0", nextHop6: "fd00:1:2::" });
      (c.uplinks[1] as { table?: number }).table = 20100;
    }),
    "uplinks[1].table",
    /also used by uplinks\[0\]/,
  );
  expectError(
    t,
    withChange((c) => ((c.uplinks[0] as { table?: number }).table = 254)),
    "uplinks[0].table",
    /main table/,
  );
});

test("unknown keys (with a suggestion) and missing required fields", (t) => {
  const text = withChange((c) => {
    c.colour = "red";
    (c.policies[0] as Record<string, unknown>).egressIp = "192.0.2.11";
    delete (c.policies[0] as Record<string, unknown>).egressIP;
    delete (c.gateway as Record<string, unknown>).site;
    delete (c.policies[1] as Record<string, unknown>).destinations;
  });
  expectError(
    t,
    text,
    "colour",
    /unknown key \(known keys: gateway, egressIPs, uplinks, egressIPGroups, policies, dataplane, bgp, probes, drain, connectionSync, audit, kubernetes, http, log\)/,
  );
  expectError(t, text, "policies[0].egressIp", /unknown key \(did you mean "egressIP"\?\)/);
  expectError(
    t,
    text,
    "policies[0]",
    /missing required field "egressIP" \(or egressIPGroup, or action Direct\)/,
  );
  expectError(t, text, "gateway", /missing required field "site"/);
  expectError(t, text, "policies[1]", /missing required field "destinations"/);
  expectError(t, "gateway: { name: gw, site: a }\n", "(top level)", /missing required field "policies"/);
});

test("types, names, empty lists, no-gateway restrictions, mark mask", (t) => {
  expectError(
    t,
    withChange((c) => ((c.policies as unknown) = "none")),
    "policies",
    /must be a list/,
  );
  expectError(
    t,
    withChange((c) => (c.gateway.name = "GW_1")),
    "gateway.name",
    /not a valid name/,
  );
  expectError(
    t,
    withChange((c) => (c.uplinks[0]!.interface = "a-very-long-ifname0")),
    "uplinks[0].interface",
    /interface name/,
  );
  expectError(
    t,
    withChange((c) => (c.policies[0]!.sources = [])),
    "policies[0].sources",
    /must not be empty/,
  );
  expectError(
    t,
    withChange((c) => ((c.policies[1] as Record<string, unknown>).egressIP = "192.0.2.11")),
    "policies[1].egressIP",
    /not allowed with action Direct/,
  );
  expectError(
    t,
    withChange((c) => (c.policies[0]!.exceptions = ["198.51.100.0/24"])),
    "policies[0].exceptions[0]",
    /not inside any of this policy's destinations/,
  );
  expectError(
    t,
    withChange((c) => (c.dataplane = { markMask: 0xff00 })),
    "dataplane.markMask",
    /overlaps kube-proxy's mark bits/,
  );
  const many = withChange((c) => {
    c.dataplane = { markMask: 0x30000000 }; // 2 bits: room for 3 policies
    for (let i = 0; i < 3; i++)
      c.policies.push({ ...c.policies[0]!, name: `p${i}`, sources: [`10.250.${i}.0/24`] });
  });
  expectError(
    t,
    many,
    "policies",
    /4 policies use the gateway but dataplane\.markMask 0x30000000 has room for 3/,
  );
});

test("ambiguous overlaps name both policies; source specificity and distinct prefixes resolve them", (t) => {
  const blue = {
    name: "blue",
    sources: ["10.244.1.0/24"],
    destinations: ["203.0.113.0/24"],
    egressIP: "192.0.2.12",
    uplink: "tor",
  };
  expectError(
    t,
    withChange((c) => c.policies.push(blue)),
    "policies[2]",
    /"blue" is ambiguous with policies\[0\] \("red"\): both apply to sources 10\.244\.1\.0\/24 and destination 203\.0\.113\.0\/24/,
  );
  // A more specific source, or a more specific destination, decides.
  for (const change of [{ sources: ["10.244.1.0/25"] }, { destinations: ["203.0.113.0/25"] }]) {
    const r = loadConfig(withChange((c) => c.policies.push({ ...blue, ...change })));
    t.true(r.ok, errorsOf(r).join("\n"));
  }
  // Same results are not ambiguous: two "leave alone" rules for the same destination.
  const r = loadConfig(
    withChange((c) =>
      c.policies.push({
        name: "direct2",
        sources: ["10.244.0.0/16"],
        destinations: ["10.0.0.0/8"],
        gateway: false,
      }),
    ),
  );
  t.true(r.ok, errorsOf(r).join("\n"));
  // An ambiguity hidden under more specific prefixes everywhere is not reported.
  const hidden = loadConfig(
    withChange((c) => {
      c.policies.push({ ...blue, destinations: ["203.0.113.0/24"] });
      c.policies[0]!.destinations.push("203.0.113.0/25");
      c.policies[0]!.exceptions = ["203.0.113.128/25"];
    }),
  );
  t.true(hidden.ok, errorsOf(hidden).join("\n"));
});

test("a shadowed policy is a warning, not an error", (t) => {
  const r = loadConfig(
    withChange((c) =>
      c.policies.push({
        name: "shadowed",
        sources: ["10.244.0.0/16"],
        destinations: ["203.0.113.128/25"],
        egressIP: "192.0.2.12",
        uplink: "tor",
      }),
    ),
  );
  // 10.244.0.0/16 -> 203.0.113.128/25 applies to sources outside red's; only red's sources are shadowed.
  t.true(r.ok);
  const s = loadConfig(
    withChange((c) =>
      c.policies.push({
        name: "shadowed",
        sources: ["10.244.1.0/24"],
        destinations: ["203.0.113.0/25"],
        exceptions: ["203.0.113.0/25"],
        egressIP: "192.0.2.12",
        uplink: "tor",
      }),
    ),
  );
  t.true(s.ok, errorsOf(s).join("\n"));
  t.deepEqual(
    s.warnings.map((w) => w.path),
    ["policies[2]"],
  );
});

test("every error is reported at once, in line order, with lines", (t) => {
  const text = [
    "gateway: { name: gw, site: dc-a, colour: red }", // 1
    "egressIPs:", // 2
    "  - { address: 192.0.2.11, interface: lo }", // 3
    "uplinks:", // 4
    "  - { name: tor, interface: eth1, nextHop: 10.1.1.0 }", // 5
    "policies:", // 6
    "  - name: red", // 7
    "    sources: [10.244.1.0/24]", // 8
    "    destinations:", // 9
    "      - 203.0.113.0/24", // 10
    "      - 10.0.0.0/33", // 11
    "    egressIP: 192.0.2.99", // 12
    "    uplink: tor", // 13
    "",
  ].join("\n");
  const r = loadConfig(text);
  t.false(r.ok);
  if (r.ok) return;
  t.deepEqual(
    r.errors.map((e) => formatIssue(e, "gw.yaml")),
    [
      "gw.yaml:1: gateway.colour: unknown key (known keys: name, site)",
      "gw.yaml:11: policies[0].destinations[1]: 10.0.0.0/33 is not a CIDR (prefix length must be 0-32 for IPv4)",
      "gw.yaml:12: policies[0].egressIP: 192.0.2.99 is not owned by this gateway (not in egressIPs)",
    ],
  );
});

test("YAML syntax errors, duplicate keys and empty files are errors with lines", (t) => {
  const bad = loadConfig("gateway: { name: gw, site: a }\ngateway: {}\n");
  t.false(bad.ok);
  if (!bad.ok) t.is(bad.errors[0]!.line, 2);
  const v6 = loadConfig("egressIPs:\n  - { address: 2001:db8::, interface: lo }\n");
  t.false(v6.ok);
  if (!v6.ok) t.regex(v6.errors[0]!.message, /quote IPv6/);
  const empty = loadConfig("# nothing\n");
  t.false(empty.ok);
  if (!empty.ok) t.is(empty.errors[0]!.message, "the file is empty");
});

test("hex mark masks and dataplane settings load", (t) => {
  const r = loadConfig(
    `${stringify(BASE)}dataplane:\n  markMask: 0x00ff0000\n  tableBase: 300\n  rulePriority: 900\n`,
  );
  t.true(r.ok, errorsOf(r).join("\n"));
  if (r.ok) t.is(r.config.dataplane?.markMask, 0x00ff0000);
});

// The two YAML parsers (inputs/config/load.ts): a valid file is read by
// js-yaml, anything with an issue again by `yaml`. They must agree on what a
// file says, or a config would mean one thing when valid and another when
// reported on.
test("property: js-yaml and the yaml package read every document `yaml` writes the same", (t) => {
  fc.assert(
    fc.property(fc.jsonValue({ maxDepth: 4 }), (value) => {
      const text = stringify(value);
      t.deepEqual(loadFast(text), parse(text), text);
    }),
    { numRuns: 300 },
  );
});

test("js-yaml and the yaml package agree on the scalars a hand-written config has", (t) => {
  const text = [
    'a: "2001:db8::1"',
    "b: 2001:db8::1",
    "c: 10.0.0.0/8",
    "d: yes", // YAML 1.2: a string
    "e: 0o17",
    "f: 0x1F",
    "g: 1e3",
    "h: ~",
    "i: null",
    "j: .inf",
    "k: 2024-01-01", // not a date in the core schema
    "l: 1_000",
    "m: [a, 'b', \"c\"]",
    "n: |",
    "  two",
    "  lines",
    "o: >-",
    "  folded",
    "  text",
    "p: 0xFF00000 # a comment",
    "q: -12",
    "r: +12",
    "s: 012",
    "t: TRUE",
    "u: False",
  ].join("\n");
  t.deepEqual(loadFast(text), parse(text));
});

test("a config with aliases, which only the yaml package reads, loads the same as without", (t) => {
  const plain = stringify(BASE);
  const aliased = plain
    .replace("address: 192.0.2.11", "address: &eip 192.0.2.11")
    .replace("egressIP: 192.0.2.11", "egressIP: *eip");
  t.true(aliased.includes("*eip") && aliased.includes("&eip"));
  t.throws(() => loadFast(aliased, { maxAliases: 0 }), undefined, "the fast path leaves it to the other");
  const r = loadConfig(aliased);
  t.true(r.ok);
  t.deepEqual(r.ok && r.config, (loadConfig(plain) as Extract<LoadResult, { ok: true }>).config);
});

test("egress IP groups: a policy naming one gets the group's address of its family and its uplink", (t) => {
  const text = withChange((c) => {
    c.uplinks.push({ name: "v4only", interface: "eth2", nextHop: "10.1.2.0" });
    c.egressIPGroups = [{ name: "tenant-a", egressIPs: ["192.0.2.12", "2001:db8:e::11"], uplink: "tor" }];
    c.policies.push(
      {
        name: "grp4",
        sources: ["10.244.3.0/24"],
        destinations: ["198.51.100.0/24"],
        egressIPGroup: "tenant-a",
      },
      {
        name: "grp6",
        sources: ["fd00:244::/64"],
        destinations: ["2001:db8:100::/48"],
        egressIPGroup: "tenant-a",
      },
      { name: "deny", sources: ["10.244.4.0/24"], destinations: ["198.51.100.0/24"], action: "Deny" },
      { name: "direct2", sources: ["10.244.5.0/24"], destinations: ["192.168.0.0/16"], action: "Direct" },
    );
  });
  const r = loadConfig(text);
  t.true(r.ok, errorsOf(r).join("\n"));
  if (!r.ok) return;
  const by = new Map(r.config.policies.map((p) => [p.name, p]));
  t.like(by.get("grp4"), { egressIP: "192.0.2.12", uplink: "tor", egressIPGroup: "tenant-a" });
  t.like(by.get("grp6"), { egressIP: "2001:db8:e::11", uplink: "tor" });
  t.is(by.get("deny")!.egressIP, undefined);
});

test("egress IP groups and actions: what is wrong is named where it is", (t) => {
  const group = (c: Mutable, g: Record<string, unknown>) =>
    ((c as Record<string, unknown>).egressIPGroups = [
      { name: "g", uplink: "tor", egressIPs: ["192.0.2.11"], ...g },
    ]);
  const policy = (c: Mutable, p: Record<string, unknown>) =>
    c.policies.push({
      name: "x",
      sources: ["10.244.9.0/24"],
      destinations: ["198.51.100.0/24"],
      ...p,
    } as never);
  expectError(
    t,
    withChange((c) => policy(c, { egressIPGroup: "nope" })),
    "policies[2].egressIPGroup",
    /unknown egress IP group "nope" \(no egressIPGroups are defined\)/,
  );
  expectError(
    t,
    withChange((c) => {
      group(c, {});
      policy(c, { sources: ["fd00:9::/64"], destinations: ["2001:db8:100::/48"], egressIPGroup: "g" });
    }),
    "policies[2].egressIPGroup",
    /group "g" has no IPv6 address, which this IPv6 policy needs/,
  );
  expectError(
    t,
    withChange((c) => group(c, { egressIPs: ["192.0.2.99"] })),
    "egressIPGroups[0].egressIPs[0]",
    /192\.0\.2\.99 is not owned by this gateway/,
  );
  expectError(
    t,
    withChange((c) => group(c, { egressIPs: ["192.0.2.11", "192.0.2.12"] })),
    "egressIPGroups[0].egressIPs[1]",
    /a second IPv4 address; a group has at most one per family/,
  );
  expectError(
    t,
    withChange((c) => {
      c.uplinks.push({ name: "v4only", interface: "eth2", nextHop: "10.1.2.0" });
      group(c, { egressIPs: ["2001:db8:e::11"], uplink: "v4only" });
    }),
    "egressIPGroups[0].egressIPs[0]",
    /uplink "v4only" has no IPv6 nextHop6/,
  );
  expectError(
    t,
    withChange((c) => group(c, { uplink: "wan" })),
    "egressIPGroups[0].uplink",
    /unknown uplink "wan"/,
  );
  expectError(
    t,
    withChange((c) => {
      group(c, {});
      policy(c, { egressIPGroup: "g", egressIP: "192.0.2.11" });
    }),
    "policies[2].egressIP",
    /not allowed with egressIPGroup/,
  );
  expectError(
    t,
    withChange((c) => policy(c, { action: "Deny", uplink: "tor" })),
    "policies[2].uplink",
    /not allowed with action Deny/,
  );
  expectError(
    t,
    withChange((c) => policy(c, { action: "Deny", gateway: false })),
    "policies[2].action",
    /Deny contradicts gateway: false/,
  );
  expectError(
    t,
    withChange((c) => policy(c, { action: "Drop" })),
    "policies[2].action",
    /must be equal to one of/,
  );
});

test("an egress IP group's namespaceSelector is checked where it is", (t) => {
  expectError(
    t,
    withChange(
      (c) =>
        ((c as Record<string, unknown>).egressIPGroups = [
          {
            name: "g",
            uplink: "tor",
            egressIPs: ["192.0.2.11"],
            namespaceSelector: { matchExpressions: [{ key: "team", operator: "In" }] },
          },
        ]),
    ),
    "egressIPGroups[0].namespaceSelector.matchExpressions[0].values",
    /In needs at least one value/,
  );
});
