// Benchmark: what a stalled conntrackd loses, and what brings it back.
//
// Two gateways in namespaces of their own: gw1 SNATs a pod's connections to a
// server, and gw2 is its sync peer. Each runs conntrackd with the config
// egressd writes (conntrackdConfig), over a veth of their own. Short
// connections go through gw1 at a steady rate, and gw1's conntrackd is
// stopped (SIGSTOP) for a while in the middle of them, as a starved or
// throttled process would be. Printed: the connections made, the entries
// gw1 holds for them, and the entries gw2 holds, right after the load and
// every 5 s until the overrun resync has run (conntrackd's 30 s), and what
// the two conntrackds spent after the load (that read, mostly). The same
// run repeats it with reliable netlink events on, the config before
// e8e4d0b, as the baseline.
//   node dist/bench/sync-stall.js [--rate 6000] [--seconds 5] [--stop-ms 2000] [--wait 40]
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import type { ConnectionSyncConfig } from "../core/config/sync-schema.js";
import { conntrackdConfig, parseConntrackdStats } from "../core/plan/sync.js";
import { syncEventRules } from "../routing/nft-guard.js";
import type { Sandbox } from "../test/helpers/netns.js";
import { runGenerator, startSink } from "./conn-load.js";
import { benchSandbox } from "./nat-lib.js";
import { runtimeMs } from "./probe-lab.js";

const { values: opt } = parseArgs({
  options: {
    rate: { type: "string", default: "6000" },
    seconds: { type: "string", default: "5" },
    "stop-ms": { type: "string", default: "2000" },
    wait: { type: "string", default: "40" },
  },
});
const RATE = Number(opt.rate);
const SECONDS = Number(opt.seconds);
const STOP_MS = Number(opt["stop-ms"]);
const WAIT_S = Number(opt.wait);
if (!(RATE > 0 && SECONDS > 0 && STOP_MS >= 0 && WAIT_S >= 0))
  throw new Error("--rate, --seconds: positive numbers; --stop-ms, --wait: 0 or more");
// Ten pod addresses: a client's ephemeral ports to one server port run out near 28k per address.
const SOURCES = Array.from({ length: 10 }, (_, i) => `10.244.1.${20 + i}`);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** gw1's sync section: gw2 is its one peer, over the veth y1 (gw1) - y2 (gw2). */
const SYNC: ConnectionSyncConfig = {
  interface: "y1",
  address: "10.1.9.1",
  peers: [{ name: "gw2", address: "10.1.9.2", egressIPs: ["203.0.113.2"] }],
  sources: ["10.244.1.0/24"],
};
const SYNC2: ConnectionSyncConfig = {
  interface: "y2",
  address: "10.1.9.2",
  peers: [{ name: "gw1", address: "10.1.9.1", egressIPs: ["203.0.113.1"] }],
  sources: ["10.244.1.0/24"],
};

async function build(s: Sandbox): Promise<void> {
  await s.addNode("pod");
  await s.addNode("gw1", { forwarding: true });
  await s.addNode("gw2");
  await s.addNode("srv");
  await s.link("pod", "p0", "gw1", "g1p");
  await s.link("gw1", "g1s", "srv", "s0");
  await s.link("gw1", "y1", "gw2", "y2");
  await s.sh(
    "pod",
    `${SOURCES.map((a) => `ip addr add ${a}/24 dev p0`).join("\n")}\nip route add default via 10.244.1.1`,
  );
  await s.sh(
    "gw1",
    "ip addr add 10.244.1.1/24 dev g1p\nip addr add 203.0.113.1/24 dev g1s\nip addr add 10.1.9.1/24 dev y1",
  );
  await s.sh("gw2", "ip addr add 10.1.9.2/24 dev y2");
  await s.sh("srv", "ip addr add 203.0.113.10/24 dev s0\nip route add default via 203.0.113.1");
  for (const g of ["gw1", "gw2"]) {
    // SNAT as egressd's table does it, and the event mask of egressd's guard (its own rule): only
    // new, established and destroyed reach conntrackd.
    await s.sh(
      g,
      [
        "nft -f - <<'EOF'",
        "table ip nat {",
        "  chain post {",
        "    type nat hook postrouting priority srcnat;",
        `    ip saddr 10.244.1.0/24 oifname "g1s" snat to 203.0.113.1`,
        "  }",
        "}",
        "table ip events {",
        "  chain mask {",
        "    type filter hook forward priority -400;",
        ...syncEventRules(["10.244.1.0/24"], []),
        "  }",
        "}",
        "EOF",
        "sysctl -qw net.netfilter.nf_conntrack_tcp_be_liberal=1",
      ].join("\n"),
    );
  }
}

