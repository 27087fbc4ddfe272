// Failover time on the two-dc lab, measured on the traffic itself: a ping
// every 10 ms from a pod to the server through the gateway that carries its
// flow; the figure is the longest gap in the replies, and the echoes lost.
// TRIALS trials per trigger (default 10): probe failure, egressd killed,
// gateway frozen (BFD), drain; and a baseline: the frozen gateway with BFD
// off on the ToR (only the BGP hold timer, 9 s here, can notice).
// INTERVALS (default 100,50): the detection timers, in ms, of BFD (both
// sides) and of the probes, x 3; the lab is brought up once per value, and
// probe failure and frozen gateway are measured at each, side by side.
//
// Beside egressd, at each interval and in the same run, the same two
// triggers on what network engineers build today without egressd: the same
// lab with gw-a1 and gw-a2 running FRR (bgpd + bfdd, BFD at the same timers)
// that announces the egress IPs and the web destination, SNAT by a static
// nftables rule, and ExaBGP's healthcheck (Debian's exabgp) pinging the
// server at the same interval with the same timeout and fall count,
// announcing and withdrawing the destination through vtysh. gw-b1 keeps
// egressd (it is the other site's backup and no trial touches it).
//
// Each row also gives the ToR's side of the failover, read from tor-a itself:
// when its bgpd took the gateway's session down (BFD expired, or the session
// closed; FRR's log, to the microsecond; "-" where the session stays up, as
// when a probe withdraws a route), and when its kernel's route to the web
// destination changed (`ip monitor route`, timed as its lines arrive), both
// from the moment the trigger was pulled. What lies between the two is the
// ToR's own processing, which no gateway can shorten.
//
// TORS (default frr): what tor-a runs. "frr" is the lab as it is (FRR 8.4,
// whose bgpd waits 50 ms before each best-path run); "bird" replaces it for
// the run with BIRD 2 (Debian's bird2) configured to the same policy (the
// same sessions, BFD at the same timers, the same prefix filters, ECMP to
// the kernel), which acts on a session's loss or a withdrawal at once.
// "frr,bird" measures both, one after the other, in the same run.
//
// --probe-timeout-share S (default 1): the probes' timeout is S times their
// interval, egressd's and the healthcheck's alike (ping -W).
//   node dist/bench/failover.js [TRIALS] [BASELINE_TRIALS] [INTERVALS] [TORS]
//                               [--probe-timeout-share S]
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { spawn } from "node:child_process";
import { createInterface } from "node:readline";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import {
  blockSources,
  freezeNode,
  gatewayByEgress,
  median,
  startStream,
  TWO_DC_GATEWAYS as GW,
  type StreamResult,
  type TwoDcGateway,
} from "../containerlab/failover.js";
import { bfdPeers, bgpTable, kernelNextHops, seenAs, startWhoami } from "../containerlab/observe.js";
import { Lab, sleep, waitFor } from "../containerlab/runner.js";
import { loadTopology, rebindCopies } from "../containerlab/topology.js";
import { tryRun } from "../lib/exec.js";

const { values: opts, positionals: argv } = parseArgs({
  allowPositionals: true,
  options: { "probe-timeout-share": { type: "string", default: "1" } },
});
const TRIALS = Number(argv[0] ?? 10);
const BASELINE = Number(argv[1] ?? 2);
const INTERVALS = (argv[2] ?? "100,50").split(",").map(Number);
const TORS = (argv[3] ?? "frr").split(",");
const TIMEOUT_SHARE = Number(opts["probe-timeout-share"]);
if (!(TIMEOUT_SHARE > 0 && TIMEOUT_SHARE <= 1))
  throw new Error(`--probe-timeout-share: "${opts["probe-timeout-share"]}" is not a number in (0, 1]`);
for (const t of TORS)
  if (t !== "frr" && t !== "bird") throw new Error(`TORS: "${t}" is neither frr nor bird`);
type Tor = "frr" | "bird";
const TOPO = fileURLToPath(new URL("../../containerlab/two-dc/two-dc.clab.yml", import.meta.url));
const EGRESSD = fileURLToPath(new URL("../../bin/egressd", import.meta.url));
const SRC = "10.244.1.10";
const WEB = "http://203.0.113.10:8080/";

