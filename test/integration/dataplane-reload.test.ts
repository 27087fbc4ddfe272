// Config reload on a real kernel: a policy added to or removed from the nft
// table is an incremental structural patch (one transaction), not a table
// replacement, so the other policies' counters keep counting and their
// traffic is untouched; the patched table equals a freshly rendered one. A
// reload that only moves sources is an element patch of those sources alone.
import test from "ava";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { stringify } from "yaml";
import type { GatewayConfig } from "../../core/config/gateway-config.js";
import { planStatic } from "../../core/plan/index.js";
import type { KernelState } from "../../core/state.js";
import { loadConfig } from "../../inputs/config/load.js";
import { sandbox, type Sandbox } from "../helpers/netns.js";
import {
  addPolicyC,
  buildTopology,
  fixture,
  referenceState,
  seenBy,
  startServer,
  stateFile,
} from "../helpers/dataplane-topology.js";

interface Applied {
  nat: {
    action: string;
    structure?: { policies: { added: string[]; removed: string[]; changed: string[] } };
  };
}
interface Counter {
  policy: string;
  egressIP: string;
  packets: string;
  connections: string;
}

/** State A: the reference topology's two IPv4 policies (a, b) and their class. */
function stateA(): KernelState {
  const st = referenceState();
  st.addresses = st.addresses.filter((a) => a.family === 4);
  st.routes = st.routes.filter((r) => r.family === 4);
  st.rules = st.rules.filter((r) => r.family === 4);
  st.nat.policies = st.nat.policies.filter((p) => p.family === 4);
  st.nat.classes = st.nat.classes.filter((c) => c.family === 4);
  st.nat.sources = st.nat.sources.filter((s) => s.family === 4);
  return st;
}

/** State B: A plus policy c, a new egress IP (192.0.2.13) for a new destination (198.18.0.0/24) over u2. */
function stateB(): KernelState {
  return addPolicyC(stateA(), "198.18.0.0/24");
}

/**
 * `nft -j list table inet egressd` without what legitimately differs between
 * a patched and a freshly created table: handles, counter values, the order
 * of objects and of set elements. Rules keep their position in their chain.
 */
async function canonicalTable(s: Sandbox): Promise<string[]> {
  const { stdout } = await s.exec("gw", ["/usr/sbin/nft", "-j", "list", "table", "inet", "egressd"]);
  const strip = (v: unknown): unknown => {
    if (Array.isArray(v)) return v.map(strip);
    if (v && typeof v === "object") {
      const out: Record<string, unknown> = {};
      for (const [k, x] of Object.entries(v as Record<string, unknown>)) {
        if (k === "handle" || k === "packets" || k === "bytes") continue;
        out[k] = k === "elem" && Array.isArray(x) ? x.map((e) => JSON.stringify(strip(e))).sort() : strip(x);
      }
      return out;
    }
    return v;
  };
  const position = new Map<string, number>();
  const items = (JSON.parse(stdout) as { nftables: Record<string, unknown>[] }).nftables
    .filter((i) => !i.metainfo)
    .map((i) => {
      const item = strip(i) as Record<string, Record<string, unknown>>;
      if (item.rule) {
        const chain = item.rule.chain as string;
        const n = position.get(chain) ?? 0;
        position.set(chain, n + 1);
        item.rule.position = n;
      }
      return JSON.stringify(item);
    });
  return items.sort();
}

async function counters(s: Sandbox, st: KernelState): Promise<Map<string, Counter>> {
  const list = (await fixture(s, "gw", ["counters", stateFile(st)])) as Counter[];
  return new Map(list.map((c) => [c.policy, c]));
}

