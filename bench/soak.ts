// The soak: does egressd ever raise a false alarm? The scale lab
// (bench/scale-lab.ts) with 50 BGP sessions to FRR, each with BFD at
// INTERVAL ms x 3, 100 ICMP probes at INTERVAL ms to the ToR's addresses, the
// 200-policy/100k-source config reloaded with one source changed every 10 s,
// /metrics scraped every second, and the other core kept busy by stress-ng.
// Nothing fails on purpose, so every BFD down, probe failure or BGP drop is
// a false alarm. It prints them (must be 0), the event-loop delay, the
// least BFD receive slack, CPU and RSS, and exits 1 on a false alarm.
//
//   node dist/bench/soak.js [--seconds 1800] [--interval 50] [--probe-timeout MS]
//                           [--egressd PATH] [--reload-every S] [--no-stress]
//                           [--bfd-peer frr|egressd]
//                           [--node-flags "FLAGS"]   (default: daemon/node-flags.ts)
import { spawn } from "node:child_process";
import { parseArgs } from "node:util";
import { sleep, waitFor } from "../lib/wait.js";
import { percentile } from "../lib/stats.js";
import { fmt } from "./nat-lib.js";
import { DEFAULT_EGRESSD, loopLag, ScaleLab } from "./scale-lab.js";
import { parseExposition, samplesOf } from "../test/helpers/exposition.js";
import { NODE_FLAGS } from "../daemon/node-flags.js";

const { values: args } = parseArgs({
  options: {
    seconds: { type: "string", default: "1800" },
    interval: { type: "string", default: "50" },
    // Each probe's timeout, ms (default: the interval).
    "probe-timeout": { type: "string" },
    policies: { type: "string", default: "200" },
    sources: { type: "string", default: "100000" },
    peers: { type: "string", default: "50" },
    probes: { type: "string", default: "100" },
    egressd: { type: "string", default: DEFAULT_EGRESSD },
    // Knobs to find what a false alarm depends on.
    "reload-every": { type: "string", default: "10" },
    "no-stress": { type: "boolean", default: false },
    "bfd-peer": { type: "string", default: "frr" },
    // Flags for node itself, as bench/scale takes them (e.g. to add --cpu-prof).
    "node-flags": { type: "string", default: NODE_FLAGS.join(" ") },
  },
});
const RELOAD_MS = Number(args["reload-every"]) * 1000;
const SECONDS = Number(args.seconds);
const INTERVAL = Number(args.interval);
const PROBE_TIMEOUT = Number(args["probe-timeout"] ?? args.interval);
if (!(PROBE_TIMEOUT >= 1))
  throw new Error(`--probe-timeout: "${args["probe-timeout"]}" is not a number of ms`);
const PEERS = Number(args.peers);

/**
 * How many good results of the soak's ICMP probes (probe-N; not the
 * gateway's self-checks, whose "RTT" is how long a check took) took longer
 * than each bucket bound of egressd_probe_rtt_seconds (ms), summed over the
 * probes; "+Inf" gives all.
 */
function slowerThan(fams: ReturnType<typeof parseExposition>): Map<string, number> {
  const all = new Map<string, number>();
  for (const s of samplesOf(fams, "egressd_probe_rtt_seconds_bucket"))
    if (/^probe-\d+$/.test(s.labels.probe ?? ""))
      all.set(s.labels.le!, (all.get(s.labels.le!) ?? 0) + s.value);
  const total = all.get("+Inf") ?? 0;
  return new Map(
    [...all].map(([le, n]) => [
      le === "+Inf" ? le : String(Number(le) * 1000),
      le === "+Inf" ? n : total - n,
    ]),
  );
}

/** The counters that must not move, read from one /metrics scrape. */
function alarms(text: string) {
  const fams = parseExposition(text);
  const sum = (name: string, labels: Record<string, string>) =>
    samplesOf(fams, name, labels).reduce((n, s) => n + s.value, 0);
  return {
    bfdDown: sum("egressd_bfd_transitions_total", { to: "down" }),
    probeFailed: sum("egressd_probe_results_total", { result: "failed" }),
    probeDown: sum("egressd_probe_transitions_total", { to: "down" }),
    inconclusive: sum("egressd_probe_results_total", { result: "inconclusive" }),
    probeOk: sum("egressd_probe_results_total", { result: "ok" }),
  };
}