/** The TCP entries a gateway holds for the server (its own, or its peer's injected). */
async function entries(s: Sandbox, node: string): Promise<number> {
  const r = await s.tryExec(node, ["conntrack", "-L", "-p", "tcp", "--dport", "9001"]);
  return r.stdout.split("\n").filter((l) => l.includes("203.0.113.10")).length;
}

interface Trial {
  label: string;
  made: number;
  held: number;
  /** gw2's entries right after the load, then every 5 s. */
  peer: number[];
  /** CPU of gw1's and gw2's conntrackd after the load (the overrun resync, if any), ms. */
  afterMs: [number, number];
  /** gw2's conntrackd at the end: injections the kernel refused, sync messages lost. */
  refused: number;
  lost: number;
}

async function trial(s: Sandbox, dir: string, label: string, reliable: boolean): Promise<Trial> {
  await s.tryExec("gw1", ["conntrack", "-F"]);
  await s.tryExec("gw2", ["conntrack", "-F"]);
  const daemons: ChildProcess[] = [];
  for (const [node, sync] of [
    ["gw1", SYNC],
    ["gw2", SYNC2],
  ] as const) {
    const paths = { lockFile: join(dir, `${node}.lock`), socket: join(dir, `${node}.ctl`) };
    rmSync(paths.lockFile, { force: true });
    let text = conntrackdConfig(sync, paths);
    if (reliable) {
      const before = text;
      text = text.replace("NetlinkEventsReliable Off\n  NetlinkOverrunResync On", "NetlinkEventsReliable On");
      if (text === before) throw new Error("the config no longer has the lines this bench replaces");
    }
    const file = join(dir, `${node}.conf`);
    writeFileSync(file, text, { mode: 0o600 });
    daemons.push(spawn("ip", ["netns", "exec", s.ns(node), "conntrackd", "-C", file], { stdio: "ignore" }));
  }
  try {
    await sleep(2000);
    const sender = daemons[0]!.pid!; // ip netns exec runs conntrackd in its own place
    const load = runGenerator(s.ns("pod"), RATE, SECONDS, SOURCES);
    if (STOP_MS > 0) {
      await sleep(500);
      process.kill(sender, "SIGSTOP");
      await sleep(STOP_MS);
      process.kill(sender, "SIGCONT");
    }
    const made = (await load).ok;
    const pids = daemons.map((d) => d.pid!);
    const cpu0 = pids.map(runtimeMs);
    const held = await entries(s, "gw1");
    const peer: number[] = [];
    for (let t = 0; t <= WAIT_S; t += 5) {
      peer.push(await entries(s, "gw2"));
      if (t < WAIT_S) await sleep(5000);
    }
    const cpu1 = pids.map(runtimeMs);
    const stats = parseConntrackdStats(
      (await s.exec("gw2", ["conntrackd", "-C", join(dir, "gw2.conf"), "-s"])).stdout,
    );
    return {
      label,
      made,
      held,
      peer,
      afterMs: [Math.round(cpu1[0]! - cpu0[0]!), Math.round(cpu1[1]! - cpu0[1]!)],
      refused: stats.injected.failed,
      lost: stats.lost,
    };
  } finally {
    for (const d of daemons) d.kill("SIGKILL");
    await sleep(300);
  }
}

const s = benchSandbox("ss");
const dir = mkdtempSync(join(tmpdir(), "egressd-bench-sync-stall-"));
try {
  await build(s);
  const sink = await startSink(s.ns("srv"));
  try {
    const out: Trial[] = [];
    out.push(await trial(s, dir, "as egressd configures it (reliable events off, overrun resync on)", false));
    out.push(await trial(s, dir, "reliable events on (before e8e4d0b)", true));
    console.log(
      `sync stall: ${RATE} short connections/s for ${SECONDS} s through gw1, its conntrackd stopped for ${STOP_MS} ms from 0.5 s in; gw2's entries right after the load, then every 5 s`,
    );
    for (const t of out)
      console.log(
        `  ${t.label}: made ${t.made}, gw1 holds ${t.held}; gw2 holds ${t.peer.join(", ")} (${((100 * t.peer.at(-1)!) / Math.max(1, t.held)).toFixed(1)}% of gw1's at the end); conntrackd's CPU after the load: gw1 ${t.afterMs[0]} ms, gw2 ${t.afterMs[1]} ms; gw2's injections refused ${t.refused}, sync messages lost ${t.lost}`,
      );
  } finally {
    sink.kill("SIGKILL");
  }
} finally {
  await s.cleanup();
  rmSync(dir, { recursive: true, force: true });
}
