// The pacing library egressd loads into conntrackd (native/event-pace.c,
// docs/connection-sync.md): two conntrackds with egressd's config listen to
// the same namespace's conntrack events, one as egressd starts it (paced,
// here at 20 ms so that the difference cannot be missed) and one as
// conntrackd runs alone. A few hundred TCP connections on loopback make a
// few thousand events. Both must have read every one of the connections;
// the paced one must have woken for them in batches, no more than about once
// per pace, where the other wakes up to once per event.
//
// Then a pair (test/helpers/sync-pair.ts: gw1 SNATs a pod's connections, gw2
// is its peer), both conntrackds as egressd starts them: the sending side
// must read about one event per connection (new and established merged), the
// peer must write each with one create, and read none of its own writes back.
// And with the peer's table full, the creates the library wrote at once and
// the kernel refused must be reported, with their total.
import test, { type ExecutionContext } from "ava";
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { conntrackdConfig, parseConntrackdStats, refusedInAll } from "../../core/plan/sync.js";
import { EVENT_PACE_LIBRARY, pacedCommand } from "../../daemon/connection-sync.js";
import { sandbox, type Sandbox } from "../helpers/netns.js";
import { buildPair, pairEntries, SOURCES, startPair } from "../helpers/sync-pair.js";

// Not longer: loopback makes a connection's six events in a fraction of a millisecond, and a pace
// must not hold more events than conntrackd's 2 MB socket buffer (about 1600; the kernel charges
// about 1280 bytes an event). At 100 ms, a fast machine overran it.
const PACE_MS = 20;
const CONNECTIONS = 300;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Voluntary context switches of a process: one for each time it blocked (in select) and was woken. */
function wakeUps(pid: number): number {
  const m = /^voluntary_ctxt_switches:\s+(\d+)$/m.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
  if (!m) throw new Error(`/proc/${pid}/status has no voluntary_ctxt_switches`);
  return Number(m[1]);
}

/** `count` TCP connections to a listener on loopback, one after another: each opened, written to, closed. */
const CLIENT = `
const net = require("node:net");
const count = Number(process.argv[1]);
const server = net.createServer((c) => { c.on("data", () => {}); c.on("error", () => {}); c.on("end", () => c.end()); });
server.listen(9009, "127.0.0.1", async () => {
  for (let i = 0; i < count; i++)
    await new Promise((resolve, reject) => {
      const c = net.connect(9009, "127.0.0.1", () => c.end("x"));
      c.on("error", reject);
      c.on("close", resolve);
    });
  server.close();
});
`;

async function startConntrackd(s: Sandbox, dir: string, name: string, port: number, paced: boolean) {
  const paths = { lockFile: join(dir, `${name}.lock`), socket: join(dir, `${name}.ctl`) };
  const file = join(dir, `${name}.conf`);
  const config = conntrackdConfig(
    {
      interface: "sync0",
      address: "10.1.9.1",
      port,
      peers: [{ name: "peer", address: "10.1.9.2", egressIPs: ["203.0.113.2"] }],
      sources: ["127.0.0.0/8"],
    },
    paths,
  );
  writeFileSync(file, config, { mode: 0o600 });
  const front = paced ? pacedCommand(EVENT_PACE_LIBRARY, PACE_MS * 1000) : [];
  const child: ChildProcess = spawn("ip", ["netns", "exec", s.ns("gw"), ...front, "conntrackd", "-C", file], {
    stdio: "ignore",
  });
  // ip netns exec and env exec in place: the child's pid is conntrackd's.
  const stats = async () =>
    parseConntrackdStats((await s.exec("gw", ["conntrackd", "-C", file, "-s"])).stdout);
  for (let i = 0; ; i++) {
    try {
      await stats();
      break;
    } catch (e) {
      if (i >= 50) throw new Error(`conntrackd ${name} did not answer in 5 s`, { cause: e });
      await sleep(100);
    }
  }
  return { child, pid: child.pid!, stats };
}

