// An offloaded BFD session (SessionOptions.offloaded): it keeps no periodic
// timer and no detection timer of its own, describes its periodic packet with
// periodic(), and is told of silence with expire(). Here its periodic half is
// played by the test, by hand, against a session that is not offloaded; the
// real one (egressd-bfd) is tested against FRR in bfd-frr-helper.test.ts.
import test from "ava";
import { BfdDiag, BfdState, type ControlPacket } from "../../health/bfd/packet.js";
import { BfdSession, type PeriodicTx, type SessionOptions } from "../../health/bfd/session.js";

const MS = 1000;
const base = { desiredMinTxUs: 100 * MS, requiredMinRxUs: 100 * MS, detectMult: 3 };

function make(opts: Partial<SessionOptions>, discr: number) {
  const sent: ControlPacket[] = [];
  const s = new BfdSession(
    { ...base, random: () => 0.5, localDiscriminator: discr, ...opts },
    { send: (p) => sent.push(p), stateChange: () => {} },
    0,
  );
  return { s, sent };
}

/** Two sessions, `off` offloaded, brought Up by delivering their packets by hand. */
function upPair() {
  const off = make({ offloaded: true }, 0x1111);
  const peer = make({}, 0x2222);
  let now = 0;
  const deliver = (to: BfdSession, p: ControlPacket) => to.receive(p, now);
  for (let i = 0; i < 20 && off.s.sessionState !== BfdState.Up; i++) {
    now += 10;
    const per = off.s.periodic();
    if (per) deliver(peer.s, per.packet);
    for (const p of peer.sent.splice(0)) deliver(off.s, p);
    for (const p of off.sent.splice(0)) deliver(peer.s, p);
    peer.s.advance(now);
    for (const p of peer.sent.splice(0)) deliver(off.s, p);
  }
  return { off, peer, now: () => now };
}

test("offloaded: no timers of its own; the periodic packet and interval are described instead", (t) => {
  const { s, sent } = make({ offloaded: true }, 0x1111);
  t.is(s.nextDeadline(), Infinity, "neither the periodic packet nor detection is timed here");
  const per = s.periodic()!;
  t.is(per.packet.state, BfdState.Down);
  t.is(per.intervalUs, 1_000_000, "the slow rate before Up (RFC 5880 6.8.3)");
  t.false(per.mult1);
  s.advance(5000);
  t.deepEqual(sent, [], "advance() sends nothing periodic");
});

test("offloaded: comes Up; the schedule starts again on each change of state, not on each packet", (t) => {
  const { off, now } = upPair();
  t.is(off.s.sessionState, BfdState.Up);
  const per = off.s.periodic()!;
  t.is(per.packet.state, BfdState.Up);
  t.is(per.packet.yourDiscriminator, 0x2222);
  const epoch = per.epoch;
  // The peer's steady packets change nothing the periodic half must hear of.
  const steady: ControlPacket = { ...off.s.periodic()!.packet, state: BfdState.Up };
  off.s.receive({ ...steady, myDiscriminator: 0x2222, yourDiscriminator: 0x1111 }, now() + 50);
  const again: PeriodicTx = off.s.periodic()!;
  t.is(again.epoch, epoch);
  t.deepEqual(again.packet, per.packet);
});

test("offloaded: expire() is the detection time running out (diag 1, discriminator forgotten)", (t) => {
  const { off, now } = upPair();
  off.sent.length = 0;
  const before = off.s.periodic()!.epoch;
  off.s.expire(now() + 400);
  const snap = off.s.snapshot();
  t.is(snap.state, BfdState.Down);
  t.is(snap.localDiag, BfdDiag.ControlDetectionTimeExpired);
  t.is(snap.remoteDiscriminator, 0);
  t.is(off.sent.at(-1)?.state, BfdState.Down, "the Down goes out at once");
  const per = off.s.periodic()!;
  t.is(per.packet.state, BfdState.Down);
  t.is(per.packet.yourDiscriminator, 0);
  t.is(per.intervalUs, 1_000_000, "back to the slow rate");
  t.not(per.epoch, before);
});

test("offloaded: AdminDown is sent for a detection time, timed here, then the periodic packet stops", (t) => {
  const { off, now } = upPair();
  const at = now() + 10;
  off.s.adminDown(at);
  t.is(off.s.periodic()?.packet.state, BfdState.AdminDown);
  const until = off.s.nextDeadline();
  t.true(until > at && until <= at + 300 + 1, `the AdminDown tail ends at ${until}`);
  t.true(off.s.adminDownPending());
  off.s.advance(until);
  t.is(off.s.periodic(), null);
  t.false(off.s.adminDownPending());
  t.is(off.s.nextDeadline(), Infinity);
});

test("offloaded: what the periodic half did adds to the counters; slack and lateness count while Up", (t) => {
  const { off } = upPair();
  const c0 = off.s.snapshot().counters;
  off.s.addOffloaded({
    rxPackets: 10,
    txPackets: 11,
    lastRxAt: 5000,
    lastTxAt: 5001,
    rxSlackMinUs: 210_000,
    txLateMaxUs: 800,
  });
  let snap = off.s.snapshot();
  t.is(snap.counters.rxPackets, c0.rxPackets + 10);
  t.is(snap.counters.txPackets, c0.txPackets + 11);
  t.is(snap.lastRxAt, 5000);
  t.is(snap.lastTxAt, 5001);
  t.is(snap.rxSlackMinUs, 210_000);
  t.is(snap.txLateMaxUs, 800);
  off.s.expire(6000);
  off.s.addOffloaded({
    rxPackets: 1,
    txPackets: 1,
    lastRxAt: 5900,
    lastTxAt: 6000,
    rxSlackMinUs: 1,
    txLateMaxUs: 99_000,
  });
  snap = off.s.snapshot();
  t.is(snap.rxSlackMinUs, 210_000, "not Up: the figures of a session going down are not its health");
  t.is(snap.txLateMaxUs, 800);
  t.is(snap.lastRxAt, 5900);
});

test("offloaded: a Poll is answered here at once with a Final, as it is not periodic", (t) => {
  const { off, now } = upPair();
  off.sent.length = 0;
  const p = { ...off.s.periodic()!.packet, myDiscriminator: 0x2222, yourDiscriminator: 0x1111, poll: true };
  off.s.receive(p, now() + 1);
  t.is(off.sent.length, 1);
  t.true(off.sent[0]!.final);
  t.false(off.s.periodic()!.packet.final, "the periodic packet never carries F");
});
