// Parses and checks a containerlab topology file (the subset egressd's lab
// runner realises: nodes with kind/image/binds/exec/env, bridge nodes, and
// veth links).
//
// The same file deploys with `containerlab deploy` on a machine with Docker;
// here it is realised with network namespaces (see runner.ts).
import { readFileSync, writeFileSync } from "node:fs";
import { basename, dirname, isAbsolute, join, resolve } from "node:path";
import { parse as parseYaml } from "yaml";

export interface Bind {
  /** Absolute path on the host. */
  source: string;
  /** Path inside the node. */
  target: string;
  readOnly: boolean;
}

export interface LabNode {
  name: string;
  kind: string;
  image: string;
  binds: Bind[];
  exec: string[];
  /** The node's main command (containerlab `cmd`), if any. */
  cmd?: string;
  env: Record<string, string>;
  labels: Record<string, string>;
}

export interface Endpoint {
  node: string;
  interface: string;
}

export interface LabLink {
  a: Endpoint;
  b: Endpoint;
}

export interface Topology {
  name: string;
  /** containerlab's `prefix`; undefined means the default "clab". */
  prefix?: string;
  /** Folder of the topology file: relative bind paths are resolved against it. */
  dir: string;
  nodes: LabNode[];
  links: LabLink[];
}

export class TopologyError extends Error {
  constructor(readonly problems: string[]) {
    super(`invalid topology:\n  ${problems.join("\n  ")}`);
    this.name = "TopologyError";
  }
}

/**
 * Kinds the runner can realise without Docker: `linux` (a container, here a
 * namespace) and `bridge` (a Linux bridge that the links to it attach to: one
 * L2 segment shared by several nodes).
 */
export const SUPPORTED_KINDS = ["linux", "bridge"] as const;

/** What a container has and a bridge does not: set on a bridge node, they are refused. */
const NOT_ON_BRIDGE = ["image", "binds", "exec", "cmd"] as const;

const NAME_RE = /^[a-z0-9]([a-z0-9-]*[a-z0-9])?$/;
// Linux interface names: 1-15 characters, no '/', ':' or white space.
const IFNAME_RE = /^[A-Za-z0-9_.-]{1,15}$/;

type Obj = Record<string, unknown>;
const isObj = (v: unknown): v is Obj => typeof v === "object" && v !== null && !Array.isArray(v);

export function loadTopology(file: string): Topology {
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch (e) {
    throw new TopologyError([`${file}: cannot read: ${(e as Error).message}`]);
  }
  return parseTopology(text, dirname(resolve(file)));
}

