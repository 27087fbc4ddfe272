// A policy object from the Kubernetes API, checked beyond its schema and
// compiled for selection. Pure.
//
// The API server already applied the CRD's schema and CEL rules, but egressd
// does not trust what crosses the API: the structure is checked by the input
// (inputs/k8s, Ajv with the same TypeBox schemas), and everything the schema
// cannot say is checked here, each problem named with its field: CIDRs and
// their families, exceptions inside destinations, selectors, the action's
// rules. A policy that fails is refused on its own; no other policy changes.
import type { PolicyAction } from "../config/schema.js";
import { exceptionProblem, unreachableDestination } from "../config/destinations.js";
import { formatPrefix, parsePrefix, type Prefix } from "../ip.js";
import type { Family } from "../state.js";
import type { ClusterEgressPolicySpec, EgressPolicySpec } from "./api-schema.js";
import { compileSelector, selectorIssues, type CompiledSelector, type LabelSelector } from "./selector.js";

export type PolicyKind = "EgressPolicy" | "ClusterEgressPolicy";

/** A policy object as the input read it: identity, and a spec that passed the schema. */
export interface PolicyObject {
  kind: PolicyKind;
  /** EgressPolicy only. */
  namespace?: string;
  name: string;
  uid: string;
  generation: number;
  /** metadata.creationTimestamp in ms since the epoch (0 when absent). */
  created: number;
  spec: EgressPolicySpec | ClusterEgressPolicySpec;
}

/** The destinations and exceptions of one family, as canonical prefixes. */
export interface FamilyPart {
  destinations: string[];
  exceptions: string[];
}

export interface CompiledPolicy {
  obj: PolicyObject;
  /** "EgressPolicy/ns/name" or "ClusterEgressPolicy/name": unique across kinds. */
  key: string;
  /** What the data plane calls it: "ns/name" or "name" (then ":v4" / ":v6" per family). */
  base: string;
  action: PolicyAction;
  group: string | undefined;
  /** Absent for an EgressPolicy (its own namespace). */
  namespaceSelector: CompiledSelector | undefined;
  podSelector: CompiledSelector;
  /** Per family with at least one destination. */
  families: Map<Family, FamilyPart>;
}

export interface PolicyProblem {
  /** The field, e.g. "spec.destinations[2]". */
  field: string;
  message: string;
}

export const policyKey = (kind: PolicyKind, namespace: string | undefined, name: string): string =>
  kind === "EgressPolicy" ? `${kind}/${namespace ?? ""}/${name}` : `${kind}/${name}`;

/** The data plane's name of one family of a policy. */
export const derivedName = (base: string, family: Family): string => `${base}:v${family}`;

function parseList(list: readonly string[] | undefined, field: string, problems: PolicyProblem[]): Prefix[] {
  const out: Prefix[] = [];
  (list ?? []).forEach((text, i) => {
    const r = parsePrefix(text);
    if (!r.ok) problems.push({ field: `spec.${field}[${i}]`, message: r.message });
    else out.push(r.prefix);
  });
  return out;
}

