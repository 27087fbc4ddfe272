// egressd on the two-dc lab's gateways, end to end: what the ToRs learn over
// BGP, where pod traffic goes and which source the server sees, and what
// happens on reload, on kill -9 of egressd or gobgpd, and on a clean stop.
import test from "ava";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Lab, waitFor } from "../../containerlab/runner.js";
import { loadTopology, rebindCopies } from "../../containerlab/topology.js";
import {
  bfdPeers,
  bgpSessions,
  bgpTable,
  kernelNextHops,
  receivedRoutes,
  seenAs,
  startWhoami,
} from "../../containerlab/observe.js";
import { isRunning, tryRun } from "../../lib/exec.js";
import { standingBy } from "../../containerlab/connection-trials.js";
import { RUN_ID } from "../helpers/netns.js";
import { TWO_DC } from "../helpers/paths.js";

const topo = loadTopology(TWO_DC);
const tmp = mkdtempSync(join(tmpdir(), "egressd-e2e-"));
// The gateways run from copies of their configs, so the reload test can change gw-a1's.
rebindCopies(topo, "/etc/egressd/egressd.yaml", tmp, (text) => text);
const gwA1Config = topo.nodes
  .find((n) => n.name === "gw-a1")!
  .binds.find((b) => b.target === "/etc/egressd/egressd.yaml")!.source;
const lab = new Lab(topo, `${RUN_ID}e2e`, { quiet: true });

const WEB = "http://203.0.113.10:8080/";
const PARTNER = "http://198.51.100.10:8080/";
const WEB6 = "http://[2001:db8:203::10]:8080/";

async function established(node: string, desc: string[]): Promise<boolean> {
  const s = await bgpSessions(lab, node);
  const ours = [...s.values()].filter((p) => p.desc && desc.includes(p.desc));
  return ours.length === desc.length * 2 && ours.every((p) => p.state === "Established");
}

async function paths(node: string, prefix: string) {
  return (await bgpTable(lab, node, prefix.includes(":") ? 6 : 4)).get(prefix) ?? [];
}

/** tor-a's paths for `prefix` from the gateway at `hop` (its own, or a backup). */
async function pathsFrom(prefix: string, hop: string) {
  return (await paths("tor-a", prefix)).filter((p) => p.nextHop === hop);
}

async function pidOf(node: string, comm: string): Promise<number | undefined> {
  const { stdout } = await tryRun(["ip", "netns", "pids", lab.ns(node)]);
  for (const pid of stdout.split(/\s+/).filter(Boolean)) {
    try {
      const c = readFileSync(`/proc/${pid}/comm`, "utf8").trim();
      if (c === comm && isRunning(Number(pid))) return Number(pid);
    } catch {
      // gone meanwhile
    }
  }
  return undefined;
}

/** Every route the lab's gateways advertise is at the ToRs (probes up, hold-downs over). */
async function converged(): Promise<boolean> {
  const a = await bgpTable(lab, "tor-a");
  const b = await bgpTable(lab, "tor-b");
  const a6 = await bgpTable(lab, "tor-a", 6);
  const from = (t: Map<string, { peer: string }[]>, prefix: string) =>
    (t.get(prefix) ?? []).map((p) => p.peer);
  return (
    ["10.1.1.1", "10.1.2.1"].every(
      (g) => from(a, "203.0.113.0/24").includes(g) && from(a, "198.51.100.0/24").includes(g),
    ) &&
    ["fd00:1:1::2", "fd00:1:2::2"].every((g) => from(a6, "2001:db8:203::/48").includes(g)) &&
    from(b, "203.0.113.0/24").includes("10.2.1.1") &&
    from(b, "198.51.100.0/24").includes("10.2.1.1")
  );
}

test.before(async () => {
  await lab.up();
  await startWhoami(lab, "server");
  await waitFor("every gateway route at the ToRs", converged, 60_000);
  await waitFor("tor-a <-> gateways", () => established("tor-a", ["gw-a1", "gw-a2"]), 60_000);
  await waitFor("tor-b <-> gw-b1", () => established("tor-b", ["gw-b1"]), 60_000);
  await waitFor(
    "ECMP at tor-a",
    async () => (await kernelNextHops(lab, "tor-a", "203.0.113.0/24")).length === 2,
    30_000,
  );
});

test.after.always(async () => {
  await lab.down();
  rmSync(tmp, { recursive: true, force: true });
});