export function parseTopology(text: string, dir: string): Topology {
  let doc: unknown;
  try {
    doc = parseYaml(text);
  } catch (e) {
    throw new TopologyError([`not valid YAML: ${(e as Error).message}`]);
  }
  const problems: string[] = [];
  const bad = (path: string, msg: string) => problems.push(`${path}: ${msg}`);

  if (!isObj(doc)) throw new TopologyError(["(root): must be a mapping with `name` and `topology`"]);
  const name = doc.name;
  if (typeof name !== "string" || !NAME_RE.test(name)) {
    bad("name", "required: lower-case letters, digits and '-'");
  }
  const prefix = doc.prefix;
  if (prefix !== undefined && typeof prefix !== "string") bad("prefix", "must be a string");
  const topo = doc.topology;
  if (!isObj(topo)) {
    bad("topology", "required: a mapping with `nodes` and `links`");
    throw new TopologyError(problems);
  }
  for (const key of Object.keys(topo)) {
    if (!["nodes", "links", "defaults", "kinds"].includes(key)) bad(`topology.${key}`, "unknown key");
  }

  const defaults = topo.defaults === undefined ? {} : topo.defaults;
  if (!isObj(defaults)) bad("topology.defaults", "must be a mapping");
  const kinds = topo.kinds === undefined ? {} : topo.kinds;
  if (!isObj(kinds)) bad("topology.kinds", "must be a mapping");
  else if (isObj(kinds.bridge)) {
    for (const key of NOT_ON_BRIDGE)
      if (kinds.bridge[key] !== undefined) bad(`topology.kinds.bridge.${key}`, notOnBridge(key));
  }

  const nodes: LabNode[] = [];
  if (!isObj(topo.nodes) || Object.keys(topo.nodes).length === 0) {
    bad("topology.nodes", "required: a mapping of node name to node");
  } else {
    for (const [nodeName, raw] of Object.entries(topo.nodes)) {
      const node = parseNode(
        `topology.nodes.${nodeName}`,
        nodeName,
        raw ?? {},
        isObj(defaults) ? defaults : {},
        isObj(kinds) ? kinds : {},
        dir,
        bad,
      );
      if (node) nodes.push(node);
    }
  }

  const links: LabLink[] = [];
  const used = new Map<string, string>();
  const nodeNames = new Set(nodes.map((n) => n.name));
  const bridges = new Map(nodes.filter(isBridgeNode).map((n) => [n.name, bridgeDevice(n)]));
  const rawLinks = topo.links ?? [];
  if (!Array.isArray(rawLinks)) bad("topology.links", "must be a list");
  else
    rawLinks.forEach((raw: unknown, i) => {
      const path = `topology.links[${i}]`;
      if (!isObj(raw)) return bad(path, "must be a mapping with `endpoints`");
      for (const key of Object.keys(raw)) if (key !== "endpoints") bad(`${path}.${key}`, "unknown key");
      const eps = raw.endpoints;
      if (!Array.isArray(eps) || eps.length !== 2)
        return bad(`${path}.endpoints`, 'required: exactly two "node:interface" strings');
      const parsed = eps.map((ep: unknown, j) =>
        parseEndpoint(`${path}.endpoints[${j}]`, ep, nodeNames, bad),
      );
      const [a, b] = parsed;
      if (!a || !b) return;
      for (const [j, ep] of [a, b].entries()) {
        const key = `${ep.node}:${ep.interface}`;
        const prev = used.get(key);
        if (prev) bad(`${path}.endpoints[${j}]`, `${key} is already used by ${prev}`);
        else used.set(key, path);
        if (bridges.get(ep.node) === ep.interface)
          bad(`${path}.endpoints[${j}]`, `"${ep.interface}" is the name of the bridge device itself`);
      }
      if (a.node === b.node && a.interface === b.interface) bad(`${path}.endpoints`, "a link needs two ends");
      // Both ends in one bridge make a loop, and a bridge without STP floods
      // every broadcast round it for ever.
      else if (a.node === b.node && bridges.has(a.node))
        bad(`${path}.endpoints`, `both ends on bridge ${a.node} would make a loop`);
      links.push({ a, b });
    });

  if (problems.length) throw new TopologyError(problems);
  return { name: name as string, prefix: prefix as string | undefined, dir, nodes, links };
}

function parseNode(
  path: string,
  name: string,
  raw: unknown,
  defaults: Obj,
  kinds: Obj,
  dir: string,
  bad: (p: string, m: string) => void,
): LabNode | undefined {
  if (!NAME_RE.test(name)) bad(path, "node names use lower-case letters, digits and '-'");
  if (!isObj(raw)) {
    bad(path, "must be a mapping");
    return undefined;
  }
  const known = ["kind", "image", "binds", "exec", "env", "labels", "group", "mgmt-ipv4", "mgmt-ipv6", "cmd"];
  for (const key of Object.keys(raw)) if (!known.includes(key)) bad(`${path}.${key}`, "unknown key");

  const kind = raw.kind ?? defaults.kind;
  if (typeof kind !== "string") {
    bad(`${path}.kind`, "required (or set topology.defaults.kind)");
    return undefined;
  }
  if (!(SUPPORTED_KINDS as readonly string[]).includes(kind)) {
    bad(
      `${path}.kind`,
      `"${kind}" is not supported by the netns runner (supported: ${SUPPORTED_KINDS.join(", ")})`,
    );
  }
  const kindDefaults = isObj(kinds[kind]) ? (kinds[kind] as Obj) : {};
  // containerlab precedence: node > kinds.<kind> > defaults.
  const pick = (key: string) => raw[key] ?? kindDefaults[key] ?? defaults[key];

  if (kind === "bridge") {
    // An image, exec or binds in topology.defaults are the containers' (the
    // usual `defaults: {kind: linux, image: ...}`), so only the node's own are
    // refused here; kinds.bridge is checked once by the caller.
    for (const key of NOT_ON_BRIDGE) if (raw[key] !== undefined) bad(`${path}.${key}`, notOnBridge(key));
    const env = stringMap(`${path}.env`, pick("env"), bad);
    const labels = stringMap(`${path}.labels`, pick("labels"), bad);
    return { name, kind, image: "", binds: [], exec: [], env, labels };
  }

  const image = pick("image");
  if (typeof image !== "string" || image === "") bad(`${path}.image`, "required: the container image");

  const binds: Bind[] = [];
  const rawBinds = pick("binds") ?? [];
  if (!Array.isArray(rawBinds)) bad(`${path}.binds`, "must be a list of host:container[:ro] strings");
  else
    rawBinds.forEach((b: unknown, i) => {
      const parts = typeof b === "string" ? b.split(":") : [];
      const [source, target, mode] = parts;
      if (!source || !target || parts.length > 3 || (mode !== undefined && mode !== "ro" && mode !== "rw")) {
        return bad(`${path}.binds[${i}]`, `"${String(b)}" is not host-path:container-path[:ro|rw]`);
      }
      if (!isAbsolute(target))
        return bad(`${path}.binds[${i}]`, `container path "${target}" must be absolute`);
      binds.push({ source: resolve(dir, source), target, readOnly: mode === "ro" });
    });

  const exec: string[] = [];
  const rawExec = pick("exec") ?? [];
  if (!Array.isArray(rawExec)) bad(`${path}.exec`, "must be a list of commands");
  else
    rawExec.forEach((c: unknown, i) => {
      if (typeof c !== "string" || c.trim() === "")
        bad(`${path}.exec[${i}]`, "must be a non-empty command string");
      else exec.push(c);
    });

  const cmd = pick("cmd");
  if (cmd !== undefined && (typeof cmd !== "string" || cmd.trim() === ""))
    bad(`${path}.cmd`, "must be a command string");

  const env = stringMap(`${path}.env`, pick("env"), bad);
  const labels = stringMap(`${path}.labels`, pick("labels"), bad);
  return {
    name,
    kind,
    image: typeof image === "string" ? image : "",
    binds,
    exec,
    ...(typeof cmd === "string" ? { cmd } : {}),
    env,
    labels,
  };
}

