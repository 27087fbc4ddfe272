// Reading netlink attributes (struct nlattr: u16 length, u16 type, payload,
// padded to 4 bytes), as nf_tables and ctnetlink messages carry them. The
// length and type are in host order (little-endian here); what a payload's
// numbers are in is up to each subsystem (ctnetlink's are big-endian).

export const NLA_F_NESTED = 0x8000;
const NLA_TYPE_MASK = 0x3fff; // without NLA_F_NESTED and NLA_F_NET_BYTEORDER

export const align4 = (n: number) => (n + 3) & ~3;

/** One attribute: its header, the payload, and the padding to 4 bytes. */
export function attr(type: number, payload: Buffer): Buffer {
  const len = 4 + payload.length;
  const b = Buffer.alloc(align4(len));
  b.writeUInt16LE(len, 0);
  b.writeUInt16LE(type, 2);
  payload.copy(b, 4);
  return b;
}

/** A nested attribute holding `parts`. */
export const nested = (type: number, parts: Buffer[]) => attr(type | NLA_F_NESTED, Buffer.concat(parts));

/**
 * The attributes in `buf`, by type (flags cleared); the first of a type wins.
 * A truncated or malformed attribute ends the walk: what came before it is kept.
 */
export function attrMap(buf: Buffer): Map<number, Buffer> {
  const out = new Map<number, Buffer>();
  for (let at = 0; at + 4 <= buf.length; ) {
    const len = buf.readUInt16LE(at);
    if (len < 4 || at + len > buf.length) break;
    const type = buf.readUInt16LE(at + 2) & NLA_TYPE_MASK;
    if (!out.has(type)) out.set(type, buf.subarray(at + 4, at + len));
    at += align4(len);
  }
  return out;
}

/** The payloads of every attribute of `type` in `buf`, in order. */
export function attrs(buf: Buffer, type: number): Buffer[] {
  const out: Buffer[] = [];
  for (let at = 0; at + 4 <= buf.length; ) {
    const len = buf.readUInt16LE(at);
    if (len < 4 || at + len > buf.length) break;
    if ((buf.readUInt16LE(at + 2) & NLA_TYPE_MASK) === type) out.push(buf.subarray(at + 4, at + len));
    at += align4(len);
  }
  return out;
}
