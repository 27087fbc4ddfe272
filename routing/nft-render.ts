// Pure rendering of egressd's nftables table from a NatPlan, and the diff
// between two plans (or between the live table and a plan) as the smallest nft
// script, always one transaction: element updates when the table's structure
// is unchanged; an incremental structural patch (chains, counters, sets and
// map entries of the policies and classes that were added, removed or
// changed) when the mark mask is unchanged; otherwise one atomic replacement
// of the whole table. No I/O here; see docs/dataplane.md.
import { createHash } from "node:crypto";
import {
  OWNER,
  type Family,
  type NatPlan,
  type NatPolicy,
  type NatSource,
  type SnatPorts,
} from "../core/state.js";
import { canonicalAddress, familyOf, intervalKey, isCanonicalIPv4 } from "./ip.js";
import { formatAddress, formatInterval, parseRange } from "../core/ip.js";

export const TABLE = `inet ${OWNER.nftTable}`;
/** Prefix of the comment that carries the structure hash. */
export const COMMENT_PREFIX = "egressd structure ";
/**
 * The empty set whose comment carries the structure hash. A set's comment
 * cannot be changed in place (the kernel ignores it when the set exists), so a
 * structural patch deletes and re-adds this set; nothing refers to it.
 */
export const STRUCTURE_SET = "structure";
/** Sets and maps that are not per class (their elements follow from the policies). */
export const FIXED_SETS = ["restore_marks", "snat_marks", STRUCTURE_SET] as const;
/** With unmatched: Deny, the served destinations of each family (what SNAT policies send through the gateway). */
export const SERVED_SETS = { 4: "served_v4", 6: "served_v6" } as const;
/** The counters of unmatched connections dropped. */
export const UNMATCHED_COUNTERS = { 4: "unmatched_v4", 6: "unmatched_v6" } as const;
/**
 * The NFLOG group dropped connections are logged to when the audit trail
 * runs (its reader binds it in egressd's network namespace). Fixed, so that
 * a table read back from the kernel tells only whether it logs.
 */
export const NFLOG_GROUP = 3781;
/** The log prefix of a dropped connection: the policy's key, or "unmatched". */
export const DROP_PREFIX = "egressd-drop ";

/** A set or map of the table: its declaration and its elements (key -> map value, or "" for sets). */
export interface NftSetSpec {
  name: string;
  family: Family;
  interval: boolean;
  /** Verdict map (value is "goto chain") or plain set. */
  map: boolean;
  elements: Map<string, string>;
}

/** A plan in the form the renderer and the differ work on. */
export interface NormalizedNat {
  /** Hash of everything but set elements: equal hashes mean an element patch suffices. */
  structureHash: string;
  markMask: number;
  policies: (NatPolicy & { key: string })[];
  classes: { id: number; family: Family }[];
  /** Every element-carrying set of the table, by name. */
  sets: Map<string, NftSetSpec>;
  /** Unmatched new connections to served destinations are dropped (the served sets exist). */
  unmatched: boolean;
  /** Drops are logged (only where something drops: a Deny policy or unmatched). */
  logDrops: boolean;
  /** The port range and allocation mode of the SNAT rules, when set. */
  snat?: SnatPorts;
}

/** Names of counters for one policy (see readNatCounters in nft.ts). */
export interface PolicyCounterNames {
  policy: string;
  egressIP: string;
  /** Packets and bytes of every original-direction packet of the policy's connections. */
  packets: string;
  /** Connections SNATed to the egress IP (first packet of each). */
  connections: string;
}

const SAFE_NAME = /^[A-Za-z0-9_]{1,40}$/;

/**
 * What a Deny policy has in place of an egress IP once normalised: it takes
 * part in the structure hash like an address, so a policy that turns from
 * SNAT to Deny (or back) is a changed policy whose chains are rewritten.
 */
export const DENY = "deny";

/** The nft-safe identifier egressd uses for a policy's chains and counters. */
export function policyKey(name: string): string {
  if (SAFE_NAME.test(name)) return name;
  return "h" + createHash("sha256").update(name).digest("hex").slice(0, 16);
}

export function policyCounterNames(p: NatPolicy): PolicyCounterNames {
  const key = policyKey(p.name);
  return { policy: p.name, egressIP: p.egressIP, packets: `pkts_${key}`, connections: `conns_${key}` };
}

/**
 * Hash of everything but set elements: mask, policies (key, family, egress IP,
 * mark) and classes (id, family). Independent of input order, so that a plan
 * and a table read back from the kernel (where only keys are known) agree.
 */
