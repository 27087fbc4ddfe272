// BfdManager over an in-memory network and a hand-moved clock: sessions,
// events, demultiplexing, graceful removal, reconcile, and the single timer.
import test from "ava";
import { ManualClock, type Clock } from "../../health/bfd/clock.js";
import {
  BfdManager,
  type BfdDownEvent,
  type BfdStateEvent,
  type BfdUpEvent,
} from "../../health/bfd/manager.js";
import { BfdState, encodeControl, BfdDiag } from "../../health/bfd/packet.js";
import type { BfdTransport, PacketHandler, TxChannel } from "../../health/bfd/transport.js";
import { controlPacket } from "../helpers/bfd-packets.js";

/** Delivers datagrams between "addresses" after a fixed latency, on the manual clock. */
class MemoryNet {
  readonly listeners = new Map<string, PacketHandler>();
  /** Addresses whose outgoing packets are dropped. */
  readonly cut = new Set<string>();
  private nextPort = 49152;

  constructor(
    readonly clock: ManualClock,
    readonly latencyMs = 1,
  ) {}

  deliver(from: string, fromPort: number, to: string, msg: Buffer): void {
    if (this.cut.has(from)) return;
    this.clock.setTimer(this.latencyMs, () => this.listeners.get(to)?.(msg, from, fromPort));
  }

  transport(): BfdTransport {
    const stats = { txErrors: 0, rxErrors: 0 };
    return {
      stats,
      listen: async (local, onPacket) => {
        if (this.listeners.has(local)) throw new Error(`EADDRINUSE ${local}`);
        this.listeners.set(local, onPacket);
        return { close: () => this.listeners.delete(local) };
      },
      connect: async (local, peer): Promise<TxChannel> => {
        const port = this.nextPort++;
        let open = true;
        return {
          localPort: port,
          send: (b) => open && this.deliver(local, port, peer, b),
          close: () => (open = false),
        };
      },
    };
  }
}

/** A clock that counts the timers a scheduler holds at once. */
class CountingClock implements Clock {
  live = new Set<unknown>();
  maxLive = 0;
  constructor(private readonly inner: ManualClock) {}
  now() {
    return this.inner.now();
  }
  setTimer(ms: number, fn: () => void) {
    const h: unknown = this.inner.setTimer(ms, () => {
      this.live.delete(h);
      fn();
    });
    this.live.add(h);
    this.maxLive = Math.max(this.maxLive, this.live.size);
    return h;
  }
  clearTimer(h: unknown) {
    this.live.delete(h);
    this.inner.clearTimer(h);
  }
}

function recorder(m: BfdManager) {
  const ev = { up: [] as BfdUpEvent[], down: [] as BfdDownEvent[], state: [] as BfdStateEvent[] };
  m.on("up", (e) => ev.up.push(e));
  m.on("down", (e) => ev.down.push(e));
  m.on("state", (e) => ev.state.push(e));
  return ev;
}

const timers = { desiredMinTxMs: 100, requiredMinRxMs: 100, detectMultiplier: 3 };

/** Advances the manual clock, letting promise callbacks run between steps. */
async function run(clock: ManualClock, ms: number, step = 50): Promise<void> {
  for (let t = 0; t < ms; t += step) {
    clock.advance(Math.min(step, ms - t));
    await Promise.resolve();
  }
}

/** stop() waits for AdminDown packets on the manager's clock: keep the clock moving meanwhile. */
async function stopAll(clock: ManualClock, ...ms: BfdManager[]): Promise<void> {
  let done = false;
  const p = Promise.all(ms.map((m) => m.stop())).then(() => (done = true));
  for (let i = 0; i < 100 && !done; i++) await run(clock, 50, 10);
  await p;
}

async function setup(n = 1) {
  const clock = new ManualClock(1000);
  const net = new MemoryNet(clock);
  const gwClock = new CountingClock(clock);
  const gw = new BfdManager({ transport: net.transport(), clock: gwClock, random: () => 0.5 });
  const tor = new BfdManager({ transport: net.transport(), clock, random: () => 0.5 });
  for (let i = 1; i <= n; i++) {
    await gw.add({ peer: `10.0.${i}.1`, local: `10.0.${i}.2`, name: `tor${i}`, ...timers });
    await tor.add({ peer: `10.0.${i}.2`, local: `10.0.${i}.1`, ...timers });
  }
  return { clock, net, gw, tor, gwClock, gwEv: recorder(gw), torEv: recorder(tor) };
}

test("sessions come up and emit up events; snapshots carry state and counters", async (t) => {
  const { clock, gw, tor, gwEv, torEv } = await setup(3);
  await run(clock, 3000);
  t.is(gwEv.up.length, 3);
  t.is(torEv.up.length, 3);
  t.deepEqual(gwEv.up.map((e) => e.name).sort(), ["tor1", "tor2", "tor3"]);
  const info = gw.get("10.0.2.1")!;
  t.is(info.stateName, "Up");
  t.is(info.state, BfdState.Up);
  t.is(info.local, "10.0.2.2");
  t.is(info.name, "tor2");
  t.is(info.txIntervalUs, 100_000);
  t.is(info.detectionTimeUs, 300_000);
  t.true(info.counters.rxPackets > 10);
  t.true(info.counters.txPackets > 10);
  t.is(info.counters.transitions, 2);
  t.is(gw.list().length, 3);
  t.deepEqual(
    gwEv.state.filter((e) => e.peer === "10.0.1.1").map((e) => `${e.from}->${e.to}`),
    ["Down->Init", "Init->Up"],
  );
  await stopAll(clock, gw, tor);
});

