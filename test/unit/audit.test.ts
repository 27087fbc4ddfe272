// The audit trail's pure half: conntrack event messages decoded (and never a
// throw on a malformed one), IPFIX messages that decode back to what was
// exported, which events become records, and the firewall team's query.
import test from "ava";
import fc from "fast-check";
import { PassThrough } from "node:stream";
import {
  CTA,
  CTA_COUNTERS,
  CTA_IP,
  CTA_PROTO,
  CTA_TIMESTAMP,
  CTA_TUPLE,
  FrameReader,
  IPS_SRC_NAT,
  decodeDatagram,
  type ConntrackEvent,
  type Tuple,
} from "../../routing/ctnetlink.js";
import { addressBytes } from "../../routing/ip.js";
import { attr, nested as nest } from "../../routing/nlattr.js";
import { decodeNflog, parseIpHeader } from "../../routing/nflog.js";
import { policyKey, renderNftRuleset } from "../../routing/nft-render.js";
import { plan } from "../../core/plan/kernel.js";
import { IE, IpfixExporter, NAT_EVENT, TEMPLATE_ID, type NatEventRecord } from "../../core/audit/ipfix.js";
import { ConnectionFinder, parseRecord, parseWhen, type AuditRecord } from "../../core/audit/record.js";
import { AuditTrail } from "../../daemon/audit.js";
import { parseEndpoint } from "../../daemon/commands/audit.js";
import { loadConfig } from "../../inputs/config/load.js";
import { DEFAULTS } from "../../core/defaults.js";
import { createLogger } from "../../daemon/log.js";

// --- a ctnetlink encoder, as the kernel lays out an event (test only) ---

const be16 = (n: number) => Buffer.from([n >> 8, n & 0xff]);
const be32 = (n: number) => {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n >>> 0);
  return b;
};
const be64 = (n: bigint) => {
  const b = Buffer.alloc(8);
  b.writeBigUInt64BE(n);
  return b;
};

function tupleAttr(type: number, t: Tuple, family: 4 | 6): Buffer {
  const [s, d] = family === 4 ? [CTA_IP.V4_SRC, CTA_IP.V4_DST] : [CTA_IP.V6_SRC, CTA_IP.V6_DST];
  return nest(type, [
    nest(CTA_TUPLE.IP, [attr(s, addressBytes(t.src)), attr(d, addressBytes(t.dst))]),
    nest(CTA_TUPLE.PROTO, [
      attr(CTA_PROTO.NUM, Buffer.from([t.proto])),
      attr(CTA_PROTO.SRC_PORT, be16(t.sport)),
      attr(CTA_PROTO.DST_PORT, be16(t.dport)),
    ]),
  ]);
}

function encodeEvent(ev: ConntrackEvent): Buffer {
  const parts = [
    tupleAttr(CTA.TUPLE_ORIG, ev.orig, ev.family),
    tupleAttr(CTA.TUPLE_REPLY, ev.reply, ev.family),
    attr(CTA.STATUS, be32(ev.status)),
    attr(CTA.MARK, be32(ev.mark)),
    attr(CTA.ID, be32(ev.id)),
    attr(CTA.ZONE, be16(ev.zone)),
  ];
  const counters = (type: number, c: { packets: bigint; bytes: bigint }) =>
    nest(type, [attr(CTA_COUNTERS.PACKETS, be64(c.packets)), attr(CTA_COUNTERS.BYTES, be64(c.bytes))]);
  if (ev.origCounters) parts.push(counters(CTA.COUNTERS_ORIG, ev.origCounters));
  if (ev.replyCounters) parts.push(counters(CTA.COUNTERS_REPLY, ev.replyCounters));
  if (ev.startNs !== undefined || ev.stopNs !== undefined) {
    const ts: Buffer[] = [];
    if (ev.startNs !== undefined) ts.push(attr(CTA_TIMESTAMP.START, be64(ev.startNs)));
    if (ev.stopNs !== undefined) ts.push(attr(CTA_TIMESTAMP.STOP, be64(ev.stopNs)));
    parts.push(nest(CTA.TIMESTAMP, ts));
  }
  const body = Buffer.concat([Buffer.from([ev.family === 4 ? 2 : 10, 0, 0, 0]), ...parts]);
  const h = Buffer.alloc(16);
  h.writeUInt32LE(16 + body.length, 0);
  h.writeUInt16LE((1 << 8) | (ev.type === "new" ? 0 : 2), 4);
  return Buffer.concat([h, body]);
}

