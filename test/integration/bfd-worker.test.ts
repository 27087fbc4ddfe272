// BFD in its own worker thread keeps its sessions Up while the main thread is
// busy: egressd's side (test/fixtures/bfd-peer.js in the gw namespace) blocks
// its main thread for a second, three times, against a peer at 100 ms x 3.
// The same load with the sessions on the main thread takes them down at the
// peer: that is what the worker is for, and it shows this test can fail.
//
//   tor  10.0.0.1 (bfd-peer.js, main thread, never blocked)  <--veth-->  10.0.0.2  gw (bfd-peer.js, busy)
import test from "ava";
import { sleep } from "../../lib/wait.js";
import { buildTopology } from "../helpers/bgp-lab.js";
import { BfdSpeaker, fastSession, type SpeakerEvent } from "../helpers/bfd-speaker.js";
import { sandbox } from "../helpers/netns.js";

const canRun = process.getuid?.() === 0;
const serial = canRun ? test.serial : test.serial.skip;

const GW = { ours: "10.0.0.2", tor: "10.0.0.1" };
const TOR = { ours: "10.0.0.1", tor: "10.0.0.2" };

async function busyGateway(t: Parameters<typeof sandbox>[0], thread: "main" | "worker") {
  const sb = sandbox(t, "bw");
  await buildTopology(sb);
  const tor = new BfdSpeaker(sb.ns("tor"), { sessions: [fastSession(TOR)] });
  const gw = new BfdSpeaker(sb.ns("gw"), { sessions: [fastSession(GW)], thread, blockMs: 1000 });
  t.teardown(async () => {
    await gw.kill();
    await tor.kill();
  });
  await tor.waitEvent((e) => e.event === "up", 10_000, "tor: Up");
  await gw.waitEvent((e) => e.event === "up", 10_000, "gw: Up");
  for (let i = 0; i < 3; i++) {
    const n = gw.events.filter((e) => e.event === "unblocked").length;
    gw.signal("SIGUSR2");
    await gw.waitEvent(
      () => gw.events.filter((e) => e.event === "unblocked").length > n,
      10_000,
      "unblocked",
    );
    await sleep(500);
  }
  await sleep(500);
  const downs = (s: BfdSpeaker) => s.events.filter((e: SpeakerEvent) => e.event === "down");
  return { tor, gw, torDowns: downs(tor), gwDowns: downs(gw) };
}

serial("sessions in the worker stay Up through three one-second stalls of the main thread", async (t) => {
  const { gw, torDowns, gwDowns } = await busyGateway(t, "worker");
  t.deepEqual(torDowns, [], "the peer never lost us");
  t.deepEqual(gwDowns, [], "we never lost the peer");
  gw.signal("SIGUSR1");
  const snap = (await gw.waitEvent((e) => e.event === "sessions", 5000, "sessions")) as SpeakerEvent & {
    sessions: { stateName: string; rxSlackMinUs: number | null }[];
  };
  t.is(snap.sessions[0]?.stateName, "Up");
  const slack = snap.sessions[0]?.rxSlackMinUs ?? 0;
  t.log(`least receive slack through the stalls: ${(slack / 1000).toFixed(1)} ms of 300`);
  t.true(slack > 0);
});

serial("the same stalls with the sessions on the main thread take them down at the peer", async (t) => {
  const { torDowns } = await busyGateway(t, "main");
  t.true(torDowns.length > 0, "the peer saw us go silent");
  t.is(torDowns[0]?.reason, "control detection time expired");
});
