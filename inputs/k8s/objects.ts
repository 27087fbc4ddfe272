// What egressd keeps of the objects it watches, and the check of each one.
// Everything from the API server crosses a trust boundary: a pod's
// addresses are parsed, labels must be strings, a policy's spec must match
// the schema egressd's CRDs are made from (Ajv, with the same TypeBox
// schemas), whatever the API server let through.
//
// Trimming keeps memory flat at 100k pods: a pod as the API returns it is a
// few kilobytes (containers, conditions, managed fields); egressd keeps its
// name, namespace, UID, resource version, labels, creation time, hostNetwork,
// phase and addresses, once (KeptPod).
import { Ajv, type ErrorObject } from "ajv";
import { parseAddress, formatAddress } from "../../core/ip.js";
import { ClusterEgressPolicySpecSchema, EgressPolicySpecSchema } from "../../core/k8s/api-schema.js";
import { exact, type PodInfo } from "../../core/k8s/cluster.js";
import type { Labels } from "../../core/k8s/selector.js";
import type { PolicyKind, PolicyObject, PolicyProblem } from "../../core/k8s/policy.js";

type Json = Record<string, unknown>;
const isObj = (x: unknown): x is Json => typeof x === "object" && x !== null && !Array.isArray(x);
const str = (x: unknown): string | undefined => (typeof x === "string" ? x : undefined);

/** An object as kept: what the informer's cache needs (metadata) and what egressd reads. */
export interface Kept {
  metadata: {
    name: string;
    namespace?: string;
    uid: string;
    resourceVersion: string;
    labels?: Record<string, string>;
    creationTimestamp?: string;
    generation?: number;
  };
  spec?: unknown;
  status?: unknown;
}

function keptMeta(raw: Json): Kept["metadata"] {
  const m = isObj(raw.metadata) ? raw.metadata : {};
  const out: Kept["metadata"] = {
    name: str(m.name) ?? "",
    uid: str(m.uid) ?? "",
    resourceVersion: str(m.resourceVersion) ?? "",
  };
  if (str(m.namespace) !== undefined) out.namespace = m.namespace as string;
  if (isObj(m.labels)) {
    const labels: Record<string, string> = {};
    for (const [k, v] of Object.entries(m.labels)) if (typeof v === "string") labels[k] = v;
    out.labels = labels;
  }
  if (str(m.creationTimestamp) !== undefined) out.creationTimestamp = m.creationTimestamp as string;
  if (typeof m.generation === "number") out.generation = m.generation;
  return out;
}

/**
 * A pod as kept: the cluster model's PodInfo, and at once what the
 * informer's cache reads (`metadata`: name, namespace, UID, resource
 * version), which is the object itself. So nothing of a pod is held twice,
 * and no object is made for its metadata (at 100k pods, a second copy of the
 * labels, addresses and strings was about a third of the heap, and the
 * metadata and wrapper objects another 10 MB).
 */
export class KeptPod implements PodInfo {
  constructor(
    readonly uid: string,
    readonly namespace: string,
    readonly name: string,
    readonly labels: Labels,
    readonly ips: readonly string[],
    readonly hostNetwork: boolean,
    readonly phase: string,
    readonly created: number,
    readonly resourceVersion: string,
    /** What in the pod is not what the API promises (an address that is not one). */
    readonly problems: string[] | undefined,
  ) {}

  get metadata(): Kept["metadata"] {
    return this;
  }
}

/** The phases the API defines, so that 100k pods share five strings instead of holding one each. */
const PHASES = ["Pending", "Running", "Succeeded", "Failed", "Unknown"];

export function trimPod(raw: unknown): KeptPod {
  const r = isObj(raw) ? raw : {};
  const spec = isObj(r.spec) ? r.spec : {};
  const status = isObj(r.status) ? r.status : {};
  const meta = keptMeta(r);
  const texts = Array.isArray(status.podIPs)
    ? status.podIPs.map((x) => (isObj(x) ? str(x.ip) : undefined))
    : [str(status.podIP)];
  const problems: string[] = [];
  const ips: string[] = [];
  for (const text of texts) {
    if (text === undefined) continue;
    const a = parseAddress(text);
    if (a === undefined) problems.push(`status.podIPs: ${JSON.stringify(text)} is not an IP address`);
    else {
      const c = formatAddress(a.family, a.value);
      // the API's own text when it is already canonical: one string, not two
      if (!ips.includes(c)) ips.push(c === text ? text : c);
    }
  }
  if (meta.uid === "") problems.push("metadata.uid is missing");
  const phase = str(status.phase) ?? "Unknown";
  return new KeptPod(
    meta.uid,
    meta.namespace ?? "",
    meta.name,
    meta.labels ?? {},
    exact(ips),
    spec.hostNetwork === true,
    PHASES.find((p) => p === phase) ?? phase,
    created(meta),
    meta.resourceVersion,
    problems.length > 0 ? problems : undefined,
  );
}

export function trimNamespace(raw: unknown): Kept {
  return { metadata: keptMeta(isObj(raw) ? raw : {}) };
}

export function trimPolicy(raw: unknown): Kept {
  const r = isObj(raw) ? raw : {};
  return { metadata: keptMeta(r), spec: r.spec };
}

const created = (m: Kept["metadata"]): number => {
  const t = m.creationTimestamp === undefined ? NaN : Date.parse(m.creationTimestamp);
  return Number.isFinite(t) ? t : 0;
};

const ajv = new Ajv({ strict: false, allErrors: true });
const checkers: Record<PolicyKind, ReturnType<typeof ajv.compile>> = {
  EgressPolicy: ajv.compile(EgressPolicySpecSchema),
  ClusterEgressPolicy: ajv.compile(ClusterEgressPolicySpecSchema),
};

function ajvProblem(e: ErrorObject): PolicyProblem {
  const path = `spec${e.instancePath.replaceAll("/", ".").replace(/\.(\d+)(?=\.|$)/g, "[$1]")}`;
  if (e.keyword === "additionalProperties")
    return { field: `${path}.${String(e.params.additionalProperty)}`, message: "unknown field" };
  if (e.keyword === "required")
    return { field: `${path}.${String(e.params.missingProperty)}`, message: "required" };
  return { field: path, message: e.message ?? e.keyword };
}

/** A kept policy as the cluster model takes it, or why its spec is not one. */
export function policyObject(
  kind: PolicyKind,
  k: Kept,
): { ok: true; obj: PolicyObject } | { ok: false; obj: PolicyObject; problems: PolicyProblem[] } {
  const obj: PolicyObject = {
    kind,
    ...(kind === "EgressPolicy" ? { namespace: k.metadata.namespace ?? "" } : {}),
    name: k.metadata.name,
    uid: k.metadata.uid,
    generation: k.metadata.generation ?? 0,
    created: created(k.metadata),
    spec: k.spec as PolicyObject["spec"],
  };
  const check = checkers[kind];
  if (check(k.spec)) return { ok: true, obj };
  return { ok: false, obj, problems: (check.errors ?? []).map(ajvProblem) };
}
