// The BFD state machine and timer rules (RFC 5880 6.2, 6.5, 6.8), driven by a
// hand-moved clock: two sessions joined by an in-memory wire with 1 ms latency.
import test from "ava";
import { ManualClock } from "../../health/bfd/clock.js";
import { BfdDiag, BfdState, type ControlPacket } from "../../health/bfd/packet.js";
import { Scheduler } from "../../health/bfd/scheduler.js";
import { BfdSession, type SessionOptions, type StateChange } from "../../health/bfd/session.js";

interface Sent {
  at: number;
  p: ControlPacket;
}

interface Side {
  s: BfdSession;
  sent: Sent[];
  changes: StateChange[];
  sched: Scheduler;
  /** Drop what this side sends. */
  mute: boolean;
  /** Intercepts what this side receives (return false to drop). */
  filter?: (p: ControlPacket) => boolean;
}

const MS = 1000;
const base = { desiredMinTxUs: 100 * MS, requiredMinRxUs: 100 * MS, detectMult: 3 };

/** Deterministic pseudo-random numbers in [0, 1). */
function lcg(seed = 1): () => number {
  let x = seed;
  return () => (x = (x * 1103515245 + 12345) % 2 ** 31) / 2 ** 31;
}

function pair(a: Partial<SessionOptions> = {}, b: Partial<SessionOptions> = {}, latencyMs = 1) {
  const clock = new ManualClock(0);
  const sides: Side[] = [];
  const mk = (opts: Partial<SessionOptions>, discr: number, idx: number): Side => {
    const side: Side = {
      s: undefined as unknown as BfdSession,
      sent: [],
      changes: [],
      sched: new Scheduler(clock, 0),
      mute: false,
    };
    side.s = new BfdSession(
      { ...base, random: lcg(discr), localDiscriminator: discr, ...opts },
      {
        send: (p) => {
          side.sent.push({ at: clock.now(), p });
          if (side.mute) return;
          clock.setTimer(latencyMs, () => {
            const other = sides[1 - idx]!;
            if (other.filter && !other.filter(p)) return;
            other.s.receive(p, clock.now());
            other.sched.kick(other.s.nextDeadline());
          });
        },
        stateChange: (c) => side.changes.push(c),
      },
      clock.now(),
    );
    side.sched.add({ nextDeadline: () => side.s.nextDeadline(), fire: (n, d) => side.s.advance(n, d) });
    return side;
  };
  sides.push(mk(a, 0x1111, 0), mk(b, 0x2222, 1));
  return { clock, a: sides[0]!, b: sides[1]! };
}

function gaps(sent: Sent[], from = 0, to = Infinity): number[] {
  const xs = sent.filter((x) => x.at >= from && x.at <= to && !x.p.final).map((x) => x.at);
  return xs.slice(1).map((t, i) => t - xs[i]!);
}

test("two sessions come Up through Down -> Init -> Up", (t) => {
  const { clock, a, b } = pair();
  clock.advance(3000);
  t.is(a.s.sessionState, BfdState.Up);
  t.is(b.s.sessionState, BfdState.Up);
  t.deepEqual(
    a.changes.map((c) => [c.from, c.to]),
    [
      [BfdState.Down, BfdState.Init],
      [BfdState.Init, BfdState.Up],
    ],
  );
  // Each side learnt the other's discriminator and echoes it back.
  t.is(a.sent.at(-1)!.p.yourDiscriminator, 0x2222);
  t.is(b.sent.at(-1)!.p.yourDiscriminator, 0x1111);
  t.is(a.s.snapshot().counters.ups, 1);
  t.is(a.s.snapshot().localDiag, BfdDiag.None);
});

test("transmits at one second until Up, then at the configured rate with jitter (6.8.3, 6.8.7)", (t) => {
  const { clock, a, b } = pair();
  b.mute = true; // a hears nothing for a while: it stays Down at the slow rate
  clock.advance(6000);
  t.is(a.s.sessionState, BfdState.Down);
  t.true(a.sent.length >= 6 && a.sent.length <= 9, `${a.sent.length} packets in 6 s`);
  for (const x of a.sent) t.is(x.p.desiredMinTxUs, 1_000_000);
  for (const g of gaps(a.sent)) t.true(g >= 750 && g <= 1001, `slow gap ${g}`);
  b.mute = false;
  clock.advance(2000);
  t.is(a.s.sessionState, BfdState.Up);
  const upAt = a.changes.find((c) => c.to === BfdState.Up)!.at;
  // After Up: intervals within [75%, 100%] of 100 ms (plus the scheduler's whole-millisecond rounding).
  clock.advance(5000);
  const fast = gaps(a.sent, upAt + 500);
  t.true(fast.length > 30);
  for (const g of fast) t.true(g >= 75 && g <= 101, `gap ${g}`);
  const mean = fast.reduce((x, y) => x + y, 0) / fast.length;
  t.true(mean > 80 && mean < 95, `mean gap ${mean}`);
  t.is(a.s.snapshot().desiredMinTxUs, 100 * MS);
});