export function structureHash(
  mask: number,
  policies: readonly { key: string; family: Family; egressIP: string; mark: number }[],
  classes: readonly { id: number; family: Family }[],
  flags: { unmatched: boolean; logDrops: boolean; snat?: SnatPorts } = { unmatched: false, logDrops: false },
): string {
  const structure = {
    // Present only when set, so that the hash of a table without them is what it always was.
    ...(flags.unmatched || flags.logDrops ? { unmatched: flags.unmatched, logDrops: flags.logDrops } : {}),
    ...(flags.snat ? { snat: snatText(flags.snat) } : {}),
    v: 2,
    mask: mask >>> 0,
    policies: policies
      .map((p) => [p.key, p.family, p.egressIP, p.mark >>> 0] as const)
      .sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0)),
    classes: classes.map((c) => [c.id, c.family] as const).sort((a, b) => a[0] - b[0]),
  };
  return createHash("sha256").update(JSON.stringify(structure)).digest("hex").slice(0, 32);
}

const hex = (n: number) => "0x" + (n >>> 0).toString(16).padStart(8, "0");
const setType = (f: Family) => (f === 4 ? "ipv4_addr" : "ipv6_addr");
const ipKw = (f: Family) => (f === 4 ? "ip" : "ip6");
const hostSet = (id: number) => `c${id}_hosts`;
const netSet = (id: number) => `c${id}_nets`;
const dstMap = (id: number) => `c${id}_dst`;
const classChain = (id: number) => `class_${id}`;
const markChain = (key: string) => `mark_${key}`;
const snatChain = (key: string) => `snat_${key}`;

/**
 * Runs of at most this many addresses are written to their class's hash set,
 * an element per address; longer ones to its interval set, as one range.
 *
 * Why: the classifier merges neighbouring sources of a class into one run, and
 * pod addresses are handed out in order on a node, so pods' addresses form
 * runs. But an interval set costs the kernel time in proportion to its size
 * at every change (6.18 here: 12 ms to add or delete one range in a set of
 * 100k ranges, against 0.08 ms for one address in a hash set of 100k,
 * measured in one run; docs/dataplane.md). With short runs as addresses, a
 * pod that moves is a hash-set element out and one in, and the interval sets
 * hold only long runs and the file's wide prefixes, so they stay small. 16
 * bounds what a prefix of the file costs as addresses (a /28).
 */
export const HOST_RUN_MAX = 16;

/** The set that holds a classifier source (its class's hosts, or nets), and its element keys there. */
function sourceElements(s: NatSource): { nets: boolean; keys: string[]; family: Family } {
  const iv = intervalKey(s.interval);
  if (iv.single) return { nets: false, keys: [iv.key], family: iv.family };
  const r = parseRange(s.interval);
  if (r.hi - r.lo >= BigInt(HOST_RUN_MAX)) return { nets: true, keys: [iv.key], family: iv.family };
  const keys: string[] = [];
  for (let a = r.lo; a <= r.hi; a++) keys.push(formatAddress(r.family, a));
  return { nets: false, keys, family: iv.family };
}

