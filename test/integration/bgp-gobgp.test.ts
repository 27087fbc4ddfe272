// egressd's gobgpd side against real processes: FRR (zebra + bgpd) as the ToR
// in one namespace, managed gobgpd driven by GobgpClient in the other.
// Needs root. Each test builds its own lab, so they run concurrently.
import test, { type ExecutionContext } from "ava";
import { spawn } from "node:child_process";
import { rmSync } from "node:fs";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { isRunning } from "../../lib/exec.js";
import { sandbox } from "../helpers/netns.js";
import {
  buildTopology,
  Frr,
  GW_ASN,
  GW_V4,
  GW_V6,
  socketDir,
  startGateway,
  TOR_ASN,
  torPeer,
  waitFor,
  type FrrOptions,
} from "../helpers/bgp-lab.js";
import { GobgpClient, GobgpError, type ReadyInfo } from "../../bgp/gobgp-client.js";
import { GobgpdProcess } from "../../bgp/gobgpd-process.js";
import { BgpValidationError, type BgpPath, type BgpPeer, type PeerStatus } from "../../core/bgp.js";
import { diffPaths, PathReconciler } from "../../bgp/path-reconciler.js";
import { PeerReconciler } from "../../bgp/peer-reconciler.js";

interface Lab {
  frr: Frr;
  gw: string;
  dir: string;
}

async function lab(t: ExecutionContext, tag: string, frrOpts: FrrOptions = {}): Promise<Lab> {
  const sb = sandbox(t, tag);
  const dir = socketDir();
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const { tor, gw } = await buildTopology(sb);
  const frr = await Frr.start(tor, frrOpts);
  // The sandbox's cleanup kills FRR with the namespace; this removes /var/run/frr/<ns> and the config.
  t.teardown(() => frr.cleanup());
  return { frr, gw, dir };
}

async function managedGateway(t: ExecutionContext, l: Lab) {
  const { gobgpd, client } = await startGateway(l.gw, l.dir);
  t.teardown(async () => {
    await client.close();
    await gobgpd.stop();
  });
  return { gobgpd, client };
}

const established = (client: GobgpClient) =>
  waitFor(
    "BGP session to reach Established",
    async () => (await client.listPeers())[0]?.state === "established",
  );

const p4: BgpPath = {
  prefix: "203.0.113.0/24",
  nextHop: GW_V4,
  med: 50,
  communities: ["65001:200", "65001:100"],
  asPathPrepend: 2,
};
const p6: BgpPath = {
  prefix: "2001:db8:1::/48",
  nextHop: GW_V6,
  med: 7,
  communities: ["65001:300"],
  asPathPrepend: 1,
};

test("advertises IPv4 and IPv6 paths with next hop, MED, communities and prepend; withdraws on delete", async (t) => {
  const l = await lab(t, "adv");
  const { client } = await managedGateway(t, l);
  const states: PeerStatus["state"][] = [];
  client.on("peer", (s) => states.push(s.state));
  const best: string[] = [];
  client.on("table", (ev) => best.push(...ev.paths.filter((p) => !p.withdrawn).map((p) => p.prefix)));
  client.watch({ peers: true, table: true });

  await client.startBgp({ asn: GW_ASN, routerId: GW_V4, listenPort: 179 });
  const peers = new PeerReconciler(client);
  t.is((await peers.reconcile([torPeer()])).add.length, 1);
  // What gobgpd reports back compares equal to what we sent: a second pass changes nothing.
  t.deepEqual(await peers.reconcile([torPeer()]), { add: [], update: [], replace: [], delete: [] });
  await established(client);
  await waitFor("an established peer event", async () => states.includes("established"), 5000);

  const paths = new PathReconciler(client);
  const first = await paths.reconcile([p4, p6]);
  t.is(first.add.length, 2);
  const r4 = await waitFor("IPv4 path in FRR", () => l.frr.path(p4.prefix));
  t.is(r4.nexthops?.[0]?.ip, GW_V4);
  t.is(r4.metric, 50);
  t.deepEqual(r4.community?.list, ["65001:100", "65001:200"]);
  // gobgpd adds our ASN once towards an eBGP neighbor, plus 2 prepended.
  t.is(r4.aspath?.string, "65001 65001 65001");
  const r6 = await waitFor("IPv6 path in FRR", () => l.frr.path(p6.prefix));
  t.is(r6.nexthops?.[0]?.ip, GW_V6);
  t.is(r6.metric, 7);
  t.deepEqual(r6.community?.list, ["65001:300"]);
  t.is(r6.aspath?.string, "65001 65001");

  t.true(best.includes(p4.prefix) && best.includes(p6.prefix), "table events for the new best paths");
  // Read-back equals desired: nothing to do.
  t.deepEqual(await paths.reconcile([p4, p6]), { add: [], withdraw: [], unchanged: 2, held: [] });

  // A changed attribute is one AddPath that replaces the old one.
  const changed = await paths.reconcile([{ ...p4, med: 60, asPathPrepend: 0 }, p6]);
  t.is(changed.add.length, 1);
  t.is(changed.withdraw.length, 0);
  await waitFor("new MED and AS path in FRR", async () => {
    const r = await l.frr.path(p4.prefix);
    return r?.metric === 60 && r.aspath?.string === "65001";
  });

  // DeletePath withdraws.
  await client.deletePath(p6);
  await waitFor("IPv6 path withdrawn from FRR", async () => (await l.frr.prefixes(6)).length === 0);
  t.deepEqual(await l.frr.prefixes(4), [p4.prefix]);
  // And the reconciler withdraws what is no longer desired.
  t.is((await paths.reconcile([])).withdraw.length, 1);
  await waitFor("IPv4 path withdrawn from FRR", async () => (await l.frr.prefixes(4)).length === 0);
  t.deepEqual(await client.listLocalPaths(), []);
});

