// Connections that survive a gateway failure (docs/connection-sync.md): 64
// long-lived TCP streams from pod-a through DC A's two gateways, which share
// their NAT state, while the gateway carrying most of them is frozen, killed
// (kill -9 of egressd) and drained, and brought back after each. Every
// connection must survive each step with no gap or duplicate in its stream.
// The stalls are printed (bench/connections.ts measures them over trials).
import test, { type ExecutionContext } from "ava";
import { spawn } from "node:child_process";
import { Lab, waitFor } from "../../containerlab/runner.js";
import { loadTopology } from "../../containerlab/topology.js";
import {
  ConnectionTrials,
  DC_A,
  PORT,
  serving,
  standingBy,
  type Gateway,
  type Trigger,
} from "../../containerlab/connection-trials.js";
import { freezeNode, nodeProcesses, TWO_DC_GATEWAYS as GW } from "../../containerlab/failover.js";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { addThirdGateway } from "../../containerlab/three-gateways.js";
import { RUN_ID } from "../helpers/netns.js";
import { TWO_DC } from "../helpers/paths.js";
import type { Topology } from "../../containerlab/topology.js";
import { parseConntrackdStats, type ConntrackdStats } from "../../core/plan/sync.js";

/**
 * Watches a gateway's conntrack table for the destruction of the streams'
 * entries (the server's port); the returned function stops and gives them.
 */
function destroysOf(t: ExecutionContext, lab: Lab, gateway: string): () => string[] {
  const c = spawn(
    "ip",
    [
      "netns",
      "exec",
      lab.ns(gateway),
      "conntrack",
      "-E",
      "-e",
      "DESTROY",
      "-p",
      "tcp",
      "--dport",
      String(PORT),
    ],
    { stdio: ["ignore", "pipe", "ignore"] },
  );
  t.teardown(() => c.kill("SIGKILL"));
  let text = "";
  c.stdout.on("data", (d: Buffer) => (text += d.toString()));
  return () => {
    c.kill("SIGKILL");
    return text.split("\n").filter((l) => l.includes("DESTROY"));
  };
}

/**
 * A gateway's conntrackd daemons: `conntrackd -C FILE` and nothing after.
 * egressd also runs conntrackd as a client of the daemon (`-s` for its
 * metrics, `-R`, `-B`, `-n`), briefly and without the library.
 */
async function conntrackdDaemons(lab: Lab, gateway: string): Promise<{ pid: number; stat: string[] }[]> {
  const out: { pid: number; stat: string[] }[] = [];
  for (const p of await nodeProcesses(lab, gateway, "conntrackd")) {
    try {
      const argv = readFileSync(`/proc/${p.pid}/cmdline`, "utf8").split("\0").filter(Boolean);
      if (argv.length === 3 && argv[1] === "-C") out.push(p);
    } catch {
      // ended meanwhile: a client
    }
  }
  return out;
}

/** A lab of `topo`, removed when the test ends, up with `gateways` serving. */
async function servingLab(
  t: ExecutionContext,
  topo: Topology,
  name: string,
  gateways: readonly Gateway[] = DC_A,
): Promise<Lab> {
  const lab = new Lab(topo, `${RUN_ID}${name}`, { quiet: true });
  t.teardown(() => lab.down());
  await lab.up();
  for (const g of gateways) await serving(lab, g, 90_000);
  return lab;
}