/** Validates a plan and brings it into canonical form. Throws on an inconsistent plan. */
export function normalizeNat(plan: NatPlan): NormalizedNat {
  const mask = plan.markMask >>> 0;
  if (mask === 0) throw new Error("nat plan: markMask is 0");
  const policies = [...plan.policies]
    .sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))
    .map((p) => ({
      ...p,
      egressIP: p.deny === true ? DENY : canonicalAddress(p.egressIP),
      mark: p.mark >>> 0,
      key: policyKey(p.name),
    }));
  const byName = new Map<string, (typeof policies)[number]>();
  const keys = new Set<string>();
  const marks = new Set<number>();
  for (const p of policies) {
    if (byName.has(p.name)) throw new Error(`nat plan: duplicate policy ${p.name}`);
    if (keys.has(p.key))
      throw new Error(`nat plan: policy name ${p.name} collides with another after sanitising`);
    if (p.mark === 0 || (p.mark & ~mask) !== 0)
      throw new Error(`nat plan: policy ${p.name}: mark ${hex(p.mark)} is 0 or outside mask ${hex(mask)}`);
    if (marks.has(p.mark)) throw new Error(`nat plan: policy ${p.name}: mark ${hex(p.mark)} used twice`);
    if (p.egressIP !== DENY && familyOf(p.egressIP) !== p.family)
      throw new Error(`nat plan: policy ${p.name}: egress IP ${p.egressIP} is not IPv${p.family}`);
    byName.set(p.name, p);
    keys.add(p.key);
    marks.add(p.mark);
  }
  const sets = new Map<string, NftSetSpec>();
  /** Served destination intervals per family (with unmatched: Deny). */
  const served: Record<Family, [bigint, bigint][]> = { 4: [], 6: [] };
  const classes = [...plan.classes].sort((a, b) => a.id - b.id);
  const classFamily = new Map<number, Family>();
  const classSets = new Map<number, { hosts: Map<string, string>; nets: Map<string, string> }>();
  for (const c of classes) {
    if (!Number.isInteger(c.id) || c.id < 0) throw new Error(`nat plan: bad class id ${c.id}`);
    if (classFamily.has(c.id)) throw new Error(`nat plan: duplicate class ${c.id}`);
    classFamily.set(c.id, c.family);
    const hosts: NftSetSpec = {
      name: hostSet(c.id),
      family: c.family,
      interval: false,
      map: false,
      elements: new Map(),
    };
    const nets: NftSetSpec = {
      name: netSet(c.id),
      family: c.family,
      interval: true,
      map: false,
      elements: new Map(),
    };
    const dst: NftSetSpec = {
      name: dstMap(c.id),
      family: c.family,
      interval: true,
      map: true,
      elements: new Map(),
    };
    for (const d of c.destinations) {
      const iv = parseRange(d.interval);
      if (iv.family !== c.family)
        throw new Error(`nat plan: class ${c.id}: destination ${d.interval} is not IPv${c.family}`);
      if (d.policy === null) {
        // Exceptions (and Direct): left alone. With unmatched: Deny, decided with an explicit
        // accept, so that they do not fall through to the unmatched rule.
        if (plan.unmatched === "Deny") {
          const key = formatInterval(iv.family, iv.lo, iv.hi);
          dst.elements.set(key, "accept");
        }
        continue;
      }
      const p = byName.get(d.policy);
      if (!p) throw new Error(`nat plan: class ${c.id}: unknown policy ${d.policy}`);
      if (p.family !== c.family)
        throw new Error(`nat plan: class ${c.id}: policy ${p.name} is IPv${p.family}`);
      if (plan.unmatched === "Deny" && p.egressIP !== DENY) served[iv.family].push([iv.lo, iv.hi]);
      const key = formatInterval(iv.family, iv.lo, iv.hi);
      if (dst.elements.has(key)) throw new Error(`nat plan: class ${c.id}: destination ${key} twice`);
      dst.elements.set(key, `goto ${markChain(p.key)}`);
    }
    for (const s of [hosts, nets, dst]) sets.set(s.name, s);
    classSets.set(c.id, { hosts: hosts.elements, nets: nets.elements });
  }
  // 100k sources at scale, one address each for the most part: a canonical IPv4 address is its
  // own key, and each class's sets are found by its id (classSets), not by a name made per source.
  for (const s of plan.sources) {
    const fam = classFamily.get(s.classId);
    if (fam === undefined) throw new Error(`nat plan: source ${s.interval}: unknown class ${s.classId}`);
    const own = classSets.get(s.classId)!;
    if (fam === 4 && s.family === 4 && isCanonicalIPv4(s.interval)) {
      own.hosts.set(s.interval, "");
      continue;
    }
    const el = sourceElements(s);
    if (el.family !== fam || s.family !== fam)
      throw new Error(`nat plan: source ${s.interval}: family does not match class ${s.classId}`);
    const set = el.nets ? own.nets : own.hosts;
    for (const k of el.keys) set.set(k, "");
  }
  const unmatched = plan.unmatched === "Deny";
  if (unmatched)
    for (const family of [4, 6] as const) {
      const elements = new Map<string, string>();
      for (const [lo, hi] of mergeIntervals(served[family])) elements.set(formatInterval(family, lo, hi), "");
      sets.set(SERVED_SETS[family], {
        name: SERVED_SETS[family],
        family,
        interval: true,
        map: false,
        elements,
      });
    }
  if (plan.snat?.range) {
    const [lo, hi] = plan.snat.range;
    if (!(Number.isInteger(lo) && Number.isInteger(hi) && lo >= 1 && hi <= 65535 && lo <= hi))
      throw new Error(`nat plan: SNAT port range ${lo}-${hi} is not a port range`);
  }
  const flags = {
    unmatched,
    logDrops: plan.logDrops === true && (unmatched || policies.some((p) => p.egressIP === DENY)),
    ...(plan.snat && (plan.snat.range || plan.snat.mode) ? { snat: plan.snat } : {}),
  };
  return {
    structureHash: structureHash(mask, policies, classes, flags),
    markMask: mask,
    policies,
    classes: classes.map((c) => ({ id: c.id, family: c.family })),
    sets,
    ...flags,
  };
}

