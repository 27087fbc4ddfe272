// The NAT classifier: flattens policies (sources x destinations, exceptions,
// no-gateway rules) into disjoint source intervals, each mapped to a class, and
// per class the longest-prefix-match result as disjoint destination intervals.
//
// Prefixes of one family are laminar (two prefixes are either nested or
// disjoint), so both flattenings are a sort plus a stack walk: O(n log n) in
// the number of entries, never a loop over addresses. IPv4 addresses are
// numbers and IPv6 addresses bigints (see Span); the code below is written
// once for both through the small Arith helper.
import type { Family, NatClass } from "../state.js";
import { formatInterval, formatInterval4, type Span } from "../ip.js";

/** A policy as the classifier needs it (parsed and validated). */
export interface PolicyModel {
  /** Index in the config's policies list (used in error paths). */
  index: number;
  name: string;
  family: Family;
  /** false: a "no gateway" policy; its destinations mean "leave alone". */
  gateway: boolean;
  sources: Span[];
  destinations: Span[];
  exceptions: Span[];
}

/** Two or more policies tie for some source and destination: same destination prefix, same source prefix length. */
export interface Conflict {
  family: Family;
  /** Policy indexes, ascending (at least two). */
  policies: number[];
  /** The destination prefix, e.g. "203.0.113.0/24". */
  destination: string;
  /** A source range where it happens, in nft interval syntax. */
  source: string;
  sourceLength: number;
}

export interface NatResult {
  classes: NatClass[];
  sources: { family: Family; interval: string; classId: number }[];
  conflicts: Conflict[];
  /** Indexes of gateway policies that win for at least one (source, destination). */
  effective: Set<number>;
}

type Addr = number | bigint;

interface Arith {
  succ(x: Addr): Addr;
  pred(x: Addr): Addr;
  format(lo: Addr, hi: Addr): string;
  zero: Addr;
}

const ARITH: Record<Family, Arith> = {
  4: {
    succ: (x) => (x as number) + 1,
    pred: (x) => (x as number) - 1,
    format: (lo, hi) => formatInterval4(lo as number, hi as number),
    zero: 0,
  },
  6: {
    succ: (x) => (x as bigint) + 1n,
    pred: (x) => (x as bigint) - 1n,
    format: (lo, hi) => formatInterval(6, lo as bigint, hi as bigint),
    zero: 0n,
  },
};

const bySpan = (a: { lo: Addr; len: number }, b: { lo: Addr; len: number }) =>
  a.lo < b.lo ? -1 : a.lo > b.lo ? 1 : a.len - b.len;

/** The set of (policy, most specific covering source prefix length) for a source segment. */
interface KeyInfo {
  /** [policy index, source prefix length], ascending by policy index. */
  pairs: [number, number][];
  key: string;
  /** Children by policy * 256 + length (memo: pod IPs under one CIDR share KeyInfos). */
  next: Map<number, KeyInfo>;
  /** The class the segment maps to: undefined until computed, null for "not classified". */
  cls?: NatClass | null;
}

/** Source entries of one family, sorted by (lo, len, policy), duplicates removed, as parallel arrays. */
interface SortedSources {
  n: number;
  lo: { [i: number]: Addr };
  hi: { [i: number]: Addr };
  len: { [i: number]: number };
  policy: { [i: number]: number };
}

function sortedSources(policies: PolicyModel[], family: Family): SortedSources {
  const mine = policies.filter((p) => p.family === family);
  const count = mine.reduce((n, p) => n + p.sources.length, 0);
  const maxPolicy = mine.reduce((m, p) => Math.max(m, p.index), 0) + 1;
  if (family === 4 && 2 ** 38 * maxPolicy <= Number.MAX_SAFE_INTEGER) {
    // IPv4: one exact float64 sort key per entry, (lo * 64 + len) * P + policy, and a native numeric
    // sort; typed arrays keep 100k entries away from the garbage collector.
    const keys = new Float64Array(count);
    let i = 0;
    for (const p of mine)
      for (const s of p.sources) keys[i++] = ((s.lo as number) * 64 + s.len) * maxPolicy + p.index;
    keys.sort();
    const out = {
      n: 0,
      lo: new Float64Array(count),
      hi: new Float64Array(count),
      len: new Uint8Array(count),
      policy: new Float64Array(count),
    };
    let prevKey = -1;
    for (const k of keys) {
      if (k === prevKey) continue;
      prevKey = k;
      const policy = k % maxPolicy;
      const rest = (k - policy) / maxPolicy;
      const len = rest % 64;
      const lo = (rest - len) / 64;
      out.lo[out.n] = lo;
      out.hi[out.n] = lo + 2 ** (32 - len) - 1;
      out.len[out.n] = len;
      out.policy[out.n++] = policy;
    }
    return out;
  }
  const entries: { lo: Addr; hi: Addr; len: number; policy: number }[] = [];
  for (const p of mine)
    for (const s of p.sources) entries.push({ lo: s.lo, hi: s.hi, len: s.len, policy: p.index });
  entries.sort((a, b) => bySpan(a, b) || a.policy - b.policy);
  const out: SortedSources & { lo: Addr[]; hi: Addr[]; len: number[]; policy: number[] } = {
    n: 0,
    lo: [],
    hi: [],
    len: [],
    policy: [],
  };
  for (const e of entries) {
    const n = out.n - 1;
    if (n >= 0 && out.lo[n] === e.lo && out.len[n] === e.len && out.policy[n] === e.policy) continue;
    out.lo.push(e.lo);
    out.hi.push(e.hi);
    out.len.push(e.len);
    out.policy.push(e.policy);
    out.n++;
  }
  return out;
}