test("thousands of paths go in and out through AddPathStream and come back whole from ListPath", async (t) => {
  // Both calls are read and written a slice of the event loop at a time
  // (lib/slices.ts): here with 3,000 paths, more than one message and one turn.
  const l = await lab(t, "bulk");
  const { client } = await managedGateway(t, l);
  await client.startBgp({ asn: GW_ASN, routerId: GW_V4, listenPort: -1 });
  const paths: BgpPath[] = Array.from({ length: 3000 }, (_, i) => ({
    prefix: `100.${64 + (i >> 16)}.${(i >> 8) & 255}.${i & 255}/32`,
    nextHop: GW_V4,
    med: i % 7,
    communities: [`65001:${i % 100}`],
    asPathPrepend: i % 3,
  }));
  await client.applyPaths({ add: paths });
  const listed = await client.listPaths("ipv4-unicast");
  t.is(listed.length, paths.length);
  t.deepEqual(diffPaths(paths, listed), { add: [], withdraw: [], unchanged: paths.length });

  await client.applyPaths({ withdraw: paths.slice(0, 2000) });
  t.deepEqual(diffPaths(paths.slice(2000), await client.listPaths("ipv4-unicast")), {
    add: [],
    withdraw: [],
    unchanged: 1000,
  });

  // Health takes the last 1,000 adds back while the call is being written:
  // they are not sent, and the call says which were.
  let asked = 0;
  const sent = await client.applyPaths({ add: paths.slice(0, 2000), stillWanted: () => ++asked <= 1000 });
  t.deepEqual(sent, paths.slice(0, 1000));
  t.deepEqual(
    diffPaths(paths.slice(0, 1000).concat(paths.slice(2000)), await client.listPaths("ipv4-unicast")),
    {
      add: [],
      withdraw: [],
      unchanged: 2000,
    },
  );
});

test("gobgpd killed with SIGKILL in managed mode is restarted and the paths come back", async (t) => {
  const l = await lab(t, "rst");
  const { gobgpd, client } = await managedGateway(t, l);
  const desiredPeers: BgpPeer[] = [torPeer()];
  const desiredPaths: BgpPath[] = [p4, p6];
  // What egressd does on every "ready": start BGP if needed, reconcile peers and paths.
  let applied = 0;
  const apply = async (info: ReadyInfo) => {
    if (!info.started) await client.startBgp({ asn: GW_ASN, routerId: GW_V4, listenPort: 179 });
    await new PeerReconciler(client).reconcile(desiredPeers);
    await new PathReconciler(client).reconcile(desiredPaths);
    applied++;
  };
  const applyErrors: Error[] = [];
  client.on("ready", (info) => void apply(info).catch((e: Error) => applyErrors.push(e)));
  await apply(await client.waitReady());
  await established(client);
  await waitFor("paths in FRR", async () => (await l.frr.prefixes(4)).length === 1);

  const exits: number[] = [];
  gobgpd.on("exited", (e) => exits.push(e.pid));
  const oldPid = gobgpd.pid;
  t.truthy(oldPid);
  const killedAt = Date.now();
  process.kill(oldPid as number, "SIGKILL");
  await waitFor("FRR to drop the routes", async () => (await l.frr.prefixes(4)).length === 0, 10_000, 20);
  const droppedMs = Date.now() - killedAt;
  await waitFor("gobgpd restart and re-apply", async () => applied >= 2, 15_000);
  await waitFor("routes back in FRR", async () => {
    const r = await l.frr.path(p4.prefix);
    return r?.metric === 50 && (await l.frr.prefixes(6)).length === 1;
  });
  const backMs = Date.now() - killedAt;
  t.log(`FRR dropped the routes ${droppedMs} ms after kill -9 of gobgpd; re-advertised after ${backMs} ms`);
  t.deepEqual(exits, [oldPid]);
  t.not(gobgpd.pid, oldPid);
  t.deepEqual(applyErrors, []);
});

