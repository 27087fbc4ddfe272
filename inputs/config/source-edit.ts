// A config file edited only in some policy's list of sources, read without
// parsing the whole file again.
//
// At 100k sources a config is 2 MB of YAML, and parsing it takes 0.1 s of
// the 0.1 s a one-pod change may take end to end. Most edits of such a file
// are a few lines of one policy's `sources:`. So when a file is loaded in
// full, the position of every source item is kept (a SourceLayout, from the
// YAML parser's own events); when the next text differs from the previous
// one only in whole lines that are, before and after, plain items of one
// policy's block sequence of sources, the new config is the previous one
// with that list spliced. Anything else (a comment, a quoted or flow item, a
// change of indentation, a line of another key, an empty list, a value YAML
// would not read as a string) is left to the full load. Nothing here
// reports errors: an edit it does not take, or one whose new sources are not
// plainly valid, is simply loaded in full, so errors keep their lines and
// wording. test/unit/config-source-edit.test.ts checks that what it takes is
// exactly what the full load gives.
import { COLLECTION_STYLE, EVENT_ID, getScalarValue, load, SCALAR_STYLE, type Event } from "js-yaml";
import type { Config } from "../../core/config/schema.js";
import { parsePrefix, type Prefix } from "../../core/ip.js";
import { partitionPoint } from "../../core/search.js";

/** Where each policy's source items are in a config's text. */
export interface SourceLayout {
  /** Per source item, in file order: where its text starts and ends. */
  starts: Int32Array;
  ends: Int32Array;
  /** Policy i's items are first[i] .. first[i + 1] - 1 (policies.length + 1 entries). */
  first: Int32Array;
  /** Per policy: 1 when its sources are a block sequence of plain scalars (editable here), else 0. */
  editable: Uint8Array;
}

/** The layout of the sources in `text`, from its parser events; undefined if the file is not a plain mapping. */
export function layoutOf(text: string, events: Event[]): SourceLayout | undefined {
  // Walks the events: document, root mapping, and within it policies[*].sources[*].
  let i = 1;
  const root = events[i];
  if (root?.type !== EVENT_ID.MAPPING) return undefined;
  const skip = (at: number): number => {
    const e = events[at]!;
    if (e.type !== EVENT_ID.SEQUENCE && e.type !== EVENT_ID.MAPPING) return at + 1;
    let depth = 0;
    for (let k = at; k < events.length; k++) {
      const t = events[k]!.type;
      if (t === EVENT_ID.SEQUENCE || t === EVENT_ID.MAPPING) depth++;
      else if (t === EVENT_ID.POP && --depth === 0) return k + 1;
    }
    return events.length;
  };
  const keyOf = (e: Event | undefined): string | undefined =>
    e?.type === EVENT_ID.SCALAR ? getScalarValue(text, e) : undefined;
  const starts: number[] = [];
  const ends: number[] = [];
  const first: number[] = [];
  const editable: number[] = [];
  i++;
  while (events[i] !== undefined && events[i]!.type !== EVENT_ID.POP) {
    const key = keyOf(events[i]);
    i++;
    if (key !== "policies" || events[i]?.type !== EVENT_ID.SEQUENCE) {
      i = skip(i);
      continue;
    }
    i++;
    while (events[i] !== undefined && events[i]!.type !== EVENT_ID.POP) {
      // One policy.
      first.push(starts.length);
      let ok = 0;
      if (events[i]!.type !== EVENT_ID.MAPPING) {
        i = skip(i);
        editable.push(0);
        continue;
      }
      i++;
      while (events[i] !== undefined && events[i]!.type !== EVENT_ID.POP) {
        const k = keyOf(events[i]);
        i++;
        const seq = events[i];
        if (
          k !== "sources" ||
          seq?.type !== EVENT_ID.SEQUENCE ||
          seq.style !== COLLECTION_STYLE.BLOCK ||
          seq.anchorStart >= 0
        ) {
          i = skip(i);
          continue;
        }
        ok = 1;
        i++;
        while (events[i] !== undefined && events[i]!.type !== EVENT_ID.POP) {
          const e = events[i]!;
          if (
            e.type !== EVENT_ID.SCALAR ||
            e.style !== SCALAR_STYLE.PLAIN ||
            e.anchorStart >= 0 ||
            e.tagStart >= 0
          ) {
            ok = 0;
            i = skip(i);
            continue;
          }
          starts.push(e.valueStart);
          ends.push(e.valueEnd);
          i++;
        }
        i++; // the sequence's POP
      }
      i++; // the policy's POP
      editable.push(ok);
    }
    i++; // the policies' POP
  }
  first.push(starts.length);
  return {
    starts: Int32Array.from(starts),
    ends: Int32Array.from(ends),
    first: Int32Array.from(first),
    editable: Uint8Array.from(editable),
  };
}

