// Shared topology and helpers of the data-plane integration tests and benchmarks.
//
//   pod (10.244.1.10, .11, fd00:244::10, ::11)
//    | p0 -- g0
//   gw (forwarding; egress IPs on lo; egressd's reconcilers run here)
//    | u1 -- s1 (100.64.1.0/24, 2001:db8:a::/64)    main table + policies a, v6
//    | u2 -- s2 (100.64.2.0/24)                     policy b only (no main route)
//   server (203.0.113.10, 203.0.113.200, 198.51.100.10, 2001:db8:100::10 on lo)
import { referenceNat } from "./reference-nat.js";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { run, spawnDetached } from "../../lib/exec.js";
import type { KernelState, NatPlan } from "../../core/state.js";
import type { Sandbox } from "./netns.js";

export const FIXTURE = fileURLToPath(new URL("../fixtures/dataplane-apply.js", import.meta.url));
export const SERVER_PORT = 8080;

/** Builds the pod -- gw -- server topology; returns nothing, names come from the sandbox. */
export async function buildTopology(s: Sandbox, opts: { ipv6?: boolean } = {}): Promise<void> {
  await s.addNode("pod");
  await s.addNode("gw", { forwarding: true });
  await s.addNode("srv");
  await s.link("pod", "p0", "gw", "g0");
  await s.link("gw", "u1", "srv", "s1");
  await s.link("gw", "u2", "srv", "s2");
  await s.sh(
    "pod",
    `ip addr add 10.244.1.10/24 dev p0; ip addr add 10.244.1.11/24 dev p0
     ip route add default via 10.244.1.1`,
  );
  await s.sh(
    "gw",
    `ip addr add 10.244.1.1/24 dev g0; ip addr add 100.64.1.1/24 dev u1; ip addr add 100.64.2.1/24 dev u2
     ip route add 203.0.113.0/24 via 100.64.1.2 dev u1`,
  );
  await s.sh(
    "srv",
    `ip addr add 100.64.1.2/24 dev s1; ip addr add 100.64.2.2/24 dev s2
     ip addr add 203.0.113.10/32 dev lo; ip addr add 203.0.113.200/32 dev lo; ip addr add 198.51.100.10/32 dev lo
     ip route add 192.0.2.11/32 via 100.64.1.1 dev s1; ip route add 192.0.2.12/32 via 100.64.2.1 dev s2
     ip route add 10.244.0.0/16 via 100.64.1.1 dev s1`,
  );
  if (opts.ipv6 !== false) {
    await s.sh(
      "pod",
      `ip -6 addr add fd00:244::10/64 dev p0 nodad; ip -6 addr add fd00:244::11/64 dev p0 nodad
       ip -6 route add default via fd00:244::1`,
    );
    await s.sh(
      "gw",
      `ip -6 addr add fd00:244::1/64 dev g0 nodad; ip -6 addr add 2001:db8:a::1/64 dev u1 nodad`,
    );
    await s.sh(
      "srv",
      `ip -6 addr add 2001:db8:a::2/64 dev s1 nodad; ip -6 addr add 2001:db8:100::10/128 dev lo
       ip -6 route add 2001:db8:e::/64 via 2001:db8:a::1 dev s1; ip -6 route add fd00:244::/64 via 2001:db8:a::1 dev s1`,
    );
  }
}

/** The reference desired state for the topology. */
export function referenceState(): KernelState {
  const nat: NatPlan = referenceNat();
  return {
    addresses: [
      { family: 4, address: "192.0.2.11", prefixLength: 32, interface: "lo" },
      { family: 4, address: "192.0.2.12", prefixLength: 32, interface: "lo" },
      { family: 6, address: "2001:db8:e::11", prefixLength: 128, interface: "lo" },
    ],
    routes: [
      { family: 4, table: 100, destination: "203.0.113.0/24", gateway: "100.64.1.2", interface: "u1" },
      { family: 4, table: 101, destination: "198.51.100.0/24", gateway: "100.64.2.2", interface: "u2" },
      { family: 6, table: 102, destination: "2001:db8:100::/48", gateway: "2001:db8:a::2", interface: "u1" },
    ],
    rules: [
      { family: 4, priority: 1000, fwmark: 0x100, fwmask: 0xff00, table: 100 },
      { family: 4, priority: 1001, fwmark: 0x200, fwmask: 0xff00, table: 101 },
      { family: 6, priority: 1002, fwmark: 0x300, fwmask: 0xff00, table: 102 },
    ],
    nat,
  };
}