const tmp = mkdtempSync(join(tmpdir(), "egressd-bench-failover-"));
// tor-a's FRR log: FRR writes it as its own user, so the folder is its to write in (and tmp to pass through).
chmodSync(tmp, 0o711);
const torLogDir = join(tmp, "tor-a-log");
mkdirSync(torLogDir);
chmodSync(torLogDir, 0o1777);
const torLog = join(torLogDir, "frr.log");
const birdLog = join(torLogDir, "bird.log");
const birdCtl = join(tmp, "tor-a-bird.ctl");

/**
 * The lab with detection at `ms` x 3 (BFD on the gateways and the ToRs, and
 * the probes), a 1 s hold-down and no damping, so trials can follow each
 * other quickly.
 */
function labAt(ms: number, stack: "egressd" | "baseline", tor: Tor): Lab {
  const topo = loadTopology(TOPO);
  const dir = mkdtempSync(join(tmp, `${ms}ms-${stack}-${tor}-`));
  rebindCopies(topo, "/etc/egressd/egressd.yaml", dir, (text) =>
    text
      .replaceAll(
        "holdDownMs: 3000",
        `holdDownMs: 1000, damping: false, intervalMs: ${ms}, timeoutMs: ${ms * TIMEOUT_SHARE}`,
      )
      .replaceAll("minRxMs: 100, minTxMs: 100", `minRxMs: ${ms}, minTxMs: ${ms}`),
  );
  rebindCopies(topo, "/etc/frr/frr.conf", dir, (text) =>
    text
      .replaceAll("receive-interval 100", `receive-interval ${ms}`)
      .replaceAll("transmit-interval 100", `transmit-interval ${ms}`)
      .replace(
        "hostname tor-a",
        `hostname tor-a\nlog file ${torLog} informational\nlog timestamp precision 6`,
      ),
  );
  if (tor === "bird") {
    const node = topo.nodes.find((n) => n.name === "tor-a")!;
    const conf = join(dir, "tor-a-bird.conf");
    writeFileSync(conf, birdTor(ms));
    node.image = "bird";
    node.binds = [{ source: conf, target: "/etc/bird/bird.conf", readOnly: true }];
    // FRR's zebra turned forwarding on (`ip forwarding` in frr.conf); BIRD does not.
    node.exec = [...node.exec, "sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1"];
    node.cmd = `/usr/sbin/bird -f -c /etc/bird/bird.conf -s ${birdCtl}`;
  }
  if (stack === "egressd") return new Lab(topo, `bfo${process.pid % 10000}`, { quiet: true });
  const lab = new Lab(topo, `bfb${process.pid % 10000}`, { quiet: true });
  for (const g of ["gw-a1", "gw-a2"] as const) {
    const node = topo.nodes.find((n) => n.name === g)!;
    const gw = GW[g];
    const frr = join(dir, `${g}-frr.conf`);
    writeFileSync(frr, baselineFrr(g, ms));
    const snat = join(dir, `${g}-snat.nft`);
    writeFileSync(
      snat,
      "table ip baseline {\n  chain post {\n    type nat hook postrouting priority srcnat; policy accept;\n" +
        `    oifname "eth1" ip saddr 10.244.0.0/16 ip daddr 203.0.113.0/24 snat to ${gw.web}\n  }\n}\n`,
    );
    node.image = FRR_IMAGE;
    node.binds = [
      { source: frr, target: "/etc/frr/frr.conf", readOnly: true },
      { source: snat, target: "/etc/baseline/snat.nft", readOnly: true },
    ];
    node.exec = [...node.exec, `ip addr add ${gw.web}/32 dev lo`, "nft -f /etc/baseline/snat.nft"];
    const vtysh = (change: string) =>
      `vtysh -N ${lab.ns(g)} -c 'configure terminal' -c 'router bgp ${BASELINE_ASN}' ` +
      `-c 'address-family ipv4 unicast' -c '${change}'`;
    node.cmd = [
      "/usr/bin/python3 -m exabgp healthcheck --no-ack --no-syslog --no-ip-setup",
      `--ip ${gw.web}/32`,
      `--cmd "ping -n -c 1 -W ${(ms * TIMEOUT_SHARE) / 1000} ${SERVER}"`,
      `--interval ${ms / 1000} --fast-interval ${ms / 1000} --rise 3 --fall 3`,
      `--up-execute "${vtysh(`network ${WEB_NET}`)}"`,
      `--down-execute "${vtysh(`no network ${WEB_NET}`)}"`,
    ].join(" ");
  }
  return lab;
}