/** A config whose text was loaded in full (cleanly: no errors, no warnings), and where its sources are. */
export interface LoadedText {
  text: string;
  config: Config;
  layout: SourceLayout;
}

export interface SourceEdit extends LoadedText {
  /** The policy whose sources changed. */
  policy: number;
  /**
   * The items on the lines the edit replaced and on the lines it wrote: every
   * address that may have come or gone (a superset: a line rewritten with the
   * same item is in it).
   */
  changed: string[];
}

/** Length of the common prefix of a and b. */
function commonPrefix(a: string, b: string): number {
  const n = Math.min(a.length, b.length);
  // Compare in chunks first (a string comparison is a memory compare), then char by char.
  let lo = 0;
  for (let step = 65536; step >= 1; step >>= 4) {
    while (lo + step <= n && a.slice(lo, lo + step) === b.slice(lo, lo + step)) lo += step;
  }
  while (lo < n && a.charCodeAt(lo) === b.charCodeAt(lo)) lo++;
  return lo;
}

/** Length of the common suffix of a and b, at most `max`. */
function commonSuffix(a: string, b: string, max: number): number {
  let n = 0;
  for (let step = 65536; step >= 1; step >>= 4) {
    while (
      n + step <= max &&
      a.slice(a.length - n - step, a.length - n) === b.slice(b.length - n - step, b.length - n)
    )
      n += step;
  }
  while (n < max && a.charCodeAt(a.length - 1 - n) === b.charCodeAt(b.length - 1 - n)) n++;
  return n;
}

/** First index in `v` whose value is >= x. */
const lowerBound = (v: Int32Array, x: number) => partitionPoint(v.length, (i) => v[i]! < x);

/** An item line: indentation, the dash, spaces, the scalar, trailing blanks. */
const ITEM = /^( *)-( +)(\S+)[ \t]*$/;
/** Characters of an address or CIDR; a plain scalar of these alone is read as a string or a number. */
const SOURCE_TEXT = /^[0-9A-Fa-f.:/]+$/;

const overlaps = (a: Prefix, b: Prefix) => a.family === b.family && a.lo <= b.hi && b.lo <= a.hi;

/**
 * The config of `text` when it is `prev`'s text with only whole source item
 * lines of one policy replaced, inserted or deleted, and the new items are
 * plainly valid sources of that policy (of its family, clear of its own
 * destinations); undefined otherwise (load `text` in full). The checks that
 * span policies (ambiguity, a policy that never applies) are the NAT
 * classifier's: the caller makes it for the result.
 */
