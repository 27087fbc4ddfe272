// BFD control packet codec (RFC 5880 section 4.1): pure encode/decode, plus the
// session-independent reception checks of section 6.8.6.
//
//  byte 0: Vers(3) Diag(5)        byte 1: Sta(2) P F C A D M
//  byte 2: Detect Mult            byte 3: Length
//  4..7 My Discriminator          8..11 Your Discriminator
//  12..15 Desired Min TX (us)     16..19 Required Min RX (us)
//  20..23 Required Min Echo RX (us)
//  24..   optional authentication section (Auth Type, Auth Len, ...)

/** Session states, as carried in the Sta field. */
export enum BfdState {
  AdminDown = 0,
  Down = 1,
  Init = 2,
  Up = 3,
}

/** Diagnostic codes (RFC 5880 section 4.1). */
export enum BfdDiag {
  None = 0,
  ControlDetectionTimeExpired = 1,
  EchoFunctionFailed = 2,
  NeighborSignaledSessionDown = 3,
  ForwardingPlaneReset = 4,
  PathDown = 5,
  ConcatenatedPathDown = 6,
  AdministrativelyDown = 7,
  ReverseConcatenatedPathDown = 8,
}

const DIAG_TEXT: readonly string[] = [
  "no diagnostic",
  "control detection time expired",
  "echo function failed",
  "neighbor signaled session down",
  "forwarding plane reset",
  "path down",
  "concatenated path down",
  "administratively down",
  "reverse concatenated path down",
];

const STATE_TEXT: readonly string[] = ["AdminDown", "Down", "Init", "Up"];

/** Human text of a diagnostic code, as the RFC names it (lower case). */
export function diagText(diag: number): string {
  return DIAG_TEXT[diag] ?? `reserved diagnostic ${diag}`;
}

/** Name of a session state: AdminDown, Down, Init or Up. */
export function stateText(state: number): string {
  return STATE_TEXT[state] ?? `state ${state}`;
}

export const BFD_VERSION = 1;
/** Length of the mandatory section. */
export const BFD_HEADER_LEN = 24;
/** Destination UDP port of single-hop control packets (RFC 5881). */
export const BFD_CONTROL_PORT = 3784;

export interface BfdAuth {
  type: number;
  /** The section after Auth Type and Auth Len, as received. */
  data: Buffer;
}

export interface ControlPacket {
  version: number;
  diag: BfdDiag;
  state: BfdState;
  poll: boolean;
  final: boolean;
  /** Control Plane Independent (C bit). */
  cpi: boolean;
  /** Authentication Present (A bit). */
  authPresent: boolean;
  demand: boolean;
  multipoint: boolean;
  detectMult: number;
  myDiscriminator: number;
  yourDiscriminator: number;
  /** Microseconds. */
  desiredMinTxUs: number;
  /** Microseconds. */
  requiredMinRxUs: number;
  /** Microseconds; 0 means "do not send me echo packets". */
  requiredMinEchoRxUs: number;
  auth?: BfdAuth;
}

export type DecodeResult = { ok: true; packet: ControlPacket } | { ok: false; reason: string };

const U32_MAX = 0xffffffff;

function checkU32(name: string, v: number): void {
  if (!Number.isInteger(v) || v < 0 || v > U32_MAX) throw new RangeError(`BFD ${name} out of range: ${v}`);
}