test.serial(
  "the ToR learns egress IPs and served prefixes from both gateways and installs ECMP",
  async (t) => {
    const web = await paths("tor-a", "203.0.113.0/24");
    t.deepEqual(web.map((p) => p.nextHop).sort(), ["10.1.1.1", "10.1.2.1"]);
    t.true(
      web.every((p) => p.multipath && p.asPath === "65011"),
      JSON.stringify(web),
    );
    // Each egress IP: its owner's path is the best; the other DC A gateway's is the backup
    // (connection sync, AS path prepended), which takes over only when the owner's goes.
    for (const [ip, owner, backup] of [
      ["192.0.2.11/32", "10.1.1.1", "10.1.2.1"],
      ["192.0.2.12/32", "10.1.2.1", "10.1.1.1"],
    ] as const) {
      const p = await paths("tor-a", ip);
      t.is(p.find((x) => x.best)?.nextHop, owner, ip);
      t.deepEqual(
        p.filter((x) => !x.best).map((x) => [x.nextHop, x.asPath]),
        [[backup, "65011 65011 65011 65011"]],
        ip,
      );
    }
    t.deepEqual((await paths("tor-a", "2001:db8:203::/48")).map((p) => p.peer).sort(), [
      "fd00:1:1::2",
      "fd00:1:2::2",
    ]);
    t.deepEqual(await kernelNextHops(lab, "tor-a", "203.0.113.0/24"), ["10.1.1.1", "10.1.2.1"]);
    t.deepEqual(await kernelNextHops(lab, "tor-a", "198.51.100.0/24"), ["10.1.1.1", "10.1.2.1"]);
    t.deepEqual(await kernelNextHops(lab, "tor-a", "2001:db8:203::/48"), ["fd00:1:1::2", "fd00:1:2::2"]);
  },
);

test.serial("a fresh start reaches Established once per gateway session, with no BFD teardown", async (t) => {
  // Both sides run BFD (the ToR with `neighbor X bfd`); egressd starts its BFD session
  // only after BGP is up, so FRR's re-registration at Established finds no Up session to lose.
  for (const [tor, gw] of [
    ["tor-a", "10.1.1.1"],
    ["tor-a", "10.1.2.1"],
    ["tor-a", "fd00:1:1::2"],
    ["tor-b", "10.2.1.1"],
  ] as const) {
    const j = await lab.vtyshJson<
      Record<
        string,
        { connectionsEstablished?: number; connectionsDropped?: number; lastResetDueTo?: string }
      >
    >(tor, `show bgp neighbors ${gw} json`);
    const n = j[gw];
    t.is(n?.connectionsEstablished, 1, `${tor} <- ${gw}: ${JSON.stringify(n?.lastResetDueTo)}`);
    t.is(n?.connectionsDropped, 0, `${tor} <- ${gw}`);
  }
  await waitFor(
    "BFD up behind it",
    async () => (await bfdPeers(lab, "tor-a")).get("10.1.1.1") === "up",
    10_000,
  );
  t.pass();
});

test.serial("data centre B advertises as backup: prepended, with its community, not preferred", async (t) => {
  const atB = await paths("tor-b", "203.0.113.0/24");
  const own = atB.find((p) => p.peer === "10.2.1.1");
  t.truthy(own, JSON.stringify(atB));
  t.is(own?.asPath, "65021 65021 65021 65021");
  t.false(own?.best);
  t.is(atB.find((p) => p.best)?.asPath, "65000 65010 65011");
  const j = await lab.vtyshJson<{ paths: { community?: { string: string }; peer?: { peerId: string } }[] }>(
    "tor-b",
    "show bgp ipv4 unicast 203.0.113.0/24 json",
  );
  t.true(
    j.paths.some((p) => p.peer?.peerId === "10.2.1.1" && p.community?.string === "65021:200"),
    JSON.stringify(j),
  );
  // At tor-a, DC B's path is known (via the core) but loses to the local gateways.
  t.true((await paths("tor-a", "203.0.113.0/24")).every((p) => p.nextHop !== "10.0.1.0"));
});

