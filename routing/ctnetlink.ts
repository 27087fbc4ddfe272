// Connection tracking events from the kernel (ctnetlink, NETLINK_NETFILTER
// subsystem 1): a connection confirmed (NEW) and a connection ended
// (DESTROY), read from their multicast groups as they happen by the
// egressd-ctevents helper (native/ct-events.c), which hands them over in
// batches; and the table listed whole (a dump). This is what the audit trail
// is made of (docs/audit.md). Nothing is polled and no conntrack(8) child
// parses text; a message is decoded here, by hand, because no maintained
// library for Node reads ctnetlink.
//
// Every message comes from the kernel, but it is still parsed as untrusted
// input: a short or malformed message yields nothing, never a throw.
import { spawn, type ChildProcess } from "node:child_process";
import { fileURLToPath } from "node:url";
import { RawNetlinkSocket, parseMessages } from "netlink";
import { bytesToAddress } from "./ip.js";
import {
  attrMap,
  message,
  NETLINK_NETFILTER,
  nfgen,
  NLM_F_DUMP,
  NLM_F_REQUEST,
  NLMSG_DONE,
  NLMSG_ERROR,
} from "./nlattr.js";

const NFNL_SUBSYS_CTNETLINK = 1;
const IPCTNL_MSG_CT_NEW = 0;
const IPCTNL_MSG_CT_GET = 1;
const IPCTNL_MSG_CT_DELETE = 2;

// linux/netfilter/nfnetlink_conntrack.h
export const CTA = {
  TUPLE_ORIG: 1,
  TUPLE_REPLY: 2,
  STATUS: 3,
  MARK: 8,
  COUNTERS_ORIG: 9,
  COUNTERS_REPLY: 10,
  ID: 12,
  ZONE: 18,
  TIMESTAMP: 20,
} as const;
export const CTA_TUPLE = { IP: 1, PROTO: 2 } as const;
export const CTA_IP = { V4_SRC: 1, V4_DST: 2, V6_SRC: 3, V6_DST: 4 } as const;
export const CTA_PROTO = { NUM: 1, SRC_PORT: 2, DST_PORT: 3 } as const;
export const CTA_COUNTERS = { PACKETS: 1, BYTES: 2, PACKETS32: 3, BYTES32: 4 } as const;
export const CTA_TIMESTAMP = { START: 1, STOP: 2 } as const;
/** IPS_SRC_NAT (linux/netfilter/nf_conntrack_common.h): the connection's source is translated. */
export const IPS_SRC_NAT = 1 << 4;

export interface Tuple {
  src: string;
  dst: string;
  proto: number;
  /** Ports for TCP, UDP, SCTP, DCCP and UDP-Lite; 0 for others (ICMP). */
  sport: number;
  dport: number;
}

export interface Counters {
  packets: bigint;
  bytes: bigint;
}

export interface ConntrackEvent {
  type: "new" | "destroy";
  family: 4 | 6;
  /** The kernel's id of the entry (CTA_ID). */
  id: number;
  orig: Tuple;
  reply: Tuple;
  status: number;
  mark: number;
  zone: number;
  /** Accounting (net.netfilter.nf_conntrack_acct=1), per direction; absent without it. */
  origCounters?: Counters;
  replyCounters?: Counters;
  /** Wall-clock nanoseconds (net.netfilter.nf_conntrack_timestamp=1); absent without it. */
  startNs?: bigint;
  stopNs?: bigint;
}

function tuple(buf: Buffer | undefined): Tuple | undefined {
  if (!buf) return undefined;
  const t = attrMap(buf);
  const ip = t.get(CTA_TUPLE.IP);
  const proto = t.get(CTA_TUPLE.PROTO);
  if (!ip || !proto) return undefined;
  const a = attrMap(ip);
  const s4 = a.get(CTA_IP.V4_SRC);
  const d4 = a.get(CTA_IP.V4_DST);
  const s6 = a.get(CTA_IP.V6_SRC);
  const d6 = a.get(CTA_IP.V6_DST);
  let src: string;
  let dst: string;
  if (s4?.length === 4 && d4?.length === 4) [src, dst] = [bytesToAddress(s4), bytesToAddress(d4)];
  else if (s6?.length === 16 && d6?.length === 16) [src, dst] = [bytesToAddress(s6), bytesToAddress(d6)];
  else return undefined;
  const p = attrMap(proto);
  const num = p.get(CTA_PROTO.NUM);
  if (num?.length !== 1) return undefined;
  const port = (b: Buffer | undefined) => (b?.length === 2 ? b.readUInt16BE(0) : 0);
  return {
    src,
    dst,
    proto: num[0]!,
    sport: port(p.get(CTA_PROTO.SRC_PORT)),
    dport: port(p.get(CTA_PROTO.DST_PORT)),
  };
}

const u32 = (b: Buffer | undefined) => (b?.length === 4 ? b.readUInt32BE(0) : undefined);