test.serial(
  "64 connections survive freeze, kill -9 and drain of their gateway, and its return",
  async (t) => {
    const lab = await servingLab(t, loadTopology(TWO_DC), "sync");
    // Every conntrackd in the normal class (policy 0, stat field 41), not the real-time class it
    // would put itself in: below the BFD helper and egressd's loop (core/plan/sync.ts); and paced.
    for (const g of DC_A) {
      const ps = await conntrackdDaemons(lab, g);
      t.true(ps.length >= 1, `${g} runs conntrackd`);
      for (const p of ps) {
        t.is(p.stat[38], "0", `${g}'s conntrackd ${p.pid}: SCHED_OTHER`);
        // And paced: it reads the kernel's events in batches (native/event-pace.c).
        t.true(
          readFileSync(`/proc/${p.pid}/maps`, "utf8").includes("egressd-event-pace.so"),
          `${g}'s conntrackd ${p.pid} has the pacing library loaded`,
        );
      }
    }
    // conntrackd's own counters reach /metrics, read from conntrackd -s: none refused here.
    const metrics = (await lab.exec("gw-a1", ["curl", "-sf", "http://127.0.0.1:9469/metrics"])).stdout;
    for (const name of [
      "egressd_conntrackd_cache_refused_total",
      "egressd_conntrackd_injections_failed_total",
      "egressd_conntrackd_messages_lost_total",
    ])
      t.regex(metrics, new RegExp(`^${name}\\{conntrackd="conntrackd"\\} \\d+$`, "m"), name);
    t.regex(metrics, /^egressd_conntrackd_cache_refused_total\{conntrackd="conntrackd"\} 0$/m);
    const trials = new ConnectionTrials(lab);
    t.teardown(() => trials.stop());
    await trials.start(64);
    const carried = await trials.carried();
    t.log(`carried: ${[...carried].map(([g, n]) => `${g} ${n}`).join(", ")}`);

    for (const trigger of ["freeze", "kill", "drain"] as Trigger[]) {
      const g = await trials.busiest();
      const { result, restore } = await trials.fail(trigger, g);
      t.log(
        `${result.trigger} ${g}: ${result.survived}/${result.before} survived, longest stall ${result.maxStallMs} ms`,
      );
      t.is(
        result.survived,
        result.before,
        `${trigger} of ${g}: every connection survives (lost: ${result.lost.join("; ")})`,
      );
      t.is(result.before, 64);
      const back = await trials.failback(trigger, g, restore);
      t.log(
        `${back.trigger} ${g}: ${back.survived}/${back.before} survived, longest stall ${back.maxStallMs} ms`,
      );
      t.is(
        back.survived,
        back.before,
        `${g} back after ${trigger}: every connection survives (lost: ${back.lost.join("; ")})`,
      );
    }
    t.deepEqual(trials.anomalies(), [], "no gap, duplicate or bad record in any stream");
  },
);

/** `conntrackd -s` of the conntrackd named `name` (its files in egressd's run directory) on `node`. */
async function conntrackdStats(lab: Lab, node: string, name: string): Promise<ConntrackdStats> {
  const { stdout: ns } = await lab.exec(node, ["readlink", "/proc/self/ns/net"]);
  const runDir = `/run/egressd/net-${/\[(\d+)\]/.exec(ns)?.[1]}`;
  const { stdout } = await lab.exec(node, ["conntrackd", "-C", `${runDir}/${name}.conf`, "-s"]);
  return parseConntrackdStats(stdout);
}

test.serial(
  "all of DC A lost: DC B's gateway holds DC A's connections and carries every one of them, and DC A takes them back",
  async (t) => {
    const lab = await servingLab(t, loadTopology(TWO_DC), "syncs");
    await standingBy(lab);
    const trials = new ConnectionTrials(lab);
    t.teardown(() => trials.stop());
    await trials.start(64);
    // gw-b1 has them before anything fails: from both of DC A's gateways, over the fabric.
    await waitFor(
      "gw-b1 holding DC A's 64 connections",
      async () => {
        const { stdout } = await lab.exec("gw-b1", ["conntrack", "-L", "-p", "tcp", "--dport", String(PORT)]);
        return stdout.split("\n").filter((l) => l.includes("ESTABLISHED")).length >= 64;
      },
      15_000,
    );
    const { result, restore } = await trials.fail("dc-a", "gw-a1");
    t.log(
      `${result.trigger}: ${result.survived}/${result.before} survived, longest stall ${result.maxStallMs} ms`,
    );
    t.is(result.before, 64);
    t.is(
      result.survived,
      result.before,
      `every connection survives the loss of its site (lost: ${result.lost.join("; ")})`,
    );
    const back = await trials.failback("dc-a", "gw-a1", restore);
    t.log(`${back.trigger}: ${back.survived}/${back.before} survived, longest stall ${back.maxStallMs} ms`);
    t.is(back.survived, back.before, `and DC A's return (lost: ${back.lost.join("; ")})`);
    t.deepEqual(trials.anomalies(), [], "no gap, duplicate or bad record in any stream");
    // One way: what gw-b1 holds goes nowhere, so nothing comes back to DC A from it.
    for (const g of DC_A) {
      const s = await conntrackdStats(lab, g, "conntrackd-site-gw-b1");
      t.is(s.injected.created + s.injected.updated, 0, `${g} got no state back from gw-b1`);
    }
    for (const g of DC_A) {
      const s = await conntrackdStats(lab, "gw-b1", `conntrackd-site-${g}`);
      t.true(s.injected.created > 0, `gw-b1 took ${g}'s states into its table`);
      t.is(s.local, 0, `gw-b1's conntrackd for ${g} keeps nothing to send`);
    }
  },
);