/**
 * Walks a family's source prefixes in address order and calls `emit` for each
 * maximal run of addresses covered by the same set of (policy, length).
 */
function sourceSegments(
  policies: PolicyModel[],
  family: Family,
  emit: (lo: Addr, hi: Addr, info: KeyInfo) => void,
): void {
  const { succ, pred, zero } = ARITH[family];
  const src = sortedSources(policies, family);

  const keys = new Map<string, KeyInfo>();
  const root: KeyInfo = { pairs: [], key: "", next: new Map() };
  const child = (parent: KeyInfo, policy: number, len: number): KeyInfo => {
    const memoKey = policy * 256 + len;
    let info = parent.next.get(memoKey);
    if (info === undefined) {
      const pairs = parent.pairs.filter(([p]) => p !== policy);
      pairs.push([policy, len]);
      pairs.sort((a, b) => a[0] - b[0]);
      const key = pairs.map(([p, l]) => `${p}/${l}`).join(",");
      info = keys.get(key) ?? { pairs, key, next: new Map() };
      keys.set(key, info);
      parent.next.set(memoKey, info);
    }
    return info;
  };

  // The stack holds the chain of nested prefixes containing the cursor.
  const stackHi: Addr[] = [];
  const stackInfo: KeyInfo[] = [];
  let cursor: Addr = zero;
  const popOne = (): void => {
    const hi = stackHi.pop()!;
    const info = stackInfo.pop()!;
    if (cursor <= hi) emit(cursor, hi, info);
    cursor = succ(hi);
  };
  for (let i = 0; i < src.n; i++) {
    const lo = src.lo[i]!;
    while (stackHi.length > 0 && stackHi[stackHi.length - 1]! < lo) popOne();
    const top = stackInfo[stackInfo.length - 1];
    if (top !== undefined && cursor < lo) emit(cursor, pred(lo), top);
    cursor = lo;
    stackHi.push(src.hi[i]!);
    stackInfo.push(child(top ?? root, src.policy[i]!, src.len[i]!));
  }
  while (stackHi.length > 0) popOne();
}

interface DestResult {
  destinations: { lo: Addr; hi: Addr; policy: number | null }[];
  conflicts: { policies: number[]; destination: Span; sourceLength: number }[];
}