test.serial(
  "gateways advertise exactly what their config allows: no pod networks, no default route",
  async (t) => {
    // Before the ToR's own inbound filter (soft-reconfiguration inbound keeps what was sent).
    // Its own egress IPs, gw-a2's as backups (connection sync), and the served destinations.
    t.deepEqual(await receivedRoutes(lab, "tor-a", "10.1.1.1"), [
      "192.0.2.11/32",
      "192.0.2.12/32",
      "192.0.2.131/32",
      "192.0.2.132/32",
      "198.51.100.0/24",
      "203.0.113.0/24",
    ]);
    t.deepEqual(await receivedRoutes(lab, "tor-a", "fd00:1:1::2"), [
      "2001:db8:203::/48",
      "2001:db8:e::11/128",
      "2001:db8:e::12/128",
    ]);
    // gw-b1: its own, and DC A's as last-resort paths once it holds DC A's connections (acrossSites).
    await standingBy(lab);
    t.deepEqual(await receivedRoutes(lab, "tor-b", "10.2.1.1"), [
      "192.0.2.11/32",
      "192.0.2.12/32",
      "192.0.2.131/32",
      "192.0.2.132/32",
      "192.0.2.141/32",
      "192.0.2.21/32",
      "198.51.100.0/24",
      "203.0.113.0/24",
    ]);
  },
);

test.serial("pod traffic leaves through a gateway with the egress IP of its policy", async (t) => {
  t.regex((await seenAs(lab, "pod-a", WEB, "10.244.1.10")) ?? "unreachable", /^192\.0\.2\.1[12]$/);
  t.regex((await seenAs(lab, "pod-a", PARTNER, "10.244.1.11")) ?? "unreachable", /^192\.0\.2\.13[12]$/);
  // Not in the partner policy: the gateway leaves it alone and the firewall drops it.
  t.is(await seenAs(lab, "pod-a", PARTNER, "10.244.1.12", 1), undefined);
  t.regex((await seenAs(lab, "pod-a", WEB6, "fd00:244:1::10")) ?? "unreachable", /^2001:db8:e::1[12]$/);
  // DC B's pods use DC A's gateways (B is the backup site).
  t.regex((await seenAs(lab, "pod-b", WEB)) ?? "unreachable", /^192\.0\.2\.1[12]$/);
});