const ip4 = fc.tuple(fc.nat(255), fc.nat(255), fc.nat(255), fc.nat(255)).map((a) => a.join("."));
const ip6 = fc
  .array(fc.nat(0xffff), { minLength: 8, maxLength: 8 })
  .map((w) => w.map((x) => x.toString(16)).join(":"))
  .map((t) => new URL(`http://[${t}]`).hostname.slice(1, -1)); // canonical (compressed) text
const port = fc.nat(65535);
const counters = fc.record({ packets: fc.bigInt(0n, 2n ** 64n - 1n), bytes: fc.bigInt(0n, 2n ** 64n - 1n) });
const eventArb = fc.oneof(fc.constant(4 as const), fc.constant(6 as const)).chain((family) => {
  const ip = family === 4 ? ip4 : ip6;
  const tuple = fc.record({ src: ip, dst: ip, proto: fc.constantFrom(6, 17), sport: port, dport: port });
  return fc.record(
    {
      type: fc.constantFrom("new" as const, "destroy" as const),
      family: fc.constant(family),
      id: fc.nat(0xffffffff),
      orig: tuple,
      reply: tuple,
      status: fc.nat(0xffff),
      mark: fc.nat(0xffffffff),
      zone: fc.nat(0xffff),
      origCounters: counters,
      replyCounters: counters,
      startNs: fc.bigInt(0n, 2n ** 63n),
      stopNs: fc.bigInt(0n, 2n ** 63n),
    },
    { requiredKeys: ["type", "family", "id", "orig", "reply", "status", "mark", "zone"] },
  );
});

test("ctnetlink: an event decodes to what was encoded, several to a datagram", (t) => {
  fc.assert(
    fc.property(fc.array(eventArb, { minLength: 1, maxLength: 4 }), (evs) => {
      t.deepEqual(decodeDatagram(Buffer.concat(evs.map(encodeEvent))), evs);
    }),
  );
});

test("ctnetlink: a truncated or corrupted message yields nothing wrong and never throws", (t) => {
  fc.assert(
    fc.property(eventArb, fc.nat(), fc.uint8Array({ minLength: 1, maxLength: 8 }), (ev, cut, noise) => {
      const whole = encodeEvent(ev);
      const short = whole.subarray(0, cut % whole.length);
      t.notThrows(() => decodeDatagram(short));
      const bent = Buffer.from(whole);
      Buffer.from(noise).copy(bent, 16 + (cut % (whole.length - 16)));
      for (const got of decodeDatagram(bent)) t.true(got.family === 4 || got.family === 6);
    }),
  );
  t.deepEqual(decodeDatagram(Buffer.alloc(0)), []);
  // Another subsystem's message, or another ctnetlink message type: not an event.
  const other = encodeEvent({
    type: "new",
    family: 4,
    id: 1,
    orig: { src: "10.0.0.1", dst: "10.0.0.2", proto: 6, sport: 1, dport: 2 },
    reply: { src: "10.0.0.2", dst: "10.0.0.1", proto: 6, sport: 2, dport: 1 },
    status: 0,
    mark: 0,
    zone: 0,
  });
  other.writeUInt16LE((2 << 8) | 0, 4);
  t.deepEqual(decodeDatagram(other), []);
});

// --- IPFIX, decoded as a collector would (test only) ---

interface Decoded {
  version: number;
  length: number;
  exportTime: number;
  sequence: number;
  domain: number;
  templates: Map<number, { id: number; length: number; pen?: number }[]>;
  records: { template: number; fields: Map<string, Buffer> }[];
}

