// CPU cost of egressd's BFD: N sessions at a given TX interval, measured with
// process.cpuUsage() in this process (plus the helper's own CPU time, from
// /proc/PID/schedstat) while a child process (this script with --responder)
// plays the N peers. Runs over loopback (127.1.0.1 <-> 127.2.0.x).
//
// Each transport given runs in turn against the same peers, so the figures of
// one run compare: "udp" (node:dgram, every packet on this thread) and
// "helper" (the periodic half in egressd-bfd, as the daemon runs it; needs
// root for port 3784 and a built dist/native/egressd-bfd).
//
//   node dist/bench/bfd-cpu.js [--sessions 50] [--interval 100] [--seconds 10] [--slack 1]
//                              [--transports udp,helper] [--lag-resolution MS (0: off)]
import { spawn } from "node:child_process";
import { monitorEventLoopDelay } from "node:perf_hooks";
import { fileURLToPath } from "node:url";
import { readFileSync } from "node:fs";
import { BfdManager } from "../health/bfd/manager.js";
import { OffloadTransport } from "../health/bfd/offload.js";

function arg(name: string, def: number): number {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? Number(process.argv[i + 1]) : def;
}

const N = arg("sessions", 50);
const INTERVAL = arg("interval", 100);
const SECONDS = arg("seconds", 10);
const LOCAL = "127.1.0.1";
const peerAddr = (i: number) => `127.2.${Math.floor(i / 250)}.${(i % 250) + 1}`;
const SLACK = arg("slack", 1);
const LAG_MS = arg("lag-resolution", 0);
const timers = { desiredMinTxMs: INTERVAL, requiredMinRxMs: INTERVAL, detectMultiplier: 3 };

/** The peers: one manager per session, since a manager keys its sessions by peer address. */
async function responder(): Promise<void> {
  const ms: BfdManager[] = [];
  for (let i = 0; i < N; i++) {
    const m = new BfdManager();
    await m.add({ peer: LOCAL, local: peerAddr(i), ...timers });
    ms.push(m);
  }
  process.stdout.write("ready\n");
  process.on("SIGTERM", () => void Promise.all(ms.map((m) => m.stop())).then(() => process.exit(0)));
}

async function waitUntil(cond: () => boolean, ms: number, what: string): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** CPU time of a process so far, in ms (the scheduler's own count, to the nanosecond). */
function processCpuMs(pid: number | undefined): number {
  if (pid === undefined) return 0;
  try {
    let ns = 0;
    for (const line of readFileSync(`/proc/${pid}/schedstat`, "utf8").split("\n"))
      if (line.trim()) ns += Number(line.split(" ")[0]);
    return ns / 1e6;
  } catch {
    return 0;
  }
}

async function main(): Promise<void> {
  if (process.argv.includes("--responder")) return responder();
  const ti = process.argv.indexOf("--transports");
  const transports = (ti >= 0 ? process.argv[ti + 1]! : "udp,helper").split(",");
  const child = spawn(
    process.execPath,
    [fileURLToPath(import.meta.url), "--responder", "--sessions", `${N}`, "--interval", `${INTERVAL}`],
    { stdio: ["ignore", "pipe", "inherit"] },
  );
  await new Promise<void>((resolve, reject) => {
    child.stdout!.once("data", () => resolve());
    child.once("exit", (c) => reject(new Error(`responder exited ${c}`)));
  });
  const results: Array<Record<string, unknown>> = [];
  for (const kind of transports) results.push(await measure(kind));
  if (results.length === 2) {
    const [a, b] = results as [Record<string, number>, Record<string, number>];
    console.log(
      JSON.stringify({
        ratio: `${transports[1]}/${transports[0]} CPU`,
        value: +(b["cpuPercentOfOneCore"]! / a["cpuPercentOfOneCore"]!).toFixed(3),
      }),
    );
  }
  child.kill("SIGTERM");
}

async function measure(kind: string): Promise<Record<string, unknown>> {
  const transport = kind === "helper" ? new OffloadTransport() : undefined;
  if (kind !== "helper" && kind !== "udp") throw new Error(`unknown transport ${kind}`);
  const m = new BfdManager({ slackMs: SLACK, ...(transport ? { transport } : {}) });
  for (let i = 0; i < N; i++) await m.add({ peer: peerAddr(i), local: LOCAL, ...timers });
  const upCount = () => m.list().filter((s) => s.stateName === "Up").length;
  await waitUntil(() => upCount() === N && m.list().every((s) => !s.pollActive), 15_000, "all sessions Up");
  await new Promise((r) => setTimeout(r, 500));

  const before = m
    .list()
    .reduce((a, s) => ({ rx: a.rx + s.counters.rxPackets, tx: a.tx + s.counters.txPackets }), {
      rx: 0,
      tx: 0,
    });
  const wakeups0 = m.stats.wakeups;
  const handled0 = m.stats.rxHandled;
  const helper0 = processCpuMs(transport?.pid);
  // Sampling the loop wakes this thread too (200 times a second at 5 ms): only when asked.
  const lag = LAG_MS > 0 ? monitorEventLoopDelay({ resolution: LAG_MS }) : undefined;
  lag?.enable();
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  await new Promise((r) => setTimeout(r, SECONDS * 1000));
  const cpu = process.cpuUsage(cpu0);
  const helperMs = processCpuMs(transport?.pid) - helper0;
  const elapsed = performance.now() - t0;
  lag?.disable();
  const after = m
    .list()
    .reduce((a, s) => ({ rx: a.rx + s.counters.rxPackets, tx: a.tx + s.counters.txPackets }), {
      rx: 0,
      tx: 0,
    });
  const downs = m.list().reduce((a, s) => a + s.counters.downs, 0);
  const cpuMs = (cpu.user + cpu.system) / 1000 + helperMs;
  const pkts = after.rx - before.rx + after.tx - before.tx;
  const result = {
    transport: kind,
    sessions: N,
    intervalMs: INTERVAL,
    slackMs: SLACK,
    seconds: +(elapsed / 1000).toFixed(2),
    cpuUserMs: +(cpu.user / 1000).toFixed(1),
    cpuSystemMs: +(cpu.system / 1000).toFixed(1),
    cpuPercentOfOneCore: +((100 * cpuMs) / elapsed).toFixed(2),
    helperCpuMs: +helperMs.toFixed(1),
    packetsReadByNode: m.stats.rxHandled - handled0,
    packetsIn: after.rx - before.rx,
    packetsOut: after.tx - before.tx,
    cpuMicrosPerPacket: +((cpuMs * 1000) / pkts).toFixed(1),
    schedulerWakeups: m.stats.wakeups - wakeups0,
    ...(lag
      ? {
          eventLoopDelayP99Ms: +(lag.percentile(99) / 1e6).toFixed(2),
          eventLoopDelayMaxMs: +(lag.max / 1e6).toFixed(2),
        }
      : {}),
    sessionsDownDuringRun: downs,
    rssMiB: +(process.memoryUsage().rss / 2 ** 20).toFixed(1),
  };
  console.log(JSON.stringify(result, null, 2));
  await m.stop();
  return result;
}

main().catch((e: Error) => {
  console.error(e);
  process.exit(1);
});
