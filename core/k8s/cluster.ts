// The cluster as egressd follows it: namespaces, pods and policies in; the
// policies the data plane programs (file-shaped, with pod addresses as
// sources) out, and per event the source changes it makes. Pure: no I/O,
// no clock; the input (inputs/k8s) feeds it what the watches say.
//
// Rules (docs/kubernetes.md says why):
// - A pod is selected by an EgressPolicy of its namespace, or a
//   ClusterEgressPolicy whose namespaceSelector matches its namespace, when
//   the podSelector matches its labels. hostNetwork pods are never selected
//   (their address is the node's). A pod holds its addresses until it ends
//   (phase Succeeded or Failed) or is deleted; a terminating pod still
//   holds them.
// - Addresses are keyed by pod UID. An address claimed by several live pods
//   (a CNI reused it before the old pod's deletion reached us) belongs to the
//   pod created last: the network hands an address out again only after the
//   old sandbox gave it back. Same creation time: to none of them, until one
//   goes. So a new pod never leaves with the egress identity of the pod
//   that had its address before.
// - Two policies that select the same pod and disagree about a destination
//   prefix (see policy.ts collide) would be ambiguous to the planner; the
//   pod is governed by the one with precedence (Deny, then the older, then
//   the namespaced one) and the other's status counts the conflict.
// - A SNAT policy whose egress IP group this gateway does not have (or has
//   not in a family the policy serves) blocks its pods there: it is
//   programmed as Deny, never left to send them out with their own address.
// - A ClusterEgressPolicy named like a file policy is refused (the file's
//   names and the cluster's share one space).
import type { EgressIPGroupConfig, PolicyAction, PolicyConfig } from "../config/schema.js";
import { groupAddress, groupsByName } from "../config/groups.js";
import type { Family } from "../state.js";
import { compileSelector, type CompiledSelector, type Labels } from "./selector.js";
import {
  collide,
  compilePolicy,
  derivedName,
  policyKey,
  precedence,
  type CompiledPolicy,
  type PolicyObject,
  type PolicyProblem,
} from "./policy.js";

export interface PodInfo {
  uid: string;
  namespace: string;
  name: string;
  labels: Labels;
  /** Canonical addresses (status.podIPs). */
  ips: readonly string[];
  hostNetwork: boolean;
  /** status.phase: Succeeded and Failed pods hold no address. */
  phase: string;
  /** metadata.creationTimestamp in ms since the epoch. */
  created: number;
}

/** One source address added to or removed from a data-plane policy. */
export interface SourceChange {
  policy: string;
  address: string;
  add: boolean;
}

export interface Changes {
  /** The set of data-plane policies (or their destinations, actions, groups) changed: plan in full. */
  structural: boolean;
  /** Otherwise: the source changes since the last take, deletions first. */
  edits: SourceChange[];
}

export interface PolicyState {
  key: string;
  kind: PolicyObject["kind"];
  namespace?: string;
  name: string;
  uid: string;
  generation: number;
  accepted: { ok: boolean; reason: string; message: string; field?: string };
  /** Pods this policy governs here. */
  selectedPods: number;
  /** Pods it selects that a policy with precedence governs instead. */
  conflictingPods: number;
  /** Its data-plane policies, by family, with the action they are programmed with. */
  programmedAs: { name: string; family: Family; action: PolicyAction }[];
  /** Its group is the API's and this gateway holds none of its addresses of some family: blocked here, not advertised. */
  notHeld?: true;
}

interface Derived {
  name: string;
  family: Family;
  policy: CompiledPolicy;
  /** Deny when the group is missing here. */
  action: PolicyAction;
  /** Why it is planned as Deny though the policy says SNAT: the group is not here, or not for this namespace. */
  /** NotHeld: a group from the API of which this gateway holds no address of the family (others serve it). */
  blocked?: "EgressIPGroupNotFound" | "EgressIPGroupNotAllowed" | "EgressIPGroupNotHeld";
}

const ENDED = new Set(["Succeeded", "Failed"]);
const NONE: readonly never[] = Object.freeze([]);

/**
 * The array without spare room: V8 gives an array grown by push room for 17
 * elements, and most of a pod's lists hold one or none (at 100k pods, about
 * 60 MB of the heap was such room).
 */
