// Cost of one /metrics scrape as the config grows: 1, 100 and 1000 policies,
// each with traffic from 1,000 or 100,000 distinct pod sources. Series and
// bytes grow with the number of policies (4 series each), never with the
// number of sources; scrape time follows the series count.
// Uses a fake gateway (no root, no nft): the SNAT counters come back per
// policy, as `nft list counters` gives them.
//   npx tsc -p tsconfig.json && node dist/bench/metrics-scrape.js
import { pino } from "pino";
import { Metrics } from "../daemon/metrics.js";
import { FakeGateway, fakeStatus } from "../test/helpers/fake-gateway.js";

const log = pino({ level: "silent" });
const SCRAPES = 200;

interface Row {
  policies: number;
  sources: number;
  series: number;
  bytes: number;
  medianMs: number;
  p99Ms: number;
}

async function measure(policies: number, sources: number, processMetrics: boolean): Promise<Row> {
  const gw = new FakeGateway(fakeStatus(policies));
  // Every source sends through one of the policies; the counters are per policy.
  const names = gw.snapshot.policies.map((p) => p.name);
  for (let s = 0; s < sources; s++) gw.traffic(names[s % names.length]!, 10, 1500, 1);
  for (let s = 0; s < Math.min(sources, 10_000); s++)
    gw.events.emit("probeSample", { name: "tor", kind: "icmp", ok: true, rttMs: (s % 97) / 10 });
  const m = new Metrics({ gateway: gw, version: "bench", log, processMetrics, natCacheMs: 0 });
  let text = "";
  for (let i = 0; i < 20; i++) text = await m.registry.metrics(); // warm up
  const times: number[] = [];
  for (let i = 0; i < SCRAPES; i++) {
    const t0 = performance.now();
    text = await m.registry.metrics();
    times.push(performance.now() - t0);
  }
  m.close();
  times.sort((a, b) => a - b);
  return {
    policies,
    sources,
    series: text.split("\n").filter((l) => l && !l.startsWith("#")).length,
    bytes: Buffer.byteLength(text),
    medianMs: times[Math.floor(times.length / 2)]!,
    p99Ms: times[Math.floor(times.length * 0.99)]!,
  };
}

function print(title: string, rows: Row[]): void {
  console.log(`\n${title}`);
  console.log("policies  sources   series  bytes     median ms  p99 ms");
  for (const r of rows)
    console.log(
      [
        String(r.policies).padEnd(8),
        String(r.sources).padEnd(8),
        String(r.series).padEnd(7),
        String(r.bytes).padEnd(9),
        r.medianMs.toFixed(3).padEnd(10),
        r.p99Ms.toFixed(3),
      ].join("  "),
    );
}

const rows: Row[] = [];
for (const policies of [1, 100, 1000])
  for (const sources of [1_000, 100_000]) rows.push(await measure(policies, sources, false));
print(`egressd metrics only (${SCRAPES} scrapes each, nft read not cached)`, rows);

const withProcess: Row[] = [];
for (const policies of [1, 1000]) withProcess.push(await measure(policies, 100_000, true));
print("with the Node.js process metrics", withProcess);

const at = (p: number, s: number) => rows.find((r) => r.policies === p && r.sources === s)!;
console.log("\nratios");
for (const p of [1, 100, 1000]) {
  const a = at(p, 1_000);
  const b = at(p, 100_000);
  console.log(
    `  ${p} policies, 100k vs 1k sources: series x${(b.series / a.series).toFixed(2)}, bytes x${(b.bytes / a.bytes).toFixed(2)}, median time x${(b.medianMs / a.medianMs).toFixed(2)}`,
  );
}
const one = at(1, 100_000);
const thousand = at(1000, 100_000);
console.log(
  `  1000 vs 1 policy: series +${thousand.series - one.series} (${((thousand.series - one.series) / 999).toFixed(1)} per policy), ` +
    `${((thousand.bytes - one.bytes) / 999).toFixed(0)} bytes and ${(((thousand.medianMs - one.medianMs) / 999) * 1000).toFixed(1)} us per policy`,
);
