// Fast path for the most frequent nftables change: adding or removing
// elements of egressd's source sets (plain address sets and interval sets),
// sent as one nf_tables batch (one transaction) over a long-lived
// NETLINK_NETFILTER socket; and the self-check's question "does egressd's
// table exist", on the same socket.
//
// Why not `nft`: a process per change costs ~5 ms to add and ~15-20 ms to
// delete an element, and the delete cost is the kernel waiting for an RCU
// grace period when nft closes its netlink socket (measured, see
// docs/dataplane.md). Worse, the process is forked from egressd's data-plane
// thread: at 100k sources that is a 450 MB process, and the fork's page-table
// copy and the copy-on-write faults after it cost that thread 10-25 ms of CPU
// per change (docs/dataplane.md, "No fork per change"). A socket that stays
// open avoids all of it. Verdict maps are left to `nft -f`.
//
// An interval set holds a range as two elements, as nft writes it: the start
// address, and the address after the end flagged NFT_SET_ELEM_INTERVAL_END. A
// range that runs to the family's last address has no end element (nft adds a
// userdata flag to its start for its own listing, which lists such a start the
// same without it). test/integration/nfnetlink-intervals.test.ts holds this
// encoding to nft's own on the kernel, step by step.
import { RawNetlinkSocket, parseMessages } from "netlink";
import { addressBytes, bytesToAddress, canonicalIPv4Value, intervalBounds } from "./ip.js";
import {
  align4,
  attr,
  attrs,
  message,
  NETLINK_NETFILTER,
  NLA_F_NESTED,
  nfgen,
  NLM_F_ACK,
  NLM_F_CREATE,
  NLM_F_REQUEST,
  NLMSG_ERROR,
} from "./nlattr.js";
import type { SetPatch } from "./nft-render.js";

const NFNL_SUBSYS_NFTABLES = 10;
const NFNL_MSG_BATCH_BEGIN = 0x10;
const NFNL_MSG_BATCH_END = 0x11;
const NFT_MSG_GETTABLE = 1;
const NFT_MSG_NEWSETELEM = 12;
const NFT_MSG_DELSETELEM = 14;
const NFPROTO_INET = 1;
const NFTA_TABLE_NAME = 1;
const NFTA_SET_ELEM_LIST_TABLE = 1;
const NFTA_SET_ELEM_LIST_SET = 2;
const NFTA_SET_ELEM_LIST_ELEMENTS = 3;
const NFTA_LIST_ELEM = 1;
const NFTA_SET_ELEM_KEY = 1;
const NFTA_SET_ELEM_FLAGS = 3;
const NFT_SET_ELEM_INTERVAL_END = 1;
const NFTA_DATA_VALUE = 1;

/** Largest patch sent over netlink, in kernel elements; larger ones go through nft -f. */
const MAX_ELEMENTS = 2000;

const str = (s: string) => Buffer.from(s + "\0");

/**
 * One kernel set element: an address key (an IPv4 address as its number, the
 * bulk of them; other keys as bytes), or an interval's start or end.
 */
interface Element {
  key: number | Buffer;
  /** The address after an interval's last (NFT_SET_ELEM_INTERVAL_END). */
  end?: boolean;
}

/** Appends the kernel elements of one set key: itself (plain sets), or an interval's start and end. */
function pushKeyElements(out: Element[], key: string, interval: boolean): void {
  if (!interval) {
    const v4 = canonicalIPv4Value(key);
    out.push({ key: v4 >= 0 ? v4 : addressBytes(key) });
    return;
  }
  const b = intervalBounds(key);
  out.push({ key: b.start });
  if (b.after !== undefined) out.push({ key: b.after, end: true });
}

/** The kernel elements of set keys (see pushKeyElements). */
function keysElements(keys: Iterable<string>, interval: boolean): Element[] {
  const out: Element[] = [];
  for (const k of keys) pushKeyElements(out, k, interval);
  return out;
}

/** A NEWSETELEM or DELSETELEM message (`add`) for address keys of one plain set (also what the kernel notifies). */
export function setElementsMessage(
  add: boolean,
  seq: number,
  table: string,
  set: string,
  keys: string[],
): Buffer {
  const elems = keysElements(keys, false);
  return add
    ? elementsMessage(NFT_MSG_NEWSETELEM, NLM_F_CREATE, seq, table, set, elems, 0, elems.length)
    : elementsMessage(NFT_MSG_DELSETELEM, 0, seq, table, set, elems, 0, elems.length);
}

const keyLength = (e: Element) => (typeof e.key === "number" ? 4 : e.key.length);

/** Writes an attribute header (struct nlattr) at `at`. */
function header(b: Buffer, at: number, length: number, type: number): void {
  b.writeUInt16LE(length, at);
  b.writeUInt16LE(type, at + 2);
}

/**
 * One NEWSETELEM or DELSETELEM message for elems[from, to), written into one
 * buffer: nlmsghdr, nfgenmsg, the table's and the set's names, and the nested
 * list of elements, each LIST_ELEM { KEY { DATA_VALUE key }, [FLAGS end] }.
 * Written in place, not assembled from a buffer per attribute: a 100k-element
 * table filled at start made 600k small buffers that way, 185-300 ms of
 * encoding and most of the thread's collections while it ran.
 */