test.serial(
  "reload: on a file change or SIGHUP; a removed policy is withdrawn, others stay; an invalid file keeps the running config",
  async (t) => {
    const original = readFileSync(gwA1Config, "utf8");
    const pid = lab.cmdPid("gw-a1");
    t.truthy(pid);
    t.teardown(() => writeFileSync(gwA1Config, original));
    // Without the partner policy (and the probe that guards it).
    const withoutPartner = original
      .replace(/ {2}- name: partner\n( {4}.*\n)+?(?= {2}- name)/, "")
      .replace(/ {2}- \{ name: partner, .*\n/, "");
    t.not(withoutPartner, original);
    // A change to the file is enough (no signal).
    writeFileSync(gwA1Config, withoutPartner);
    await waitFor(
      "partner withdrawn",
      async () => !(await paths("tor-a", "198.51.100.0/24")).some((p) => p.peer === "10.1.1.1"),
      10_000,
    );
    t.deepEqual(
      (await paths("tor-a", "198.51.100.0/24")).map((p) => p.peer),
      ["10.1.2.1"],
    );
    t.deepEqual((await paths("tor-a", "203.0.113.0/24")).map((p) => p.peer).sort(), ["10.1.1.1", "10.1.2.1"]);

    writeFileSync(
      gwA1Config,
      original.replace("destinations: [203.0.113.0/24]", "destinations: [203.0.113.0/33]"),
    );
    await waitFor(
      "rejected reload logged",
      () => readFileSync(lab.cmdLog("gw-a1"), "utf8").includes("reload rejected"),
      10_000,
    );
    t.true(readFileSync(lab.cmdLog("gw-a1"), "utf8").includes("203.0.113.0/33 is not a CIDR"));
    t.deepEqual((await paths("tor-a", "203.0.113.0/24")).map((p) => p.peer).sort(), ["10.1.1.1", "10.1.2.1"]);

    writeFileSync(gwA1Config, original);
    await waitFor("partner back", async () => (await paths("tor-a", "198.51.100.0/24")).length === 2, 10_000);

    // SIGHUP with nothing changed: nothing is touched.
    process.kill(pid!, "SIGHUP");
    await waitFor(
      "unchanged reload logged",
      () => readFileSync(lab.cmdLog("gw-a1"), "utf8").includes('"result":"unchanged"'),
      10_000,
    );
    t.pass();
  },
);

test.serial("kill -9 of gobgpd: egressd restarts it and advertises again", async (t) => {
  const before = await pidOf("gw-a2", "gobgpd");
  t.truthy(before);
  process.kill(before!, "SIGKILL");
  await waitFor(
    "gw-a2 routes gone",
    async () => !(await pathsFrom("192.0.2.12/32", "10.1.2.1")).length,
    10_000,
  );
  const started = Date.now();
  await waitFor(
    "gw-a2 routes back",
    async () => (await pathsFrom("192.0.2.12/32", "10.1.2.1")).length === 1,
    30_000,
  );
  t.log(`gw-a2 routes back ${Date.now() - started} ms after they were withdrawn`);
  const after = await pidOf("gw-a2", "gobgpd");
  t.truthy(after);
  t.not(after, before);
});

test.serial(
  "kill -9 of egressd: its gobgpd dies with it, the ToR drops its routes; a restart adopts and re-advertises",
  async (t) => {
    const pid = lab.cmdPid("gw-a1");
    t.truthy(pid);
    const killedAt = Date.now();
    process.kill(pid!, "SIGKILL");
    await waitFor(
      "gw-a1 routes gone",
      async () => !(await pathsFrom("192.0.2.11/32", "10.1.1.1")).length,
      10_000,
    );
    t.log(`gw-a1's routes left tor-a ${Date.now() - killedAt} ms after kill -9`);
    await waitFor("gobgpd gone", async () => (await pidOf("gw-a1", "gobgpd")) === undefined, 5000);
    t.deepEqual(await kernelNextHops(lab, "tor-a", "203.0.113.0/24"), ["10.1.2.1"]);
    // Traffic still flows, through gw-a2.
    t.is(await seenAs(lab, "pod-a", WEB, "10.244.1.10"), "192.0.2.12");

    await lab.startCmd("gw-a1");
    await waitFor(
      "gw-a1 routes back",
      async () => (await pathsFrom("192.0.2.11/32", "10.1.1.1")).length === 1,
      30_000,
    );
    // What the killed run left was adopted, not duplicated.
    const { stdout } = await lab.exec("gw-a1", ["ip", "-j", "addr", "show", "dev", "lo"]);
    const addrs = (JSON.parse(stdout) as { addr_info: { local: string }[] }[])[0]!.addr_info.map(
      (a) => a.local,
    );
    t.is(addrs.filter((a) => a === "192.0.2.11").length, 1);
    const tables = (await lab.exec("gw-a1", ["/usr/sbin/nft", "list", "tables"])).stdout;
    t.is(tables.match(/^table inet egressd$/gm)?.length, 1, "one SNAT table, adopted");
    t.is(tables.match(/^table inet egressd_guard$/gm)?.length, 1, "one guard table");
    // Destinations come back once the restarted gateway's probes vouch for them again.
    await waitFor(
      "ECMP over both gateways again",
      async () => (await kernelNextHops(lab, "tor-a", "203.0.113.0/24")).length === 2,
      30_000,
    );
    t.log(`gw-a1 serves again ${Date.now() - killedAt} ms after the kill (restart included)`);
  },
);

test.serial("SIGTERM: egressd withdraws, removes what it owns and exits 0", async (t) => {
  const pid = lab.cmdPid("gw-b1");
  t.truthy(pid);
  process.kill(pid!, "SIGTERM");
  await waitFor("egressd on gw-b1 exits", () => lab.cmdPid("gw-b1") === undefined, 15_000);
  t.regex(readFileSync(lab.cmdLog("gw-b1"), "utf8"), /"msg":"stopped"/);
  await waitFor("gw-b1 routes gone", async () => !(await paths("tor-b", "192.0.2.21/32")).length, 10_000);
  const lo = (await lab.exec("gw-b1", ["ip", "addr", "show", "dev", "lo"])).stdout;
  t.false(lo.includes("192.0.2.21"), lo);
  t.false((await lab.exec("gw-b1", ["/usr/sbin/nft", "list", "tables"])).stdout.includes("egressd"));
  const rules = (await lab.exec("gw-b1", ["ip", "-j", "rule"])).stdout;
  t.false(rules.includes('"protocol":"201"'), rules);
  t.is(await pidOf("gw-b1", "gobgpd"), undefined);
});
