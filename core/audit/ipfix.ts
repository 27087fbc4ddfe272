// IPFIX (RFC 7011) messages for NAT events (RFC 8158): one data record when
// a translation is made and one when it is removed, with the source before
// and after translation. Written by hand: no maintained npm library exports
// IPFIX, and what is needed is two fixed templates.
//
// Element numbers are IANA's "IP Flow Information Export (IPFIX) Entities";
// the counters of the reverse direction are RFC 5103's (enterprise 29305).

/** A template field: the element id, its length, and the enterprise number of a non-IANA element. */
interface Field {
  id: number;
  length: number;
  pen?: number;
}

const REVERSE_PEN = 29305;

export const IE = {
  octetDeltaCount: 1,
  packetDeltaCount: 2,
  protocolIdentifier: 4,
  sourceTransportPort: 7,
  sourceIPv4Address: 8,
  destinationTransportPort: 11,
  destinationIPv4Address: 12,
  sourceIPv6Address: 27,
  destinationIPv6Address: 28,
  flowStartMilliseconds: 152,
  flowEndMilliseconds: 153,
  postNATSourceIPv4Address: 225,
  postNAPTSourceTransportPort: 227,
  natEvent: 230,
  postNATSourceIPv6Address: 281,
  observationTimeMilliseconds: 323,
} as const;

/**
 * natEvent values (IANA "NAT Event Type"): RFC 8158's NAT44 session create and
 * delete for IPv4; for IPv6 source translation (NAT66) there is no session
 * event of its own, so the generic translation create and delete.
 */
export const NAT_EVENT = { create4: 4, delete4: 5, create6: 1, delete6: 2 } as const;

export const TEMPLATE_ID = { 4: 256, 6: 257 } as const;

function template(family: 4 | 6): Field[] {
  const a = family === 4 ? 4 : 16;
  return [
    { id: IE.observationTimeMilliseconds, length: 8 },
    { id: IE.flowStartMilliseconds, length: 8 },
    { id: IE.flowEndMilliseconds, length: 8 },
    { id: family === 4 ? IE.sourceIPv4Address : IE.sourceIPv6Address, length: a },
    { id: IE.sourceTransportPort, length: 2 },
    { id: family === 4 ? IE.postNATSourceIPv4Address : IE.postNATSourceIPv6Address, length: a },
    { id: IE.postNAPTSourceTransportPort, length: 2 },
    { id: family === 4 ? IE.destinationIPv4Address : IE.destinationIPv6Address, length: a },
    { id: IE.destinationTransportPort, length: 2 },
    { id: IE.protocolIdentifier, length: 1 },
    { id: IE.natEvent, length: 1 },
    { id: IE.octetDeltaCount, length: 8 },
    { id: IE.packetDeltaCount, length: 8 },
    { id: IE.octetDeltaCount, length: 8, pen: REVERSE_PEN },
    { id: IE.packetDeltaCount, length: 8, pen: REVERSE_PEN },
  ];
}

export const TEMPLATES = { 4: template(4), 6: template(6) } as const;
const recordLength = (f: Field[]) => f.reduce((n, x) => n + x.length, 0);
export const RECORD_LENGTH = { 4: recordLength(TEMPLATES[4]), 6: recordLength(TEMPLATES[6]) } as const;

/** One NAT event as exported. Addresses are 4 or 16 bytes, in network order. */
export interface NatEventRecord {
  family: 4 | 6;
  event: "create" | "delete";
  observedMs: number;
  startMs: number;
  endMs: number;
  src: Uint8Array;
  sport: number;
  postSrc: Uint8Array;
  postSport: number;
  dst: Uint8Array;
  dport: number;
  proto: number;
  bytesOut: bigint;
  packetsOut: bigint;
  bytesIn: bigint;
  packetsIn: bigint;
}

const HEADER = 16;
const SET_HEADER = 4;

function templateSet(): Buffer {
  const parts: Buffer[] = [];
  for (const family of [4, 6] as const) {
    const fields = TEMPLATES[family];
    const h = Buffer.alloc(4);
    h.writeUInt16BE(TEMPLATE_ID[family], 0);
    h.writeUInt16BE(fields.length, 2);
    parts.push(h);
    for (const f of fields) {
      const b = Buffer.alloc(f.pen === undefined ? 4 : 8);
      b.writeUInt16BE(f.pen === undefined ? f.id : f.id | 0x8000, 0);
      b.writeUInt16BE(f.length, 2);
      if (f.pen !== undefined) b.writeUInt32BE(f.pen, 4);
      parts.push(b);
    }
  }
  const body = Buffer.concat(parts);
  const set = Buffer.alloc(SET_HEADER);
  set.writeUInt16BE(2, 0); // Template Set
  set.writeUInt16BE(SET_HEADER + body.length, 2);
  return Buffer.concat([set, body]);
}