function decodeIpfix(msg: Buffer, known: Decoded["templates"] = new Map()): Decoded {
  const d: Decoded = {
    version: msg.readUInt16BE(0),
    length: msg.readUInt16BE(2),
    exportTime: msg.readUInt32BE(4),
    sequence: msg.readUInt32BE(8),
    domain: msg.readUInt32BE(12),
    templates: known,
    records: [],
  };
  for (let at = 16; at < msg.length; ) {
    const setId = msg.readUInt16BE(at);
    const len = msg.readUInt16BE(at + 2);
    const end = at + len;
    let p = at + 4;
    if (setId === 2) {
      while (p < end) {
        const tid = msg.readUInt16BE(p);
        const count = msg.readUInt16BE(p + 2);
        p += 4;
        const fields = [];
        for (let i = 0; i < count; i++) {
          const raw = msg.readUInt16BE(p);
          const f: { id: number; length: number; pen?: number } = {
            id: raw & 0x7fff,
            length: msg.readUInt16BE(p + 2),
          };
          p += 4;
          if (raw & 0x8000) {
            f.pen = msg.readUInt32BE(p);
            p += 4;
          }
          fields.push(f);
        }
        d.templates.set(tid, fields);
      }
    } else {
      const fields = d.templates.get(setId)!;
      const size = fields.reduce((n, f) => n + f.length, 0);
      while (p + size <= end) {
        const m = new Map<string, Buffer>();
        for (const f of fields) {
          m.set(f.pen ? `${f.pen}/${f.id}` : String(f.id), msg.subarray(p, p + f.length));
          p += f.length;
        }
        d.records.push({ template: setId, fields: m });
      }
    }
    at = end;
  }
  return d;
}

const natRecord = (i: number, family: 4 | 6): NatEventRecord => ({
  family,
  event: i % 2 ? "delete" : "create",
  observedMs: 1_700_000_000_000 + i,
  startMs: 1_700_000_000_000,
  endMs: 1_700_000_000_000 + i,
  src: addressBytes(family === 4 ? "10.244.1.10" : "fd00:244::10"),
  sport: 40000 + i,
  postSrc: addressBytes(family === 4 ? "192.0.2.11" : "2001:db8:e::11"),
  postSport: 50000 + i,
  dst: addressBytes(family === 4 ? "203.0.113.10" : "2001:db8:100::10"),
  dport: 443,
  proto: 6,
  bytesOut: BigInt(i * 100),
  packetsOut: BigInt(i),
  bytesIn: BigInt(i * 1000),
  packetsIn: BigInt(i * 2),
});

test("IPFIX: records decode back with RFC 8158's NAT fields; messages fit; sequence numbers count records", (t) => {
  const x = new IpfixExporter({ domain: 7, maxMessageBytes: 1400, refreshMs: 60_000 });
  const records = Array.from({ length: 40 }, (_, i) => natRecord(i, i % 3 === 0 ? 6 : 4));
  const msgs = x.encode(records, 1_700_000_000_500);
  const templates = new Map();
  const got: Decoded["records"] = [];
  let expectSeq = 0;
  for (const [k, m] of msgs.entries()) {
    t.true(m.length <= 1400);
    const d = decodeIpfix(m, templates);
    t.is(d.version, 10);
    t.is(d.length, m.length);
    t.is(d.domain, 7);
    t.is(d.exportTime, 1_700_000_000);
    t.is(d.sequence, expectSeq, `message ${k}`);
    expectSeq += d.records.length;
    got.push(...d.records);
  }
  t.is(templates.size, 2, "both templates went out with the first message");
  t.is(got.length, 40);
  for (const [i, r] of got.entries()) {
    const family = i % 3 === 0 ? 6 : 4;
    t.is(r.template, TEMPLATE_ID[family]);
    const f = r.fields;
    const post = f.get(String(family === 4 ? IE.postNATSourceIPv4Address : IE.postNATSourceIPv6Address))!;
    t.deepEqual(post, addressBytes(family === 4 ? "192.0.2.11" : "2001:db8:e::11"));
    t.is(f.get(String(IE.postNAPTSourceTransportPort))!.readUInt16BE(0), 50000 + i);
    t.is(f.get(String(IE.sourceTransportPort))!.readUInt16BE(0), 40000 + i);
    const ev = f.get(String(IE.natEvent))![0];
    t.is(
      ev,
      family === 4
        ? i % 2
          ? NAT_EVENT.delete4
          : NAT_EVENT.create4
        : i % 2
          ? NAT_EVENT.delete6
          : NAT_EVENT.create6,
    );
    t.is(f.get(String(IE.octetDeltaCount))!.readBigUInt64BE(0), BigInt(i * 100));
    t.is(
      f.get(`29305/${IE.octetDeltaCount}`)!.readBigUInt64BE(0),
      BigInt(i * 1000),
      "the reverse direction (RFC 5103)",
    );
    t.is(f.get(String(IE.flowEndMilliseconds))!.readBigUInt64BE(0), BigInt(1_700_000_000_000 + i));
  }
  // Templates again only once the refresh period has passed; on their own when nothing else is due.
  t.deepEqual(x.encode([], 1_700_000_010_000), []);
  const refresh = x.encode([], 1_700_000_060_500);
  t.is(refresh.length, 1);
  t.is(decodeIpfix(refresh[0]!, new Map()).templates.size, 2);
  t.is(decodeIpfix(refresh[0]!, new Map()).sequence, 40);
});

