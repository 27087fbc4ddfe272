// plan(): the NAT classifier (source classes, longest-prefix match on the
// destination, exceptions, no-gateway rules, source specificity, dual stack),
// the kernel objects around it, determinism and scale.
import test from "ava";
import { plan } from "../../core/plan/kernel.js";
import type { Config, PolicyConfig } from "../../core/config/schema.js";
import { loadConfig } from "../../inputs/config/load.js";
import { stringify } from "yaml";
import type { KernelState, NatPlan } from "../../core/state.js";

function config(policies: PolicyConfig[], extra: Partial<Config> = {}): Config {
  return {
    gateway: { name: "gw-a1", site: "dc-a" },
    egressIPs: [
      { address: "192.0.2.11", interface: "lo" },
      { address: "192.0.2.12", interface: "lo" },
      { address: "2001:db8:e::11", interface: "lo" },
    ],
    uplinks: [
      { name: "tor", interface: "eth1", nextHop: "10.1.1.0", nextHop6: "fd00:1:1::" },
      { name: "tor2", interface: "eth2", nextHop: "10.1.2.0" },
    ],
    policies,
    ...extra,
  };
}

/** Plans a config after checking that it validates (plan()'s precondition). */
function planValid(c: Config): KernelState {
  const r = loadConfig(stringify(c));
  if (!r.ok) throw new Error(r.errors.map((e) => `${e.path}: ${e.message}`).join("\n"));
  return plan(r.config);
}

/** The NAT decision for one packet, computed from a NatPlan the way the data plane does it. */
function decide(nat: NatPlan, src: string, dst: string): string | null {
  const cls = nat.classes.find((c) => c.id === nat.sources.find((s) => inInterval(src, s.interval))?.classId);
  if (cls === undefined) return null;
  return cls.destinations.find((d) => inInterval(dst, d.interval))?.policy ?? null;
}

function toNum(a: string): bigint {
  if (a.includes(":")) {
    const [head, tail] = a.split("::") as [string, string | undefined];
    const h = head === "" ? [] : head.split(":");
    const tl = tail === undefined || tail === "" ? [] : tail.split(":");
    const groups =
      tail === undefined ? h : [...h, ...Array<string>(8 - h.length - tl.length).fill("0"), ...tl];
    return groups.reduce((v, g) => (v << 16n) | BigInt(parseInt(g, 16)), 0n);
  }
  return a.split(".").reduce((v, o) => (v << 8n) | BigInt(Number(o)), 0n);
}

function inInterval(addr: string, interval: string): boolean {
  const v = toNum(addr);
  const bits = addr.includes(":") ? 128n : 32n;
  if (interval.includes(":") !== addr.includes(":")) return false;
  if (interval.includes("-")) {
    const [lo, hi] = interval.split("-") as [string, string];
    return toNum(lo) <= v && v <= toNum(hi);
  }
  const [base, len] = interval.split("/") as [string, string | undefined];
  const size = 1n << (bits - BigInt(len ?? bits));
  const lo = toNum(base);
  return lo <= v && v < lo + size;
}

const red: PolicyConfig = {
  name: "red",
  sources: ["10.244.0.0/16"],
  destinations: ["203.0.113.0/24"],
  egressIP: "192.0.2.11",
  uplink: "tor",
};
const blue: PolicyConfig = {
  name: "blue",
  sources: ["10.244.0.0/16"],
  destinations: ["198.51.100.0/24"],
  egressIP: "192.0.2.12",
  uplink: "tor2",
};

test("red/blue: one pod, different egress IPs for different destinations", (t) => {
  const s = planValid(config([red, blue]));
  t.is(decide(s.nat, "10.244.3.4", "203.0.113.9"), "red");
  t.is(decide(s.nat, "10.244.3.4", "198.51.100.9"), "blue");
  t.is(decide(s.nat, "10.244.3.4", "8.8.8.8"), null);
  t.is(decide(s.nat, "10.245.0.1", "203.0.113.9"), null);
  t.deepEqual(s.nat.classes, [
    {
      id: 1,
      family: 4,
      destinations: [
        { interval: "198.51.100.0/24", policy: "blue" },
        { interval: "203.0.113.0/24", policy: "red" },
      ],
    },
  ]);
  t.deepEqual(s.nat.sources, [{ family: 4, interval: "10.244.0.0/16", classId: 1 }]);
  t.deepEqual(s.nat.policies, [
    { name: "red", family: 4, egressIP: "192.0.2.11", mark: 0x00100000, uplinkInterface: "eth1" },
    { name: "blue", family: 4, egressIP: "192.0.2.12", mark: 0x00200000, uplinkInterface: "eth2" },
  ]);
  t.is(s.nat.markMask, 0x0ff00000);
});