/** Encodes a control packet. Throws RangeError on out-of-range fields (a programming error). */
export function encodeControl(p: ControlPacket): Buffer {
  if (p.diag < 0 || p.diag > 31) throw new RangeError(`BFD diag out of range: ${p.diag}`);
  if (p.state < 0 || p.state > 3) throw new RangeError(`BFD state out of range: ${p.state}`);
  if (!Number.isInteger(p.detectMult) || p.detectMult < 0 || p.detectMult > 255)
    throw new RangeError(`BFD detect mult out of range: ${p.detectMult}`);
  if (p.version < 0 || p.version > 7) throw new RangeError(`BFD version out of range: ${p.version}`);
  checkU32("my discriminator", p.myDiscriminator);
  checkU32("your discriminator", p.yourDiscriminator);
  checkU32("desired min tx", p.desiredMinTxUs);
  checkU32("required min rx", p.requiredMinRxUs);
  checkU32("required min echo rx", p.requiredMinEchoRxUs);
  const authLen = p.auth ? 2 + p.auth.data.length : 0;
  const len = BFD_HEADER_LEN + authLen;
  if (len > 255) throw new RangeError(`BFD packet too long: ${len}`);
  const b = Buffer.allocUnsafe(len);
  b[0] = ((p.version & 0x7) << 5) | (p.diag & 0x1f);
  b[1] =
    ((p.state & 0x3) << 6) |
    (p.poll ? 0x20 : 0) |
    (p.final ? 0x10 : 0) |
    (p.cpi ? 0x08 : 0) |
    (p.authPresent ? 0x04 : 0) |
    (p.demand ? 0x02 : 0) |
    (p.multipoint ? 0x01 : 0);
  b[2] = p.detectMult;
  b[3] = len;
  b.writeUInt32BE(p.myDiscriminator, 4);
  b.writeUInt32BE(p.yourDiscriminator, 8);
  b.writeUInt32BE(p.desiredMinTxUs, 12);
  b.writeUInt32BE(p.requiredMinRxUs, 16);
  b.writeUInt32BE(p.requiredMinEchoRxUs, 20);
  if (p.auth) {
    b[24] = p.auth.type;
    b[25] = authLen;
    p.auth.data.copy(b, 26);
  }
  return b;
}

/**
 * Decodes a control packet and applies the checks of RFC 5880 section 6.8.6
 * that need no session: version, length, detect mult, multipoint, discriminators,
 * and the shape of the authentication section. Whether the session uses
 * authentication (egressd's never do) is for the caller to check.
 */
export function decodeControl(buf: Uint8Array): DecodeResult {
  if (buf.length < BFD_HEADER_LEN) return { ok: false, reason: `short packet (${buf.length} bytes)` };
  const b0 = buf[0]!;
  const b1 = buf[1]!;
  const version = b0 >> 5;
  if (version !== BFD_VERSION) return { ok: false, reason: `unsupported version ${version}` };
  const authPresent = (b1 & 0x04) !== 0;
  const len = buf[3]!;
  const minLen = authPresent ? BFD_HEADER_LEN + 2 : BFD_HEADER_LEN;
  if (len < minLen) return { ok: false, reason: `length field ${len} below minimum ${minLen}` };
  if (len > buf.length)
    return { ok: false, reason: `length field ${len} exceeds payload (${buf.length} bytes)` };
  const detectMult = buf[2]!;
  if (detectMult === 0) return { ok: false, reason: "detect mult is zero" };
  const multipoint = (b1 & 0x01) !== 0;
  if (multipoint) return { ok: false, reason: "multipoint bit set" };
  const view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const myDiscriminator = view.getUint32(4);
  const yourDiscriminator = view.getUint32(8);
  if (myDiscriminator === 0) return { ok: false, reason: "my discriminator is zero" };
  const state = (b1 >> 6) as BfdState;
  if (yourDiscriminator === 0 && state !== BfdState.Down && state !== BfdState.AdminDown)
    return { ok: false, reason: `your discriminator is zero in state ${stateText(state)}` };
  // RFC 5880 4.1: zero is reserved for Desired Min TX Interval.
  if (view.getUint32(12) === 0) return { ok: false, reason: "desired min tx interval is zero (reserved)" };
  let auth: BfdAuth | undefined;
  if (authPresent) {
    const authLen = buf[25]!;
    if (authLen < 2 || BFD_HEADER_LEN + authLen > len)
      return { ok: false, reason: `auth length ${authLen} does not fit packet length ${len}` };
    auth = { type: buf[24]!, data: Buffer.from(buf.subarray(26, BFD_HEADER_LEN + authLen)) };
  }
  const packet: ControlPacket = {
    version,
    diag: (b0 & 0x1f) as BfdDiag,
    state,
    poll: (b1 & 0x20) !== 0,
    final: (b1 & 0x10) !== 0,
    cpi: (b1 & 0x08) !== 0,
    authPresent,
    demand: (b1 & 0x02) !== 0,
    multipoint,
    detectMult,
    myDiscriminator,
    yourDiscriminator,
    desiredMinTxUs: view.getUint32(12),
    requiredMinRxUs: view.getUint32(16),
    requiredMinEchoRxUs: view.getUint32(20),
  };
  if (auth) packet.auth = auth;
  return { ok: true, packet };
}
