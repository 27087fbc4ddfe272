// Pure tests of the nft renderer and differ (no root needed).
import test from "ava";
import type { NatPlan } from "../../core/state.js";
import fc from "fast-check";
import { canonicalAddress, canonicalInterval, canonicalIPv4Value } from "../../routing/ip.js";
import {
  HOST_RUN_MAX,
  diffNat,
  normalizeNat,
  policyCounterNames,
  policyKey,
  renderNftRuleset,
  sourcePatches,
  structureHash,
  type NatDiff,
} from "../../routing/nft-render.js";
import { fillBatches, parseLiveTable } from "../../routing/nft.js";
import { referenceNat } from "../helpers/reference-nat.js";

/** The reference plan, with one address spelled in capitals: rendering must canonicalise it. */
function plan(): NatPlan {
  const p = referenceNat();
  p.policies[2] = { ...p.policies[2]!, egressIP: "2001:DB8:E::11" };
  return p;
}

test("the ruleset replaces the table atomically and uses sets, not a rule per source", (t) => {
  const p = plan();
  for (let i = 0; i < 500; i++)
    p.sources.push({ family: 4, interval: `10.250.${i >> 8}.${i & 255}`, classId: 1 });
  const s = renderNftRuleset(p);
  const lines = s.split("\n");
  t.is(lines[0], "table inet egressd {}");
  t.is(lines[1], "delete table inet egressd");
  t.is(lines[2], "table inet egressd {");
  t.regex(s, /ip saddr @c1_hosts goto class_1/);
  t.regex(s, /ip saddr @c1_nets goto class_1/);
  t.regex(s, /ip6 saddr @c2_hosts goto class_2/);
  t.regex(s, /snat ip to 192\.0\.2\.11/);
  t.regex(s, /snat ip6 to 2001:db8:e::11/);
  t.regex(s, /203\.0\.113\.0\/25 : goto mark_a/);
  t.notRegex(s, /203\.0\.113\.128/); // the exception is no element at all
  t.regex(s, /ct mark set ct mark and 0xffff00ff or 0x00000100/);
  t.regex(s, /meta mark set meta mark and 0xffff00ff or 0x00000100/);
  t.regex(s, /type filter hook prerouting priority mangle/);
  t.regex(s, /type nat hook postrouting priority srcnat/);
  t.regex(s, /ct direction original ct mark and 0x0000ff00 vmap @restore_marks/);
  // the number of rules does not grow with sources
  const rules = (x: string) =>
    x.split("\n").filter((l) => /^\s+(ip|ip6|ct|meta|counter|snat|accept)\b/.test(l)).length;
  t.is(rules(s), rules(renderNftRuleset(plan())));
});

test("adding or removing a pod is an element patch", (t) => {
  const old = plan();
  const next = plan();
  next.sources.push({ family: 4, interval: "10.244.1.11", classId: 1 });
  const d = diffNat(old, next);
  t.is(d.kind, "patch");
  if (d.kind !== "patch") return;
  t.is(d.added, 1);
  t.is(d.removed, 0);
  t.is(d.script, "add element inet egressd c1_hosts { 10.244.1.11 }\n");
  const back = diffNat(next, old);
  t.is(back.kind, "patch");
  if (back.kind === "patch") t.is(back.script, "delete element inet egressd c1_hosts { 10.244.1.11 }\n");
});

test("moving a destination to another policy is delete + add in one script; the same plan is no change", (t) => {
  const old = plan();
  const next = plan();
  next.classes[0]!.destinations[0]!.policy = "a";
  const d = diffNat(old, next);
  t.is(d.kind, "patch");
  if (d.kind === "patch") {
    t.is(
      d.script,
      "delete element inet egressd c1_dst { 198.51.100.0/24 : goto mark_b }\nadd element inet egressd c1_dst { 198.51.100.0/24 : goto mark_a }\n",
    );
  }
  t.deepEqual(diffNat(plan(), plan()), { kind: "none" });
  // equivalent spellings of the same intervals are no change either
  const spelled = plan();
  spelled.classes[0]!.destinations[1]!.interval = "203.0.113.0/25";
  spelled.sources[1]!.interval = "10.244.2.0-10.244.2.255";
  t.deepEqual(diffNat(plan(), spelled), { kind: "none" });
});