test("kernel objects: addresses, one default route per used uplink and family, one rule per policy", (t) => {
  const s = planValid(config([red, blue]));
  t.deepEqual(s.addresses, [
    { family: 4, address: "192.0.2.11", prefixLength: 32, interface: "lo" },
    { family: 4, address: "192.0.2.12", prefixLength: 32, interface: "lo" },
    { family: 6, address: "2001:db8:e::11", prefixLength: 128, interface: "lo" },
  ]);
  t.deepEqual(s.routes, [
    { family: 4, table: 20100, destination: "0.0.0.0/0", gateway: "10.1.1.0", interface: "eth1" },
    { family: 4, table: 20101, destination: "0.0.0.0/0", gateway: "10.1.2.0", interface: "eth2" },
  ]);
  t.deepEqual(s.rules, [
    { family: 4, priority: 1000, fwmark: 0x00100000, fwmask: 0x0ff00000, table: 20100 },
    { family: 4, priority: 1000, fwmark: 0x00200000, fwmask: 0x0ff00000, table: 20101 },
  ]);
  const custom = planValid(
    config([red], {
      dataplane: { markMask: 0x00030000, tableBase: 500, rulePriority: 90 },
      uplinks: [{ name: "tor", interface: "eth1", nextHop: "10.1.1.0", table: 77 }],
    }),
  );
  t.deepEqual(custom.rules, [{ family: 4, priority: 90, fwmark: 0x00010000, fwmask: 0x00030000, table: 77 }]);
  t.is(custom.routes[0]!.table, 77);
});

test("marks are deposited into non-contiguous masks and stay inside them", (t) => {
  const policies = Array.from({ length: 5 }, (_, i) => ({
    ...red,
    name: `p${i}`,
    sources: [`10.${i}.0.0/16`],
  }));
  const s = planValid(config(policies, { dataplane: { markMask: 0x10300000 } }));
  t.deepEqual(
    s.nat.policies.map((p) => p.mark),
    [0x00100000, 0x00200000, 0x00300000, 0x10000000, 0x10100000],
  );
  for (const p of s.nat.policies) t.is(p.mark & ~0x10300000, 0);
});

test("exceptions are holes at their own prefix length", (t) => {
  const s = planValid(config([{ ...red, exceptions: ["203.0.113.128/25", "203.0.113.7"] }]));
  t.is(decide(s.nat, "10.244.0.1", "203.0.113.1"), "red");
  t.is(decide(s.nat, "10.244.0.1", "203.0.113.7"), null);
  t.is(decide(s.nat, "10.244.0.1", "203.0.113.200"), null);
  t.deepEqual(s.nat.classes[0]!.destinations, [
    { interval: "203.0.113.0-203.0.113.6", policy: "red" },
    { interval: "203.0.113.7", policy: null },
    { interval: "203.0.113.8-203.0.113.127", policy: "red" },
    { interval: "203.0.113.128/25", policy: null },
  ]);
  // A more specific destination of another policy beats the exception.
  const inner: PolicyConfig = { ...blue, destinations: ["203.0.113.192/26"] };
  const s2 = planValid(config([{ ...red, exceptions: ["203.0.113.128/25"] }, inner]));
  t.is(decide(s2.nat, "10.244.0.1", "203.0.113.200"), "blue");
  t.is(decide(s2.nat, "10.244.0.1", "203.0.113.130"), null);
});

test("no gateway: destinations left alone; only holes in gateway policies are listed", (t) => {
  const internet: PolicyConfig = { ...red, name: "internet", destinations: ["0.0.0.0/0"] };
  const direct: PolicyConfig = {
    name: "direct",
    sources: ["10.244.0.0/16"],
    destinations: ["10.0.0.0/8", "172.16.0.0/12"],
    gateway: false,
  };
  const s = planValid(config([internet, direct]));
  t.is(decide(s.nat, "10.244.1.1", "10.3.3.3"), null);
  t.is(decide(s.nat, "10.244.1.1", "1.1.1.1"), "internet");
  t.deepEqual(s.nat.classes[0]!.destinations, [
    { interval: "0.0.0.0-9.255.255.255", policy: "internet" },
    { interval: "10.0.0.0/8", policy: null },
    { interval: "11.0.0.0-172.15.255.255", policy: "internet" },
    { interval: "172.16.0.0/12", policy: null },
    { interval: "172.32.0.0-255.255.255.255", policy: "internet" },
  ]);
  t.deepEqual(
    s.nat.policies.map((p) => p.name),
    ["internet"],
  );
  // Sources that only have no-gateway policies are not classified at all.
  const only = planValid(config([direct]));
  t.deepEqual(only.nat, {
    markMask: 0x0ff00000,
    policies: [],
    classes: [],
    sources: [],
    unmatched: "Deny",
  });
  t.deepEqual(only.rules, []);
  t.deepEqual(only.routes, []);
  // A less specific no-gateway destination loses to a more specific gateway one.
  const s3 = planValid(config([{ ...direct, destinations: ["203.0.0.0/8"] }, red]));
  t.is(decide(s3.nat, "10.244.1.1", "203.0.113.1"), "red");
  t.deepEqual(s3.nat.classes[0]!.destinations, [{ interval: "203.0.113.0/24", policy: "red" }]);
});