test.serial(
  "traffic to a member's egress IP without synced state is dropped by the backup, not looped back",
  async (t) => {
    const lab = await servingLab(t, loadTopology(TWO_DC), "syncg");
    // gw-a1 frozen: gw-a2's backup path for 192.0.2.11 is the best one at tor-a.
    const thaw = await freezeNode(lab, "gw-a1");
    t.teardown(() => thaw());
    await waitFor(
      "the backup path",
      async () => {
        const { stdout } = await lab.exec("tor-a", ["ip", "-4", "route", "show", `${GW["gw-a1"].web}/32`]);
        return stdout.includes(GW["gw-a2"].link);
      },
      15_000,
    );
    const counter = async () => {
      const { stdout } = await lab.exec("gw-a2", [
        "/usr/sbin/nft",
        "list",
        "chain",
        "inet",
        "egressd_guard",
        "forward",
      ]);
      return Number(/ip daddr @backup4 counter packets (\d+)/.exec(stdout)?.[1] ?? NaN);
    };
    const before = await counter();
    // A new connection attempt (no state anywhere) from the server to gw-a1's egress IP.
    const ping = await lab.tryExec("server", ["ping", "-c", "3", "-i", "0.2", "-W", "1", GW["gw-a1"].web]);
    t.not(ping.code, 0, "nobody answers");
    t.notRegex(ping.stdout, /Time to live exceeded/, "no loop between the ToR and the gateway");
    t.true((await counter()) - before >= 3, "gw-a2's guard dropped them");
    // tor-a still forwards nothing back towards gw-a2 for it: its own route was the only way in.
    const { stdout } = await lab.exec("gw-a2", ["ip", "-4", "addr", "show"]);
    t.false(stdout.includes(GW["gw-a1"].web), "the backup never holds the owner's address");
  },
);

test.serial(
  "a third gateway leaves the ECMP group and joins it again: the connections that move between live gateways survive",
  async (t) => {
    const dir = mkdtempSync(join(tmpdir(), "egressd-test-ecmp-"));
    t.teardown(() => rmSync(dir, { recursive: true, force: true }));
    const lab = await servingLab(t, addThirdGateway(loadTopology(TWO_DC), dir), "sync3", [...DC_A, "gw-a3"]);
    // In a group of three too, every conntrackd has the library loaded (native/event-pace.c).
    for (const g of [...DC_A, "gw-a3"])
      for (const p of await conntrackdDaemons(lab, g))
        t.true(
          readFileSync(`/proc/${p.pid}/maps`, "utf8").includes("egressd-event-pace.so"),
          `${g}'s conntrackd ${p.pid} has the library loaded`,
        );
    const trials = new ConnectionTrials(lab);
    t.teardown(() => trials.stop());
    await trials.start(64);
    const { result, restore } = await trials.fail("ecmp", "gw-a3");
    t.log(
      `${result.trigger}: ${result.survived}/${result.before} survived, longest stall ${result.maxStallMs} ms`,
    );
    t.is(result.survived, result.before, `lost: ${result.lost.join("; ")}`);
    // gw-a3 comes back and asks for the others' state; they answer to the whole group with every
    // entry they hold. None of those may replace an entry gw-a1 or gw-a2 has: conntrackd would
    // destroy it and create it again, and a packet in between is taken for a new connection.
    const watches = DC_A.map((g) => [g, destroysOf(t, lab, g)] as const);
    const back = await trials.failback("ecmp", "gw-a3", restore);
    t.log(`${back.trigger}: ${back.survived}/${back.before} survived, longest stall ${back.maxStallMs} ms`);
    t.is(back.survived, back.before, `lost: ${back.lost.join("; ")}`);
    for (const [g, stop] of watches) {
      const gone = stop();
      t.deepEqual(gone, [], `${g} destroyed ${gone.length} of the streams' entries while gw-a3 came back`);
    }
    t.deepEqual(trials.anomalies(), []);
  },
);