test.serial("paced conntrackd reads every event, in batches at most once per pace", async (t) => {
  t.true(pacedCommand().length > 0, `the library is built: ${EVENT_PACE_LIBRARY}`);
  const s = sandbox(t, "pace");
  await s.addNode("gw");
  await s.addNode("peer");
  await s.link("gw", "sync0", "peer", "sync0");
  // conntrack tracks a namespace's traffic only once a rule there needs it.
  await s.sh(
    "gw",
    // (/usr/sbin/nft: under npx, "nft" is another package's command.)
    [
      "ip addr add 10.1.9.1/24 dev sync0",
      "/usr/sbin/nft add table ip track",
      "/usr/sbin/nft 'add chain ip track out { type filter hook output priority 0; }'",
      "/usr/sbin/nft add rule ip track out ct state new counter",
    ].join("\n"),
  );
  const dir = mkdtempSync(join(tmpdir(), "egressd-test-pace-"));
  const daemons: ChildProcess[] = [];
  t.teardown(() => {
    for (const d of daemons) d.kill("SIGKILL");
    rmSync(dir, { recursive: true, force: true });
  });
  const paced = await startConntrackd(s, dir, "paced", 3780, true);
  daemons.push(paced.child);
  const alone = await startConntrackd(s, dir, "alone", 3781, false);
  daemons.push(alone.child);
  t.true(
    readFileSync(`/proc/${paced.pid}/maps`, "utf8").includes("egressd-event-pace.so"),
    "the library is loaded into the paced conntrackd",
  );
  t.false(readFileSync(`/proc/${alone.pid}/maps`, "utf8").includes("egressd-event-pace.so"));

  await sleep(500);
  const before = [wakeUps(paced.pid), wakeUps(alone.pid)];
  const t0 = performance.now();
  await s.exec("gw", [process.execPath, "-e", CLIENT, String(CONNECTIONS)], 60_000);
  // Long enough for the last events to be read at the pace.
  await sleep(3 * PACE_MS);
  const ms = performance.now() - t0;
  const woke = [wakeUps(paced.pid) - before[0]!, wakeUps(alone.pid) - before[1]!];
  const [p, a] = [await paced.stats(), await alone.stats()];
  t.log(
    `${CONNECTIONS} connections in ${Math.round(ms)} ms: paced conntrackd woke ${woke[0]} times and holds ${p.local}; alone, ${woke[1]} times and holds ${a.local}`,
  );
  // Every connection read (each is in TIME_WAIT, in the cache), paced or not.
  t.true(a.local >= CONNECTIONS, `conntrackd alone holds ${a.local} of ${CONNECTIONS}`);
  t.true(p.local >= CONNECTIONS, `paced conntrackd holds ${p.local} of ${CONNECTIONS}`);
  // At most one pass per pace for events, plus conntrackd's own timers (a few a second).
  const bound = Math.ceil(ms / PACE_MS) + Math.ceil(ms / 1000) * 10 + 10;
  t.true(
    woke[0]! <= bound,
    `paced conntrackd woke ${woke[0]} times in ${Math.round(ms)} ms (at most ${bound})`,
  );
});

/** conntrackd's count of the kernel events it read (`conntrackd -s runtime`). */
async function eventsRead(s: Sandbox, node: string, config: string): Promise<number> {
  const out = (await s.exec(node, ["conntrackd", "-C", config, "-s", "runtime"])).stdout;
  const m = /events received:\s+(\d+)/.exec(out);
  if (!m) throw new Error(`conntrackd -s runtime: no "events received" in ${JSON.stringify(out)}`);
  return Number(m[1]);
}

/** `count` TCP connections from one pod address to the server, one after another. */
const POD_CLIENT = `
const net = require("node:net");
const [count, host, from] = [Number(process.argv[1]), process.argv[2], process.argv[3]];
(async () => {
  // Each from a port of its own: a port used again would make the same connection twice.
  for (let i = 0; i < count; i++)
    await new Promise((resolve, reject) => {
      const c = net.connect({ port: 9001, host, localAddress: from, localPort: 40000 + i }, () => c.end("x"));
      c.on("data", () => {});
      c.on("error", reject);
      c.on("close", resolve);
    });
})().catch((e) => { console.error(e.message); process.exit(1); });
`;
const SERVER = `require("node:net").createServer((c) => { c.on("error", () => {}); c.end(); }).listen(9001, "203.0.113.10");`;