async function main(lab: ScaleLab): Promise<number> {
  console.log(
    `soak: ${SECONDS} s; ${PEERS} BGP sessions with BFD at ${INTERVAL} ms x 3 and ${args.probes} ICMP probes at ` +
      `${INTERVAL} ms (timeout ${PROBE_TIMEOUT} ms); ${args.policies} policies, ${args.sources} sources (${(lab.configBytes / 1e6).toFixed(1)} MB), ` +
      (RELOAD_MS > 0 ? `one source changed every ${RELOAD_MS / 1000} s` : "no reloads") +
      `; /metrics every second; ${args["no-stress"] ? "no stress-ng" : "the other core busy (stress-ng)"}` +
      `; the ToR's BFD: ${args["bfd-peer"] === "egressd" ? "egressd's own (bfd-peer fixture)" : "FRR bfdd"}`,
  );
  await lab.waitReady(180_000);
  await waitFor(
    `${PEERS} BFD sessions up at the ToR`,
    async () => {
      if (lab.bfdSpeaker) return (await lab.torResets()).bfdUp >= PEERS;
      const peers = await lab.frr!.json<{ status: string }[]>("show bfd peers json");
      return peers.filter((p) => p.status === "up").length >= PEERS;
    },
    120_000,
    500,
  );
  await waitFor(
    "every probe up",
    async () => {
      const fams = parseExposition((await lab.http("/metrics")) ?? "");
      const up = samplesOf(fams, "egressd_probe_state", { state: "up" }).filter((s) => s.value === 1);
      return up.length >= Number(args.probes);
    },
    60_000,
    500,
  );
  await sleep(2000);

  const stress = spawn("stress-ng", ["--cpu", "1", "--timeout", `${SECONDS + 30}s`, "--quiet"], {
    stdio: "ignore",
  });
  const first = (await lab.http("/metrics")) ?? "";
  const start = { egressd: alarms(first), tor: await lab.torResets(), cpu: await lab.cpuSeconds() };
  const t0 = performance.now();
  const delayMax: number[] = [];
  const delayAt: number[] = [];
  const delayP99: number[] = [];
  const rss: number[] = [];
  const torStart = lab.torSched();
  let torPrev = torStart;
  let torWaitWorst = 0;
  // Each interval between scrapes (wall-clock end): what the kernel's softirq threads waited for a
  // CPU, what the hypervisor stole, and egressd's own loop delay, in ms, to set beside each failure.
  const softirqStart = lab.softirqWaitMs();
  let softirqPrev = softirqStart;
  const seconds: { until: number; softirqMs: number; stealMs: number; loopMaxMs: number }[] = [];
  const stealStart = lab.stealMs();
  let stealPrev = stealStart;
  let loopMaxMs = NaN;
  let reloads = 0;
  let lastReload = t0;
  let last = first;
  try {
    while (performance.now() - t0 < SECONDS * 1000 && !interrupted) {
      const tick = performance.now();
      const text = await lab.http("/metrics");
      if (text !== undefined) {
        last = text;
        const lag = loopLag(parseExposition(text));
        loopMaxMs = lag.maxMs;
        delayMax.push(lag.maxMs);
        delayAt.push((tick - t0) / 1000);
        delayP99.push(lag.p99Ms);
      }
      const tor = lab.torSched();
      if (tor && torPrev) torWaitWorst = Math.max(torWaitWorst, tor.waitMs - torPrev.waitMs);
      torPrev = tor;
      const softirq = lab.softirqWaitMs();
      const steal = lab.stealMs();
      seconds.push({
        until: Date.now(),
        softirqMs: softirq - softirqPrev,
        stealMs: steal - stealPrev,
        loopMaxMs,
      });
      softirqPrev = softirq;
      stealPrev = steal;
      if (RELOAD_MS > 0 && tick - lastReload >= RELOAD_MS) {
        lastReload = tick;
        const config = structuredClone(lab.config);
        config.policies[1]!.sources = [
          `10.251.${reloads >> 8}.${reloads & 255}`,
          ...config.policies[1]!.sources.slice(1),
        ];
        lab.writeConfig(config);
        lab.sighup();
        reloads++;
        rss.push(lab.rssMb());
      }
      await sleep(Math.max(0, 1000 - (performance.now() - tick)));
    }
  } finally {
    stress?.kill("SIGKILL");
  }
  const wall = (performance.now() - t0) / 1000;
  const end = { egressd: alarms(last), tor: await lab.torResets(), cpu: await lab.cpuSeconds() };
  const d = (k: keyof ReturnType<typeof alarms>) => end.egressd[k] - start.egressd[k];
  const lastFams = parseExposition(last);
  const slack = samplesOf(lastFams, "egressd_bfd_rx_slack_min_seconds").map((s) => s.value * 1000);
  const late = samplesOf(lastFams, "egressd_bfd_tx_late_max_seconds").map((s) => s.value * 1000);
  const falseAlarms = {
    "BFD down at the ToR": end.tor.bfdDown - start.tor.bfdDown,
    "BGP sessions dropped at the ToR": end.tor.bgpDropped - start.tor.bgpDropped,
    "BFD down at egressd": d("bfdDown"),
    "probe results failed": d("probeFailed"),
    "probes down": d("probeDown"),
  };
  const total = Object.values(falseAlarms).reduce((s, n) => s + n, 0);
  console.log(`  ran ${fmt(wall, 0)} s, ${reloads} reloads, ${delayMax.length} scrapes`);
  console.log(`  false alarms: ${total}`);
  for (const [what, n] of Object.entries(falseAlarms)) console.log(`    ${what.padEnd(34)} ${n}`);
  console.log(
    `  probe results: ${d("probeOk")} ok, ${d("inconclusive")} inconclusive (a stall of egressd's loop, or CPU steal, kept them from being judged)`,
  );
  // How close good results came to the probes' timeout.
  const slowStart = slowerThan(parseExposition(first));
  const slow = [...slowerThan(lastFams)].map(([le, n]) => [le, n - (slowStart.get(le) ?? 0)] as const);
  console.log(
    `  good probe results slower than: ` +
      slow
        .filter(([le]) => le !== "+Inf" && Number(le) >= 1 && Number(le) <= PROBE_TIMEOUT)
        .map(([le, n]) => `${le} ms ${n}`)
        .join(", ") +
      ` (of ${slow.find(([le]) => le === "+Inf")?.[1] ?? 0}; the timeout ${PROBE_TIMEOUT} ms)`,
  );
  console.log(
    `  event-loop delay per scrape: max ${fmt(Math.max(...delayMax), 0)} ms; ` +
      `p99 median ${fmt(percentile(delayP99, 50), 1)} ms, worst ${fmt(Math.max(...delayP99), 1)} ms`,
  );
  const worst = delayMax
    .map((ms, i) => ({ ms, at: delayAt[i]! }))
    .sort((a, b) => b.ms - a.ms)
    .slice(0, 3);
  console.log(
    `  largest loop delays: ${worst.map((w) => `${fmt(w.ms, 0)} ms by ${fmt(w.at, 0)} s`).join(", ")}`,
  );
  if (slack.length)
    console.log(
      `  BFD receive slack since Up (of ${INTERVAL * 3} ms): least ${fmt(Math.min(...slack), 1)} ms, ` +
        `median of sessions ${fmt(percentile(slack, 50), 1)} ms (${slack.length} sessions)`,
    );
  if (late.length)
    console.log(
      `  BFD transmit lateness since Up (of ${INTERVAL * 2} ms the peer allows): most ${fmt(Math.max(...late), 1)} ms, ` +
        `median of sessions ${fmt(percentile(late, 50), 1)} ms`,
    );
  console.log(
    `  CPU: egressd ${fmt(((end.cpu.egressd - start.cpu.egressd) / wall) * 100, 1)} % of a core; ` +
      `everything in its namespace ${fmt(((end.cpu.namespace - start.cpu.namespace) / wall) * 100, 1)} %`,
  );
  const torEnd = lab.torSched();
  if (torStart && torEnd)
    console.log(
      `  the ToR's bfdd: ${fmt((torEnd.runMs - torStart.runMs) / 10 / wall, 1)} % of a core; ` +
        `waited for a CPU ${fmt(torEnd.waitMs - torStart.waitMs, 0)} ms in all, at most ${fmt(torWaitWorst, 0)} ms in one second`,
    );
  const softirqWorst = Math.max(0, ...seconds.map((w) => w.softirqMs));
  console.log(
    `  the kernel's softirq threads (ksoftirqd, every packet of the lab): waited for a CPU ` +
      `${fmt(lab.softirqWaitMs() - softirqStart, 0)} ms in all, at most ${fmt(softirqWorst, 0)} ms in one second`,
  );
  console.log(
    `  CPU steal (the hypervisor ran other guests): ${fmt(lab.stealMs() - stealStart, 0)} ms in all, ` +
      `at most ${fmt(Math.max(0, ...seconds.map((w) => w.stealMs)), 0)} ms in one second`,
  );
  if (rss.length)
    console.log(`  RSS: min ${fmt(Math.min(...rss), 0)} MB, max ${fmt(Math.max(...rss), 0)} MB`);
  // egressd logs the first failed result after a good one, with its reason.
  const failures = new Map<string, number>();
  for (const l of lab.logLines()) {
    if (!l.includes('"probe result failed"')) continue;
    const why = ((JSON.parse(l) as { reason?: string }).reason ?? "").replace(/\d+(\.\d+)?/g, "N");
    failures.set(why, (failures.get(why) ?? 0) + 1);
  }
  for (const [why, n] of failures) console.log(`  probe failures logged: ${n} x ${why}`);
  // Each failure (a probe's, or a BFD session's going down) beside the interval it fell in.
  const failedAt = lab
    .logLines()
    .filter((l) => l.includes('"probe result failed"') || l.includes('"msg":"BFD down'))
    .map((l) => Date.parse((JSON.parse(l) as { time: string }).time));
  if (failedAt.length) {
    // The scrape interval each failure fell in (about a second): what the softirq threads waited,
    // what the hypervisor stole, and egressd's loop delay (the max since the scrape before).
    const at = (t: number) => seconds.find((w) => w.until >= t);
    const median = (f: (w: (typeof seconds)[number]) => number) =>
      fmt(
        percentile(
          seconds.map(f).filter((x) => Number.isFinite(x)),
          50,
        ),
        0,
      );
    console.log(
      `  in the second of each failure (probe results, BFD downs): softirq wait / CPU steal / egressd's loop delay max, ms ` +
        `(medians of all seconds ${median((w) => w.softirqMs)} / ${median((w) => w.stealMs)} / ${median((w) => w.loopMaxMs)}): ` +
        failedAt
          .slice(0, 30)
          .map((t) => {
            const w = at(t);
            return w ? `${fmt(w.softirqMs, 0)}/${fmt(w.stealMs, 0)}/${fmt(w.loopMaxMs, 0)}` : "?";
          })
          .join(" "),
    );
  }
  const complaints = lab.complaints();
  if (complaints.size) {
    console.log("  warnings and errors logged by egressd:");
    for (const [msg, n] of [...complaints].sort((x, y) => y[1] - x[1]).slice(0, 8))
      console.log(`    ${n} x ${msg}`);
    // The first ones in full, with when (seconds into the soak) and why.
    const wallStart = Date.now() - wall * 1000;
    for (const l of lab
      .logLines()
      .filter((x) => /"level":"(warn|error)"/.test(x))
      .slice(0, 3)) {
      const j = JSON.parse(l) as { time: string; msg: string; reason?: string; peer?: string };
      const at = (Date.parse(j.time) - wallStart) / 1000;
      console.log(`    at ${fmt(at, 1)} s: ${j.msg} (${j.peer ?? ""}: ${j.reason ?? ""})`);
    }
  }
  // The verdict on these timers as a default: no false alarm, and room on
  // both sides for one more interval of delay than the worst the soak saw.
  const rxRoom = slack.length ? Math.min(...slack) : NaN;
  const txRoom = late.length ? INTERVAL * 2 - Math.max(...late) : NaN;
  const room = Math.min(rxRoom, txRoom);
  const safe = total === 0 && room >= INTERVAL;
  console.log(
    `  verdict: ${INTERVAL} ms x 3 is ${safe ? "safe" : "not safe"} as a default here: ${total} false alarms; ` +
      `least room before a detection ${fmt(room, 0)} ms (receive ${fmt(rxRoom, 0)}, transmit ${fmt(txRoom, 0)}), ` +
      `${room >= INTERVAL ? "at least" : "less than"} one interval (${INTERVAL} ms)`,
  );
  return total;
}