function elementsMessage(
  type: number,
  flags: number,
  seq: number,
  table: string,
  set: string,
  elems: Element[],
  from: number,
  to: number,
): Buffer {
  const tableLen = Buffer.byteLength(table) + 1;
  const setLen = Buffer.byteLength(set) + 1;
  let listLen = 4;
  for (let i = from; i < to; i++) listLen += 12 + keyLength(elems[i]!) + (elems[i]!.end ? 8 : 0);
  if (listLen > 0xffff) throw new Error(`nf_tables: ${to - from} elements do not fit one attribute`);
  const size = 16 + 4 + 4 + align4(tableLen) + 4 + align4(setLen) + listLen;
  const b = Buffer.alloc(size); // zeroed: the names' terminators and padding
  b.writeUInt32LE(size, 0);
  b.writeUInt16LE((NFNL_SUBSYS_NFTABLES << 8) | type, 4);
  b.writeUInt16LE(flags, 6);
  b.writeUInt32LE(seq, 8);
  b[16] = NFPROTO_INET; // struct nfgenmsg: family, version 0, resource id 0
  let at = 20;
  header(b, at, 4 + tableLen, NFTA_SET_ELEM_LIST_TABLE);
  b.write(table, at + 4);
  at += 4 + align4(tableLen);
  header(b, at, 4 + setLen, NFTA_SET_ELEM_LIST_SET);
  b.write(set, at + 4);
  at += 4 + align4(setLen);
  header(b, at, listLen, NFTA_SET_ELEM_LIST_ELEMENTS | NLA_F_NESTED);
  at += 4;
  for (let i = from; i < to; i++) {
    const e = elems[i]!;
    const klen = keyLength(e);
    const elen = 12 + klen + (e.end ? 8 : 0);
    header(b, at, elen, NFTA_LIST_ELEM | NLA_F_NESTED);
    header(b, at + 4, 8 + klen, NFTA_SET_ELEM_KEY | NLA_F_NESTED);
    header(b, at + 8, 4 + klen, NFTA_DATA_VALUE);
    if (typeof e.key === "number") b.writeUInt32BE(e.key, at + 12);
    else e.key.copy(b, at + 12);
    if (e.end) {
      header(b, at + 12 + klen, 8, NFTA_SET_ELEM_FLAGS);
      b.writeUInt32BE(NFT_SET_ELEM_INTERVAL_END, at + 16 + klen);
    }
    at += elen;
  }
  return b;
}

/** Writes element patches of address and interval sets over one persistent netfilter netlink socket. */
export class NfElementWriter {
  private readonly sock: RawNetlinkSocket;
  private seq = Math.floor(Math.random() * 0x7fffffff);
  private readonly waiting = new Map<number, (errno: number) => void>();

  /** True when every patch touches only address or interval sets (no maps) and the patch is small. */
  static canWrite(patches: SetPatch[]): boolean {
    let n = 0;
    for (const p of patches) {
      if (p.map) return false;
      n += (p.add.length + p.remove.length) * (p.interval ? 2 : 1);
    }
    return n > 0 && n <= MAX_ELEMENTS;
  }

  constructor() {
    this.sock = new RawNetlinkSocket(NETLINK_NETFILTER, { recvBufferSize: 1 << 20, sendBufferSize: 1 << 20 });
    this.sock.unref();
    this.sock.on("message", (buf: Buffer) => {
      let messages: ReturnType<typeof parseMessages>;
      try {
        messages = parseMessages(buf);
      } catch {
        return; // a malformed datagram answers nothing; a batch without its answer times out
      }
      for (const m of messages) {
        if (m.type !== NLMSG_ERROR) continue;
        const errno = -m.data.readInt32LE(0);
        const cb = this.waiting.get(m.seq);
        if (cb) {
          this.waiting.delete(m.seq);
          cb(errno);
        }
      }
    });
  }

  private nextSeq(): number {
    this.seq = (this.seq + 1) >>> 0 || 1;
    return this.seq;
  }

