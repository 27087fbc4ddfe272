// Sidecar mode: gobgpd runs on its own (as a separate container of the
// gateway pod would), egressd drives it at a configured address, and a
// stopping egressd withdraws its paths but leaves the sidecar running.
import { NODE_ENV, NODE_FLAGS } from "../../daemon/node-flags.js";
import test, { type ExecutionContext } from "ava";
import { openSync, readFileSync, rmSync, writeFileSync } from "node:fs";
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
} from "../helpers/bgp-lab.js";
import { isRunning, spawnDetached } from "../../lib/exec.js";
import { sandbox } from "../helpers/netns.js";
import { REPO } from "../helpers/paths.js";

async function sidecarGateway(t: ExecutionContext, prefix: string) {
  const sb = sandbox(t, prefix);
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
drain: { periodMs: 500 }
bgp:
  asn: ${GW_ASN}
  routerId: ${GW_V4}
  listenPort: 179
  speaker: { mode: sidecar, address: "${sidecar.target}" }
  peers: [{ name: tor, address: ${TOR_V4}, asn: ${TOR_ASN}, holdTime: 3 }]
`,
  );
  const logFile = join(dir, "egressd.log");
  const pid = spawnDetached(
    ["node", ...NODE_FLAGS, join(REPO, "dist/daemon/cli.js"), "run", "-c", config, "--run-dir", dir],
    {
      netns: sb.ns("gw"),
      logFile: openSync(logFile, "a"),
      env: { ...NODE_ENV },
    },
  );
  const log = () => readFileSync(logFile, "utf8");
  t.teardown(() => {
    if (isRunning(pid)) process.kill(pid, "SIGKILL");
  });
  const routes = () => frr.prefixes(4);
  await waitFor("paths in FRR", async () => (await routes()).includes("203.0.113.0/24"), 30_000);
  return { sb, sidecar, pid, routes, log };
}

test("egressd drives a sidecar gobgpd and leaves it running when it stops", async (t) => {
  const { sidecar, pid, routes } = await sidecarGateway(t, "sc");
  t.true((await routes()).includes("192.0.2.50/32"));

  process.kill(pid, "SIGTERM"); // drain, then stop
  await waitFor("paths withdrawn", async () => !(await routes()).includes("203.0.113.0/24"), 10_000);
  await waitFor("egressd exited", async () => !isRunning(pid), 20_000);
  await waitFor("egress IP withdrawn too", async () => !(await routes()).includes("192.0.2.50/32"), 5000);
  t.true(sidecar.pid !== undefined && isRunning(sidecar.pid), "the sidecar gobgpd is still running");
});

test("a sidecar that cannot be told to withdraw keeps the data plane in place, and egressd exits 1", async (t) => {
  const { sb, sidecar, pid, routes, log } = await sidecarGateway(t, "sd");
  // The sidecar hangs (it still holds its sessions and keeps advertising for a while).
  process.kill(sidecar.pid!, "SIGSTOP");
  t.teardown(() => {
    if (sidecar.pid && isRunning(sidecar.pid)) process.kill(sidecar.pid, "SIGCONT");
  });
  process.kill(pid, "SIGTERM");
  await waitFor("egressd exited", async () => !isRunning(pid), 40_000);
  t.regex(log(), /the sidecar gobgpd could not be told to withdraw: leaving the data plane in place/);
  t.regex(log(), /"clean":false,"msg":"stopped"/, "and it says so in its exit status (1)");
  const table = await sb.tryExec("gw", ["/usr/sbin/nft", "list", "table", "inet", "egressd"]);
  t.is(table.code, 0, "the SNAT table is still there for the paths the sidecar may still advertise");
  t.regex((await sb.exec("gw", ["ip", "addr", "show", "dev", "lo"])).stdout, /192\.0\.2\.50\/32/);
  // Resumed, the sidecar peers again and advertises what egressd could not
  // withdraw: the egress IP at least (the drain's withdrawal of the
  // destinations may reach it late, and that is fine). The kernel state left
  // in place still serves it.
  process.kill(sidecar.pid!, "SIGCONT");
  await waitFor(
    "the sidecar advertises again",
    async () => (await routes()).includes("192.0.2.50/32"),
    40_000,
  );
  t.is((await sb.tryExec("gw", ["/usr/sbin/nft", "list", "table", "inet", "egressd"])).code, 0);
});