test("one scheduler timer for all sessions", async (t) => {
  const { clock, gw, tor, gwClock } = await setup(20);
  await run(clock, 5000, 7);
  t.is(gw.list().filter((s) => s.state === BfdState.Up).length, 20);
  t.true(gwClock.maxLive <= 1, `timers held at once: ${gwClock.maxLive}`);
  // 20 sessions at ~87.5 ms for ~4.5 s: about 1000 packets, and no more wake-ups than packets.
  const tx = gw.list().reduce((n, s) => n + s.counters.txPackets, 0);
  t.true(gw.stats.wakeups <= tx + 20, `wakeups ${gw.stats.wakeups}, packets ${tx}`);
  await stopAll(clock, gw, tor);
});

test("silence from the ToR -> down event with 'control detection time expired'", async (t) => {
  const { clock, net, gw, tor, gwEv } = await setup(1);
  await run(clock, 3000);
  net.cut.add("10.0.1.1");
  const cutAt = clock.now();
  await run(clock, 1000, 5);
  t.is(gwEv.down.length, 1);
  const d = gwEv.down[0]!;
  t.is(d.reason, "control detection time expired");
  t.is(d.diag, BfdDiag.ControlDetectionTimeExpired);
  t.is(d.peer, "10.0.1.1");
  t.is(d.name, "tor1");
  t.false(d.peerAdminDown);
  t.true(d.at - cutAt <= 301 && d.at - cutAt >= 200, `detected ${d.at - cutAt} ms after the cut`);
  await stopAll(clock, gw, tor);
});

test("graceful remove: the peer hears AdminDown at once", async (t) => {
  const { clock, gw, tor, gwEv, torEv } = await setup(1);
  await run(clock, 3000);
  const removing = gw.remove("10.0.1.1");
  const t0 = clock.now();
  await run(clock, 1000, 5);
  await removing;
  t.is(gw.list().length, 0);
  t.is(gwEv.down.length, 1);
  t.is(gwEv.down[0]!.to, "AdminDown");
  t.is(gwEv.down[0]!.reason, "administratively down");
  t.is(torEv.down.length, 1);
  const d = torEv.down[0]!;
  t.is(d.reason, "neighbor signaled session down");
  t.is(d.remoteReason, "administratively down");
  t.true(d.peerAdminDown);
  t.true(d.at - t0 <= 2, `peer down after ${d.at - t0} ms`);
  await stopAll(clock, tor);
});

test("stop() waits for the AdminDown packets and closes the receive socket", async (t) => {
  const { clock, net, gw, tor } = await setup(2);
  await run(clock, 3000);
  let stopped = false;
  const p = gw.stop().then(() => (stopped = true));
  await run(clock, 1000, 5);
  await p;
  t.true(stopped);
  t.false(net.listeners.has("10.0.1.2"));
  t.true(net.listeners.has("10.0.1.1"));
  await t.throwsAsync(gw.add({ peer: "10.0.9.1", local: "10.0.9.2" }));
  await stopAll(clock, tor);
});

test("demultiplexing: bad, unknown and authenticated packets are counted and dropped", async (t) => {
  const { clock, net, gw, tor } = await setup(1);
  await run(clock, 3000);
  const deliver = net.listeners.get("10.0.1.2")!;
  const good = controlPacket({
    myDiscriminator: 99,
    yourDiscriminator: gw.get("10.0.1.1")!.localDiscriminator,
    requiredMinRxUs: 100_000,
  });
  deliver(Buffer.from([0x40, 0, 0, 24]), "10.0.1.1", 50000);
  t.is(gw.stats.rxInvalid, 1);
  deliver(encodeControl({ ...good, yourDiscriminator: 12345 }), "10.0.1.1", 50000);
  t.is(gw.stats.rxNoSession, 1);
  // Right discriminator, wrong source address (single hop ties the session to its peer).
  deliver(encodeControl(good), "10.0.1.99", 50000);
  t.is(gw.stats.rxNoSession, 2);
  deliver(encodeControl({ ...good, state: BfdState.Down, yourDiscriminator: 0 }), "10.0.7.7", 50000);
  t.is(gw.stats.rxNoSession, 3);
  deliver(
    encodeControl({ ...good, authPresent: true, auth: { type: 1, data: Buffer.from([1, 0, 0, 0]) } }),
    "10.0.1.1",
    1,
  );
  t.is(gw.stats.rxAuth, 1);
  t.is(gw.get("10.0.1.1")!.rxDiscarded, 1);
  t.is(gw.get("10.0.1.1")!.stateName, "Up");
  await stopAll(clock, gw, tor);
});