export function exact<T>(a: T[]): readonly T[] {
  return a.length === 0 ? NONE : a.slice();
}
const familyOf = (ip: string): Family => (ip.includes(":") ? 6 : 4);

export class Cluster {
  private groups = new Map<string, EgressIPGroupConfig>();
  private claimed: ReadonlySet<string> = new Set();
  private fileNames: ReadonlySet<string> = new Set();
  private readonly namespaces = new Map<string, Labels>();
  private readonly pods = new Map<string, PodInfo>();
  private readonly podsByNs = new Map<string, Set<string>>();
  private readonly accepted = new Map<string, CompiledPolicy>();
  private readonly refused = new Map<
    string,
    { obj: PolicyObject; reason: string; problems: PolicyProblem[] }
  >();
  /** Address -> the UID of the live pod that reports it, or the UIDs when several do. */
  private readonly owners = new Map<string, string | Set<string>>();
  /**
   * UID -> what the pod is in: its entries as flat pairs (data-plane policy
   * name, address: strings the model holds anyway, so a pod's entries make
   * none of their own), the policies governing it, and those that lost it to
   * them. Absent for a pod in none.
   */
  private readonly assigned = new Map<
    string,
    { entries: readonly string[]; win: readonly string[]; lose: readonly string[] }
  >();
  /** Per policy key: how many pods it governs, and how many it lost to others (kept with `assigned`). */
  private readonly governs = new Map<string, number>();
  private readonly loses = new Map<string, number>();
  /** Policy keys whose counts changed since states were last taken; undefined: any policy's state may have. */
  private statesChanged: Set<string> | undefined;
  /** Policies or groups changed and the pods are not reassigned yet (see settle). */
  private dirty = false;
  /** Data-plane policy name -> its source addresses. */
  private readonly sources = new Map<string, Map<string, number>>();
  private derived: Derived[] = [];
  private readonly derivedByName = new Map<string, Derived>();
  private readonly derivedOf = new Map<string, Derived[]>();
  /** Per group: the namespaces whose EgressPolicies may use it (absent: none). */
  private groupNamespaces = new Map<string, CompiledSelector>();
  private readonly candidatesByNs = new Map<string, CompiledPolicy[]>();
  private readonly collisions = new Map<string, boolean>();
  private edits: SourceChange[] = [];
  private structural = true;

  /**
   * What this gateway's file says: its egress IP groups and its own policies'
   * names; and the groups from the API (`claimed`, among `groups` with the
   * addresses this gateway holds of them, or none).
   */
  setGateway(
    groups: readonly EgressIPGroupConfig[],
    fileNames: ReadonlySet<string>,
    claimed: ReadonlySet<string> = new Set(),
  ): void {
    this.groups = groupsByName(groups);
    this.claimed = claimed;
    this.groupNamespaces = new Map(
      groups.flatMap((g) =>
        g.namespaceSelector ? [[g.name, compileSelector(g.namespaceSelector)] as const] : [],
      ),
    );
    this.fileNames = fileNames;
    this.restructure();
  }

  upsertNamespace(name: string, labels: Labels): void {
    const before = this.namespaces.get(name);
    this.namespaces.set(name, labels);
    if (before !== undefined && sameLabels(before, labels)) return;
    // Which groups the namespace's EgressPolicies may use can change with its labels.
    if (this.groupNamespaces.size > 0 && this.policiesIn(name)) return this.restructure();
    this.candidatesByNs.delete(name);
    for (const uid of this.podsByNs.get(name) ?? []) this.reassign(uid);
  }

  deleteNamespace(name: string): void {
    if (!this.namespaces.delete(name)) return;
    this.candidatesByNs.delete(name);
    for (const uid of this.podsByNs.get(name) ?? []) this.reassign(uid);
  }

  upsertPod(pod: PodInfo): void {
    let before = this.pods.get(pod.uid);
    if (before && before.namespace !== pod.namespace) {
      // Not something the API does (a namespace is immutable), but then the pod is a new one here.
      this.deletePod(pod.uid);
      before = undefined;
    }
    const was = before ? this.heldBy(before) : [];
    this.pods.set(pod.uid, pod);
    let inNs = this.podsByNs.get(pod.namespace);
    if (!inNs) this.podsByNs.set(pod.namespace, (inNs = new Set()));
    inNs.add(pod.uid);
    const now = this.heldBy(pod);
    // Deletions of claims first, so that a claimant that loses an address is reassigned before one gains it.
    const touched = new Set<string>([pod.uid]);
    for (const ip of was) if (!now.includes(ip)) this.unclaim(ip, pod.uid, touched);
    for (const ip of now) if (!was.includes(ip)) this.claim(ip, pod.uid, touched);
    for (const uid of touched) this.reassign(uid);
  }

