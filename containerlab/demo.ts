// The README's main job: bring the two-dc lab up, show in plain words what
// the fabric does, and take it down again (unless --keep).
import { Lab, waitFor } from "./runner.js";
import { loadTopology } from "./topology.js";
import { fileURLToPath } from "node:url";

const TOPO = fileURLToPath(new URL("../../containerlab/two-dc/two-dc.clab.yml", import.meta.url));
const keep = process.argv.includes("--keep");
const bold = (s: string) => (process.stdout.isTTY ? `\x1b[1m${s}\x1b[0m` : s);
const say = (s = "") => console.log(s);

interface Summary {
  [af: string]: {
    peers?: Record<string, { state: string; remoteAs: number; desc?: string; pfxRcd?: number }>;
  };
}

async function main(): Promise<void> {
  const lab = new Lab(loadTopology(TOPO), "demo", { quiet: true });
  await lab.down(); // a lab left behind by an interrupted demo
  let cleaned = false;
  const cleanup = async () => {
    if (cleaned || keep) return;
    cleaned = true;
    say(bold("\nTearing the lab down"));
    await lab.down();
    say("Done: no namespace, link or process of the lab is left.");
  };
  for (const sig of ["SIGINT", "SIGTERM", "SIGHUP"] as const) {
    process.on(
      sig,
      () =>
        void cleanup().then(() => process.exit(128 + (sig === "SIGINT" ? 2 : sig === "SIGTERM" ? 15 : 1))),
    );
  }
  // A closed stdout (demo piped into `head`) must not skip the teardown.
  process.stdout.on("error", () => undefined);

  try {
    say(bold("Bringing up the two-dc lab (10 nodes, 10 links, 4 FRR routers) with network namespaces"));
    await lab.up();
    const routers = ["core", "tor-a", "tor-b", "fw"];
    const started = Date.now();
    await waitFor(
      async () => {
        for (const r of routers) {
          const s = await lab.vtyshJson<Summary>(r, "show bgp summary json");
          const peers = Object.values(s).flatMap((af) => Object.values(af.peers ?? {}));
          if (!peers.length || peers.some((p) => p.state !== "Established")) return false;
        }
        return true;
      },
      60_000,
      "BGP sessions",
    );
    await waitFor(
      async () => (await lab.tryExec("pod-a", ["ping", "-c1", "-W1", "10.244.2.10"])).code === 0,
      20_000,
      "routes",
    );
    say(
      `All BGP sessions between the routers are Established, routes converged after ${((Date.now() - started) / 1000).toFixed(1)} s:\n`,
    );
    for (const r of routers) {
      const s = await lab.vtyshJson<Summary>(r, "show bgp summary json");
      for (const [af, v] of Object.entries(s)) {
        for (const [peer, p] of Object.entries(v.peers ?? {})) {
          say(
            `  ${r.padEnd(6)} ${af.padEnd(12)} -> ${(p.desc ?? "").padEnd(6)} ${peer.padEnd(14)} AS${p.remoteAs}  ${p.state}, ${p.pfxRcd ?? 0} prefixes received`,
          );
        }
      }
    }
    say(bold("\nReachability (one ping each):"));
    const checks: [string, string, string, boolean][] = [
      ["pod-a", "10.255.0.1", "a pod in DC A reaches the core router", true],
      ["pod-a", "10.244.2.10", "a pod in DC A reaches a pod in DC B", true],
      ["pod-a", "fd00:244:2::10", "... over IPv6 too", true],
      [
        "gw-a1",
        "203.0.113.10",
        "gateway gw-a1 reaches the external server (via the firewall, no loop)",
        true,
      ],
      ["gw-b1", "2001:db8:198::10", "gateway gw-b1 reaches the server's second network over IPv6", true],
      ["pod-a", "203.0.113.10", "a pod does NOT reach the server on its own: only gateways may", false],
    ];
    let ok = true;
    for (const [from, to, what, expect] of checks) {
      const r = await lab.tryExec(from, ["ping", "-c1", "-W1", "-q", to]);
      const reached = r.code === 0;
      const rtt = /= [\d.]+\/([\d.]+)\//.exec(r.stdout)?.[1];
      const good = reached === expect;
      ok &&= good;
      say(
        `  ${good ? "ok  " : "FAIL"} ${from} -> ${to.padEnd(17)} ${reached ? `reached (${rtt} ms)` : "unreachable"}: ${what}`,
      );
    }
    say(
      "\nGateway nodes are plain hosts for now; egressd will run on gw-a1, gw-a2 and gw-b1,\n" +
        "advertise the server's prefixes to the ToRs over BGP and SNAT pod traffic to fixed egress IPs.",
    );
    if (keep) {
      say(bold("\nThe lab stays up (--keep). Look around, then take it down:"));
      say(`  node dist/containerlab/cli.js exec -t ${TOPO} -p demo tor-a -- vtysh -c 'show ip route'`);
      say(`  node dist/containerlab/cli.js down -t ${TOPO} -p demo`);
    }
    if (!ok) process.exitCode = 1;
  } finally {
    await cleanup();
  }
}

await main();
