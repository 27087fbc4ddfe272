// egressd run for real (managed gobgpd) against an FRR ToR, for what must
// never happen: advertising what the kernel has not programmed, half-applying
// a reload, or carrying routes a peer sends (a gateway is never transit).
import { NODE_ENV, NODE_FLAGS } from "../../daemon/node-flags.js";
import test, { type ExecutionContext } from "ava";
import { openSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import {
  buildTopology,
  Frr,
  GW_ASN,
  GW_V4,
  socketDir,
  TOR_ASN,
  TOR_V4,
  TOR_V6,
  waitFor,
} from "../helpers/bgp-lab.js";
import { isRunning, spawnDetached } from "../../lib/exec.js";
import { GobgpClient } from "../../bgp/gobgp-client.js";
import { RouteAction } from "../../bgp/generated/gobgp.js";
import { sandbox, type Sandbox } from "../helpers/netns.js";
import { REPO } from "../helpers/paths.js";

const config = (
  opts: { red?: boolean; blue?: boolean; asn?: number; extraPeers?: string } = {},
) => `gateway: { name: gw, site: a }
egressIPs:
  - { address: 192.0.2.50, interface: lo }
${opts.red ? "  - { address: 192.0.2.51, interface: nosuch0 }\n" : ""}${opts.blue ? "  - { address: 192.0.2.52, interface: lo }\n" : ""}uplinks: [{ name: tor, interface: gw0, nextHop: ${TOR_V4} }]
policies:
  - { name: web, sources: [10.244.1.0/24], destinations: [203.0.113.0/24], egressIP: 192.0.2.50, uplink: tor }
${opts.red ? "  - { name: red, sources: [10.244.2.0/24], destinations: [198.51.100.0/24], egressIP: 192.0.2.51, uplink: tor }\n" : ""}${opts.blue ? "  - { name: blue, sources: [10.244.3.0/24], destinations: [198.51.100.0/24], egressIP: 192.0.2.52, uplink: tor }\n" : ""}bgp:
  asn: ${opts.asn ?? GW_ASN}
  routerId: ${GW_V4}
  listenPort: 179
  peers: [{ name: tor, address: ${TOR_V4}, asn: ${TOR_ASN}, holdTime: 3 }${opts.extraPeers ?? ""}]
`;

async function startEgressd(
  t: ExecutionContext,
  prefix: string,
  text = config(),
  opts: { before?: (sb: Sandbox, frr: Frr) => Promise<void>; family?: 4 | 6; ready?: string } = {},
) {
  const sb = sandbox(t, prefix);
  await buildTopology(sb);
  await sb.exec("gw", ["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
  const frr = await Frr.start(sb.ns("tor"));
  t.teardown(() => frr.cleanup());
  await opts.before?.(sb, frr);
  const dir = socketDir();
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const file = join(dir, "egressd.yaml");
  const logFile = join(dir, "egressd.log");
  writeFileSync(file, text);
  const pid = spawnDetached(
    [
      "node",
      ...NODE_FLAGS,
      join(REPO, "dist/daemon/cli.js"),
      "run",
      "-c",
      file,
      "--run-dir",
      dir,
      "--log-level",
      "info",
    ],
    { netns: sb.ns("gw"), logFile: openSync(logFile, "a"), env: { ...NODE_ENV } },
  );
  t.teardown(() => {
    if (isRunning(pid)) process.kill(pid, "SIGKILL");
  });
  const routes = () => frr.prefixes(opts.family ?? 4);
  const logText = () => readFileSync(logFile, "utf8");
  const logged = (msg: string) => logText().includes(msg);
  // Registered after the directory's removal, so it runs first: a failure shows egressd's log.
  const state = { passed: false };
  t.teardown(() => {
    if (!state.passed)
      console.error(`egressd log:\n${readFileSync(logFile, "utf8").split("\n").slice(-40).join("\n")}`);
  });
  const ready = opts.ready ?? "203.0.113.0/24";
  // Generous: six of these labs start at once, on two cores shared with the other test files.
  await waitFor(`${ready} advertised`, async () => (await routes()).includes(ready), 60_000);
  return { sb, frr, dir, file, pid, routes, logged, logText, state };
}

test("a failed kernel apply advertises nothing new; a restart-only change is refused and changes nothing", async (t) => {
  const { sb, frr, file, pid, routes, logged, state } = await startEgressd(t, "rl");

  // The new egress IP's interface does not exist: the kernel apply fails.
  writeFileSync(file, config({ red: true }));
  await waitFor(
    "the failed apply reported",
    async () => logged("config switched but applying it failed"),
    15_000,
  );
  // The controller retries every second; give it a few tries to go wrong.
  for (let i = 0; i < 6; i++) {
    const r = await routes();
    t.false(r.includes("198.51.100.0/24"), "a destination the kernel did not program is never advertised");
    t.false(r.includes("192.0.2.51/32"));
    t.true(r.includes("203.0.113.0/24"), "what was programmed stays advertised");
    await new Promise((res) => setTimeout(res, 500));
  }
  const status = JSON.parse(
    (await sb.tryExec("gw", ["node", join(REPO, "dist/daemon/cli.js"), "status", "--json"])).stdout,
  ) as { lastReconcile?: { errors: Record<string, string>; changes: Record<string, string[]> } };
  t.truthy(status.lastReconcile?.errors.kernel, "/status names the failing target");

  // Back to a config that works: applied.
  writeFileSync(file, config());
  await waitFor("reloaded", async () => logged('"result":"applied"'), 15_000);

  // A new AS number needs a restart: refused, named, and nothing changes.
  writeFileSync(file, config({ asn: GW_ASN + 1 }));
  await waitFor("refused", async () => logged("reload refused: the running config stays in force"), 15_000);
  t.true(logged(`bgp.asn changed (${GW_ASN} -> ${GW_ASN + 1})`));
  t.true((await routes()).includes("203.0.113.0/24"));
  const peer = await frr.json<{ peers?: Record<string, { remoteAs?: number; state?: string }> }>(
    "show bgp ipv4 unicast summary json",
  );
  t.is(peer.peers?.[GW_V4]?.remoteAs, GW_ASN, "the session still runs with the old identity");

  process.kill(pid, "SIGTERM");
  await waitFor("egressd exited", async () => !isRunning(pid), 20_000);
  state.passed = true;
});

test("an egress IP deleted under the gateway: what uses it is withdrawn, egressd puts it back, then advertises again; a new one is never taken for missing", async (t) => {
  const { sb, file, routes, logged, logText, state } = await startEgressd(t, "ad");
  /** Waits until FRR's RIB has all of `have` and none of `lack`. */
  const rib = (what: string, have: string[], lack: string[], ms: number) =>
    waitFor(
      what,
      async () => {
        const r = await routes();
        return have.every((p) => r.includes(p)) && !lack.some((p) => r.includes(p));
      },
      ms,
    );
  t.true((await routes()).includes("192.0.2.50/32"));
  const started = Date.now();
  await sb.exec("gw", ["ip", "addr", "del", "192.0.2.50/32", "dev", "lo"]);
  await rib(
    "the egress IP and its policy's destination withdrawn",
    [],
    ["192.0.2.50/32", "203.0.113.0/24"],
    10_000,
  );
  t.log(`withdrawn at the ToR ${Date.now() - started} ms after the deletion (one listing every 500 ms)`);
  t.true(logged("address 192.0.2.50 is not configured"), "the log says why");
  // The down check asks for a reconcile, which adds the address again; it is
  // advertised once the check has held up for its hold-down (1 s).
  await waitFor(
    "the address back on lo",
    async () =>
      (await sb.exec("gw", ["ip", "-4", "addr", "show", "dev", "lo"])).stdout.includes("192.0.2.50/32"),
    10_000,
  );
  await rib("advertised again", ["192.0.2.50/32", "203.0.113.0/24"], [], 15_000);

  // A reload adds an egress IP: its check follows it before the reconcile
  // adds it to lo, and must not take it for a deleted one.
  writeFileSync(file, config({ blue: true }));
  await rib(
    "the new egress IP and its destination advertised",
    ["192.0.2.52/32", "198.51.100.0/24"],
    [],
    15_000,
  );
  const downs = logText()
    .split("\n")
    .filter((l) => l.includes('"probe":"self-address-192.0.2.52"') && l.includes('"to":"down"'));
  t.deepEqual(downs, [], "the new egress IP's check never went down");
  state.passed = true;
});

test("routes a peer announces, a default route among them, never enter the gateway's RIB", async (t) => {
  const { frr, dir, routes, state } = await startEgressd(t, "tr");
  await frr.configure(
    `router bgp ${TOR_ASN}`,
    "address-family ipv4 unicast",
    "network 198.18.0.0/24",
    "network 198.18.1.0/24",
    `neighbor ${GW_V4} default-originate`,
  );
  const sent = async () =>
    Object.keys(
      (
        await frr.json<{ advertisedRoutes?: Record<string, unknown> }>(
          `show bgp ipv4 unicast neighbors ${GW_V4} advertised-routes json`,
        )
      ).advertisedRoutes ?? {},
    );
  // FRR lists the default-originate route apart from the table it advertises.
  await waitFor(
    "FRR sends its routes to the gateway",
    async () => {
      const s = await sent();
      return s.includes("198.18.0.0/24") && s.includes("198.18.1.0/24") ? s : undefined;
    },
    15_000,
  );
  const neighbor = await frr.vtysh(`show bgp neighbors ${GW_V4}`);
  t.regex(neighbor, /[Dd]efault information originate/, "and a default route");
  const client = new GobgpClient({ target: `unix://${join(dir, "gobgpd.sock")}` });
  t.teardown(() => client.close());
  await client.waitReady(10_000);
  t.is(await client.importDefault(), RouteAction.REJECT);
  // Give gobgpd time to process the updates it was sent, then look at its whole RIB.
  await new Promise((r) => setTimeout(r, 1500));
  const rib = (await client.listPaths("ipv4-unicast", { includeLearnt: true })).map((p) => p.prefix).sort();
  t.deepEqual(rib, ["192.0.2.50/32", "203.0.113.0/24"], "only egressd's own paths");
  t.true((await routes()).includes("203.0.113.0/24"));
  state.passed = true;
});

test("the BGP port answers configured peers only: a connection from another address is dropped", async (t) => {
  const { sb, frr, state } = await startEgressd(t, "gd");
  // Another address on the ToR's side of the link, reachable from the gateway.
  await sb.exec("tor", ["ip", "addr", "add", "10.0.0.5/32", "dev", "tor0"]);
  await sb.exec("gw", ["ip", "route", "add", "10.0.0.5/32", "via", TOR_V4]);
  const connectFrom = (source: string) =>
    sb.tryExec(
      "tor",
      [
        process.execPath,
        "-e",
        `const s = require("node:net").connect({ host: ${JSON.stringify(GW_V4)}, port: 179, localAddress: ${JSON.stringify(source)} });
         s.setTimeout(1500, () => { console.log("timeout"); process.exit(0); });
         s.on("connect", () => { console.log("connected"); process.exit(0); });
         s.on("error", (e) => { console.log(e.code); process.exit(0); });`,
      ],
      10_000,
    );
  t.is((await connectFrom("10.0.0.5")).stdout.trim(), "timeout", "dropped, not even refused");
  const chain = await sb.exec("gw", ["/usr/sbin/nft", "list", "chain", "inet", "egressd_guard", "input"]);
  t.regex(chain.stdout, /ip saddr != @bgp_peers4 counter packets [1-9]/);
  // The peer's own address still reaches it (FRR's session is proof, and so is a new connection).
  t.is((await connectFrom(TOR_V4)).stdout.trim(), "connected");
  const summary = await frr.json<{ peers?: Record<string, { state?: string }> }>(
    "show bgp ipv4 unicast summary json",
  );
  t.is(summary.peers?.[GW_V4]?.state, "Established");
  state.passed = true;
});

test("after a ToR's clear bgp the gateway re-creates the peer instead of idling 5 s; connect retry is 1 s", async (t) => {
  const { frr, dir, routes, logged, state } = await startEgressd(t, "cb");
  const client = new GobgpClient({ target: `unix://${join(dir, "gobgpd.sock")}` });
  t.teardown(() => client.close());
  await client.waitReady(10_000);
  const [peer] = await client.listPeers(TOR_V4);
  t.is(peer?.config.connectRetry, 1);
  const samples: number[] = [];
  for (let i = 0; i < 3; i++) {
    await new Promise((r) => setTimeout(r, 3500)); // past the re-create spacing (3 s)
    const t0 = Date.now();
    await frr.vtysh("clear bgp *");
    await waitFor(
      "withdrawn by the reset",
      async () => !(await routes()).includes("203.0.113.0/24"),
      5000,
    ).catch(
      () => undefined, // the reset may be over before the first look
    );
    await waitFor("routes back", async () => (await routes()).includes("203.0.113.0/24"), 30_000);
    samples.push(Date.now() - t0);
  }
  t.log(`clear bgp * -> routes back at the ToR: ${samples.join(", ")} ms (gobgpd alone: about 5100 ms)`);
  t.is(logged("re-creating the peer to skip gobgpd's 5 s idle hold").valueOf(), true);
  state.passed = true;
});

test("a peer that never comes up is reported with the reason, at a bounded rate", async (t) => {
  const extraPeers =
    ", { name: refusing, address: 10.0.0.6, asn: 65099 }, { name: unroutable, address: 198.51.100.77, asn: 65099 }";
  const { sb, logged, logText, state } = await startEgressd(t, "sp", config({ extraPeers }));
  // 10.0.0.6 is on the ToR's link, and its BGP port answers with a reset.
  await sb.exec("tor", ["ip", "addr", "add", "10.0.0.6/32", "dev", "tor0"]);
  await sb.exec("gw", ["ip", "route", "add", "10.0.0.6/32", "via", TOR_V4]);
  await sb.sh(
    "tor",
    "/usr/sbin/nft add table ip t; /usr/sbin/nft 'add chain ip t in { type filter hook input priority 0; }'; " +
      "/usr/sbin/nft add rule ip t in ip daddr 10.0.0.6 tcp dport 179 reject with tcp reset",
  );
  const reports = (peer: string) =>
    logText()
      .split("\n")
      .filter((l) => l.includes(`"peer":"${peer}"`) && l.includes("BGP peer not established")).length;
  await waitFor(
    "both reported",
    async () => logged("BGP peer not established: refused") && logged("BGP peer not established: no route"),
    30_000,
  );
  t.is(reports("tor"), 0, "the established peer is not reported");
  // Bounded: a few seconds later, still one report each (the next is due 20 s after the first).
  await new Promise((r) => setTimeout(r, 4000));
  t.is(reports("refusing"), 1);
  t.is(reports("unroutable"), 1);
  state.passed = true;
});

test("a link-local peer with its interface: BGP over fe80:: addresses, IPv6 paths reach FRR", async (t) => {
  const text = `gateway: { name: gw, site: a }
egressIPs: [{ address: "2001:db8:e::50", interface: lo }]
uplinks: [{ name: tor, interface: gw0, nextHop6: "${TOR_V6}" }]
policies:
  - { name: web6, sources: ["fd00:244::/64"], destinations: ["2001:db8:203::/48"], egressIP: "2001:db8:e::50", uplink: tor }
bgp:
  asn: ${GW_ASN}
  routerId: ${GW_V4}
  listenPort: 179
  peers: [{ name: tor-ll, address: "fe80::1%gw0", localAddress: "fe80::2%gw0", asn: ${TOR_ASN}, holdTime: 3 }]
`;
  const { sb, frr, dir, logText, state } = await startEgressd(t, "ll", text, {
    family: 6,
    ready: "2001:db8:203::/48",
    before: async (sb, frr) => {
      await sb.exec("gw", ["sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"]);
      // Known link-local addresses on both ends, as a fabric's configuration would have them.
      for (const [node, dev, ll] of [
        ["tor", "tor0", "fe80::1"],
        ["gw", "gw0", "fe80::2"],
      ] as const) {
        await sb.exec(node, ["ip", "-6", "addr", "flush", "dev", dev, "scope", "link"]);
        await sb.exec(node, ["ip", "-6", "addr", "add", `${ll}/64`, "dev", dev, "nodad"]);
      }
      await frr.configure(
        `router bgp ${TOR_ASN}`,
        `neighbor fe80::2 remote-as ${GW_ASN}`,
        "neighbor fe80::2 interface tor0",
        "neighbor fe80::2 timers connect 1",
        "address-family ipv6 unicast",
        "neighbor fe80::2 activate",
      );
    },
  });
  const summary = await frr.json<{ peers?: Record<string, { state?: string }> }>(
    "show bgp ipv6 unicast summary json",
  );
  t.is(summary.peers?.["fe80::2"]?.state, "Established", JSON.stringify(summary.peers));
  const table = await frr.json<{
    routes?: Record<string, { nexthops?: { ip: string; scope?: string }[] }[]>;
  }>("show bgp ipv6 unicast json");
  t.truthy(table.routes?.["2001:db8:e::50/128"], "the egress IP too");
  const hops = table.routes?.["2001:db8:203::/48"]?.[0]?.nexthops?.map((h) => h.ip) ?? [];
  t.true(hops.includes("fe80::2"), `next hop: ${hops.join(", ")}`);
  const client = new GobgpClient({ target: `unix://${join(dir, "gobgpd.sock")}` });
  t.teardown(() => client.close());
  await client.waitReady(10_000);
  const peers = await client.listPeers();
  t.log(JSON.stringify(peers.map((p) => [p.address, p.state, p.config.address, p.config.localAddress])));
  t.regex(logText(), /"peer":"tor-ll","address":"fe80::1%gw0","asn":65000,"state":"established"/);
  // A peer the down-reporter did not match by its link-local name would be
  // reported 10 s after the gateway's first heartbeat, established or not. On
  // a loaded machine the session itself may take longer than that, and then an
  // honest report comes before it: only what is logged after it came up counts.
  const lines = () => logText().split("\n").filter(Boolean);
  const upAt = lines().findIndex((l) => l.includes('"peer":"tor-ll"') && l.includes('"state":"established"'));
  const first = lines().find((l) => l.startsWith("{"));
  const startedAt = Date.parse((JSON.parse(first!) as { time: string }).time);
  t.false(Number.isNaN(startedAt), `the log's first line has its time: ${first}`);
  await new Promise((r) => setTimeout(r, Math.max(0, startedAt + 15_000 - Date.now())));
  const after = lines()
    .slice(upAt + 1)
    .filter((l) => l.includes("BGP peer not established"));
  t.deepEqual(after, [], "the established link-local peer is known by its name");
  const guard = await sb.exec("gw", ["/usr/sbin/nft", "list", "set", "inet", "egressd_guard", "bgp_peers6"]);
  t.regex(guard.stdout, /fe80::1/, "the guard admits the link-local peer");
  state.passed = true;
});