/** Sorted, with overlapping and adjacent intervals joined. */
function mergeIntervals(list: [bigint, bigint][]): [bigint, bigint][] {
  const sorted = [...list].sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
  const out: [bigint, bigint][] = [];
  for (const [lo, hi] of sorted) {
    const last = out[out.length - 1];
    if (last && lo <= last[1] + 1n) last[1] = hi > last[1] ? hi : last[1];
    else out.push([lo, hi]);
  }
  return out;
}

/**
 * The element patches that take the sets of `current` (normalised from a
 * plan) to those of a plan whose sources differ by `remove` and `add` and by
 * nothing else. Undefined when the delta does not fit `current` (a set it
 * names is missing, an element to remove is absent or one to add present):
 * then the plan must be normalised and diffed whole.
 */
export function sourcePatches(
  current: NormalizedNat,
  remove: readonly NatSource[],
  add: readonly NatSource[],
): SetPatch[] | undefined {
  // Per set, each element's net change: a run that is split or grown is
  // removed and added again, and only the addresses that change are written.
  const changes = new Map<string, Map<string, number>>();
  const note = (s: NatSource, by: number): boolean => {
    const { nets, keys, family } = sourceElements(s);
    if (family !== s.family) return false;
    const set = nets ? netSet(s.classId) : hostSet(s.classId);
    const spec = current.sets.get(set);
    if (spec === undefined || spec.family !== s.family) return false;
    let m = changes.get(set);
    if (m === undefined) changes.set(set, (m = new Map()));
    for (const k of keys) m.set(k, (m.get(k) ?? 0) + by);
    return true;
  };
  for (const s of remove) if (!note(s, -1)) return undefined;
  for (const s of add) if (!note(s, 1)) return undefined;
  const patches: SetPatch[] = [];
  for (const [name, m] of changes) {
    const spec = current.sets.get(name)!;
    const patch: SetPatch = {
      set: name,
      family: spec.family,
      map: false,
      interval: spec.interval,
      remove: [],
      add: [],
    };
    for (const [k, n] of m) {
      const has = spec.elements.has(k);
      // removed (and perhaps added back): it must be there; added: it must not
      if (n === -1 && has) patch.remove.push([k, ""]);
      else if (n === 1 && !has) patch.add.push([k, ""]);
      else if (n !== 0 || !has) return undefined;
    }
    patches.push(patch);
  }
  return patches;
}

/** Applies element patches to a normalised table in place (after the kernel took them). */
export function patchNormalized(n: NormalizedNat, patches: readonly SetPatch[]): void {
  for (const p of patches) {
    const spec = n.sets.get(p.set)!;
    for (const [k] of p.remove) spec.elements.delete(k);
    for (const [k, v] of p.add) spec.elements.set(k, v);
  }
}

type NormalPolicy = NormalizedNat["policies"][number];
type NormalClass = NormalizedNat["classes"][number];

function elementText(s: NftSetSpec, keys: Iterable<string>, withValues: boolean): string {
  const out: string[] = [];
  for (const k of keys) out.push(withValues && s.map ? `${k} : ${s.elements.get(k)}` : k);
  return out.join(", ");
}

/** The body of a set or map declaration, one item per entry ("type ...", "flags ...", "elements = ..."). */
function setBody(s: NftSetSpec): string[] {
  const type = s.map ? `${setType(s.family)} : verdict` : setType(s.family);
  const body = [`type ${type}`];
  if (s.interval) body.push("flags interval");
  if (s.elements.size > 0) body.push(`elements = { ${elementText(s, s.elements.keys(), true)} }`);
  return body;
}

function setDeclaration(s: NftSetSpec): string {
  const kind = s.map ? "map" : "set";
  return [`  ${kind} ${s.name} {`, ...setBody(s).map((l) => `    ${l}`), "  }"].join("\n");
}

// The pieces of the table, shared by the full rendering and the structural patch.

function counterComments(p: NormalPolicy): [name: string, comment: string][] {
  const c = policyCounterNames(p);
  if (p.egressIP === DENY)
    return [
      [c.packets, `packets of policy ${p.key} dropped (deny)`],
      [c.connections, `connections of policy ${p.key}: none, it denies`],
    ];
  return [
    [c.packets, `packets of policy ${p.key} (${p.egressIP})`],
    [c.connections, `connections SNATed by policy ${p.key} to ${p.egressIP}`],
  ];
}

const logRule = (what: string) => `log group ${NFLOG_GROUP} prefix "${DROP_PREFIX}${what}"`;

