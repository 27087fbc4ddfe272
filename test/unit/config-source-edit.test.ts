// sourceEdit: a config text edited only in source items is read without a
// full parse. Whatever it takes must be exactly what the full load gives
// (config and layout), and it must take the common edits: items replaced,
// added and removed.
import test from "ava";
import fc from "fast-check";
import { dump } from "js-yaml";
import { stringify } from "yaml";
import { parseEvents } from "js-yaml";
import type { Config } from "../../core/config/schema.js";
import { loadConfig } from "../../inputs/config/load.js";
import { twoEgressIPs } from "../helpers/configs.js";
import { layoutOf, sourceEdit, type LoadedText } from "../../inputs/config/source-edit.js";

const ADDRESSES = [
  "10.244.0.1",
  "10.244.0.2",
  "10.244.0.3",
  "10.244.1.0/24",
  "10.244.0.0/16",
  "10.250.3.4",
  "203.0.113.7", // inside the policies' destination: a warning, so never taken
  "10.244.0.1/24", // host bits set: an error
  "fd00::5", // the other family: an error
  "10", // a number to YAML
  "1.5", // a number to YAML
  "fd00::", // a map key to YAML
  "10.244.0.1/32",
];

function config(sources: string[][]): Config {
  return twoEgressIPs(
    sources.map((s, i) => ({
      name: `p${i}`,
      sources: s,
      destinations: [i % 2 === 0 ? "203.0.113.0/24" : "198.51.100.0/24"],
      egressIP: i % 2 === 0 ? "192.0.2.11" : "192.0.2.12",
      uplink: "tor",
    })),
  );
}

/**
 * A line edit: replace, insert after, or delete a line: mostly one of the
 * source items (`item`), else any line (`at` is taken modulo the count).
 */
type Op = { kind: "replace" | "insert" | "delete"; item: boolean; at: number; value: string; style: number };

const op: fc.Arbitrary<Op> = fc.record({
  kind: fc.constantFrom("replace", "insert", "delete"),
  item: fc.nat({ max: 4 }).map((n) => n > 0),
  at: fc.nat(),
  value: fc.constantFrom(...ADDRESSES),
  style: fc.nat({ max: 9 }),
});

/** The indexes of the lines that are source items (under a "sources:" key). */
function itemLines(lines: string[]): number[] {
  const out: number[] = [];
  let under = -1;
  lines.forEach((l, i) => {
    const indent = /^ */.exec(l)![0].length;
    if (/^ *sources:$/.test(l)) under = indent;
    else if (under >= 0 && indent > under && /^ *- /.test(l)) out.push(i);
    else under = -1;
  });
  return out;
}

/** An item line in the indentation of `like`, mostly plain, sometimes in a form the fast path must refuse. */
function itemLine(like: string, value: string, style: number): string {
  const indent = /^ */.exec(like)![0];
  switch (style) {
    case 0:
      return `${indent}- "${value}"`;
    case 1:
      return `${indent}- ${value} # a comment`;
    case 2:
      return `${indent}  - ${value}`;
    case 3:
      return `${indent}-   ${value}`;
    case 4:
      return `${indent}# - ${value}`;
    default:
      return `${indent}- ${value}`;
  }
}

function edit(text: string, ops: Op[]): string {
  const lines = text.replace(/\n$/, "").split("\n");
  for (const o of ops) {
    const items = itemLines(lines);
    const at = o.item && items.length > 0 ? items[o.at % items.length]! : o.at % lines.length;
    if (o.kind === "replace") lines[at] = itemLine(lines[at]!, o.value, o.style);
    else if (o.kind === "insert") lines.splice(at + 1, 0, itemLine(lines[at]!, o.value, o.style));
    else if (lines.length > 1) lines.splice(at, 1);
  }
  return lines.join("\n") + "\n";
}

function loaded(text: string): LoadedText | undefined {
  const r = loadConfig(text, { layout: true });
  return r.ok && r.layout ? { text, config: r.config, layout: r.layout } : undefined;
}

const sourceLists = fc.array(
  fc.uniqueArray(fc.constantFrom(...ADDRESSES.slice(0, 6)), { minLength: 1, maxLength: 5 }),
  {
    minLength: 1,
    maxLength: 4,
  },
);

test("property: an edit taken without a full parse gives the config and layout the full load gives", (t) => {
  let taken = 0;
  let tried = 0;
  fc.assert(
    fc.property(
      sourceLists,
      fc.array(op, { minLength: 1, maxLength: 2 }),
      fc.boolean(),
      (lists, ops, yamlPkg) => {
        const c = config(lists);
        const text = yamlPkg ? stringify(c) : dump(c);
        const prev = loaded(text);
        fc.pre(prev !== undefined);
        tried++;
        const next = edit(text, ops);
        const got = sourceEdit(prev!, next);
        if (got === undefined) return;
        taken++;
        const full = loadConfig(next);
        // What the fast path leaves to the caller: ambiguity and policies that never apply (the NAT classifier's).
        if (!full.ok || full.warnings.length > 0) {
          const issues = [...(full.ok ? [] : full.errors), ...full.warnings];
          t.true(
            issues.every((i) => /ambiguous|never applies/.test(i.message)),
            JSON.stringify(issues),
          );
          return;
        }
        t.deepEqual(got.config, full.config);
        t.deepEqual(got.layout, layoutOf(next, parseEvents(next, {})));
        // And the edit of the edit works from the layout it returned.
        const again = sourceEdit(got, text);
        if (again) t.deepEqual(again.config, prev!.config);
      },
    ),
    { numRuns: 1500 },
  );
  t.log(`${taken} of ${tried} edits taken without a full parse`);
  // Half the edits use a form or a value it must refuse, and a third touch other lines.
  t.true(taken > tried / 8, `${taken} of ${tried}`);
});

test("one pod changed, added and removed in a 20k-source file", (t) => {
  const pods = Array.from({ length: 20000 }, (_, i) => `10.${244 + (i >> 16)}.${(i >> 8) & 255}.${i & 255}`);
  const c = config([pods.slice(0, 10000), pods.slice(10000)]);
  const text = dump(c);
  const prev = loaded(text)!;
  t.truthy(prev);
  const changed = sourceEdit(prev, text.replace("- 10.244.1.44\n", "- 10.250.0.1\n"));
  t.is(changed?.policy, 0);
  t.is(changed?.config.policies[0]!.sources[300], "10.250.0.1");
  // After 10.244.60.0 (policy 1's item 5360), a new pod.
  const added = sourceEdit(
    prev,
    text.replace("      - 10.244.60.0\n", "      - 10.244.60.0\n      - 10.250.0.2\n"),
  );
  t.is(added?.policy, 1);
  t.deepEqual(added?.config.policies[1]!.sources.slice(5359, 5363), [
    "10.244.59.255",
    "10.244.60.0",
    "10.250.0.2",
    "10.244.60.1",
  ]);
  const removed = sourceEdit(prev, text.replace("      - 10.244.1.44\n", ""));
  t.is(removed?.config.policies[0]!.sources.length, 9999);
  // Another key's line is a full load.
  t.is(sourceEdit(prev, text.replace("198.51.100.0/24", "198.51.101.0/24")), undefined);
});
