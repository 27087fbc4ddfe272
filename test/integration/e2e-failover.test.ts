// Failover on the two-dc lab, measured on the traffic itself: a ping stream
// every 10 ms from a pod to the server through a gateway, while we break
// things. Each test states the gap it saw (t.log); the timing targets are
// checked by bench/failover.ts, not asserted here (the machines are noisy).
import test, { type ExecutionContext } from "ava";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Lab, sleep, waitFor } from "../../containerlab/runner.js";
import { loadTopology, rebindCopies } from "../../containerlab/topology.js";
import { bfdPeers, bgpTable, kernelNextHops, seenAs, startWhoami } from "../../containerlab/observe.js";
import {
  blockSources,
  freezeNode,
  gatewayByEgress,
  startStream,
  TWO_DC_GATEWAYS as GW,
  type TwoDcGateway,
} from "../../containerlab/failover.js";
import { tryRun } from "../../lib/exec.js";
import { RUN_ID } from "../helpers/netns.js";
import { REPO, TWO_DC } from "../helpers/paths.js";

// The lab's gateway configs with a 1 s hold-down instead of 3 s (faster tests).
const topo = loadTopology(TWO_DC);
const tmp = mkdtempSync(join(tmpdir(), "egressd-failover-"));
rebindCopies(topo, "/etc/egressd/egressd.yaml", tmp, (text) =>
  text.replaceAll("holdDownMs: 3000", "holdDownMs: 1000"),
);
const lab = new Lab(topo, `${RUN_ID}fo`, { quiet: true });
const WEB = "http://203.0.113.10:8080/";
const SRC = "10.244.1.10";

async function webPeers(): Promise<string[]> {
  return ((await bgpTable(lab, "tor-a")).get("203.0.113.0/24") ?? []).map((p) => p.peer).sort();
}

/** Both DC A gateways serve web again (ECMP at tor-a's kernel). */
async function bothServing(timeoutMs = 30_000): Promise<void> {
  await waitFor(
    "ECMP over gw-a1 and gw-a2",
    async () => (await kernelNextHops(lab, "tor-a", "203.0.113.0/24")).length === 2,
    timeoutMs,
  );
}

/** The DC A gateway carrying the pod's flow to the server now. */
async function flowGateway(t: ExecutionContext): Promise<TwoDcGateway> {
  const g = gatewayByEgress(await seenAs(lab, "pod-a", WEB, SRC));
  if (!g) t.fail("the pod's flow does not reach the server through a gateway");
  return g as TwoDcGateway;
}

async function restart(g: TwoDcGateway): Promise<void> {
  const pid = lab.cmdPid(g);
  if (pid) process.kill(pid, "SIGKILL");
  await waitFor(`${g} egressd gone`, () => lab.cmdPid(g) === undefined, 5000);
  await lab.startCmd(g);
}

test.before(async () => {
  await lab.up();
  await startWhoami(lab, "server");
  await bothServing(60_000);
  await waitFor(
    "gw-b1 advertising",
    async () =>
      ((await bgpTable(lab, "tor-b")).get("203.0.113.0/24") ?? []).some((p) => p.peer === "10.2.1.1"),
    60_000,
  );
});

test.after.always(async () => {
  await lab.down();
  rmSync(tmp, { recursive: true, force: true });
});

test.serial(
  "a failing probe withdraws exactly the prefix it guards; traffic moves to the other gateway",
  async (t) => {
    const g = await flowGateway(t);
    const other: TwoDcGateway = g === "gw-a1" ? "gw-a2" : "gw-a1";
    const stream = startStream(lab, "pod-a", "203.0.113.10", SRC);
    await stream.flowing;
    await sleep(300);
    // The path from g to the web network breaks (its probe and its NATed traffic alike).
    const undo = await blockSources(lab, "fw", [GW[g].link, GW[g].web], { destinations: ["203.0.113.0/24"] });
    await waitFor(`${g} withdrawn`, async () => !(await webPeers()).includes(GW[g].link), 5000);
    // Local repair (connectionSync.localRepair): while the web network is withdrawn, what the
    // ToR still sends g for it goes to the other gateway over the sync link.
    const repair = () =>
      tryRun(["/usr/sbin/nft", "list", "table", "netdev", "egressd_repair"], { netns: lab.ns(g) });
    const during = await repair();
    t.is(during.code, 0, `${g} has its repair table while the web network is withdrawn`);
    t.regex(during.stdout, /203\.0\.113\.0\/24/);
    t.regex(during.stdout, /fwd ip to 10\.1\.9\.\d device "eth2"/);
    await sleep(500);
    const r = await stream.stop();
    t.log(`probe failure on ${g}: traffic gap ${r.gapMs} ms, ${r.lost} of ${r.sent} echoes lost`);
    t.true(r.received > 0 && r.lost < r.sent);
    t.deepEqual(await webPeers(), [GW[other].link]);
    // Unrelated prefixes stay: the partner network and g's egress IPs.
    const table = await bgpTable(lab, "tor-a");
    t.true((table.get("198.51.100.0/24") ?? []).some((p) => p.peer === GW[g].link));
    t.true((table.get(`${GW[g].web}/32`) ?? []).some((p) => p.peer === GW[g].link));
    t.is(await seenAs(lab, "pod-a", WEB, SRC), GW[other].web);
    await undo();
    await bothServing();
    await waitFor(`${g}'s repair table gone`, async () => (await repair()).code !== 0, 5000);
  },
);