  deletePod(uid: string): void {
    const pod = this.pods.get(uid);
    if (!pod) return;
    this.pods.delete(uid);
    this.podsByNs.get(pod.namespace)?.delete(uid);
    if (this.podsByNs.get(pod.namespace)?.size === 0) this.podsByNs.delete(pod.namespace);
    const touched = new Set<string>([uid]);
    for (const ip of this.heldBy(pod)) this.unclaim(ip, uid, touched);
    for (const u of touched) this.reassign(u);
  }

  /** The live pod that holds `address` now; undefined when none does, or several claim it. */
  podAt(address: string): PodInfo | undefined {
    const owner = this.owners.get(address);
    return typeof owner === "string" ? this.pods.get(owner) : undefined;
  }

  /** A policy object; `problems` when the input found its spec invalid already (it is refused). */
  upsertPolicy(obj: PolicyObject, problems?: PolicyProblem[]): void {
    const key = policyKey(obj.kind, obj.namespace, obj.name);
    // A status write (this gateway's or another's) is an update of the object too: only a new
    // object or a new spec changes anything.
    const known = this.accepted.get(key)?.obj ?? this.refused.get(key)?.obj;
    if (
      known !== undefined &&
      known.uid === obj.uid &&
      known.generation === obj.generation &&
      JSON.stringify(known.spec) === JSON.stringify(obj.spec)
    )
      return;
    this.accepted.delete(key);
    this.refused.delete(key);
    const c = problems && problems.length > 0 ? { ok: false as const, problems } : compilePolicy(obj);
    if (!c.ok) this.refused.set(key, { obj, reason: "Invalid", problems: c.problems });
    else this.accepted.set(key, c.policy);
    this.restructure();
  }

  deletePolicy(kind: PolicyObject["kind"], namespace: string | undefined, name: string): void {
    const key = policyKey(kind, namespace, name);
    if (this.accepted.delete(key) || this.refused.delete(key)) this.restructure();
  }

  /** What changed since the last call. */
  takeChanges(): Changes {
    this.settle();
    const out: Changes = this.structural
      ? { structural: true, edits: [] }
      : { structural: false, edits: compact(this.edits) };
    this.structural = false;
    this.edits = [];
    return out;
  }

  /**
   * The data-plane policies, in a stable order (by name), each with its
   * sources; SNAT ones name their group (core/config/groups.ts resolves it).
   */
  policyConfigs(): PolicyConfig[] {
    this.settle();
    return this.derived.map((d) => {
      const part = d.policy.families.get(d.family)!;
      const p: PolicyConfig = {
        name: d.name,
        sources: [...(this.sources.get(d.name)?.keys() ?? [])],
        destinations: [...part.destinations],
        action: d.action,
      };
      if (part.exceptions.length > 0 && d.action !== "Direct") p.exceptions = [...part.exceptions];
      if (d.action === "SNAT") p.egressIPGroup = d.policy.group!;
      // Blocked here, and left to the gateways that hold the group's addresses to attract.
      if (d.blocked === "EgressIPGroupNotHeld") p.advertise = false;
      return p;
    });
  }

  /** The sources of one data-plane policy now. */
  sourcesOf(name: string): ReadonlySet<string> {
    this.settle();
    return new Set(this.sources.get(name)?.keys());
  }

  /**
   * Every policy object, accepted or not, with what this gateway makes of it.
   * Also takes them: changedPolicyStates() then returns only later changes,
   * so the one writer of status is the one caller of both.
   */
  policyStates(): PolicyState[] {
    this.settle();
    this.statesChanged = new Set();
    return this.statesOf([...this.refused.keys(), ...this.accepted.keys()]);
  }

  /**
   * The states of the policies whose pod counts changed since states were
   * last taken (this or policyStates), or undefined when any policy's state
   * may have changed in another way (a policy, group or namespace changed
   * the model's structure): take policyStates() then. Pod moves at scale
   * touch a few policies of a thousand, and their status need not be made
   * again for all of them.
   */
  changedPolicyStates(): PolicyState[] | undefined {
    this.settle();
    const keys = this.statesChanged;
    if (keys === undefined) return undefined;
    this.statesChanged = new Set();
    return this.statesOf(keys);
  }