/** The lines of a diff's script (the diff must be a structural patch). */
function structural(
  old: NatPlan,
  next: NatPlan,
): { lines: string[]; d: NatDiff & { kind: "patch-structure" } } {
  const d = diffNat(old, next);
  if (d.kind !== "patch-structure") throw new Error(`expected patch-structure, got ${d.kind}`);
  return { lines: d.script.trimEnd().split("\n"), d };
}
const T = "inet egressd";
const hashLines = (next: NatPlan) => [
  `delete set ${T} structure`,
  `add set ${T} structure { type mark; comment "egressd structure ${normalizeNat(next).structureHash}"; }`,
];
const withC = (p: NatPlan) => {
  p.policies.push({ name: "c", family: 4, egressIP: "192.0.2.13", mark: 0x500, uplinkInterface: "u1" });
  p.classes[0]!.destinations.push({ interval: "192.0.2.128/25", policy: "c" });
  return p;
};

test("adding a policy creates its counters, chains and map entries and touches nothing else", (t) => {
  const next = withC(plan());
  const { lines, d } = structural(plan(), next);
  t.deepEqual(d.structure, {
    policies: { added: ["c"], removed: [], changed: [] },
    classes: { added: [], removed: [] },
  });
  t.is(d.added, 1);
  t.is(d.removed, 0);
  t.deepEqual(lines, [
    `add counter ${T} pkts_c { comment "packets of policy c (192.0.2.13)" }`,
    `add counter ${T} conns_c { comment "connections SNATed by policy c to 192.0.2.13" }`,
    `add chain ${T} mark_c`,
    `add chain ${T} snat_c`,
    `add rule ${T} mark_c ct mark set ct mark and 0xffff00ff or 0x00000500`,
    `add rule ${T} mark_c meta mark set meta mark and 0xffff00ff or 0x00000500`,
    `add rule ${T} mark_c counter name "pkts_c"`,
    `add rule ${T} mark_c accept`,
    `add rule ${T} snat_c counter name "conns_c"`,
    `add rule ${T} snat_c snat ip to 192.0.2.13`,
    `add element ${T} c1_dst { 192.0.2.128/25 : goto mark_c }`,
    `add element ${T} restore_marks { 0x00000500 : goto mark_c }`,
    `add element ${T} snat_marks { 0x00000500 : goto snat_c }`,
    ...hashLines(next),
  ]);
  // nothing of the other policies and classes is flushed, deleted or re-listed
  t.false(
    lines.some((l) => /\b(flush|delete (chain|counter|map|element))\b|_a\b|_b\b|c1_hosts|c1_nets/.test(l)),
  );
});

test("removing a policy deletes exactly its objects, references before what they point at", (t) => {
  const old = withC(plan());
  const { lines, d } = structural(old, plan());
  t.deepEqual(d.structure.policies, { added: [], removed: ["c"], changed: [] });
  t.deepEqual(lines, [
    `delete element ${T} c1_dst { 192.0.2.128/25 : goto mark_c }`,
    `delete element ${T} restore_marks { 0x00000500 : goto mark_c }`,
    `delete element ${T} snat_marks { 0x00000500 : goto snat_c }`,
    `flush chain ${T} mark_c`,
    `delete chain ${T} mark_c`,
    `flush chain ${T} snat_c`,
    `delete chain ${T} snat_c`,
    `delete counter ${T} pkts_c`,
    `delete counter ${T} conns_c`,
    ...hashLines(plan()),
  ]);
});

