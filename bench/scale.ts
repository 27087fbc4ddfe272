// egressd at scale, as a process, in a network namespace, peering with an
// FRR ToR (bgpd + bfdd, two sessions with BFD 100 ms x 3): a gateway with
// POLICIES policies, SOURCES pod addresses and 10 ICMP probes (bench/scale-lab.ts). It prints,
// each as measured:
//
//   start to /readyz (and, from egressd's log, when the config was planned, the kernel
//   programmed and the first BGP session Established), and to every route at the ToR
//   one source changed (ten times): file write to the element in the kernel
//   one destination added: file write to the route at the ToR
//   an unchanged SIGHUP: signal to the daemon's "config reloaded (unchanged)"
//   the event-loop delay (max and p99, from /metrics) during each of those, and how long
//   egressd's main thread waited for a CPU meanwhile (its schedstat: the machine's share)
//   the loop's turns during each (lib/loop-trace.ts, from the kernel's scheduler trace):
//   the longest, and the one with the most of egressd's own time, split into on a CPU,
//   waiting for one and asleep (and who woke its longest sleep); the most on a CPU in one turn
//   BGP session and BFD resets at the ToR (must be 0)
//   RSS across RELOADS reloads, each with one source changed
//   CPU of egressd, with its helpers (ICMP probes, BFD), and of everything in its namespace: in
//   the 10 s right after the reloads, and idle (30 s, from 30 s after them)
//
//   node dist/bench/scale.js [--policies 200] [--sources 100000] [--reloads 100]
//                            [--egressd PATH/TO/dist/daemon/cli.js] [--run-args "ARGS"]
//                            [--node-flags "FLAGS"]   (default: daemon/node-flags.ts; "" for none)
// --egressd runs another build (an older tree, for before/after figures).
import { parseArgs } from "node:util";
import { stringify } from "yaml";
import { median } from "../lib/stats.js";
import { NODE_FLAGS } from "../daemon/node-flags.js";
import { sleep, waitFor } from "../lib/wait.js";
import { classifierFor, type KeptClassifier } from "../core/plan/classifier.js";
import type { GatewayConfig } from "../core/config/gateway-config.js";
import { fmt } from "./nat-lib.js";
import { destination } from "./scale-config.js";
import { DEFAULT_EGRESSD, ScaleLab, type LoopDelay } from "./scale-lab.js";
import { describeTurn, mergeSummaries, NO_TURNS, ownMs, type TurnSummary } from "../lib/loop-trace.js";

const { values: args } = parseArgs({
  options: {
    policies: { type: "string", default: "200" },
    sources: { type: "string", default: "100000" },
    reloads: { type: "string", default: "100" },
    egressd: { type: "string", default: DEFAULT_EGRESSD },
    // Arguments for `egressd run`, e.g. --run-args "--dataplane-heap-mb 128".
    "run-args": { type: "string", default: "" },
    // Flags for node itself, e.g. --node-flags "" to measure without NODE_FLAGS.
    "node-flags": { type: "string", default: NODE_FLAGS.join(" ") },
  },
});
const POLICIES = Number(args.policies);
const RELOADS = Number(args.reloads);
const SOURCE_CHANGES = 10;
/** Idle CPU is measured over IDLE_S seconds, from IDLE_SETTLE_S seconds after the last reload. */
const IDLE_SETTLE_S = 30;
const IDLE_S = 30;

/**
 * The nft sets that may hold source `address` of config `c`: its class's in
 * the plan made from scratch, and in the plan patched from `first`, the
 * classifier of the config the daemon started with (class ids stay when a
 * plan is patched, as the daemon's are).
 */
function hostSets(first: KeptClassifier, c: GatewayConfig, address: string): string[] {
  const full = classifierFor(c);
  const patched = classifierFor(c, first);
  const sets = [full, patched].map((k) => {
    const entry = k.index.result.sources.find((s) => s.interval === address);
    if (!entry) throw new Error(`${address} is not in the plan`);
    return `c${entry.classId}_hosts`;
  });
  return [...new Set(sets)];
}

const line = (what: string, ms: number, delay?: LoopDelay) => {
  console.log(
    `  ${what.padEnd(52)} ${fmt(ms, 0).padStart(7)} ms` +
      (delay
        ? `   loop delay max ${fmt(delay.maxMs, 0)} ms, p99 ${fmt(delay.p99Ms, 0)} ms; main thread waited for a CPU ${fmt(delay.cpuWaitMs, 0)} ms`
        : ""),
  );
  if (delay) turnsLine(delay.turns);
};

/**
 * The window's loop turns (lib/loop-trace.ts): the longest, and the one
 * with the most of egressd's own time (on a CPU or asleep in it), each split;
 * and the most time on a CPU in one turn.
 */