function counters(buf: Buffer | undefined): Counters | undefined {
  if (!buf) return undefined;
  const c = attrMap(buf);
  const n = (b64: number, b32: number) => {
    const b = c.get(b64);
    if (b?.length === 8) return b.readBigUInt64BE(0);
    const v = u32(c.get(b32));
    return v === undefined ? undefined : BigInt(v);
  };
  const packets = n(CTA_COUNTERS.PACKETS, CTA_COUNTERS.PACKETS32);
  const bytes = n(CTA_COUNTERS.BYTES, CTA_COUNTERS.BYTES32);
  return packets === undefined || bytes === undefined ? undefined : { packets, bytes };
}

/**
 * One ctnetlink message's event: `type` is the netlink message type, `data`
 * what follows the netlink header (nfgenmsg, then attributes). Undefined for
 * anything that is not a whole NEW or DESTROY message of IPv4 or IPv6.
 */
export function decodeConntrack(type: number, data: Buffer): ConntrackEvent | undefined {
  if (type >> 8 !== NFNL_SUBSYS_CTNETLINK || data.length < 4) return undefined;
  const msg = type & 0xff;
  if (msg !== IPCTNL_MSG_CT_NEW && msg !== IPCTNL_MSG_CT_DELETE) return undefined;
  const nfFamily = data[0];
  const family = nfFamily === 2 ? 4 : nfFamily === 10 ? 6 : undefined;
  if (family === undefined) return undefined;
  const a = attrMap(data.subarray(4));
  const orig = tuple(a.get(CTA.TUPLE_ORIG));
  const reply = tuple(a.get(CTA.TUPLE_REPLY));
  if (!orig || !reply) return undefined;
  const ev: ConntrackEvent = {
    type: msg === IPCTNL_MSG_CT_NEW ? "new" : "destroy",
    family,
    id: u32(a.get(CTA.ID)) ?? 0,
    orig,
    reply,
    status: u32(a.get(CTA.STATUS)) ?? 0,
    mark: u32(a.get(CTA.MARK)) ?? 0,
    zone: a.get(CTA.ZONE)?.length === 2 ? a.get(CTA.ZONE)!.readUInt16BE(0) : 0,
  };
  const oc = counters(a.get(CTA.COUNTERS_ORIG));
  const rc = counters(a.get(CTA.COUNTERS_REPLY));
  if (oc) ev.origCounters = oc;
  if (rc) ev.replyCounters = rc;
  const ts = a.get(CTA.TIMESTAMP);
  if (ts) {
    const t = attrMap(ts);
    const start = t.get(CTA_TIMESTAMP.START);
    const stop = t.get(CTA_TIMESTAMP.STOP);
    if (start?.length === 8) ev.startNs = start.readBigUInt64BE(0);
    if (stop?.length === 8) ev.stopNs = stop.readBigUInt64BE(0);
  }
  return ev;
}

/** The events in one datagram from the conntrack groups (a malformed datagram has none). */
export function decodeDatagram(buf: Buffer): ConntrackEvent[] {
  let messages: ReturnType<typeof parseMessages>;
  try {
    messages = parseMessages(buf);
  } catch {
    return [];
  }
  const out: ConntrackEvent[] = [];
  for (const m of messages) {
    const ev = decodeConntrack(m.type, m.data);
    if (ev) out.push(ev);
  }
  return out;
}

export interface ConntrackEventsOptions {
  /** The socket's receive buffer (forced above net.core.rmem_max when egressd may). */
  recvBufferSize: number;
  /** How long the helper gathers events before it hands them over (ms). */
  flushMs: number;
  onEvent: (ev: ConntrackEvent) => void;
  /**
   * The kernel dropped events because the socket's buffer was full (ENOBUFS),
   * or the helper was not running for a while: some were lost.
   */
  onOverrun: () => void;
  onError: (e: Error) => void;
  /** Path of egressd-ctevents (default: the built one). */
  helper?: string;
}

/** The built helper that reads the events (native/ct-events.c). */
export const CTEVENTS_HELPER = fileURLToPath(new URL("../native/egressd-ctevents", import.meta.url));

/** A frame of the helper's output: a datagram, an overrun, or the buffer it was granted. */
export type HelperFrame = { datagram: Buffer } | { overrun: true } | { granted: number };

/** Splits the helper's output into frames (u32 LE length, then the bytes); keeps a partial frame for the next chunk. */
export class FrameReader {
  private rest: Buffer = Buffer.alloc(0);

  push(chunk: Buffer): HelperFrame[] {
    const buf = this.rest.length ? Buffer.concat([this.rest, chunk]) : chunk;
    const out: HelperFrame[] = [];
    let at = 0;
    while (at + 4 <= buf.length) {
      const len = buf.readUInt32LE(at);
      if (len === 0xffffffff) {
        if (at + 8 > buf.length) break;
        out.push({ granted: buf.readUInt32LE(at + 4) });
        at += 8;
      } else if (len === 0) {
        out.push({ overrun: true });
        at += 4;
      } else {
        if (at + 4 + len > buf.length) break;
        out.push({ datagram: buf.subarray(at + 4, at + 4 + len) });
        at += 4 + len;
      }
    }
    this.rest = at < buf.length ? Buffer.from(buf.subarray(at)) : Buffer.alloc(0);
    return out;
  }
}

