// Kubernetes label selectors (metav1.LabelSelector), resolved as the API
// server and kubectl resolve them. Pure.
//
// - matchLabels and matchExpressions are ANDed; each entry of matchLabels
//   is `key In (value)`.
// - In: the key is present with one of the values. NotIn: the key is absent,
//   or present with none of the values. Exists / DoesNotExist: present /
//   absent, whatever the value.
// - An empty selector ({}) selects everything; an absent one (undefined or
//   null) selects nothing. Callers that give absence another meaning (a
//   policy's own namespace, say) decide that before calling.
// - In and NotIn need at least one value; Exists and DoesNotExist take none.
//   Keys are qualified names (an optional DNS-subdomain prefix and "/", then
//   a name of at most 63 characters); values are at most 63 characters of
//   letters, digits, "-", "_" and ".", starting and ending with a letter or
//   digit, or empty.

export type SelectorOperator = "In" | "NotIn" | "Exists" | "DoesNotExist";

export interface LabelSelectorRequirement {
  key: string;
  operator: SelectorOperator;
  values?: string[];
}

export interface LabelSelector {
  matchLabels?: Record<string, string>;
  matchExpressions?: LabelSelectorRequirement[];
}

export type Labels = Readonly<Record<string, string>>;

/** A selector checked and compiled: `matches` is cheap to call for every pod. */
export interface CompiledSelector {
  /** Selects every object (the empty selector). */
  readonly everything: boolean;
  /** Selects no object (an absent selector). */
  readonly nothing: boolean;
  matches(labels: Labels): boolean;
  /** The selector in kubectl's syntax ("app=web,tier in (a,b),!legacy"), for logs and status. */
  readonly text: string;
}

export interface SelectorIssue {
  /** Where in the selector, e.g. "matchExpressions[1].values". */
  path: string;
  message: string;
}

const NAME = /^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$/;
const DNS_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
const VALUE = /^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$/;
const OPERATORS: readonly SelectorOperator[] = ["In", "NotIn", "Exists", "DoesNotExist"];

/** Why `key` is not a valid label key, or undefined when it is. */
export function labelKeyProblem(key: string): string | undefined {
  const slash = key.indexOf("/");
  const prefix = slash >= 0 ? key.slice(0, slash) : undefined;
  const name = slash >= 0 ? key.slice(slash + 1) : key;
  if (prefix !== undefined && (prefix.length === 0 || prefix.length > 253 || !DNS_SUBDOMAIN.test(prefix)))
    return `${JSON.stringify(key)}: the prefix before "/" must be a DNS subdomain of at most 253 characters`;
  if (!NAME.test(name))
    return `${JSON.stringify(key)}: the name must be 1-63 letters, digits, "-", "_" or ".", starting and ending with a letter or digit`;
  return undefined;
}

/** Why `value` is not a valid label value, or undefined when it is. */
export function labelValueProblem(value: string): string | undefined {
  return VALUE.test(value)
    ? undefined
    : `${JSON.stringify(value)}: a label value is at most 63 letters, digits, "-", "_" or ".", starting and ending with a letter or digit, or empty`;
}

/** Every problem of a selector, each with where it is. */
export function selectorIssues(sel: LabelSelector): SelectorIssue[] {
  const issues: SelectorIssue[] = [];
  for (const [key, value] of Object.entries(sel.matchLabels ?? {})) {
    const k = labelKeyProblem(key);
    if (k) issues.push({ path: `matchLabels`, message: k });
    const v = labelValueProblem(value);
    if (v) issues.push({ path: `matchLabels.${key}`, message: v });
  }
  (sel.matchExpressions ?? []).forEach((r, i) => {
    const at = `matchExpressions[${i}]`;
    const k = labelKeyProblem(r.key);
    if (k) issues.push({ path: `${at}.key`, message: k });
    if (!OPERATORS.includes(r.operator)) {
      issues.push({
        path: `${at}.operator`,
        message: `${JSON.stringify(r.operator)} is not one of ${OPERATORS.join(", ")}`,
      });
      return;
    }
    const values = r.values ?? [];
    if ((r.operator === "In" || r.operator === "NotIn") && values.length === 0)
      issues.push({ path: `${at}.values`, message: `${r.operator} needs at least one value` });
    if ((r.operator === "Exists" || r.operator === "DoesNotExist") && values.length > 0)
      issues.push({ path: `${at}.values`, message: `${r.operator} takes no values` });
    values.forEach((v, j) => {
      const p = labelValueProblem(v);
      if (p) issues.push({ path: `${at}.values[${j}]`, message: p });
    });
  });
  return issues;
}

type Test = (labels: Labels) => boolean;

function requirementTest(r: LabelSelectorRequirement): Test {
  const has = (labels: Labels) => Object.prototype.hasOwnProperty.call(labels, r.key);
  const values = new Set(r.values ?? []);
  switch (r.operator) {
    case "In":
      return (labels) => has(labels) && values.has(labels[r.key]!);
    case "NotIn":
      return (labels) => !has(labels) || !values.has(labels[r.key]!);
    case "Exists":
      return has;
    case "DoesNotExist":
      return (labels) => !has(labels);
  }
}

function requirementText(r: LabelSelectorRequirement): string {
  const list = () => `(${[...new Set(r.values ?? [])].sort().join(",")})`;
  switch (r.operator) {
    case "In":
      return `${r.key} in ${list()}`;
    case "NotIn":
      return `${r.key} notin ${list()}`;
    case "Exists":
      return r.key;
    case "DoesNotExist":
      return `!${r.key}`;
  }
}

const NOTHING: CompiledSelector = { everything: false, nothing: true, matches: () => false, text: "<none>" };

/**
 * Compiles a selector; throws an Error listing its issues when it is invalid
 * (selectorIssues() gives them one by one). undefined and null select nothing.
 */
export function compileSelector(sel: LabelSelector | null | undefined): CompiledSelector {
  if (sel === undefined || sel === null) return NOTHING;
  const issues = selectorIssues(sel);
  if (issues.length > 0)
    throw new Error(`invalid label selector: ${issues.map((i) => `${i.path}: ${i.message}`).join("; ")}`);
  const requirements: LabelSelectorRequirement[] = [
    ...Object.entries(sel.matchLabels ?? {}).map(
      ([key, value]): LabelSelectorRequirement => ({ key, operator: "In", values: [value] }),
    ),
    ...(sel.matchExpressions ?? []),
  ];
  const tests = requirements.map(requirementTest);
  const text = requirements
    .map((r) =>
      r.operator === "In" && r.values?.length === 1 ? `${r.key}=${r.values[0]}` : requirementText(r),
    )
    .sort()
    .join(",");
  return {
    everything: tests.length === 0,
    nothing: false,
    matches: (labels) => tests.every((t) => t(labels)),
    text: text || "<all>",
  };
}