test("gobgpd dies with the process that owns it (kill -9) and FRR drops the routes", async (t) => {
  const l = await lab(t, "own");
  const socketPath = join(l.dir, "gobgpd.sock");
  const moduleUrl = new URL("../../bgp/gobgpd-process.js", import.meta.url).href;
  // The owner: a node process that starts managed gobgpd and then just waits.
  const script = `
    import { GobgpdProcess } from ${JSON.stringify(moduleUrl)};
    const p = new GobgpdProcess({ socketPath: process.argv[1], netns: process.argv[2] });
    p.on("started", ({ pid }) => console.log(JSON.stringify({ gobgpd: pid })));
    await p.start();
    setInterval(() => {}, 1 << 30);
  `;
  const owner = spawn(process.execPath, ["--input-type=module", "-e", script, socketPath, l.gw], {
    stdio: ["ignore", "pipe", "inherit"],
  });
  t.teardown(() => {
    if (owner.exitCode === null && owner.signalCode === null) owner.kill("SIGKILL");
  });
  const gobgpdPid = await new Promise<number>((resolve, reject) => {
    owner.once("exit", (code) => reject(new Error(`owner exited early (${code})`)));
    createInterface({ input: owner.stdout as NodeJS.ReadableStream }).once("line", (line) => {
      resolve((JSON.parse(line) as { gobgpd: number }).gobgpd);
    });
  });
  const client = new GobgpClient({ target: `unix://${socketPath}` });
  t.teardown(() => client.close());
  await client.waitReady();
  await client.startBgp({ asn: GW_ASN, routerId: GW_V4, listenPort: 179 });
  await client.addPeer(torPeer());
  await established(client);
  await client.addPath(p4);
  await waitFor("path in FRR", () => l.frr.path(p4.prefix));

  const killedAt = Date.now();
  owner.kill("SIGKILL");
  await waitFor("gobgpd to die with its owner", async () => !isRunning(gobgpdPid), 5000, 10);
  const diedMs = Date.now() - killedAt;
  await waitFor("FRR to drop the routes", async () => (await l.frr.prefixes(4)).length === 0, 5000, 20);
  t.log(`gobgpd gone ${diedMs} ms and routes gone ${Date.now() - killedAt} ms after kill -9 of its owner`);
  t.pass();
});

test("a wrong TCP-MD5 password never establishes and reports a clear state; the right one does", async (t) => {
  const l = await lab(t, "md5", { password: "right-secret" });
  const { gobgpd, client } = await managedGateway(t, l);
  await client.startBgp({ asn: GW_ASN, routerId: GW_V4, listenPort: 179 });
  const peers = new PeerReconciler(client);
  await peers.reconcile([torPeer({ password: "wrong-secret" })]);
  // FRR retries every second; give it several attempts.
  await new Promise((r) => setTimeout(r, 4000));
  const [peer] = await client.listPeers();
  t.truthy(peer);
  t.not(peer?.state, "established");
  t.true(["idle", "connect", "active"].includes(peer?.state ?? ""), `state ${peer?.state}`);
  t.is(peer?.config.password, "wrong-secret");
  t.log(`with a wrong TCP-MD5 password the session stays in "${peer?.state}"`);
  t.truthy(gobgpd.pid && isRunning(gobgpd.pid), "gobgpd still running");

  // Fixing the password replaces the neighbor and the session comes up.
  const fix = await peers.reconcile([torPeer({ password: "right-secret" })]);
  t.is(fix.replace.length, 1);
  await established(client);
});

test("ttl security (GTSM): with FRR's ttl-security hops 1, only a TTL-255 session comes up", async (t) => {
  const l = await lab(t, "gtsm");
  await l.frr.configure(`router bgp ${TOR_ASN}`, `neighbor ${GW_V4} ttl-security hops 1`);
  const { client } = await managedGateway(t, l);
  await client.startBgp({ asn: GW_ASN, routerId: GW_V4, listenPort: 179 });
  const peers = new PeerReconciler(client);
  await peers.reconcile([torPeer()]);
  // eBGP's TTL of 1 is below what FRR now accepts (255): FRR drops the session's packets.
  await new Promise((r) => setTimeout(r, 4000));
  t.not((await client.listPeers())[0]?.state, "established");
  const fix = await peers.reconcile([torPeer({ ttlSecurity: true })]);
  t.is(fix.replace.length + fix.update.length, 1);
  t.true((await client.listPeers())[0]?.config.ttlSecurity);
  await established(client);
});

