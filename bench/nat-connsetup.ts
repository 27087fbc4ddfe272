// Benchmark: TCP connection-setup time through the gateway with 1 and with
// 100,000 source entries in egressd's table, and with 10,000 linear
// iptables-nft SNAT rules instead, all in the same run. Prints figures.
//   node dist/bench/nat-connsetup.js
import { rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { tmpdir } from "node:os";
import { buildTopology, fixture, startServer, stateFile } from "../test/helpers/dataplane-topology.js";
import type { Sandbox } from "../test/helpers/netns.js";
import { benchSandbox, fmt, median, stateWithSources } from "./nat-lib.js";

const CONNECTS = 2000;
const ROUNDS = 5;
const IPTABLES_RULES = 10_000;

const CLIENT_JS = `
const net = require("net");
const [host, port, local, n] = process.argv.slice(1);
const times = [];
function one(i) {
  if (i >= Number(n)) {
    times.sort((a, b) => a - b);
    const mean = times.reduce((a, b) => a + b, 0) / times.length;
    process.stdout.write(JSON.stringify({ mean, median: times[times.length >> 1] }) + "\\n");
    return;
  }
  const t = process.hrtime.bigint();
  const c = net.connect({ host, port: Number(port), localAddress: local });
  c.once("connect", () => {
    times.push(Number(process.hrtime.bigint() - t) / 1000);
    c.destroy();
    one(i + 1);
  });
  c.once("error", (e) => { process.stderr.write(String(e)); process.exit(4); });
}
one(0);`;

async function measure(s: Sandbox, local: string, expect: string): Promise<number> {
  // check the path first: the server must see the expected source
  const { stdout: seen } = await s.exec("pod", [
    "node",
    "-e",
    `require("net").connect({host:"203.0.113.10",port:8080,localAddress:"${local}"}).on("data",d=>process.stdout.write(d))`,
  ]);
  if (seen.trim() !== expect) throw new Error(`server saw ${seen.trim()}, expected ${expect}`);
  const { stdout } = await s.exec(
    "pod",
    ["node", "-e", CLIENT_JS, "203.0.113.10", "8080", local, String(CONNECTS)],
    300_000,
  );
  return (JSON.parse(stdout) as { mean: number }).mean;
}

function iptablesScript(): string {
  const L = [
    "*nat",
    ":PREROUTING ACCEPT [0:0]",
    ":INPUT ACCEPT [0:0]",
    ":OUTPUT ACCEPT [0:0]",
    ":POSTROUTING ACCEPT [0:0]",
  ];
  for (let i = 0; i < IPTABLES_RULES - 1; i++)
    L.push(`-A POSTROUTING -s 10.64.${(i >> 8) & 255}.${i & 255}/32 -j SNAT --to-source 192.0.2.11`);
  L.push("-A POSTROUTING -s 10.244.1.10/32 -j SNAT --to-source 192.0.2.11", "COMMIT", "");
  return L.join("\n");
}

async function main(): Promise<void> {
  const s = benchSandbox("c");
  try {
    await buildTopology(s, { ipv6: false });
    await startServer(s);
    const one = stateFile(stateWithSources(1));
    const many = stateFile(stateWithSources(100_000));
    const ipt = join(tmpdir(), `egressd-bench-ipt-${process.pid}.rules`);
    writeFileSync(ipt, iptablesScript());
    const res: Record<string, number[]> = { plain: [], nft1: [], nft100k: [], ipt10k: [] };
    // each scenario sets itself up from scratch; the order rotates per round and conntrack is
    // flushed before each measurement, so no scenario always runs on a warmer or fuller table
    const scenarios: [string, () => Promise<number>][] = [
      ["plain", async () => measure(s, "10.244.1.10", "10.244.1.10")],
      [
        "nft1",
        async () => {
          await fixture(s, "gw", ["apply", one]);
          return measure(s, "10.244.1.10", "192.0.2.11");
        },
      ],
      [
        "nft100k",
        async () => {
          await fixture(s, "gw", ["apply", many]);
          return measure(s, "10.244.1.10", "192.0.2.11");
        },
      ],
      [
        "ipt10k",
        async () => {
          await s.sh("gw", `ip addr add 192.0.2.11/32 dev lo; iptables-nft-restore < ${ipt}`);
          const v = await measure(s, "10.244.1.10", "192.0.2.11");
          await s.sh("gw", "iptables-nft -t nat -F POSTROUTING; ip addr del 192.0.2.11/32 dev lo");
          return v;
        },
      ],
    ];
    for (let r = 0; r < ROUNDS; r++) {
      for (let i = 0; i < scenarios.length; i++) {
        const [name, fn] = scenarios[(i + r) % scenarios.length]!;
        await fixture(s, "gw", ["teardown"]);
        await s.tryExec("gw", ["conntrack", "-F"]);
        res[name]!.push(await fn());
      }
    }
    const m = Object.fromEntries(Object.entries(res).map(([k, v]) => [k, median(v)])) as Record<
      string,
      number
    >;
    console.log(
      `nat-connsetup: ${CONNECTS} sequential TCP connects pod -> gateway -> server, median of ${ROUNDS} rounds (mean per connect)`,
    );
    console.log(`  plain forwarding, no NAT                     ${fmt(m.plain!, 1)} us`);
    console.log(`  egressd nft, 1 source entry                  ${fmt(m.nft1!, 1)} us`);
    console.log(`  egressd nft, 100,000 source entries          ${fmt(m.nft100k!, 1)} us`);
    console.log(`  iptables-nft, ${IPTABLES_RULES} linear SNAT rules         ${fmt(m.ipt10k!, 1)} us`);
    console.log(
      `  ratio 100k entries / 1 entry                 ${fmt(m.nft100k! / m.nft1!, 3)}   (target <= 1.1)`,
    );
    console.log(`  ratio 10k iptables rules / egressd 100k      ${fmt(m.ipt10k! / m.nft100k!, 3)}`);
    console.log(
      `  added per connect by 10k iptables rules      ${fmt(m.ipt10k! - m.nft1!, 1)} us (vs egressd with 1 entry)`,
    );
    console.log(
      `  rounds: ${JSON.stringify(Object.fromEntries(Object.entries(res).map(([k, v]) => [k, v.map((x) => Math.round(x))])))}`,
    );
  } finally {
    rmSync(join(tmpdir(), `egressd-bench-ipt-${process.pid}.rules`), { force: true });
    await s.cleanup();
  }
}

await main();
