// Benchmark: how fast 10,000 IPv4 prefixes go from GobgpClient calls to FRR's
// BGP table, in a two-namespace lab (FRR ToR <-> managed gobgpd).
//
//   node dist/bench/bgp-advertise.js [count]
//
// Rounds: the path reconciler (one AddPathStream), one AddPath per prefix (64
// in flight), and a bulk withdraw. Needs root; cleans up its namespaces.
import { rmSync } from "node:fs";
import { RUN_ID, Sandbox } from "../test/helpers/netns.js";
import {
  buildTopology,
  Frr,
  GW_ASN,
  GW_V4,
  socketDir,
  startGateway,
  torPeer,
  waitFor,
} from "../test/helpers/bgp-lab.js";
import type { GobgpClient } from "../bgp/gobgp-client.js";
import type { BgpPath } from "../core/bgp.js";
import { PathReconciler } from "../bgp/path-reconciler.js";

const count = Number(process.argv[2] ?? 10_000);

function prefixes(n: number): BgpPath[] {
  const out: BgpPath[] = [];
  for (let i = 0; i < n; i++) {
    // 10.1.0.0/24, 10.1.1.0/24, ... (clear of the 10.0.0.0/30 link)
    out.push({
      prefix: `10.${1 + (i >> 8)}.${i & 255}.0/24`,
      nextHop: GW_V4,
      med: 10,
      communities: ["65001:100"],
    });
  }
  return out;
}

async function frrCount(frr: Frr): Promise<number> {
  const s = await frr.json<{ peers?: Record<string, { pfxRcd?: number }> }>(
    "show bgp ipv4 unicast summary json",
  );
  return s.peers?.[GW_V4]?.pfxRcd ?? 0;
}

async function timeUntil(
  frr: Frr,
  target: number,
  start: () => Promise<void>,
): Promise<{ callMs: number; totalMs: number }> {
  const t0 = performance.now();
  await start();
  const callMs = performance.now() - t0;
  await waitFor(`FRR to hold ${target} prefixes`, async () => (await frrCount(frr)) === target, 120_000, 20);
  return { callMs, totalMs: performance.now() - t0 };
}

async function addOneByOne(client: GobgpClient, paths: BgpPath[], inFlight: number): Promise<void> {
  let next = 0;
  const worker = async () => {
    while (next < paths.length) {
      const p = paths[next++];
      if (p) await client.addPath(p);
    }
  };
  await Promise.all(Array.from({ length: inFlight }, worker));
}

function report(what: string, n: number, r: { callMs: number; totalMs: number }): void {
  const rate = Math.round(n / (r.totalMs / 1000));
  console.log(
    `${what.padEnd(40)} ${String(n).padStart(6)} prefixes  calls ${r.callMs.toFixed(0).padStart(6)} ms  ` +
      `in FRR after ${r.totalMs.toFixed(0).padStart(6)} ms  ${String(rate).padStart(7)} routes/s`,
  );
}

async function main(): Promise<void> {
  const sb = new Sandbox(`${RUN_ID}bench`);
  const dir = socketDir();
  let frr: Frr | undefined;
  const cleanup = async () => {
    await sb.cleanup();
    frr?.cleanup();
    rmSync(dir, { recursive: true, force: true });
  };
  const onSignal = () => void cleanup().then(() => process.exit(130));
  process.once("SIGINT", onSignal);
  process.once("SIGTERM", onSignal);
  try {
    const { tor, gw } = await buildTopology(sb);
    frr = await Frr.start(tor);
    const { gobgpd, client } = await startGateway(gw, dir);
    await client.startBgp({ asn: GW_ASN, routerId: GW_V4, listenPort: 179 });
    await client.addPeer(torPeer());
    await waitFor("BGP session", async () => (await client.listPeers())[0]?.state === "established");
    const paths = prefixes(count);
    const reconciler = new PathReconciler(client);
    const f = frr;

    report(
      "reconcile (AddPathStream, bulk)",
      count,
      await timeUntil(f, count, async () => void (await reconciler.reconcile(paths))),
    );
    report(
      "withdraw all (reconcile to empty)",
      count,
      await timeUntil(f, 0, async () => void (await reconciler.reconcile([]))),
    );
    report(
      "AddPath one per prefix, 64 in flight",
      count,
      await timeUntil(f, count, () => addOneByOne(client, paths, 64)),
    );
    const t0 = performance.now();
    const noop = await reconciler.reconcile(paths);
    console.log(
      `reconcile with nothing to do: ${(performance.now() - t0).toFixed(0)} ms (ListPath of ${noop.unchanged} paths + diff)`,
    );

    await client.close();
    await gobgpd.stop();
  } finally {
    await cleanup();
  }
}

main().catch((e: unknown) => {
  console.error(e instanceof Error ? e.message : e);
  process.exitCode = 1;
});