// --- which events become records ---

const MASK = 0x0ff00000;
function trail(
  out: PassThrough,
  podAt?: (a: string) => { namespace: string; name: string; uid: string } | undefined,
) {
  const a = new AuditTrail({
    config: { file: "-" },
    gateway: "gw-1",
    log: createLogger({ level: "silent" }),
    stdout: out,
    now: () => 1_700_000_000_000,
    ...(podAt ? { podAt } : {}),
  });
  a.setPlan(
    [
      { name: "web", mark: 0x00100000 },
      { name: "db", mark: 0x00200000 },
    ],
    MASK,
    ["192.0.2.11"],
  );
  return a;
}
/** The records written so far (lines go out together, DEFAULTS.audit.linesFlushMs after the first). */
const lines = async (out: PassThrough) => {
  await new Promise((r) => setTimeout(r, DEFAULTS.audit.linesFlushMs + 10));
  return readLines(out);
};
const readLines = (out: PassThrough) =>
  String(out.read() ?? "")
    .split("\n")
    .filter(Boolean)
    .map((l) => parseRecord(l)!);

const natted = (over: Partial<ConntrackEvent> = {}): ConntrackEvent => ({
  type: "new",
  family: 4,
  id: 77,
  orig: { src: "10.244.1.10", dst: "203.0.113.10", proto: 6, sport: 40000, dport: 443 },
  reply: { src: "203.0.113.10", dst: "192.0.2.11", proto: 6, sport: 443, dport: 61000 },
  status: IPS_SRC_NAT,
  mark: 0x00100000 | 0x4000,
  zone: 0,
  startNs: 1_699_999_999_000_000_000n,
  ...over,
});

test("audit: egressd's NATed connections to its own addresses are recorded, start and end; nothing else", async (t) => {
  const out = new PassThrough();
  const pods = new Map([["10.244.1.10", { namespace: "shop", name: "pay-1", uid: "u-1" }]]);
  const a = trail(out, (ip) => pods.get(ip));
  a.handle(natted());
  // The address now belongs to another pod: the end keeps the pod of the start.
  pods.set("10.244.1.10", { namespace: "other", name: "x", uid: "u-2" });
  a.handle(
    natted({
      type: "destroy",
      status: 0, // without the status, the tuples tell the translation
      origCounters: { packets: 5n, bytes: 400n },
      replyCounters: { packets: 4n, bytes: 3000n },
      stopNs: 1_700_000_000_250_000_000n,
    }),
  );
  // Not egressd's: no mark of its own; not NATed; a peer's address (connection sync); no mark at all.
  a.handle(natted({ id: 1, mark: 0x4000 }));
  a.handle(natted({ id: 2, status: 0, reply: { ...natted().reply, dst: "10.244.1.10" } }));
  a.handle(natted({ id: 3, reply: { ...natted().reply, dst: "192.0.2.12" } }));
  a.handle(natted({ id: 4, mark: 0 }));
  const got = await lines(out);
  t.is(got.length, 2);
  const [start, end] = got as [AuditRecord, AuditRecord];
  t.deepEqual(
    start,
    rec({
      time: "2023-11-14T22:13:19.000Z",
      egressPort: 61000,
      dst: "203.0.113.10",
      dport: 443,
      pod: { namespace: "shop", name: "pay-1", uid: "u-1" },
      ctId: 77,
    }),
  );
  t.like(end, {
    event: "end",
    time: "2023-11-14T22:13:20.250Z",
    started: start.time,
    pod: start.pod,
    packetsOut: 5,
    bytesOut: 400,
    packetsIn: 4,
    bytesIn: 3000,
  });
  t.like(a.counts, { starts: 1, ends: 1, ignored: 4 });
  t.is(a.open, 0);
});

