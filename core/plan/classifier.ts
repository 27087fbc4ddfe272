// The NAT classifier of a config, made from scratch or patched from the
// previous config's when only sources changed. At 100k sources, one pod
// address added or removed then costs a walk of the few addresses around it
// instead of a flattening of every policy (see patchNat).
import type { Config } from "../config/schema.js";
import { mustParseSpan, type Span } from "../ip.js";
import { actionOf, policyFamily, policyModels } from "./model.js";
import {
  indexNat,
  patchNat,
  type NatIndex,
  type NatSourceDelta,
  type PolicyModel,
  type SourceEdit,
} from "./nat.js";

/** A classifier and the source lists it was made from (what the next config's are compared with). */
export interface KeptClassifier {
  index: NatIndex;
  sources: readonly (readonly string[])[];
}

export interface Classified extends KeptClassifier {
  /** Set when patched: how the sources differ from the previous classifier's. */
  delta?: NatSourceDelta;
  /** Why a previous classifier could not be patched (a full flattening was made instead). */
  refused?: string;
}

const sameList = (a: readonly string[], b: readonly string[]) =>
  a === b || (a.length === b.length && a.every((x, i) => x === b[i]));

const spanKey = (s: Span) => `${s.lo}/${s.len}`;

/** What `to` has and `from` lacks, as prefixes (so that "10.0.0.1" and "10.0.0.1/32" are one). */
function gained(policy: number, from: readonly string[], to: readonly string[]): SourceEdit[] {
  const have = new Set(from.map((s) => spanKey(mustParseSpan(s))));
  const out: SourceEdit[] = [];
  for (const s of to) {
    const span = mustParseSpan(s);
    const k = spanKey(span);
    if (have.has(k)) continue;
    have.add(k);
    out.push({ policy, span });
  }
  return out;
}

/**
 * `previous` patched by source changes known already (from the cluster's
 * watch: no list is compared or parsed but the changed addresses): the
 * policies are the previous classifier's, and `sources` the new lists.
 * Undefined when a patch cannot do it (a new class, an ambiguity): then the
 * config is classified in full.
 */
export function classifierPatched(
  previous: KeptClassifier,
  sources: readonly (readonly string[])[],
  removed: SourceEdit[],
  added: SourceEdit[],
): Classified | undefined {
  const patched = patchNat(previous.index, previous.index.policies, removed, added);
  return patched.ok ? { index: patched.index, sources, delta: patched.delta } : undefined;
}

/**
 * The classifier of `config` (which must have passed validation), patched
 * from `previous` when that is possible, else flattened from scratch.
 */
export function classifierFor(config: Pick<Config, "policies">, previous?: KeptClassifier): Classified {
  const sources = config.policies.map((p) => p.sources);
  if (previous !== undefined && previous.sources.length === sources.length) {
    const removed: SourceEdit[] = [];
    const added: SourceEdit[] = [];
    sources.forEach((now, i) => {
      const before = previous.sources[i]!;
      if (sameList(before, now)) return;
      removed.push(...gained(i, now, before));
      added.push(...gained(i, before, now));
    });
    // The policies as patchNat compares them: their sources are not read.
    const models: PolicyModel[] = config.policies.map((p, index) => ({
      index,
      name: p.name,
      family: policyFamily(p),
      gateway: actionOf(p) !== "Direct",
      sources: [],
      destinations: p.destinations.map(mustParseSpan),
      exceptions: (p.exceptions ?? []).map(mustParseSpan),
    }));
    const patched = patchNat(previous.index, models, removed, added);
    if (patched.ok) return { index: patched.index, sources, delta: patched.delta };
    return { index: indexNat(policyModels(config)), sources, refused: patched.reason };
  }
  return { index: indexNat(policyModels(config)), sources };
}