test("a new egress IP rewrites that policy's chains and counters; a new mark its mark chain and map entries", (t) => {
  const ip = plan();
  ip.policies[0]!.egressIP = "192.0.2.99";
  const a = structural(plan(), ip);
  t.deepEqual(a.d.structure.policies, { added: [], removed: [], changed: ["a"] });
  t.deepEqual(a.lines, [
    `flush chain ${T} mark_a`,
    `flush chain ${T} snat_a`,
    `delete counter ${T} pkts_a`,
    `delete counter ${T} conns_a`,
    `add counter ${T} pkts_a { comment "packets of policy a (192.0.2.99)" }`,
    `add counter ${T} conns_a { comment "connections SNATed by policy a to 192.0.2.99" }`,
    `add rule ${T} mark_a ct mark set ct mark and 0xffff00ff or 0x00000100`,
    `add rule ${T} mark_a meta mark set meta mark and 0xffff00ff or 0x00000100`,
    `add rule ${T} mark_a counter name "pkts_a"`,
    `add rule ${T} mark_a accept`,
    `add rule ${T} snat_a counter name "conns_a"`,
    `add rule ${T} snat_a snat ip to 192.0.2.99`,
    ...hashLines(ip),
  ]);

  const mark = plan();
  mark.policies[0]!.mark = 0x400;
  const m = structural(plan(), mark);
  t.deepEqual(m.lines, [
    `delete element ${T} restore_marks { 0x00000100 : goto mark_a }`,
    `delete element ${T} snat_marks { 0x00000100 : goto snat_a }`,
    `flush chain ${T} mark_a`,
    `add rule ${T} mark_a ct mark set ct mark and 0xffff00ff or 0x00000400`,
    `add rule ${T} mark_a meta mark set meta mark and 0xffff00ff or 0x00000400`,
    `add rule ${T} mark_a counter name "pkts_a"`,
    `add rule ${T} mark_a accept`,
    `add element ${T} restore_marks { 0x00000400 : goto mark_a }`,
    `add element ${T} snat_marks { 0x00000400 : goto snat_a }`,
    ...hashLines(mark),
  ]);

  // two policies swapping marks: all deletions come before the additions
  const swap = plan();
  swap.policies[0]!.mark = 0x200;
  swap.policies[1]!.mark = 0x100;
  const s = structural(plan(), swap).lines;
  const lastDelete = Math.max(...s.map((l, i) => (l.startsWith("delete element") ? i : -1)));
  const firstAdd = s.findIndex((l) => l.startsWith("add element"));
  t.true(lastDelete < firstAdd);

  // the uplink is routing, not nft: no nft change
  const up = plan();
  up.policies[0]!.uplinkInterface = "u9";
  t.deepEqual(diffNat(plan(), up), { kind: "none" });
});

test("a class added or removed gets or loses its own sets and chain; classify is rewritten in class order", (t) => {
  const next = plan();
  next.classes.push({ id: 3, family: 4, destinations: [{ interval: "198.51.100.0/25", policy: "a" }] });
  next.sources.push({ family: 4, interval: "10.246.0.0/16", classId: 3 });
  const { lines, d } = structural(plan(), next);
  t.deepEqual(d.structure.classes, { added: [3], removed: [] });
  t.deepEqual(lines, [
    `flush chain ${T} classify`,
    `add set ${T} c3_hosts { type ipv4_addr; }`,
    `add set ${T} c3_nets { type ipv4_addr; flags interval; elements = { 10.246.0.0/16 }; }`,
    `add map ${T} c3_dst { type ipv4_addr : verdict; flags interval; elements = { 198.51.100.0/25 : goto mark_a }; }`,
    `add chain ${T} class_3`,
    `add rule ${T} class_3 ip daddr vmap @c3_dst`,
    `add rule ${T} classify ip saddr @c1_hosts goto class_1`,
    `add rule ${T} classify ip saddr @c1_nets goto class_1`,
    `add rule ${T} classify ip6 saddr @c2_hosts goto class_2`,
    `add rule ${T} classify ip6 saddr @c2_nets goto class_2`,
    `add rule ${T} classify ip saddr @c3_hosts goto class_3`,
    `add rule ${T} classify ip saddr @c3_nets goto class_3`,
    ...hashLines(next),
  ]);
  t.is(d.added, 2);

  const back = structural(next, plan());
  t.deepEqual(back.d.structure.classes, { added: [], removed: [3] });
  t.deepEqual(back.lines, [
    `flush chain ${T} classify`,
    `flush chain ${T} class_3`,
    `delete chain ${T} class_3`,
    `delete set ${T} c3_hosts`,
    `delete set ${T} c3_nets`,
    `delete map ${T} c3_dst`,
    `add rule ${T} classify ip saddr @c1_hosts goto class_1`,
    `add rule ${T} classify ip saddr @c1_nets goto class_1`,
    `add rule ${T} classify ip6 saddr @c2_hosts goto class_2`,
    `add rule ${T} classify ip6 saddr @c2_nets goto class_2`,
    ...hashLines(plan()),
  ]);
  t.is(back.d.removed, 2);
});

