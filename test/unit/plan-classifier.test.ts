// classifierFor: the NAT classifier of a config is patched from the previous
// config's when only sources changed, and made from scratch otherwise; and
// sourcePatches turns the patch's delta into set element changes.
import test from "ava";
import { classifierFor } from "../../core/plan/classifier.js";
import { flattenNat } from "../../core/plan/nat.js";
import { policyModels } from "../../core/plan/model.js";
import type { PolicyConfig } from "../../core/config/schema.js";
import { normalizeNat, sourcePatches } from "../../routing/nft-render.js";
import { plan } from "../../core/plan/kernel.js";
import { twoEgressIPs } from "../helpers/configs.js";

const policy = (name: string, sources: string[], destinations = ["203.0.113.0/24"]): PolicyConfig => ({
  name,
  sources,
  destinations,
  egressIP: name === "a" ? "192.0.2.11" : "192.0.2.12",
  uplink: "tor",
});

const config = twoEgressIPs;

const A = config([
  policy("a", ["10.244.1.10", "10.244.1.20", "10.244.2.0/24"]),
  policy("b", ["10.244.3.0/24"]),
]);

test("a pod added and one removed: patched, with the delta of those two addresses", (t) => {
  const first = classifierFor(A);
  t.is(first.delta, undefined);
  const B = config([
    policy("a", ["10.244.1.10", "10.244.1.30", "10.244.2.0/24"]),
    policy("b", ["10.244.3.0/24"]),
  ]);
  const next = classifierFor(B, first);
  t.is(next.refused, undefined);
  t.deepEqual(next.delta, {
    remove: [{ family: 4, interval: "10.244.1.20", classId: 1 }],
    add: [{ family: 4, interval: "10.244.1.30", classId: 1 }],
  });
  t.deepEqual(next.index.result.sources, flattenNat(policyModels(B)).sources);
  // The previous classifier is untouched.
  t.deepEqual(first.index.result.sources, flattenNat(policyModels(A)).sources);
});

test("the same prefix written another way, or listed twice, changes nothing", (t) => {
  const first = classifierFor(A);
  const B = config([
    policy("a", ["10.244.1.10/32", "10.244.1.20", "10.244.1.20", "10.244.2.0/24"]),
    policy("b", ["10.244.3.0/24"]),
  ]);
  const next = classifierFor(B, first);
  t.deepEqual(next.delta, { remove: [], add: [] });
  t.deepEqual(next.index.result.sources, first.index.result.sources);
});

test("a changed destination, a new policy or a new class is flattened from scratch", (t) => {
  const first = classifierFor(A);
  const dest = classifierFor(
    config([policy("a", A.policies[0]!.sources, ["198.51.100.0/24"]), policy("b", ["10.244.3.0/24"])]),
    first,
  );
  t.is(dest.refused, "more than sources changed");
  t.is(dest.delta, undefined);
  const added = classifierFor(
    config([...A.policies, { ...policy("c", ["10.244.9.0/24"]), egressIP: "192.0.2.12" }]),
    first,
  );
  t.is(added.delta, undefined);
  // A pod of b's in a as well is a's there (the more specific source): no new class, patched.
  const pod = config([
    policy("a", [...A.policies[0]!.sources, "10.244.3.7"]),
    policy("b", ["10.244.3.0/24"]),
  ]);
  t.deepEqual(
    classifierFor(pod, first).delta?.add.map((s) => `${s.interval} ${s.classId}`),
    ["10.244.3.0-10.244.3.6 2", "10.244.3.7 1", "10.244.3.8-10.244.3.255 2"],
  );
  // b's whole /24 in a too (same destination, same length): ambiguous, so flattened from scratch.
  const both = config([
    policy("a", [...A.policies[0]!.sources, "10.244.3.0/24"]),
    policy("b", ["10.244.3.0/24"]),
  ]);
  const c = classifierFor(both, first);
  t.truthy(c.refused);
  t.deepEqual(c.index.result.sources, flattenNat(policyModels(both)).sources);
});

test("sourcePatches: the delta as element changes of the class sets; undefined when it does not fit the table", (t) => {
  const first = classifierFor(A);
  const current = normalizeNat(plan(A, first.index.result).nat);
  const B = config([
    policy("a", ["10.244.1.10", "10.244.2.0/24"]),
    policy("b", ["10.244.3.0/24", "10.244.5.0/25"]),
  ]);
  const next = classifierFor(B, first);
  const patches = sourcePatches(current, next.delta!.remove, next.delta!.add);
  t.deepEqual(
    patches?.map((p) => [p.set, p.remove, p.add]),
    [
      ["c1_hosts", [["10.244.1.20", ""]], []],
      ["c2_nets", [], [["10.244.5.0/25", ""]]],
    ],
  );
  // Removing what the table lacks, or adding what it has, is no patch.
  t.is(sourcePatches(current, next.delta!.add, []), undefined);
  t.is(sourcePatches(current, [], next.delta!.remove), undefined);
});