function turnsLine(s: TurnSummary | undefined): void {
  if (!s) return;
  const who = (tid: number) => lab.threadName(tid);
  const lost = s.lost ? `; the trace lost ${s.lost} events` : "";
  if (!s.longest || !s.mostOwn) return console.log(`    loop turns: none traced${lost}`);
  console.log(
    `    loop turns: ${s.turns}; longest ${describeTurn(s.longest, who)}; most of egressd's own ${fmt(ownMs(s.mostOwn), 1)} ms: ${describeTurn(s.mostOwn, who)}; most on a CPU in one turn ${fmt(s.mostOnCpuMs, 1)} ms${lost}`,
  );
}

async function main(lab: ScaleLab): Promise<void> {
  const expectedRoutes = POLICIES + lab.config.egressIPs.length;
  console.log(
    `scale: ${POLICIES} policies, ${args.sources} sources, ${lab.config.probes?.length} probes, ` +
      `${lab.config.bgp?.peers.length ?? 0} sessions with BFD 100 ms x 3 to FRR; config ${(lab.configBytes / 1e6).toFixed(1)} MB; egressd ${args.egressd}`,
  );
  const ready = await lab.waitReady();
  line("start to /readyz", ready, await lab.loopDelay());
  console.log(`    ${lab.startStepsText()}`);
  await waitFor("every route at the ToR", async () => (await lab.torRoutes()) >= expectedRoutes, 120_000, 50);
  line(`start to all ${expectedRoutes} routes at the ToR`, performance.now() - lab.startedAt);
  await waitFor("BFD up at the ToR", async () => (await lab.torResets()).bfdUp > 0, 30_000);
  await sleep(2000);
  const before = await lab.torResets();

  // One source changed: a new pod in policy p-0, ten times over (a median, not one sample).
  await lab.loopDelay();
  const changeMs: number[] = [];
  // The config egressd started with (writeConfig replaces lab.config): its classifier is the one patched.
  const initial = lab.config;
  const initialClassifier = classifierFor(initial);
  let config = lab.config;
  let text: string;
  let t: number;
  for (let i = 0; i < SOURCE_CHANGES; i++) {
    const pod = `10.250.0.${i + 1}`;
    config = structuredClone(initial);
    config.policies[0]!.sources = [pod, ...config.policies[0]!.sources.slice(1)];
    const sets = hostSets(initialClassifier, config, pod);
    const added = await lab.elementAdded(pod);
    text = stringify(config);
    t = performance.now();
    lab.writeConfig(config, text);
    lab.sighup();
    changeMs.push((await added()) - t);
    const found = [];
    for (const set of sets) {
      const r = await lab.sb.tryExec("gw", ["nft", "get", "element", "inet", "egressd", set, `{ ${pod} }`]);
      if (r.code === 0) found.push(set);
    }
    if (found.length === 0) throw new Error(`${pod} was added, but not to ${sets.join(" or ")}`);
  }
  line(
    `one source changed: write to kernel (median of ${SOURCE_CHANGES})`,
    median(changeMs),
    await lab.loopDelay(),
  );
  console.log(
    `    each: ${changeMs.map((ms) => fmt(ms, 0)).join(" ")} ms (seen by bench/nft-watch: the kernel's set notifications)`,
  );

  // One destination added: a new route at the ToR.
  const dest = destination(POLICIES + 1);
  config = structuredClone(lab.config);
  config.policies[0]!.destinations = [...config.policies[0]!.destinations, dest];
  text = stringify(config);
  t = performance.now();
  lab.writeConfig(config, text);
  lab.sighup();
  await waitFor("the new destination at the ToR", () => lab.torHas(dest), 60_000, 20);
  line("one destination added: write to the ToR's RIB", performance.now() - t, await lab.loopDelay());

  // An unchanged SIGHUP.
  await waitFor("reloads settled", async () => {
    const n = lab.reloadsLogged();
    await sleep(300);
    return n === lab.reloadsLogged();
  });
  const n0 = lab.reloadsLogged();
  t = performance.now();
  lab.sighup();
  await waitFor("the unchanged reload", () => lab.reloadsLogged() > n0, 60_000, 2);
  line("unchanged SIGHUP", performance.now() - t, await lab.loopDelay());

  // RSS across reloads, each with one source changed.
  const rss: number[] = [lab.rssMb()];
  // The largest loop delay of the ten-reload windows, and what the main thread waited for a CPU in that window;
  // of the traced turns, the longest and the one with the most of egressd's own time, over all the windows.
  let worstDelay = 0;
  let worstWait = 0;
  let turns = NO_TURNS;
  const reloadMs: number[] = [];
  for (let i = 0; i < RELOADS; i++) {
    config = structuredClone(lab.config);
    config.policies[1]!.sources = [`10.251.${i >> 8}.${i & 255}`, ...config.policies[1]!.sources.slice(1)];
    const n = lab.reloadsLogged();
    text = stringify(config);
    const tw = performance.now();
    lab.writeConfig(config, text);
    lab.sighup();
    await waitFor(`reload ${i + 1}`, () => lab.reloadsLogged() > n, 60_000, 5);
    reloadMs.push(performance.now() - tw);
    rss.push(lab.rssMb());
    if (i % 10 === 9) {
      const d = await lab.loopDelay();
      if (d.maxMs >= worstDelay) [worstDelay, worstWait] = [d.maxMs, d.cpuWaitMs];
      if (d.turns) turns = mergeSummaries(turns, d.turns);
    }
  }
  console.log(
    `  RSS across ${RELOADS} reloads (MB)                        start ${fmt(rss[0]!, 0)}  ` +
      `min ${fmt(Math.min(...rss), 0)}  max ${fmt(Math.max(...rss), 0)}  end ${fmt(rss.at(-1)!, 0)}` +
      `   (write to "config reloaded": median ${fmt(median(reloadMs), 0)} ms; loop delay max ${fmt(worstDelay, 0)} ms, ` +
      `main thread waited for a CPU ${fmt(worstWait, 0)} ms in those 10 reloads)`,
  );
  const mem = lab.memory();
  console.log(
    `  memory after the reloads: RSS egressd ${fmt(mem.main, 0)} MB + its data-plane process ${fmt(mem.dataplane, 0)} MB; ` +
      `PSS of the two ${fmt(mem.pss, 0)} MB (pages both map counted once)`,
  );
  if (lab.loopTrace) turnsLine(turns);
  lab.stopLoopTrace(); // its events are the thread's own wake-ups: not traced while idle CPU is measured

  // CPU over a window: egressd, its helpers, its namespace.
  const cpuOver = async (seconds: number): Promise<string> => {
    const a = await lab.cpuSeconds();
    const w0 = performance.now();
    await sleep(seconds * 1000);
    const b = await lab.cpuSeconds();
    const wall = (performance.now() - w0) / 1000;
    const pct = (s: number) => ((s / wall) * 100).toFixed(1);
    return (
      `egressd ${pct(b.egressd - a.egressd)} % of a core (its data-plane process ${pct(b.dataplane - a.dataplane)}), ` +
      `with its helpers ${pct(b.egressd - a.egressd + b.icmpHelper - a.icmpHelper + b.bfdHelper - a.bfdHelper)} % ` +
      `(egressd-icmp ${pct(b.icmpHelper - a.icmpHelper)}, egressd-bfd ${pct(b.bfdHelper - a.bfdHelper)}); ` +
      `everything in its namespace ${pct(b.namespace - a.namespace)} %`
    );
  };
  // Right after the reloads V8 still compiles the code they made hot and collects what they left;
  // that settles within a minute. Both are printed: the first 10 s, and idle from 30 s on.
  await sleep(2000);
  console.log(`  CPU 2-12 s after the reloads: ${await cpuOver(10)}`);
  await sleep(IDLE_SETTLE_S * 1000 - 12_000);
  console.log(`  idle CPU, ${IDLE_S} s from ${IDLE_SETTLE_S} s after the reloads: ${await cpuOver(IDLE_S)}`);

  const after = await lab.torResets();
  console.log(
    `  resets at the ToR after start: BGP sessions dropped ${after.bgpDropped - before.bgpDropped}, ` +
      `BFD down ${after.bfdDown - before.bfdDown}   (since start: ${after.bgpDropped}, ${after.bfdDown})`,
  );
  const complaints = lab.complaints();
  console.log(
    `  warnings and errors logged by egressd: ${[...complaints.values()].reduce((s, n) => s + n, 0)}`,
  );
  for (const [msg, n] of [...complaints].sort((x, y) => y[1] - x[1]).slice(0, 8))
    console.log(`    ${n} x ${msg}`);
}

const lab = await ScaleLab.start({
  tag: "sc",
  policies: POLICIES,
  sources: Number(args.sources),
  probes: 10,
  probeIntervalMs: 100,
  peers: 2, // two BGP sessions with BFD: the idle-CPU case is 10 probes and 2 BFD sessions
  bfdIntervalMs: 100,
  egressd: args.egressd,
  runArgs: args["run-args"].split(" ").filter(Boolean),
  nodeFlags: args["node-flags"].split(" ").filter(Boolean),
  traceLoop: true,
});
try {
  if (lab.loopTraceMissing) console.log(`  (the loop's turns are not traced: ${lab.loopTraceMissing})`);
  await main(lab);
} finally {
  await lab.stop();
}
