// egressd as it ships, and nothing of the checkout: scripts/install-packed.sh
// installs the npm package with its production dependencies into an empty
// prefix (what the image's build stage does and its runtime copies), and a
// gateway runs from there against an FRR ToR: BGP, BFD through the
// egressd-bfd helper, its uplink guarded by an ICMP probe through the
// egressd-icmp helper. If the package left out a file the daemon needs
// (generated code, a helper, a dependency), this gateway never advertises.
import test from "ava";
import { existsSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { isRunning, run, spawnDetached } from "../../lib/exec.js";
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
import { sandbox } from "../helpers/netns.js";
import { REPO } from "../helpers/paths.js";

const config = `gateway: { name: gw, site: a }
egressIPs: [{ address: 192.0.2.50, interface: lo }]
uplinks: [{ name: tor, interface: gw0, nextHop: ${TOR_V4} }]
policies:
  - { name: web, sources: [10.244.1.0/24], destinations: [203.0.113.0/24], egressIP: 192.0.2.50, uplink: tor }
probes:
  - { name: uplink, kind: icmp, target: ${TOR_V4}, affects: { uplink: tor }, holdDownMs: 0 }
bgp:
  asn: ${GW_ASN}
  routerId: ${GW_V4}
  listenPort: 179
  peers:
    - name: tor
      address: ${TOR_V4}
      asn: ${TOR_ASN}
      localAddress: ${GW_V4}
      holdTime: 3
      bfd: { minRxMs: 100, minTxMs: 100, multiplier: 3 }
`;

test("a gateway run from the packed layout (production dependencies only) peers, probes and advertises", async (t) => {
  const prefix = mkdtempSync(join(tmpdir(), "egressd-packed-"));
  t.teardown(() => rmSync(prefix, { recursive: true, force: true }));
  await run(["bash", join(REPO, "scripts", "install-packed.sh"), prefix], { timeoutMs: 300_000 });
  // What ships: the daemon, its helpers and production dependencies; no tests, benchmarks or dev tools.
  for (const p of [
    "dist/daemon/cli.js",
    "dist/bgp/generated/gobgp.js",
    "dist/native/egressd-icmp",
    "bin/egressd",
  ])
    t.true(existsSync(join(prefix, p)), `${p} ships`);
  for (const p of ["dist/test", "dist/bench", "node_modules/ava", "node_modules/typescript", "src", "test"])
    t.false(existsSync(join(prefix, p)), `${p} does not`);

  const sb = sandbox(t, "pk");
  await buildTopology(sb);
  await sb.exec("gw", ["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
  const frr = await Frr.start(sb.ns("tor"), { bfd: { intervalMs: 100, multiplier: 3 } });
  t.teardown(() => frr.cleanup());
  const dir = socketDir();
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const file = join(dir, "egressd.yaml");
  const logFile = join(dir, "egressd.log");
  writeFileSync(file, config);
  // The prefix's own launcher (the image's entrypoint runs the same cli.js with the same flags).
  const pid = spawnDetached([join(prefix, "bin", "egressd"), "run", "-c", file, "--run-dir", dir], {
    netns: sb.ns("gw"),
    logFile: openSync(logFile, "a"),
  });
  t.teardown(() => {
    if (isRunning(pid)) process.kill(pid, "SIGKILL");
  });
  const ok = { done: false };
  t.teardown(() => {
    if (!ok.done)
      console.error(`egressd log:\n${readFileSync(logFile, "utf8").split("\n").slice(-30).join("\n")}`);
  });
  // ip netns exec, then the launcher, exec into node with the prefix's cli.js.
  await waitFor(
    "the daemon running from the prefix",
    async () => {
      const argv = readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0");
      return (
        argv[0] === "node" && argv.some((a) => a.startsWith(prefix) && a.endsWith("/dist/daemon/cli.js"))
      );
    },
    10_000,
  );
  await waitFor(
    "203.0.113.0/24 and the egress IP at the ToR",
    async () => {
      const routes = await frr.prefixes(4);
      return routes.includes("203.0.113.0/24") && routes.includes("192.0.2.50/32");
    },
    60_000,
  );
  const status = JSON.parse(
    (await sb.exec("gw", ["node", join(prefix, "dist", "daemon", "cli.js"), "status", "--json"])).stdout,
  ) as { probes: { name: string; state: string }[] };
  t.is(status.probes.find((p) => p.name === "uplink")?.state, "up", "the ICMP probe (egressd-icmp) is up");
  await waitFor(
    "BFD up with the ToR (egressd-bfd)",
    async () => (await frr.vtysh("show bfd peers json")).includes('"status":"up"'),
    30_000,
  );
  ok.done = true;
});