// Ctrl-C ends the soak early: figures so far, then the lab is removed. A
// second one removes the lab and exits at once.
let interrupted = false;
const started: { lab?: ScaleLab } = {};
for (const signal of ["SIGINT", "SIGTERM"] as const)
  process.on(signal, () => {
    if (interrupted) return void (started.lab?.stop() ?? Promise.resolve()).finally(() => process.exit(130));
    interrupted = true;
    console.log(`  (${signal}: ending the soak early)`);
  });

const lab = await ScaleLab.start({
  tag: "sk",
  policies: Number(args.policies),
  sources: Number(args.sources),
  probes: Number(args.probes),
  probeIntervalMs: INTERVAL,
  probeTimeoutMs: PROBE_TIMEOUT,
  peers: PEERS,
  bfdIntervalMs: INTERVAL,
  egressd: args.egressd,
  nodeFlags: args["node-flags"].split(" ").filter(Boolean),
  bfdPeer: args["bfd-peer"] === "egressd" ? "egressd" : "frr",
  ownSignals: true,
});
started.lab = lab;
let falseAlarms = 1;
try {
  falseAlarms = await main(lab);
} finally {
  await lab.stop();
}
// An exit code, not process.exit(): what was printed to a pipe must reach it.
process.exitCode = falseAlarms === 0 ? 0 : 1;
