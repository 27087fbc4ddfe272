// patchNat: a change of sources patched into a kept flattening classifies
// every source address exactly as flattening the changed policies from
// scratch, and its delta is exactly the difference of the two source lists.
import test from "ava";
import fc from "fast-check";
import { indexNat, patchNat, type NatIndex, type PolicyModel, type SourceEdit } from "../../core/plan/nat.js";
import { mustParseSpan, type Span } from "../../core/ip.js";
import type { NatPlan } from "../../core/state.js";

// A small address space, so that prefixes nest, touch and overlap often.
const V4_SOURCES = [
  ...Array.from({ length: 16 }, (_, i) => `10.0.0.${i}`),
  "10.0.0.0/30",
  "10.0.0.4/30",
  "10.0.0.0/29",
  "10.0.0.8/29",
  "10.0.0.0/28",
  "10.0.0.16/28",
];
const V6_SOURCES = ["fd00::1", "fd00::2", "fd00::3", "fd00::/126", "fd00::4/126", "fd00::/125"];
const DESTINATIONS = ["203.0.113.0/24", "203.0.113.0/25", "198.51.100.0/24", "203.0.113.128/26"];
const DESTINATIONS6 = ["2001:db8::/32", "2001:db8:1::/48"];

const key = (s: Span) => `${s.lo}/${s.len}`;

interface Shape {
  family: 4 | 6;
  gateway: boolean;
  sources: string[];
  destinations: string[];
  exceptions: string[];
}

const shape: fc.Arbitrary<Shape> = fc.boolean().chain((v6) =>
  fc.record({
    family: fc.constant(v6 ? (6 as const) : (4 as const)),
    gateway: fc.boolean(),
    sources: fc.uniqueArray(fc.constantFrom(...(v6 ? V6_SOURCES : V4_SOURCES)), {
      minLength: 1,
      maxLength: 6,
    }),
    destinations: fc.uniqueArray(fc.constantFrom(...(v6 ? DESTINATIONS6 : DESTINATIONS)), {
      minLength: 1,
      maxLength: 2,
    }),
    exceptions: v6 ? fc.constant([]) : fc.uniqueArray(fc.constantFrom("203.0.113.0/26"), { maxLength: 1 }),
  }),
);

function models(shapes: Shape[], sources: string[][]): PolicyModel[] {
  return shapes.map((s, index) => ({
    index,
    name: `p${index}`,
    family: s.family,
    gateway: s.gateway,
    sources: sources[index]!.map(mustParseSpan),
    destinations: s.destinations.map(mustParseSpan),
    // Exceptions must lie inside one of the policy's destinations.
    exceptions: s.gateway && s.destinations.includes("203.0.113.0/24") ? s.exceptions.map(mustParseSpan) : [],
  }));
}

/** The source list with each class named by what it does, not by its id. */
function canonical(nat: { classes: NatPlan["classes"]; sources: NatPlan["sources"] }): string[] {
  const meaning = new Map(
    nat.classes.map((c) => [c.id, c.destinations.map((d) => `${d.interval}=${d.policy ?? "-"}`).join(" ")]),
  );
  return nat.sources.map((s) => `${s.interval} -> ${meaning.get(s.classId)}`);
}

/** Per policy, the prefixes in `after` and not in `before`. */
function edits(ms: PolicyModel[], from: string[][], to: string[][]): SourceEdit[] {
  const out: SourceEdit[] = [];
  ms.forEach((_, i) => {
    const have = new Set(from[i]!.map((s) => key(mustParseSpan(s))));
    const seen = new Set<string>();
    for (const s of to[i]!) {
      const span = mustParseSpan(s);
      if (have.has(key(span)) || seen.has(key(span))) continue;
      seen.add(key(span));
      out.push({ policy: i, span });
    }
  });
  return out;
}

const scenario = fc.array(shape, { minLength: 1, maxLength: 5 }).chain((shapes) =>
  fc.record({
    shapes: fc.constant(shapes),
    after: fc.tuple(
      ...shapes.map((s) =>
        // Empty too: a policy that loses every source stops being in effect (and comes back with one).
        fc.uniqueArray(fc.constantFrom(...(s.family === 6 ? V6_SOURCES : V4_SOURCES)), {
          minLength: 0,
          maxLength: 6,
        }),
      ),
    ),
  }),
);

