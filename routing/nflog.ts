// Packets nftables logged to an NFLOG group (`log group N`): how the audit
// trail hears of connections egressd drops (a Deny policy's, and unmatched
// ones), which never reach conntrack's table and so have no conntrack event.
// The nfnetlink_log protocol (NETLINK_NETFILTER subsystem 4) is spoken here by
// hand: bind the group, ask for the packet's first bytes, read them.
//
// The payload is a packet a pod sent: untrusted. Only the IP header and the
// transport ports are read, each bounds-checked; anything malformed yields
// nothing.
import { RawNetlinkSocket, parseMessages } from "netlink";
import { bytesToAddress } from "./ip.js";
import {
  attr,
  attrMap,
  message,
  NETLINK_NETFILTER,
  nfgen,
  NLM_F_ACK,
  NLM_F_REQUEST,
  NLMSG_ERROR,
} from "./nlattr.js";

const NFNL_SUBSYS_ULOG = 4;
const NFULNL_MSG_PACKET = 0;
const NFULNL_MSG_CONFIG = 1;
const NFULA = { PACKET_HDR: 1, TIMESTAMP: 3, PAYLOAD: 9, PREFIX: 10 } as const;
const NFULA_CFG = { CMD: 1, MODE: 2 } as const;
const NFULNL_CFG_CMD_BIND = 1;
const NFULNL_COPY_PACKET = 2;
const ENOBUFS = 105;
/** Enough for an IPv6 header and the transport ports. */
const COPY_RANGE = 96;

export interface DroppedPacket {
  /** The log rule's prefix. */
  prefix: string;
  family: 4 | 6;
  src: string;
  dst: string;
  proto: number;
  /** 0 for protocols without ports. */
  sport: number;
  dport: number;
  /** When the kernel logged it (ms since the epoch), if it said. */
  timeMs?: number;
}

const PORTED = new Set([6, 17, 132, 33, 136]); // TCP, UDP, SCTP, DCCP, UDP-Lite

/** The addresses, protocol and ports of an IP packet's first bytes; undefined when they are not all there. */
export function parseIpHeader(b: Buffer): Omit<DroppedPacket, "prefix" | "timeMs"> | undefined {
  if (b.length < 1) return undefined;
  const version = b[0]! >> 4;
  let proto: number;
  let l4: number;
  let src: string;
  let dst: string;
  let family: 4 | 6;
  if (version === 4) {
    const ihl = (b[0]! & 0x0f) * 4;
    if (ihl < 20 || b.length < ihl) return undefined;
    family = 4;
    proto = b[9]!;
    src = bytesToAddress(b.subarray(12, 16));
    dst = bytesToAddress(b.subarray(16, 20));
    l4 = ihl;
  } else if (version === 6) {
    if (b.length < 40) return undefined;
    family = 6;
    proto = b[6]!;
    src = bytesToAddress(b.subarray(8, 24));
    dst = bytesToAddress(b.subarray(24, 40));
    l4 = 40;
  } else return undefined;
  let sport = 0;
  let dport = 0;
  if (PORTED.has(proto)) {
    if (b.length < l4 + 4) return undefined;
    sport = b.readUInt16BE(l4);
    dport = b.readUInt16BE(l4 + 2);
  }
  return { family, src, dst, proto, sport, dport };
}

/** One nfnetlink_log message (type, and what follows the netlink header); undefined for anything else. */
export function decodeNflog(type: number, data: Buffer): DroppedPacket | undefined {
  if (type !== ((NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_PACKET) || data.length < 4) return undefined;
  const a = attrMap(data.subarray(4));
  const payload = a.get(NFULA.PAYLOAD);
  if (!payload) return undefined;
  const ip = parseIpHeader(payload);
  if (!ip) return undefined;
  const rawPrefix = a.get(NFULA.PREFIX);
  const nul = rawPrefix ? rawPrefix.indexOf(0) : -1;
  const prefix = rawPrefix ? rawPrefix.subarray(0, nul < 0 ? rawPrefix.length : nul).toString("latin1") : "";
  const out: DroppedPacket = { prefix, ...ip };
  const ts = a.get(NFULA.TIMESTAMP);
  if (ts?.length === 16)
    out.timeMs = Number(ts.readBigUInt64BE(0)) * 1000 + Math.floor(Number(ts.readBigUInt64BE(8)) / 1000);
  return out;
}

function configMessage(group: number, seq: number, attribute: Buffer): Buffer {
  const payload = Buffer.concat([nfgen(0, group), attribute]);
  return message((NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_CONFIG, NLM_F_REQUEST | NLM_F_ACK, seq, payload);
}

export interface NflogOptions {
  group: number;
  recvBufferSize: number;
  onPacket: (p: DroppedPacket) => void;
  /** The kernel dropped log messages: the socket's buffer was full. */
  onOverrun: () => void;
  onError: (e: Error) => void;
}

/** The packets logged to one NFLOG group in this network namespace. */
export class NflogReader {
  private readonly sock: RawNetlinkSocket;
  private readonly acks = new Map<number, (errno: number) => void>();
  private seq = (Math.random() * 0x7fffffff) >>> 0 || 1;
  private closed = false;

  constructor(private readonly opts: NflogOptions) {
    this.sock = new RawNetlinkSocket(NETLINK_NETFILTER, {
      recvBufferSize: opts.recvBufferSize,
      sendBufferSize: 1 << 12,
    });
    this.sock.on("message", (buf: Buffer) => {
      let messages: ReturnType<typeof parseMessages>;
      try {
        messages = parseMessages(buf);
      } catch {
        return;
      }
      for (const m of messages) {
        if (m.type === NLMSG_ERROR) {
          const cb = this.acks.get(m.seq);
          this.acks.delete(m.seq);
          cb?.(m.data.length >= 4 ? -m.data.readInt32LE(0) : 0);
          continue;
        }
        const p = decodeNflog(m.type, m.data);
        if (p) opts.onPacket(p);
      }
    });
    this.sock.on("error", (e: Error & { errno?: number }) => {
      if (this.closed) return;
      if (e.errno === ENOBUFS || e.errno === -ENOBUFS) opts.onOverrun();
      else opts.onError(e);
    });
  }

  private request(attribute: Buffer): Promise<void> {
    const seq = (this.seq = (this.seq + 1) >>> 0 || 1);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.acks.delete(seq);
        reject(new Error(`NFLOG group ${this.opts.group}: no answer from the kernel`));
      }, 5000);
      this.acks.set(seq, (errno) => {
        clearTimeout(timer);
        if (errno === 0) resolve();
        else reject(new Error(`NFLOG group ${this.opts.group}: the kernel refused (errno ${errno})`));
      });
      this.sock.send(configMessage(this.opts.group, seq, attribute), {}, (e?: Error) => {
        if (e) reject(e);
      });
    });
  }

  /** Binds the group and asks for each packet's first bytes. Fails when another socket holds the group. */
  async start(): Promise<void> {
    await this.request(attr(NFULA_CFG.CMD, Buffer.from([NFULNL_CFG_CMD_BIND])));
    const mode = Buffer.alloc(6);
    mode.writeUInt32BE(COPY_RANGE, 0);
    mode.writeUInt8(NFULNL_COPY_PACKET, 4);
    await this.request(attr(NFULA_CFG.MODE, mode));
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.sock.close();
  }
}