test("going Up starts a poll sequence; the peer answers with Final at once (6.5)", (t) => {
  const { clock, a, b } = pair();
  clock.advance(3000);
  const polls = a.sent.filter((x) => x.p.poll);
  t.true(polls.length >= 1);
  t.true(polls.every((x) => x.p.desiredMinTxUs === 100 * MS));
  const finals = b.sent.filter((x) => x.p.final);
  t.true(finals.length >= 1);
  t.true(
    finals.every((x) => !x.p.poll),
    "P and F never together",
  );
  // Final follows the poll within the wire latency, not a transmit interval.
  const firstPoll = polls[0]!.at;
  t.true(finals.some((x) => x.at - firstPoll <= 2));
  t.false(a.s.snapshot().pollActive);
  t.true(a.s.snapshot().counters.pollSequences >= 1);
});

test("detection time expires -> Down with diag 1; the remote discriminator is forgotten (6.8.4)", (t) => {
  const { clock, a, b } = pair();
  clock.advance(3000);
  t.is(a.s.snapshot().detectionTimeUs, 300 * MS);
  b.mute = true;
  const lastRx = b.sent.at(-1)!.at + 1; // arrival time
  clock.advance(1000);
  const down = a.changes.at(-1)!;
  t.is(down.to, BfdState.Down);
  t.is(down.localDiag, BfdDiag.ControlDetectionTimeExpired);
  // Exactly one detection time after the last packet (the scheduler wakes on whole milliseconds).
  t.true(down.at - lastRx >= 300 && down.at - lastRx <= 301, `detected after ${down.at - lastRx} ms`);
  t.is(a.s.snapshot().remoteDiscriminator, 0);
  // Back at the slow rate, still sending Down with Your Discriminator 0.
  const last = a.sent.at(-1)!.p;
  t.is(last.state, BfdState.Down);
  t.is(last.yourDiscriminator, 0);
  t.is(last.desiredMinTxUs, 1_000_000);
  t.is(a.s.snapshot().counters.downs, 1);
  t.is(a.s.snapshot().lastDownDiag, BfdDiag.ControlDetectionTimeExpired);
});

test("detection time = remote detect mult x max(local required RX, remote desired TX)", (t) => {
  const { clock, a } = pair({ requiredMinRxUs: 50 * MS }, { desiredMinTxUs: 200 * MS, detectMult: 5 });
  clock.advance(4000);
  t.is(a.s.sessionState, BfdState.Up);
  t.is(a.s.snapshot().detectionTimeUs, 5 * 200 * MS);
  // And b transmits at max(its desired TX, a's required RX).
  const { clock: c2, a: a2, b: b2 } = pair({ requiredMinRxUs: 250 * MS }, {});
  c2.advance(4000);
  t.is(b2.s.txIntervalUs(), 250 * MS);
  t.is(a2.s.snapshot().detectionTimeUs, 3 * 250 * MS);
});

test("the session recovers after the peer comes back", (t) => {
  const { clock, a, b } = pair();
  clock.advance(3000);
  b.mute = true;
  clock.advance(2000);
  t.is(a.s.sessionState, BfdState.Down);
  // a's packets still reach b: b went down on a's Down packet, then on to Init.
  const bDown = b.changes.find((c) => c.from === BfdState.Up)!;
  t.is(bDown.to, BfdState.Down);
  t.is(bDown.localDiag, BfdDiag.NeighborSignaledSessionDown);
  t.is(b.s.sessionState, BfdState.Init);
  b.mute = false;
  clock.advance(4000);
  t.is(a.s.sessionState, BfdState.Up);
  t.is(b.s.sessionState, BfdState.Up);
});

