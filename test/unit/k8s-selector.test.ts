// Label selectors as Kubernetes resolves them (core/k8s/selector.ts): every
// operator on every kind of label set, the algebra that ties them together
// checked over a whole small universe, empty against absent, and what is
// refused.
import test from "ava";
import {
  compileSelector,
  selectorIssues,
  type LabelSelector,
  type LabelSelectorRequirement,
  type Labels,
  type SelectorOperator,
} from "../../core/k8s/selector.js";

const sel = (s: LabelSelector) => compileSelector(s);

test("each operator, on labels that have the key with a listed value, another value, or not at all", (t) => {
  const cases: [LabelSelectorRequirement, Labels, boolean][] = [
    [{ key: "app", operator: "In", values: ["web", "api"] }, { app: "web" }, true],
    [{ key: "app", operator: "In", values: ["web", "api"] }, { app: "db" }, false],
    [{ key: "app", operator: "In", values: ["web", "api"] }, {}, false],
    [{ key: "app", operator: "NotIn", values: ["web", "api"] }, { app: "web" }, false],
    [{ key: "app", operator: "NotIn", values: ["web", "api"] }, { app: "db" }, true],
    [{ key: "app", operator: "NotIn", values: ["web", "api"] }, {}, true],
    [{ key: "app", operator: "Exists" }, { app: "" }, true],
    [{ key: "app", operator: "Exists" }, { tier: "x" }, false],
    [{ key: "app", operator: "DoesNotExist" }, { app: "web" }, false],
    [{ key: "app", operator: "DoesNotExist" }, {}, true],
    [{ key: "app", operator: "In", values: [""] }, { app: "" }, true],
  ];
  for (const [r, labels, want] of cases)
    t.is(
      sel({ matchExpressions: [r] }).matches(labels),
      want,
      `${JSON.stringify(r)} on ${JSON.stringify(labels)}`,
    );
});

test("empty selects everything, absent selects nothing", (t) => {
  for (const empty of [
    {},
    { matchLabels: {} },
    { matchExpressions: [] },
    { matchLabels: {}, matchExpressions: [] },
  ]) {
    const s = sel(empty);
    t.true(s.everything);
    t.true(s.matches({}) && s.matches({ app: "web" }));
    t.is(s.text, "<all>");
  }
  for (const absent of [undefined, null]) {
    const s = compileSelector(absent);
    t.true(s.nothing);
    t.false(s.matches({}) || s.matches({ app: "web" }));
  }
});

test("matchLabels and matchExpressions are ANDed; a label named twice must satisfy both", (t) => {
  const s = sel({
    matchLabels: { app: "web" },
    matchExpressions: [{ key: "tier", operator: "NotIn", values: ["canary"] }],
  });
  t.true(s.matches({ app: "web" }));
  t.true(s.matches({ app: "web", tier: "prod" }));
  t.false(s.matches({ app: "web", tier: "canary" }));
  t.false(s.matches({ app: "api" }));
  const both = sel({
    matchLabels: { app: "web" },
    matchExpressions: [{ key: "app", operator: "In", values: ["api"] }],
  });
  t.false(both.matches({ app: "web" }) || both.matches({ app: "api" }));
});

test("labels from the prototype are not labels", (t) => {
  t.false(sel({ matchExpressions: [{ key: "constructor", operator: "Exists" }] }).matches({}));
  t.true(sel({ matchExpressions: [{ key: "toString", operator: "DoesNotExist" }] }).matches({}));
});

// Every label set over keys a, b and values x, y (each key absent, x or y),
// and every requirement over them.
const KEYS = ["a", "b"];
const VALUES = ["x", "y"];
const LABEL_SETS: Labels[] = [];
for (const a of [undefined, ...VALUES])
  for (const b of [undefined, ...VALUES]) LABEL_SETS.push({ ...(a ? { a } : {}), ...(b ? { b } : {}) });