test("audit: a connection that started before egressd watched still ends with its policy and start time", async (t) => {
  const out = new PassThrough();
  const a = trail(out);
  a.handle(natted({ type: "destroy", mark: 0x00200000, stopNs: 1_700_000_000_000_000_000n }));
  a.handle(natted({ id: 9, type: "destroy", mark: 0x00300000 }));
  const [end, unknown] = (await lines(out)) as [AuditRecord, AuditRecord];
  t.like(end, { policy: "db", started: "2023-11-14T22:13:19.000Z", time: "2023-11-14T22:13:20.000Z" });
  t.is(end.pod, undefined);
  t.is(unknown.policy, "mark 0x300000", "a mark no policy has any more is named as it is");
});

test("audit: after lost events, the table tells which starts and ends were missed; both are written and counted", async (t) => {
  const out = new PassThrough();
  const a = trail(out);
  a.handle(natted({ id: 1 }));
  a.handle(
    natted({ id: 2, orig: { ...natted().orig, sport: 40002 }, reply: { ...natted().reply, dport: 61002 } }),
  );
  await lines(out);
  // Events were dropped: 2 ended unseen, 3 started unseen; 1 is still open. Entries that are not
  // egressd's own are left out.
  const three = natted({
    id: 3,
    orig: { ...natted().orig, sport: 40003 },
    reply: { ...natted().reply, dport: 61003 },
  });
  // Entry 5 is in the table too, but its own start event was only late: it is not written twice.
  const five = natted({ id: 5, orig: { ...natted().orig, sport: 40005 } });
  a.repairFrom([natted({ id: 1 }), three, natted({ id: 4, mark: 0 }), five], "overrun");
  a.handle(five);
  const early = await lines(out);
  t.deepEqual(
    early.map((r) => [r.ctId, r.late]),
    [[5, undefined]],
    "only 5's own start: the listing's findings wait for the grace period",
  );
  a.settle();
  const got = await lines(out);
  t.is(got.length, 2);
  const start = got.find((r) => r.event === "start")!;
  const end = got.find((r) => r.event === "end")!;
  t.like(start, { ctId: 3, sport: 40003, egressPort: 61003, late: true, time: "2023-11-14T22:13:19.000Z" });
  t.like(end, {
    ctId: 2,
    sport: 40002,
    egressPort: 61002,
    endLost: true,
    started: "2023-11-14T22:13:19.000Z",
  });
  t.is(end.packetsOut, undefined, "no counters for an end that was not seen");
  t.like(a.counts, { starts: 3, lostStarts: 1, lostEnds: 1 });
  t.is(a.open, 3);
  // At start, the open connections are written as late starts, not counted as lost.
  const fresh = trail(new PassThrough());
  fresh.repairFrom([natted({ id: 9 })], "start");
  fresh.settle();
  t.like(fresh.counts, { starts: 1, lostStarts: 0, lostEnds: 0 });
});

test("find: a connection written again from the table (late) is the same connection", (t) => {
  const f = new ConnectionFinder({
    egressIP: "192.0.2.11",
    egressPort: 40123,
    at: Date.parse("2026-12-03T14:02:00Z"),
    slackMs: 60_000,
  });
  f.add(rec({}));
  f.add(rec({ late: true }));
  f.add(rec({ event: "end", time: "2026-12-03T14:03:00.000Z", started: "2026-12-03T14:00:00.000Z" }));
  const got = f.result(Date.parse("2026-12-03T15:00:00Z"));
  t.is(got.length, 1);
  t.truthy(got[0]!.end);
});

// --- the firewall's question ---

const rec = (over: Partial<AuditRecord>): AuditRecord => ({
  time: "2026-12-03T14:00:00.000Z",
  event: "start",
  gateway: "gw-1",
  policy: "web",
  proto: "tcp",
  src: "10.244.1.10",
  sport: 40000,
  egressIP: "192.0.2.11",
  egressPort: 40123,
  dst: "198.51.100.7",
  dport: 5432,
  ctId: 1,
  ...over,
});