/**
 * Conntrack's NEW and DESTROY events of this network namespace, as they
 * happen, read by the egressd-ctevents helper and handed over in batches
 * every flushMs: one wake-up of egressd per batch instead of one per event
 * (native/ct-events.c says why). A helper that exits is started again after a
 * second, and the gap is reported as an overrun (the audit trail then lists
 * the table).
 */
export class ConntrackEvents {
  private child: ChildProcess | undefined;
  private closed = false;
  private restartTimer: NodeJS.Timeout | undefined;
  /** The receive buffer the kernel granted, once the helper said (it reports twice what it counts). */
  granted: number | undefined;

  constructor(private readonly opts: ConntrackEventsOptions) {}

  /** Starts the helper; resolves once it has joined the groups, rejects when it cannot. */
  start(): Promise<void> {
    return new Promise((resolve, reject) => {
      const child = spawn(
        this.opts.helper ?? CTEVENTS_HELPER,
        [String(this.opts.recvBufferSize), String(this.opts.flushMs)],
        {
          stdio: ["ignore", "pipe", "pipe"],
        },
      );
      this.child = child;
      const frames = new FrameReader();
      let started = false;
      let stderr = "";
      child.stderr.on("data", (d: Buffer) => (stderr = (stderr + d.toString()).slice(-2000)));
      child.stdout.on("data", (chunk: Buffer) => {
        for (const f of frames.push(chunk)) {
          if ("granted" in f) {
            this.granted = f.granted;
            if (!started) {
              started = true;
              resolve();
            }
          } else if ("overrun" in f) this.opts.onOverrun();
          else for (const ev of decodeDatagram(f.datagram)) this.opts.onEvent(ev);
        }
      });
      child.on("error", (e) => {
        if (!started) reject(e);
        else this.opts.onError(e);
      });
      child.on("exit", (code, signal) => {
        if (this.child === child) this.child = undefined;
        if (this.closed) return;
        const why = new Error(
          `egressd-ctevents exited (${signal ?? `code ${code}`})${stderr ? `: ${stderr.trim()}` : ""}`,
        );
        if (!started) return reject(why);
        this.opts.onError(why);
        this.restartTimer = setTimeout(() => {
          this.restartTimer = undefined;
          if (this.closed) return;
          this.start().then(
            () => this.opts.onOverrun(), // events of the gap were lost
            (e: Error) => this.opts.onError(e),
          );
        }, 1000);
        this.restartTimer.unref();
      });
    });
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    if (this.restartTimer) clearTimeout(this.restartTimer);
    this.child?.kill("SIGKILL");
    this.child = undefined;
  }
}

/**
 * Every entry of this namespace's conntrack table (both families), as the
 * kernel lists it (each as a "new" event). For the audit trail after events
 * were lost: what is in the table now tells which starts and ends it missed.
 */
export function dumpConntrack(timeoutMs = 30_000): Promise<ConntrackEvent[]> {
  const sock = new RawNetlinkSocket(NETLINK_NETFILTER, { recvBufferSize: 4 << 20, sendBufferSize: 1 << 12 });
  const seq = (Math.random() * 0x7fffffff) >>> 0 || 1;
  return new Promise<ConntrackEvent[]>((resolve, reject) => {
    const out: ConntrackEvent[] = [];
    const done = (e?: Error) => {
      clearTimeout(timer);
      sock.close();
      if (e) reject(e);
      else resolve(out);
    };
    const timer = setTimeout(
      () => done(new Error(`conntrack dump: no end after ${timeoutMs} ms`)),
      timeoutMs,
    );
    sock.on("error", (e: Error) => done(e));
    sock.on("message", (buf: Buffer) => {
      let messages: ReturnType<typeof parseMessages>;
      try {
        messages = parseMessages(buf);
      } catch (e) {
        return done(e as Error);
      }
      for (const m of messages) {
        if (m.seq !== seq) continue;
        if (m.type === NLMSG_DONE) return done();
        if (m.type === NLMSG_ERROR) {
          const errno = -m.data.readInt32LE(0);
          if (errno !== 0) return done(new Error(`conntrack dump failed: errno ${errno}`));
          continue;
        }
        const ev = decodeConntrack(m.type, m.data);
        if (ev) out.push(ev);
      }
    });
    // nfgenmsg: AF_UNSPEC (both families), resource 0
    const msg = message(
      (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_GET,
      NLM_F_REQUEST | NLM_F_DUMP,
      seq,
      nfgen(0, 0),
    );
    sock.send(msg, {}, (e?: Error) => {
      if (e) done(e);
    });
  });
}