function notOnBridge(key: string): string {
  return `a bridge node has no ${key} (it is a Linux bridge, not a container)`;
}

function stringMap(path: string, v: unknown, bad: (p: string, m: string) => void): Record<string, string> {
  if (v === undefined) return {};
  if (!isObj(v)) {
    bad(path, "must be a mapping of strings");
    return {};
  }
  const out: Record<string, string> = {};
  for (const [k, val] of Object.entries(v)) {
    if (typeof val === "string" || typeof val === "number" || typeof val === "boolean") out[k] = String(val);
    else bad(`${path}.${k}`, "must be a string");
  }
  return out;
}

function parseEndpoint(
  path: string,
  ep: unknown,
  nodes: Set<string>,
  bad: (p: string, m: string) => void,
): Endpoint | undefined {
  if (typeof ep !== "string") {
    bad(path, 'must be a "node:interface" string');
    return undefined;
  }
  const m = /^([^:]+):([^:]+)$/.exec(ep);
  if (!m) {
    bad(path, `"${ep}" is not "node:interface"`);
    return undefined;
  }
  const [, node = "", iface = ""] = m;
  if (!nodes.has(node)) {
    bad(path, `node "${node}" is not defined in topology.nodes`);
    return undefined;
  }
  if (!IFNAME_RE.test(iface) || iface === "lo" || iface === "eth0") {
    bad(path, `"${iface}" is not a usable interface name (1-15 characters; lo and eth0 are reserved)`);
    return undefined;
  }
  return { node, interface: iface };
}

export function isBridgeNode(node: LabNode): boolean {
  return node.kind === "bridge";
}

/**
 * Name of a bridge node's bridge device: the node's name, as containerlab
 * names the host's bridge, cut to the 15 characters an interface name may have
 * (node names use only characters that interface names allow).
 */
export function bridgeDevice(node: LabNode): string {
  return node.name.slice(0, 15);
}

/** Whether a node runs FRR (the frrouting/frr image, or any image named frr). */
export function isFrrNode(node: LabNode): boolean {
  return /(^|\/)frr(:|$)/.test(node.image);
}

/** The host file bound to `target` in the node, if any. */
export function bindFor(node: LabNode, target: string): string | undefined {
  return node.binds.find((b) => b.target === target)?.source;
}

/**
 * Points every node's bind of `target` at a transformed copy in `dir` (the
 * original files stay as they are): how tests and benchmarks run a lab with
 * other settings than the committed ones.
 */
export function rebindCopies(
  topo: Topology,
  target: string,
  dir: string,
  transform: (text: string) => string,
): void {
  for (const node of topo.nodes) {
    for (const b of node.binds) {
      if (b.target !== target) continue;
      const copy = join(dir, `${node.name}-${basename(b.source)}`);
      writeFileSync(copy, transform(readFileSync(b.source, "utf8")));
      b.source = copy;
    }
  }
}