export function sourceEdit(prev: LoadedText, text: string): SourceEdit | undefined {
  const old = prev.text;
  if (old === text) return undefined;
  const { starts, ends, first, editable } = prev.layout;
  const p = commonPrefix(old, text);
  const q = commonSuffix(old, text, Math.min(old.length, text.length) - p);
  const delta = text.length - old.length;
  // The edit as whole lines: [a, b0) of the old text became [a, b1) of the new.
  const a = p === 0 ? 0 : old.lastIndexOf("\n", p - 1) + 1;
  const boundary = (s: string, at: number) => at === a || at === s.length || s.charCodeAt(at - 1) === 10;
  let b0 = old.length - q;
  while (!boundary(old, b0) || !boundary(text, b0 + delta)) {
    const nl = old.indexOf("\n", b0);
    b0 = nl < 0 ? old.length : nl + 1;
  }
  const b1 = b0 + delta;
  const lines = (s: string, from: number, to: number) =>
    to > from ? s.slice(from, to).replace(/\n$/, "").split("\n") : [];
  const oldLines = lines(old, a, b0);
  const newLines = lines(text, a, b1);
  const lineAt = (at: number): [number, number] => {
    const start = old.lastIndexOf("\n", at - 1) + 1;
    const nl = old.indexOf("\n", at);
    return [start, nl < 0 ? old.length : nl];
  };

  // The old lines must be exactly items k0 .. k1 - 1 of one editable policy. New lines go in before
  // item k0: for an insertion, next to an item of the policy on the line before or the line after.
  const k0 = lowerBound(starts, a);
  const k1 = lowerBound(starts, b0);
  if (k1 - k0 !== oldLines.length) return undefined;
  let ref: number;
  if (oldLines.length > 0) ref = k0;
  else if (k0 > 0 && a > 0 && starts[k0 - 1]! >= lineAt(a - 1)[0]) ref = k0 - 1;
  else if (k0 < starts.length && starts[k0]! <= lineAt(a)[1]) ref = k0;
  else return undefined;
  const policy = policyOf(first, ref);
  if (editable[policy] !== 1 || k0 < first[policy]! || k1 > first[policy + 1]!) return undefined;
  // The indentation of this list's items, from the reference item's line, which must hold that item
  // and nothing else (a valid source has no space, so it cannot go on over the next line; checked anyway).
  const [refStart, refEnd] = lineAt(starts[ref]!);
  const refMatch = ITEM.exec(old.slice(refStart, refEnd));
  const refItemStart = refStart + (refMatch?.[1]?.length ?? 0) + 1 + (refMatch?.[2]?.length ?? 0);
  if (!refMatch || refItemStart !== starts[ref] || refItemStart + refMatch[3]!.length !== ends[ref])
    return undefined;
  const indent = refMatch[1]!;
  const changed: string[] = [];
  let at = a;
  for (let k = k0; k < k1; k++) {
    const line = oldLines[k - k0]!;
    const m = ITEM.exec(line);
    const start = at + indent.length + 1 + (m?.[2]?.length ?? 0);
    if (!m || m[1] !== indent || start !== starts[k] || start + m[3]!.length !== ends[k]) return undefined;
    changed.push(m[3]!);
    at += line.length + 1;
  }

  // The new lines: items of the same list, each a plain scalar YAML reads as the string written.
  const items: string[] = [];
  const itemStarts: number[] = [];
  at = a;
  for (const line of newLines) {
    const m = ITEM.exec(line);
    if (!m || m[1] !== indent || !SOURCE_TEXT.test(m[3]!)) return undefined;
    const value = m[3]!;
    let read: unknown;
    try {
      read = load(`- ${value}`);
    } catch {
      return undefined;
    }
    if (!Array.isArray(read) || read.length !== 1 || read[0] !== value) return undefined;
    items.push(value);
    itemStarts.push(at + indent.length + 1 + m[2]!.length);
    at += line.length + 1;
  }

  // The new sources must be plainly valid for the policy: its family, clear of its own destinations.
  const pol = prev.config.policies[policy]!;
  const family = parsePrefix(pol.sources[0]!);
  if (!family.ok) return undefined;
  const dests = pol.destinations.map(parsePrefix);
  for (const s of items) {
    const r = parsePrefix(s);
    if (!r.ok || r.prefix.family !== family.prefix.family) return undefined;
    if (dests.some((d) => d.ok && overlaps(d.prefix, r.prefix))) return undefined;
  }
  const j0 = k0 - first[policy]!;
  const sources = [...pol.sources.slice(0, j0), ...items, ...pol.sources.slice(j0 + oldLines.length)];
  if (sources.length === 0) return undefined;

  // The layout of the new text: items after the edit moved by delta.
  const n = starts.length - oldLines.length + items.length;
  const s2 = new Int32Array(n);
  const e2 = new Int32Array(n);
  const kIns = k0;
  s2.set(starts.subarray(0, kIns));
  e2.set(ends.subarray(0, kIns));
  items.forEach((v, x) => {
    s2[kIns + x] = itemStarts[x]!;
    e2[kIns + x] = itemStarts[x]! + v.length;
  });
  for (let k = kIns + oldLines.length, o = kIns + items.length; k < starts.length; k++, o++) {
    s2[o] = starts[k]! + delta;
    e2[o] = ends[k]! + delta;
  }
  const f2 = Int32Array.from(first, (v, i) => (i > policy ? v - oldLines.length + items.length : v));
  const config: Config = {
    ...prev.config,
    policies: prev.config.policies.map((x, i) => (i === policy ? { ...x, sources } : x)),
  };
  return {
    text,
    config,
    layout: { starts: s2, ends: e2, first: f2, editable },
    policy,
    changed: [...changed, ...items],
  };
}

/** The policy whose items include item k: the last whose first item is at or before k. */
const policyOf = (first: Int32Array, k: number) =>
  partitionPoint(first.length - 1, (i) => first[i]! <= k) - 1;