test("adding and removing a policy patches the table in place: counters survive, traffic is NATed, result equals a fresh table", async (t) => {
  const s = sandbox(t, "dpr");
  await buildTopology(s, { ipv6: false });
  await s.sh(
    "srv",
    `ip addr add 198.18.0.10/32 dev lo
     ip route add 192.0.2.13/32 via 100.64.2.1 dev s2`,
  );
  await startServer(s);
  const A = stateA();
  const B = stateB();

  // state A, traffic through policy a
  const first = (await fixture(s, "gw", ["apply", stateFile(A)])) as Applied;
  t.is(first.nat.action, "replace");
  t.is(await seenBy(s, "203.0.113.10", "10.244.1.10"), "192.0.2.11");
  t.is(await seenBy(s, "203.0.113.10", "10.244.1.10"), "192.0.2.11");
  const before = (await counters(s, A)).get("a")!;
  t.is(before.connections, "2");
  t.true(Number(before.packets) >= 6);

  // B = A + policy c: a structural patch
  const toB = (await fixture(s, "gw", ["apply", stateFile(B)])) as Applied;
  t.is(toB.nat.action, "patch-structure");
  t.deepEqual(toB.nat.structure?.policies, { added: ["c"], removed: [], changed: [] });
  // a's counters did not reset
  const after = (await counters(s, B)).get("a")!;
  t.is(after.connections, before.connections);
  t.is(after.packets, before.packets);
  // traffic of all three policies is NATed to their egress IPs (b and c only by policy routing)
  t.is(await seenBy(s, "203.0.113.10", "10.244.1.10"), "192.0.2.11");
  t.is(await seenBy(s, "198.51.100.10", "10.244.1.10"), "192.0.2.12");
  t.is(await seenBy(s, "198.18.0.10", "10.244.1.10"), "192.0.2.13");
  t.is(await seenBy(s, "203.0.113.200", "10.244.1.10"), "10.244.1.10"); // the exception still is one
  const counted = await counters(s, B);
  t.is(counted.get("a")!.connections, "3");
  t.is(counted.get("b")!.connections, "1");
  t.is(counted.get("c")!.connections, "1");
  t.is(counted.get("c")!.egressIP, "192.0.2.13");
  // the same state again changes nothing
  t.is(((await fixture(s, "gw", ["apply", stateFile(B)])) as Applied).nat.action, "none");
  const patchedB = await canonicalTable(s);

  // back to A: c's objects go, a keeps counting
  const toA = (await fixture(s, "gw", ["apply", stateFile(A)])) as Applied;
  t.is(toA.nat.action, "patch-structure");
  t.deepEqual(toA.nat.structure?.policies, { added: [], removed: ["c"], changed: [] });
  t.is((await counters(s, A)).get("a")!.connections, "3");
  t.is(await seenBy(s, "203.0.113.10", "10.244.1.10"), "192.0.2.11");
  t.is(await seenBy(s, "198.51.100.10", "10.244.1.10"), "192.0.2.12");
  const patchedA = await canonicalTable(s);

  // the patched tables equal fresh ones (counter values aside)
  await fixture(s, "gw", ["teardown"]);
  t.is(((await fixture(s, "gw", ["apply", stateFile(A)])) as Applied).nat.action, "replace");
  t.deepEqual(patchedA, await canonicalTable(s));
  await fixture(s, "gw", ["teardown"]);
  t.is(((await fixture(s, "gw", ["apply", stateFile(B)])) as Applied).nat.action, "replace");
  t.deepEqual(patchedB, await canonicalTable(s));
});

test("a new egress IP or mark for a policy, and a new class, are structural patches that leave the rest alone", async (t) => {
  const s = sandbox(t, "dpr");
  await buildTopology(s, { ipv6: false });
  await s.sh("srv", "ip route add 192.0.2.13/32 via 100.64.1.1 dev s1");
  await startServer(s);
  const A = stateA();
  await fixture(s, "gw", ["apply", stateFile(A)]);
  t.is(await seenBy(s, "198.51.100.10", "10.244.1.10"), "192.0.2.12");

  // a: new egress IP and mark; b untouched; a new class for the second pod address
  const C = stateA();
  C.addresses.push({ family: 4, address: "192.0.2.13", prefixLength: 32, interface: "lo" });
  C.rules[0] = { ...C.rules[0]!, fwmark: 0x500 };
  C.nat.policies[0] = { ...C.nat.policies[0]!, egressIP: "192.0.2.13", mark: 0x500 };
  C.nat.classes.push({ id: 2, family: 4, destinations: [{ interval: "198.51.100.0/24", policy: "b" }] });
  C.nat.sources.push({ family: 4, interval: "10.244.1.11", classId: 2 });
  const applied = (await fixture(s, "gw", ["apply", stateFile(C)])) as Applied;
  t.is(applied.nat.action, "patch-structure");
  t.deepEqual(applied.nat.structure?.policies, { added: [], removed: [], changed: ["a"] });
  const c = await counters(s, C);
  t.is(c.get("b")!.connections, "1"); // kept
  t.is(c.get("a")!.connections, "0"); // new egress IP, new counters
  t.is(await seenBy(s, "203.0.113.10", "10.244.1.10"), "192.0.2.13");
  t.is(await seenBy(s, "198.51.100.10", "10.244.1.11"), "192.0.2.12");
  t.is(await seenBy(s, "203.0.113.10", "10.244.1.11"), "10.244.1.11"); // class 2 has no route for it
  const patched = await canonicalTable(s);
  await fixture(s, "gw", ["teardown"]);
  await fixture(s, "gw", ["apply", stateFile(C)]);
  t.deepEqual(patched, await canonicalTable(s));

  // a new mark mask is the one structural change that still replaces the table
  const M = stateA();
  M.nat.markMask = 0xffff00;
  M.rules = M.rules.map((r) => ({ ...r, fwmask: 0xffff00 }));
  const replaced = (await fixture(s, "gw", ["apply", stateFile(M)])) as Applied & {
    nat: { reason?: string };
  };
  t.is(replaced.nat.action, "replace");
  t.is(await seenBy(s, "203.0.113.10", "10.244.1.10"), "192.0.2.11");
});