  /** Applies all patches as one nf_tables transaction: deletions first, then additions. */
  async apply(table: string, patches: SetPatch[]): Promise<void> {
    const msgs: Buffer[] = [];
    const acks: Promise<number>[] = [];
    const begin = this.nextSeq();
    msgs.push(message(NFNL_MSG_BATCH_BEGIN, NLM_F_REQUEST, begin, nfgen(0, NFNL_SUBSYS_NFTABLES)));
    let failed: (errno: number) => void = () => {};
    const firstError = new Promise<number[]>((_, reject) => {
      failed = (errno) => reject(new Error(`nf_tables element batch failed: errno ${errno}`));
    });
    const seqs: number[] = [];
    const add = (type: number, flags: number, set: string, elems: Element[]) => {
      for (let i = 0; i < elems.length; i += 256) {
        const seq = this.nextSeq();
        seqs.push(seq);
        const to = Math.min(i + 256, elems.length);
        msgs.push(elementsMessage(type, flags | NLM_F_REQUEST | NLM_F_ACK, seq, table, set, elems, i, to));
        acks.push(
          new Promise<number>((resolve) =>
            this.waiting.set(seq, (errno) => {
              if (errno !== 0) failed(errno);
              resolve(errno);
            }),
          ),
        );
      }
    };
    for (const p of patches)
      if (p.remove.length)
        add(
          NFT_MSG_DELSETELEM,
          0,
          p.set,
          keysElements(
            p.remove.map(([k]) => k),
            p.interval,
          ),
        );
    for (const p of patches)
      if (p.add.length)
        add(
          NFT_MSG_NEWSETELEM,
          NLM_F_CREATE,
          p.set,
          keysElements(
            p.add.map(([k]) => k),
            p.interval,
          ),
        );
    msgs.push(message(NFNL_MSG_BATCH_END, NLM_F_REQUEST, this.nextSeq(), nfgen(0, NFNL_SUBSYS_NFTABLES)));
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<number[]>((_, reject) => {
      timer = setTimeout(() => {
        reject(new Error("nf_tables element batch: no answer within 5 s"));
      }, 5000);
    });
    this.sock.ref();
    try {
      await new Promise<void>((resolve, reject) =>
        this.sock.send(Buffer.concat(msgs), {}, (err) => (err ? reject(err) : resolve())),
      );
      const errnos = await Promise.race([Promise.all(acks), firstError, timeout]);
      const bad = errnos.find((e) => e !== 0);
      if (bad !== undefined) throw new Error(`nf_tables element batch failed: errno ${bad}`);
    } finally {
      clearTimeout(timer);
      for (const s of seqs) this.waiting.delete(s);
      this.sock.unref();
    }
  }

  /**
   * Whether table `table` (family inet) exists: one NFT_MSG_GETTABLE on the
   * kept socket. The kernel answers with the table alone (no sets, no
   * elements), so this costs the same with 10 or 100k elements, unlike
   * `nft list table`, which reads the whole table first.
   */
  async hasTable(table: string, timeoutMs = 1000): Promise<boolean> {
    const seq = this.nextSeq();
    const msg = message(
      (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETTABLE,
      NLM_F_REQUEST | NLM_F_ACK,
      seq,
      Buffer.concat([nfgen(NFPROTO_INET, 0), attr(NFTA_TABLE_NAME, str(table))]),
    );
    let timer: NodeJS.Timeout | undefined;
    this.sock.ref();
    try {
      const errno = await new Promise<number>((resolve, reject) => {
        this.waiting.set(seq, resolve);
        timer = setTimeout(() => reject(new Error(`nf_tables: no answer about table ${table}`)), timeoutMs);
        this.sock.send(msg, {}, (err) => err && reject(err));
      });
      if (errno === 0) return true;
      if (errno === ENOENT) return false;
      throw new Error(`nf_tables: asking for table ${table} failed: errno ${errno}`);
    } finally {
      clearTimeout(timer);
      this.waiting.delete(seq);
      this.sock.unref();
    }
  }

  close(): void {
    this.sock.close();
  }
}

const ENOENT = 2;

/** The kernel's multicast group of nf_tables changes. */
const NFNLGRP_NFTABLES = 7;

/**
 * The element keys a netlink message of nf_tables notifications adds
 * (NEWSETELEM), as addresses: 4- and 16-byte keys only (the address sets;
 * interval ends and map values are not told apart here).
 */
export function addedElementKeys(buf: Buffer): string[] {
  const out: string[] = [];
  let messages: ReturnType<typeof parseMessages>;
  try {
    messages = parseMessages(buf);
  } catch {
    return out; // not a well-formed netlink datagram: nothing is read from it
  }
  for (const m of messages) {
    if (m.type !== ((NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWSETELEM)) continue;
    // After the 4-byte nfgenmsg: ELEMENTS > LIST_ELEM > KEY > DATA_VALUE.
    for (const list of attrs(m.data.subarray(4), NFTA_SET_ELEM_LIST_ELEMENTS))
      for (const elem of attrs(list, NFTA_LIST_ELEM))
        for (const key of attrs(elem, NFTA_SET_ELEM_KEY))
          for (const value of attrs(key, NFTA_DATA_VALUE))
            if (value.length === 4 || value.length === 16) out.push(bytesToAddress(value));
  }
  return out;
}

/**
 * Follows the elements added to nf_tables sets in this network namespace,
 * from the kernel's notifications: nothing is read or cached (unlike `nft
 * monitor`, which loads the whole ruleset first: a second of CPU at 100k
 * elements).
 */
export function watchAddedElements(onKeys: (keys: string[]) => void): { close(): void } {
  const sock = new RawNetlinkSocket(NETLINK_NETFILTER, { recvBufferSize: 8 << 20, sendBufferSize: 1 << 16 });
  sock.addMembership(NFNLGRP_NFTABLES);
  sock.on("message", (buf: Buffer) => {
    const keys = addedElementKeys(buf);
    if (keys.length > 0) onKeys(keys);
  });
  return { close: () => sock.close() };
}