const VALUE_SETS = [["x"], ["y"], ["x", "y"]];
const REQUIREMENTS: LabelSelectorRequirement[] = KEYS.flatMap((key) => [
  ...(["In", "NotIn"] as SelectorOperator[]).flatMap((operator) =>
    VALUE_SETS.map((values) => ({ key, operator, values })),
  ),
  { key, operator: "Exists" as const },
  { key, operator: "DoesNotExist" as const },
]);
const one = (r: LabelSelectorRequirement) => sel({ matchExpressions: [r] });

test("exhaustively: NotIn and DoesNotExist are the complements of In and Exists", (t) => {
  for (const labels of LABEL_SETS)
    for (const r of REQUIREMENTS) {
      const flip: SelectorOperator = {
        In: "NotIn",
        NotIn: "In",
        Exists: "DoesNotExist",
        DoesNotExist: "Exists",
      }[r.operator] as SelectorOperator;
      t.is(one({ ...r, operator: flip }).matches(labels), !one(r).matches(labels));
    }
});

test("exhaustively: In over a union is the OR of In over the parts, and matchLabels is In of one value", (t) => {
  for (const labels of LABEL_SETS)
    for (const key of KEYS) {
      const inBoth = one({ key, operator: "In", values: ["x", "y"] }).matches(labels);
      const inX = one({ key, operator: "In", values: ["x"] }).matches(labels);
      const inY = one({ key, operator: "In", values: ["y"] }).matches(labels);
      t.is(inBoth, inX || inY);
      for (const v of VALUES)
        t.is(
          sel({ matchLabels: { [key]: v } }).matches(labels),
          one({ key, operator: "In", values: [v] }).matches(labels),
        );
      // Exists is In over every value the key has in this universe.
      t.is(one({ key, operator: "Exists" }).matches(labels), inBoth);
    }
});

test("exhaustively: a selector of two requirements is their AND", (t) => {
  for (const labels of LABEL_SETS)
    for (const r of REQUIREMENTS)
      for (const q of REQUIREMENTS)
        t.is(
          sel({ matchExpressions: [r, q] }).matches(labels),
          one(r).matches(labels) && one(q).matches(labels),
        );
});

test("invalid selectors: each problem named with where it is; compiling one throws", (t) => {
  const bad: LabelSelector = {
    matchLabels: { "Example.com/app": "web", tier: "-bad" },
    matchExpressions: [
      { key: "app", operator: "In", values: [] },
      { key: "app", operator: "Exists", values: ["web"] },
      { key: "a".repeat(64), operator: "DoesNotExist" },
      { key: "app", operator: "Equals" as SelectorOperator, values: ["web"] },
      { key: "app", operator: "NotIn", values: ["ok", "x".repeat(64)] },
    ],
  };
  t.deepEqual(
    selectorIssues(bad).map((i) => i.path),
    [
      "matchLabels",
      "matchLabels.tier",
      "matchExpressions[0].values",
      "matchExpressions[1].values",
      "matchExpressions[2].key",
      "matchExpressions[3].operator",
      "matchExpressions[4].values[1]",
    ],
  );
  t.throws(() => compileSelector(bad), {
    message: /^invalid label selector: matchLabels: "Example.com\/app"/,
  });
  t.deepEqual(
    selectorIssues({ matchLabels: { "egressd.io/tenant": "blue", "app.kubernetes.io/name": "" } }),
    [],
  );
});

test("the selector in kubectl's syntax, sorted", (t) => {
  t.is(
    sel({
      matchLabels: { app: "web" },
      matchExpressions: [
        { key: "tier", operator: "In", values: ["b", "a"] },
        { key: "legacy", operator: "DoesNotExist" },
        { key: "zone", operator: "NotIn", values: ["z1"] },
        { key: "env", operator: "Exists" },
      ],
    }).text,
    "!legacy,app=web,env,tier in (a,b),zone notin (z1)",
  );
});