test("a policy and the class that used it removed together: the class's map goes before the policy's chain", (t) => {
  const old = plan();
  const next = plan();
  next.policies = next.policies.filter((p) => p.name !== "v6");
  next.classes = next.classes.filter((c) => c.id !== 2);
  next.sources = next.sources.filter((s) => s.classId !== 2);
  const { lines, d } = structural(old, next);
  t.deepEqual(d.structure, {
    policies: { added: [], removed: ["v6"], changed: [] },
    classes: { added: [], removed: [2] },
  });
  const at = (l: string) => lines.indexOf(l);
  t.true(at(`flush chain ${T} classify`) < at(`delete set ${T} c2_hosts`));
  t.true(at(`delete map ${T} c2_dst`) < at(`delete chain ${T} mark_v6`));
  t.true(
    at(`delete element ${T} restore_marks { 0x00000300 : goto mark_v6 }`) < at(`delete chain ${T} mark_v6`),
  );
  t.true(at(`flush chain ${T} mark_v6`) < at(`delete counter ${T} pkts_v6`));
  t.is(d.removed, 2); // fd00:244::10 and the v6 destination
});

test("a class that changes family is deleted and created again in the same script", (t) => {
  const next = plan();
  next.classes[1] = { id: 2, family: 4, destinations: [] };
  next.sources = next.sources.filter((s) => s.classId !== 2);
  next.policies = next.policies.filter((p) => p.name !== "v6");
  const { lines } = structural(plan(), next);
  t.true(
    lines.indexOf(`delete set ${T} c2_hosts`) < lines.indexOf(`add set ${T} c2_hosts { type ipv4_addr; }`),
  );
  t.true(lines.includes(`add rule ${T} classify ip saddr @c2_hosts goto class_2`));
});