  private statesOf(keys: Iterable<string>): PolicyState[] {
    const out: PolicyState[] = [];
    for (const key of keys) {
      const s = this.stateOf(key);
      if (s) out.push(s);
    }
    return out.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
  }

  private stateOf(key: string): PolicyState | undefined {
    const ident = (obj: PolicyObject) => ({
      key,
      kind: obj.kind,
      ...(obj.namespace !== undefined ? { namespace: obj.namespace } : {}),
      name: obj.name,
      uid: obj.uid,
      generation: obj.generation,
    });
    const r = this.refused.get(key);
    if (r) {
      const first = r.problems[0];
      return {
        ...ident(r.obj),
        accepted: {
          ok: false,
          reason: r.reason,
          message: r.problems.map((p) => `${p.field}: ${p.message}`).join("; "),
          ...(first ? { field: first.field } : {}),
        },
        selectedPods: 0,
        conflictingPods: 0,
        programmedAs: [],
      };
    }
    const p = this.accepted.get(key);
    if (!p) return undefined;
    const mine = this.derivedOf.get(key) ?? [];
    const missing = mine.filter((d) => d.blocked === "EgressIPGroupNotFound");
    const notAllowed = mine.some((d) => d.blocked === "EgressIPGroupNotAllowed");
    const accepted = notAllowed
      ? {
          ok: false,
          reason: "EgressIPGroupNotAllowed",
          message:
            `namespace ${p.obj.namespace ?? ""} may not use egress IP group ${JSON.stringify(p.group)} on this gateway ` +
            `(the group's namespaceSelector does not select it): the pods it selects are blocked here (dropped)`,
          field: "spec.egressIPGroup",
        }
      : missing.length > 0
        ? {
            ok: false,
            reason: "EgressIPGroupNotFound",
            message:
              `egress IP group ${JSON.stringify(p.group)} has no ${missing.map((d) => `IPv${d.family}`).join(" or ")} ` +
              `address on this gateway: the pods it selects are blocked here (dropped), not sent out with their own address`,
            field: "spec.egressIPGroup",
          }
        : {
            ok: true,
            reason: "Accepted",
            message: "the policy is valid and its egress IP group is defined here",
          };
    return {
      ...ident(p.obj),
      accepted,
      selectedPods: this.governs.get(key) ?? 0,
      conflictingPods: this.loses.get(key) ?? 0,
      programmedAs: mine.map((d) => ({ name: d.name, family: d.family, action: d.action })),
      ...(mine.some((d) => d.blocked === "EgressIPGroupNotHeld") ? { notHeld: true as const } : {}),
    };
  }

  /** Every policy object's key and generation (cheap: no pod is looked at). */
  policyGenerations(): Map<string, number> {
    const out = new Map<string, number>();
    for (const [k, p] of this.accepted) out.set(k, p.obj.generation);
    for (const [k, r] of this.refused) out.set(k, r.obj.generation);
    return out;
  }

  /** Counts, for metrics and logs. */
  counts(): { namespaces: number; pods: number; policies: number; refused: number; contested: number } {
    let contested = 0;
    for (const s of this.owners.values()) if (typeof s !== "string") contested++;
    return {
      namespaces: this.namespaces.size,
      pods: this.pods.size,
      policies: this.accepted.size,
      refused: this.refused.size,
      contested,
    };
  }

  // --- internals

  /** Whether namespace `ns`'s EgressPolicies may use `group` (its namespaceSelector selects the namespace). */
  private mayUse(group: string, ns: string): boolean {
    return this.groupNamespaces.get(group)?.matches(this.namespaces.get(ns) ?? {}) ?? false;
  }

  private policiesIn(ns: string): boolean {
    for (const p of this.accepted.values())
      if (p.obj.kind === "EgressPolicy" && p.obj.namespace === ns) return true;
    return false;
  }

  /** The addresses a pod holds: none when it uses the node's network or has ended. */
  private heldBy(pod: PodInfo): readonly string[] {
    return pod.hostNetwork || ENDED.has(pod.phase) ? [] : pod.ips;
  }

