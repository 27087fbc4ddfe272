// Realises a containerlab topology without Docker: one network namespace per
// node, one veth pair per link (interface names from the endpoints), the
// nodes' exec commands run inside their namespace, and FRR nodes started as
// zebra + bgpd (+ staticd, bfdd) in their namespace with the bound frr.conf.
// A `bridge` node is a bridge device in its own namespace, with the link ends
// on that node as its ports.
//
// Every lab instance has its own prefix; namespaces are named PREFIX-NODE.
// What `up` creates is written to a state file first, so `down` removes it
// all even after a crash of the runner; `down` is idempotent.
export { sleep, waitFor } from "../lib/wait.js";
import { waitFor } from "../lib/wait.js";
import {
  chownSync,
  closeSync,
  copyFileSync,
  existsSync,
  mkdirSync,
  openSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { fileURLToPath } from "node:url";
import { join } from "node:path";
import { isRunning, run, spawnDetached, tryRun, type RunResult } from "../lib/exec.js";
import { destroyNamespaces } from "./namespaces.js";
import {
  bindFor,
  bridgeDevice,
  isBridgeNode,
  isFrrNode,
  type Endpoint,
  type LabNode,
  type Topology,
} from "./topology.js";

export const STATE_ROOT = process.env.EGRESSD_LAB_STATE ?? "/run/egressd-lab";
const FRR_BIN = "/usr/lib/frr";
/** bin/ of this repository: `egressd` in a node's cmd runs this checkout's build. */
const REPO_BIN = fileURLToPath(new URL("../../bin", import.meta.url));
const FRR_RUN = "/var/run/frr";
const FRR_DEFAULT_DAEMONS = ["zebra", "staticd", "bgpd", "bfdd"];
/** Start order matters: zebra first, the others connect to it. */
const FRR_KNOWN_DAEMONS = ["zebra", "mgmtd", "staticd", "bgpd", "bfdd", "ospfd", "ospf6d", "isisd", "pbrd"];

interface LabState {
  prefix: string;
  name: string;
  namespaces: string[];
  frrNamespaces: string[];
  /** pid of each node's main command (containerlab `cmd`). */
  cmds?: Record<string, number>;
}

export class LabError extends Error {
  override name = "LabError";
}

/** Default instance prefix, the same naming containerlab uses for containers. */
export function defaultPrefix(topo: Topology): string {
  return `${topo.prefix ?? "clab"}-${topo.name}`;
}

function log(quiet: boolean | undefined, msg: string): void {
  if (!quiet) process.stderr.write(`lab: ${msg}\n`);
}

export class Lab {
  readonly stateDir: string;

  constructor(
    readonly topo: Topology,
    readonly prefix: string = defaultPrefix(topo),
    readonly opts: { quiet?: boolean; /** Do not start the nodes' `cmd`. */ noCmd?: boolean } = {},
  ) {
    if (!/^[A-Za-z0-9_.-]+$/.test(prefix)) throw new LabError(`invalid lab prefix "${prefix}"`);
    this.stateDir = join(STATE_ROOT, prefix);
  }

  ns(node: string): string {
    this.node(node);
    return `${this.prefix}-${node}`;
  }

  node(name: string): LabNode {
    const n = this.topo.nodes.find((x) => x.name === name);
    if (!n) throw new LabError(`no node "${name}" in lab ${this.topo.name}`);
    return n;
  }

  private readState(): LabState | undefined {
    const file = join(this.stateDir, "state.json");
    if (!existsSync(file)) return undefined;
    return JSON.parse(readFileSync(file, "utf8")) as LabState;
  }

  private writeState(s: LabState): void {
    mkdirSync(this.stateDir, { recursive: true });
    writeFileSync(join(this.stateDir, "state.json"), JSON.stringify(s, null, 2));
  }

  /** Brings the lab up. On any failure it removes what it created and rethrows. */
  async up(): Promise<void> {
    const existing = await this.existingNamespaces();
    if (this.readState() || existing.length) {
      throw new LabError(`lab ${this.prefix} is already up (or was left behind): run down first`);
    }
    const state: LabState = { prefix: this.prefix, name: this.topo.name, namespaces: [], frrNamespaces: [] };
    this.writeState(state);
    try {
      const started = Date.now();
      for (const node of this.topo.nodes) {
        const ns = this.ns(node.name);
        state.namespaces.push(ns);
        this.writeState(state); // record before creating: down must find it after a crash
        await run(["ip", "netns", "add", ns]);
        await run(["ip", "-n", ns, "link", "set", "lo", "up"]);
        // Addresses are usable at once: no duplicate address detection wait.
        await run(["sysctl", "-qw", "net.ipv6.conf.all.accept_dad=0", "net.ipv6.conf.default.accept_dad=0"], {
          netns: ns,
        });
      }
      for (const node of this.topo.nodes.filter(isBridgeNode)) {
        const ns = this.ns(node.name);
        const dev = bridgeDevice(node);
        // Multicast snooping off: with it on, once the bridge has seen an IGMP
        // join for a group it sends that group only to ports it has seen joins
        // on, and a node whose join it missed (sent before the node's port was
        // in the bridge; nothing here sends queries to make nodes join again)
        // gets none of it: multicast such as conntrackd's state sync would
        // depend on start-up order. Off, the bridge floods multicast to every
        // port, as a plain switch does.
        await run(["ip", "-n", ns, "link", "add", "name", dev, "type", "bridge", "mcast_snooping", "0"]);
        await run(["ip", "-n", ns, "link", "set", dev, "up"]);
      }
      log(this.opts.quiet, `${this.topo.nodes.length} nodes created`);
      for (const { a, b } of this.topo.links) {
        const nsA = this.ns(a.node);
        const nsB = this.ns(b.node);
        await run([
          "ip",
          "link",
          "add",
          "name",
          a.interface,
          "netns",
          nsA,
          "type",
          "veth",
          "peer",
          "name",
          b.interface,
          "netns",
          nsB,
        ]);
        await run(["ip", "-n", nsA, "link", "set", a.interface, ...this.bridgePort(a), "up"]);
        await run(["ip", "-n", nsB, "link", "set", b.interface, ...this.bridgePort(b), "up"]);
      }
      log(this.opts.quiet, `${this.topo.links.length} links created`);
      for (const node of this.topo.nodes) {
        for (const cmd of node.exec) {
          try {
            await run(["sh", "-c", withHostPaths(node, cmd)], { netns: this.ns(node.name), env: node.env });
          } catch (e) {
            throw new LabError(`node ${node.name}: exec "${cmd}" failed: ${(e as Error).message}`);
          }
        }
      }
      for (const node of this.topo.nodes.filter(isFrrNode)) {
        state.frrNamespaces.push(this.ns(node.name));
        this.writeState(state);
        await this.startFrr(node);
      }
      if (!this.opts.noCmd) {
        for (const node of this.topo.nodes) if (node.cmd && !isFrrNode(node)) await this.startCmd(node.name);
      }
      log(this.opts.quiet, `up in ${Date.now() - started} ms (prefix ${this.prefix})`);
    } catch (e) {
      await this.down().catch(() => undefined);
      throw e;
    }
  }

  /** `ip link set` arguments that make a link end on a bridge node a port of its bridge. */
  private bridgePort(end: Endpoint): string[] {
    const node = this.node(end.node);
    return isBridgeNode(node) ? ["master", bridgeDevice(node)] : [];
  }

  private async startFrr(node: LabNode): Promise<void> {
    const ns = this.ns(node.name);
    const conf = bindFor(node, "/etc/frr/frr.conf");
    if (!conf) throw new LabError(`node ${node.name}: an FRR node needs a bind to /etc/frr/frr.conf`);
    if (!existsSync(conf))
      throw new LabError(`node ${node.name}: ${conf} (bound to /etc/frr/frr.conf) does not exist`);
    const daemons = frrDaemons(bindFor(node, "/etc/frr/daemons"));
    const dir = join(this.stateDir, node.name);
    mkdirSync(dir, { recursive: true });
    const runDir = join(FRR_RUN, ns);
    mkdirSync(runDir, { recursive: true });
    const frr = frrIds();
    chownSync(dir, frr.uid, frr.gid);
    chownSync(runDir, frr.uid, frr.gid);
    const confCopy = join(dir, "frr.conf");
    copyFileSync(conf, confCopy);
    chownSync(confCopy, frr.uid, frr.gid);
    // The daemons start empty; vtysh then hands each of them its part of the
    // integrated config, as FRR's own start-up does (a daemon reading the whole
    // file itself stops at the first `exit` of a section it does not know).
    const empty = join(dir, "empty.conf");
    writeFileSync(empty, "");
    chownSync(empty, frr.uid, frr.gid);
    for (const d of daemons) {
      const argv = [join(FRR_BIN, d), "-d", "-N", ns, "-f", empty, "-i", join(runDir, `${d}.pid`)];
      await run([...argv, "--log", `file:${join(dir, `${d}.log`)}`], { netns: ns }).catch((e: Error) => {
        throw new LabError(`node ${node.name}: ${d} did not start: ${e.message}`);
      });
      if (d === "zebra") {
        await waitFor(`${node.name}: zebra socket`, () => existsSync(join(runDir, "zserv.api")), 5000);
      }
    }
    for (const d of daemons) {
      await waitFor(`${node.name}: ${d} vty socket`, () => existsSync(join(runDir, `${d}.vty`)), 5000);
    }
    const applied = await tryRun(["vtysh", "-N", ns, "-f", confCopy], { netns: ns });
    const problems = `${applied.stdout}\n${applied.stderr}`
      .split("\n")
      .filter((l) => l.trim() && !l.includes("vtysh.conf"));
    if (applied.code !== 0 || problems.length) {
      throw new LabError(`node ${node.name}: FRR refused part of ${conf}:\n  ${problems.join("\n  ")}`);
    }
  }

  /**
   * Starts a node's main command (containerlab `cmd`) in its namespace, in the
   * background. Paths that the node binds are replaced by their host files,
   * and `egressd` runs this checkout's build. Output goes to STATE/NODE/cmd.log.
   */
  async startCmd(nodeName: string): Promise<number> {
    const node = this.node(nodeName);
    if (!node.cmd) throw new LabError(`node ${nodeName} has no cmd`);
    const cmd = withHostPaths(node, node.cmd);
    const dir = join(this.stateDir, nodeName);
    mkdirSync(dir, { recursive: true });
    const fd = openSync(join(dir, "cmd.log"), "a");
    const pid = spawnDetached(["sh", "-c", `exec ${cmd}`], {
      netns: this.ns(nodeName),
      logFile: fd,
      env: { ...node.env, PATH: `${REPO_BIN}:${process.env.PATH ?? "/usr/sbin:/usr/bin:/sbin:/bin"}` },
    });
    closeSync(fd);
    const state = this.readState();
    if (state) this.writeState({ ...state, cmds: { ...state.cmds, [nodeName]: pid } });
    return pid;
  }

  /** pid of a node's running main command, if it runs. */
  cmdPid(nodeName: string): number | undefined {
    const pid = this.readState()?.cmds?.[nodeName];
    return pid !== undefined && isRunning(pid) ? pid : undefined;
  }

  /** Path of a node's main command log. */
  cmdLog(nodeName: string): string {
    return join(this.stateDir, nodeName, "cmd.log");
  }

  /** Runs a command inside a node. On FRR nodes `vtysh` is pointed at the node's FRR instance. */
  exec(node: string, argv: readonly string[], timeoutMs?: number): Promise<RunResult> {
    return run(this.execArgv(node, argv), { netns: this.ns(node), timeoutMs });
  }

  tryExec(node: string, argv: readonly string[], timeoutMs?: number) {
    return tryRun(this.execArgv(node, argv), { netns: this.ns(node), timeoutMs });
  }

  execArgv(node: string, argv: readonly string[]): string[] {
    const n = this.node(node);
    if (isFrrNode(n) && argv[0] === "vtysh" && !argv.includes("-N")) {
      return ["vtysh", "-N", this.ns(node), ...argv.slice(1)];
    }
    return [...argv];
  }

  /** vtysh in an FRR node, parsed as JSON (for `show ... json`). */
  async vtyshJson<T = unknown>(node: string, command: string): Promise<T> {
    const { stdout } = await this.exec(node, ["vtysh", "-c", command]);
    try {
      return JSON.parse(stdout) as T;
    } catch {
      throw new LabError(`${node}: "${command}" did not return JSON: ${stdout.slice(0, 200)}`);
    }
  }

  /** Namespaces of this lab that exist now. */
  async existingNamespaces(): Promise<string[]> {
    const { stdout } = await run(["ip", "netns", "list"]);
    const present = new Set(stdout.split("\n").map((l) => l.split(" ")[0]));
    const ours = new Set([
      ...this.topo.nodes.map((n) => `${this.prefix}-${n.name}`),
      ...(this.readState()?.namespaces ?? []),
    ]);
    return [...ours].filter((ns) => present.has(ns));
  }

  /** Removes everything the lab created: processes, namespaces (and their links and bridges), FRR run dirs, state. */
  async down(): Promise<void> {
    const state = this.readState();
    const namespaces = new Set([...(state?.namespaces ?? []), ...(await this.existingNamespaces())]);
    try {
      await destroyNamespaces(namespaces);
    } catch (e) {
      throw new LabError((e as Error).message);
    }
    for (const node of this.topo.nodes)
      rmSync(join(FRR_RUN, `${this.prefix}-${node.name}`), { recursive: true, force: true });
    for (const ns of state?.frrNamespaces ?? []) rmSync(join(FRR_RUN, ns), { recursive: true, force: true });
    rmSync(this.stateDir, { recursive: true, force: true });
  }

  /** One line per node: namespace present, processes running, interfaces. */
  async status(): Promise<
    { node: string; namespace: string; up: boolean; processes: string[]; interfaces: string[] }[]
  > {
    const present = new Set(await this.existingNamespaces());
    const out = [];
    for (const node of this.topo.nodes) {
      const ns = `${this.prefix}-${node.name}`;
      const up = present.has(ns);
      let processes: string[] = [];
      let interfaces: string[] = [];
      if (up) {
        const pids = (await tryRun(["ip", "netns", "pids", ns])).stdout.split(/\s+/).filter(Boolean);
        processes = pids.map((p) => {
          try {
            return readFileSync(`/proc/${p}/comm`, "utf8").trim();
          } catch {
            return p;
          }
        });
        const links = JSON.parse((await run(["ip", "-n", ns, "-j", "link", "show"])).stdout) as {
          ifname: string;
          operstate: string;
        }[];
        interfaces = links
          .filter((l) => l.ifname !== "lo")
          .map((l) => `${l.ifname}(${l.operstate.toLowerCase()})`);
      }
      out.push({ node: node.name, namespace: ns, up, processes, interfaces });
    }
    return out;
  }
}

/**
 * A node's command with every bound container path replaced by its host file:
 * without Docker there is no mount namespace to put the file where the
 * container would see it.
 */
export function withHostPaths(node: LabNode, command: string): string {
  let out = command;
  for (const b of [...node.binds].sort((x, y) => y.target.length - x.target.length)) {
    out = out.split(b.target).join(b.source);
  }
  return out;
}

/** Which FRR daemons to start, from the node's bound `daemons` file (FRR's format: `bgpd=yes`). */
export function frrDaemons(daemonsFile: string | undefined): string[] {
  if (!daemonsFile) return FRR_DEFAULT_DAEMONS;
  if (!existsSync(daemonsFile))
    throw new LabError(`${daemonsFile} (bound to /etc/frr/daemons) does not exist`);
  const enabled = new Set(["zebra"]);
  for (const line of readFileSync(daemonsFile, "utf8").split("\n")) {
    const m = /^\s*([a-z0-9]+)\s*=\s*(yes|no)\s*$/.exec(line);
    if (m && m[2] === "yes" && m[1]) enabled.add(m[1]);
  }
  if (enabled.has("bgpd")) enabled.add("staticd");
  return FRR_KNOWN_DAEMONS.filter((d) => enabled.has(d) && existsSync(join(FRR_BIN, d)));
}

function frrIds(): { uid: number; gid: number } {
  const line = readFileSync("/etc/passwd", "utf8")
    .split("\n")
    .find((l) => l.startsWith("frr:"));
  if (!line) throw new LabError("the frr user does not exist: is the frr package installed?");
  const [, , uid, gid] = line.split(":");
  return { uid: Number(uid), gid: Number(gid) };
}