/** Longest-prefix match for one source class: destination prefixes of all its policies, flattened. */
function destinationsFor(family: Family, info: KeyInfo, byIndex: Map<number, PolicyModel>): DestResult {
  const { succ, pred, zero } = ARITH[family];
  // Per destination prefix: per policy its result (an exception beats the policy's own destination).
  const groups = new Map<
    string,
    { span: Span; byPolicy: Map<number, { result: number | null; srcLen: number }> }
  >();
  const add = (span: Span, policy: number, result: number | null, srcLen: number, isException: boolean) => {
    const gk = `${span.lo}/${span.len}`;
    let g = groups.get(gk);
    if (g === undefined) {
      g = { span, byPolicy: new Map() };
      groups.set(gk, g);
    }
    if (!g.byPolicy.has(policy) || isException) g.byPolicy.set(policy, { result, srcLen });
  };
  for (const [pi, srcLen] of info.pairs) {
    const p = byIndex.get(pi)!;
    for (const d of p.destinations) add(d, pi, p.gateway ? pi : null, srcLen, false);
    for (const x of p.exceptions) add(x, pi, null, srcLen, true);
  }

  // Winner per prefix: the most specific source; a tie between different results is a conflict.
  interface Resolved {
    span: Span;
    result: number | null;
    conflict?: { policies: number[]; sourceLength: number };
  }
  const resolved: Resolved[] = [];
  for (const g of groups.values()) {
    let best = -1;
    for (const v of g.byPolicy.values()) best = Math.max(best, v.srcLen);
    const tied = [...g.byPolicy.entries()].filter(([, v]) => v.srcLen === best).sort((a, b) => a[0] - b[0]);
    const r: Resolved = { span: g.span, result: tied[0]![1].result };
    if (new Set(tied.map(([, v]) => v.result)).size > 1) {
      r.conflict = { policies: tied.map(([pi]) => pi), sourceLength: best };
    }
    resolved.push(r);
  }
  resolved.sort((a, b) => bySpan(a.span, b.span));

  // Innermost prefix wins: a stack walk over the laminar prefixes.
  const out: DestResult = { destinations: [], conflicts: [] };
  type Frame = { r: Resolved; gatewayBelow: boolean; reported?: boolean };
  const emit = (lo: Addr, hi: Addr, frame: Frame) => {
    if (frame.r.conflict !== undefined && frame.reported !== true) {
      frame.reported = true;
      out.conflicts.push({ ...frame.r.conflict, destination: frame.r.span });
    }
    // "Leave alone" only matters where it punches a hole into a gateway policy.
    if (frame.r.result === null && !frame.gatewayBelow) return;
    const last = out.destinations[out.destinations.length - 1];
    if (last !== undefined && last.policy === frame.r.result && succ(last.hi) === lo) last.hi = hi;
    else out.destinations.push({ lo, hi, policy: frame.r.result });
  };
  const stack: Frame[] = [];
  let cursor: Addr = zero;
  const popOne = (): void => {
    const top = stack.pop()!;
    if (cursor <= top.r.span.hi) emit(cursor, top.r.span.hi, top);
    cursor = succ(top.r.span.hi);
  };
  for (const r of resolved) {
    while (stack.length > 0 && stack[stack.length - 1]!.r.span.hi < r.span.lo) popOne();
    const top = stack[stack.length - 1];
    if (top !== undefined && cursor < r.span.lo) emit(cursor, pred(r.span.lo), top);
    cursor = r.span.lo;
    stack.push({ r, gatewayBelow: top !== undefined && (top.gatewayBelow || top.r.result !== null) });
  }
  while (stack.length > 0) popOne();
  return out;
}

/**
 * Computes the classifier for all policies. Pure and deterministic. Class ids
 * are numbered from 1 in order of each class's lowest source address (IPv4
 * first), so they do not depend on the order of entries in the config.
 */
export function flattenNat(policies: PolicyModel[]): NatResult {
  const byIndex = new Map(policies.map((p) => [p.index, p]));
  const result: NatResult = { classes: [], sources: [], conflicts: [], effective: new Set() };
  // Destination signature -> class, so that equal functions share one class.
  const classBySignature = new Map<string, NatClass>();

  for (const family of [4, 6] as const) {
    const { succ, format } = ARITH[family];
    const seenConflict = new Set<string>();

    const classOf = (lo: Addr, hi: Addr, info: KeyInfo): NatClass | null => {
      const d = destinationsFor(family, info, byIndex);
      for (const c of d.conflicts) {
        const ck = `${c.policies.join(",")}@${c.destination.lo}/${c.destination.len}`;
        if (seenConflict.has(ck)) continue;
        seenConflict.add(ck);
        result.conflicts.push({
          family,
          policies: c.policies,
          destination: `${format(c.destination.lo, c.destination.lo)}/${c.destination.len}`,
          source: format(lo, hi),
          sourceLength: c.sourceLength,
        });
      }
      if (!d.destinations.some((x) => x.policy !== null)) return null;
      const destinations = d.destinations.map((x) => ({
        interval: format(x.lo, x.hi),
        policy: x.policy === null ? null : byIndex.get(x.policy)!.name,
      }));
      for (const x of d.destinations) if (x.policy !== null) result.effective.add(x.policy);
      const signature = `${family}|${destinations.map((x) => `${x.interval}=${x.policy ?? ""}`).join(" ")}`;
      let cls = classBySignature.get(signature);
      if (cls === undefined) {
        cls = { id: classBySignature.size + 1, family, destinations };
        classBySignature.set(signature, cls);
        result.classes.push(cls);
      }
      return cls;
    };

    // Adjacent segments of the same class merge into one interval.
    let run: { lo: Addr; hi: Addr; classId: number } | undefined;
    const flush = () => {
      if (run !== undefined)
        result.sources.push({ family, interval: format(run.lo, run.hi), classId: run.classId });
      run = undefined;
    };
    sourceSegments(policies, family, (lo, hi, info) => {
      if (info.cls === undefined) info.cls = classOf(lo, hi, info);
      const cls = info.cls;
      if (cls === null) {
        flush();
      } else if (run !== undefined && run.classId === cls.id && succ(run.hi) === lo) {
        run.hi = hi;
      } else {
        flush();
        run = { lo, hi, classId: cls.id };
      }
    });
    flush();
  }
  return result;
}
