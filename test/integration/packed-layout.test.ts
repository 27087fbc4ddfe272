// egressd as it ships, and nothing of the checkout: scripts/install-packed.sh
// installs the npm package with its production dependencies into an empty
// prefix (what the image's build stage does and its runtime copies), and a
// gateway runs from there against an FRR ToR: BGP, BFD through the
// egressd-bfd helper, its uplink guarded by an ICMP probe through the
// egressd-icmp helper. If the package left out a file the daemon needs
// (generated code, a helper, a dependency), this gateway never advertises.
//
// It is started as the DaemonSet of deploy/ starts it: the image's entrypoint
// (the Containerfile's, with /opt/egressd at the prefix), the container's
// args with the downward API's node name, its config file read from a fleet
// file with a section per node at the ConfigMap's mount path, and stopped by
// the container's preStop command. Mount paths are mapped to folders here.
import test from "ava";
import { existsSync, mkdirSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from "node:fs";
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
import { entrypoint, expandArgs, only, podSpec, renderDeploy } from "../helpers/deploy.js";

// A fleet file as deploy/config/egressd.yaml is: shared settings, a site, this lab's node.
const NODE = "gw-lab";
const config = `policies:
  - { name: web, sources: [10.244.1.0/24], destinations: [203.0.113.0/24], egressIP: 192.0.2.50, uplink: tor }
drain: { periodMs: 1000 }
bgp: { asn: ${GW_ASN}, listenPort: 179 }
sites:
  lab:
    uplinks: [{ name: tor, interface: gw0, nextHop: ${TOR_V4} }]
    probes:
      - { name: uplink, kind: icmp, target: ${TOR_V4}, affects: { uplink: tor }, holdDownMs: 0 }
nodes:
  gw-other: { site: lab }
  ${NODE}:
    site: lab
    egressIPs: [{ address: 192.0.2.50, interface: lo }]
    bgp:
      routerId: ${GW_V4}
      peers:
        - name: tor
          address: ${TOR_V4}
          asn: ${TOR_ASN}
          localAddress: ${GW_V4}
          holdTime: 3
          bfd: { minRxMs: 100, minTxMs: 100, multiplier: 3 }
`;

test("the DaemonSet's command, run from the packed layout (production dependencies only), peers, probes and advertises; its preStop drains it", async (t) => {
  const prefix = mkdtempSync(join(tmpdir(), "egressd-packed-"));
  t.teardown(() => rmSync(prefix, { recursive: true, force: true }));
  await run(["bash", join(REPO, "scripts", "install-packed.sh"), prefix], { timeoutMs: 300_000 });
  // What ships: the daemon, its helpers and production dependencies; no tests, benchmarks or dev tools.
  for (const p of [
    "dist/daemon/cli.js",
    "dist/bgp/generated/gobgp.js",
    "dist/native/egressd-icmp",
    "dist/native/egressd-ctevents",
    "dist/native/egressd-event-pace.so",
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
  const logFile = join(dir, "egressd.log");
  // The DaemonSet's container: its volumes are folders of `dir`, the image's /opt/egressd is the prefix.
  const spec = podSpec(only(await renderDeploy(), "DaemonSet"));
  const container = spec.containers[0]!;
  const mounts = (container.volumeMounts ?? []).map((m) => ({ from: m.mountPath, to: join(dir, m.name) }));
  for (const m of mounts) mkdirSync(m.to, { recursive: true });
  const host = (arg: string) => {
    for (const m of mounts)
      if (arg === m.from || arg.startsWith(`${m.from}/`)) return m.to + arg.slice(m.from.length);
    return arg.startsWith("/opt/egressd/") ? prefix + arg.slice("/opt/egressd".length) : arg;
  };
  const args = expandArgs(container, {
    "spec.nodeName": NODE,
    "metadata.name": "egressd-lab",
    "metadata.namespace": "egressd",
  });
  const configFile = host(args[args.indexOf("--config") + 1]!);
  writeFileSync(configFile, config);
  const argv = [...entrypoint(), ...args].map(host);
  t.log(argv.join(" "));
  const pid = spawnDetached(argv, { netns: sb.ns("gw"), logFile: openSync(logFile, "a") });
  t.teardown(() => {
    if (isRunning(pid)) process.kill(pid, "SIGKILL");
  });
  const ok = { done: false };
  t.teardown(() => {
    if (!ok.done)
      console.error(`egressd log:\n${readFileSync(logFile, "utf8").split("\n").slice(-30).join("\n")}`);
  });
  // ip netns exec, then node with the prefix's cli.js.
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
  ) as { gateway: { name: string; site: string }; probes: { name: string; state: string }[] };
  t.is(status.probes.find((p) => p.name === "uplink")?.state, "up", "the ICMP probe (egressd-icmp) is up");
  t.like(status.gateway, { name: NODE, site: "lab" }, "its node's section, by the downward API's name");
  await waitFor(
    "BFD up with the ToR (egressd-bfd)",
    async () => (await frr.vtysh("show bfd peers json")).includes('"status":"up"'),
    30_000,
  );
  // The pod stops: the kubelet runs preStop, which drains, withdraws and waits for the daemon to exit.
  const preStop = container.lifecycle!.preStop!.exec!.command.map(host);
  const began = Date.now();
  const drain = await sb.exec("gw", preStop, spec.terminationGracePeriodSeconds! * 1000);
  const tookS = (Date.now() - began) / 1000;
  t.log(`preStop: ${drain.stdout.trim()} (${tookS.toFixed(1)} s)`);
  t.false(isRunning(pid), "the daemon exited before preStop returned");
  t.true(tookS < spec.terminationGracePeriodSeconds!, "within the grace period");
  const after = await frr.prefixes(4);
  t.false(after.includes("203.0.113.0/24"), `withdrawn: ${after.join(", ")}`);
  t.regex(readFileSync(logFile, "utf8"), /"clean":true,"msg":"stopped"/);
  ok.done = true;
});
