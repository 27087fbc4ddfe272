// Failover time on the two-dc lab, measured on the traffic itself: a ping
// every 10 ms from a pod to the server through the gateway that carries its
// flow; the figure is the longest gap in the replies, and the echoes lost.
// TRIALS trials per trigger (default 10): probe failure, egressd killed,
// gateway frozen (BFD), drain; and a baseline: the frozen gateway with BFD
// off on the ToR (only the BGP hold timer, 9 s here, can notice).
//   node dist/bench/failover.js [TRIALS] [BASELINE_TRIALS]
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import {
  blockSources,
  freezeNode,
  gatewayByEgress,
  median,
  startStream,
  TWO_DC_GATEWAYS as GW,
  type StreamResult,
  type TwoDcGateway,
} from "../containerlab/failover.js";
import { bfdPeers, bgpTable, kernelNextHops, seenAs, startWhoami } from "../containerlab/observe.js";
import { Lab, sleep, waitFor } from "../containerlab/runner.js";
import { loadTopology, rebindCopies } from "../containerlab/topology.js";
import { tryRun } from "../lib/exec.js";

const TRIALS = Number(process.argv[2] ?? 10);
const BASELINE = Number(process.argv[3] ?? 2);
const TOPO = fileURLToPath(new URL("../../containerlab/two-dc/two-dc.clab.yml", import.meta.url));
const EGRESSD = fileURLToPath(new URL("../../bin/egressd", import.meta.url));
const SRC = "10.244.1.10";
const WEB = "http://203.0.113.10:8080/";

// The lab's configs with the defaults' detection (100 ms x 3) but a 1 s
// hold-down and no damping, so trials can follow each other quickly.
const topo = loadTopology(TOPO);
const tmp = mkdtempSync(join(tmpdir(), "egressd-bench-failover-"));
rebindCopies(topo, "/etc/egressd/egressd.yaml", tmp, (text) =>
  text.replaceAll("holdDownMs: 3000", "holdDownMs: 1000, damping: false"),
);
const lab = new Lab(topo, `bfo${process.pid % 10000}`, { quiet: true });

let bfdOnTor = true;

async function ready(): Promise<TwoDcGateway> {
  await waitFor(
    "ECMP",
    async () => (await kernelNextHops(lab, "tor-a", "203.0.113.0/24")).length === 2,
    60_000,
  );
  const g = gatewayByEgress(await seenAs(lab, "pod-a", WEB, SRC));
  if (!g) throw new Error("no gateway carries the flow");
  if (bfdOnTor)
    await waitFor("BFD up", async () => (await bfdPeers(lab, "tor-a")).get(GW[g].link) === "up", 20_000);
  return g;
}

const webPeers = async () => ((await bgpTable(lab, "tor-a")).get("203.0.113.0/24") ?? []).map((p) => p.peer);

/** One trial: stream, break `g` with `fail`, wait until the ToR dropped it, measure, repair. */
async function trial(
  fail: (g: TwoDcGateway) => Promise<() => Promise<void>>,
  timeoutMs = 5000,
): Promise<StreamResult> {
  const g = await ready();
  const stream = startStream(lab, "pod-a", "203.0.113.10", SRC);
  await stream.flowing;
  await sleep(300);
  const repair = await fail(g);
  await waitFor(`${g} out`, async () => !(await webPeers()).includes(GW[g].link), timeoutMs);
  await sleep(500);
  const r = await stream.stop();
  await repair();
  return r;
}

async function restart(g: TwoDcGateway): Promise<void> {
  await waitFor(`${g} gone`, () => lab.cmdPid(g) === undefined, 10_000);
  await lab.startCmd(g);
}

const triggers: [string, (g: TwoDcGateway) => Promise<() => Promise<void>>, number][] = [
  [
    "probe failure (upstream path of the gateway breaks)",
    (g) => blockSources(lab, "fw", [GW[g].link, GW[g].web], { destinations: ["203.0.113.0/24"] }),
    5000,
  ],
  [
    "egressd killed (kill -9)",
    async (g) => {
      process.kill(lab.cmdPid(g)!, "SIGKILL");
      return () => restart(g);
    },
    5000,
  ],
  ["gateway frozen (SIGSTOP + nothing forwarded; BFD)", (g) => freezeNode(lab, g), 5000],
  [
    "drain (egressd drain)",
    async (g) => {
      const done = tryRun([EGRESSD, "drain", "--timeout", "30"], { netns: lab.ns(g), timeoutMs: 40_000 });
      return async () => {
        await done;
        await restart(g);
      };
    },
    5000,
  ],
];

function report(name: string, rs: StreamResult[]): void {
  const gaps = rs.map((r) => r.gapMs);
  const lost = rs.map((r) => r.lost);
  console.log(
    `${name.padEnd(52)} gap median ${String(median(gaps)).padStart(5)} ms  worst ${String(Math.max(...gaps)).padStart(5)} ms` +
      `   lost median ${median(lost)} worst ${Math.max(...lost)}   (${rs.length} trials)`,
  );
}

try {
  await lab.up();
  await startWhoami(lab, "server");
  await ready();
  console.log(
    `failover on the two-dc lab: ping stream every 10 ms pod-a -> server, ${TRIALS} trials per trigger`,
  );
  const results = new Map<string, StreamResult[]>();
  for (const [name, fail, timeout] of triggers) {
    const rs: StreamResult[] = [];
    for (let i = 0; i < TRIALS; i++) {
      const r = await trial(fail, timeout);
      process.stderr.write(`  ${name.split(" (")[0]} #${i + 1}: gap ${r.gapMs} ms, ${r.lost} lost\n`);
      rs.push(r);
    }
    results.set(name, rs);
    report(name, rs);
  }
  // Baseline: the same frozen gateway with BFD off on the ToR.
  await lab.exec("tor-a", [
    "vtysh",
    "-c",
    "configure terminal",
    "-c",
    "router bgp 65010",
    "-c",
    "no neighbor GATEWAYS bfd",
  ]);
  bfdOnTor = false;
  const base: StreamResult[] = [];
  for (let i = 0; i < BASELINE; i++) base.push(await trial((g) => freezeNode(lab, g), 30_000));
  report("baseline: gateway frozen, no BFD (BGP hold 9 s)", base);
  const bfd = results.get(triggers[2]![0])!;
  console.log(
    `BFD vs hold timer: median gap ${median(bfd.map((r) => r.gapMs))} ms vs ${median(base.map((r) => r.gapMs))} ms`,
  );
  console.log("targets: median < 500 ms for probe failure and frozen gateway; 0 lost for drain");
} finally {
  await lab.down();
  rmSync(tmp, { recursive: true, force: true });
}