/** Where an entry's reach (patched from the base's) is not the highest address of the entries up to it. */
function wrongReach(index: NatIndex): string | undefined {
  for (const family of [4, 6] as const) {
    const { src, reach } = index.families[family];
    let top: bigint | number | undefined;
    for (let i = 0; i < src.n; i++) {
      const hi = src.hi[i]!;
      top = top === undefined || hi > top ? hi : top;
      if (reach[i] !== top) return `IPv${family} reach[${i}] is ${reach[i]}, not ${top}`;
    }
  }
  return undefined;
}

test("property: a patched flattening equals flattening from scratch, and its delta is the difference", (t) => {
  let patched = 0;
  let refused = 0;
  fc.assert(
    fc.property(scenario, ({ shapes, after }) => {
      const before = shapes.map((s) => s.sources);
      const base: NatIndex = indexNat(models(shapes, before));
      fc.pre(base.result.conflicts.length === 0);
      const next = models(shapes, after);
      const full = indexNat(next).result;
      const p = patchNat(base, next, edits(next, after, before), edits(next, before, after));
      if (!p.ok) {
        // Refused only where flattening from scratch is ambiguous or has a class the base does not.
        refused++;
        const meanings = (n: { classes: NatPlan["classes"] }) =>
          new Set(
            n.classes.map((c) => c.destinations.map((d) => `${d.interval}=${d.policy ?? "-"}`).join(" ")),
          );
        const baseMeanings = meanings(base.result);
        const newClass = [...meanings(full)].some((m) => !baseMeanings.has(m));
        t.true(full.conflicts.length > 0 || newClass, p.reason);
        return;
      }
      patched++;
      t.is(wrongReach(p.index), undefined);
      const got = p.index.result;
      t.deepEqual(canonical(got), canonical(full));
      t.deepEqual([...got.effective].sort(), [...full.effective].sort());
      // The delta turns the base's list into the patched one.
      const asSet = (l: NatPlan["sources"]) =>
        new Set(l.map((s) => `${s.family} ${s.interval} ${s.classId}`));
      const applied = asSet(base.result.sources);
      for (const s of p.delta.remove) t.true(applied.delete(`${s.family} ${s.interval} ${s.classId}`));
      for (const s of p.delta.add) {
        const k = `${s.family} ${s.interval} ${s.classId}`;
        t.false(applied.has(k));
        applied.add(k);
      }
      t.deepEqual([...applied].sort(), [...asSet(got.sources)].sort());
      // A patch of the patch goes back to where it started.
      const back = patchNat(
        p.index,
        models(shapes, before),
        edits(next, before, after),
        edits(next, after, before),
      );
      if (back.ok) {
        t.deepEqual(canonical(back.index.result), canonical(base.result));
        t.is(wrongReach(back.index), undefined);
      }
    }),
    { numRuns: 600 },
  );
  t.log(`${patched} patched, ${refused} refused`);
  t.true(patched > 200);
});

test("a pod moved between policies at 20k sources is a two-entry delta", (t) => {
  // Every fourth address for one policy, every fourth plus two for the other: no two pods are adjacent.
  const pods = (n: number, first: number) =>
    Array.from({ length: n }, (_, i) => {
      const v = first + 4 * i;
      return `10.${244 + (v >> 16)}.${(v >> 8) & 255}.${v & 255}`;
    });
  const shapes: Shape[] = [0, 1].map((i) => ({
    family: 4,
    gateway: true,
    sources: [],
    destinations: [DESTINATIONS[i + 1]!],
    exceptions: [],
  }));
  const before = [pods(10000, 0), pods(10000, 2)];
  const moved = before[0]![500]!;
  const after = [before[0]!.filter((a) => a !== moved), [...before[1]!, moved]];
  const base = indexNat(models(shapes, before));
  const next = models(shapes, after);
  const p = patchNat(base, next, edits(next, after, before), edits(next, before, after));
  if (!p.ok) return t.fail(p.reason);
  const classOf = (policy: string) =>
    base.classes.find((c) => c.destinations.some((d) => d.policy === policy))!.id;
  t.deepEqual(p.delta.remove, [{ family: 4, interval: moved, classId: classOf("p0") }]);
  t.deepEqual(p.delta.add, [{ family: 4, interval: moved, classId: classOf("p1") }]);
  t.deepEqual(canonical(p.index.result), canonical(indexNat(next).result));
  // The base is untouched: it still has the pod where it was.
  t.true(base.result.sources.some((s) => s.interval === moved && s.classId === classOf("p0")));
});