test("only a new mark mask, or no current table, replaces the whole table", (t) => {
  const mask = plan();
  mask.markMask = 0xffff;
  const d = diffNat(plan(), mask);
  t.is(d.kind, "replace");
  if (d.kind === "replace") {
    t.is(d.reason, "mark mask changed");
    t.true(d.script.startsWith("table inet egressd {}\ndelete table inet egressd\n"));
  }
  t.is(diffNat(undefined, plan()).kind, "replace");
  // the full table carries the hash in the structure set, and no table comment (it could not be updated)
  const full = renderNftRuleset(plan());
  t.regex(
    full,
    new RegExp(
      `set structure \\{\\n    type mark\\n    comment "egressd structure ${normalizeNat(plan()).structureHash}"`,
    ),
  );
  t.is(full.match(/comment "egressd structure/g)?.length, 1);
});

test("the structure hash does not depend on the order of policies and classes", (t) => {
  const a = plan();
  const b = plan();
  b.policies.reverse();
  b.classes.reverse();
  t.is(normalizeNat(a).structureHash, normalizeNat(b).structureHash);
  const n = normalizeNat(a);
  t.is(structureHash(n.markMask, [...n.policies].reverse(), n.classes), n.structureHash);
  t.not(normalizeNat(withC(plan())).structureHash, n.structureHash);
});

test("a policy added to a 100k-source plan does not re-list the sources", (t) => {
  const big = () => {
    const p = plan();
    for (let i = 0; i < 100_000; i++)
      p.sources.push({
        family: 4,
        interval: `10.${100 + (i >> 16)}.${(i >> 8) & 255}.${i & 255}`,
        classId: 1,
      });
    return p;
  };
  const old = big();
  const next = withC(big());
  const d = diffNat(old, next);
  t.is(d.kind, "patch-structure");
  if (d.kind !== "patch-structure") return;
  t.is(d.added, 1);
  t.is(d.removed, 0);
  t.false(/10\.10[01]\./.test(d.script));
  t.true(d.script.length < 3000, `script is ${d.script.length} characters`);
  t.true(renderNftRuleset(next).length > 1_000_000); // what a replacement would have sent
  // and removing it again
  const back = diffNat(next, old);
  t.is(back.kind, "patch-structure");
  if (back.kind === "patch-structure") t.true(back.script.length < 3000);
});

test("inconsistent plans are rejected", (t) => {
  const bad: ((p: NatPlan) => void)[] = [
    (p) => (p.policies[1]!.mark = 0x100), // duplicate mark
    (p) => (p.policies[0]!.mark = 0x1), // outside the mask
    (p) => (p.policies[0]!.egressIP = "2001:db8::1"), // wrong family
    (p) => (p.sources[0]!.classId = 9), // unknown class
    (p) => (p.classes[0]!.destinations[0]!.policy = "nope"),
    (p) => (p.classes[0]!.destinations[0]!.policy = "v6"), // family mismatch
    (p) => (p.sources[1]!.interval = "10.244.2.1/24"), // host bits
  ];
  for (const change of bad) {
    const p = plan();
    change(p);
    t.throws(() => normalizeNat(p));
  }
});

test("policy names that are not nft identifiers get a stable hashed key", (t) => {
  t.is(policyKey("team_a"), "team_a");
  const k = policyKey("team-a/payments");
  t.regex(k, /^h[0-9a-f]{16}$/);
  t.is(policyKey("team-a/payments"), k);
  t.deepEqual(
    policyCounterNames({ name: "a", family: 4, egressIP: "192.0.2.11", mark: 1, uplinkInterface: "x" }),
    {
      policy: "a",
      egressIP: "192.0.2.11",
      packets: "pkts_a",
      connections: "conns_a",
    },
  );
});

test("intervals have one canonical spelling", (t) => {
  t.is(canonicalInterval("10.0.0.0-10.0.0.255"), "10.0.0.0/24");
  t.is(canonicalInterval("10.0.0.5/32"), "10.0.0.5");
  t.is(canonicalInterval("10.0.0.1-10.0.0.6"), "10.0.0.1-10.0.0.6");
  t.is(canonicalInterval("2001:DB8:0::/32"), "2001:db8::/32");
  t.is(canonicalInterval("2001:db8::1/128"), "2001:db8::1");
});

test("the live table's JSON parses into the same elements the renderer produces", (t) => {
  const json = JSON.stringify({
    nftables: [
      { metainfo: { version: "1.0.6" } },
      { table: { family: "inet", name: "egressd" } },
      {
        set: { family: "inet", name: "c1_hosts", table: "egressd", type: "ipv4_addr", elem: ["10.244.1.10"] },
      },
      {
        set: {
          family: "inet",
          name: "c1_nets",
          table: "egressd",
          type: "ipv4_addr",
          flags: ["interval"],
          elem: [{ prefix: { addr: "10.244.2.0", len: 24 } }],
        },
      },
      {
        map: {
          family: "inet",
          name: "c1_dst",
          table: "egressd",
          type: "ipv4_addr",
          map: "verdict",
          flags: ["interval"],
          elem: [
            [{ prefix: { addr: "198.51.100.0", len: 24 } }, { goto: { target: "mark_b" } }],
            [{ range: ["203.0.113.1", "203.0.113.6"] }, { goto: { target: "mark_a" } }],
          ],
        },
      },
      {
        map: {
          family: "inet",
          name: "restore_marks",
          table: "egressd",
          type: "mark",
          map: "verdict",
          elem: [[256, { goto: { target: "mark_a" } }]],
        },
      },
      {
        set: {
          family: "inet",
          name: "structure",
          table: "egressd",
          type: "mark",
          comment: "egressd structure x",
        },
      },
      { chain: { family: "inet", table: "egressd", name: "classify" } },
      { rule: { family: "inet", table: "egressd", chain: "classify", expr: [] } },
      {
        rule: {
          family: "inet",
          table: "egressd",
          chain: "snat_a",
          expr: [{ counter: "conns_a" }, { snat: { family: "ip", addr: "192.0.2.11" } }],
        },
      },
      { counter: { family: "inet", name: "pkts_a", table: "egressd", packets: 1, bytes: 2 } },
    ],
  });
  const live = parseLiveTable(json);
  t.is(live.comment, "egressd structure x");
  t.deepEqual([...live.sets.get("c1_hosts")!.elements.keys()], ["10.244.1.10"]);
  t.deepEqual([...live.sets.get("c1_nets")!.elements.keys()], ["10.244.2.0/24"]);
  t.deepEqual(
    [...live.sets.get("c1_dst")!.elements.entries()],
    [
      ["198.51.100.0/24", "goto mark_b"],
      ["203.0.113.1-203.0.113.6", "goto mark_a"],
    ],
  );
  t.is(live.chains.get("classify"), 1);
  t.true(live.counters.has("pkts_a"));
  t.deepEqual([...live.sets.get("restore_marks")!.elements.keys()], ["256"]);
  t.deepEqual(live.snat.get("snat_a"), [{ family: "ip", addr: "192.0.2.11" }]);
});

test("a Deny policy counts and drops in its mark chain, never marks; turning SNAT into Deny rewrites only its chains", (t) => {
  const deny = plan();
  deny.policies[0] = { name: "a", family: 4, deny: true, egressIP: "", mark: 0x100, uplinkInterface: "" };
  const text = renderNftRuleset(normalizeNat(deny));
  const chain = (name: string) => {
    const at = text.indexOf(`  chain ${name} {`);
    return text
      .slice(at, text.indexOf("  }", at))
      .split("\n")
      .slice(1)
      .map((l) => l.trim())
      .filter(Boolean);
  };
  t.deepEqual(chain("mark_a"), ['counter name "pkts_a"', "drop"]);
  t.deepEqual(chain("snat_a"), ['counter name "conns_a"', "drop"]);
  t.notRegex(chain("mark_a").join(" "), /mark set/);
  t.is(policyCounterNames(deny.policies[0]!).egressIP, "");

  const a = structural(plan(), deny);
  t.deepEqual(a.d.structure.policies, { added: [], removed: [], changed: ["a"] });
  t.deepEqual(a.lines, [
    `flush chain ${T} mark_a`,
    `flush chain ${T} snat_a`,
    `delete counter ${T} pkts_a`,
    `delete counter ${T} conns_a`,
    `add counter ${T} pkts_a { comment "packets of policy a dropped (deny)" }`,
    `add counter ${T} conns_a { comment "connections of policy a: none, it denies" }`,
    `add rule ${T} mark_a counter name "pkts_a"`,
    `add rule ${T} mark_a drop`,
    `add rule ${T} snat_a counter name "conns_a"`,
    `add rule ${T} snat_a drop`,
    ...hashLines(deny),
  ]);
  // and back
  t.is(structural(deny, plan()).d.structure.policies.changed.join(), "a");
});

test("runs of up to HOST_RUN_MAX addresses are hash-set elements, one per address; longer runs are one range", (t) => {
  const p = plan();
  p.sources.push(
    { family: 4, interval: "10.250.0.0-10.250.0.2", classId: 1 },
    { family: 4, interval: `10.250.1.0-10.250.1.${HOST_RUN_MAX - 1}`, classId: 1 },
    { family: 4, interval: `10.250.2.0-10.250.2.${HOST_RUN_MAX}`, classId: 1 },
    { family: 6, interval: "2001:db8:99::1-2001:db8:99::2", classId: 2 },
  );
  const n = normalizeNat(p);
  const hosts = n.sets.get("c1_hosts")!.elements;
  const nets = n.sets.get("c1_nets")!.elements;
  for (const a of ["10.250.0.0", "10.250.0.1", "10.250.0.2", "10.250.1.0", `10.250.1.${HOST_RUN_MAX - 1}`])
    t.true(hosts.has(a), a);
  t.false(nets.has("10.250.0.0-10.250.0.2"));
  t.true(nets.has(`10.250.2.0-10.250.2.${HOST_RUN_MAX}`));
  t.false(hosts.has("10.250.2.0"));
  t.true(n.sets.get("c2_hosts")!.elements.has("2001:db8:99::2"));
});

test("a run split by a pod that moves to another class is one address out of one hash set and into another", (t) => {
  const before = plan();
  before.classes.push({ id: 3, family: 4, destinations: [{ interval: "198.51.100.0/24", policy: "a" }] });
  const run = { family: 4 as const, interval: "10.250.0.0-10.250.0.3", classId: 1 };
  before.sources.push(run);
  const current = normalizeNat(before);
  // 10.250.0.1 moves to class 3: the run becomes two runs of class 1 around it
  const remove = [run];
  const add = [
    { family: 4 as const, interval: "10.250.0.0", classId: 1 },
    { family: 4 as const, interval: "10.250.0.1", classId: 3 },
    { family: 4 as const, interval: "10.250.0.2-10.250.0.3", classId: 1 },
  ];
  const patches = sourcePatches(current, remove, add)!;
  t.deepEqual(
    patches.filter((x) => x.add.length + x.remove.length > 0).map((x) => [x.set, x.remove, x.add]),
    [
      ["c1_hosts", [["10.250.0.1", ""]], []],
      ["c3_hosts", [], [["10.250.0.1", ""]]],
    ],
  );
  // a delta that does not fit what is there is refused
  t.is(sourcePatches(current, add, []), undefined);
  t.is(sourcePatches(current, [], remove), undefined);
});

test("unmatched: Deny: exceptions are an explicit accept, served sets hold the SNAT policies' destinations, drops are counted and logged", (t) => {
  const p = plan();
  p.policies[1] = { name: "b", family: 4, deny: true, egressIP: "", mark: 0x200, uplinkInterface: "" };
  p.unmatched = "Deny";
  p.logDrops = true;
  const n = normalizeNat(p);
  t.true(n.unmatched && n.logDrops);
  // b denies 198.51.100.0/24: not served; a's /25 is; its exception is no served destination.
  t.deepEqual([...n.sets.get("served_v4")!.elements.keys()], ["203.0.113.0/25"]);
  t.deepEqual([...n.sets.get("served_v6")!.elements.keys()], ["2001:db8:100::/48"]);
  t.is(n.sets.get("c1_dst")!.elements.get("203.0.113.128/25"), "accept");
  const text = renderNftRuleset(n);
  t.regex(text, /ct state new jump classify\n/);
  t.regex(
    text,
    /ct state new fib daddr type != local ip daddr @served_v4 counter name "unmatched_v4" log group 3781 prefix "egressd-drop unmatched" drop/,
  );
  t.regex(
    text,
    /chain mark_b \{\n {4}counter name "pkts_b"\n {4}log group 3781 prefix "egressd-drop b"\n {4}drop\n/,
  );
  // Without it, the table is what it was: the same structure hash, goto, no served sets.
  const off = normalizeNat(plan());
  t.false(off.unmatched || off.logDrops);
  t.is(off.sets.get("served_v4"), undefined);
  t.is(off.structureHash, structureHash(off.markMask, off.policies, off.classes));
  // Logging without anything that drops changes nothing.
  const quiet = plan();
  quiet.logDrops = true;
  t.is(normalizeNat(quiet).structureHash, off.structureHash);
});

test("fillBatches cuts sets' elements into batches of at most max, in order, splitting a set where needed", (t) => {
  const set = (name: string, n: number) => ({
    name,
    family: 4 as const,
    interval: false,
    map: false,
    elements: new Map(
      Array.from({ length: n }, (_, i) => [`10.0.${name.length}.${i}`, ""] as [string, string]),
    ),
  });
  const sets = [set("a", 5), set("bb", 0), set("ccc", 7)];
  const batches = fillBatches(sets, 4);
  t.deepEqual(
    batches.map((b) => b.map((p) => [p.set, p.add.length])),
    [
      [["a", 4]],
      [
        ["a", 1],
        ["ccc", 3],
      ],
      [["ccc", 4]],
    ],
  );
  const flat = batches.flat();
  t.deepEqual(
    flat.flatMap((p) => p.add.map(([k]) => k)),
    sets.flatMap((s) => [...s.elements.keys()]),
  );
  t.true(flat.every((p) => !p.map && !p.interval && p.remove.length === 0));
  t.deepEqual(fillBatches([], 4), []);
});

test("canonicalIPv4Value: the number of a canonical dotted quad, -1 for any other text", (t) => {
  t.is(canonicalIPv4Value("10.0.0.1"), 0x0a000001);
  t.is(canonicalIPv4Value("255.255.255.255"), 0xffffffff);
  t.is(canonicalIPv4Value("0.0.0.0"), 0);
  for (const bad of [
    "010.0.0.1",
    "10.0.0.256",
    "10.0.0",
    "10.0.0.1.2",
    "10..0.1",
    "10.0.0.1/32",
    "::1",
    "",
    " 10.0.0.1",
  ])
    t.is(canonicalIPv4Value(bad), -1, bad);
  // Any IPv4 address as canonicalAddress writes it is read as its own number.
  fc.assert(
    fc.property(fc.integer({ min: 0, max: 0xffffffff }), (n) => {
      const text = canonicalAddress([n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join("."));
      return canonicalIPv4Value(text) === n;
    }),
  );
});