test("find: the connection alive at the time, by egress address and port, within the slack", (t) => {
  const at = Date.parse("2026-12-03T14:02:00Z");
  const find = (
    records: AuditRecord[],
    q: Partial<Parameters<typeof ConnectionFinder.prototype.add>[0]> & { slack?: number } = {},
  ) => {
    const f = new ConnectionFinder({
      egressIP: "192.0.2.11",
      egressPort: 40123,
      dst: "198.51.100.7",
      dport: 5432,
      at,
      slackMs: q.slack ?? 60_000,
    });
    for (const r of records) f.add(r);
    return f.result(Date.parse("2026-12-03T15:00:00Z"));
  };
  // Ended at 14:01:30: within a minute of 14:02.
  const ended = [
    rec({}),
    rec({ event: "end", time: "2026-12-03T14:01:30.000Z", started: "2026-12-03T14:00:00.000Z" }),
  ];
  t.is(find(ended).length, 1);
  t.is(find(ended, { slack: 10_000 }).length, 0);
  // The same egress port used again later, by another pod: only the one alive at the time.
  const reused = [...ended, rec({ time: "2026-12-03T14:30:00.000Z", src: "10.244.9.9", ctId: 2 })];
  const got = find(reused);
  t.is(got.length, 1);
  t.is(got[0]!.start!.src, "10.244.1.10");
  // Still open at the end of the trail: alive until now.
  t.is(find([rec({ time: "2026-12-03T13:00:00.000Z" })]).length, 1);
  // Another destination port, another egress port: not it.
  t.is(find([rec({ dport: 5433 })]).length, 0);
  t.is(find([rec({ egressPort: 40124 })]).length, 0);
  // Only the end was kept (the start rotated away): its own start time places it.
  t.is(
    find([rec({ event: "end", time: "2026-12-03T14:05:00.000Z", started: "2026-12-03T13:59:00.000Z" })])
      .length,
    1,
  );
});

test("find: times and endpoints as firewall logs write them; lines that are not records are skipped", (t) => {
  const now = Date.parse("2026-12-03T18:00:00Z");
  t.is(parseWhen("14:02", now), Date.parse("2026-12-03T14:02:00Z"));
  t.is(parseWhen("14:02:09", now), Date.parse("2026-12-03T14:02:09Z"));
  t.is(parseWhen("2026-12-01T14:02:09+01:00", now), Date.parse("2026-12-01T13:02:09Z"));
  t.is(parseWhen("25:00", now), undefined);
  t.is(parseWhen("yesterday", now), undefined);
  t.deepEqual(parseEndpoint("192.0.2.11:40123"), { address: "192.0.2.11", port: 40123 });
  t.deepEqual(parseEndpoint("192.0.2.11"), { address: "192.0.2.11" });
  t.deepEqual(parseEndpoint("[2001:DB8::1]:443"), { address: "2001:db8::1", port: 443 });
  t.deepEqual(parseEndpoint("2001:db8::1"), { address: "2001:db8::1" });
  t.is(parseEndpoint("192.0.2.11:70000"), undefined);
  t.is(parseEndpoint("gw:1"), undefined);
  t.is(parseRecord('{"event":"start"'), undefined);
  t.is(parseRecord('{"level":30,"msg":"x"}'), undefined);
  t.truthy(parseRecord(JSON.stringify(rec({}))));
});

// --- the config section ---

const BASE = `gateway: { name: gw, site: a }
egressIPs: [{ address: 192.0.2.11, interface: lo }]
uplinks: [{ name: u, interface: eth1, nextHop: 100.64.1.2 }]
policies: [{ name: p, sources: [10.244.0.0/16], destinations: [0.0.0.0/0], egressIP: 192.0.2.11, uplink: u }]
`;

test("config: the audit section's errors name the field", (t) => {
  const errors = (audit: string) => {
    const r = loadConfig(BASE + audit);
    return r.ok ? [] : r.errors.map((e) => `${e.path}: ${e.message}`);
  };
  t.deepEqual(errors("audit: { file: /var/log/egressd/audit.jsonl, ipfix: { collector: 192.0.2.50 } }"), []);
  t.deepEqual(errors('audit: { file: "-" }'), []);
  t.deepEqual(errors("audit: {}"), ["audit: records go nowhere: give a file, ipfix, or both"]);
  t.deepEqual(errors("audit: { file: audit.jsonl }"), [
    'audit.file: "audit.jsonl" is not an absolute file path (or "-" for standard output)',
  ]);
  t.deepEqual(errors("audit: { ipfix: { collector: collector.example } }"), [
    'audit.ipfix.collector: "collector.example" is not an IP address',
  ]);
  t.true(errors("audit: { file: /a, rotateSize: 10 }")[0]!.startsWith("audit.rotateSize"));
});

// --- drops, from NFLOG ---

