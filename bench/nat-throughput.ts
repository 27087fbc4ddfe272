// Benchmark: TCP throughput (iperf3) through the gateway with egressd's SNAT
// and policy routing, as a ratio to plain forwarding without NAT, same run.
//   node dist/bench/nat-throughput.js
import { run, spawnDetached } from "../lib/exec.js";
import {
  buildTopology,
  fixture,
  referenceState,
  seenBy,
  startServer,
  stateFile,
} from "../test/helpers/dataplane-topology.js";
import type { Sandbox } from "../test/helpers/netns.js";
import { benchSandbox, fmt, median } from "./nat-lib.js";

const SECONDS = 4;
const ROUNDS = 3;

async function iperf(s: Sandbox): Promise<number> {
  const { stdout } = await run(
    ["iperf3", "-c", "203.0.113.10", "-B", "10.244.1.10", "-t", String(SECONDS), "-J"],
    {
      netns: s.ns("pod"),
      timeoutMs: (SECONDS + 20) * 1000,
    },
  );
  const j = JSON.parse(stdout) as { end: { sum_received: { bits_per_second: number } } };
  return j.end.sum_received.bits_per_second / 1e9;
}

async function main(): Promise<void> {
  const s = benchSandbox("t");
  try {
    await buildTopology(s, { ipv6: false });
    await startServer(s);
    spawnDetached(["iperf3", "-s"], { netns: s.ns("srv") });
    await new Promise((r) => setTimeout(r, 500));
    const state = stateFile(referenceState());
    const plain: number[] = [];
    const snat: number[] = [];
    for (let r = 0; r < ROUNDS; r++) {
      await fixture(s, "gw", ["teardown"]);
      if ((await seenBy(s, "203.0.113.10", "10.244.1.10")) !== "10.244.1.10")
        throw new Error("plain path is NATed");
      plain.push(await iperf(s));
      await fixture(s, "gw", ["apply", state]);
      if ((await seenBy(s, "203.0.113.10", "10.244.1.10")) !== "192.0.2.11")
        throw new Error("SNAT path is not NATed");
      snat.push(await iperf(s));
    }
    const p = median(plain);
    const n = median(snat);
    console.log(
      `nat-throughput: iperf3 TCP, ${SECONDS} s per run, median of ${ROUNDS} alternating rounds (veth, one core per side)`,
    );
    console.log(
      `  plain forwarding, no NAT            ${fmt(p)} Gbit/s   runs ${plain.map((x) => fmt(x)).join(", ")}`,
    );
    console.log(
      `  egressd SNAT + policy routing       ${fmt(n)} Gbit/s   runs ${snat.map((x) => fmt(x)).join(", ")}`,
    );
    console.log(`  ratio SNAT / plain                  ${fmt(n / p, 3)}   (target >= 0.9)`);
  } finally {
    await s.cleanup();
  }
}

await main();