function markRules(p: NormalPolicy, mask: number, logDrops: boolean): string[] {
  if (p.egressIP === DENY)
    return [`counter name "${policyCounterNames(p).packets}"`, ...(logDrops ? [logRule(p.key)] : []), "drop"];
  const keep = hex(~mask >>> 0);
  return [
    `ct mark set ct mark and ${keep} or ${hex(p.mark)}`,
    `meta mark set meta mark and ${keep} or ${hex(p.mark)}`,
    `counter name "${policyCounterNames(p).packets}"`,
    "accept",
  ];
}

/** "1024-65535 fully-random", as the structure hash and the reader of a live table see it. */
export const snatText = (s: SnatPorts) => `${s.range ? s.range.join("-") : ""} ${s.mode ?? ""}`.trim();

/** Protocols with ports: only these take a port range (nft refuses a port mapping without the match). */
const PORTED = "meta l4proto { tcp, udp, sctp }";

function snatRules(p: NormalPolicy, snat?: SnatPorts): string[] {
  // A Deny policy's first packet is dropped before conntrack confirms the connection: no
  // connection carries its mark, and this chain is never reached. It exists to keep one shape.
  const counter = `counter name "${policyCounterNames(p).connections}"`;
  if (p.egressIP === DENY) return [counter, "drop"];
  const mode = snat?.mode ? ` ${snat.mode}` : "";
  const to = `snat ${ipKw(p.family)} to`;
  if (!snat?.range) return [counter, `${to} ${p.egressIP}${mode}`];
  const addr = p.family === 6 ? `[${p.egressIP}]` : p.egressIP;
  return [counter, `${PORTED} ${to} ${addr}:${snat.range.join("-")}${mode}`, `${to} ${p.egressIP}${mode}`];
}

/** Traffic for the gateway itself (BGP, probes' answers) is never dropped here: only forwarded traffic. */
const unmatchedRule = (f: Family, logDrops: boolean) =>
  [
    `ct state new fib daddr type != local ${ipKw(f)} daddr @${SERVED_SETS[f]}`,
    `counter name "${UNMATCHED_COUNTERS[f]}"`,
    ...(logDrops ? [logRule("unmatched")] : []),
    "drop",
  ].join(" ");

const classRule = (c: NormalClass) => `${ipKw(c.family)} daddr vmap @${dstMap(c.id)}`;

function classifyRules(classes: readonly NormalClass[]): string[] {
  return classes.flatMap((c) => [
    `${ipKw(c.family)} saddr @${hostSet(c.id)} goto ${classChain(c.id)}`,
    `${ipKw(c.family)} saddr @${netSet(c.id)} goto ${classChain(c.id)}`,
  ]);
}

const restoreElement = (p: NormalPolicy) => `${hex(p.mark)} : goto ${markChain(p.key)}`;
const snatElement = (p: NormalPolicy) => `${hex(p.mark)} : goto ${snatChain(p.key)}`;
const structureComment = (n: NormalizedNat) => `comment "${COMMENT_PREFIX}${n.structureHash}"`;

/** The table definition (without the replace preamble). */
function renderTable(n: NormalizedNat): string {
  const mask = n.markMask;
  const L: string[] = [];
  const chain = (name: string, rules: string[]) =>
    L.push(`  chain ${name} {`, ...rules.map((r) => `    ${r}`), "  }");
  L.push(`table ${TABLE} {`);
  for (const p of n.policies)
    for (const [name, comment] of counterComments(p))
      L.push(`  counter ${name} {`, `    comment "${comment}"`, "  }");
  if (n.unmatched)
    for (const f of [4, 6] as const)
      L.push(
        `  counter ${UNMATCHED_COUNTERS[f]} {`,
        `    comment "new IPv${f} connections to a served destination that no policy allows, dropped"`,
        "  }",
      );
  for (const p of n.policies) {
    chain(markChain(p.key), markRules(p, mask, n.logDrops));
    chain(snatChain(p.key), snatRules(p, n.snat));
  }
  for (const s of n.sets.values()) L.push(setDeclaration(s));
  for (const c of n.classes) chain(classChain(c.id), [classRule(c)]);
  chain("classify", classifyRules(n.classes));
  // The structure hash lives in a set comment: nft 1.0.6 leaves table comments out of its JSON.
  L.push(`  set ${STRUCTURE_SET} {`, "    type mark", `    ${structureComment(n)}`, "  }");
  const markEls = n.policies.map(restoreElement).join(", ");
  const snatEls = n.policies.map(snatElement).join(", ");
  L.push("  map restore_marks {", "    type mark : verdict");
  if (markEls) L.push(`    elements = { ${markEls} }`);
  L.push("  }");
  L.push("  map snat_marks {", "    type mark : verdict");
  if (snatEls) L.push(`    elements = { ${snatEls} }`);
  L.push("  }");
  L.push("  chain prerouting {");
  L.push("    type filter hook prerouting priority mangle; policy accept;");
  // With unmatched: Deny, classify returns when no policy decided, and the unmatched rules follow.
  L.push(`    ct state new ${n.unmatched ? "jump" : "goto"} classify`);
  if (n.unmatched) for (const f of [4, 6] as const) L.push(`    ${unmatchedRule(f, n.logDrops)}`);
  L.push(`    ct direction original ct mark and ${hex(mask)} vmap @restore_marks`);
  L.push("  }");
  L.push("  chain postrouting {");
  L.push("    type nat hook postrouting priority srcnat; policy accept;");
  L.push(`    ct mark and ${hex(mask)} vmap @snat_marks`);
  L.push("  }");
  L.push("}");
  return L.join("\n") + "\n";
}