const FRR_IMAGE = "quay.io/frrouting/frr:8.4.4";
/** DC A's gateways' AS (their egressd.yaml), which the baseline's FRR gateways keep. */
const DC_A_GATEWAYS_ASN = 65011;
const BASELINE_ASN = DC_A_GATEWAYS_ASN;
const SERVER = "203.0.113.10";
const WEB_NET = "203.0.113.0/24";

/** FRR's config for a baseline gateway: BGP to tor-a with BFD at `ms` x 3, the egress IP announced. */
function baselineFrr(g: "gw-a1" | "gw-a2", ms: number): string {
  const link = GW[g].link;
  const tor = link.replace(/\.(\d+)$/, (_, d: string) => `.${Number(d) - 1}`);
  return [
    "frr defaults datacenter",
    `hostname ${g}`,
    "bfd",
    " profile tor",
    `  receive-interval ${ms}`,
    `  transmit-interval ${ms}`,
    "  detect-multiplier 3",
    " exit",
    "exit",
    `router bgp ${BASELINE_ASN}`,
    ` bgp router-id ${link}`,
    " no bgp ebgp-requires-policy",
    " no bgp network import-check",
    " timers bgp 3 9",
    ` neighbor ${tor} remote-as 65010`,
    ` neighbor ${tor} timers connect 1`,
    ` neighbor ${tor} bfd`,
    ` neighbor ${tor} bfd profile tor`,
    " address-family ipv4 unicast",
    `  network ${GW[g].web}/32`,
    " exit-address-family",
    "exit",
    "",
  ].join("\n");
}

/**
 * tor-a as BIRD 2, with FRR's tor-a/frr.conf policy: eBGP to the gateways
 * (BFD at `ms` x 3, only egress IPs and served destinations accepted,
 * nothing sent), to the core (everything both ways) and to the firewall
 * (nothing taken, no pod prefix given); its own networks announced; ECMP
 * over the gateways in the kernel.
 */
function birdTor(ms: number): string {
  const gateways = [
    ["gw_a1", "10.1.1.1", "fd00:1:1::2"],
    ["gw_a2", "10.1.2.1", "fd00:1:2::2"],
  ];
  return [
    `log "${birdLog}" all;`,
    'timeformat log "%F %T.%6f";',
    "router id 10.255.0.10;",
    "debug protocols { states, events };",
    "define FROM_GATEWAYS = [ 192.0.2.0/24{32,32}, 203.0.113.0/24{24,32}, 198.51.100.0/24{24,32} ];",
    "define FROM_GATEWAYS6 = [ 2001:db8:e::/48{128,128}, 2001:db8:203::/48{48,128}, 2001:db8:198::/48{48,128} ];",
    "define PODS = [ 10.244.0.0/16+ ];",
    "define PODS6 = [ fd00:244::/32+ ];",
    "define OWN = [ 10.255.0.10/32, 10.244.1.0/24, 10.1.1.0/31, 10.1.2.0/31 ];",
    "define OWN6 = [ fd00:244:1::/64, fd00:1:1::/64, fd00:1:2::/64 ];",
    "protocol device { scan time 10; }",
    'protocol direct { ipv4; ipv6; interface "*"; }',
    "protocol kernel { ipv4 { export where source = RTS_BGP; }; merge paths yes limit 8; }",
    "protocol kernel { ipv6 { export where source = RTS_BGP; }; merge paths yes limit 8; }",
    "protocol bfd {",
    `  interface "*" { min rx interval ${ms} ms; min tx interval ${ms} ms; idle tx interval 1000 ms; multiplier 3; };`,
    "}",
    // What FRR announces: its `network` statements (of the connected networks) and what it learnt.
    "function announced() { if source = RTS_DEVICE then return net ~ OWN || net ~ OWN6; return true; }",
    "filter own_and_learnt { if announced() then accept; reject; }",
    "filter to_fw { if net ~ PODS || net ~ PODS6 then reject; if announced() then accept; reject; }",
    "template bgp gws { local as 65010; hold time 9; keepalive time 3; connect retry time 1; error wait time 1, 5; bfd on;",
    "  ipv4 { import where net ~ FROM_GATEWAYS; export none; }; }",
    "template bgp gws6 { local as 65010; hold time 9; keepalive time 3; connect retry time 1; error wait time 1, 5; bfd on;",
    "  ipv6 { import where net ~ FROM_GATEWAYS6; export none; }; }",
    ...gateways.flatMap(([name, v4, v6]) => [
      `protocol bgp ${name} from gws { neighbor ${v4} as ${DC_A_GATEWAYS_ASN}; }`,
      `protocol bgp ${name}_v6 from gws6 { neighbor ${v6} as ${DC_A_GATEWAYS_ASN}; }`,
    ]),
    "protocol bgp core { local as 65010; neighbor 10.0.1.0 as 65000; connect retry time 2;",
    "  ipv4 { import all; export filter own_and_learnt; }; }",
    "protocol bgp core_v6 { local as 65010; neighbor fd00:0:1::1 as 65000; connect retry time 2;",
    "  ipv6 { import all; export filter own_and_learnt; }; }",
    "protocol bgp fw { local as 65010; neighbor 10.0.11.0 as 65100; connect retry time 2;",
    "  ipv4 { import none; export filter to_fw; }; }",
    "protocol bgp fw_v6 { local as 65010; neighbor fd00:0:11::1 as 65100; connect retry time 2;",
    "  ipv6 { import none; export filter to_fw; }; }",
    "",
  ].join("\n");
}