  private claim(ip: string, uid: string, touched: Set<string>): void {
    const s = this.owners.get(ip);
    if (s === undefined) this.owners.set(ip, uid);
    else if (typeof s === "string") {
      touched.add(s);
      if (s !== uid) this.owners.set(ip, new Set([s, uid]));
    } else {
      for (const other of s) touched.add(other);
      s.add(uid);
    }
  }

  private unclaim(ip: string, uid: string, touched: Set<string>): void {
    const s = this.owners.get(ip);
    if (s === undefined) return;
    if (typeof s === "string") {
      if (s === uid) this.owners.delete(ip);
      return;
    }
    s.delete(uid);
    for (const other of s) touched.add(other);
    if (s.size === 1) this.owners.set(ip, s.values().next().value!);
  }

  /** The pod an address belongs to: the only claimant, else the one created last (none on a tie). */
  private ownerOf(ip: string): string | undefined {
    const s = this.owners.get(ip);
    if (s === undefined || typeof s === "string") return s;
    let best: PodInfo | undefined;
    let tie = false;
    for (const uid of s) {
      const p = this.pods.get(uid)!;
      if (!best || p.created > best.created) {
        best = p;
        tie = false;
      } else if (p.created === best.created) tie = true;
    }
    return tie ? undefined : best!.uid;
  }

  private candidates(ns: string): CompiledPolicy[] {
    let c = this.candidatesByNs.get(ns);
    if (c) return c;
    const labels = this.namespaces.get(ns) ?? {};
    c = [...this.accepted.values()].filter((p) =>
      p.obj.kind === "EgressPolicy" ? p.obj.namespace === ns : p.namespaceSelector!.matches(labels),
    );
    c.sort(precedence);
    this.candidatesByNs.set(ns, c);
    return c;
  }

  private collides(a: CompiledPolicy, b: CompiledPolicy): boolean {
    const k = a.key < b.key ? `${a.key}\n${b.key}` : `${b.key}\n${a.key}`;
    let v = this.collisions.get(k);
    if (v === undefined) this.collisions.set(k, (v = collide(a, b)));
    return v;
  }

  /** Recomputes one pod's entries and records the difference. */
  private reassign(uid: string): void {
    if (this.dirty) return; // every pod is reassigned when the model settles
    const before = this.assigned.get(uid)?.entries ?? [];
    const pod = this.pods.get(uid);
    const after: string[] = [];
    const win: string[] = [];
    const lose: string[] = [];
    if (pod && this.heldBy(pod).length > 0) {
      for (const p of this.candidates(pod.namespace)) {
        if (!p.podSelector.matches(pod.labels)) continue;
        if (win.some((k) => this.collides(this.accepted.get(k)!, p))) lose.push(p.key);
        else win.push(p.key);
      }
      for (const ip of pod.ips) {
        if (this.ownerOf(ip) !== uid) continue;
        const family = familyOf(ip);
        for (const k of win) {
          const p = this.accepted.get(k)!;
          const d = p.families.has(family)
            ? this.derivedOf.get(k)?.find((x) => x.family === family)
            : undefined;
          if (d) after.push(d.name, ip);
        }
      }
    }
    const prev = this.assigned.get(uid);
    const changed = this.statesChanged;
    if (prev) {
      for (const k of prev.win) count(this.governs, k, -1, changed);
      for (const k of prev.lose) count(this.loses, k, -1, changed);
    }
    if (win.length > 0 || lose.length > 0) {
      this.assigned.set(uid, { entries: exact(after), win: exact(win), lose: exact(lose) });
      for (const k of win) count(this.governs, k, 1, changed);
      for (const k of lose) count(this.loses, k, 1, changed);
    } else this.assigned.delete(uid);
    if (before.length === 0 && after.length === 0) return;
    for (let i = 0; i < before.length; i += 2)
      if (!hasPair(after, before[i]!, before[i + 1]!)) this.apply(before[i]!, before[i + 1]!, false);
    for (let i = 0; i < after.length; i += 2)
      if (!hasPair(before, after[i]!, after[i + 1]!)) this.apply(after[i]!, after[i + 1]!, true);
  }