/** A gateway config for the topology: policies a (192.0.2.11 over u1) and b (192.0.2.12 over u2), to 203.0.113.0/24. */
function reloadConfig(a: string[], b: string[]): string {
  const pads = (n: number, second: number) =>
    Array.from({ length: n }, (_, i) => `10.${second}.${i >> 8}.${i & 255}`);
  return stringify({
    gateway: { name: "gw-a1", site: "dc-a" },
    egressIPs: [
      { address: "192.0.2.11", interface: "lo" },
      { address: "192.0.2.12", interface: "lo" },
    ],
    uplinks: [
      { name: "u1", interface: "u1", nextHop: "100.64.1.2" },
      { name: "u2", interface: "u2", nextHop: "100.64.2.2" },
    ],
    policies: [
      {
        name: "a",
        sources: [...a, ...pads(500, 250)],
        destinations: ["203.0.113.0/24"],
        egressIP: "192.0.2.11",
        uplink: "u1",
      },
      {
        name: "b",
        sources: [...b, ...pads(500, 251)],
        destinations: ["203.0.113.0/24"],
        egressIP: "192.0.2.12",
        uplink: "u2",
      },
    ],
  });
}

test("a reload that moves one pod between policies patches only the elements around it; the table equals the full plan's", async (t) => {
  const s = sandbox(t, "dpr");
  await buildTopology(s, { ipv6: false });
  await startServer(s);
  const dir = mkdtempSync(join(tmpdir(), "egressd-reload-"));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const A = reloadConfig(["10.244.1.10", "10.244.1.11"], []);
  const B = reloadConfig(["10.244.1.10"], ["10.244.1.11"]);
  writeFileSync(join(dir, "a.yaml"), A);
  writeFileSync(join(dir, "b.yaml"), B);

  // One data plane, as the daemon's thread has it: A, then B, then A again.
  const files = ["a.yaml", "b.yaml", "a.yaml"].map((f) => join(dir, f));
  const changes = (await fixture(s, "gw", ["reload", ...files])) as {
    action: string;
    added: number;
    removed: number;
    fromDelta?: boolean;
    via?: string;
  }[];
  t.is(changes[0]!.action, "replace");
  // In A the two pods are one run of a's class (two elements of its hash set: a short run is written as
  // addresses); in B one of them is in b's class: one element out of a's set and one into b's, over netlink.
  t.like(changes[1], { action: "patch", added: 1, removed: 1, fromDelta: true, via: "netlink" });
  t.like(changes[2], { action: "patch", added: 1, removed: 1, fromDelta: true, via: "netlink" });

  // The kernel holds exactly what planning A from scratch gives: nothing to change.
  const full = (text: string) => {
    const r = loadConfig(text);
    if (!r.ok) throw new Error(JSON.stringify(r.errors));
    return planStatic(r.config as GatewayConfig).kernel;
  };
  t.is(((await fixture(s, "gw", ["apply", stateFile(full(A))])) as Applied).nat.action, "none");

  // B again, patched; traffic follows the pod to b's egress IP, and a's other pod stays on a's.
  t.like(((await fixture(s, "gw", ["reload", join(dir, "a.yaml"), join(dir, "b.yaml")])) as object[])[1], {
    action: "patch",
  });
  t.is(((await fixture(s, "gw", ["apply", stateFile(full(B))])) as Applied).nat.action, "none");
  t.is(await seenBy(s, "203.0.113.10", "10.244.1.11"), "192.0.2.12");
  t.is(await seenBy(s, "203.0.113.10", "10.244.1.10"), "192.0.2.11");
});

test("a first start with many addresses creates the table, then fills its address sets over netlink; the result equals the table nft writes", async (t) => {
  const s = sandbox(t, "dpr");
  await buildTopology(s, { ipv6: false });
  await startServer(s);
  // 6000 single addresses in class 1 beside the reference's (10.245.0.0 onwards: no run longer
  // than one, since every other address is left out), so they go into its hash set.
  const big = stateA();
  for (let i = 0; i < 6000; i++)
    big.nat.sources.push({
      family: 4,
      interval: `10.245.${Math.floor((2 * i) / 256)}.${(2 * i) % 256}`,
      classId: 1,
    });

  const first = (await fixture(s, "gw", ["apply", stateFile(big)])) as Applied & { nat: { via?: string } };
  t.like(first.nat, { action: "replace", via: "netlink" });
  const { stdout } = await s.exec("gw", [
    "/usr/sbin/nft",
    "-j",
    "list",
    "set",
    "inet",
    "egressd",
    "c1_hosts",
  ]);
  const set = (JSON.parse(stdout) as { nftables: { set?: { elem?: unknown[] } }[] }).nftables.find(
    (i) => i.set,
  );
  t.is(set?.set?.elem?.length, 6001);
  t.is(await seenBy(s, "203.0.113.10", "10.244.1.10"), "192.0.2.11");
  // The same state again, read back from the kernel as at a restart: nothing to change.
  t.is(((await fixture(s, "gw", ["apply", stateFile(big)])) as Applied).nat.action, "none");
  const filled = await canonicalTable(s);

  // The same table reached from another one is one nft transaction; it lists the same.
  await fixture(s, "gw", ["teardown"]);
  t.is(((await fixture(s, "gw", ["apply", stateFile(stateA())])) as Applied).nat.action, "replace");
  const patched = (await fixture(s, "gw", ["apply", stateFile(big)])) as Applied & { nat: { via?: string } };
  t.like(patched.nat, { action: "patch", via: "nft" });
  t.deepEqual(filled, await canonicalTable(s));
});
