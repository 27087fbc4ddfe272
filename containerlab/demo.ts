// The README's main job: bring the two-dc lab up with egressd running on its
// three gateways, show in plain words what the fabric learned and which
// source address the external server sees for each pod and destination, then
// take it all down again (unless --keep).
import { fileURLToPath } from "node:url";
import { bfdPeers, bgpSessions, bgpTable, kernelNextHops, seenAs, startWhoami } from "./observe.js";
import { blockSources, freezeNode, gatewayByEgress, startStream, TWO_DC_GATEWAYS as GW } from "./failover.js";
import { tryRun } from "../lib/exec.js";
import { ConnectionTrials, DC_A, serving, standingBy } from "./connection-trials.js";
import { Lab, sleep, waitFor } from "./runner.js";
import { loadTopology } from "./topology.js";

const TOPO = fileURLToPath(new URL("../../containerlab/two-dc/two-dc.clab.yml", import.meta.url));
const REPO_BIN = fileURLToPath(new URL("../../bin", import.meta.url));
const keep = process.argv.includes("--keep");
const bold = (s: string) => (process.stdout.isTTY ? `\x1b[1m${s}\x1b[0m` : s);
const say = (s = "") => console.log(s);
const GATEWAYS: Record<string, string> = { "10.1.1.1": "gw-a1", "10.1.2.1": "gw-a2", "10.2.1.1": "gw-b1" };
const name = (hop: string) => GATEWAYS[hop] ?? (hop === "10.0.1.0" || hop === "10.0.2.0" ? "the core" : hop);

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
  process.stdout.on("error", () => undefined); // a closed stdout must not skip the teardown

  try {
    say(bold("1. Bringing up the two-dc lab with network namespaces"));
    say(
      "   DC A: tor-a, gateways gw-a1 and gw-a2, pods on pod-a.  DC B: tor-b, gateway gw-b1, pods on pod-b.",
    );
    say(
      "   A core router joins them; a firewall (fw) in front of the server admits only egress IPs 192.0.2.0/24.",
    );
    const started = Date.now();
    await lab.up();
    await startWhoami(lab, "server");
    const gwSessions = async (tor: string, n: number) => {
      const s = [...(await bgpSessions(lab, tor)).values()].filter((p) => p.desc?.startsWith("gw-"));
      return s.length === n * 2 && s.every((p) => p.state === "Established");
    };
    await waitFor(
      "gateway sessions",
      async () => (await gwSessions("tor-a", 2)) && (await gwSessions("tor-b", 1)),
      60_000,
    );
    await waitFor(
      "ECMP",
      async () => (await kernelNextHops(lab, "tor-a", "203.0.113.0/24")).length === 2,
      30_000,
    );
    // DC B's gateway serves too (its backup path is what section 2 shows).
    await waitFor(
      "DC B's path",
      async () =>
        (await bgpTable(lab, "tor-b")).get("203.0.113.0/24")?.some((p) => p.nextHop === "10.2.1.1") === true,
      30_000,
    );
    say(
      `   egressd runs on the three gateways: peered with the ToRs, probes passed, serving after ${((Date.now() - started) / 1000).toFixed(1)} s.\n` +
        "   (A gateway attracts traffic only once its probes vouch for the upstream; the first probes fail until the\n" +
        "   fabric has converged, so the 3 s hold-down applies once.)\n",
    );

    say(bold("2. What the top-of-rack routers learned from egressd over BGP"));
    const a = await bgpTable(lab, "tor-a");
    for (const prefix of ["203.0.113.0/24", "198.51.100.0/24"]) {
      const via = (a.get(prefix) ?? []).filter((p) => p.multipath).map((p) => name(p.nextHop));
      say(`   tor-a: ${prefix.padEnd(16)} -> ${via.join(" + ")} (ECMP: the kernel spreads flows over both)`);
    }
    for (const ip of ["192.0.2.11/32", "192.0.2.12/32", "192.0.2.131/32", "192.0.2.132/32"]) {
      const p = a.get(ip)?.find((x) => x.best);
      const backup = a.get(ip)?.find((x) => !x.best);
      say(
        `   tor-a: ${ip.padEnd(16)} -> ${p ? name(p.nextHop) : "?"} (an egress IP: replies come back to its gateway;` +
          ` backup ${backup ? `${name(backup.nextHop)}, AS path "${backup.asPath}"` : "none"})`,
      );
    }
    const b = (await bgpTable(lab, "tor-b")).get("203.0.113.0/24") ?? [];
    const own = b.find((p) => p.nextHop === "10.2.1.1");
    const best = b.find((p) => p.best);
    say(
      `   tor-b: 203.0.113.0/24   -> gw-b1 offers it with AS path "${own?.asPath}" (prepended: DC B is the backup site),`,
    );
    say(
      `          so tor-b prefers DC A's gateways via ${best ? name(best.nextHop) : "?"} (AS path "${best?.asPath}").\n`,
    );

    say(
      bold("3. Which source address the server sees (an HTTP 'who am I' on 203.0.113.10 and 198.51.100.10)"),
    );
    const cases: [string, string, string, string][] = [
      [
        "pod-a",
        "10.244.1.10",
        "http://203.0.113.10:8080/",
        "policy web: every pod, web egress IP of a DC A gateway",
      ],
      [
        "pod-a",
        "10.244.1.11",
        "http://198.51.100.10:8080/",
        "policy partner: this pod gets the partner egress IP",
      ],
      ["pod-a", "10.244.1.11", "http://203.0.113.10:8080/", "same pod, other destination: the web egress IP"],
      [
        "pod-a",
        "10.244.1.12",
        "http://198.51.100.10:8080/",
        "no policy allows it: the gateway drops it, counts it",
      ],
      [
        "pod-b",
        "10.244.2.10",
        "http://203.0.113.10:8080/",
        "a DC B pod: through DC A's gateways (B is backup)",
      ],
      ["pod-a", "fd00:244:1::10", "http://[2001:db8:203::10]:8080/", "IPv6: policy web6"],
    ];
    for (const [node, src, url, what] of cases) {
      const seen = await seenAs(lab, node, url, src, 1);
      const dst = new URL(url).hostname.replace(/[[\]]/g, "");
      say(`   ${src.padEnd(15)} -> ${dst.padEnd(17)} seen as ${(seen ?? "(no answer)").padEnd(15)} ${what}`);
    }
    let dropped = 0;
    for (const g of ["gw-a1", "gw-a2"]) {
      const r = await lab.exec(g, [
        "/usr/sbin/nft",
        "-j",
        "list",
        "counter",
        "inet",
        "egressd",
        "unmatched_v4",
      ]);
      dropped += Number(/"packets":\s*(\d+)/.exec(r.stdout)?.[1] ?? 0);
    }
    say(
      `   (dataplane.unmatched: Deny, the default: DC A's gateways dropped ${dropped} such connection attempt${dropped === 1 ? "" : "s"} (counter unmatched_v4))`,
    );

    say(
      bold(
        "\n4. Failover, measured on the traffic: a ping every 10 ms from pod-a (10.244.1.10) to the server",
      ),
    );
    const WEB = "http://203.0.113.10:8080/";
    const SRC = "10.244.1.10";
    const bothServing = () =>
      waitFor(
        "ECMP",
        async () => (await kernelNextHops(lab, "tor-a", "203.0.113.0/24")).length === 2,
        60_000,
      );
    const flow = async () => gatewayByEgress(await seenAs(lab, "pod-a", WEB, SRC, 1));
    const measure = async (
      what: string,
      act: () => Promise<() => Promise<void>>,
      settle: () => Promise<unknown>,
    ) => {
      const stream = startStream(lab, "pod-a", "203.0.113.10", SRC);
      await stream.flowing;
      await sleep(300);
      const undo = await act();
      await settle();
      await sleep(400);
      const r = await stream.stop();
      say(
        `   ${what}: traffic gap ${r.gapMs} ms, ${r.lost} of ${r.sent} pings lost; now seen as ${await seenAs(lab, "pod-a", WEB, SRC, 1)}`,
      );
      return undo;
    };
    const webPeers = async () =>
      ((await bgpTable(lab, "tor-a")).get("203.0.113.0/24") ?? []).map((p) => p.peer);

    let g = await flow();
    if (g) {
      await waitFor("BFD", async () => (await bfdPeers(lab, "tor-a")).get(GW[g!].link) === "up", 10_000);
      say(
        `   The flow goes through ${g} (seen as ${GW[g].web}). Freezing ${g} as a power loss would: every process stopped, nothing forwarded, links up.`,
      );
      const thaw = await measure(
        `${g} frozen, the ToR's BFD (100 ms x 3) takes it out`,
        () => freezeNode(lab, g!),
        () => waitFor("BFD", async () => !(await webPeers()).includes(GW[g!].link), 10_000),
      );
      await thaw();
      say(`   ${g} thawed: it peers again and comes back into the ECMP group.`);
      await bothServing();
    }

    say(
      "   Now the firewall stops admitting both DC A gateways: their probes of 203.0.113.10 fail, they withdraw it,",
    );
    say("   and DC B's backup path (gw-b1, via the core) takes over.");
    const dcA = [GW["gw-a1"].link, GW["gw-a1"].web, GW["gw-a2"].link, GW["gw-a2"].web];
    const restore = await measure(
      "DC A's upstream lost",
      () => blockSources(lab, "fw", dcA, { destinations: ["203.0.113.0/24"] }),
      () =>
        waitFor("DC B", async () => (await seenAs(lab, "pod-a", WEB, SRC, 1)) === GW["gw-b1"].web, 15_000),
    );
    const repaired = Date.now();
    await restore();
    await waitFor("back in DC A", async () => (await flow())?.startsWith("gw-a") === true, 30_000);
    say(
      `   Upstream repaired: traffic is back in DC A after ${((Date.now() - repaired) / 1000).toFixed(1)} s (3 s hold-down, so a flapping link does not flap the fabric).`,
    );
    await bothServing();

    g = await flow();
    if (g) {
      say(
        `   Draining ${g} (what a pod's preStop hook runs: egressd drain): it withdraws, forwards on for 2 s, then cleans up.`,
      );
      const done = tryRun(["egressd", "drain"], {
        netns: lab.ns(g),
        env: { PATH: `${REPO_BIN}:${process.env.PATH}` },
      });
      const back = await measure(
        `${g} drained`,
        async () => async () => undefined,
        async () => void (await done),
      );
      await back();
      await lab.startCmd(g);
    }

    say(
      bold(
        "\n5. Connections that survive a gateway failure: 64 long-lived TCP streams from pod-a to the server",
      ),
    );
    say(
      "   gw-a1 and gw-a2 share their connections' NAT state (conntrackd) and advertise each other's egress IPs\n" +
        "   as backup paths, so the survivor carries the failed gateway's connections on, with their addresses and ports.",
    );
    for (const x of DC_A) await serving(lab, x, 60_000);
    const trials = new ConnectionTrials(lab);
    try {
      await trials.start(64);
      const carried = [...(await trials.carried())].map(([x, n]) => `${x} ${n}`).join(", ");
      say(
        `   Each stream is a numbered record every 10 ms, echoed and checked in order. Carried: ${carried}.`,
      );
      for (const trigger of ["freeze", "kill"] as const) {
        const c = await trials.busiest();
        const { result, restore } = await trials.fail(trigger, c);
        say(
          `   ${c} ${trigger === "freeze" ? "frozen" : "egressd killed (kill -9)"}: ${result.survived} of ${result.before} connections survived, longest stall ${result.maxStallMs} ms`,
        );
        const back = await trials.failback(trigger, c, restore);
        say(
          `   ${c} back (its state resynced first): ${back.survived} of ${back.before} survived, longest stall ${back.maxStallMs} ms`,
        );
      }
      // The whole site: gw-b1 holds DC A's connections (acrossSites) and has their egress IPs as last resort.
      await standingBy(lab, 60_000);
      const { result, restore } = await trials.fail("dc-a", "gw-a1");
      say(
        `   All of DC A frozen: gw-b1 in DC B, which holds their state, carried ${result.survived} of ${result.before} on, longest stall ${result.maxStallMs} ms`,
      );
      const back = await trials.failback("dc-a", "gw-a1", restore);
      say(`   DC A back: ${back.survived} of ${back.before} survived, longest stall ${back.maxStallMs} ms`);
      const bad = trials.anomalies().length;
      say(
        `   ${bad === 0 ? "No stream saw a gap, a duplicate or a reset." : `${bad} sequence errors seen!`}`,
      );
    } finally {
      await trials.stop();
    }

    if (keep) {
      say(bold("\nThe lab stays up (--keep). Look around, then take it down:"));
      say(`  node dist/containerlab/cli.js exec -t ${TOPO} -p demo tor-a -- vtysh -c 'show ip bgp'`);
      say(`  node dist/containerlab/cli.js exec -t ${TOPO} -p demo gw-a1 -- nft list table inet egressd`);
      say(`  node dist/containerlab/cli.js down -t ${TOPO} -p demo`);
    }
  } finally {
    await cleanup();
  }
}

await main();