  private apply(policy: string, address: string, add: boolean): void {
    let s = this.sources.get(policy);
    if (!s) this.sources.set(policy, (s = new Map()));
    // An address can enter a policy through one pod before it leaves through another (a reused
    // address, the pods reassigned in either order): counted per pod, it is a source while any
    // pod brings it, and only the first and the last are edits.
    const n = (s.get(address) ?? 0) + (add ? 1 : -1);
    if (n > 0) s.set(address, n);
    else s.delete(address);
    if (add ? n !== 1 : n !== 0) return;
    if (!this.structural) this.edits.push({ policy, address, add });
  }

  /**
   * Policies or groups changed: the data-plane policies are made again, and
   * every pod reassigned, when the model is next read (a list of 1,000
   * policies is one restructuring, not 1,000).
   */
  private restructure(): void {
    this.structural = true;
    this.statesChanged = undefined;
    this.dirty = true;
    this.edits = [];
  }

  private settle(): void {
    if (!this.dirty) return;
    this.dirty = false;
    this.candidatesByNs.clear();
    this.collisions.clear();
    // A ClusterEgressPolicy named like a file policy is refused.
    for (const [key, p] of [...this.accepted]) {
      if (p.obj.kind === "ClusterEgressPolicy" && this.fileNames.has(p.base)) {
        this.accepted.delete(key);
        this.refused.set(key, {
          obj: p.obj,
          reason: "NameConflict",
          problems: [
            {
              field: "metadata.name",
              message: `the gateway's file has a policy named ${JSON.stringify(p.base)}`,
            },
          ],
        });
      }
    }
    const derived: Derived[] = [];
    this.derivedOf.clear();
    for (const p of this.accepted.values())
      for (const family of p.families.keys()) {
        const g = p.group === undefined ? undefined : this.groups.get(p.group);
        const blocked =
          p.action !== "SNAT"
            ? undefined
            : g === undefined || groupAddress(g, family) === undefined
              ? this.claimed.has(p.group!)
                ? ("EgressIPGroupNotHeld" as const)
                : ("EgressIPGroupNotFound" as const)
              : p.obj.kind === "EgressPolicy" && !this.mayUse(p.group!, p.obj.namespace ?? "")
                ? ("EgressIPGroupNotAllowed" as const)
                : undefined;
        const d: Derived = {
          name: derivedName(p.base, family),
          family,
          policy: p,
          action: blocked ? "Deny" : p.action,
          ...(blocked ? { blocked } : {}),
        };
        derived.push(d);
        this.derivedOf.set(p.key, [...(this.derivedOf.get(p.key) ?? []), d]);
      }
    derived.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    this.derived = derived;
    this.derivedByName.clear();
    for (const d of derived) this.derivedByName.set(d.name, d);
    this.sources.clear();
    this.assigned.clear();
    this.governs.clear();
    this.loses.clear();
    for (const uid of this.pods.keys()) this.reassign(uid);
  }
}

/** Whether flat pairs (a, b, a, b, ...) hold the pair (x, y). */
function hasPair(pairs: readonly string[], x: string, y: string): boolean {
  for (let i = 0; i < pairs.length; i += 2) if (pairs[i] === x && pairs[i + 1] === y) return true;
  return false;
}

/** Adds `by` to the count of `key` (a count of 0 is no entry). */
function count(m: Map<string, number>, key: string, by: number, changed?: Set<string>): void {
  changed?.add(key);
  const n = (m.get(key) ?? 0) + by;
  if (n === 0) m.delete(key);
  else m.set(key, n);
}

function sameLabels(a: Labels, b: Labels): boolean {
  const ka = Object.keys(a);
  if (ka.length !== Object.keys(b).length) return false;
  return ka.every((k) => Object.prototype.hasOwnProperty.call(b, k) && a[k] === b[k]);
}

/** Edits with an add and a remove of the same entry cancelled, deletions first. */
function compact(edits: SourceChange[]): SourceChange[] {
  const last = new Map<string, SourceChange>();
  const first = new Map<string, boolean>();
  for (const e of edits) {
    const k = `${e.policy}|${e.address}`;
    if (!first.has(k)) first.set(k, e.add);
    last.set(k, e);
  }
  const out: SourceChange[] = [];
  for (const [k, e] of last) {
    // Net effect: present before = !first add; present after = last add.
    const before = !first.get(k)!;
    if (before === e.add) continue;
    out.push(e);
  }
  return [...out.filter((e) => !e.add), ...out.filter((e) => e.add)];
}