let lab: Lab;
let bfdOnTor = true;
let tor: Tor = "frr";

/** birdc's answer on tor-a's BIRD. */
async function birdc(...command: string[]): Promise<string> {
  const r = await tryRun(["birdc", "-s", birdCtl, ...command]);
  if (r.code !== 0) throw new Error(`birdc ${command.join(" ")}: ${r.stderr || r.stdout}`);
  return r.stdout;
}

/** Whether tor-a's BFD session with `link` is up. */
async function torBfdUp(link: string): Promise<boolean> {
  if (tor === "frr") return (await bfdPeers(lab, "tor-a")).get(link) === "up";
  return (await birdc("show", "bfd", "sessions")).split("\n").some((l) => {
    const f = l.trim().split(/\s+/);
    return f[0] === link && f[2] === "Up";
  });
}

async function ready(): Promise<TwoDcGateway> {
  await waitFor(
    "ECMP",
    async () => (await kernelNextHops(lab, "tor-a", "203.0.113.0/24")).length === 2,
    60_000,
  );
  const g = gatewayByEgress(await seenAs(lab, "pod-a", WEB, SRC));
  if (!g) throw new Error("no gateway carries the flow");
  if (bfdOnTor) await waitFor("BFD up", () => torBfdUp(GW[g].link), 20_000);
  return g;
}

/** The gateways tor-a sends web traffic to: FRR's BGP table, or (BIRD) its kernel's route. */
const webPeers = async () =>
  tor === "frr"
    ? ((await bgpTable(lab, "tor-a")).get("203.0.113.0/24") ?? []).map((p) => p.peer)
    : kernelNextHops(lab, "tor-a", "203.0.113.0/24");

/** A trial's traffic gap, and when (ms after the trigger) tor-a took the session down and changed its route. */
interface Trial extends StreamResult {
  torSessionMs?: number;
  torRouteMs?: number;
}

/** tor-a's kernel route changes for the web destination, with their wall-clock times (ms). */
function watchTorRoutes(): { changes: number[]; stop: () => void } {
  const child = spawn("ip", ["netns", "exec", lab.ns("tor-a"), "ip", "monitor", "route"], {
    stdio: ["ignore", "pipe", "ignore"],
  });
  const changes: number[] = [];
  createInterface({ input: child.stdout }).on("line", (l) => {
    if (l.includes(WEB_NET)) changes.push(Date.now());
  });
  return { changes, stop: () => child.kill() };
}

/**
 * When tor-a took the BGP session with `peer` down after `since` (wall
 * clock, ms), from its log: FRR's bgpd and BIRD write local time to the
 * microsecond.
 */
