// BFD control packet codec: exact wire layout, round trips, and the
// session-independent rejections of RFC 5880 6.8.6.
import test from "ava";
import {
  BfdDiag,
  BfdState,
  decodeControl,
  diagText,
  encodeControl,
  stateText,
  type ControlPacket,
} from "../../health/bfd/packet.js";
import { controlPacket } from "../helpers/bfd-packets.js";

const pkt = controlPacket;

function decodeOk(b: Uint8Array): ControlPacket {
  const r = decodeControl(b);
  if (!r.ok) throw new Error(`unexpected reject: ${r.reason}`);
  return r.packet;
}

function reason(b: Uint8Array): string {
  const r = decodeControl(b);
  if (r.ok) throw new Error("expected a reject");
  return r.reason;
}

test("encodes the RFC 5880 4.1 layout byte for byte", (t) => {
  const b = encodeControl(pkt({ diag: BfdDiag.ControlDetectionTimeExpired, poll: true }));
  // prettier-ignore
  t.deepEqual(
    [...b],
    [
      0x21, // version 1, diag 1
      0xe0, // state Up (3 << 6) | P
      3,
      24,
      0x01, 0x02, 0x03, 0x04,
      0xa0, 0xb0, 0xc0, 0xd0,
      0x00, 0x01, 0x86, 0xa0, // 100000 us
      0x00, 0x04, 0x93, 0xe0, // 300000 us
      0, 0, 0, 0,
    ],
  );
});

test("round-trips every flag and field", (t) => {
  const flags = ["poll", "final", "cpi", "demand"] as const;
  for (const f of flags) {
    const p = pkt({ [f]: true });
    t.deepEqual(decodeOk(encodeControl(p)), p, f);
  }
  for (const state of [BfdState.AdminDown, BfdState.Down, BfdState.Init, BfdState.Up]) {
    for (const diag of [
      BfdDiag.None,
      BfdDiag.NeighborSignaledSessionDown,
      BfdDiag.ReverseConcatenatedPathDown,
    ]) {
      const p = pkt({ state, diag, yourDiscriminator: 7, detectMult: 255 });
      t.deepEqual(decodeOk(encodeControl(p)), p);
    }
  }
  const big = pkt({
    myDiscriminator: 0xffffffff,
    yourDiscriminator: 0xffffffff,
    desiredMinTxUs: 0xffffffff,
    requiredMinRxUs: 1,
    requiredMinEchoRxUs: 50_000,
  });
  t.deepEqual(decodeOk(encodeControl(big)), big);
});

test("round-trips an authentication section", (t) => {
  const p = pkt({ authPresent: true, auth: { type: 1, data: Buffer.from([5, 0x61, 0x62, 0x63]) } });
  const b = encodeControl(p);
  t.is(b.length, 24 + 2 + 4);
  t.is(b[3], 30);
  t.is(b[25], 6);
  t.deepEqual(decodeOk(b), p);
});

test("ignores bytes past the Length field", (t) => {
  const b = Buffer.concat([encodeControl(pkt()), Buffer.from([1, 2, 3, 4])]);
  t.deepEqual(decodeOk(b), pkt());
});

test("decodes from a subarray at an offset", (t) => {
  const whole = Buffer.concat([Buffer.from([9, 9, 9]), encodeControl(pkt())]);
  t.deepEqual(decodeOk(whole.subarray(3)), pkt());
});

