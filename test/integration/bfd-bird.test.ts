// egressd's BFD with RFC 5880 SHA1 authentication against a real BFD daemon.
// Debian 12's FRR 8.4 bfdd has no authentication at all, so the peer here is
// BIRD 2's BFD (Debian's bird2), which implements Keyed and Meticulous Keyed
// SHA1 as the RFC describes:
//
//   tor (BIRD, bfd protocol)  10.0.0.1 tor0  <--veth-->  gw0 10.0.0.2  gw (test/fixtures/bfd-peer.js)
//
// The tests run in order on one lab: authenticated sessions come up; a forged
// Down from the link, with the right discriminators, TTL 255 and no valid
// digest, changes nothing; a wrong key never comes up.
import test from "ava";
import { chmodSync, existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { waitFor } from "../../containerlab/runner.js";
import { run, spawnDetached } from "../../lib/exec.js";
import { RUN_ID, Sandbox } from "../helpers/netns.js";
import { BfdSpeaker, fastSession } from "../helpers/bfd-speaker.js";
import { buildTopology } from "../helpers/bgp-lab.js";
import { forgeBfdDown } from "../helpers/bfd-packets.js";

const BIRD = "/usr/sbin/bird";
const BIRDC = "/usr/sbin/birdc";
const KEY = { type: "meticulous-keyed-sha1" as const, keyId: 7, secret: "s3cret-bfd" };
const canRun = process.getuid?.() === 0 && existsSync(BIRD);
const serial = canRun ? test.serial : test.serial.skip;

const lab = {
  sandbox: new Sandbox(`${RUN_ID}bird`),
  dir: "",
  birdPid: 0,
  speaker: undefined as BfdSpeaker | undefined,
};

function birdConf(secret: string, type = "meticulous keyed sha1"): string {
  return `router id 10.0.0.1;
protocol device {}
protocol bfd tor {
  interface "tor0" {
    min rx interval 100 ms;
    min tx interval 100 ms;
    idle tx interval 1000 ms;
    multiplier 3;
    authentication ${type};
    password "${secret}" { id ${KEY.keyId}; };
  };
  neighbor 10.0.0.2 local 10.0.0.1;
}
`;
}

async function birdState(): Promise<string> {
  const r = await run([
    "ip",
    "netns",
    "exec",
    lab.sandbox.ns("tor"),
    BIRDC,
    "-s",
    join(lab.dir, "bird.ctl"),
    "show bfd sessions",
  ]);
  return /^10\.0\.0\.2\s+\S+\s+(\w+)/m.exec(r.stdout)?.[1] ?? `? ${r.stdout}`;
}

function startSpeaker(
  secret: string,
  opts: { type?: "keyed-sha1" | "meticulous-keyed-sha1"; transport?: "udp" | "helper" } = {},
): void {
  const auth = { ...KEY, secret, type: opts.type ?? KEY.type };
  const session = { ...fastSession({ tor: "10.0.0.1", ours: "10.0.0.2" }), auth };
  lab.speaker = new BfdSpeaker(lab.sandbox.ns("gw"), {
    sessions: [session],
    ...(opts.transport ? { transport: opts.transport } : {}),
  });
}

/** Starts BIRD again with a new configuration (a reconfiguration keeps a session's authentication). */
async function restartBird(conf: string): Promise<void> {
  stopBird();
  const ctl = join(lab.dir, "bird.ctl");
  rmSync(ctl, { force: true });
  writeFileSync(join(lab.dir, "bird.conf"), conf);
  lab.birdPid = spawnDetached([BIRD, "-f", "-c", join(lab.dir, "bird.conf"), "-s", ctl], {
    netns: lab.sandbox.ns("tor"),
  });
  await waitFor("BIRD control socket", () => existsSync(ctl), 10_000);
}

function stopBird(): void {
  if (!lab.birdPid) return;
  try {
    process.kill(lab.birdPid, "SIGKILL");
  } catch {
    /* gone */
  }
  lab.birdPid = 0;
}

const events = () => lab.speaker?.events ?? [];

async function stopSpeaker(): Promise<void> {
  await lab.speaker?.kill();
}

test.before(async () => {
  if (!canRun) return;
  const sb = lab.sandbox;
  await buildTopology(sb); // tor 10.0.0.1 on tor0 <-> gw 10.0.0.2 on gw0
  lab.dir = mkdtempSync(join(tmpdir(), "egressd-bird-"));
  chmodSync(lab.dir, 0o755);
  writeFileSync(join(lab.dir, "bird.conf"), birdConf(KEY.secret));
  lab.birdPid = spawnDetached(
    [BIRD, "-f", "-c", join(lab.dir, "bird.conf"), "-s", join(lab.dir, "bird.ctl")],
    {
      netns: sb.ns("tor"),
    },
  );
  await waitFor("BIRD control socket", () => existsSync(join(lab.dir, "bird.ctl")), 10_000);
});

test.after.always(async () => {
  await stopSpeaker();
  stopBird();
  await lab.sandbox.cleanup();
  if (lab.dir) rmSync(lab.dir, { recursive: true, force: true });
});

serial("an authenticated session (meticulous keyed SHA1) comes Up on both sides", async (t) => {
  startSpeaker(KEY.secret);
  await waitFor("BIRD: Up", async () => (await birdState()) === "Up", 15_000);
  await waitFor("egressd: Up", () => events().some((e) => e.event === "up"), 5000);
  t.is(await birdState(), "Up");
});

serial(
  "a forged Down from the link (right discriminators, TTL 255, no valid digest) changes nothing",
  async (t) => {
    const sp = events().find((e) => e.event === "ready") as unknown as
      | { sessions: { peer: string }[] }
      | undefined;
    t.truthy(sp);
    // The discriminators BIRD and egressd use, from egressd's own snapshot.
    lab.speaker!.signal("SIGUSR1");
    await waitFor("snapshot", () => events().some((e) => e.event === "sessions"), 5000);
    const snap = events().find((e) => e.event === "sessions") as unknown as {
      sessions: { localDiscriminator: number; remoteDiscriminator: number }[];
    };
    const { localDiscriminator: ours, remoteDiscriminator: theirs } = snap.sessions[0]!;
    t.true(ours > 0 && theirs > 0);
    // A Down that BIRD sends because its own detection time ran out (diagnostic 1) is the
    // machine's load, not the forgery (whose diagnostic is 0): once, on a busy fresh machine,
    // the session timed out at 100 ms x 3 in these 500 ms. Then the attempt is made again;
    // any other Down fails the test.
    for (let attempt = 1; ; attempt++) {
      const t0 = Date.now();
      for (const signed of [false, true]) {
        // Unsigned, then signed with a wrong key: both from the ToR's address, as an attacker on the link would.
        await forgeBfdDown(lab.sandbox.ns("tor"), {
          from: "10.0.0.1",
          to: "10.0.0.2",
          ttl: 255,
          myDiscriminator: theirs,
          yourDiscriminator: ours,
          ...(signed ? { auth: { ...KEY, secret: "guess" } } : {}),
        });
      }
      await new Promise((r) => setTimeout(r, 500));
      const downs = events().filter((e) => e.event === "down" && e.wall >= t0);
      const timedOut = downs.length > 0 && downs.every((e) => e.remoteDiag === 1);
      if (!timedOut || attempt === 3) {
        t.deepEqual(downs, [], "the session stayed Up");
        break;
      }
      t.log(`attempt ${attempt}: BIRD's own detection time ran out (load); again once it is Up`);
      await waitFor("BIRD: Up again", async () => (await birdState()) === "Up", 15_000);
      await waitFor("egressd: Up again", () => events().some((e) => e.event === "up" && e.wall >= t0), 5000);
    }
    t.is(await birdState(), "Up");
  },
);

serial("a wrong key never comes up", async (t) => {
  await stopSpeaker();
  await waitFor("BIRD notices the speaker is gone", async () => (await birdState()) !== "Up", 5000);
  startSpeaker("not-the-key");
  await new Promise((r) => setTimeout(r, 3000));
  t.false(
    events().some((e) => e.event === "up"),
    "egressd never believes BIRD",
  );
  t.not(await birdState(), "Up", "and BIRD never believes egressd");
  await stopSpeaker();
});

// With egressd-bfd (health/bfd/offload.ts) as the daemon runs it: a meticulous
// session signs every packet, so it sends from egressd through the helper's
// sockets; a keyed one is signed once per change and repeated by the helper.
serial("meticulous keyed SHA1 through egressd-bfd: Up on both sides", async (t) => {
  await stopSpeaker();
  await waitFor("BIRD notices the speaker is gone", async () => (await birdState()) !== "Up", 5000);
  startSpeaker(KEY.secret, { transport: "helper" });
  await waitFor("BIRD: Up", async () => (await birdState()) === "Up", 15_000);
  await waitFor("egressd: Up", () => events().some((e) => e.event === "up"), 5000);
  await new Promise((r) => setTimeout(r, 2000));
  t.is(await birdState(), "Up");
  t.false(events().some((e) => e.event === "down"));
  await stopSpeaker();
});

serial(
  "keyed SHA1 through egressd-bfd: the helper repeats the signed packet, BIRD keeps it Up",
  async (t) => {
    await restartBird(birdConf(KEY.secret, "keyed sha1"));
    startSpeaker(KEY.secret, { type: "keyed-sha1", transport: "helper" });
    await waitFor("BIRD: Up", async () => (await birdState()) === "Up", 15_000);
    await waitFor("egressd: Up", () => events().some((e) => e.event === "up"), 5000);
    await new Promise((r) => setTimeout(r, 3000));
    t.is(await birdState(), "Up", "BIRD accepts the repeated sequence number of keyed SHA1");
    t.false(events().some((e) => e.event === "down"));
    lab.speaker!.signal("SIGUSR1");
    await waitFor("snapshot", () => events().some((e) => e.event === "sessions"), 5000);
    const snap = events().find((e) => e.event === "sessions") as unknown as {
      sessions: { counters: { rxPackets: number; txPackets: number } }[];
      stats: { rxHandled: number };
    };
    const c = snap.sessions[0]!.counters;
    t.log(`received ${c.rxPackets}, sent ${c.txPackets}, read by egressd ${snap.stats.rxHandled}`);
    t.true(c.txPackets > 20);
    await stopSpeaker();
  },
);