test("invalid ASNs and calls out of order give clear errors, not a crash", async (t) => {
  const dir = socketDir();
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  // No namespace: gobgpd's API on a unix socket in the root namespace; BGP never starts listening.
  const gobgpd = new GobgpdProcess({ socketPath: join(dir, "gobgpd.sock") });
  await gobgpd.start();
  const client = new GobgpClient({ target: gobgpd.target });
  t.teardown(async () => {
    await client.close();
    await gobgpd.stop();
  });
  await client.waitReady();

  for (const asn of [0, -1, 4294967296, 1.5, 23456]) {
    const err = await t.throwsAsync(client.startBgp({ asn, routerId: "192.0.2.1", listenPort: -1 }), {
      instanceOf: BgpValidationError,
    });
    t.regex(err?.message ?? "", /invalid local ASN/);
  }
  await t.throwsAsync(client.startBgp({ asn: 65001, routerId: "not-an-ip", listenPort: -1 }), {
    message: /invalid router id "not-an-ip"/,
  });
  t.is(await client.getBgp(), undefined, "BGP is still not started");

  // gobgpd's own refusal is named: which call, which object, what it said.
  const early = await t.throwsAsync(client.addPeer({ address: "192.0.2.2", peerAsn: 65002 }), {
    instanceOf: GobgpError,
  });
  t.regex(early?.message ?? "", /gobgpd AddPeer \(neighbor 192\.0\.2\.2\) failed: .*hasn't started/);

  await client.startBgp({ asn: 65001, routerId: "192.0.2.1", listenPort: -1 });
  await t.throwsAsync(client.addPeer({ address: "192.0.2.2", peerAsn: 0 }), {
    instanceOf: BgpValidationError,
    message: /invalid peer ASN 0 for neighbor 192\.0\.2\.2/,
  });
  await client.addPeer({ address: "192.0.2.2", peerAsn: 65002 });
  await t.throwsAsync(client.addPeer({ address: "192.0.2.2", peerAsn: 65002 }), {
    message: /gobgpd AddPeer \(neighbor 192\.0\.2\.2\) failed: .*existing peer/,
  });
  await t.throwsAsync(client.deletePeer("192.0.2.99"), { instanceOf: GobgpError, message: /DeletePeer/ });

  // Every peer option reads back from gobgpd as sent, so the peer reconciler converges.
  const full: BgpPeer = {
    address: "192.0.2.3",
    peerAsn: 4200000001,
    password: "s3cret",
    ebgpMultihopTtl: 4,
    holdTime: 9,
    keepaliveInterval: 3,
    connectRetry: 7,
    localAddress: "192.0.2.1",
    gracefulRestart: true,
    restartTime: 20,
    families: ["ipv4-unicast"],
    description: "tor-b",
  };
  const v6peer: BgpPeer = {
    address: "2001:DB8::0:3",
    peerAsn: 65003,
    families: ["ipv6-unicast"],
    passive: true,
  };
  const peers = new PeerReconciler(client);
  const want = [{ address: "192.0.2.2", peerAsn: 65002 }, full, v6peer];
  t.is((await peers.reconcile(want)).add.length, 2);
  t.deepEqual(await peers.reconcile(want), { add: [], update: [], replace: [], delete: [] });
  // A timer change goes through UpdatePeer and sticks.
  const slower = [want[0] as BgpPeer, { ...full, holdTime: 30, keepaliveInterval: 10 }, v6peer];
  t.deepEqual(
    (await peers.reconcile(slower)).update.map((p) => p.address),
    ["192.0.2.3"],
  );
  t.deepEqual(await peers.reconcile(slower), { add: [], update: [], replace: [], delete: [] });
  t.deepEqual((await peers.reconcile([want[0] as BgpPeer])).delete, ["192.0.2.3", "2001:db8::3"]);
  t.truthy(gobgpd.pid && isRunning(gobgpd.pid), "gobgpd still running");
  t.deepEqual(
    (await client.listPeers()).map((p) => p.address),
    ["192.0.2.2"],
  );
});

test("the client reports gobgpd unreachable with the target in the message", async (t) => {
  const client = new GobgpClient({ target: "unix:///nonexistent/egressd/gobgpd.sock", deadlineMs: 1000 });
  t.teardown(() => client.close());
  await t.throwsAsync(client.getBgp(), {
    message: /gobgpd GetBgp failed: UNAVAILABLE: gobgpd is not reachable at unix:\/\/\/nonexistent/,
  });
  await t.throwsAsync(client.waitReady(500), { message: /not reachable within 500 ms/ });
});