test.serial("both gateways of DC A fail: traffic goes to DC B, and back after the hold-down", async (t) => {
  const stream = startStream(lab, "pod-a", "203.0.113.10", SRC);
  await stream.flowing;
  await sleep(300);
  const undo = await blockSources(
    lab,
    "fw",
    [GW["gw-a1"].link, GW["gw-a1"].web, GW["gw-a2"].link, GW["gw-a2"].web],
    {
      destinations: ["203.0.113.0/24"],
    },
  );
  await waitFor(
    "traffic via DC B",
    async () => (await seenAs(lab, "pod-a", WEB, SRC, 1)) === GW["gw-b1"].web,
    10_000,
  );
  const r = await stream.stop();
  t.log(
    `DC A down: traffic reached the server through gw-b1; gap ${r.gapMs} ms, ${r.lost} of ${r.sent} lost`,
  );
  t.true(((await bgpTable(lab, "tor-a")).get("203.0.113.0/24") ?? []).every((p) => p.nextHop === "10.0.1.0"));
  const recovered = Date.now();
  await undo();
  await waitFor(
    "back in DC A",
    async () => gatewayByEgress(await seenAs(lab, "pod-a", WEB, SRC, 1))?.startsWith("gw-a") === true,
    20_000,
  );
  t.log(`back in DC A ${Date.now() - recovered} ms after the upstream recovered (hold-down 1 s)`);
  await bothServing();
});

test.serial("kill -9 of egressd: its routes go with gobgpd, traffic moves", async (t) => {
  const g = await flowGateway(t);
  const stream = startStream(lab, "pod-a", "203.0.113.10", SRC);
  await stream.flowing;
  await sleep(300);
  const killed = Date.now();
  process.kill(lab.cmdPid(g)!, "SIGKILL");
  await waitFor(`${g} routes gone`, async () => !(await webPeers()).includes(GW[g].link), 5000);
  const gone = Date.now() - killed;
  await sleep(300);
  const r = await stream.stop();
  t.log(
    `kill -9 of egressd on ${g}: routes left the ToR after ${gone} ms; traffic gap ${r.gapMs} ms, ${r.lost} lost`,
  );
  t.not(await seenAs(lab, "pod-a", WEB, SRC), GW[g].web);
  await lab.startCmd(g);
  await bothServing();
});

test.serial("a frozen gateway (processes stopped, nothing forwarded) is taken out by BFD", async (t) => {
  const g = await flowGateway(t);
  // BFD protects a session once it is up (a restarted gateway's comes up after ~1 s).
  await waitFor(
    `BFD up to ${g}`,
    async () => (await bfdPeers(lab, "tor-a")).get(GW[g].link) === "up",
    10_000,
  );
  const stream = startStream(lab, "pod-a", "203.0.113.10", SRC);
  await stream.flowing;
  await sleep(300);
  const frozen = Date.now();
  const thaw = await freezeNode(lab, g);
  try {
    await waitFor(`${g} taken out by BFD`, async () => !(await webPeers()).includes(GW[g].link), 5000);
    const out = Date.now() - frozen;
    await sleep(300);
    const r = await stream.stop();
    t.log(
      `frozen ${g}: out of the ToR's RIB after ${out} ms (BFD 100 ms x 3); traffic gap ${r.gapMs} ms, ${r.lost} lost`,
    );
    t.true(out < 5000);
  } finally {
    await thaw();
  }
  await bothServing();
});

test.serial("drain: no lost probe, egressd exits 0 and leaves nothing behind", async (t) => {
  const g = await flowGateway(t);
  const stream = startStream(lab, "pod-a", "203.0.113.10", SRC);
  await stream.flowing;
  await sleep(300);
  const drained = await tryRun([join(REPO, "bin/egressd"), "drain", "--timeout", "30"], {
    netns: lab.ns(g),
    timeoutMs: 40_000,
  });
  t.is(drained.code, 0, drained.stderr);
  await sleep(300);
  const r = await stream.stop();
  t.log(`drain of ${g}: ${r.lost} of ${r.sent} echoes lost, longest gap ${r.gapMs} ms`);
  t.is(r.lost, 0);
  t.regex(readFileSync(lab.cmdLog(g), "utf8"), /"msg":"stopped"/);
  const lo = (await lab.exec(g, ["ip", "addr", "show", "dev", "lo"])).stdout;
  t.false(lo.includes(GW[g].web), lo);
  t.false((await lab.exec(g, ["/usr/sbin/nft", "list", "tables"])).stdout.includes("egressd"));
  t.false((await lab.exec(g, ["ip", "-j", "rule"])).stdout.includes('"protocol":"201"'));
  await lab.startCmd(g);
  await bothServing();
});

test.serial("a flapping upstream: damping bounds the BGP updates", async (t) => {
  const g: TwoDcGateway = "gw-a2";
  const updates = async () => {
    const j = await lab.vtyshJson<Record<string, { messageStats: { updatesRecv: number } }>>(
      "tor-a",
      `show bgp neighbors ${GW[g].link} json`,
    );
    return j[GW[g].link]!.messageStats.updatesRecv;
  };
  const before = await updates();
  const cycles = 8;
  for (let i = 0; i < cycles; i++) {
    const undo = await blockSources(lab, "fw", [GW[g].link, GW[g].web], { destinations: ["203.0.113.0/24"] });
    await sleep(700);
    await undo();
    await sleep(1500);
  }
  await sleep(1500);
  const sent = (await updates()) - before;
  // Penalty 1000 per flap, suppressed above 2000: the third quick flap keeps the
  // prefix withdrawn. Without damping every cycle would be a withdraw and an update.
  t.log(
    `${cycles} flaps of ${g}'s upstream: ${sent} BGP updates reached the ToR (without damping: ~${2 * cycles})`,
  );
  t.true(sent <= 6, `${sent} updates`);
  t.false((await webPeers()).includes(GW[g].link), "the flapping gateway stays withdrawn while suppressed");
  await restart(g); // a fresh start forgets the flap history
  await bothServing();
});