test("longest destination prefix wins over source specificity; source specificity breaks ties", (t) => {
  const wide: PolicyConfig = { ...blue, name: "wide", destinations: ["203.0.112.0/23"] };
  const pod: PolicyConfig = {
    ...blue,
    name: "pod",
    sources: ["10.244.5.5"],
    destinations: ["203.0.113.0/24"],
  };
  const s = planValid(config([red, wide, pod]));
  // red (/24) beats wide (/23) for everyone.
  t.is(decide(s.nat, "10.244.1.1", "203.0.113.1"), "red");
  t.is(decide(s.nat, "10.244.1.1", "203.0.112.1"), "wide");
  // pod and red tie on /24; pod's /32 source is more specific.
  t.is(decide(s.nat, "10.244.5.5", "203.0.113.1"), "pod");
  t.is(decide(s.nat, "10.244.5.6", "203.0.113.1"), "red");
  t.deepEqual(s.nat.sources, [
    { family: 4, interval: "10.244.0.0-10.244.5.4", classId: 1 },
    { family: 4, interval: "10.244.5.5", classId: 2 },
    { family: 4, interval: "10.244.5.6-10.244.255.255", classId: 1 },
  ]);
});

test("pod IP lists: nested and overlapping sources of several policies yield disjoint intervals", (t) => {
  const a: PolicyConfig = { ...red, name: "a", sources: ["10.244.0.0/16", "10.244.1.0/24", "10.244.1.7"] };
  const b: PolicyConfig = { ...blue, name: "b", sources: ["10.244.1.0/25", "10.244.1.7", "10.244.9.9"] };
  const s = planValid(config([a, b]));
  for (const src of ["10.244.0.1", "10.244.1.7", "10.244.1.8", "10.244.1.200", "10.244.9.9"]) {
    t.is(decide(s.nat, src, "203.0.113.1"), "a", src);
  }
  t.is(decide(s.nat, "10.244.1.7", "198.51.100.1"), "b");
  t.is(decide(s.nat, "10.244.1.200", "198.51.100.1"), null);
  t.is(decide(s.nat, "10.244.9.9", "198.51.100.1"), "b");
  assertDisjointSorted(t, s.nat);
});

function assertDisjointSorted(t: import("ava").ExecutionContext, nat: NatPlan): void {
  const bounds = (i: string): [bigint, bigint] => {
    if (i.includes("-")) {
      const [lo, hi] = i.split("-") as [string, string];
      return [toNum(lo), toNum(hi)];
    }
    const [base, len] = i.split("/") as [string, string | undefined];
    const bits = base.includes(":") ? 128n : 32n;
    const lo = toNum(base);
    return [lo, lo + (1n << (bits - BigInt(len ?? bits))) - 1n];
  };
  for (const family of [4, 6]) {
    const lists = [
      nat.sources.filter((s) => s.family === family).map((s) => s.interval),
      ...nat.classes.filter((c) => c.family === family).map((c) => c.destinations.map((d) => d.interval)),
    ];
    for (const list of lists) {
      let prevHi = -1n;
      for (const i of list) {
        const [lo, hi] = bounds(i);
        t.true(lo > prevHi && lo <= hi, `${i} overlaps or is out of order`);
        prevHi = hi;
      }
    }
  }
}

test("dual stack: separate families, IPv6 canonical output", (t) => {
  const v6: PolicyConfig = {
    name: "red6",
    sources: ["FD00:10:244::/56", "fd00:10:244:0:0:0:0:5"],
    destinations: ["2001:db8:100::/48"],
    exceptions: ["2001:db8:100:ff::/64"],
    egressIP: "2001:DB8:E::11",
    uplink: "tor",
  };
  const s = planValid(config([red, v6]));
  t.deepEqual(
    s.nat.policies.map((p) => [p.name, p.family, p.egressIP]),
    [
      ["red", 4, "192.0.2.11"],
      ["red6", 6, "2001:db8:e::11"],
    ],
  );
  t.deepEqual(s.nat.sources, [
    { family: 4, interval: "10.244.0.0/16", classId: 1 },
    { family: 6, interval: "fd00:10:244::/56", classId: 2 },
  ]);
  t.deepEqual(s.nat.classes[1], {
    id: 2,
    family: 6,
    destinations: [
      { interval: "2001:db8:100::-2001:db8:100:fe:ffff:ffff:ffff:ffff", policy: "red6" },
      { interval: "2001:db8:100:ff::/64", policy: null },
      { interval: "2001:db8:100:100::-2001:db8:100:ffff:ffff:ffff:ffff:ffff", policy: "red6" },
    ],
  });
  t.is(decide(s.nat, "fd00:10:244::9", "2001:db8:100:1::1"), "red6");
  t.is(decide(s.nat, "fd00:10:244::9", "2001:db8:100:ff::1"), null);
  t.deepEqual(
    s.routes.map((r) => [r.family, r.destination, r.gateway]),
    [
      [4, "0.0.0.0/0", "10.1.1.0"],
      [6, "::/0", "fd00:1:1::"],
    ],
  );
  t.deepEqual(
    s.rules.map((r) => [r.family, r.fwmark]),
    [
      [4, 0x00100000],
      [6, 0x00200000],
    ],
  );
  assertDisjointSorted(t, s.nat);
});