function ipPacket(
  family: 4 | 6,
  src: string,
  dst: string,
  proto: number,
  sport: number,
  dport: number,
): Buffer {
  const l4 = Buffer.alloc(8);
  l4.writeUInt16BE(sport, 0);
  l4.writeUInt16BE(dport, 2);
  if (family === 4) {
    const h = Buffer.alloc(20);
    h[0] = 0x45;
    h[9] = proto;
    addressBytes(src).copy(h, 12);
    addressBytes(dst).copy(h, 16);
    return Buffer.concat([h, l4]);
  }
  const h = Buffer.alloc(40);
  h[0] = 0x60;
  h[6] = proto;
  addressBytes(src).copy(h, 8);
  addressBytes(dst).copy(h, 24);
  return Buffer.concat([h, l4]);
}

function nflogMessage(prefix: string, payload: Buffer, timeSec?: bigint): { type: number; data: Buffer } {
  const parts = [attr(10, Buffer.from(prefix + "\0")), attr(9, payload)];
  if (timeSec !== undefined) {
    const ts = Buffer.alloc(16);
    ts.writeBigUInt64BE(timeSec, 0);
    ts.writeBigUInt64BE(250_000n, 8);
    parts.push(attr(3, ts));
  }
  return { type: (4 << 8) | 0, data: Buffer.concat([Buffer.from([2, 0, 0, 0]), ...parts]) };
}

test("nflog: a logged packet gives its prefix, addresses, protocol and ports; a short or foreign one nothing", (t) => {
  fc.assert(
    fc.property(
      fc
        .oneof(fc.constant(4 as const), fc.constant(6 as const))
        .chain((f) =>
          fc.tuple(
            fc.constant(f),
            f === 4 ? ip4 : ip6,
            f === 4 ? ip4 : ip6,
            fc.constantFrom(6, 17, 1),
            port,
            port,
          ),
        ),
      fc.nat(),
      ([family, src, dst, proto, sport, dport], cut) => {
        const packet = ipPacket(family, src, dst, proto, sport, dport);
        const m = nflogMessage("egressd-drop unmatched", packet, 1_700_000_000n);
        const got = decodeNflog(m.type, m.data)!;
        t.like(got, { prefix: "egressd-drop unmatched", family, src, dst, proto, timeMs: 1_700_000_000_250 });
        t.deepEqual([got.sport, got.dport], proto === 1 ? [0, 0] : [sport, dport]);
        // Any shorter payload: all of it or nothing, never a throw.
        const short = parseIpHeader(packet.subarray(0, cut % packet.length));
        if (short) t.is(short.src, src);
      },
    ),
  );
  t.is(parseIpHeader(Buffer.from([0x45, 0, 0])), undefined);
  t.is(parseIpHeader(Buffer.from([0x15])), undefined, "not IPv4 or IPv6");
  const other = nflogMessage("x", ipPacket(4, "10.0.0.1", "10.0.0.2", 6, 1, 2));
  t.is(decodeNflog((1 << 8) | 0, other.data), undefined, "a ctnetlink message is not a log message");
});

test("audit: a dropped connection is a drop record, named by its Deny policy or as unmatched", async (t) => {
  const out = new PassThrough();
  const a = trail(out, (ip) =>
    ip === "10.244.1.12" ? { namespace: "shop", name: "bad", uid: "u-9" } : undefined,
  );
  a.setPlan(
    [
      { name: "web", mark: 0x00100000 },
      { name: "block.it", mark: 0x00200000, deny: true },
    ],
    MASK,
    ["192.0.2.11"],
  );
  const p = {
    family: 4 as const,
    dst: "203.0.113.10",
    proto: 6,
    sport: 40000,
    dport: 443,
    timeMs: 1_700_000_000_000,
  };
  a.dropped({ ...p, prefix: "egressd-drop unmatched", src: "10.244.1.11" });
  a.dropped({ ...p, prefix: `egressd-drop ${policyKey("block.it")}`, src: "10.244.1.12" });
  a.dropped({ ...p, prefix: "someone else's log", src: "10.244.1.13" });
  const [unmatched, denied, ...rest] = await lines(out);
  t.deepEqual(rest, []);
  t.deepEqual(unmatched, {
    time: "2023-11-14T22:13:20.000Z",
    event: "drop",
    gateway: "gw-1",
    unmatched: true,
    proto: "tcp",
    src: "10.244.1.11",
    sport: 40000,
    dst: "203.0.113.10",
    dport: 443,
  });
  t.like(denied, {
    policy: "block.it",
    src: "10.244.1.12",
    pod: { namespace: "shop", name: "bad", uid: "u-9" },
  });
  t.is(a.counts.drops, 2);
  // The firewall's question never finds a drop: it used no egress address.
  const f = new ConnectionFinder({ egressIP: "192.0.2.11", at: 1_700_000_000_000, slackMs: 60_000 });
  f.add(unmatched!);
  t.deepEqual(f.result(1_700_000_000_000), []);
});

