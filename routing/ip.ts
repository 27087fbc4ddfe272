// Address arithmetic for the data plane: parse addresses and nft intervals into
// numbers, and print them back in one canonical form.
import ipaddr from "ipaddr.js";
import type { Family } from "../core/state.js";

/** The address as raw bytes (4 or 16). */
export function addressBytes(address: string): Buffer {
  return Buffer.from(ipaddr.parse(address).toByteArray());
}

export function familyOf(address: string): Family {
  return ipaddr.parse(address).kind() === "ipv4" ? 4 : 6;
}

/** Canonical text of an address (lower case, compressed IPv6; IPv4-mapped stays IPv6). */
export function canonicalAddress(address: string): string {
  return ipaddr.parse(address).toString();
}

export function bytesToAddress(bytes: Uint8Array): string {
  return ipaddr.fromByteArray(Array.from(bytes)).toString();
}

function toBig(address: string): { family: Family; value: bigint } {
  const parsed = ipaddr.parse(address);
  let value = 0n;
  for (const b of parsed.toByteArray()) value = (value << 8n) | BigInt(b);
  return { family: parsed.kind() === "ipv4" ? 4 : 6, value };
}

function fromBig(family: Family, value: bigint): string {
  const n = family === 4 ? 4 : 16;
  const bytes: number[] = new Array(n);
  for (let i = n - 1; i >= 0; i--) {
    bytes[i] = Number(value & 0xffn);
    value >>= 8n;
  }
  return ipaddr.fromByteArray(bytes).toString();
}

/** An inclusive address interval. */
export interface Interval {
  family: Family;
  start: bigint;
  end: bigint;
}

/** Parses "a.b.c.d", "a.b.c.d/len" or "a-b" (IPv4 or IPv6). Rejects host bits set in a prefix. */
export function parseInterval(text: string): Interval {
  const s = text.trim();
  const dash = s.indexOf("-");
  if (dash > 0) {
    const a = toBig(s.slice(0, dash).trim());
    const b = toBig(s.slice(dash + 1).trim());
    if (a.family !== b.family) throw new Error(`interval ${text}: mixed families`);
    if (b.value < a.value) throw new Error(`interval ${text}: end before start`);
    return { family: a.family, start: a.value, end: b.value };
  }
  const slash = s.indexOf("/");
  if (slash > 0) {
    const a = toBig(s.slice(0, slash));
    const bits = a.family === 4 ? 32 : 128;
    const len = Number(s.slice(slash + 1));
    if (!Number.isInteger(len) || len < 0 || len > bits)
      throw new Error(`interval ${text}: bad prefix length`);
    const hostMask = (1n << BigInt(bits - len)) - 1n;
    if ((a.value & hostMask) !== 0n) throw new Error(`interval ${text}: host bits set`);
    return { family: a.family, start: a.value, end: a.value | hostMask };
  }
  const a = toBig(s);
  return { family: a.family, start: a.value, end: a.value };
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
