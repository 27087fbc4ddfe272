// The audit trail for real: egressd runs in the gateway namespace with an
// audit section; pods make connections through it to a server that logs the
// source address and port it sees, as a firewall would. Each connection must
// be in the JSON trail (start and end, with the pod's address and port, the
// egress IP and port the server saw, the destination and the counters), in
// what Debian's nfcapd collected over IPFIX (read back with nfdump), and
// `egressd audit find` must answer the firewall's question from it.
import { NODE_ENV, NODE_FLAGS } from "../../daemon/node-flags.js";
import test, { type ExecutionContext } from "ava";
import { mkdtempSync, openSync, readFileSync, readdirSync, rmSync, writeFileSync, existsSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { isRunning, run, spawnDetached, tryRun } from "../../lib/exec.js";
import { parseRecord, type AuditRecord } from "../../core/audit/record.js";
import { sandbox } from "../helpers/netns.js";
import { buildTopology } from "../helpers/dataplane-topology.js";
import { REPO } from "../helpers/paths.js";

const CLI = join(REPO, "dist/daemon/cli.js");
const PORT = 8090;
const IPFIX_PORT = 4739;

// The server answers with the source it saw ("address port"): what the firewall logs.
const SERVER_JS = `
const net = require("net");
for (const host of ["0.0.0.0", "::"]) {
  net.createServer((c) => { c.on("error", () => {}); c.end(c.remoteAddress + " " + c.remotePort + "\\n"); })
    .listen({ port: ${PORT}, host, ipv6Only: host === "::" });
}`;

// The client prints its own port, then what the server saw.
const CLIENT_JS = `
const net = require("net");
const [host, local] = process.argv.slice(1);
const c = net.connect({ host, port: ${PORT}, localAddress: local, timeout: 3000 });
let out = "";
c.on("connect", () => (out += c.localPort + " "));
c.on("data", (d) => (out += d));
c.on("end", () => process.stdout.write(out));
c.on("timeout", () => process.exit(3));
c.on("error", (e) => { process.stderr.write(String(e) + "\\n"); process.exit(4); });`;

const waitFor = async (what: string, ok: () => boolean | Promise<boolean>, ms: number) => {
  const until = Date.now() + ms;
  while (Date.now() < until) {
    if (await ok()) return;
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(`timed out waiting for ${what}`);
};

interface Made {
  src: string;
  sport: number;
  dst: string;
  /** What the server saw. */
  egressIP: string;
  egressPort: number;
}

/**
 * The pod -- gw -- srv topology with the "address port" server, and egressd in
 * the gateway's namespace with `policies` and an audit trail (and nfcapd as
 * its IPFIX collector, with `ipfix`).
 */
async function auditedGateway(
  t: ExecutionContext,
  tag: string,
  policies: string,
  opts: { ipfix?: boolean } = {},
) {
  const s = sandbox(t, tag);
  await buildTopology(s);
  spawnDetached(["node", "-e", SERVER_JS], { netns: s.ns("srv") });
  const dir = mkdtempSync(join(tmpdir(), "egressd-audit-"));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const trail = join(dir, "audit.jsonl");
  const flows = join(dir, "flows");
  // TIME_WAIT ends after 1 s here, so each connection's end comes soon after it closes.
  await s.exec("gw", ["sysctl", "-qw", "net.netfilter.nf_conntrack_tcp_timeout_time_wait=1"]);
  let nfcapd: number | undefined;
  if (opts.ipfix) {
    // Debian's IPFIX collector, in the gateway's namespace.
    await run(["mkdir", "-p", flows]);
    const pid = spawnDetached(
      ["nfcapd", "-w", flows, "-p", String(IPFIX_PORT), "-b", "127.0.0.1", "-t", "3600"],
      { netns: s.ns("gw"), logFile: openSync(join(dir, "nfcapd.log"), "a") },
    );
    nfcapd = pid;
    t.teardown(() => {
      if (isRunning(pid)) process.kill(pid, "SIGKILL");
    });
  }
  const config = join(dir, "egressd.yaml");
  writeFileSync(
    config,
    `gateway: { name: gw-au, site: a }
egressIPs:
  - { address: 192.0.2.11, interface: lo }
  - { address: "2001:db8:e::11", interface: lo }
uplinks: [{ name: u1, interface: u1, nextHop: 100.64.1.2, nextHop6: "2001:db8:a::2" }]
policies:
${policies}
audit:
  file: ${trail}
${opts.ipfix ? `  ipfix: { collector: 127.0.0.1, port: ${IPFIX_PORT}, observationDomain: 7 }\n` : ""}`,
  );
  const logFile = join(dir, "egressd.log");
  const pid = spawnDetached(["node", ...NODE_FLAGS, CLI, "run", "-c", config, "--run-dir", dir], {
    netns: s.ns("gw"),
    logFile: openSync(logFile, "a"),
    env: { ...NODE_ENV },
  });
  const state = { passed: false };
  t.teardown(() => {
    if (isRunning(pid)) process.kill(pid, "SIGKILL");
    if (!state.passed)
      console.error(`egressd log:\n${readFileSync(logFile, "utf8").split("\n").slice(-30).join("\n")}`);
  });
  await waitFor(
    "egressd ready",
    async () => (await s.tryExec("gw", ["curl", "-sf", "http://127.0.0.1:9469/readyz"])).code === 0,
    30_000,
  );
  const records = () =>
    existsSync(trail)
      ? readFileSync(trail, "utf8")
          .split("\n")
          .map(parseRecord)
          .filter((r): r is AuditRecord => r !== undefined)
      : [];
  return { s, dir, trail, flows, pid, nfcapd, state, records };
}

test("every NATed connection is in the JSON trail and in nfdump, and `audit find` names its source", async (t) => {
  const { s, trail, flows, pid, nfcapd, state, records } = await auditedGateway(
    t,
    "au",
    `  - { name: web, sources: [10.244.1.10], destinations: [203.0.113.0/24], egressIP: 192.0.2.11, uplink: u1 }
  - { name: web6, sources: ["fd00:244::10"], destinations: ["2001:db8:100::/64"], egressIP: "2001:db8:e::11", uplink: u1 }`,
    { ipfix: true },
  );
  const made: Made[] = [];
  const connect = async (dst: string, local: string) => {
    const { stdout } = await s.exec("pod", ["node", "-e", CLIENT_JS, dst, local], 10_000);
    const [sport, egressIP, egressPort] = stdout.trim().split(/\s+/);
    made.push({
      src: local,
      sport: Number(sport),
      dst,
      egressIP: egressIP!.replace(/^::ffff:/, ""),
      egressPort: Number(egressPort),
    });
  };
  for (let i = 0; i < 3; i++) await connect("203.0.113.10", "10.244.1.10");
  await connect("2001:db8:100::10", "fd00:244::10");
  t.deepEqual(
    made.slice(0, 4).map((m) => m.egressIP),
    ["192.0.2.11", "192.0.2.11", "192.0.2.11", "2001:db8:e::11"],
  );

  await waitFor(
    "4 starts and 4 ends in the trail",
    async () => {
      // The kernel removes an expired entry (and reports its end) when its garbage collector
      // gets to it, which on an idle table can take a minute; a listing removes it at once.
      // The end's time is the expiry either way (the kernel dates it back).
      await s.tryExec("gw", ["conntrack", "-L", "-p", "tcp"]);
      return records().filter((r) => r.event === "end").length >= 4;
    },
    20_000,
  ).catch((e: Error) => {
    const text = existsSync(trail) ? readFileSync(trail, "utf8") : "(no file)";
    throw new Error(`${e.message}; the trail:\n${text}`);
  });
  const all = records();
  t.is(all.length, 8, "one start and one end per NATed connection, nothing else");
  for (const m of made.slice(0, 4)) {
    const mine = all.filter((r) => r.src === m.src && r.sport === m.sport);
    t.deepEqual(
      mine.map((r) => r.event),
      ["start", "end"],
      `${m.src}:${m.sport}`,
    );
    for (const r of mine) {
      t.like(r, {
        gateway: "gw-au",
        policy: m.src.includes(":") ? "web6" : "web",
        proto: "tcp",
        egressIP: m.egressIP,
        egressPort: m.egressPort,
        dst: m.dst,
        dport: PORT,
      });
    }
    const [start, end] = mine as [AuditRecord, AuditRecord];
    t.is(end.ctId, start.ctId);
    t.is(end.started, start.time);
    t.true(Date.parse(end.time) >= Date.parse(start.time));
    // A connection, an answer, a close: at least 3 packets each way.
    t.true(end.packetsOut! >= 3 && end.packetsIn! >= 3, JSON.stringify(end));
    t.true(end.bytesIn! > end.bytesOut! - 1000 && end.bytesIn! > 100);
  }

  // The firewall's question, from what the server logged.
  const q = made[1]!;
  const start = all.find((r) => r.event === "start" && r.sport === q.sport)!;
  const find = await run(
    [
      "node",
      CLI,
      "audit",
      "find",
      `${q.egressIP}:${q.egressPort}`,
      `${q.dst}:${PORT}`,
      "--at",
      start.time,
      "--file",
      trail,
    ],
    { timeoutMs: 20_000 },
  );
  t.regex(find.stdout, new RegExp(`source +${q.src.replace(/\./g, "\\.")}:${q.sport}\\b`));
  t.regex(find.stdout, /policy +web on gateway gw-au/);
  // An hour later the port is nobody's.
  const later = new Date(Date.parse(start.time) + 3_600_000).toISOString();
  const none = await tryRun(
    ["node", CLI, "audit", "find", `${q.egressIP}:${q.egressPort}`, "--at", later, "--file", trail],
    {
      timeoutMs: 20_000,
    },
  );
  t.is(none.code, 1);

  // IPFIX: egressd flushes on stop; nfcapd writes its file when it stops.
  process.kill(pid, "SIGTERM");
  await waitFor("egressd stopped", () => !isRunning(pid), 20_000);
  process.kill(nfcapd!, "SIGTERM");
  await waitFor("nfcapd stopped", () => !isRunning(nfcapd!), 10_000);
  const files = readdirSync(flows).filter((f) => /^nfcapd\.\d+$/.test(f));
  t.true(files.length >= 1, `nfcapd wrote no file: ${readdirSync(flows).join(", ")}`);
  const flowsSeen: Record<string, string | number>[] = [];
  for (const f of files) {
    const { stdout } = await run(["nfdump", "-r", join(flows, f), "-o", "json"], { timeoutMs: 20_000 });
    const parsed = JSON.parse(stdout.trim().startsWith("[") ? stdout : "[]") as Record<
      string,
      string | number
    >[];
    flowsSeen.push(...parsed);
  }
  for (const m of made.slice(0, 3)) {
    const mine = flowsSeen.filter((f) => f.src4_addr === m.src && Number(f.src_port) === m.sport);
    t.deepEqual(
      mine.map((f) => Number(f.nat_event_id)).sort(),
      [4, 5],
      `nfdump has the NAT44 session create and delete of ${m.src}:${m.sport}`,
    );
    for (const f of mine) {
      t.is(f.src4_xlt_ip, m.egressIP);
      t.is(Number(f.src_xlt_port), m.egressPort);
      t.is(f.dst4_addr, m.dst);
      t.is(Number(f.dst_port), PORT);
      t.is(Number(f.proto), 6);
    }
    const del = mine.find((f) => Number(f.nat_event_id) === 5)!;
    t.true(Number(del.in_packets) >= 3 && Number(del.out_packets) >= 3, JSON.stringify(del));
  }
  // nfdump 1.7 drops the IPv6 post-NAT address (element 281); the record and its port arrive.
  const v6 = made[3]!;
  const mine6 = flowsSeen.filter((f) => f.src6_addr === v6.src && Number(f.src_port) === v6.sport);
  t.is(mine6.length, 2);
  t.true(mine6.every((f) => Number(f.src_xlt_port) === v6.egressPort));
  state.passed = true;
});

test("a Deny policy and a source no policy allows: dropped, counted and recorded; an exception passes un-NATed", async (t) => {
  const { s, state, records } = await auditedGateway(
    t,
    "ad",
    `  - { name: web, sources: [10.244.1.10], destinations: [203.0.113.0/24], exceptions: [203.0.113.200/32], egressIP: 192.0.2.11, uplink: u1 }
  - { name: block, sources: [10.244.1.12], destinations: [203.0.113.0/24], action: Deny }`,
  );
  await s.sh("pod", "ip addr add 10.244.1.12/24 dev p0");
  const attempt = (dst: string, local: string) =>
    s.tryExec("pod", ["node", "-e", CLIENT_JS, dst, local], 10_000);

  // Allowed: NATed; an exception of the same policy: forwarded as it is.
  t.regex((await attempt("203.0.113.10", "10.244.1.10")).stdout, / 192\.0\.2\.11 /);
  t.regex((await attempt("203.0.113.200", "10.244.1.10")).stdout, / 10\.244\.1\.10 /);
  // Denied by policy, and allowed by none (the default, dataplane.unmatched: Deny): nothing comes back.
  const denied = await attempt("203.0.113.10", "10.244.1.12");
  const unmatched = await attempt("203.0.113.10", "10.244.1.11");
  t.is(denied.code, 3, "the connect timed out");
  t.is(unmatched.code, 3, "the connect timed out");

  await waitFor("drop records", () => records().filter((r) => r.event === "drop").length >= 2, 10_000);
  const drops = records().filter((r) => r.event === "drop");
  const byPolicy = drops.filter((r) => r.policy === "block");
  const byNone = drops.filter((r) => r.unmatched === true);
  // Each SYN the client sent (its retries too) was a new connection dropped and recorded.
  t.true(byPolicy.length >= 1 && byNone.length >= 1, JSON.stringify(drops));
  for (const r of byPolicy)
    t.like(r, { gateway: "gw-au", proto: "tcp", src: "10.244.1.12", dst: "203.0.113.10", dport: PORT });
  for (const r of byNone)
    t.like(r, { gateway: "gw-au", proto: "tcp", src: "10.244.1.11", dst: "203.0.113.10", dport: PORT });
  t.is(drops.length, byPolicy.length + byNone.length);
  // The exception was neither dropped nor NATed, so it is in no record.
  t.false(records().some((r) => r.dst === "203.0.113.200"));

  // Counted in the kernel, and every count is a record (a retried SYN still in flight is
  // counted before its record is written: compared once both have settled).
  const counts = async () => {
    const c = JSON.parse(
      (await s.exec("gw", ["/usr/sbin/nft", "-j", "list", "counters", "table", "inet", "egressd"])).stdout,
    ) as { nftables: { counter?: { name: string; packets: number } }[] };
    const count = (name: string) => c.nftables.find((i) => i.counter?.name === name)?.counter?.packets;
    const r = records().filter((x) => x.event === "drop");
    return {
      kernel: [count("unmatched_v4"), count("pkts_block")],
      records: [r.filter((x) => x.unmatched).length, r.filter((x) => x.policy === "block").length],
    };
  };
  await waitFor(
    "records equal to the kernel's counts",
    async () => {
      const c = await counts();
      return c.kernel[0] === c.records[0] && c.kernel[1] === c.records[1];
    },
    10_000,
  ).catch(async (e: Error) => {
    throw new Error(`${e.message}: ${JSON.stringify(await counts())}`);
  });
  const settled = records().filter((r) => r.event === "drop");
  const metrics = (await s.exec("gw", ["curl", "-sf", "http://127.0.0.1:9469/metrics"])).stdout;
  t.regex(metrics, new RegExp(`^egressd_audit_records_total\\{event="drop"\\} ${settled.length}$`, "m"));
  state.passed = true;
});