test("update changes timers in place with a poll sequence; reconcile adds and removes", async (t) => {
  const { clock, gw, tor, gwEv } = await setup(2);
  await run(clock, 3000);
  await gw.update({ peer: "10.0.1.1", local: "10.0.1.2", name: "tor1", ...timers, desiredMinTxMs: 250 });
  await run(clock, 1000);
  t.is(gw.get("10.0.1.1")!.txIntervalUs, 250_000);
  t.is(tor.get("10.0.1.2")!.detectionTimeUs, 750_000);
  t.is(gwEv.down.length, 0, "no flap");
  const r = gw.reconcile([
    { peer: "10.0.1.1", local: "10.0.1.2", name: "tor1", ...timers, desiredMinTxMs: 250 },
    { peer: "10.0.3.1", local: "10.0.3.2", ...timers },
  ]);
  await tor.add({ peer: "10.0.3.2", local: "10.0.3.1", ...timers });
  await run(clock, 3000);
  await r;
  t.deepEqual(
    gw
      .list()
      .map((s) => `${s.peer} ${s.stateName}`)
      .sort(),
    ["10.0.1.1 Up", "10.0.3.1 Up"],
  );
  await t.throwsAsync(gw.add({ peer: "10.0.1.1", local: "10.0.1.2" }), { message: /exists/ });
  await t.throwsAsync(gw.add({ peer: "nope", local: "10.0.1.2" }), { message: /not an IP address/ });
  await t.throwsAsync(gw.add({ peer: "10.0.5.1", local: "10.0.5.2", detectMultiplier: 0 }), {
    message: /detect multiplier/,
  });
  await stopAll(clock, gw, tor);
});

test("IPv6 addresses are normalised for matching", async (t) => {
  const clock = new ManualClock(0);
  const net = new MemoryNet(clock);
  const gw = new BfdManager({ transport: net.transport(), clock });
  const tor = new BfdManager({ transport: net.transport(), clock });
  await gw.add({ peer: "FD00:0:0::1", local: "fd00::0002", ...timers });
  await tor.add({ peer: "fd00::2", local: "fd00::1", ...timers });
  await run(clock, 3000);
  t.is(gw.get("fd00::1")!.stateName, "Up");
  await stopAll(clock, gw, tor);
});

test("a forged Down with Your Discriminator 0 and a foreign My Discriminator does not take the session down", async (t) => {
  const { clock, net, gw, tor, gwEv } = await setup(1);
  await run(clock, 3000);
  t.is(gw.get("10.0.1.1")!.stateName, "Up");
  const real = tor.get("10.0.1.2")!.localDiscriminator;
  const deliver = net.listeners.get("10.0.1.2")!;
  const forged = controlPacket({
    state: BfdState.Down,
    diag: BfdDiag.None,
    myDiscriminator: real + 1,
    yourDiscriminator: 0,
    desiredMinTxUs: 1_000_000,
    requiredMinRxUs: 1_000_000,
  });
  // From the ToR's own address, as an attacker on the link would send it.
  deliver(encodeControl(forged), "10.0.1.1", 3784);
  await run(clock, 500);
  t.is(gw.get("10.0.1.1")!.stateName, "Up", "still up");
  t.is(gwEv.down.length, 0);
  t.is(gw.stats.rxDiscrMismatch, 1);
  // The peer's own discriminator with Your Discriminator 0 is still heard (its session went down).
  deliver(encodeControl({ ...forged, myDiscriminator: real }), "10.0.1.1", 3784);
  t.is(gw.get("10.0.1.1")!.stateName, "Down");
  await stopAll(clock, gw, tor);
});

test("authenticated sessions come up with the same key, never with another one or with none", async (t) => {
  const auth = { type: "meticulous-keyed-sha1" as const, keyId: 3, secret: "k3y" };
  const pair = async (gwAuth?: typeof auth, torAuth?: typeof auth) => {
    const clock = new ManualClock(1000);
    const net = new MemoryNet(clock);
    const gw = new BfdManager({ transport: net.transport(), clock, random: () => 0.5 });
    const tor = new BfdManager({ transport: net.transport(), clock, random: () => 0.5 });
    await gw.add({ peer: "10.0.1.1", local: "10.0.1.2", ...timers, ...(gwAuth ? { auth: gwAuth } : {}) });
    await tor.add({ peer: "10.0.1.2", local: "10.0.1.1", ...timers, ...(torAuth ? { auth: torAuth } : {}) });
    await run(clock, 4000);
    const state = gw.get("10.0.1.1")!.stateName;
    const rxAuth = gw.stats.rxAuth;
    await stopAll(clock, gw, tor);
    return { state, rxAuth };
  };
  t.deepEqual(await pair(auth, auth), { state: "Up", rxAuth: 0 });
  const wrongKey = await pair(auth, { ...auth, secret: "other" });
  t.is(wrongKey.state, "Down");
  t.true(wrongKey.rxAuth > 0);
  t.is((await pair(auth, undefined)).state, "Down", "a peer without authentication is not believed");
  t.is((await pair(undefined, auth)).state, "Down", "nor one that authenticates when we do not");
});