test("peer AdminDown -> Down with diag 3, and stays Down while the peer is AdminDown (6.8.6, 6.8.16)", (t) => {
  const { clock, a, b } = pair();
  clock.advance(3000);
  b.s.adminDown(clock.now());
  // The AdminDown packet goes out at once.
  t.is(b.sent.at(-1)!.p.state, BfdState.AdminDown);
  t.is(b.sent.at(-1)!.p.diag, BfdDiag.AdministrativelyDown);
  t.is(b.sent.at(-1)!.at, clock.now());
  clock.advance(5);
  const down = a.changes.at(-1)!;
  t.is(down.to, BfdState.Down);
  t.is(down.localDiag, BfdDiag.NeighborSignaledSessionDown);
  t.is(down.remoteState, BfdState.AdminDown);
  t.is(down.remoteDiag, BfdDiag.AdministrativelyDown);
  const sentWhenDown = b.sent.length;
  clock.advance(3000);
  t.is(a.s.sessionState, BfdState.Down);
  t.is(b.s.sessionState, BfdState.AdminDown);
  // b kept telling a for about one detection time (3 x 100 ms), then went quiet.
  const tail = b.sent.slice(sentWhenDown - 1).filter((x) => x.p.state === BfdState.AdminDown && !x.p.final);
  t.true(tail.length >= 3 && tail.length <= 5, `AdminDown packets: ${tail.length}`);
  t.false(b.s.adminDownPending());
  const quietFrom = b.sent.length;
  clock.advance(2000);
  t.is(b.sent.length, quietFrom);
  // Re-enabled: both come back Up.
  b.s.enable(clock.now());
  b.sched.kick(b.s.nextDeadline());
  clock.advance(4000);
  t.is(a.s.sessionState, BfdState.Up);
  t.is(b.s.sessionState, BfdState.Up);
});

test("an AdminDown session ignores the peer's state", (t) => {
  const { clock, a, b } = pair({ adminDown: true });
  clock.advance(5000);
  t.is(a.s.sessionState, BfdState.AdminDown);
  t.is(b.s.sessionState, BfdState.Down);
  t.is(a.sent.length, 0, "never heard the peer before going AdminDown: nothing to tell it");
});

test("raising desired TX while Up keeps the old rate until the Final (6.8.3)", (t) => {
  const { clock, a, b } = pair();
  clock.advance(3000);
  let finals = true;
  a.filter = (p) => finals || !p.final;
  finals = false; // hold b's Final back
  a.s.updateTimers({ ...base, desiredMinTxUs: 500 * MS }, clock.now());
  a.sched.kick(a.s.nextDeadline());
  const t0 = clock.now();
  clock.advance(1500);
  t.true(a.s.snapshot().pollActive);
  const during = a.sent.filter((x) => x.at > t0);
  t.true(during.every((x) => x.p.poll && x.p.desiredMinTxUs === 500 * MS));
  for (const g of gaps(a.sent, t0 + 1)) t.true(g <= 101, `gap ${g} while the poll is outstanding`);
  // b already sends slower? No: b's rate depends on a's RX, unchanged. Now let the Final through.
  finals = true;
  clock.advance(500);
  t.false(a.s.snapshot().pollActive);
  t.is(a.s.txIntervalUs(), 500 * MS);
  const t1 = clock.now();
  clock.advance(3000);
  for (const g of gaps(a.sent, t1 + 1)) t.true(g >= 375 && g <= 501, `gap ${g} after the Final`);
  // b's detection of a follows a's new advertised TX: 3 x 500 ms.
  t.is(b.s.snapshot().detectionTimeUs, 3 * 500 * MS);
});

test("lowering required RX while Up keeps the old detection time until the Final (6.8.3)", (t) => {
  const { clock, a } = pair({ requiredMinRxUs: 300 * MS });
  clock.advance(4000);
  t.is(a.s.snapshot().detectionTimeUs, 900 * MS);
  let finals = false;
  a.filter = (p) => finals || !p.final;
  a.s.updateTimers({ ...base, requiredMinRxUs: 50 * MS }, clock.now());
  a.sched.kick(a.s.nextDeadline());
  clock.advance(1000);
  t.is(a.s.snapshot().requiredMinRxUs, 50 * MS, "advertised at once");
  t.is(a.s.snapshot().detectionTimeUs, 900 * MS, "not relied on yet");
  finals = true;
  clock.advance(1000);
  // Now max(50 ms, b's desired TX 100 ms) x 3.
  t.is(a.s.snapshot().detectionTimeUs, 300 * MS);
});

test("a change during a poll waits for it and then starts another", (t) => {
  const { clock, a } = pair();
  clock.advance(3000);
  let finals = false;
  a.filter = (p) => finals || !p.final;
  a.s.updateTimers({ ...base, desiredMinTxUs: 200 * MS }, clock.now());
  a.s.updateTimers({ ...base, desiredMinTxUs: 300 * MS }, clock.now());
  a.sched.kick(a.s.nextDeadline());
  clock.advance(500);
  t.is(a.sent.at(-1)!.p.desiredMinTxUs, 200 * MS, "second change queued");
  const polls = a.s.snapshot().counters.pollSequences;
  finals = true;
  clock.advance(3000);
  t.is(a.s.snapshot().desiredMinTxUs, 300 * MS);
  t.is(a.s.snapshot().counters.pollSequences, polls + 1);
  t.false(a.s.snapshot().pollActive);
});

