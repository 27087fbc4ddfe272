// The NAT classifier: flattens policies (sources x destinations, exceptions,
// no-gateway rules) into disjoint source intervals, each mapped to a class, and
// per class the longest-prefix-match result as disjoint destination intervals.
//
// Prefixes of one family are laminar (two prefixes are either nested or
// disjoint), so both flattenings are a sort plus a stack walk: O(n log n) in
// the number of entries, never a loop over addresses. IPv4 addresses are
// numbers and IPv6 addresses bigints (see Span); the code below is written
// once for both through the small Arith helper.
import type { Family, NatClass, NatSource, NatSourcesDelta } from "../state.js";
import { formatInterval, formatInterval4, type Span } from "../ip.js";
import { partitionPoint } from "../search.js";

/** A policy as the classifier needs it (parsed and validated). */
export interface PolicyModel {
  /** Index in the config's policies list (used in error paths). */
  index: number;
  name: string;
  family: Family;
  /** false: a "no gateway" (Direct) policy; its destinations mean "leave alone". SNAT and Deny take the traffic. */
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
  sources: NatSource[];
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
    // From the pool, with room: once this index is replaced by a patch, its arrays serve the next patches.
    const out = {
      n: 0,
      lo: take("f64", count),
      hi: take("f64", count),
      len: take("u8", count),
      policy: take("f64", count),
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

/** The KeyInfos of one family's flattening, shared by every walk over it. */
interface Memo {
  root: KeyInfo;
  keys: Map<string, KeyInfo>;
}

const newMemo = (): Memo => ({ root: { pairs: [], key: "", next: new Map() }, keys: new Map() });

/**
 * Walks entries [from, to) of a family's sorted source prefixes in address
 * order and calls `emit` for each maximal run of addresses covered by the
 * same set of (policy, length). The entries must be whole top-level blocks
 * (no entry outside the range contains one inside it).
 */
function sourceSegments(
  src: SortedSources,
  from: number,
  to: number,
  family: Family,
  memo: Memo,
  emit: (lo: Addr, hi: Addr, info: KeyInfo) => void,
): void {
  const { succ, pred, zero } = ARITH[family];
  const { keys, root } = memo;
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
  for (let i = from; i < to; i++) {
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

// Typed arrays of the IPv4 index, reused. A patch makes new sorted entries,
// reach and runs (the old plan stays valid until the new one is committed),
// about 9 MB at 200k entries; allocated afresh for every pod, the zeroed
// pages cost more than the patch itself. Once a patched plan is committed, the
// arrays of the plan it replaced come back here (retireIndex) for the next.
const POOL_MIN = 4096;
const POOL_KEEP = 12;
const pools = { f64: [] as Float64Array[], u8: [] as Uint8Array[], i32: [] as Int32Array[] };
const makers = { f64: Float64Array, u8: Uint8Array, i32: Int32Array };

/** An array of at least n entries (beyond n: anything); small ones are allocated as usual. */
function take<K extends keyof typeof pools>(kind: K, n: number): (typeof pools)[K][number] {
  if (n < POOL_MIN) return new makers[kind](n) as (typeof pools)[K][number];
  const pool = pools[kind] as (typeof pools)[K][number][];
  const i = pool.findIndex((a) => a.length >= n && a.length <= 2 * n);
  if (i >= 0) return pool.splice(i, 1)[0]!;
  // Room for growth: the next patches of this size find it in the pool.
  return new makers[kind](n + POOL_MIN) as (typeof pools)[K][number];
}

function giveBack(a: unknown): void {
  const kind =
    a instanceof Float64Array
      ? "f64"
      : a instanceof Uint8Array
        ? "u8"
        : a instanceof Int32Array
          ? "i32"
          : undefined;
  if (kind === undefined || (a as Float64Array).length < POOL_MIN) return;
  const pool = pools[kind] as unknown[];
  if (pool.length < POOL_KEEP) pool.push(a);
}

/** Families whose arrays went back to the pool: their sources must not be read any more. */
const retired = new WeakSet<FamilyIndex>();

/**
 * `old` was replaced by `now` (patched from it, and committed): the typed
 * arrays of `old` that `now` does not share are reused by later patches.
 * Nothing may read `old` (or a plan made with it) afterwards.
 */
export function retireIndex(old: NatIndex, now: NatIndex): void {
  for (const family of [4, 6] as const) {
    const a = old.families[family];
    const b = now.families[family];
    if (a === b) continue;
    retired.add(a);
    if (a.src !== b.src) for (const x of [a.src.lo, a.src.hi, a.src.len, a.src.policy]) giveBack(x);
    if (a.reach !== b.reach) giveBack(a.reach);
    if (a.runs !== b.runs) for (const x of [a.runs.lo, a.runs.hi, a.runs.cls]) giveBack(x);
  }
}

/**
 * Merged runs of one family's classified sources, in address order, as
 * parallel columns: typed arrays for IPv4 (100k runs stay out of the
 * garbage collector's way and copy as blocks), arrays of bigints for IPv6.
 */
interface Runs {
  n: number;
  lo: { [i: number]: Addr };
  hi: { [i: number]: Addr };
  cls: Int32Array;
}

/** Runs of a family with room for n. */
function newRuns(family: Family, n: number): Runs {
  return family === 4
    ? { n, lo: take("f64", n), hi: take("f64", n), cls: take("i32", n) }
    : { n, lo: new Array<Addr>(n), hi: new Array<Addr>(n), cls: take("i32", n) };
}

/** Copies runs [from, to) of `src` into `dst` at `at`. */
function copyRuns(dst: Runs, at: number, src: Runs, from: number, to: number): void {
  if (dst.lo instanceof Float64Array) {
    dst.lo.set((src.lo as Float64Array).subarray(from, to), at);
    (dst.hi as Float64Array).set((src.hi as Float64Array).subarray(from, to), at);
  } else {
    for (let k = from; k < to; k++) {
      dst.lo[at + k - from] = src.lo[k]!;
      dst.hi[at + k - from] = src.hi[k]!;
    }
  }
  dst.cls.set(src.cls.subarray(from, to), at);
}

/** A growing list of runs; adjacent ones of the same class merge. */
class RunList {
  readonly lo: Addr[] = [];
  readonly hi: Addr[] = [];
  readonly cls: number[] = [];
  constructor(private readonly succ: (x: Addr) => Addr) {}
  push(lo: Addr, hi: Addr, cls: number): void {
    const last = this.lo.length - 1;
    if (last >= 0 && this.cls[last] === cls && this.succ(this.hi[last]!) === lo) this.hi[last] = hi;
    else {
      this.lo.push(lo);
      this.hi.push(hi);
      this.cls.push(cls);
    }
  }
  get length(): number {
    return this.lo.length;
  }
  toRuns(family: Family): Runs {
    const r = newRuns(family, this.lo.length);
    for (let k = 0; k < r.n; k++) {
      r.lo[k] = this.lo[k]!;
      r.hi[k] = this.hi[k]!;
      r.cls[k] = this.cls[k]!;
    }
    return r;
  }
}

/** What a flattening keeps of one family so that a change of sources can be patched in. */
interface FamilyIndex {
  src: SortedSources;
  /** reach[i]: the highest address any of entries 0..i covers (finds a point's outermost prefix). */
  reach: { [i: number]: Addr };
  runs: Runs;
  memo: Memo;
}

/**
 * A flattening kept for patching: what flattenNat computed, per family, and
 * the classes by their destination function. Never changed once made; a
 * patch makes a new one that shares what did not change.
 */
export interface NatIndex {
  /** The policies' models, without their sources (those are in the families' entries). */
  readonly policies: PolicyModel[];
  readonly families: Record<Family, FamilyIndex>;
  readonly classes: NatClass[];
  readonly classBySignature: Map<string, NatClass>;
  /** Per class id: the gateway policies that win somewhere in it. */
  readonly winners: Map<number, number[]>;
  /** Per class id: its runs (a class without runs is in no source set). */
  readonly runCount: Map<number, number>;
  readonly result: NatResult;
}

/** Raised inside a patch when it cannot be done without a full flattening (see patchNat). */
class NeedsFlatten extends Error {}

interface Classifier {
  byIndex: Map<number, PolicyModel>;
  classBySignature: Map<string, NatClass>;
  classes: NatClass[];
  winners: Map<number, number[]>;
  conflicts: Conflict[];
  seenConflict: Set<string>;
  /** false in a patch: a new class or a conflict ends the patch (NeedsFlatten). */
  mayGrow: boolean;
}

function classOf(c: Classifier, family: Family, lo: Addr, hi: Addr, info: KeyInfo): NatClass | null {
  const { format } = ARITH[family];
  const d = destinationsFor(family, info, c.byIndex);
  for (const x of d.conflicts) {
    if (!c.mayGrow) throw new NeedsFlatten("the change makes policies ambiguous");
    const ck = `${x.policies.join(",")}@${x.destination.lo}/${x.destination.len}`;
    if (c.seenConflict.has(ck)) continue;
    c.seenConflict.add(ck);
    c.conflicts.push({
      family,
      policies: x.policies,
      destination: `${format(x.destination.lo, x.destination.lo)}/${x.destination.len}`,
      source: format(lo, hi),
      sourceLength: x.sourceLength,
    });
  }
  if (!d.destinations.some((x) => x.policy !== null)) return null;
  const destinations = d.destinations.map((x) => ({
    interval: format(x.lo, x.hi),
    policy: x.policy === null ? null : c.byIndex.get(x.policy)!.name,
  }));
  const signature = `${family}|${destinations.map((x) => `${x.interval}=${x.policy ?? ""}`).join(" ")}`;
  let cls = c.classBySignature.get(signature);
  if (cls === undefined) {
    if (!c.mayGrow) throw new NeedsFlatten("the change needs a new source class");
    cls = { id: c.classBySignature.size + 1, family, destinations };
    c.classBySignature.set(signature, cls);
    c.classes.push(cls);
    const winners = new Set<number>();
    for (const x of d.destinations) if (x.policy !== null) winners.add(x.policy);
    c.winners.set(cls.id, [...winners]);
  }
  return cls;
}

/** The merged runs of entries [from, to) of a family (whole top-level blocks). */
function runsOf(
  c: Classifier,
  family: Family,
  src: SortedSources,
  from: number,
  to: number,
  memo: Memo,
): RunList {
  const runs = new RunList(ARITH[family].succ);
  sourceSegments(src, from, to, family, memo, (lo, hi, info) => {
    if (info.cls === undefined) info.cls = classOf(c, family, lo, hi, info);
    if (info.cls !== null) runs.push(lo, hi, info.cls.id);
  });
  return runs;
}

function reachOf(src: SortedSources, family: Family): { [i: number]: Addr } {
  const reach = family === 4 ? take("f64", src.n) : new Array<Addr>(src.n);
  for (let i = 0; i < src.n; i++) {
    const hi = src.hi[i]!;
    reach[i] = i > 0 && reach[i - 1]! > hi ? reach[i - 1]! : hi;
  }
  return reach;
}

function sourcesOf(families: Record<Family, FamilyIndex>): NatResult["sources"] {
  if (retired.has(families[4]) || retired.has(families[6]))
    throw new Error("the sources of a replaced classifier were read after its arrays were reused");
  const out: NatResult["sources"] = [];
  for (const family of [4, 6] as const) {
    const { format } = ARITH[family];
    const r = families[family].runs;
    for (let i = 0; i < r.n; i++)
      out.push({ family, interval: format(r.lo[i]!, r.hi[i]!), classId: r.cls[i]! });
  }
  return out;
}

/**
 * `o` with a `sources` list made by `make` when first read, then kept. A
 * patched classifier leaves its flat list unmade: at 100k sources, copying it
 * took milliseconds per pod, and the kernel side patches its sets from the
 * delta; only a full comparison (a resync) reads every source.
 */
export function lazySources<T extends object>(
  o: T,
  make: () => NatSource[],
): T & { readonly sources: NatSource[] } {
  return Object.defineProperty(o, "sources", {
    enumerable: true,
    configurable: true,
    get(this: T) {
      const sources = make();
      Object.defineProperty(this, "sources", { value: sources, enumerable: true });
      return sources;
    },
  }) as T & { readonly sources: NatSource[] };
}

function effectiveOf(winners: Map<number, number[]>, runCount: Map<number, number>): Set<number> {
  const out = new Set<number>();
  for (const [id, n] of runCount) if (n > 0) for (const p of winners.get(id) ?? []) out.add(p);
  return out;
}

/**
 * Computes the classifier for all policies. Pure and deterministic. Class ids
 * are numbered from 1 in order of each class's lowest source address (IPv4
 * first), so they do not depend on the order of entries in the config.
 */
export function flattenNat(policies: PolicyModel[]): NatResult {
  return indexNat(policies).result;
}

/** flattenNat, keeping what patchNat needs. */
export function indexNat(policies: PolicyModel[]): NatIndex {
  const c: Classifier = {
    byIndex: new Map(policies.map((p) => [p.index, p])),
    classBySignature: new Map(),
    classes: [],
    winners: new Map(),
    conflicts: [],
    seenConflict: new Set(),
    mayGrow: true,
  };
  const familyIndex = (family: Family): FamilyIndex => {
    const src = sortedSources(policies, family);
    const memo = newMemo();
    c.seenConflict.clear();
    const runs = runsOf(c, family, src, 0, src.n, memo).toRuns(family);
    return { src, reach: reachOf(src, family), runs, memo };
  };
  const families = { 4: familyIndex(4), 6: familyIndex(6) };
  const runCount = new Map<number, number>();
  for (const f of [families[4], families[6]])
    for (const id of f.runs.cls) runCount.set(id, (runCount.get(id) ?? 0) + 1);
  const result: NatResult = {
    classes: c.classes,
    sources: sourcesOf(families),
    conflicts: c.conflicts,
    effective: effectiveOf(c.winners, runCount),
  };
  return {
    // The sources are in the families' entries; a kept copy of each would only cost memory.
    policies: policies.map((p) => ({ ...p, sources: [] })),
    families,
    classes: c.classes,
    classBySignature: c.classBySignature,
    winners: c.winners,
    runCount,
    result,
  };
}

/** A source prefix one policy gained or lost. */
export interface SourceEdit {
  /** Index of the policy in the config. */
  policy: number;
  span: Span;
}

/** What a patch changed in the classifier's source list (entries as in NatResult.sources). */
export type NatSourceDelta = Omit<NatSourcesDelta, "base">;

export type NatPatch = { ok: true; index: NatIndex; delta: NatSourceDelta } | { ok: false; reason: string };

/** First index in [0, n) whose value is > x (or >= x with `orEqual`); values ascending. */
function bound(values: { [i: number]: Addr }, n: number, x: Addr, orEqual: boolean): number {
  return partitionPoint(n, (i) => values[i]! < x || (!orEqual && values[i] === x));
}

/** The outermost entry of `src` that covers `point`, as [lo, hi], if any. */
function outermostAt(
  src: SortedSources,
  reach: { [i: number]: Addr },
  point: Addr,
): [Addr, Addr] | undefined {
  // reach is ascending: the first entry that reaches the point is the outermost one covering it, if it starts by then.
  const i = bound(reach, src.n, point, true);
  if (i < src.n && src.lo[i]! <= point) return [src.lo[i]!, src.hi[i]!];
  return undefined;
}

const entryOrder = (
  a: { lo: Addr; len: number; policy: number },
  b: { lo: Addr; len: number; policy: number },
) => bySpan(a, b) || a.policy - b.policy;

/**
 * `src` less `removed`, plus `added` (each sorted by entryOrder; removed
 * entries present, added ones absent). The entries between two edits are
 * copied as blocks (typed arrays: one memory copy each), so a pod's edit at
 * 100k sources costs a few copies and binary searches, not a walk of every
 * entry.
 */
/**
 * `src` with entries removed and added. Also where the edits lie in the new
 * list: entries before `first` are src's at the same index, and entries from
 * `last` on are src's shifted by `last - lastOld` (reachPatched uses both).
 */
function editedSources(
  src: SortedSources,
  family: Family,
  removed: { lo: Addr; hi: Addr; len: number; policy: number }[],
  added: { lo: Addr; hi: Addr; len: number; policy: number }[],
): { src: SortedSources; first: number; last: number; lastOld: number } {
  const n = src.n - removed.length + added.length;
  const typed = src.lo instanceof Float64Array;
  const out: SortedSources = typed
    ? { n, lo: take("f64", n), hi: take("f64", n), len: take("u8", n), policy: take("f64", n) }
    : {
        n,
        lo: new Array<Addr>(n),
        hi: new Array<Addr>(n),
        len: new Array<number>(n),
        policy: new Array<number>(n),
      };
  const at = (k: number) => ({ lo: src.lo[k]!, len: src.len[k]!, policy: src.policy[k]! });
  let i = 0; // next entry of src to copy
  let o = 0; // next slot of out
  /** Copies src's entries up to `to` (exclusive). */
  const copy = (to: number) => {
    if (typed) {
      for (const f of ["lo", "hi", "len", "policy"] as const)
        (out[f] as Float64Array).set((src[f] as Float64Array).subarray(i, to), o);
    } else
      for (let k = i; k < to; k++) {
        out.lo[o + k - i] = src.lo[k]!;
        out.hi[o + k - i] = src.hi[k]!;
        out.len[o + k - i] = src.len[k]!;
        out.policy[o + k - i] = src.policy[k]!;
      }
    o += to - i;
    i = to;
  };
  let r = 0;
  let a = 0;
  let first = -1;
  while (r < removed.length || a < added.length) {
    const add = a < added.length && (r >= removed.length || entryOrder(added[a]!, removed[r]!) < 0);
    if (add) {
      const x = added[a++]!;
      // After every entry that does not sort after it.
      copy(i + partitionPoint(src.n - i, (k) => entryOrder(x, at(i + k)) >= 0));
      if (first < 0) first = o;
      out.lo[o] = x.lo;
      out.hi[o] = x.hi;
      out.len[o] = x.len;
      out.policy[o++] = x.policy;
    } else {
      const x = removed[r++]!;
      copy(i + partitionPoint(src.n - i, (k) => entryOrder(at(i + k), x) < 0));
      if (i >= src.n || entryOrder(at(i), x) !== 0)
        throw new NeedsFlatten(`IPv${family} source edits do not match the index`);
      if (first < 0) first = o;
      i++;
    }
  }
  const last = o;
  const lastOld = i;
  copy(src.n);
  if (o !== n) throw new NeedsFlatten(`IPv${family} source edits do not match the index`);
  return { src: out, first: first < 0 ? n : first, last, lastOld };
}

/**
 * The reach of edited sources (see editedSources), from the old reach: the
 * same before the first edit, walked from there, and copied, shifted, from
 * the first entry past the last edit where the walk meets the old values
 * again (after a pod's move, within an entry or two). At 100k sources this
 * is a copy instead of a walk of every entry.
 */
function reachPatched(
  e: { src: SortedSources; first: number; last: number; lastOld: number },
  family: Family,
  old: { [i: number]: Addr },
  oldN: number,
): { [i: number]: Addr } {
  const { src, first, last, lastOld } = e;
  if (family !== 4 || !(old instanceof Float64Array)) return reachOf(src, family);
  const reach = take("f64", src.n);
  const before = old;
  reach.set(before.subarray(0, first), 0);
  let i = first;
  for (; i < src.n; i++) {
    const hi = src.hi[i] as number;
    reach[i] = i > 0 && reach[i - 1]! > hi ? reach[i - 1]! : hi;
    // Past the edits, entry i is the old entry j: the same from here on once they agree.
    const j = i - last + lastOld;
    if (i >= last && j < oldN && reach[i] === before[j]) {
      reach.set(before.subarray(j + 1, oldN), i + 1);
      return reach;
    }
  }
  return reach;
}

/**
 * The classifier after some policies gained and lost source prefixes, with
 * nothing else changed (same policies, destinations and exceptions): only
 * the address ranges the edits touch are walked again. The result classifies
 * every source address as flattenNat of the edited policies would (a
 * property test checks it); class ids stay as they were, and a class that
 * lost all its sources stays, empty. A patch that would need a new class or
 * make policies ambiguous is refused ({ ok: false }): flatten again.
 *
 * `policies` are the edited policies' models (same indexes, names,
 * destinations and exceptions as the index's); `removed` must be in the
 * index and `added` must not (each a set difference per policy).
 */
export function patchNat(
  base: NatIndex,
  policies: PolicyModel[],
  removed: SourceEdit[],
  added: SourceEdit[],
): NatPatch {
  try {
    return patchOrThrow(base, policies, removed, added);
  } catch (e) {
    if (e instanceof NeedsFlatten) return { ok: false, reason: e.message };
    throw e;
  }
}

const sameSpans = (a: Span[], b: Span[]) =>
  a.length === b.length && a.every((x, i) => x.lo === b[i]!.lo && x.len === b[i]!.len);

/** Same policies, but for their sources: names, families, gateway, destinations and exceptions. */
function sameButSources(a: PolicyModel[], b: PolicyModel[]): boolean {
  return (
    a === b ||
    (a.length === b.length &&
      a.every((p, i) => {
        const q = b[i]!;
        return (
          p.index === q.index &&
          p.name === q.name &&
          p.family === q.family &&
          p.gateway === q.gateway &&
          sameSpans(p.destinations, q.destinations) &&
          sameSpans(p.exceptions, q.exceptions)
        );
      }))
  );
}

function patchOrThrow(
  base: NatIndex,
  policies: PolicyModel[],
  removed: SourceEdit[],
  added: SourceEdit[],
): NatPatch {
  if (!sameButSources(base.policies, policies)) throw new NeedsFlatten("more than sources changed");
  const c: Classifier = {
    byIndex: new Map(policies.map((p) => [p.index, p])),
    classBySignature: base.classBySignature,
    classes: base.classes,
    winners: base.winners,
    conflicts: [],
    seenConflict: new Set(),
    mayGrow: false,
  };
  const runCount = new Map(base.runCount);
  /** Classes whose count of runs went to or from zero: only those can change which policies are effective. */
  const throughZero = new Set<number>();
  const delta: NatSourceDelta = { remove: [], add: [] };
  const families = { ...base.families };
  for (const family of [4, 6] as const) {
    const old = base.families[family];
    const oldCount = old.runs.n;
    const entries = (edits: SourceEdit[]) =>
      edits
        .filter((e) => e.span.family === family)
        .map((e) => {
          if (policies[e.policy]?.family !== family)
            throw new NeedsFlatten(`policy ${e.policy} is not IPv${family}`);
          return { lo: e.span.lo as Addr, hi: e.span.hi as Addr, len: e.span.len, policy: e.policy };
        })
        .sort(entryOrder);
    const rem = entries(removed);
    const add = entries(added);
    if (rem.length + add.length === 0) continue;
    const edited = editedSources(old.src, family, rem, add);
    const src = edited.src;
    const reach = reachPatched(edited, family, old.reach, old.src.n);
    const { pred, succ, format } = ARITH[family];

    // The ranges to walk again: each edited prefix, grown to the outermost prefix around it (before or after).
    const ranges: [Addr, Addr][] = [...rem, ...add].map((e) => {
      let lo = e.lo;
      let hi = e.hi;
      for (const r of [outermostAt(old.src, old.reach, e.lo), outermostAt(src, reach, e.lo)]) {
        if (r && r[0] <= lo && r[1] >= hi) [lo, hi] = r;
      }
      return [lo, hi];
    });
    ranges.sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));

    // The runs each range replaces, with one neighbour on each side (it may now merge with the range's runs).
    // Ranges whose windows touch are walked as one (their hull is whole blocks too).
    const window = (lo: Addr, hi: Addr): [number, number] => [
      Math.max(0, bound(old.runs.hi, oldCount, lo, true) - 1),
      Math.min(oldCount, bound(old.runs.lo, oldCount, hi, false) + 1),
    ];
    const groups: { lo: Addr; hi: Addr; w0: number; w1: number }[] = [];
    for (const [lo, hi] of ranges) {
      const last = groups[groups.length - 1];
      // Overlapping or adjacent ranges: runs walked in one may merge with the other's (where no old
      // run lies between them, at either end of the list, their windows are both empty).
      if (last !== undefined && lo <= succ(last.hi)) {
        if (hi > last.hi) last.hi = hi;
        [last.w0, last.w1] = window(last.lo, last.hi);
        continue;
      }
      const [w0, w1] = window(lo, hi);
      if (last !== undefined && w0 < last.w1) {
        last.hi = hi;
        [last.w0, last.w1] = window(last.lo, last.hi);
      } else groups.push({ lo, hi, w0, w1 });
    }

    // Each group's window of runs, made again: old parts outside the range, the range walked again.
    const key = (lo: Addr, hi: Addr, cls: number) => `${lo}-${hi}-${cls}`;
    const windows = groups.map((g) => {
      const w = new RunList(succ);
      for (let k = g.w0; k < g.w1; k++)
        if (old.runs.lo[k]! < g.lo) {
          const hi = old.runs.hi[k]! < g.lo ? old.runs.hi[k]! : pred(g.lo);
          w.push(old.runs.lo[k]!, hi, old.runs.cls[k]!);
        }
      const from = bound(src.lo, src.n, g.lo, true);
      const to = bound(src.lo, src.n, g.hi, false);
      const fresh = runsOf(c, family, src, from, to, old.memo);
      for (let k = 0; k < fresh.length; k++) w.push(fresh.lo[k]!, fresh.hi[k]!, fresh.cls[k]!);
      for (let k = g.w0; k < g.w1; k++)
        if (old.runs.hi[k]! > g.hi) {
          const lo = old.runs.lo[k]! > g.hi ? old.runs.lo[k]! : succ(g.hi);
          w.push(lo, old.runs.hi[k]!, old.runs.cls[k]!);
        }
      // What is in the window before or after only is removed or added; the rest is left as it is.
      const before = new Map<string, NatSource>();
      for (let k = g.w0; k < g.w1; k++) {
        const [lo, hi, cls] = [old.runs.lo[k]!, old.runs.hi[k]!, old.runs.cls[k]!];
        before.set(key(lo, hi, cls), { family, interval: format(lo, hi), classId: cls });
      }
      const after = new Set<string>();
      for (let k = 0; k < w.length; k++) {
        const id = w.cls[k]!;
        const kk = key(w.lo[k]!, w.hi[k]!, id);
        after.add(kk);
        if (!before.has(kk)) {
          delta.add.push({ family, interval: format(w.lo[k]!, w.hi[k]!), classId: id });
          const n = runCount.get(id) ?? 0;
          if (n === 0) throughZero.add(id);
          runCount.set(id, n + 1);
        }
      }
      for (const [kk, entry] of before)
        if (!after.has(kk)) {
          delta.remove.push(entry);
          const n = runCount.get(entry.classId)! - 1;
          if (n === 0) throughZero.add(entry.classId);
          runCount.set(entry.classId, n);
        }
      return w.toRuns(family);
    });

    // The family's runs and entries: old blocks between the windows, copied whole. A window's first and
    // last runs lie wholly outside its range, so nothing merges across a window's edge.
    const total = groups.reduce((n, g, i) => n + windows[i]!.n - (g.w1 - g.w0), oldCount);
    const runs = newRuns(family, total);
    let copied = 0;
    let at = 0;
    groups.forEach((g, i) => {
      copyRuns(runs, at, old.runs, copied, g.w0);
      at += g.w0 - copied;
      const w = windows[i]!;
      copyRuns(runs, at, w, 0, w.n);
      at += w.n;
      copied = g.w1;
    });
    copyRuns(runs, at, old.runs, copied, oldCount);
    families[family] = { src, reach, runs, memo: old.memo };
  }
  const result = lazySources(
    {
      classes: base.classes,
      conflicts: [],
      // A pod's move rarely empties a class or fills an empty one: then the policies in effect are the base's.
      effective: [...throughZero].some((id) => runCount.get(id)! > 0 !== (base.runCount.get(id) ?? 0) > 0)
        ? effectiveOf(base.winners, runCount)
        : base.result.effective,
    },
    () => sourcesOf(families),
  );
  return {
    ok: true,
    index: { ...base, families, runCount, result },
    delta,
  };
}
