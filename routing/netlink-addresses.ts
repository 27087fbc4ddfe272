// Egress IPs on their interfaces, over rtnetlink.
//
// Ownership: every address egressd adds carries IFA_PROTO = OWNER.rtProtocol
// (the kernel keeps an address protocol since 5.18). Only addresses with that
// protocol are ever removed, so an address the host configured (even the same
// address egressd wants) survives egressd's shutdown. The `netlink` package
// has no field for IFA_PROTO and drops unknown attributes when parsing, so
// address messages are encoded and parsed here (struct ifaddrmsg + TLVs).
import type { RtNetlinkSocket } from "netlink";
import { OWNER, type DesiredAddress, type Family } from "../core/state.js";
import { addressBytes, bytesToAddress, canonicalAddress } from "./ip.js";
import { attr } from "./nlattr.js";
import {
  AF_INET,
  AF_INET6,
  afOf,
  NLM_F_CREATE,
  NLM_F_DUMP,
  NLM_F_EXCL,
  errnoCode,
  readLinks,
  withRtNetlink,
  type LinkIndex,
} from "./netlink-link.js";

const RTM_NEWADDR = 20;
const RTM_DELADDR = 21;
const RTM_GETADDR = 22;
const IFA_ADDRESS = 1;
const IFA_LOCAL = 2;
const IFA_FLAGS = 8;
const IFA_PROTO = 11;
const IFA_F_NODAD = 0x02;
const IFA_F_NOPREFIXROUTE = 0x200;

/** An address as the kernel reports it. */
export interface LiveAddress {
  family: Family;
  address: string;
  prefixLength: number;
  interface: string;
  ifindex: number;
  /** IFA_PROTO, 0 when absent. */
  protocol: number;
}

function ifaddrmsg(family: number, prefixLength: number, flags: number, index: number): Buffer {
  const b = Buffer.alloc(8);
  b.writeUInt8(family, 0);
  b.writeUInt8(prefixLength, 1);
  b.writeUInt8(flags & 0xff, 2);
  b.writeUInt8(0, 3); // scope global
  b.writeUInt32LE(index, 4);
  return b;
}

function parseAddressMessage(data: Buffer, links: LinkIndex): LiveAddress | undefined {
  const family = data.readUInt8(0);
  if (family !== AF_INET && family !== AF_INET6) return undefined;
  const prefixLength = data.readUInt8(1);
  const ifindex = data.readUInt32LE(4);
  let local: Buffer | undefined;
  let address: Buffer | undefined;
  let protocol = 0;
  for (let off = 8; off + 4 <= data.length; ) {
    const len = data.readUInt16LE(off);
    const type = data.readUInt16LE(off + 2) & 0x3fff;
    if (len < 4) break;
    const payload = data.subarray(off + 4, off + len);
    if (type === IFA_LOCAL) local = payload;
    else if (type === IFA_ADDRESS) address = payload;
    else if (type === IFA_PROTO && payload.length >= 1) protocol = payload.readUInt8(0);
    off += (len + 3) & ~3;
  }
  const addr = local ?? address;
  if (!addr) return undefined;
  return {
    family: family === AF_INET ? 4 : 6,
    address: bytesToAddress(addr),
    prefixLength,
    interface: links.byIndex.get(ifindex) ?? `#${ifindex}`,
    ifindex,
    protocol,
  };
}

/** All IPv4 and IPv6 addresses of the namespace. */
export async function listAddresses(rt: RtNetlinkSocket, links: LinkIndex): Promise<LiveAddress[]> {
  const out: LiveAddress[] = [];
  for (const af of [AF_INET, AF_INET6]) {
    const [msgs] = await rt.socket.request(RTM_GETADDR, [ifaddrmsg(af, 0, 0, 0)], { flags: NLM_F_DUMP });
    for (const m of msgs) {
      if (m.type !== RTM_NEWADDR) continue;
      const a = parseAddressMessage(m.data, links);
      if (a) out.push(a);
    }
  }
  return out;
}

function addressPayload(
  family: Family,
  address: string,
  prefixLength: number,
  index: number,
  withProto: boolean,
): Buffer[] {
  const bytes = addressBytes(address);
  const flags = family === 6 ? IFA_F_NODAD | IFA_F_NOPREFIXROUTE : IFA_F_NOPREFIXROUTE;
  const flagsAttr = Buffer.alloc(4);
  flagsAttr.writeUInt32LE(flags, 0);
  const parts = [
    ifaddrmsg(afOf(family), prefixLength, flags, index),
    attr(IFA_LOCAL, bytes),
    attr(IFA_ADDRESS, bytes),
    attr(IFA_FLAGS, flagsAttr),
  ];
  if (withProto) parts.push(attr(IFA_PROTO, Buffer.from([OWNER.rtProtocol])));
  return parts;
}