test("jitter bounds: 0-25% below the interval, 10-25% when detect mult is 1 (6.8.7)", (t) => {
  for (const [mult, lo, hi] of [
    [3, 75, 100],
    [1, 75, 90],
  ] as const) {
    const { clock, a } = pair({ detectMult: mult, random: lcg(7) }, { detectMult: mult });
    clock.advance(10_000);
    t.is(a.s.sessionState, BfdState.Up);
    const g = gaps(a.sent, 3000);
    t.true(g.length > 50);
    t.true(Math.min(...g) >= lo, `mult ${mult}: min ${Math.min(...g)}`);
    t.true(Math.max(...g) <= hi + 1, `mult ${mult}: max ${Math.max(...g)}`);
  }
});

test("passive role: silent until the peer speaks", (t) => {
  const { clock, a, b } = pair({ passive: true }, { passive: true });
  clock.advance(5000);
  t.is(a.sent.length + b.sent.length, 0);
});

test("a peer asking for Required Min RX 0 gets no periodic packets", (t) => {
  const { clock, a, b } = pair();
  clock.advance(3000);
  const n = a.sent.length;
  a.s.receive({ ...b.sent.at(-1)!.p, poll: false, final: false, requiredMinRxUs: 0 }, clock.now());
  a.sched.kick(a.s.nextDeadline());
  b.mute = true;
  clock.advance(250);
  t.is(a.sent.length, n);
  t.is(a.s.snapshot().txIntervalUs, 0);
});

test("a Poll is answered even between periodic packets, with F set and P clear", (t) => {
  const { clock, a, b } = pair();
  clock.advance(3000);
  const before = a.sent.length;
  a.s.receive({ ...b.sent.at(-1)!.p, poll: true, final: false }, clock.now());
  const reply = a.sent.at(-1)!;
  t.is(a.sent.length, before + 1);
  t.true(reply.p.final);
  t.false(reply.p.poll);
  t.is(reply.at, clock.now());
});

test("rejects bad timer values", (t) => {
  const hooks = { send: () => {}, stateChange: () => {} };
  t.throws(() => new BfdSession({ ...base, localDiscriminator: 0 }, hooks, 0));
  t.throws(() => new BfdSession({ ...base, detectMult: 0, localDiscriminator: 1 }, hooks, 0));
  t.throws(() => new BfdSession({ ...base, desiredMinTxUs: 0, localDiscriminator: 1 }, hooks, 0));
});

test("receive slack: how close the gaps between packets came to the detection time, since Up", (t) => {
  const { clock, a, b } = pair();
  clock.advance(3000);
  const steady = a.s.snapshot().rxSlackMinUs!;
  // b sends every 75-100 ms against a 300 ms detection time.
  t.true(steady >= 195 * MS && steady <= 230 * MS, `steady slack ${steady} us`);
  // b falls silent for 120 ms: the gap around it comes closer to the detection time.
  const from = clock.now();
  b.mute = true;
  clock.advance(120);
  b.mute = false;
  const to = clock.now();
  clock.advance(500);
  t.is(a.s.sessionState, BfdState.Up);
  const arrivals = b.sent.filter((x) => x.at < from || x.at >= to).map((x) => x.at + 1);
  const around = arrivals.filter((x) => x > from - 200 && x < to + 200);
  const widest = Math.max(...around.slice(1).map((x, i) => x - around[i]!));
  const close = a.s.snapshot().rxSlackMinUs!;
  t.is(close, (300 - widest) * MS, `widest gap ${widest} ms`);
  t.true(close < steady && close > 0);
  // A new Up starts afresh.
  b.mute = true;
  clock.advance(1000);
  t.is(a.s.sessionState, BfdState.Down);
  b.mute = false;
  clock.advance(4000);
  t.is(a.s.sessionState, BfdState.Up);
  t.true(a.s.snapshot().rxSlackMinUs! >= 195 * MS);
});

test("transmit lateness: how far after its time a periodic packet left, since Up", (t) => {
  const { clock, a } = pair();
  clock.advance(3000);
  // The scheduler wakes on whole milliseconds: under one late.
  t.true(a.s.snapshot().txLateMaxUs < 1 * MS, `${a.s.snapshot().txLateMaxUs} us`);
  // The thread wakes 40 ms after the packet was due.
  const due = a.s.nextDeadline();
  a.s.advance(due + 40, due + 40);
  t.is(a.s.snapshot().txLateMaxUs, 40 * MS);
});
