// BFD authentication, RFC 5880 section 6.7: Keyed SHA1 (auth type 4) and
// Meticulous Keyed SHA1 (type 5), the two every implementation that does
// authentication must have (6.7, "MUST support both types of SHA1").
//
// The authentication section is 28 bytes: type, length (28), key id, a
// reserved byte, a 32-bit sequence number and a 20-byte field. To sign, the
// key (zero-padded to 20 bytes) goes into that field, SHA1 is computed over
// the whole packet, and the digest replaces the key (6.7.4). Receiving does
// the same with the received packet and compares digests. Sequence numbers
// guard against replay: meticulous ones must grow with every packet, keyed
// ones may stay the same; both must stay within 3 x Detect Mult of the last
// one accepted, and are forgotten after two detection times of silence.
import { createHash, randomBytes, timingSafeEqual } from "node:crypto";
import { encodeControl, type ControlPacket } from "./packet.js";

export { AUTH_TYPE_CODE, authConfigProblem, keyProblem } from "../../core/bfd-auth.js";
export type { BfdAuthConfig, BfdAuthType } from "../../core/bfd-auth.js";
import { AUTH_TYPE_CODE, authConfigProblem, type BfdAuthConfig } from "../../core/bfd-auth.js";

const SHA1_AUTH_LEN = 28;
/** Offsets in a packet with its 24-byte header: the auth section starts at 24. */
const KEY_ID_AT = 26;
const SEQ_AT = 28;
const DIGEST_AT = 32;

function keyField(secret: string): Buffer {
  const k = Buffer.alloc(20);
  Buffer.from(secret, "utf8").copy(k);
  return k;
}

function sha1(b: Buffer): Buffer {
  return createHash("sha1").update(b).digest();
}

/** One session's authentication: signs what it sends, checks what it receives. */
export class BfdAuthenticator {
  private readonly code: number;
  private readonly key: Buffer;
  private readonly meticulous: boolean;
  /** bfd.XmitAuthSeq: starts at a random value (6.8.1). */
  private xmitSeq = randomBytes(4).readUInt32BE(0);
  /** bfd.RcvAuthSeq and bfd.AuthSeqKnown. */
  private rcvSeq = 0;
  private seqKnown = false;
  private lastValidAt = -Infinity;

  constructor(readonly config: BfdAuthConfig) {
    const problem = authConfigProblem(config);
    if (problem) throw new Error(`BFD authentication: ${problem}`);
    this.code = AUTH_TYPE_CODE[config.type];
    this.key = keyField(config.secret);
    this.meticulous = config.type === "meticulous-keyed-sha1";
  }

  /** The sequence number of the last packet sealed. */
  get sequence(): number {
    return this.xmitSeq;
  }

  /** The packet as sent: A bit set, the auth section filled, the digest over the whole packet. */
  seal(p: ControlPacket): Buffer {
    // Keyed SHA1 may repeat a number; advancing on every packet is allowed for both and simpler.
    this.xmitSeq = (this.xmitSeq + 1) >>> 0;
    const data = Buffer.alloc(SHA1_AUTH_LEN - 2);
    data[0] = this.config.keyId;
    data[1] = 0;
    data.writeUInt32BE(this.xmitSeq, 2);
    this.key.copy(data, 6);
    const buf = encodeControl({ ...p, authPresent: true, auth: { type: this.code, data } });
    sha1(buf).copy(buf, DIGEST_AT);
    return buf;
  }

  /**
   * Checks a received packet (already decoded, so its shape is sound) against
   * this session's key and sequence (RFC 5880 6.7.4). `detectionMs` is the
   * session's detection time, for forgetting the sequence after silence.
   * Returns undefined when the packet is authentic, else why it is not.
   */
  verify(raw: Uint8Array, p: ControlPacket, now: number, detectionMs: number): string | undefined {
    if (!p.authPresent || !p.auth) return "no authentication on a session that requires it";
    if (p.auth.type !== this.code) return `authentication type ${p.auth.type}, expected ${this.code}`;
    const len = raw[25];
    if (len !== SHA1_AUTH_LEN || raw.length < 24 + SHA1_AUTH_LEN) return `authentication length ${len}`;
    if (raw[KEY_ID_AT] !== this.config.keyId)
      return `key id ${raw[KEY_ID_AT]}, expected ${this.config.keyId}`;
    const buf = Buffer.from(raw.subarray(0, 24 + SHA1_AUTH_LEN));
    const seq = buf.readUInt32BE(SEQ_AT);
    // The digest first: a sequence number means something only in an authentic packet.
    const digest = Buffer.from(buf.subarray(DIGEST_AT, DIGEST_AT + 20));
    this.key.copy(buf, DIGEST_AT);
    if (!timingSafeEqual(sha1(buf), digest)) return "digest does not match (wrong key?)";
    if (now - this.lastValidAt > 2 * detectionMs) this.seqKnown = false;
    if (this.seqKnown) {
      const window = 3 * p.detectMult;
      const ahead = (seq - this.rcvSeq) >>> 0; // modulo 2^32
      const ok = this.meticulous ? ahead >= 1 && ahead <= window : ahead <= window;
      if (!ok) return `sequence ${seq} outside the window after ${this.rcvSeq}`;
    }
    this.rcvSeq = seq;
    this.seqKnown = true;
    this.lastValidAt = now;
    return undefined;
  }
}
