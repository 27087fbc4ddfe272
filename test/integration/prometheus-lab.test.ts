// A real Prometheus (Debian's package) scrapes egressd on gw-a1 of the two-dc
// lab, from inside gw-a1's network namespace (egressd listens on loopback
// there), and we ask Prometheus' query API what it saw: the BGP peer is
// Established, the gateway is ready, and the SNAT counters of policy web grow
// with the pod traffic that went through gw-a1. The HTTP endpoints and
// `egressd status` are checked in the same lab.
import test from "ava";
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Lab, sleep, waitFor } from "../../containerlab/runner.js";
import { loadTopology } from "../../containerlab/topology.js";
import { bgpSessions, kernelNextHops, seenAs, startWhoami } from "../../containerlab/observe.js";
import { spawnDetached } from "../../lib/exec.js";
import { RUN_ID } from "../helpers/netns.js";
import { REPO, TWO_DC } from "../helpers/paths.js";

const PROMETHEUS = "/usr/bin/prometheus";
const PROM = "127.0.0.1:9090";
const EGRESSD = "127.0.0.1:9469";
const WEB = "http://203.0.113.10:8080/";
const GW = "gw-a1";

const lab = new Lab(loadTopology(TWO_DC), `${RUN_ID}prom`, { quiet: true });
const tmp = mkdtempSync(join(tmpdir(), "egressd-prom-"));
let promPid: number | undefined;

async function established(node: string, desc: string[]): Promise<boolean> {
  const s = await bgpSessions(lab, node);
  const ours = [...s.values()].filter((p) => p.desc && desc.includes(p.desc));
  return ours.length === desc.length * 2 && ours.every((p) => p.state === "Established");
}

/** GET inside gw-a1's namespace; the HTTP status and body. */
async function httpGet(url: string): Promise<{ status: number; body: string }> {
  const r = await lab.tryExec(GW, ["curl", "-s", "-m", "3", "-w", "\n%{http_code}", url], 5000);
  const i = r.stdout.lastIndexOf("\n");
  return { status: Number(r.stdout.slice(i + 1)) || 0, body: r.stdout.slice(0, Math.max(i, 0)) };
}

interface Sample {
  metric: Record<string, string>;
  value: [number, string];
}

/** An instant query through Prometheus' HTTP API. */
async function query(q: string): Promise<Sample[]> {
  const r = await lab.exec(GW, [
    "curl",
    "-s",
    "-m",
    "5",
    "-G",
    "--data-urlencode",
    `query=${q}`,
    `http://${PROM}/api/v1/query`,
  ]);
  const j = JSON.parse(r.stdout) as { status: string; error?: string; data: { result: Sample[] } };
  if (j.status !== "success") throw new Error(`query ${q}: ${j.error ?? r.stdout}`);
  return j.data.result;
}

/** The single value of a query, or undefined when it has no result. */
async function scalar(q: string): Promise<number | undefined> {
  const r = await query(q);
  return r.length ? Number(r[0]!.value[1]) : undefined;
}

test.before(async () => {
  await lab.up();
  await startWhoami(lab, "server");
  await waitFor("tor-a <-> gateways", () => established("tor-a", ["gw-a1", "gw-a2"]), 60_000);
  await waitFor(
    "ECMP at tor-a",
    async () => (await kernelNextHops(lab, "tor-a", "203.0.113.0/24")).length === 2,
    30_000,
  );
  // egressd's listener must be up before Prometheus is pointed at it.
  try {
    await waitFor(
      "egressd /healthz",
      async () => (await httpGet(`http://${EGRESSD}/healthz`)).status === 200,
      20_000,
    );
  } catch (e) {
    throw new Error(
      `${(e as Error).message}: is startObservability wired into \`egressd run\`? gw-a1's log:\n` +
        readFileSync(lab.cmdLog(GW), "utf8").split("\n").slice(-20).join("\n"),
    );
  }

  writeFileSync(
    join(tmp, "prometheus.yml"),
    [
      "global:",
      "  scrape_interval: 1s",
      "  scrape_timeout: 1s",
      "  evaluation_interval: 1s",
      "scrape_configs:",
      "  - job_name: egressd",
      `    static_configs: [{ targets: ["${EGRESSD}"] }]`,
      "",
    ].join("\n"),
  );
  const log = openSync(join(tmp, "prometheus.log"), "a");
  promPid = spawnDetached(
    [
      PROMETHEUS,
      `--config.file=${join(tmp, "prometheus.yml")}`,
      `--storage.tsdb.path=${join(tmp, "data")}`,
      `--web.listen-address=${PROM}`,
      "--storage.tsdb.retention.time=1h",
    ],
    { netns: lab.ns(GW), logFile: log },
  );
  closeSync(log);
  try {
    await waitFor(
      "Prometheus ready",
      async () => (await httpGet(`http://${PROM}/-/ready`)).status === 200,
      30_000,
    );
    await waitFor(
      "Prometheus scraped egressd",
      async () => (await scalar('up{job="egressd"}')) === 1,
      20_000,
    );
  } catch (e) {
    throw new Error(
      `${(e as Error).message}\n${readFileSync(join(tmp, "prometheus.log"), "utf8").split("\n").slice(-20).join("\n")}`,
    );
  }
});

