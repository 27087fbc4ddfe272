// The two-gateway namespace lab of the connection-sync benches
// (bench/sync-stall.ts, bench/sync-cost.ts) and of the pacing library's test
// (test/integration/event-pace.test.ts): gw1 SNATs a pod's short
// connections to a server, gw2 is its sync peer over a veth of their own, and
// each runs conntrackd with the config egressd writes (conntrackdConfig),
// with the event mask of egressd's guard (its own rule).
import { spawn, type ChildProcess } from "node:child_process";
import { rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { ConnectionSyncConfig } from "../../core/config/sync-schema.js";
import { conntrackdConfig, parseConntrackdStats, type ConntrackdStats } from "../../core/plan/sync.js";
import { syncEventRules } from "../../routing/nft-guard.js";
import type { Sandbox } from "./netns.js";

// Ten pod addresses: a client's ephemeral ports to one server port run out near 28k per address.
export const SOURCES = Array.from({ length: 10 }, (_, i) => `10.244.1.${20 + i}`);

/** Each gateway's sync section: the other is its one peer, over the veth y1 (gw1) - y2 (gw2). */
const SYNC: Record<PairNode, ConnectionSyncConfig> = {
  gw1: {
    interface: "y1",
    address: "10.1.9.1",
    peers: [{ name: "gw2", address: "10.1.9.2", egressIPs: ["203.0.113.2"] }],
    sources: ["10.244.1.0/24"],
  },
  gw2: {
    interface: "y2",
    address: "10.1.9.2",
    peers: [{ name: "gw1", address: "10.1.9.1", egressIPs: ["203.0.113.1"] }],
    sources: ["10.244.1.0/24"],
  },
};

export type PairNode = "gw1" | "gw2";

export async function buildPair(s: Sandbox): Promise<void> {
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
        "/usr/sbin/nft -f - <<'EOF'",
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
export async function pairEntries(s: Sandbox, node: PairNode): Promise<number> {
  const r = await s.tryExec(node, ["conntrack", "-L", "-p", "tcp", "--dport", "9001"]);
  return r.stdout.split("\n").filter((l) => l.includes("203.0.113.10")).length;
}

export interface PairDaemon {
  child: ChildProcess;
  /** conntrackd's own pid (ip netns exec and env exec in place). */
  pid: number;
  stats: () => Promise<ConntrackdStats>;
  /** What conntrackd (and the library in it) wrote on standard error so far. */
  stderr: () => string;
}

/**
 * Flushes both tables and starts both conntrackds, each with egressd's config
 * passed through `edit`, its command line after `front` (egressd's pacing, or
 * nothing). Files go in `dir`.
 */
export function startPair(
  s: Sandbox,
  dir: string,
  o: { edit?: (text: string) => string; front?: readonly string[] } = {},
): Promise<PairDaemon[]> {
  return Promise.all(
    (["gw1", "gw2"] as const).map(async (node) => {
      await s.tryExec(node, ["conntrack", "-F"]);
      const paths = { lockFile: join(dir, `${node}.lock`), socket: join(dir, `${node}.ctl`) };
      rmSync(paths.lockFile, { force: true });
      const text = conntrackdConfig(SYNC[node], paths);
      const file = join(dir, `${node}.conf`);
      writeFileSync(file, o.edit ? o.edit(text) : text, { mode: 0o600 });
      const child = spawn("ip", ["netns", "exec", s.ns(node), ...(o.front ?? []), "conntrackd", "-C", file], {
        stdio: ["ignore", "ignore", "pipe"],
      });
      let stderr = "";
      child.stderr!.setEncoding("utf8");
      child.stderr!.on("data", (d: string) => (stderr = (stderr + d).slice(-65536)));
      const stats = async () =>
        parseConntrackdStats((await s.exec(node, ["conntrackd", "-C", file, "-s"])).stdout);
      return { child, pid: child.pid!, stats, stderr: () => stderr };
    }),
  );
}