/**
 * One nft script that atomically replaces egressd's table with the plan's:
 * create-if-missing, delete, define. `nft -f` runs a file as one transaction,
 * so packets see either the old table or the new one, never a mix or nothing.
 */
export function renderNftRuleset(plan: NatPlan | NormalizedNat): string {
  const n =
    "sets" in plan && plan.sets instanceof Map ? (plan as NormalizedNat) : normalizeNat(plan as NatPlan);
  return `table ${TABLE} {}\ndelete table ${TABLE}\n${renderTable(n)}`;
}

/** Script that removes egressd's table if it exists (one transaction). */
export function renderNftTeardown(): string {
  return `table ${TABLE} {}\ndelete table ${TABLE}\n`;
}

/** Element-level changes of one set. */
export interface SetPatch {
  set: string;
  family: Family;
  map: boolean;
  interval: boolean;
  /** Keys to delete (with their old values for maps). */
  remove: [string, string][];
  /** Keys to add (with their values for maps). */
  add: [string, string][];
}

/** What a structural patch changes, by policy key and class id. */
export interface StructureChange {
  policies: {
    added: string[];
    removed: string[];
    /** Same key, other egress IP, family or mark: the policy's chains are rewritten. */
    changed: string[];
  };
  classes: { added: number[]; removed: number[] };
}

export type NatDiff =
  | { kind: "none" }
  | { kind: "patch"; patches: SetPatch[]; added: number; removed: number; script: string }
  | {
      kind: "patch-structure";
      /** Element changes of the sets both tables have (sets of added classes are created with their elements). */
      patches: SetPatch[];
      /** Elements added and removed, including those of created and deleted class sets. */
      added: number;
      removed: number;
      structure: StructureChange;
      script: string;
    }
  | { kind: "replace"; reason: string; script: string };

/** Element differences of one set (undefined when the two declarations differ). */
function diffSetElements(have: NftSetSpec, want: NftSetSpec): SetPatch | undefined {
  if (have.map !== want.map || have.interval !== want.interval || have.family !== want.family)
    return undefined;
  const remove: [string, string][] = [];
  const add: [string, string][] = [];
  for (const [k, v] of have.elements) {
    const w = want.elements.get(k);
    if (w === undefined || w !== v) remove.push([k, v]);
  }
  for (const [k, v] of want.elements) {
    const h = have.elements.get(k);
    if (h === undefined || h !== v) add.push([k, v]);
  }
  return { set: want.name, family: want.family, map: want.map, interval: want.interval, remove, add };
}

/** Element differences between two element maps with the same set names. */
export function diffSets(
  current: Map<string, NftSetSpec>,
  desired: Map<string, NftSetSpec>,
): SetPatch[] | undefined {
  if (current.size !== desired.size) return undefined;
  const patches: SetPatch[] = [];
  for (const [name, want] of desired) {
    const have = current.get(name);
    if (!have) return undefined;
    const p = diffSetElements(have, want);
    if (!p) return undefined;
    if (p.remove.length || p.add.length) patches.push(p);
  }
  return patches;
}

const fmtElements = (p: SetPatch, els: [string, string][]) =>
  els.map(([k, v]) => (p.map ? `${k} : ${v}` : k)).join(", ");
const deleteLines = (patches: SetPatch[]) =>
  patches
    .filter((p) => p.remove.length)
    .map((p) => `delete element ${TABLE} ${p.set} { ${fmtElements(p, p.remove)} }`);
const addLines = (patches: SetPatch[]) =>
  patches
    .filter((p) => p.add.length)
    .map((p) => `add element ${TABLE} ${p.set} { ${fmtElements(p, p.add)} }`);