/**
 * The pair (test/helpers/sync-pair.ts) with the server answering and both
 * conntrackds started behind `front` and answering their control socket;
 * everything is stopped and removed when the test ends.
 */
async function pairAsEgressdRunsIt(t: ExecutionContext, tag: string, front: readonly string[]) {
  const s = sandbox(t, tag);
  await buildPair(s);
  const dir = mkdtempSync(join(tmpdir(), `egressd-test-${tag}-`));
  const children: ChildProcess[] = [];
  t.teardown(() => {
    for (const c of children) c.kill("SIGKILL");
    rmSync(dir, { recursive: true, force: true });
  });
  children.push(
    spawn("ip", ["netns", "exec", s.ns("srv"), process.execPath, "-e", SERVER], { stdio: "ignore" }),
  );
  const daemons = await startPair(s, dir, { front });
  children.push(...daemons.map((d) => d.child));
  for (let i = 0; ; i++) {
    try {
      await Promise.all(daemons.map((d) => d.stats()));
      break;
    } catch (e) {
      if (i >= 50) throw new Error("the pair's conntrackds did not answer in 5 s", { cause: e });
      await sleep(100);
    }
  }
  return { s, dir, daemons };
}

test.serial(
  "trimmed, the sender reads one event a connection, its peer creates each once, reads none of its writes, and forgets connections that ended",
  async (t) => {
    // Paced at 50 ms: each batch holds many connections, so all but a few are merged.
    const { s, dir, daemons } = await pairAsEgressdRunsIt(
      t,
      "trim",
      pacedCommand(EVENT_PACE_LIBRARY, 50_000),
    );
    const config = (node: string) => join(dir, `${node}.conf`);
    const before = [await eventsRead(s, "gw1", config("gw1")), await eventsRead(s, "gw2", config("gw2"))];
    await s.exec(
      "pod",
      [process.execPath, "-e", POD_CLIENT, String(CONNECTIONS), "203.0.113.10", SOURCES[0]!],
      60_000,
    );
    await sleep(1000);
    const read = [
      (await eventsRead(s, "gw1", config("gw1"))) - before[0]!,
      (await eventsRead(s, "gw2", config("gw2"))) - before[1]!,
    ];
    const [held, peer] = [await pairEntries(s, "gw1"), await pairEntries(s, "gw2")];
    const { injected } = await daemons[1]!.stats();
    t.log(
      `${CONNECTIONS} connections: gw1 read ${read[0]} events and holds ${held}; gw2 holds ${peer}, created ${injected.created} and updated ${injected.updated}, and read ${read[1]} events`,
    );
    t.is(held, CONNECTIONS, "gw1 tracks every connection");
    t.is(peer, held, "gw2 holds every state gw1 sent");
    // Unmerged, each connection is two events (new, established); merged, one, except where a batch
    // ended between the two.
    t.true(read[0]! <= 1.5 * CONNECTIONS, `gw1 read ${read[0]} events for ${CONNECTIONS} connections`);
    // Unmerged, FTFW sends the two as one update, which the kernel refuses before conntrackd creates.
    t.true(injected.created >= CONNECTIONS / 2, `gw2 created ${injected.created} of ${CONNECTIONS}`);
    // Its own writes come back as events unless the kernel drops them: one a connection.
    t.true(read[1]! <= CONNECTIONS / 10, `gw2 read ${read[1]} events of its own writes`);

    // gw2 answers a returning peer as egressd has it (reload its cache from the kernel, -R): its
    // cache now holds gw1's connections. They end on gw1 (deleted here); the ends reach gw2 as
    // states it writes, and must take those connections out of its cache too, or its next answer
    // (-B) sends them as alive and gw1 writes an entry for each connection that is gone.
    await s.exec("gw2", ["conntrackd", "-C", config("gw2"), "-R"]);
    const reloaded = (await daemons[1]!.stats()).local;
    const sent = async () =>
      Number(
        /(\d+) Bytes sent/.exec((await s.exec("gw2", ["conntrackd", "-C", config("gw2"), "-s"])).stdout)?.[1],
      );
    const sent0 = await sent();
    await s.exec("gw1", ["conntrack", "-D", "-p", "tcp", "--dport", "9001"]);
    await sleep(1000);
    const stale = (await daemons[1]!.stats()).local;
    // Taken out of the cache without being sent on: gw2 sends acknowledgements only.
    const onward = (await sent()) - sent0;
    await s.exec("gw2", ["conntrackd", "-C", config("gw2"), "-R"]);
    await s.exec("gw2", ["conntrackd", "-C", config("gw2"), "-B"]);
    await sleep(1000);
    const ghosts = await pairEntries(s, "gw1");
    t.log(
      `gw2's cache held ${reloaded} after -R, ${stale} once gw1's connections ended (gw2 sent ${onward} bytes meanwhile); gw1 then got ${ghosts} entries back from gw2's -R, -B`,
    );
    t.true(reloaded >= CONNECTIONS, `gw2's cache after -R: ${reloaded}`);
    t.is(stale, 0, "the connections that ended left gw2's cache");
    // Sent on (as the kernel's), the ends of 200 connections were 18480 bytes; acknowledgements are tens.
    t.true(onward < 2000, `gw2 sent ${onward} bytes: the ends went back out`);
    t.is(ghosts, 0, "no entry for a connection that is gone");
  },
);

