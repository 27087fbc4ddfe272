// Connection sync's pure half: the config's checks, conntrackd's config, the
// reading of its statistics, the guard rules, and the backup paths: advertised
// only once the state is there and the guard is programmed, never while
// draining or down, and always losing to the owner's path.
import test from "ava";
import fc from "fast-check";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { loadConfig } from "../../inputs/config/load.js";
import { canonicalPath } from "../../core/bgp.js";
import type { GatewayConfig } from "../../core/config/gateway-config.js";
import type { ConnectionSyncConfig } from "../../core/config/sync-schema.js";
import {
  NO_HEALTH_INPUTS,
  planDesired,
  planStatic,
  viewOf,
  type HealthInputs,
} from "../../core/plan/index.js";
import {
  backupPrefixes,
  cacheLimits,
  conntrackdChannels,
  conntrackdConfig,
  conntrackdLine,
  refusedInAll,
  lastResortPrefixes,
  parseConntrackdStats,
  siteConntrackdConfig,
  syncGuard,
} from "../../core/plan/sync.js";
import { renderGuard } from "../../routing/nft-guard.js";
import { guardPlan } from "../../core/plan/kernel.js";
import { SYNC_PENDING } from "../../daemon/gateway.js";
import { statusView } from "../../daemon/status-view.js";
import { REPO } from "../helpers/paths.js";

const LAB_A1 = readFileSync(join(REPO, "containerlab", "two-dc", "gw-a1", "egressd.yaml"), "utf8");

function load(text: string): GatewayConfig {
  const r = loadConfig(text);
  if (!r.ok) throw new Error(r.errors.map((e) => `${e.path}: ${e.message}`).join("; "));
  return r.config as GatewayConfig;
}

const errors = (text: string) => {
  const r = loadConfig(text);
  return r.ok ? [] : r.errors.map((e) => `${e.path}: ${e.message}`);
};

const SYNC: ConnectionSyncConfig = {
  interface: "eth2",
  address: "10.1.9.1",
  peers: [{ name: "gw-a2", address: "10.1.9.2", egressIPs: ["192.0.2.12", "2001:DB8:E::12"] }],
  sources: ["10.244.0.0/16", "fd00:244::/32"],
};