test("deterministic and stable: same input, same output; list order does not change classes", (t) => {
  const pod: PolicyConfig = {
    ...blue,
    name: "pod",
    sources: ["10.244.5.5", "10.244.7.0/24"],
    destinations: ["203.0.113.0/24"],
  };
  const c1 = config([red, blue, pod]);
  const a = plan(c1);
  t.deepEqual(plan(structuredClone(c1)), a);
  t.is(JSON.stringify(plan(c1)), JSON.stringify(a));
  const shuffled = config([{ ...pod, sources: [...pod.sources].reverse() }, blue, red]);
  shuffled.egressIPs.reverse();
  const b = plan(shuffled);
  t.deepEqual(b.nat.classes, a.nat.classes);
  t.deepEqual(b.nat.sources, a.nat.sources);
  t.deepEqual(b.addresses, a.addresses);
  // Marks follow the order of the policies list.
  t.deepEqual(
    b.nat.policies.map((p) => p.name),
    ["pod", "blue", "red"],
  );
});

test("plan() throws on an ambiguous config (validation rejects it first)", (t) => {
  t.throws(() => plan(config([red, { ...red, name: "red2", egressIP: "192.0.2.12" }])), {
    message: /ambiguous/,
  });
});

test("100k pod IPs plan in well under a second", (t) => {
  const pods: string[][] = [[], [], [], []];
  for (let i = 0; i < 100_000; i++) {
    const v = 0x0af40000 + ((i * 2654435761) % 262144);
    pods[i % 4]!.push(`${v >>> 24}.${(v >>> 16) & 255}.${(v >>> 8) & 255}.${v & 255}`);
  }
  const c = config([
    ...pods.map((sources, i) => ({
      ...red,
      name: `p${i}`,
      sources,
      destinations: [`203.0.${110 + i}.0/24`],
    })),
    { ...blue, sources: ["10.244.0.0/14"], destinations: ["0.0.0.0/0"], exceptions: ["10.0.0.0/8"] },
  ]);
  const t0 = performance.now();
  const s = plan(c);
  const ms = performance.now() - t0;
  t.log(`plan() with 100k sources: ${ms.toFixed(0)} ms, ${s.nat.sources.length} source intervals`);
  // How fast is for bench/plan-scale.ts to say, which prints figures; a test asserts no time.
  t.is(s.nat.classes.length, 5);
  t.true(s.nat.sources.length >= 100_000);
  t.is(
    decide(
      { ...s.nat, sources: s.nat.sources.filter((x) => x.interval === pods[2]![7]) },
      pods[2]![7]!,
      "203.0.112.1",
    ),
    "p2",
  );
});

test("Deny: its own policy in the NAT plan (a mark, no egress IP, no rule, no uplink route); a more specific source wins over it", (t) => {
  const deny: PolicyConfig = {
    name: "deny",
    sources: ["10.244.9.0/24"],
    destinations: ["203.0.113.0/24"],
    action: "Deny",
  };
  const allowOne: PolicyConfig = { ...red, name: "one", sources: ["10.244.9.7"] };
  const s = planValid(config([deny, allowOne]));
  const p = s.nat.policies.find((x) => x.name === "deny")!;
  t.like(p, { deny: true, egressIP: "", uplinkInterface: "", family: 4 });
  t.not(p.mark, 0);
  t.deepEqual(
    s.rules.map((r) => r.fwmark),
    [s.nat.policies.find((x) => x.name === "one")!.mark],
    "a rule only for the SNAT policy",
  );
  t.is(decide(s.nat, "10.244.9.8", "203.0.113.5"), "deny");
  t.is(decide(s.nat, "10.244.9.7", "203.0.113.5"), "one");
  t.is(decide(s.nat, "10.244.9.8", "198.51.100.5"), null);
});