/** The nft script for a list of set patches: all deletions, then all additions, one transaction. */
export function renderPatch(patches: SetPatch[]): string {
  const L = [...deleteLines(patches), ...addLines(patches)];
  return L.length ? L.join("\n") + "\n" : "";
}

function patchResult(patches: SetPatch[]): NatDiff {
  if (patches.length === 0) return { kind: "none" };
  let added = 0;
  let removed = 0;
  for (const p of patches) {
    added += p.add.length;
    removed += p.remove.length;
  }
  return { kind: "patch", patches, added, removed, script: renderPatch(patches) };
}

const classSetNames = (id: number) => [hostSet(id), netSet(id), dstMap(id)];

/**
 * The structural patch from `cur` to `des` (same mark mask) as one nft script.
 * Only the objects of added, removed and changed policies and classes are
 * created, deleted or rewritten; every other chain, counter, set and element
 * stays as it is (so do the counters' values). The order inside the script
 * respects nftables' references: rules and map elements that point at a
 * chain, set or counter go before it, and new objects exist before anything
 * points at them.
 */
function structuralPatch(cur: NormalizedNat, des: NormalizedNat): NatDiff {
  const mask = des.markMask;
  const curP = new Map(cur.policies.map((p) => [p.key, p]));
  const desP = new Map(des.policies.map((p) => [p.key, p]));
  const removedP = cur.policies.filter((p) => !desP.has(p.key));
  const addedP = des.policies.filter((p) => !curP.has(p.key));
  const changedP = des.policies.filter((p) => {
    const o = curP.get(p.key);
    return o !== undefined && (o.egressIP !== p.egressIP || o.family !== p.family || o.mark !== p.mark);
  });
  const curC = new Map(cur.classes.map((c) => [c.id, c]));
  const desC = new Map(des.classes.map((c) => [c.id, c]));
  // a class whose family changed is deleted and created again (its sets have another type)
  const removedC = cur.classes.filter((c) => desC.get(c.id)?.family !== c.family);
  const addedC = des.classes.filter((c) => curC.get(c.id)?.family !== c.family);
  const classesChanged = removedC.length > 0 || addedC.length > 0;

  // element patches of the sets that stay
  const gone = new Set(removedC.flatMap((c) => classSetNames(c.id)));
  const patches: SetPatch[] = [];
  let added = 0;
  let removed = 0;
  for (const [name, want] of des.sets) {
    const have = cur.sets.get(name);
    if (!have || gone.has(name)) {
      added += want.elements.size;
      continue;
    }
    const p = diffSetElements(have, want);
    if (!p) return replace(des, `set ${name} changed its declaration`);
    if (p.remove.length || p.add.length) patches.push(p);
    added += p.add.length;
    removed += p.remove.length;
  }
  for (const [name, have] of cur.sets)
    if (!des.sets.has(name) || gone.has(name)) removed += have.elements.size;

  // the mark maps: one element per policy
  const markPatch = (element: (p: NormalPolicy) => string) => {
    const have = new Set(cur.policies.map(element));
    const want = new Set(des.policies.map(element));
    return { remove: [...have].filter((e) => !want.has(e)), add: [...want].filter((e) => !have.has(e)) };
  };
  const restore = markPatch(restoreElement);
  const snat = markPatch(snatElement);

  const T = TABLE;
  const L: string[] = [];
  const addRules = (chain: string, rules: string[]) => {
    for (const r of rules) L.push(`add rule ${T} ${chain} ${r}`);
  };
  const addCounters = (p: NormalPolicy) => {
    for (const [name, comment] of counterComments(p))
      L.push(`add counter ${T} ${name} { comment "${comment}" }`);
  };
  const deleteCounters = (p: NormalPolicy) => {
    for (const [name] of counterComments(p)) L.push(`delete counter ${T} ${name}`);
  };

  // 1. rules that point at class sets and chains: classify is rewritten whole (2 rules per class)
  if (classesChanged) L.push(`flush chain ${T} classify`);
  // 2. element deletions, so no element points at a chain deleted below
  L.push(...deleteLines(patches));
  if (restore.remove.length) L.push(`delete element ${T} restore_marks { ${restore.remove.join(", ")} }`);
  if (snat.remove.length) L.push(`delete element ${T} snat_marks { ${snat.remove.join(", ")} }`);
  // 3. removed classes: their chain (which points at their map), then their sets
  for (const c of removedC) {
    L.push(`flush chain ${T} ${classChain(c.id)}`, `delete chain ${T} ${classChain(c.id)}`);
    L.push(
      `delete set ${T} ${hostSet(c.id)}`,
      `delete set ${T} ${netSet(c.id)}`,
      `delete map ${T} ${dstMap(c.id)}`,
    );
  }
  // 4. removed policies: chains (after every element and rule that points at them), then counters
  for (const p of removedP) {
    for (const chain of [markChain(p.key), snatChain(p.key)])
      L.push(`flush chain ${T} ${chain}`, `delete chain ${T} ${chain}`);
    deleteCounters(p);
  }
  // 5. changed policies: empty the chains whose rules change; counters name the egress IP,
  //    so a new egress IP gets new counters (per policy and egress IP, like the metrics)
  const rewrite = changedP.map((p) => {
    const o = curP.get(p.key)!;
    const newIP = o.egressIP !== p.egressIP || o.family !== p.family;
    const mark = newIP || o.mark !== p.mark;
    if (mark) L.push(`flush chain ${T} ${markChain(p.key)}`);
    if (newIP) {
      L.push(`flush chain ${T} ${snatChain(p.key)}`);
      deleteCounters(o);
      addCounters(p);
    }
    return { p, mark, snat: newIP };
  });
  // 6. added policies: counters, chains, rules
  for (const p of addedP) {
    addCounters(p);
    L.push(`add chain ${T} ${markChain(p.key)}`, `add chain ${T} ${snatChain(p.key)}`);
    addRules(markChain(p.key), markRules(p, mask, des.logDrops));
    addRules(snatChain(p.key), snatRules(p, des.snat));
  }
  for (const r of rewrite) {
    if (r.mark) addRules(markChain(r.p.key), markRules(r.p, mask, des.logDrops));
    if (r.snat) addRules(snatChain(r.p.key), snatRules(r.p, des.snat));
  }
  // 7. added classes: sets with their elements (the map's verdicts point at policy chains that exist now), chain
  for (const c of addedC) {
    for (const name of classSetNames(c.id)) {
      const s = des.sets.get(name)!;
      L.push(`add ${s.map ? "map" : "set"} ${T} ${name} { ${setBody(s).join("; ")}; }`);
    }
    L.push(`add chain ${T} ${classChain(c.id)}`);
    addRules(classChain(c.id), [classRule(c)]);
  }
  // 8. element additions
  L.push(...addLines(patches));
  if (restore.add.length) L.push(`add element ${T} restore_marks { ${restore.add.join(", ")} }`);
  if (snat.add.length) L.push(`add element ${T} snat_marks { ${snat.add.join(", ")} }`);
  // 9. classify again, in class order, as a full rendering has it
  if (classesChanged) addRules("classify", classifyRules(des.classes));
  // 10. the new structure hash
  L.push(
    `delete set ${T} ${STRUCTURE_SET}`,
    `add set ${T} ${STRUCTURE_SET} { type mark; ${structureComment(des)}; }`,
  );

  const structure: StructureChange = {
    policies: {
      added: addedP.map((p) => p.key),
      removed: removedP.map((p) => p.key),
      changed: changedP.map((p) => p.key),
    },
    classes: { added: addedC.map((c) => c.id), removed: removedC.map((c) => c.id) },
  };
  return { kind: "patch-structure", patches, added, removed, structure, script: L.join("\n") + "\n" };
}

