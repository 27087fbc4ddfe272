// The reference lab: FRR routers peer, pods reach the core and the other data
// centre, gateways (not pods) reach the external server, and `down` leaves nothing.
import test from "ava";
import { readdirSync, existsSync } from "node:fs";
import { Lab, waitFor } from "../../containerlab/runner.js";
import { loadTopology } from "../../containerlab/topology.js";
import { tryRun, run } from "../../lib/exec.js";
import { RUN_ID } from "../helpers/netns.js";
import { TWO_DC } from "../helpers/paths.js";

interface BgpSummary {
  [af: string]: { peers?: Record<string, { state: string; desc?: string }> };
}

/** Every BGP session between the FRR routers (not towards gateways), as "node af peer state". */
async function sessions(lab: Lab, node: string): Promise<string[]> {
  const s = await lab.vtyshJson<BgpSummary>(node, "show bgp summary json");
  return Object.entries(s).flatMap(([af, v]) =>
    Object.entries(v.peers ?? {})
      .filter(([, p]) => !p.desc?.startsWith("gw-"))
      .map(([peer, p]) => `${node} ${af} ${peer} ${p.state}`),
  );
}

test("two-dc lab: BGP, reachability, clean teardown", async (t) => {
  // The fabric alone: the gateway nodes' egressd (their cmd) is not started.
  const lab = new Lab(loadTopology(TWO_DC), `${RUN_ID}lab`, { quiet: true, noCmd: true });
  t.teardown(() => lab.down());
  await lab.up();

  const routers = ["core", "tor-a", "tor-b", "fw"];
  let last: string[] = [];
  await waitFor(
    "all FRR sessions Established",
    async () => {
      last = (await Promise.all(routers.map((r) => sessions(lab, r)))).flat();
      return last.length > 0 && last.every((s) => s.endsWith("Established"));
    },
    60_000,
  ).catch((e: Error) => t.fail(`${e.message}\n${last.join("\n")}`));
  // core: 2 ToRs x 2 families; each ToR: core + fw x 2 families; fw: 2 ToRs x 2 families.
  t.is(last.length, 16, last.join("\n"));
  t.log(`${last.length} sessions Established`);

  // Routes converge a moment after the sessions: wait for the pod network of B at A.
  await waitFor(
    "pod-a -> pod-b",
    async () => (await lab.tryExec("pod-a", ["ping", "-c1", "-W1", "10.244.2.10"])).code === 0,
    20_000,
  );
  for (const [from, to] of [
    ["pod-a", "10.255.0.1"],
    ["pod-b", "10.255.0.1"],
    ["pod-a", "fd00:244:2::10"],
    ["gw-a1", "203.0.113.10"],
    ["gw-a2", "198.51.100.10"],
    ["gw-b1", "2001:db8:203::10"],
  ] as const) {
    // Each path converges on its own (a prefix learned from fw can come after the pods' routes).
    let last = "";
    const ok = await waitFor(
      `${from} -> ${to}`,
      async () => {
        const r = await lab.tryExec(from, ["ping", "-c1", "-W1", to]);
        last = r.stdout + r.stderr;
        return r.code === 0;
      },
      20_000,
    ).then(
      () => true,
      () => false,
    );
    t.true(ok, `${from} should reach ${to}: ${last}`);
  }
  // Without a gateway, pods do not reach the external service.
  const direct = await lab.tryExec("pod-a", ["ping", "-c1", "-W1", "203.0.113.10"]);
  t.not(direct.code, 0, "pod-a must not reach the server without a gateway");

  await lab.down();
  const { stdout } = await run(["ip", "netns", "list"]);
  t.false(stdout.includes(`${RUN_ID}lab-`), `namespaces left: ${stdout}`);
  const procs = await tryRun(["pgrep", "-f", `${RUN_ID}lab-`]);
  t.is(procs.stdout.trim(), "", "processes left behind");
  t.false(
    readdirSync("/var/run/frr").some((d) => d.startsWith(`${RUN_ID}lab-`)),
    "FRR run dirs left behind",
  );
  t.false(existsSync(lab.stateDir), "state dir left behind");
  await lab.down(); // idempotent
});