let stateDir: string | undefined;
let stateSeq = 0;

/** Writes a KernelState to a temporary JSON file for the fixture. */
export function stateFile(state: KernelState): string {
  if (!stateDir) {
    const dir = mkdtempSync(join(tmpdir(), "egressd-dp-"));
    stateDir = dir;
    process.once("exit", () => rmSync(dir, { recursive: true, force: true }));
  }
  const f = join(stateDir!, `state-${stateSeq++}.json`);
  writeFileSync(f, JSON.stringify(state));
  return f;
}

/** Runs the reconcile fixture inside `node`'s namespace. */
export async function fixture(s: Sandbox, node: string, args: string[]): Promise<unknown> {
  const { stdout } = await run(["node", FIXTURE, ...args], { netns: s.ns(node), timeoutMs: 120_000 });
  return JSON.parse(stdout.trim().split("\n").pop() ?? "null");
}

const SERVER_JS = `
const net = require("net");
for (const host of ["0.0.0.0", "::"]) {
  net.createServer((c) => { c.on("error", () => {}); c.end(c.remoteAddress.replace(/^::ffff:/, "") + "\\n"); })
    .listen({ port: ${SERVER_PORT}, host, ipv6Only: host === "::" });
}`;

/** Starts the "who am I" TCP server in the server namespace: it answers with the client's address. */
export async function startServer(s: Sandbox, node = "srv"): Promise<void> {
  spawnDetached(["node", "-e", SERVER_JS], { netns: s.ns(node) });
  for (let i = 0; i < 50; i++) {
    const r = await s.tryExec(node, ["ss", "-Hltn", `sport = :${SERVER_PORT}`]);
    if (r.stdout.split("\n").filter(Boolean).length >= 2) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error("server did not start");
}

const CLIENT_JS = `
const net = require("net");
const [host, port, local] = process.argv.slice(1);
const c = net.connect({ host, port: Number(port), localAddress: local, timeout: 3000 });
let out = "";
c.on("data", (d) => (out += d));
c.on("end", () => { process.stdout.write(out); });
c.on("timeout", () => { process.stderr.write("timeout\\n"); process.exit(3); });
c.on("error", (e) => { process.stderr.write(String(e) + "\\n"); process.exit(4); });`;

/** Connects from `from` (source address `local`) to host:8080; returns the source address the server saw. */
export async function seenBy(s: Sandbox, host: string, local: string, from = "pod"): Promise<string> {
  const { stdout } = await s.exec(from, ["node", "-e", CLIENT_JS, host, String(SERVER_PORT), local], 10_000);
  return stdout.trim();
}

/**
 * Adds a fourth policy "c" to a state: egress IP 192.0.2.13 for `destination`,
 * out of uplink u2 (table 103, mark 0x400). The crash and reload tests use it
 * to make a state that differs in every part.
 */
export function addPolicyC(st: KernelState, destination: string): KernelState {
  st.addresses.push({ family: 4, address: "192.0.2.13", prefixLength: 32, interface: "lo" });
  st.routes.push({ family: 4, table: 103, destination, gateway: "100.64.2.2", interface: "u2" });
  st.rules.push({ family: 4, priority: 1003, fwmark: 0x400, fwmask: 0xff00, table: 103 });
  st.nat.policies.push({ name: "c", family: 4, egressIP: "192.0.2.13", mark: 0x400, uplinkInterface: "u2" });
  st.nat.classes[0]!.destinations.push({ interval: destination, policy: "c" });
  return st;
}
