// Address arithmetic for the data plane: parse addresses and nft intervals into
// numbers, and print them back in one canonical form.
import type { Family } from "../core/state.js";
import { addressFromBytes, addressToBytes, formatAddress, mustParseAddress, parseRange } from "../core/ip.js";

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
export function canonicalAddress(address: string): string {
  const a = mustParseAddress(address);
  return formatAddress(a.family, a.value);
}

export function bytesToAddress(bytes: Uint8Array): string {
  const a = addressFromBytes(bytes);
  return formatAddress(a.family, a.value);
}

function fromBig(family: Family, value: bigint): string {
  return formatAddress(family, value);
}

/** An inclusive address interval. */
export interface Interval {
  family: Family;
  start: bigint;
  end: bigint;
}

/** Parses "a.b.c.d", "a.b.c.d/len" or "a-b" (IPv4 or IPv6). Rejects host bits set in a prefix. */
export function parseInterval(text: string): Interval {
  const r = parseRange(text);
  return { family: r.family, start: r.lo, end: r.hi };
}

/** True when the interval is one address. */
export function isSingle(iv: Interval): boolean {
  return iv.start === iv.end;
}

/** The prefix length if the interval is exactly one prefix, else undefined. */
function prefixLength(iv: Interval): number | undefined {
  const bits = iv.family === 4 ? 32 : 128;
  const size = iv.end - iv.start + 1n;
  if ((size & (size - 1n)) !== 0n) return undefined;
  let host = 0;
  while (1n << BigInt(host) < size) host++;
  if ((iv.start & (size - 1n)) !== 0n) return undefined;
  return bits - host;
}

/** One canonical nft text per interval: "addr", "addr/len" or "a-b". */
export function formatInterval(iv: Interval): string {
  if (isSingle(iv)) return fromBig(iv.family, iv.start);
  const len = prefixLength(iv);
  if (len !== undefined) return `${fromBig(iv.family, iv.start)}/${len}`;
  return `${fromBig(iv.family, iv.start)}-${fromBig(iv.family, iv.end)}`;
}

/** Canonical form of an interval text (so "10.0.0.0-10.0.0.255" and "10.0.0.0/24" compare equal). */
export function canonicalInterval(text: string): string {
  return formatInterval(parseInterval(text));
}

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
  const iv = parseInterval(text);
  return { key: formatInterval(iv), family: iv.family, single: isSingle(iv) };
}