function writeRecord(b: Buffer, at: number, r: NatEventRecord): number {
  const ev =
    r.family === 4
      ? r.event === "create"
        ? NAT_EVENT.create4
        : NAT_EVENT.delete4
      : r.event === "create"
        ? NAT_EVENT.create6
        : NAT_EVENT.delete6;
  at = b.writeBigUInt64BE(BigInt(r.observedMs), at);
  at = b.writeBigUInt64BE(BigInt(r.startMs), at);
  at = b.writeBigUInt64BE(BigInt(r.endMs), at);
  at += Buffer.from(r.src).copy(b, at);
  at = b.writeUInt16BE(r.sport, at);
  at += Buffer.from(r.postSrc).copy(b, at);
  at = b.writeUInt16BE(r.postSport, at);
  at += Buffer.from(r.dst).copy(b, at);
  at = b.writeUInt16BE(r.dport, at);
  at = b.writeUInt8(r.proto, at);
  at = b.writeUInt8(ev, at);
  at = b.writeBigUInt64BE(r.bytesOut, at);
  at = b.writeBigUInt64BE(r.packetsOut, at);
  at = b.writeBigUInt64BE(r.bytesIn, at);
  return b.writeBigUInt64BE(r.packetsIn, at);
}

/**
 * Builds IPFIX messages for one observation domain. Over UDP a collector that
 * restarts knows no template until it is sent again, so the templates go with
 * the first message and again whenever `refreshMs` has passed (RFC 7011 8.4).
 */
export class IpfixExporter {
  private sequence = 0;
  private templatesAt: number | undefined;
  private readonly templates = templateSet();

  constructor(private readonly opts: { domain: number; maxMessageBytes: number; refreshMs: number }) {
    if (opts.maxMessageBytes < HEADER + this.templates.length + SET_HEADER + RECORD_LENGTH[6])
      throw new Error(`IPFIX message size ${opts.maxMessageBytes} is too small for one record`);
  }

  /** The messages that carry `records` (in order), exported at `nowMs`. */
  encode(records: readonly NatEventRecord[], nowMs: number): Buffer[] {
    const out: Buffer[] = [];
    let i = 0;
    while (i < records.length || (out.length === 0 && this.templatesDue(nowMs))) {
      const withTemplates = this.templatesDue(nowMs);
      const parts: Buffer[] = [];
      let size = HEADER;
      if (withTemplates) {
        parts.push(this.templates);
        size += this.templates.length;
        this.templatesAt = nowMs;
      }
      const sequence = this.sequence;
      // One data set per run of records of the same family.
      while (i < records.length) {
        const family = records[i]!.family;
        const room = Math.floor((this.opts.maxMessageBytes - size - SET_HEADER) / RECORD_LENGTH[family]);
        if (room < 1) break;
        let n = 0;
        while (n < room && i + n < records.length && records[i + n]!.family === family) n++;
        const set = Buffer.alloc(SET_HEADER + n * RECORD_LENGTH[family]);
        set.writeUInt16BE(TEMPLATE_ID[family], 0);
        set.writeUInt16BE(set.length, 2);
        let at = SET_HEADER;
        for (let k = 0; k < n; k++) at = writeRecord(set, at, records[i + k]!);
        parts.push(set);
        size += set.length;
        i += n;
        this.sequence = (this.sequence + n) >>> 0;
      }
      const header = Buffer.alloc(HEADER);
      header.writeUInt16BE(10, 0);
      header.writeUInt16BE(size, 2);
      header.writeUInt32BE(Math.floor(nowMs / 1000) >>> 0, 4);
      header.writeUInt32BE(sequence, 8);
      header.writeUInt32BE(this.opts.domain >>> 0, 12);
      out.push(Buffer.concat([header, ...parts], size));
    }
    return out;
  }

  private templatesDue(nowMs: number): boolean {
    return this.templatesAt === undefined || nowMs - this.templatesAt >= this.opts.refreshMs;
  }
}
