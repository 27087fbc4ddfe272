// Interval-set elements written over netlink (routing/nfnetlink.ts) against
// nft's own writing, on the kernel: the same random sequence of ranges
// removed and added goes to one set through NfElementWriter and to its twin
// through `nft -f`, and after every step both sets, as `nft -j list` shows
// them, hold exactly the ranges the sequence says. The sequence is made to
// hit what the encoding must get right: ranges that start at the family's
// first address or end at its last (no end element), single addresses,
// prefixes, ranges that touch, and a range replaced by a longer or shorter
// one with the same start in one transaction.
import test from "ava";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { formatInterval } from "../../core/ip.js";
import type { Family } from "../../core/state.js";
import { sandbox } from "../helpers/netns.js";
import { fixture } from "../helpers/dataplane-topology.js";

interface Step {
  family: Family;
  remove: string[];
  add: string[];
}

/** mulberry32: a small seeded generator, so that a failing sequence can be made again from its seed. */
function random(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 2 ** 32;
  };
}

/**
 * STEPS steps of one family over three small windows of its address space
 * (its first 48 addresses, 48 in the middle, its last 48), so that ranges
 * often touch and often reach either end.
 */
function steps(family: Family, seed: number, count: number): { steps: Step[]; expected: string[][] } {
  const rnd = random(seed);
  const bits = family === 4 ? 32n : 128n;
  const top = (1n << bits) - 1n;
  const windows = [0n, 1n << (bits - 1n), top - 47n];
  const held: [bigint, bigint][] = [];
  const free = (lo: bigint, hi: bigint) => held.every(([a, b]) => hi < a || lo > b);
  const text = ([lo, hi]: [bigint, bigint]) => formatInterval(family, lo, hi);
  const out: Step[] = [];
  const expected: string[][] = [];
  for (let s = 0; s < count; s++) {
    const step: Step = { family, remove: [], add: [] };
    // grow or shrink a held range by one at its end, in the same transaction (same start element)
    if (held.length > 0 && rnd() < 0.4) {
      const i = Math.floor(rnd() * held.length);
      const [lo, hi] = held[i]!;
      held.splice(i, 1);
      step.remove.push(text([lo, hi]));
      const next: [bigint, bigint] | undefined =
        hi < top && free(hi + 1n, hi + 1n) ? [lo, hi + 1n] : hi > lo ? [lo, hi - 1n] : undefined;
      if (next) {
        held.push(next);
        step.add.push(text(next));
      }
    }
    // (a patch removes what was there before it: not what this step added)
    const old = held.filter((x) => !step.add.includes(text(x)));
    for (let r = Math.floor(rnd() * 3); r > 0 && old.length > 0; r--) {
      const [x] = old.splice(Math.floor(rnd() * old.length), 1);
      held.splice(held.indexOf(x!), 1);
      step.remove.push(text(x!));
    }
    for (let a = Math.floor(rnd() * 4); a > 0; a--) {
      const w = windows[Math.floor(rnd() * windows.length)]!;
      const lo = w + BigInt(Math.floor(rnd() * 48));
      // mostly short ranges and single addresses; now and then to the window's end
      const len = rnd() < 0.2 ? 47n - (lo - w) : BigInt(Math.floor(rnd() * 6));
      const hi = lo + len > w + 47n ? w + 47n : lo + len;
      if (!free(lo, hi) || step.remove.includes(text([lo, hi]))) continue;
      held.push([lo, hi]);
      step.add.push(text([lo, hi]));
    }
    out.push(step);
    expected.push(held.map(text).sort());
  }
  return { steps: out, expected };
}

test("interval sets: ranges written over netlink are the ranges nft writes, step by step, for both families", async (t) => {
  const s = sandbox(t, "nli");
  await s.addNode("nl");
  const dir = mkdtempSync(join(tmpdir(), "egressd-nli-"));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const seed = Number(process.env.EGRESSD_TEST_SEED ?? Date.now() % 1_000_000);
  t.log(`seed ${seed} (EGRESSD_TEST_SEED repeats it)`);
  const v4 = steps(4, seed, 40);
  const v6 = steps(6, seed + 1, 40);
  const all = [...v4.steps, ...v6.steps];
  const expected = [...v4.expected, ...v6.expected];
  const file = join(dir, "steps.json");
  writeFileSync(file, JSON.stringify(all));
  const lists = (await fixture(s, "nl", ["interval-steps", file])) as { nl: string[]; nft: string[] }[];
  t.is(lists.length, all.length);
  for (let i = 0; i < all.length; i++) {
    t.deepEqual(lists[i]!.nl, expected[i], `step ${i} over netlink: ${JSON.stringify(all[i])}`);
    t.deepEqual(lists[i]!.nft, expected[i], `step ${i} through nft: ${JSON.stringify(all[i])}`);
  }
  // the sequences did remove, grow and shrink in one transaction
  t.true(all.filter((x) => x.remove.length > 0 && x.add.length > 0).length >= 10);

  // The whole of each address space, then both of its ends (a fresh table).
  const edges: Step[] = [
    { family: 4, remove: [], add: ["0.0.0.0/0"] },
    { family: 4, remove: ["0.0.0.0/0"], add: ["0.0.0.0", "128.0.0.0/2", "255.255.255.255"] },
    { family: 4, remove: ["128.0.0.0/2"], add: ["128.0.0.0-255.255.255.254"] },
    { family: 6, remove: [], add: ["::/0"] },
    { family: 6, remove: ["::/0"], add: ["::", "ffff::/16"] },
  ];
  writeFileSync(file, JSON.stringify(edges));
  const edgeLists = (await fixture(s, "nl", ["interval-steps", file])) as { nl: string[]; nft: string[] }[];
  const edgeExpected = [
    ["0.0.0.0/0"],
    ["0.0.0.0", "128.0.0.0/2", "255.255.255.255"],
    ["0.0.0.0", "128.0.0.0-255.255.255.254", "255.255.255.255"],
    ["::/0"],
    ["::", "ffff::/16"],
  ];
  for (let i = 0; i < edges.length; i++) {
    t.deepEqual(edgeLists[i]!.nl, edgeExpected[i], `edge step ${i} over netlink`);
    t.deepEqual(edgeLists[i]!.nft, edgeExpected[i], `edge step ${i} through nft`);
  }
});