test("rejects malformed packets (RFC 5880 6.8.6)", (t) => {
  const good = encodeControl(pkt());
  const mutate = (f: (b: Buffer) => void): Buffer => {
    const b = Buffer.from(good);
    f(b);
    return b;
  };
  t.regex(reason(good.subarray(0, 23)), /short packet/);
  t.regex(reason(Buffer.alloc(0)), /short packet/);
  t.regex(reason(mutate((b) => (b[0] = (0 << 5) | 0))), /version 0/);
  t.regex(reason(mutate((b) => (b[0] = (2 << 5) | 0))), /version 2/);
  t.regex(reason(mutate((b) => (b[3] = 23))), /below minimum 24/);
  t.regex(reason(mutate((b) => (b[3] = 25))), /exceeds payload/);
  t.regex(reason(mutate((b) => (b[2] = 0))), /detect mult is zero/);
  t.regex(reason(mutate((b) => (b[1]! |= 0x01))), /multipoint/);
  t.regex(reason(mutate((b) => b.writeUInt32BE(0, 4))), /my discriminator is zero/);
  // Your Discriminator may be zero only in Down and AdminDown.
  t.regex(reason(mutate((b) => b.writeUInt32BE(0, 8))), /your discriminator is zero in state Up/);
  t.regex(
    reason(encodeControl(pkt({ state: BfdState.Init, yourDiscriminator: 0 }))),
    /your discriminator is zero in state Init/,
  );
  t.true(decodeControl(encodeControl(pkt({ state: BfdState.Down, yourDiscriminator: 0 }))).ok);
  t.true(decodeControl(encodeControl(pkt({ state: BfdState.AdminDown, yourDiscriminator: 0 }))).ok);
  // A bit set: the length must leave room for Auth Type and Auth Len, and Auth Len must fit.
  t.regex(reason(mutate((b) => (b[1]! |= 0x04))), /below minimum 26/);
  const withAuth = encodeControl(pkt({ authPresent: true, auth: { type: 1, data: Buffer.from([1, 2]) } }));
  const badAuthLen = Buffer.from(withAuth);
  badAuthLen[25] = 9;
  t.regex(reason(badAuthLen), /auth length 9/);
  const tinyAuthLen = Buffer.from(withAuth);
  tinyAuthLen[25] = 1;
  t.regex(reason(tinyAuthLen), /auth length 1/);
});

test("fuzz: random buffers never throw", (t) => {
  let seed = 12345;
  const rnd = () => (seed = (seed * 1103515245 + 12345) & 0x7fffffff) / 0x80000000;
  for (let i = 0; i < 5000; i++) {
    const b = Buffer.alloc(Math.floor(rnd() * 40));
    for (let j = 0; j < b.length; j++) b[j] = Math.floor(rnd() * 256);
    if (rnd() < 0.5 && b.length >= 4) {
      b[0] = 0x20 | (b[0]! & 0x1f);
      b[3] = Math.min(b.length, 24 + Math.floor(rnd() * 8));
    }
    const r = decodeControl(b);
    if (r.ok) t.deepEqual(decodeOk(encodeControl(r.packet)), r.packet);
  }
  t.pass();
});

test("encode refuses out-of-range fields", (t) => {
  t.throws(() => encodeControl(pkt({ detectMult: 256 })), { instanceOf: RangeError });
  t.throws(() => encodeControl(pkt({ myDiscriminator: 2 ** 32 })), { instanceOf: RangeError });
  t.throws(() => encodeControl(pkt({ desiredMinTxUs: -1 })), { instanceOf: RangeError });
  t.throws(() => encodeControl(pkt({ diag: 32 as BfdDiag })), { instanceOf: RangeError });
  t.throws(() => encodeControl(pkt({ authPresent: true, auth: { type: 1, data: Buffer.alloc(240) } })), {
    instanceOf: RangeError,
  });
});

test("diagnostic and state names", (t) => {
  t.is(diagText(BfdDiag.ControlDetectionTimeExpired), "control detection time expired");
  t.is(diagText(BfdDiag.NeighborSignaledSessionDown), "neighbor signaled session down");
  t.is(diagText(BfdDiag.AdministrativelyDown), "administratively down");
  t.is(diagText(20), "reserved diagnostic 20");
  t.is(stateText(BfdState.Init), "Init");
});

test("a Desired Min TX Interval of zero (reserved) is refused", (t) => {
  const r = decodeControl(encodeControl(pkt({ desiredMinTxUs: 0 })));
  t.false(r.ok);
  t.regex(r.ok ? "" : r.reason, /desired min tx interval is zero/);
});