test.serial(
  "batched writes: a state the kernel refuses is reported with the running total, since conntrackd counted it as written",
  async (t) => {
    const { s, dir, daemons } = await pairAsEgressdRunsIt(t, "full", pacedCommand());
    // gw2's table full, as a gateway's is when its peer sends more than it can hold: the kernel
    // compares each namespace's count with the machine's nf_conntrack_max (writable only outside
    // namespaces), so gw2 is filled up to it with entries of its own (assured, so that none is
    // dropped early to make room). The other namespaces are not touched.
    const max = Number(readFileSync("/proc/sys/net/netfilter/nf_conntrack_max", "utf8"));
    const have = Number((await s.exec("gw2", ["conntrack", "-C"])).stdout.trim());
    const fill = max - have;
    t.true(fill > 0 && fill <= 2_000_000, `entries to add to gw2's table: ${fill}`);
    const lines: string[] = [];
    for (let i = 0; i < fill; i++)
      lines.push(
        `-I -p udp -s 10.${100 + (i >> 16)}.${(i >> 8) & 255}.${i & 255} -d 10.99.0.1 --sport 5000 --dport 53 -t 600 -u ASSURED`,
      );
    const file = join(dir, "fill");
    writeFileSync(file, lines.join("\n") + "\n");
    await s.exec("gw2", ["conntrack", "-R", file], 120_000);
    const full = Number((await s.exec("gw2", ["conntrack", "-C"])).stdout.trim());
    t.true(full >= max, `gw2's table holds ${full} of ${max}`);

    const count = 50;
    await s.exec(
      "pod",
      [process.execPath, "-e", POD_CLIENT, String(count), "203.0.113.10", SOURCES[0]!],
      60_000,
    );
    await sleep(1000);
    const held = await pairEntries(s, "gw1");
    const { injected } = await daemons[1]!.stats();
    const reports = daemons[1]!
      .stderr()
      .split("\n")
      .map((l) => refusedInAll(l))
      .filter((n): n is number => n !== undefined);
    t.log(
      `gw1 holds ${held}; gw2 (its table full) holds ${await pairEntries(s, "gw2")}, conntrackd counted ${injected.created} created and ${injected.failed} failed, its library reported ${reports.length} refusals, ${reports.at(-1) ?? 0} in all`,
    );
    t.is(held, count, "gw1 tracks every connection");
    t.is(await pairEntries(s, "gw2"), 0, "gw2's full table took none");
    // conntrackd was told each create succeeded: the library's total is the count of what failed.
    t.true(reports.length > 0, "the library reported the refusals");
    t.is(reports.at(-1), injected.created + injected.updated - (await pairEntries(s, "gw2")));
  },
);
