// RFC 5880 6.7.4 SHA1 authentication: the digest covers the whole packet with
// the key in the hash field, sequence numbers stop replays, and sessions over
// an in-memory network come up only when both sides share type, key id and key.
import test from "ava";
import { createHash } from "node:crypto";
import { BfdAuthenticator, authConfigProblem, type BfdAuthConfig } from "../../health/bfd/auth.js";
import { BfdState, decodeControl, type ControlPacket } from "../../health/bfd/packet.js";
import { controlPacket } from "../helpers/bfd-packets.js";

const pkt: ControlPacket = controlPacket({ myDiscriminator: 11, yourDiscriminator: 22 });
const cfg: BfdAuthConfig = { type: "meticulous-keyed-sha1", keyId: 7, secret: "s3cret-bfd" };

test("seal: A bit, type 5, length 28, key id, and SHA1 over the packet with the key in the hash field", (t) => {
  const buf = new BfdAuthenticator(cfg).seal(pkt);
  t.is(buf.length, 52);
  t.is(buf[3], 52);
  t.true((buf[1]! & 0x04) !== 0);
  t.deepEqual([buf[24], buf[25], buf[26], buf[27]], [5, 28, 7, 0]);
  const copy = Buffer.from(buf);
  const key = Buffer.alloc(20);
  key.write("s3cret-bfd");
  key.copy(copy, 32);
  t.deepEqual(createHash("sha1").update(copy).digest(), buf.subarray(32, 52));
  t.false(buf.includes(Buffer.from("s3cret-bfd")), "the key itself never goes on the wire");
});

test("verify: authentic packets pass; a wrong key, key id or type, a replay, or no auth fail", (t) => {
  const tx = new BfdAuthenticator(cfg);
  const rx = new BfdAuthenticator(cfg);
  const check = (raw: Buffer, now = 1000) => rx.verify(raw, decodeOk(raw), now, 300);
  const first = tx.seal(pkt);
  t.is(check(first), undefined);
  t.regex(check(first) ?? "", /sequence .* outside the window/, "a replay of a meticulous sequence number");
  t.is(check(tx.seal(pkt)), undefined);
  t.regex(check(new BfdAuthenticator({ ...cfg, secret: "other" }).seal(pkt)) ?? "", /digest does not match/);
  t.regex(check(new BfdAuthenticator({ ...cfg, keyId: 8 }).seal(pkt)) ?? "", /key id 8, expected 7/);
  t.regex(
    check(new BfdAuthenticator({ ...cfg, type: "keyed-sha1" }).seal(pkt)) ?? "",
    /authentication type 4/,
  );
  const plain = Buffer.alloc(24);
  t.regex(rx.verify(plain, pkt, 1000, 300) ?? "", /no authentication/);
  // A tampered field breaks the digest.
  const tampered = tx.seal(pkt);
  tampered[1] = (tampered[1]! & 0x3f) | (BfdState.Down << 6);
  t.regex(check(tampered) ?? "", /digest does not match/);
  // After two detection times of silence the sequence is forgotten (the peer may have restarted).
  const restarted = new BfdAuthenticator(cfg);
  t.is(check(restarted.seal(pkt), 1000 + 601), undefined);
});

test("config checks name the problem and never the key", (t) => {
  t.is(authConfigProblem(cfg), undefined);
  t.regex(
    authConfigProblem({ ...cfg, secret: "x".repeat(21) }) ?? "",
    /21 bytes; SHA1 authentication takes 1 to 20/,
  );
  t.regex(authConfigProblem({ ...cfg, secret: "" }) ?? "", /0 bytes/);
  t.regex(authConfigProblem({ ...cfg, keyId: 256 }) ?? "", /key id 256/);
  t.false((authConfigProblem({ ...cfg, secret: "y".repeat(30) }) ?? "").includes("yyy"));
});

function decodeOk(raw: Buffer): ControlPacket {
  const r = decodeControl(raw);
  if (!r.ok) throw new Error(r.reason);
  return r.packet;
}