test.after.always(async () => {
  if (promPid !== undefined) {
    try {
      process.kill(promPid, "SIGTERM");
      for (let i = 0; i < 50; i++) {
        process.kill(promPid, 0);
        await sleep(100);
      }
      process.kill(promPid, "SIGKILL");
    } catch {
      // gone
    }
  }
  await lab.down();
  rmSync(tmp, { recursive: true, force: true });
});

test.serial("Prometheus sees the BGP peer Established, the gateway ready, and who it is", async (t) => {
  await waitFor(
    "peer tor established in Prometheus",
    async () => (await scalar('egressd_bgp_peer_state{peer="tor", state="established"}')) === 1,
    20_000,
  );
  t.is(await scalar('egressd_bgp_peer_state{peer="tor", state="idle"}'), 0);
  t.is(await scalar('egressd_bgp_peer_state{peer="tor-v6", state="established"}'), 1);
  await waitFor("egressd_ready 1", async () => (await scalar("egressd_ready")) === 1, 20_000);
  const info = await query("egressd_build_info");
  t.is(info.length, 1);
  t.like(info[0]!.metric, { job: "egressd", gateway: "gw-a1", site: "dc-a" });
  t.true(
    (await scalar('sum(egressd_bgp_advertised_routes{family="ipv4"})'))! >= 3,
    "egress IPs and destinations",
  );
  t.true((await scalar('count(egressd_probe_state{state="up"} == 1)'))! >= 1, "probes up");
  t.true((await scalar("egressd_conntrack_entries_limit"))! > 0);
  t.truthy(await scalar("process_resident_memory_bytes"));
  // The join the site alert makes: this site has one serving gateway here.
  const serving = await query(
    'count by (site) ((egressd_ready{job="egressd"} == 1) * on (instance, job) group_left (site) egressd_build_info{job="egressd"})',
  );
  t.deepEqual(
    serving.map((x) => [x.metric.site, x.value[1]]),
    [["dc-a", "1"]],
  );
});

test.serial("the SNAT counters of policy web grow with the traffic gw-a1 carries", async (t) => {
  const packets = 'sum(egressd_snat_packets_total{policy="web"})';
  const conns = 'sum(egressd_snat_connections_total{policy="web"})';
  await waitFor("SNAT series in Prometheus", async () => (await scalar(packets)) !== undefined, 20_000);
  const before = { packets: (await scalar(packets))!, conns: (await scalar(conns))! };

  // tor-a hashes flows over gw-a1 and gw-a2 by address: many pod addresses
  // make it certain that some go through gw-a1. What the server sees tells
  // which gateway carried each (gw-a1 SNATs web to 192.0.2.11, gw-a2 to .12).
  const sources = Array.from({ length: 24 }, (_, i) => `10.244.1.${100 + i}`);
  for (const s of sources) await lab.exec("pod-a", ["ip", "addr", "add", `${s}/24`, "dev", "eth1"]);
  let viaA1 = 0;
  let viaA2 = 0;
  for (const s of sources) {
    const seen = await seenAs(lab, "pod-a", WEB, s);
    if (seen === "192.0.2.11") viaA1++;
    else if (seen === "192.0.2.12") viaA2++;
  }
  t.log(`requests through gw-a1: ${viaA1}, through gw-a2: ${viaA2}`);
  t.true(viaA1 > 0, "some flows went through gw-a1");
  t.is(viaA1 + viaA2, sources.length, "every request got through");

  // Each HTTP exchange is at least SYN, ACK and the request from the pod.
  await waitFor(
    "SNAT counters grown in Prometheus",
    async () =>
      (await scalar(conns))! - before.conns >= viaA1 &&
      (await scalar(packets))! - before.packets >= 3 * viaA1,
    20_000,
  );
  const after = { packets: (await scalar(packets))!, conns: (await scalar(conns))! };
  t.log(
    `web on gw-a1: +${after.packets - before.packets} packets, +${after.conns - before.conns} connections`,
  );
  t.true(after.conns - before.conns >= viaA1);
  t.true((await scalar('sum(egressd_snat_bytes_total{policy="web", egress_ip="192.0.2.11"})'))! > 0);
  // rate() over the scrapes sees the traffic too.
  t.true((await scalar('sum(increase(egressd_snat_connections_total{policy="web"}[1m]))'))! > 0);
});

test.serial("the endpoints and `egressd status` inside the gateway's namespace", async (t) => {
  t.deepEqual(await httpGet(`http://${EGRESSD}/healthz`), { status: 200, body: "ok\n" });
  t.deepEqual(await httpGet(`http://${EGRESSD}/readyz`), { status: 200, body: "ready\n" });
  const s = await httpGet(`http://${EGRESSD}/status`);
  t.is(s.status, 200);
  const status = JSON.parse(s.body) as {
    gateway: { name: string };
    peers: { name: string; state: string }[];
  };
  t.is(status.gateway.name, "gw-a1");
  t.is(status.peers.find((p) => p.name === "tor")?.state, "established");
  t.is((await httpGet(`http://${EGRESSD}/nope`)).status, 404);

  const r = await lab.tryExec(GW, [process.execPath, join(REPO, "dist/daemon/cli.js"), "status"], 10_000);
  t.is(r.code, 0, r.stderr);
  t.regex(r.stdout, /^gateway {3}gw-a1 \(site dc-a\)/m);
  t.regex(r.stdout, /^ {2}web +ipv4 +192\.0\.2\.11 +tor +yes$/m);
  t.regex(r.stdout, /^ {2}tor +10\.1\.1\.0 +65010 +established/m);
});
