// Pure rendering of egressd's nftables table from a NatPlan, and the diff
// between two plans (or between the live table and a plan) as the smallest nft
// script: element updates when the table's structure is unchanged, otherwise
// one atomic replacement of the whole table. No I/O here; see docs/dataplane.md.
import { createHash } from "node:crypto";
import { OWNER, type Family, type NatPlan, type NatPolicy } from "../daemon/state.js";
import { canonicalAddress, familyOf, formatInterval, intervalKey, parseInterval } from "./ip.js";

export const TABLE = `inet ${OWNER.nftTable}`;
/** Prefix of the table comment that carries the structure hash. */
export const COMMENT_PREFIX = "egressd structure ";

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

/** The nft-safe identifier egressd uses for a policy's chains and counters. */
export function policyKey(name: string): string {
  if (SAFE_NAME.test(name)) return name;
  return "h" + createHash("sha256").update(name).digest("hex").slice(0, 16);
}

export function policyCounterNames(p: NatPolicy): PolicyCounterNames {
  const key = policyKey(p.name);
  return { policy: p.name, egressIP: p.egressIP, packets: `pkts_${key}`, connections: `conns_${key}` };
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

/** Validates a plan and brings it into canonical form. Throws on an inconsistent plan. */
export function normalizeNat(plan: NatPlan): NormalizedNat {
  const mask = plan.markMask >>> 0;
  if (mask === 0) throw new Error("nat plan: markMask is 0");
  const policies = [...plan.policies]
    .sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))
    .map((p) => ({
      ...p,
      egressIP: canonicalAddress(p.egressIP),
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
    if (familyOf(p.egressIP) !== p.family)
      throw new Error(`nat plan: policy ${p.name}: egress IP ${p.egressIP} is not IPv${p.family}`);
    byName.set(p.name, p);
    keys.add(p.key);
    marks.add(p.mark);
  }
  const sets = new Map<string, NftSetSpec>();
  const classes = [...plan.classes].sort((a, b) => a.id - b.id);
  const classFamily = new Map<number, Family>();
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
      const iv = parseInterval(d.interval);
      if (iv.family !== c.family)
        throw new Error(`nat plan: class ${c.id}: destination ${d.interval} is not IPv${c.family}`);
      if (d.policy === null) continue; // exceptions: no element, so the packet is left alone
      const p = byName.get(d.policy);
      if (!p) throw new Error(`nat plan: class ${c.id}: unknown policy ${d.policy}`);
      if (p.family !== c.family)
        throw new Error(`nat plan: class ${c.id}: policy ${p.name} is IPv${p.family}`);
      const key = formatInterval(iv);
      if (dst.elements.has(key)) throw new Error(`nat plan: class ${c.id}: destination ${key} twice`);
      dst.elements.set(key, `goto ${markChain(p.key)}`);
    }
    for (const s of [hosts, nets, dst]) sets.set(s.name, s);
  }
  for (const s of plan.sources) {
    const fam = classFamily.get(s.classId);
    if (fam === undefined) throw new Error(`nat plan: source ${s.interval}: unknown class ${s.classId}`);
    const iv = intervalKey(s.interval);
    if (iv.family !== fam || s.family !== fam)
      throw new Error(`nat plan: source ${s.interval}: family does not match class ${s.classId}`);
    const target = sets.get(iv.single ? hostSet(s.classId) : netSet(s.classId))!;
    target.elements.set(iv.key, "");
  }
  const structure = {
    v: 1,
    mask,
    policies: policies.map((p) => [p.key, p.family, p.egressIP, p.mark]),
    classes: classes.map((c) => [c.id, c.family]),
  };
  const structureHash = createHash("sha256").update(JSON.stringify(structure)).digest("hex").slice(0, 32);
  return {
    structureHash,
    markMask: mask,
    policies,
    classes: classes.map((c) => ({ id: c.id, family: c.family })),
    sets,
  };
}

function elementText(s: NftSetSpec, keys: Iterable<string>, withValues: boolean): string {
  const out: string[] = [];
  for (const k of keys) out.push(withValues && s.map ? `${k} : ${s.elements.get(k)}` : k);
  return out.join(", ");
}

function setDeclaration(s: NftSetSpec): string {
  const kind = s.map ? "map" : "set";
  const type = s.map ? `${setType(s.family)} : verdict` : setType(s.family);
  const lines = [`  ${kind} ${s.name} {`, `    type ${type}`];
  if (s.interval) lines.push("    flags interval");
  if (s.elements.size > 0) lines.push(`    elements = { ${elementText(s, s.elements.keys(), true)} }`);
  lines.push("  }");
  return lines.join("\n");
}