function replace(desired: NormalizedNat, reason: string): NatDiff {
  return { kind: "replace", reason, script: renderNftRuleset(desired) };
}

/**
 * The smallest change from `current` to `desired`, one transaction in every case:
 * - nothing;
 * - an element patch (same structure hash: same mask, policies' keys, families,
 *   egress IPs and marks, same classes);
 * - a structural patch (same mark mask): only the added, removed and changed
 *   policies' and classes' objects are touched;
 * - a full atomic replacement when there is no current table or the mark mask changed.
 */
export function diffNormalized(current: NormalizedNat | undefined, desired: NormalizedNat): NatDiff {
  if (!current) return replace(desired, "no current table");
  if (current.markMask !== desired.markMask) return replace(desired, "mark mask changed");
  if (current.unmatched !== desired.unmatched || current.logDrops !== desired.logDrops)
    return replace(desired, "unmatched or drop logging changed");
  if (snatText(current.snat ?? {}) !== snatText(desired.snat ?? {}))
    return replace(desired, "SNAT port range or mode changed");
  if (current.structureHash !== desired.structureHash) return structuralPatch(current, desired);
  const patches = diffSets(current.sets, desired.sets);
  if (!patches) return replace(desired, "sets differ from the structure");
  return patchResult(patches);
}

/** diffNormalized on plans. */
export function diffNat(old: NatPlan | undefined, next: NatPlan): NatDiff {
  return diffNormalized(old ? normalizeNat(old) : undefined, normalizeNat(next));
}