function torSessionDown(peer: string, since: number): number | undefined {
  let text: string;
  try {
    text = readFileSync(tor === "frr" ? torLog : birdLog, "utf8");
  } catch {
    return undefined;
  }
  // BIRD: "2026-12-05 05:10:11.123456 <TRACE> gw_a1: State changed to stop" (the protocol named after the gateway).
  const birdName = (Object.keys(GW) as TwoDcGateway[]).find((g) => GW[g].link === peer)?.replace("-", "_");
  const [pattern, name] =
    tor === "frr"
      ? [/^(\d+)\/(\d+)\/(\d+) (\d+):(\d+):(\d+)\.(\d{3})\d* .*ADJCHANGE: neighbor (\S+?)\(.* Down/, peer]
      : [/^(\d+)-(\d+)-(\d+) (\d+):(\d+):(\d+)\.(\d{3})\d* <TRACE> (\S+): State changed to stop/, birdName];
  for (const line of text.split("\n")) {
    const m = pattern.exec(line);
    if (!m || m[8] !== name) continue;
    const [y, mo, d, h, mi, sec, ms] = m.slice(1, 8).map(Number) as number[];
    const at = new Date(y!, mo! - 1, d!, h!, mi!, sec!, ms!).getTime();
    if (at >= since) return at;
  }
  return undefined;
}

/** One trial: stream, break `g` with `fail`, wait until the ToR dropped it, measure, repair. */
async function trial(
  fail: (g: TwoDcGateway) => Promise<() => Promise<void>>,
  timeoutMs = 5000,
): Promise<Trial> {
  const g = await ready();
  const stream = startStream(lab, "pod-a", "203.0.113.10", SRC);
  await stream.flowing;
  const routes = watchTorRoutes();
  await sleep(300);
  const pulled = Date.now();
  const repair = await fail(g);
  await waitFor(`${g} out`, async () => !(await webPeers()).includes(GW[g].link), timeoutMs);
  await sleep(500);
  const r: Trial = await stream.stop();
  routes.stop();
  const route = routes.changes.find((t) => t >= pulled);
  if (route !== undefined) r.torRouteMs = route - pulled;
  const down = torSessionDown(GW[g].link, pulled);
  if (down !== undefined) r.torSessionMs = down - pulled;
  await repair();
  return r;
}

async function restart(g: TwoDcGateway): Promise<void> {
  await waitFor(`${g} gone`, () => lab.cmdPid(g) === undefined, 10_000);
  await lab.startCmd(g);
}

const triggers: [string, (g: TwoDcGateway) => Promise<() => Promise<void>>, number][] = [
  [
    "probe failure (upstream path of the gateway breaks)",
    (g) => blockSources(lab, "fw", [GW[g].link, GW[g].web], { destinations: ["203.0.113.0/24"] }),
    5000,
  ],
  [
    "egressd killed (kill -9)",
    async (g) => {
      process.kill(lab.cmdPid(g)!, "SIGKILL");
      return () => restart(g);
    },
    5000,
  ],
  ["gateway frozen (SIGSTOP + nothing forwarded; BFD)", (g) => freezeNode(lab, g), 5000],
  [
    "drain (egressd drain)",
    async (g) => {
      const done = tryRun([EGRESSD, "drain", "--timeout", "30"], { netns: lab.ns(g), timeoutMs: 40_000 });
      return async () => {
        await done;
        await restart(g);
      };
    },
    5000,
  ],
];

function report(name: string, rs: Trial[]): void {
  const gaps = rs.map((r) => r.gapMs);
  const lost = rs.map((r) => r.lost);
  const med = (xs: (number | undefined)[]) => {
    const known = xs.filter((x): x is number => x !== undefined);
    return known.length ? `${median(known)} ms` : "-";
  };
  console.log(
    `${name.padEnd(64)} gap median ${String(median(gaps)).padStart(5)} ms  worst ${String(Math.max(...gaps)).padStart(5)} ms` +
      `   lost median ${median(lost)} worst ${Math.max(...lost)}   (${rs.length} trials)`,
  );
  const both = rs.filter((r) => r.torSessionMs !== undefined && r.torRouteMs !== undefined);
  console.log(
    `${"".padEnd(64)} at tor-a: session down after ${med(rs.map((r) => r.torSessionMs))}, ` +
      `route changed after ${med(rs.map((r) => r.torRouteMs))}` +
      (both.length ? ` (the ToR's own part: ${med(both.map((r) => r.torRouteMs! - r.torSessionMs!))})` : ""),
  );
}

/**
 * Runs `names` (all triggers when undefined) on the lab at `ms` with the
 * gateways of `stack`; the hold-timer baseline too when asked.
 */
async function runAt(
  ms: number,
  names: Set<string> | undefined,
  baseline: boolean,
  stack: "egressd" | "baseline" = "egressd",
): Promise<Map<string, Trial[]>> {
  lab = labAt(ms, stack, tor);
  bfdOnTor = true;
  const results = new Map<string, Trial[]>();
  try {
    await lab.up();
    // FRR nodes' commands are not started by up(): the healthchecks, once FRR runs.
    if (stack === "baseline") for (const g of ["gw-a1", "gw-a2"]) await lab.startCmd(g);
    await startWhoami(lab, "server");
    await ready();
    for (const [name, fail, timeout] of triggers) {
      if (names && !names.has(name)) continue;
      const rs: Trial[] = [];
      for (let i = 0; i < TRIALS; i++) {
        const r = await trial(fail, timeout);
        process.stderr.write(
          `  ${stack}, ToR ${tor}, ${ms} ms, ${name.split(" (")[0]} #${i + 1}: gap ${r.gapMs} ms, ${r.lost} lost\n`,
        );
        rs.push(r);
      }
      results.set(name, rs);
    }
    if (baseline) {
      // The same frozen gateway with BFD off on the ToR.
      await lab.exec("tor-a", [
        "vtysh",
        "-c",
        "configure terminal",
        "-c",
        "router bgp 65010",
        "-c",
        "no neighbor GATEWAYS bfd",
      ]);
      bfdOnTor = false;
      const base: Trial[] = [];
      for (let i = 0; i < BASELINE; i++) base.push(await trial((g) => freezeNode(lab, g), 30_000));
      results.set(BASELINE_ROW, base);
    }
  } finally {
    await lab.down();
  }
  return results;
}

const BASELINE_ROW = "baseline: gateway frozen, no BFD (BGP hold 9 s)";
const TIMED = new Set([triggers[0]![0], triggers[2]![0]]);

try {
  console.log(
    `failover on the two-dc lab: ping stream every 10 ms pod-a -> server, ${TRIALS} trials per trigger; ` +
      `detection at ${INTERVALS.join(" and ")} ms x 3 (BFD and probes; the probes' timeout ${TIMEOUT_SHARE} x the interval)`,
  );
  const rows: [string, Trial[]][] = [];
  const versus: string[] = [];
  for (const t of TORS as Tor[]) {
    tor = t;
    // The rows of the lab as it is (FRR ToRs) carry no mark; BIRD's say so.
    const at = tor === "frr" ? "" : ", ToR BIRD";
    for (const [i, ms] of INTERVALS.entries()) {
      // Every trigger at the first interval with FRR; on BIRD, the two that detection times.
      const all = i === 0 && tor === "frr";
      const results = await runAt(ms, all ? undefined : TIMED, all && BASELINE > 0);
      for (const [name, rs] of results) {
        if (name === BASELINE_ROW) continue;
        rows.push([TIMED.has(name) ? `${name}, ${ms} ms x 3${at}` : name, rs]);
      }
      if (results.has(BASELINE_ROW)) rows.push([BASELINE_ROW, results.get(BASELINE_ROW)!]);
      const stack = await runAt(ms, TIMED, false, "baseline");
      for (const [name, rs] of stack) {
        rows.push([`FRR + ExaBGP healthcheck: ${name.split(" (")[0]}, ${ms} ms x 3${at}`, rs]);
        const ours = median(results.get(name)!.map((r) => r.gapMs));
        const theirs = median(rs.map((r) => r.gapMs));
        versus.push(
          `${name.split(" (")[0]} at ${ms} ms${at}: egressd ${ours} ms, FRR + healthcheck ${theirs} ms ` +
            `(egressd ${theirs - ours >= 0 ? `${theirs - ours} ms ahead, ${(theirs / Math.max(1, ours)).toFixed(1)}x` : `${ours - theirs} ms behind`})`,
        );
      }
    }
  }
  for (const [name, rs] of rows) report(name, rs);
  console.log("egressd against FRR (bgpd + bfdd) with ExaBGP's healthcheck, median gaps:");
  for (const v of versus) console.log(`  ${v}`);
  const frozen = rows.filter(([n]) => n.startsWith(triggers[2]![0]) && !n.endsWith("ToR BIRD"));
  const base = rows.find(([n]) => n === BASELINE_ROW)?.[1];
  if (base)
    console.log(
      `BFD vs hold timer: median gap ${frozen.map(([n, rs]) => `${median(rs.map((r) => r.gapMs))} ms (${n.split(", ").at(-1)})`).join(", ")} vs ${median(base.map((r) => r.gapMs))} ms`,
    );
  console.log(
    "targets: median < 500 ms for probe failure and frozen gateway (<= 200 ms at 50 ms x 3); 0 lost for drain",
  );
} finally {
  rmSync(tmp, { recursive: true, force: true });
}
