// Pure tests of the nft renderer and differ (no root needed).
import test from "ava";
import type { NatPlan } from "../../daemon/state.js";
import { canonicalInterval } from "../../routing/ip.js";
import {
  diffNat,
  normalizeNat,
  policyCounterNames,
  policyKey,
  renderNftRuleset,
} from "../../routing/nft-render.js";
import { parseLiveTable } from "../../routing/nft.js";

function plan(): NatPlan {
  return {
    markMask: 0xff00,
    policies: [
      { name: "a", family: 4, egressIP: "192.0.2.11", mark: 0x100, uplinkInterface: "u1" },
      { name: "b", family: 4, egressIP: "192.0.2.12", mark: 0x200, uplinkInterface: "u2" },
      { name: "v6", family: 6, egressIP: "2001:DB8:E::11", mark: 0x300, uplinkInterface: "u1" },
    ],
    classes: [
      {
        id: 1,
        family: 4,
        destinations: [
          { interval: "198.51.100.0/24", policy: "b" },
          { interval: "203.0.113.0-203.0.113.127", policy: "a" },
          { interval: "203.0.113.128/25", policy: null },
        ],
      },
      { id: 2, family: 6, destinations: [{ interval: "2001:db8:100::/48", policy: "v6" }] },
    ],
    sources: [
      { family: 4, interval: "10.244.1.10", classId: 1 },
      { family: 4, interval: "10.244.2.0/24", classId: 1 },
      { family: 6, interval: "fd00:244::10", classId: 2 },
    ],
  };
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

test("structural changes replace the whole table", (t) => {
  const cases: ((p: NatPlan) => void)[] = [
    (p) => (p.policies[0]!.egressIP = "192.0.2.99"),
    (p) => (p.policies[0]!.mark = 0x400),
    (p) => (p.markMask = 0xffff),
    (p) => p.classes.push({ id: 3, family: 4, destinations: [] }),
    (p) =>
      p.policies.push({ name: "c", family: 4, egressIP: "192.0.2.13", mark: 0x500, uplinkInterface: "u1" }),
  ];
  for (const change of cases) {
    const next = plan();
    change(next);
    const d = diffNat(plan(), next);
    t.is(d.kind, "replace");
    if (d.kind === "replace")
      t.true(d.script.startsWith("table inet egressd {}\ndelete table inet egressd\n"));
  }
  // the uplink is routing, not nft: no nft change
  const up = plan();
  up.policies[0]!.uplinkInterface = "u9";
  t.deepEqual(diffNat(plan(), up), { kind: "none" });
  t.is(diffNat(undefined, plan()).kind, "replace");
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
          comment: "egressd structure x",
          elem: [[256, { goto: { target: "mark_a" } }]],
        },
      },
      { chain: { family: "inet", table: "egressd", name: "classify" } },
      { rule: { family: "inet", table: "egressd", chain: "classify", expr: [] } },
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
});
