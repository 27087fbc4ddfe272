// Sidecar mode: gobgpd runs on its own (as a separate container of the
// gateway pod would), egressd drives it at a configured address, and a
// stopping egressd withdraws its paths but leaves the sidecar running.
import test from "ava";
import { rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { GobgpdProcess } from "../../bgp/gobgpd-process.js";
import {
  buildTopology,
  Frr,
  GW_ASN,
  GW_V4,
  socketDir,
  TOR_ASN,
  TOR_V4,
  waitFor,
} from "../../bench/bgp-lab.js";
import { isRunning, spawnDetached } from "../../daemon/exec.js";
import { sandbox } from "../helpers/netns.js";
import { REPO } from "../helpers/paths.js";

test("egressd drives a sidecar gobgpd and leaves it running when it stops", async (t) => {
  const sb = sandbox(t, "sc");
  await buildTopology(sb);
  await sb.exec("gw", ["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
  const frr = await Frr.start(sb.ns("tor"));
  t.teardown(() => frr.cleanup());
  const dir = socketDir();
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));

  const sidecar = new GobgpdProcess({ socketPath: join(dir, "gobgpd.sock"), netns: sb.ns("gw") });
  await sidecar.start();
  t.teardown(() => sidecar.stop());

  const config = join(dir, "egressd.yaml");
  writeFileSync(
    config,
    `gateway: { name: gw, site: a }
egressIPs: [{ address: 192.0.2.50, interface: lo }]
uplinks: [{ name: tor, interface: gw0, nextHop: ${TOR_V4} }]
policies:
  - { name: web, sources: [10.244.0.0/16], destinations: [203.0.113.0/24], egressIP: 192.0.2.50, uplink: tor }
bgp:
  asn: ${GW_ASN}
  routerId: ${GW_V4}
  listenPort: 179
  speaker: { mode: sidecar, address: "${sidecar.target}" }
  peers: [{ name: tor, address: ${TOR_V4}, asn: ${TOR_ASN}, holdTime: 3 }]
`,
  );
  const pid = spawnDetached(
    ["node", join(REPO, "dist/daemon/cli.js"), "run", "-c", config, "--run-dir", dir],
    {
      netns: sb.ns("gw"),
    },
  );
  const routes = async () =>
    Object.keys(
      (await frr.json<{ routes?: Record<string, unknown> }>("show bgp ipv4 unicast json")).routes ?? {},
    );
  await waitFor("paths in FRR", async () => (await routes()).includes("203.0.113.0/24"), 30_000);
  t.true((await routes()).includes("192.0.2.50/32"));

  process.kill(pid, "SIGTERM"); // drain (default 5 s), then stop
  await waitFor("paths withdrawn", async () => !(await routes()).includes("203.0.113.0/24"), 10_000);
  await waitFor("egressd exited", async () => !isRunning(pid), 20_000);
  await waitFor("egress IP withdrawn too", async () => !(await routes()).includes("192.0.2.50/32"), 5000);
  t.true(sidecar.pid !== undefined && isRunning(sidecar.pid), "the sidecar gobgpd is still running");
});