/** The table definition (without the replace preamble). */
function renderTable(n: NormalizedNat): string {
  const mask = n.markMask;
  const keep = hex(~mask >>> 0);
  const L: string[] = [];
  L.push(`table ${TABLE} {`);
  L.push(`  comment "${COMMENT_PREFIX}${n.structureHash}"`);
  for (const p of n.policies) {
    const c = policyCounterNames(p);
    L.push(`  counter ${c.packets} {`, `    comment "packets of policy ${p.key} (${p.egressIP})"`, "  }");
    L.push(
      `  counter ${c.connections} {`,
      `    comment "connections SNATed by policy ${p.key} to ${p.egressIP}"`,
      "  }",
    );
  }
  for (const p of n.policies) {
    const c = policyCounterNames(p);
    L.push(`  chain ${markChain(p.key)} {`);
    L.push(`    ct mark set ct mark and ${keep} or ${hex(p.mark)}`);
    L.push(`    meta mark set meta mark and ${keep} or ${hex(p.mark)}`);
    L.push(`    counter name "${c.packets}"`);
    L.push("    accept", "  }");
    L.push(`  chain ${snatChain(p.key)} {`);
    L.push(`    counter name "${c.connections}"`);
    L.push(`    snat ${ipKw(p.family)} to ${p.egressIP}`, "  }");
  }
  for (const s of n.sets.values()) L.push(setDeclaration(s));
  for (const c of n.classes) {
    L.push(`  chain ${classChain(c.id)} {`, `    ${ipKw(c.family)} daddr vmap @${dstMap(c.id)}`, "  }");
  }
  L.push("  chain classify {");
  for (const c of n.classes) {
    L.push(`    ${ipKw(c.family)} saddr @${hostSet(c.id)} goto ${classChain(c.id)}`);
    L.push(`    ${ipKw(c.family)} saddr @${netSet(c.id)} goto ${classChain(c.id)}`);
  }
  L.push("  }");
  const markEls = n.policies.map((p) => `${hex(p.mark)} : goto ${markChain(p.key)}`).join(", ");
  const snatEls = n.policies.map((p) => `${hex(p.mark)} : goto ${snatChain(p.key)}`).join(", ");
  // nft 1.0.6 leaves table comments out of its JSON; set comments are in it.
  L.push(
    "  map restore_marks {",
    "    type mark : verdict",
    `    comment "${COMMENT_PREFIX}${n.structureHash}"`,
  );
  if (markEls) L.push(`    elements = { ${markEls} }`);
  L.push("  }");
  L.push("  map snat_marks {", "    type mark : verdict");
  if (snatEls) L.push(`    elements = { ${snatEls} }`);
  L.push("  }");
  L.push("  chain prerouting {");
  L.push("    type filter hook prerouting priority mangle; policy accept;");
  L.push("    ct state new goto classify");
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

export type NatDiff =
  | { kind: "none" }
  | { kind: "patch"; patches: SetPatch[]; added: number; removed: number; script: string }
  | { kind: "replace"; script: string };

/** Element differences between two element maps with the same set names. */
export function diffSets(
  current: Map<string, NftSetSpec>,
  desired: Map<string, NftSetSpec>,
): SetPatch[] | undefined {
  if (current.size !== desired.size) return undefined;
  const patches: SetPatch[] = [];
  for (const [name, want] of desired) {
    const have = current.get(name);
    if (!have || have.map !== want.map || have.interval !== want.interval || have.family !== want.family)
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
    if (remove.length || add.length)
      patches.push({ set: name, family: want.family, map: want.map, interval: want.interval, remove, add });
  }
  return patches;
}

/** The nft script for a list of set patches: all deletions, then all additions, one transaction. */
export function renderPatch(patches: SetPatch[]): string {
  const L: string[] = [];
  const fmt = (p: SetPatch, els: [string, string][]) =>
    els.map(([k, v]) => (p.map ? `${k} : ${v}` : k)).join(", ");
  for (const p of patches)
    if (p.remove.length) L.push(`delete element ${TABLE} ${p.set} { ${fmt(p, p.remove)} }`);
  for (const p of patches) if (p.add.length) L.push(`add element ${TABLE} ${p.set} { ${fmt(p, p.add)} }`);
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

/**
 * The smallest change from `current` to `desired`: nothing, an element patch
 * (same structure hash: same policies, marks, egress IPs and classes), or a
 * full atomic replacement.
 */
export function diffNormalized(current: NormalizedNat | undefined, desired: NormalizedNat): NatDiff {
  if (!current || current.structureHash !== desired.structureHash)
    return { kind: "replace", script: renderNftRuleset(desired) };
  const patches = diffSets(current.sets, desired.sets);
  if (!patches) return { kind: "replace", script: renderNftRuleset(desired) };
  return patchResult(patches);
}

/** diffNormalized on plans. */
export function diffNat(old: NatPlan | undefined, next: NatPlan): NatDiff {
  return diffNormalized(old ? normalizeNat(old) : undefined, normalizeNat(next));
}
