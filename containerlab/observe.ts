// Reading what a running lab does: BGP routes and sessions as FRR holds them,
// routes in a node's kernel, and the source address a server sees.
// Shared by the demo and the end-to-end tests.
import { fileURLToPath } from "node:url";
import { sleep, type Lab } from "./runner.js";

export interface FrrPath {
  prefix: string;
  nextHop: string;
  asPath: string;
  best: boolean;
  multipath: boolean;
  med?: number;
  communities?: string;
  peer: string;
}

interface FrrRouteJson {
  valid?: boolean;
  bestpath?: boolean;
  multipath?: boolean;
  path: string;
  metric?: number;
  community?: { string: string };
  peerId: string;
  nexthops: { ip: string }[];
}

/** Every path in an FRR node's BGP table for one family, by prefix. */
export async function bgpTable(lab: Lab, node: string, family: 4 | 6 = 4): Promise<Map<string, FrrPath[]>> {
  const af = family === 4 ? "ipv4" : "ipv6";
  const j = await lab.vtyshJson<{ routes?: Record<string, FrrRouteJson[]> }>(
    node,
    `show bgp ${af} unicast json`,
  );
  const out = new Map<string, FrrPath[]>();
  for (const [prefix, paths] of Object.entries(j.routes ?? {})) {
    out.set(
      prefix,
      paths.map((p) => ({
        prefix,
        nextHop: p.nexthops[0]?.ip ?? "",
        asPath: p.path,
        best: p.bestpath === true,
        multipath: p.multipath === true || p.bestpath === true,
        ...(p.metric !== undefined ? { med: p.metric } : {}),
        ...(p.community ? { communities: p.community.string } : {}),
        peer: p.peerId,
      })),
    );
  }
  return out;
}

/** What a neighbour sent, before the router's inbound policy (needs soft-reconfiguration inbound). */
export async function receivedRoutes(lab: Lab, node: string, neighbor: string): Promise<string[]> {
  const af = neighbor.includes(":") ? "ipv6" : "ipv4";
  const j = await lab.vtyshJson<{ receivedRoutes?: Record<string, unknown> }>(
    node,
    `show bgp ${af} unicast neighbors ${neighbor} received-routes json`,
  );
  return Object.keys(j.receivedRoutes ?? {}).sort();
}

/** BGP session state of each neighbour of an FRR node, by neighbour address. */
export async function bgpSessions(
  lab: Lab,
  node: string,
): Promise<Map<string, { state: string; desc?: string }>> {
  const j = await lab.vtyshJson<Record<string, { peers?: Record<string, { state: string; desc?: string }> }>>(
    node,
    "show bgp summary json",
  );
  const out = new Map<string, { state: string; desc?: string }>();
  for (const af of Object.values(j)) for (const [peer, p] of Object.entries(af.peers ?? {})) out.set(peer, p);
  return out;
}

/** The next hops a node's kernel uses for a destination prefix (several for ECMP). */
export async function kernelNextHops(lab: Lab, node: string, prefix: string): Promise<string[]> {
  const v6 = prefix.includes(":");
  const { stdout } = await lab.exec(node, ["ip", v6 ? "-6" : "-4", "-j", "route", "show", prefix]);
  const routes = JSON.parse(stdout || "[]") as { gateway?: string; nexthops?: { gateway: string }[] }[];
  return routes
    .flatMap((r) => (r.nexthops ? r.nexthops.map((n) => n.gateway) : r.gateway ? [r.gateway] : []))
    .sort();
}

const WHOAMI = fileURLToPath(new URL("../test/fixtures/whoami.js", import.meta.url));

/** Starts the whoami HTTP server (answers with the client address it sees) on a node. */
export async function startWhoami(lab: Lab, node: string, port = 8080): Promise<void> {
  const { spawnDetached } = await import("../lib/exec.js");
  spawnDetached(["node", WHOAMI, String(port)], { netns: lab.ns(node) });
  for (let i = 0; i < 50; i++) {
    const r = await lab.tryExec(node, ["curl", "-s", "-m", "1", `http://127.0.0.1:${port}/`]);
    if (r.code === 0) return;
    await sleep(100);
  }
  throw new Error(`whoami on ${node} did not start`);
}

/**
 * Asks the whoami server at `url` from `node`, with source address `source`:
 * returns the address the server saw, or undefined if it could not be reached.
 */
export async function seenAs(
  lab: Lab,
  node: string,
  url: string,
  source?: string,
  timeoutS = 2,
): Promise<string | undefined> {
  const argv = ["curl", "-s", "-m", String(timeoutS), ...(source ? ["--interface", source] : []), url];
  const r = await lab.tryExec(node, argv, (timeoutS + 2) * 1000);
  return r.code === 0 ? r.stdout.trim() : undefined;
}

/** BFD session status ("up", "down", "init", ...) of an FRR node, by peer address. */
export async function bfdPeers(lab: Lab, node: string): Promise<Map<string, string>> {
  const j = await lab.vtyshJson<{ peer: string; status: string }[]>(node, "show bfd peers json");
  return new Map(j.map((p) => [p.peer, p.status]));
}
