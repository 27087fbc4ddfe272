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
import { backupPrefixes, conntrackdConfig, parseConntrackdStats, syncGuard } from "../../core/plan/sync.js";
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
  ])
    t.true(one.includes(line), line);
  t.regex(one, /Protocol Accept {\s+TCP\s+}/);
  t.false(one.includes("Multicast"));
  t.true(one.includes("Mode FTFW {"), "a pair: acknowledged and resent");
  const three = conntrackdConfig(
    {
      ...SYNC,
      port: 4000,
      peers: [...SYNC.peers, { name: "gw-a3", address: "10.1.9.3", egressIPs: ["192.0.2.13"] }],
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
connections created:		          40	failed:	           0
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

test("conntrackd -s is read: injected states, local cache, packets heard, lost messages", (t) => {
  t.deepEqual(parseConntrackdStats(STATS), {
    injected: { created: 64, updated: 5, destroyed: 2, failed: 3 },
    local: 12,
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