test("ports: in use per egress IP, protocol and destination, the fullest first, each egress IP's fullest share", (t) => {
  const a = trail(new PassThrough());
  a.setPlan([{ name: "web", mark: 0x00100000 }], MASK, ["192.0.2.11", "192.0.2.12"], [40000, 40999]);
  let id = 0;
  const open = (dst: string, dport: number, n: number, proto = 6) => {
    for (let i = 0; i < n; i++)
      a.handle(
        natted({
          id: ++id,
          orig: { ...natted().orig, dst, dport, proto, sport: 1000 + id },
          reply: { ...natted().reply, proto, dport: 40000 + id },
        }),
      );
  };
  open("198.51.100.7", 5432, 30);
  open("203.0.113.10", 443, 12);
  open("203.0.113.10", 443, 5, 17);
  open("203.0.113.10", 0, 3, 1); // ICMP: no ports
  for (let k = 1; k <= 10; k++) open(`203.0.113.${100 + k}`, 80, k);
  const u = a.portUsage(3);
  t.deepEqual(
    u.top.map((x) => [x.egressIP, x.protocol, x.destination, x.inUse, x.available]),
    [
      ["192.0.2.11", "tcp", "198.51.100.7:5432", 30, 1000],
      ["192.0.2.11", "tcp", "203.0.113.10:443", 12, 1000],
      ["192.0.2.11", "tcp", "203.0.113.110:80", 10, 1000],
    ],
  );
  t.deepEqual(Object.fromEntries(u.fullest), { "192.0.2.11": 0.03, "192.0.2.12": 0 });
  // An end gives its port back; a connection not followed (no start seen) takes none back.
  a.handle(natted({ id: 1, type: "destroy", orig: { ...natted().orig, dport: 5432, dst: "198.51.100.7" } }));
  a.handle(
    natted({ id: 9999, type: "destroy", orig: { ...natted().orig, dport: 5432, dst: "198.51.100.7" } }),
  );
  t.is(a.portUsage(1).top[0]!.inUse, 29);
});

test("config: dataplane.snatPorts is a port range; it and snatMode reach the SNAT rules", (t) => {
  const r = loadConfig(BASE + 'dataplane: { snatPorts: "2000-1000" }');
  t.false(r.ok);
  t.deepEqual(r.ok ? [] : r.errors.map((e) => `${e.path}: ${e.message}`), [
    "dataplane.snatPorts: 2000-1000 is not a port range: two ports from 1 to 65535, the first not above the second",
  ]);
  t.false(loadConfig(BASE + 'dataplane: { snatPorts: "0-10" }').ok);
  const ok = loadConfig(BASE + 'dataplane: { snatPorts: "40000-40999", snatMode: fully-random }');
  t.true(ok.ok);
  const text = renderNftRuleset(plan(ok.ok ? ok.config : (undefined as never)).nat);
  t.regex(text, /meta l4proto \{ tcp, udp, sctp \} snat ip to 192\.0\.2\.11:40000-40999 fully-random/);
  t.regex(text, /snat ip to 192\.0\.2\.11 fully-random/);
});

test("egressd-ctevents' frames: datagrams, overruns and the granted buffer, split across chunks anywhere", (t) => {
  const frame = (len: number, body: Buffer = Buffer.alloc(0)) => {
    const h = Buffer.alloc(4);
    h.writeUInt32LE(len >>> 0);
    return Buffer.concat([h, body]);
  };
  const granted = Buffer.alloc(4);
  granted.writeUInt32LE(8 << 20);
  const dg = Buffer.from("a datagram");
  const all = Buffer.concat([
    frame(0xffffffff, granted),
    frame(dg.length, dg),
    frame(0),
    frame(3, Buffer.from("xyz")),
  ]);
  const want = [{ granted: 8 << 20 }, { datagram: dg }, { overrun: true }, { datagram: Buffer.from("xyz") }];
  for (let cut = 0; cut <= all.length; cut++) {
    const r = new FrameReader();
    t.deepEqual([...r.push(all.subarray(0, cut)), ...r.push(all.subarray(cut))], want, `cut at ${cut}`);
  }
});
