// Addresses as the data plane meets them: raw bytes from netlink, nft
// interval texts, and the one canonical text form they are compared in.
import type { Family } from "../core/state.js";
import {
  addressFromBytes,
  canonicalText,
  addressToBytes,
  formatAddress,
  formatInterval,
  mustParseAddress,
  parseIPv4Number,
  parseRange,
} from "../core/ip.js";

// Everything here rests on the one address module, core/ip.ts: the data plane
// and the planner parse and print addresses the same way.

/** The address as raw bytes (4 or 16). */
export function addressBytes(address: string): Buffer {
  return addressToBytes(mustParseAddress(address));
}

export function familyOf(address: string): Family {
  return mustParseAddress(address).family;
}

/** Canonical text of an address (lower case, compressed IPv6; IPv4-mapped stays IPv6). */
export const canonicalAddress = canonicalText;

export function bytesToAddress(bytes: Uint8Array): string {
  const a = addressFromBytes(bytes);
  return formatAddress(a.family, a.value);
}

/** Canonical form of an interval text, "addr", "addr/len" or "a-b" (so "10.0.0.0-10.0.0.255" and "10.0.0.0/24" compare equal). */
export function canonicalInterval(text: string): string {
  const r = parseRange(text);
  return formatInterval(r.family, r.lo, r.hi);
}

/** The number of a dotted-quad IPv4 address in canonical form (no leading zeros), or -1. */
export const canonicalIPv4Value = (text: string): number => parseIPv4Number(text) ?? -1;

/** Whether `text` is an IPv4 address in canonical form (canonicalAddress would return it unchanged). */
export const isCanonicalIPv4 = (text: string): boolean => canonicalIPv4Value(text) >= 0;

const DOTTED = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/;

/**
 * Canonical key, family and single-ness of an interval text, with a fast path
 * for plain IPv4 addresses (the bulk of source entries: one per pod).
 */
export function intervalKey(text: string): { key: string; family: Family; single: boolean } {
  const m = DOTTED.exec(text);
  if (m) {
    const a = Number(m[1]);
    const b = Number(m[2]);
    const c = Number(m[3]);
    const d = Number(m[4]);
    if (a < 256 && b < 256 && c < 256 && d < 256)
      return { key: `${a}.${b}.${c}.${d}`, family: 4, single: true };
  }
  const r = parseRange(text);
  return { key: formatInterval(r.family, r.lo, r.hi), family: r.family, single: r.lo === r.hi };
}

/**
 * An interval text's kernel bounds in an nftables interval set: its start,
 * and the address after its end (undefined when it ends at the family's last
 * address), each as 4 or 16 network-order bytes.
 */
export function intervalBounds(text: string): { start: Buffer; after: Buffer | undefined } {
  const r = parseRange(text);
  const last = r.family === 4 ? 0xffff_ffffn : (1n << 128n) - 1n;
  return {
    start: addressToBytes({ family: r.family, value: r.lo }),
    after: r.hi === last ? undefined : addressToBytes({ family: r.family, value: r.hi + 1n }),
  };
}
