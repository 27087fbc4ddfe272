// One file for a fleet of gateways: the settings every gateway shares at the
// top level, and what differs per site and per node under `sites:` and
// `nodes:`. A DaemonSet mounts the same ConfigMap on every node, and each
// egressd picks its own section by its node's name (`--node`, from the
// downward API).
//
//   bgp: { asn: 65010 }            # every gateway
//   sites:
//     dc-a: { bgp: { peers: [...] }, uplinks: [...] }
//   nodes:
//     gw-a1: { site: dc-a, bgp: { routerId: 10.0.0.11 }, egressIPs: [...] }
//
// The config of node N is the top level, with its site's section merged over
// it, then its own: maps merge key by key, anything else (a list, a scalar)
// is replaced whole by the later section. `gateway.name` defaults to the node's
// name and `gateway.site` to its site's. The merged config is then validated
// as any file is, and each finding is reported where it is written: at the
// section that supplied the value (`nodes.gw-a1.bgp.routerId`), with its line.
import type { PathSegment } from "./issues.js";
import type { RawIssue } from "./semantics.js";

/** A Kubernetes node name: a DNS subdomain (RFC 1123), at most 253 characters. */
const NODE_NAME = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
/** gateway.name's own rule (NAME_PATTERN): a node name may be used as it only if it is a DNS label. */
const LABEL = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;

export type Selected =
  | {
      ok: true;
      /** The node's merged config, to be validated as a file's. */
      raw: unknown;
      /** Where a path of the merged config is written in the file. */
      locate: (segments: PathSegment[]) => PathSegment[];
      /** True when the file had per-node sections (and so is not a plain config). */
      fleet: boolean;
    }
  | { ok: false; issues: RawIssue[] };

type Obj = Record<string, unknown>;
const isObj = (v: unknown): v is Obj => typeof v === "object" && v !== null && !Array.isArray(v);

function merge(under: unknown, over: unknown): unknown {
  if (!isObj(under) || !isObj(over)) return over;
  const out: Obj = { ...under };
  for (const [k, v] of Object.entries(over)) out[k] = k in out ? merge(out[k], v) : v;
  return out;
}

/** How many leading segments of `segments` name something in `value`. */
function depthIn(value: unknown, segments: PathSegment[]): number {
  let v = value;
  let n = 0;
  for (const s of segments) {
    if (typeof s === "number" ? !Array.isArray(v) || s >= v.length : !isObj(v) || !(s in v)) break;
    v = (v as Record<PathSegment, unknown>)[s];
    n++;
  }
  return n;
}

/**
 * The config of `node` in a file's parsed value. A file without `nodes:` is
 * a plain config (returned as it is) unless a node was named: each gateway of
 * a fleet must have its section, and one without is refused, never run on the
 * shared settings alone.
 */
export function selectNode(raw: unknown, node: string | undefined): Selected {
  const identity = (segments: PathSegment[]) => segments;
  const fleet = isObj(raw) && ("nodes" in raw || "sites" in raw);
  if (!fleet) {
    if (node === undefined || !isObj(raw)) return { ok: true, raw, locate: identity, fleet: false };
    return {
      ok: false,
      issues: [
        {
          segments: [],
          message: `--node ${node}: the file has no nodes: section to find this node's settings in`,
        },
      ],
    };
  }
  const { nodes, sites, ...base } = raw;
  const issues: RawIssue[] = [];
  if (nodes === undefined || !isObj(nodes)) {
    issues.push({
      segments: ["nodes"],
      message:
        nodes === undefined
          ? "sites: needs nodes: (a map of node name to its settings, each naming its site)"
          : "must be a map of node name to its settings",
    });
  }
  if (sites !== undefined && !isObj(sites))
    issues.push({ segments: ["sites"], message: "must be a map of site name to its settings" });
  if (issues.length) return { ok: false, issues };
  const nodeMap = nodes as Obj;
  const siteMap = (sites ?? {}) as Obj;
  for (const [name, v] of Object.entries(nodeMap)) {
    if (!NODE_NAME.test(name) || name.length > 253)
      issues.push({
        segments: ["nodes", name],
        message: `${JSON.stringify(name)} is not a Kubernetes node name`,
      });
    if (v !== null && !isObj(v))
      issues.push({ segments: ["nodes", name], message: "must be a map of settings" });
    const site = isObj(v) ? v.site : undefined;
    if (site !== undefined && (typeof site !== "string" || !(site in siteMap))) {
      const known = Object.keys(siteMap);
      issues.push({
        segments: ["nodes", name, "site"],
        message: `${JSON.stringify(site)} is not a site of sites: (${known.length ? known.join(", ") : "none"})`,
      });
    }
  }
  for (const [name, v] of Object.entries(siteMap)) {
    if (v !== null && !isObj(v))
      issues.push({ segments: ["sites", name], message: "must be a map of settings" });
  }
  if (issues.length) return { ok: false, issues };
  if (node === undefined) {
    return {
      ok: false,
      issues: [
        {
          segments: ["nodes"],
          message: "the file has per-node sections: name this node with --node (or $EGRESSD_NODE)",
        },
      ],
    };
  }
  if (!(node in nodeMap)) {
    const names = Object.keys(nodeMap);
    const shown = names.length > 20 ? [...names.slice(0, 20), `and ${names.length - 20} more`] : names;
    return {
      ok: false,
      issues: [
        {
          segments: ["nodes"],
          message: `no section for node ${JSON.stringify(node)}: this node is not one of the file's gateways (${shown.join(", ") || "none"})`,
        },
      ],
    };
  }
  const { site, ...own } = (nodeMap[node] ?? {}) as Obj;
  const layers: { prefix: PathSegment[]; value: Obj }[] = [{ prefix: [], value: base }];
  if (typeof site === "string") layers.push({ prefix: ["sites", site], value: (siteMap[site] ?? {}) as Obj });
  layers.push({ prefix: ["nodes", node], value: own });
  let merged = layers.reduce<unknown>((acc, l) => merge(acc, l.value), {}) as Obj;
  // The identity a fleet's gateway has unless its sections say otherwise.
  const gateway = isObj(merged.gateway) ? merged.gateway : merged.gateway === undefined ? {} : undefined;
  if (gateway) {
    const defaults: Obj = {};
    if (gateway.name === undefined && LABEL.test(node)) defaults.name = node;
    if (gateway.site === undefined && typeof site === "string") defaults.site = site;
    merged = { ...merged, gateway: { ...defaults, ...gateway } };
  }
  const locate = (segments: PathSegment[]): PathSegment[] => {
    let best = layers[0]!;
    let bestDepth = -1;
    for (const l of layers) {
      const d = depthIn(l.value, segments);
      if (d > 0 && d >= bestDepth) {
        best = l;
        bestDepth = d;
      }
    }
    return [...best.prefix, ...segments];
  };
  return { ok: true, raw: merged, locate, fleet: true };
}

/** The node names of a fleet file (for checking each of them); undefined for a plain config. */
export function fleetNodes(raw: unknown): string[] | undefined {
  if (!isObj(raw) || !("nodes" in raw || "sites" in raw)) return undefined;
  return isObj(raw.nodes) ? Object.keys(raw.nodes) : [];
}