/** Checks and compiles a policy: the compiled policy, or every problem found. */
export function compilePolicy(
  obj: PolicyObject,
): { ok: true; policy: CompiledPolicy } | { ok: false; problems: PolicyProblem[] } {
  const problems: PolicyProblem[] = [];
  const spec = obj.spec;
  const action: PolicyAction = spec.action ?? "SNAT";
  if (action === "SNAT" && spec.egressIPGroup === undefined)
    problems.push({ field: "spec.egressIPGroup", message: "required with action SNAT" });
  if (action !== "SNAT" && spec.egressIPGroup !== undefined)
    problems.push({ field: "spec.egressIPGroup", message: `not allowed with action ${action}` });
  if (action === "Direct" && (spec.exceptions?.length ?? 0) > 0)
    problems.push({
      field: "spec.exceptions",
      message: "not allowed with action Direct; list those CIDRs under destinations",
    });

  const selectorProblems = (sel: LabelSelector, field: string) => {
    for (const i of selectorIssues(sel))
      problems.push({ field: `spec.${field}.${i.path}`, message: i.message });
  };
  selectorProblems(spec.podSelector, "podSelector");
  const nsSel = "namespaceSelector" in spec ? spec.namespaceSelector : undefined;
  if (obj.kind === "ClusterEgressPolicy") {
    if (nsSel === undefined) problems.push({ field: "spec.namespaceSelector", message: "required" });
    else selectorProblems(nsSel, "namespaceSelector");
  }

  const dests = parseList(spec.destinations, "destinations", problems);
  const excs = parseList(spec.exceptions, "exceptions", problems);
  if (spec.destinations.length === 0)
    problems.push({ field: "spec.destinations", message: "must not be empty" });
  dests.forEach((d, i) => {
    const why = unreachableDestination(d);
    if (why) problems.push({ field: `spec.destinations[${i}]`, message: `${spec.destinations[i]} ${why}` });
  });
  excs.forEach((x, i) => {
    const why = exceptionProblem(x, dests);
    if (why) problems.push({ field: `spec.exceptions[${i}]`, message: `${spec.exceptions![i]} ${why}` });
  });
  if (problems.length > 0) return { ok: false, problems };

  const families = new Map<Family, FamilyPart>();
  for (const d of dests) {
    const part = families.get(d.family) ?? { destinations: [], exceptions: [] };
    families.set(d.family, part);
    const t = formatPrefix(d);
    if (!part.destinations.includes(t)) part.destinations.push(t);
  }
  for (const x of excs) {
    const t = formatPrefix(x);
    const part = families.get(x.family)!;
    if (!part.exceptions.includes(t)) part.exceptions.push(t);
  }
  const base = obj.kind === "EgressPolicy" ? `${obj.namespace ?? ""}/${obj.name}` : obj.name;
  return {
    ok: true,
    policy: {
      obj,
      key: policyKey(obj.kind, obj.namespace, obj.name),
      base,
      action,
      group: spec.egressIPGroup,
      namespaceSelector: obj.kind === "ClusterEgressPolicy" ? compileSelector(nsSel) : undefined,
      podSelector: compileSelector(spec.podSelector),
      families,
    },
  };
}

/**
 * Precedence between two policies that select the same pod and disagree
 * about a destination prefix (see cluster.ts): Deny first, then the older
 * policy, then the namespaced one, then by key. Negative when `a` wins.
 */
export function precedence(a: CompiledPolicy, b: CompiledPolicy): number {
  const deny = (p: CompiledPolicy) => (p.action === "Deny" ? 0 : 1);
  return (
    deny(a) - deny(b) ||
    a.obj.created - b.obj.created ||
    (a.obj.kind === b.obj.kind ? 0 : a.obj.kind === "EgressPolicy" ? -1 : 1) ||
    (a.key < b.key ? -1 : a.key > b.key ? 1 : 0)
  );
}

/**
 * Whether two policies disagree somewhere: a prefix that is a destination or
 * an exception of both, of the same family, with different results. Two
 * gateway policies always differ in result (each is its own); two Direct
 * policies, or exceptions of both, agree ("leave alone").
 */
export function collide(a: CompiledPolicy, b: CompiledPolicy): boolean {
  for (const [family, pa] of a.families) {
    const pb = b.families.get(family);
    if (!pb) continue;
    const result = (p: CompiledPolicy, part: FamilyPart, prefix: string): string | null | undefined => {
      if (part.exceptions.includes(prefix)) return null;
      if (part.destinations.includes(prefix)) return p.action === "Direct" ? null : p.key;
      return undefined;
    };
    for (const prefix of [...pa.destinations, ...pa.exceptions]) {
      const rb = result(b, pb, prefix);
      if (rb === undefined) continue;
      if (result(a, pa, prefix) !== rb) return true;
    }
  }
  return false;
}
