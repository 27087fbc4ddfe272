// Netlink messages of the netfilter subsystems, written and read: the
// message header (struct nlmsghdr), nfnetlink's header (struct nfgenmsg),
// and attributes (struct nlattr: u16 length, u16 type, payload, padded to 4
// bytes), as nf_tables, ctnetlink and nfnetlink_log messages carry them. The
// length and type are in host order (little-endian here); what a payload's
// numbers are in is up to each subsystem (ctnetlink's are big-endian).

/** Netlink's message flags and types (linux/netlink.h), and the netfilter family's protocol number. */
export const NETLINK_NETFILTER = 12;
export const NLM_F_REQUEST = 0x1;
export const NLM_F_ACK = 0x4;
export const NLM_F_DUMP = 0x300;
export const NLM_F_CREATE = 0x400;
export const NLMSG_ERROR = 2;
export const NLMSG_DONE = 3;
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

/** nfnetlink's header: the address family, version 0, and the resource id (big-endian). */
export function nfgen(family: number, resId: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt8(family, 0);
  b.writeUInt8(0, 1);
  b.writeUInt16BE(resId, 2);
  return b;
}

/** One netlink message: the header (host order), the payload, padded to 4 bytes. */
export function message(type: number, flags: number, seq: number, payload: Buffer): Buffer {
  const h = Buffer.alloc(16);
  const len = 16 + payload.length;
  h.writeUInt32LE(len, 0);
  h.writeUInt16LE(type, 4);
  h.writeUInt16LE(flags, 6);
  h.writeUInt32LE(seq, 8);
  h.writeUInt32LE(0, 12);
  const pad = Buffer.alloc(align4(len) - len);
  return Buffer.concat([h, payload, pad]);
}