const key = (family: Family, address: string, ifname: string) =>
  `${family}|${canonicalAddress(address)}|${ifname}`;

export interface AddressChanges {
  added: string[];
  removed: string[];
  /** Desired addresses already present but not egressd's (left alone, never removed). */
  foreign: string[];
  /** Desired addresses whose interface does not exist (retried on the next reconcile). */
  missingInterface: string[];
}

/**
 * What reconciling addresses needs from the kernel. The real one speaks
 * rtnetlink; tests give a fake (an old kernel that drops IFA_PROTO, say).
 */
export interface AddressKernel {
  /** Interface index by name. */
  readonly links: ReadonlyMap<string, number>;
  list(): Promise<LiveAddress[]>;
  /** Adds an address marked with egressd's protocol (fails if it exists). */
  add(d: DesiredAddress, ifindex: number): Promise<void>;
  remove(a: LiveAddress): Promise<void>;
}

function rtAddressKernel(rt: RtNetlinkSocket, links: LinkIndex): AddressKernel {
  return {
    links: links.byName,
    list: () => listAddresses(rt, links),
    add: async (d, index) => {
      await rt.socket.request(RTM_NEWADDR, addressPayload(d.family, d.address, d.prefixLength, index, true), {
        flags: NLM_F_CREATE | NLM_F_EXCL,
      });
    },
    remove: (a) => deleteAddress(rt, a),
  };
}

/** Brings egressd's addresses to `desired`: adds what is missing, removes egressd's extras. */
export async function reconcileAddresses(desired: DesiredAddress[]): Promise<AddressChanges> {
  return withRtNetlink(async (rt) =>
    reconcileAddressesWith(rtAddressKernel(rt, await readLinks(rt)), desired),
  );
}

export async function reconcileAddressesWith(
  k: AddressKernel,
  desired: DesiredAddress[],
): Promise<AddressChanges> {
  const live = await k.list();
  const changes: AddressChanges = { added: [], removed: [], foreign: [], missingInterface: [] };
  const liveByKey = new Map(live.map((a) => [key(a.family, a.address, a.interface), a]));
  const want = new Set<string>();
  let checked = false;
  for (const d of desired) {
    const dk = key(d.family, d.address, d.interface);
    want.add(dk);
    const have = liveByKey.get(dk);
    const label = `${d.address}/${d.prefixLength} dev ${d.interface}`;
    if (have) {
      if (have.protocol !== OWNER.rtProtocol) changes.foreign.push(label);
      continue;
    }
    const index = k.links.get(d.interface);
    if (index === undefined) {
      changes.missingInterface.push(label);
      continue;
    }
    await k.add(d, index);
    if (!checked) {
      await checkProtocolKept(k, d, index);
      checked = true;
    }
    changes.added.push(label);
  }
  for (const a of live) {
    if (a.protocol !== OWNER.rtProtocol || want.has(key(a.family, a.address, a.interface))) continue;
    await k.remove(a);
    changes.removed.push(`${a.address}/${a.prefixLength} dev ${a.interface}`);
  }
  return changes;
}

async function deleteAddress(rt: RtNetlinkSocket, a: LiveAddress): Promise<void> {
  try {
    await rt.socket.request(
      RTM_DELADDR,
      addressPayload(a.family, a.address, a.prefixLength, a.ifindex, false),
    );
  } catch (e) {
    const code = errnoCode(e);
    if (code !== "EADDRNOTAVAIL" && code !== "ENOENT" && code !== "ENODEV") throw e;
  }
}

/**
 * A kernel older than 5.18 accepts IFA_PROTO silently and drops it, and an
 * address without the mark is one egressd would never remove. So the first
 * address added is read back before any other: without the mark it is taken
 * away again at once (it was just created with NLM_F_EXCL, so it is ours) and
 * egressd refuses to run.
 */
async function checkProtocolKept(k: AddressKernel, d: DesiredAddress, ifindex: number): Promise<void> {
  const back = (await k.list()).find(
    (a) => a.family === d.family && a.address === d.address && a.ifindex === ifindex,
  );
  if (back && back.protocol === OWNER.rtProtocol) return;
  if (back) await k.remove(back);
  throw new Error(
    `the kernel does not keep the address protocol (IFA_PROTO, Linux >= 5.18), so egressd cannot mark ` +
      `${d.address} as its own; it removed it again and adds no address on this kernel`,
  );
}

/** Removes every address that carries egressd's protocol (clean shutdown). */
export async function removeOwnedAddresses(): Promise<string[]> {
  return withRtNetlink(async (rt) => {
    const links = await readLinks(rt);
    const removed: string[] = [];
    for (const a of await listAddresses(rt, links)) {
      if (a.protocol !== OWNER.rtProtocol) continue;
      await deleteAddress(rt, a);
      removed.push(`${a.address}/${a.prefixLength} dev ${a.interface}`);
    }
    return removed;
  });
}