test("the lab's sync section loads; a bad one is refused field by field", (t) => {
  t.truthy(load(LAB_A1).connectionSync);
  const bad = LAB_A1.replace(
    /connectionSync:[\s\S]*?\n\n/,
    [
      "connectionSync:",
      "  interface: eth2",
      '  address: "fd00::1"',
      "  multicastGroup: 10.0.0.1",
      "  peers:",
      "    - { name: gw-a2, address: 10.1.9.2, egressIPs: [192.0.2.11, 127.0.0.1] }",
      "    - { name: gw-a2, address: 10.1.9.2, egressIPs: [192.0.2.99, 192.0.2.99] }",
      "  sources: [10.244.0.0/16, not-a-cidr]",
      "",
      "",
    ].join("\n"),
  );
  const e = errors(bad);
  const has = (re: RegExp) =>
    t.true(
      e.some((x) => re.test(x)),
      `${re} in\n${e.join("\n")}`,
    );
  has(/connectionSync\.address: "fd00::1" is not an IPv4 address/);
  has(/connectionSync\.multicastGroup: "10\.0\.0\.1" is not an IPv4 multicast address/);
  has(/connectionSync\.peers\[0\]\.egressIPs\[0\]: 192\.0\.2\.11 is this gateway's own egress IP/);
  has(/connectionSync\.peers\[0\]\.egressIPs\[1\]: 127\.0\.0\.1 is .*loopback/);
  has(/connectionSync\.peers\[1\]\.name: "gw-a2" is already/);
  has(/connectionSync\.peers\[1\]\.address: 10\.1\.9\.2 is already/);
  has(/connectionSync\.peers\[1\]\.egressIPs\[1\]: 192\.0\.2\.99 is already listed/);
  has(/connectionSync\.sources\[1\]/);
  t.true(errors(LAB_A1.replace("peers:\n    - {", "peers: []\n    - {")).length > 0, "no peers");
});

/** A real-time priority the kernel refuses: conntrackd stays in the normal class (core/plan/sync.ts). */
const NORMAL_CLASS = /^ {2}Scheduler {\n {4}Type RR\n {4}Priority 0\n {2}}$/m;

test("conntrackd's config: unicast to the one peer, the group address for more; TCP from the sources only", (t) => {
  const paths = { lockFile: "/run/x/conntrackd.lock", socket: "/run/x/conntrackd.ctl" };
  const one = conntrackdConfig(SYNC, paths);
  for (const line of [
    "DisableExternalCache On",
    "StartupResync On",
    "IPv4_address 10.1.9.1",
    "IPv4_Destination_Address 10.1.9.2",
    "Port 3780",
    "Interface eth2",
    "LockFile /run/x/conntrackd.lock",
    "Path /run/x/conntrackd.ctl",
    "IPv4_address 10.244.0.0/16",
    "IPv6_address fd00:244::/32",
    "Filter From Userspace {",
    // An overrun is told to conntrackd, which reads the table again (docs/connection-sync.md).
    "NetlinkEventsReliable Off",
    "NetlinkOverrunResync On",
    // Read in batches at the pace egressd sets: more than the default 100 a pass.
    "EventIterationLimit 5000",
  ])
    t.true(one.includes(line), line);
  t.regex(one, /Protocol Accept {\s+TCP\s+}/);
  t.regex(one, NORMAL_CLASS, "out of the real-time class conntrackd would choose");
  t.false(one.includes("Multicast"));
  t.true(one.includes("Mode FTFW {"), "a pair: acknowledged and resent");
  const three = conntrackdConfig(
    {
      ...SYNC,
      port: 4000,
      peers: [...SYNC.peers!, { name: "gw-a3", address: "10.1.9.3", egressIPs: ["192.0.2.13"] }],
    },
    paths,
  );
  t.regex(
    three,
    /Multicast {\s+IPv4_address 225\.0\.0\.50\s+Group 4000\s+IPv4_interface 10\.1\.9\.1\s+Interface eth2/,
  );
  t.false(three.includes("UDP {"));
  t.true(three.includes("Mode NOTRACK {"), "a group: FTFW tracks one peer only");
});

const STATS = `cache internal:
current active connections:	          12
connections created:		          40	failed:	           6
connections updated:		           3	failed:	           0
connections destroyed:		          28	failed:	           0

external inject:
connections created:		          64	failed:	           1
connections updated:		           5	failed:	           0
connections destroyed:		           2	failed:	           2

traffic processed:
                   0 Bytes                         0 Pckts

UDP traffic (active device=eth2):
               14400 Bytes sent                22000 Bytes recv
                  90 Pckts sent                   97 Pckts recv
                   0 Error send                    0 Error recv

message tracking:
                   0 Malformed msgs                    4 Lost msgs
`;

test("conntrackd -s is read: injected states, local cache and what it refused, packets heard, lost messages", (t) => {
  t.deepEqual(parseConntrackdStats(STATS), {
    injected: { created: 64, updated: 5, destroyed: 2, failed: 3 },
    local: 12,
    cacheFailed: 6,
    lost: 4,
    malformed: 0,
    received: 97,
  });
  t.throws(() => parseConntrackdStats("nothing here"), { message: /no "external inject" section/ });
});

test("the guard accepts state only from members on the sync link, and drops the rest of what is sent to their addresses", (t) => {
  const g = syncGuard(SYNC)!;
  t.deepEqual(g, {
    interface: "eth2",
    port: 3780,
    peers: ["10.1.9.2"],
    backup4: ["192.0.2.12"],
    backup6: ["2001:db8:e::12"],
    sources4: ["10.244.0.0/16"],
    sources6: ["fd00:244::/32"],
  });
  t.deepEqual(backupPrefixes(g), ["192.0.2.12/32", "2001:db8:e::12/128"]);
  const nft = renderGuard({ bfdTtl: false, sync: g });
  t.regex(nft, /set sync_peers {\s+type ipv4_addr\s+elements = { 10\.1\.9\.2 }/);
  t.regex(nft, /udp dport 3780 iifname != "eth2" counter drop/);
  t.regex(nft, /udp dport 3780 ip saddr != @sync_peers counter drop/);
  // Synced connections tell conntrackd only that they are new, established, and gone.
  t.regex(
    nft,
    /ip saddr { 10\.244\.0\.0\/16 } meta l4proto tcp ct state new ct event set new,assured,destroy/,
  );
  t.regex(
    nft,
    /chain forward {\s+type filter hook forward priority filter - 10; policy accept;[\s\S]*?ip daddr @backup4 counter drop/,
  );
  // The guard exists with sync alone (no bgp section), and not without either.
  const cfg = load(LAB_A1);
  t.truthy(guardPlan({ ...cfg, bgp: undefined } as GatewayConfig)?.sync);
  t.is(guardPlan({ ...cfg, bgp: undefined, connectionSync: undefined } as GatewayConfig), undefined);
});

const config = load(LAB_A1);
const view = viewOf(planStatic(config));
const allUp: HealthInputs = {
  ...NO_HEALTH_INPUTS,
  probes: new Map((config.probes ?? []).map((p) => [p.name, "up"])),
};
const paths = (h: HealthInputs) => planDesired({ view, health: h }).bgp?.paths.map(canonicalPath) ?? [];
const backups = backupPrefixes(syncGuard(config.connectionSync));

test("backup paths: advertised once resynced, with the prepend; never while draining, down or resyncing", (t) => {
  t.deepEqual(backups, ["192.0.2.12/32", "192.0.2.132/32", "2001:db8:e::12/128"]);
  const ready = paths({ ...allUp, syncReady: true });
  for (const b of backups) {
    const p = ready.find((x) => x.prefix === b);
    t.truthy(p, `${b} advertised`);
    t.is(p?.asPathPrepend, 3);
  }
  // The owner's own egress IPs carry no prepend: its path wins while it is advertised.
  t.is(ready.find((x) => x.prefix === "192.0.2.11/32")?.asPathPrepend, 0);
  const none = (h: HealthInputs, why: string) =>
    t.false(
      paths(h).some((p) => backups.includes(p.prefix)),
      why,
    );
  none(allUp, "conntrackd not ready");
  none({ ...allUp, syncReady: true, draining: true }, "draining");
  none({ ...allUp, syncReady: true, selfDown: ["self-nft-table"] }, "the gateway is down");
  // Before the first resync the gateway advertises nothing at all, its own addresses included.
  t.deepEqual(paths({ ...allUp, selfDown: [SYNC_PENDING] }), []);
  // A kernel without the guard's rules: no backup path, whatever health says.
  const unprogrammed = { ...view, kernel: { ...view.kernel, backups: [] } };
  t.false(
    (planDesired({ view: unprogrammed, health: { ...allUp, syncReady: true } }).bgp?.paths ?? []).some((p) =>
      backups.includes(canonicalPath(p).prefix),
    ),
  );
});

test("property: advertised backups are exactly the members' addresses when ready and serving, none otherwise", (t) => {
  fc.assert(
    fc.property(fc.boolean(), fc.boolean(), fc.boolean(), (ready, draining, down) => {
      const h: HealthInputs = {
        ...allUp,
        syncReady: ready,
        draining,
        selfDown: down ? ["self-gobgpd"] : [],
      };
      const got = paths(h)
        .map((p) => p.prefix)
        .filter((p) => !config.egressIPs.some((e) => p.startsWith(`${e.address}/`)))
        .filter((p) => p.endsWith("/32") || p.endsWith("/128"))
        .sort();
      const want = ready && !draining && !down ? [...backups].sort() : [];
      // Destinations are never host routes in this config, so what is left is the backups.
      return JSON.stringify(got) === JSON.stringify(want);
    }),
  );
  t.pass();
});

test("a gateway is not ready until its first resync is done", (t) => {
  const parts = {
    config: view.config,
    kernel: view.kernel,
    kernelOk: true,
    health: planDesired({ view, health: allUp }).health,
    draining: false,
    startedAt: new Date(0),
    probes: [],
    peerStates: new Map([["10.1.1.0", "established" as const]]),
    bfd: [],
    bfdStats: undefined,
    advertised: [],
    lastReconcile: undefined,
  };
  t.true(statusView(parts).ready, "without sync");
  t.true(statusView({ ...parts, syncResynced: true }).ready);
  const pending = statusView({ ...parts, syncResynced: false });
  t.false(pending.ready);
  t.deepEqual(pending.notReadyReasons, ["connection state not resynced from the sync peers yet"]);
});

const LAB_B1 = readFileSync(join(REPO, "containerlab", "two-dc", "gw-b1", "egressd.yaml"), "utf8");

test("across sites: the lab's sections load; a bad one is refused field by field", (t) => {
  const b1 = load(LAB_B1).connectionSync!;
  t.is(b1.peers, undefined, "gw-b1 has no group of its own");
  t.deepEqual(
    b1.acrossSites?.holdFor?.map((p) => [p.name, p.port]),
    [
      ["gw-a1", 3791],
      ["gw-a2", 3792],
    ],
  );
  t.deepEqual(load(LAB_A1).connectionSync?.acrossSites?.sendTo, [
    { name: "gw-b1", address: "10.2.1.1", port: 3791 },
  ]);
  const has = (text: string, ...res: RegExp[]) => {
    const e = errors(text);
    for (const re of res)
      t.true(
        e.some((x) => re.test(x)),
        `${re} in\n${e.join("\n")}`,
      );
  };
  const site = (lines: string[]) =>
    LAB_B1.replace(/ {2}acrossSites:[\s\S]*?\n\n/, ["  acrossSites:", ...lines, "", ""].join("\n"));
  has(
    site([
      "    interface: eth1",
      '    address: "fd00::1"',
      "    sendTo: [{ name: gw-x, address: 10.9.9.9, port: 3791 }]",
      "    holdFor:",
      "      - { name: gw-x, address: 10.1.1.1, port: 3791, egressIPs: [192.0.2.21] }",
    ]),
    /connectionSync\.acrossSites\.address: "fd00::1" is not an IPv4 address/,
    /connectionSync\.acrossSites\.holdFor\[0\]\.name: "gw-x" is already connectionSync\.acrossSites\.sendTo\[0\]\.name/,
    /connectionSync\.acrossSites\.holdFor\[0\]\.port: 3791 is already connectionSync\.acrossSites\.sendTo\[0\]\.port/,
    /connectionSync\.acrossSites\.holdFor\[0\]\.egressIPs\[0\]: 192\.0\.2\.21 is this gateway's own egress IP/,
  );
  has(
    site([
      "    interface: eth1",
      "    address: 10.2.1.1",
      "    sendTo: [{ name: gw-x, address: 10.2.1.1, port: 3791 }]",
    ]),
    /connectionSync\.acrossSites\.sendTo\[0\]\.address: 10\.2\.1\.1 is this gateway's own/,
  );
  // Neither a group nor other sites; a group's link half given.
  has(
    LAB_B1.replace(/ {2}acrossSites:[\s\S]*?\n\n/, "\n"),
    /connectionSync: needs peers \(a group on a sync link\), acrossSites/,
  );
  has(
    LAB_B1.replace("connectionSync:\n  sources:", "connectionSync:\n  interface: eth2\n  sources:"),
    /connectionSync\.address: is required with connectionSync\.interface/,
    /connectionSync\.peers: is required with connectionSync\.interface/,
  );
  // A pair's port may not be the group's own.
  has(
    LAB_A1.replace("port: 3791", "port: 3780"),
    /acrossSites\.sendTo\[0\]\.port: 3780 is already connectionSync\.port/,
  );
});

test("conntrackd's cache holds twice the kernel's table, never less than 262144, about eight a bucket", (t) => {
  // Debian 12's default nf_conntrack_max on these machines, and a gateway sized for 10k new connections a second.
  t.deepEqual(cacheLimits(262144), { hashLimit: 524288, hashSize: 65536 });
  t.deepEqual(cacheLimits(2_000_000), { hashLimit: 4_000_000, hashSize: 524288 });
  // Small tables, an unreadable or a nonsense limit: the floor.
  for (const max of [65536, undefined, 0, -1, Number.NaN, 1.5])
    t.deepEqual(cacheLimits(max), { hashLimit: 262144, hashSize: 32768 }, String(max));
  // The bucket count stops at 2^20.
  t.is(cacheLimits(100_000_000).hashSize, 1 << 20);
  // Every conntrackd of a section gets the same, in its config.
  const a1 = load(LAB_A1).connectionSync!;
  const channels = conntrackdChannels(
    a1,
    (n) => ({ lockFile: `/r/${n}.lock`, socket: `/r/${n}.ctl` }),
    cacheLimits(1_000_000),
  );
  t.is(channels.length, 2);
  t.deepEqual(
    channels.map((c) => c.name),
    ["conntrackd", "conntrackd-site-gw-b1"],
  );
  for (const c of channels) {
    t.regex(c.text, /^ {2}HashLimit 2000000$/m, c.name);
    t.regex(c.text, /^ {2}HashSize 262144$/m, c.name);
  }
});

test("across sites: one conntrackd per pair, FTFW on its own port; the sending side sends the sources, the holding side nothing", (t) => {
  const names = (c: ConnectionSyncConfig) =>
    conntrackdChannels(c, (n) => ({ lockFile: `/r/${n}.lock`, socket: `/r/${n}.ctl` })).map((x) => [
      x.name,
      x.role,
    ]);
  const a1 = load(LAB_A1).connectionSync!;
  const b1 = load(LAB_B1).connectionSync!;
  t.deepEqual(names(a1), [
    ["conntrackd", "group"],
    ["conntrackd-site-gw-b1", "send"],
  ]);
  t.deepEqual(names(b1), [
    ["conntrackd-site-gw-a1", "hold"],
    ["conntrackd-site-gw-a2", "hold"],
  ]);
  const paths = { lockFile: "/r/x.lock", socket: "/r/x.ctl" };
  const send = siteConntrackdConfig(a1, a1.acrossSites!.sendTo![0]!, "send", paths);
  const hold = siteConntrackdConfig(b1, b1.acrossSites!.holdFor![0]!, "hold", paths);
  for (const [text, self, peer, port] of [
    [send, "10.1.1.1", "10.2.1.1", 3791],
    [hold, "10.2.1.1", "10.1.1.1", 3791],
  ] as const) {
    t.true(text.includes("Mode FTFW {"));
    t.true(text.includes("DisableExternalCache On"));
    t.regex(text, NORMAL_CLASS);
    t.true(
      text.includes(
        `IPv4_address ${self}\n    IPv4_Destination_Address ${peer}\n    Port ${port}\n    Interface eth1`,
      ),
    );
  }
  t.regex(send, /Address Accept {\s+IPv4_address 10\.244\.0\.0\/16\s+IPv6_address fd00:244::\/32\s+}/);
  t.regex(hold, /Address Accept {\s+IPv4_address 255\.255\.255\.255\/32\s+}/);
  t.false(hold.includes("10.244.0.0/16"), "the holding side sends nothing back");
  // It polls hourly instead of listening to the kernel's events; the sending side listens.
  t.regex(hold, /^ {2}PollSecs 3600$/m);
  t.false(send.includes("PollSecs"));
  t.throws(() => conntrackdConfig(b1, paths), { message: /no group/ });
});

test("across sites: the guard takes each pair's state from its peer only, on the site interface; held egress IPs are last-resort paths", (t) => {
  const b1 = load(LAB_B1);
  const g = syncGuard(b1.connectionSync)!;
  t.is(g.interface, undefined, "no group link");
  t.deepEqual(g.sites, {
    interface: "eth1",
    channels: [
      { port: 3791, peer: "10.1.1.1" },
      { port: 3792, peer: "10.1.2.1" },
    ],
  });
  const nft = renderGuard({ bfdTtl: false, sync: g });
  t.notRegex(nft, /connection state from off the sync link/);
  t.regex(nft, /udp dport 3791 iifname != "eth1" counter drop/);
  t.regex(nft, /meta nfproto ipv4 udp dport 3791 ip saddr != 10\.1\.1\.1 counter drop/);
  t.regex(nft, /meta nfproto ipv4 udp dport 3792 ip saddr != 10\.1\.2\.1 counter drop/);
  t.regex(
    nft,
    /set backup4 {\s+type ipv4_addr\s+elements = { 192\.0\.2\.11, 192\.0\.2\.12, 192\.0\.2\.131, 192\.0\.2\.132 }/,
  );
  const last = lastResortPrefixes(g);
  t.deepEqual(last, [
    "192.0.2.11/32",
    "192.0.2.12/32",
    "192.0.2.131/32",
    "192.0.2.132/32",
    "2001:db8:e::11/128",
    "2001:db8:e::12/128",
  ]);
  const bView = viewOf(planStatic(b1));
  const up: HealthInputs = {
    ...NO_HEALTH_INPUTS,
    probes: new Map((b1.probes ?? []).map((p) => [p.name, "up"])),
  };
  const advertised = (h: HealthInputs) =>
    planDesired({ view: bView, health: h }).bgp?.paths.map(canonicalPath) ?? [];
  const ready = advertised({ ...up, syncReady: true });
  for (const prefix of last) t.is(ready.find((p) => p.prefix === prefix)?.asPathPrepend, 6, prefix);
  // Its own egress IPs keep the site's own prepend (DC B advertises as backup).
  t.is(ready.find((p) => p.prefix === "192.0.2.21/32")?.asPathPrepend, 0);
  t.false(
    advertised(up).some((p) => last.includes(p.prefix)),
    "not before gw-b1 holds DC A's state",
  );
});

test("conntrackd's log lines: the refusal of priority 0 is expected, other warnings are faults", (t) => {
  // As conntrackd 1.4.7 (Debian 12) prints them in console mode.
  const at = "[Fri Dec  4 19:23:18 2026] (pid=20925)";
  t.is(
    conntrackdLine(
      `${at} [warning] scheduler configuration failed: Invalid argument. Likely a bug in conntrackd, please report it. Continuing with system default scheduler.`,
    ),
    "normal-class",
  );
  // Refused for another reason (no CAP_SYS_NICE with a real priority): a fault to report.
  t.is(
    conntrackdLine(
      `${at} [warning] scheduler configuration failed: Operation not permitted. Likely a bug in conntrackd, please report it. Continuing with system default scheduler.`,
    ),
    "fault",
  );
  t.is(conntrackdLine(`${at} [notice] resync requested by other node`), "peer-resync");
  t.is(conntrackdLine(`${at} [ERROR] can't open channel socket: Address already in use`), "fault");
  t.is(conntrackdLine(`${at} [notice] -- starting in console mode --`), "other");
  // The library's batched writes (native/event-pace.c): its running total is what counts.
  const refused =
    "egressd-event-pace: [ERROR] the kernel refused 3 of 41 peers' states written at once (No space left on device); 17 refused in all";
  t.is(conntrackdLine(refused), "library-refused");
  t.is(refusedInAll(refused), 17);
  t.is(refusedInAll(`${at} [ERROR] inject-add2: No space left on device`), undefined);
  t.is(refusedInAll(refused.replace("17 refused", "x refused")), undefined);
});
