// IPv4/IPv6 addresses and prefixes as numbers: strict parsing, canonical
// formatting and interval helpers. Addresses are bigints so that both families
// share one code path; IPv4 parsing stays on plain numbers until the end.
import type { Family } from "./state.js";

export const BITS: Record<Family, number> = { 4: 32, 6: 128 };

export interface Address {
  family: Family;
  value: bigint;
}

/** A prefix (CIDR). A bare address is a prefix of host length. */
export interface Prefix {
  family: Family;
  /** First address (network address). */
  lo: bigint;
  /** Last address. */
  hi: bigint;
  len: number;
}

/** The number of an IPv4 address in dotted-quad form, without leading zeros; undefined for any other text. */
export function parseIPv4Number(s: string): number | undefined {
  let value = 0;
  let part = 0;
  let digits = 0;
  let dots = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c === 46 /* . */) {
      if (digits === 0) return undefined;
      value = value * 256 + part;
      part = 0;
      digits = 0;
      dots++;
      if (dots > 3) return undefined;
    } else if (c >= 48 && c <= 57) {
      // No leading zeros: "010" is octal in some parsers and decimal in others.
      if (digits === 1 && part === 0) return undefined;
      part = part * 10 + (c - 48);
      digits++;
      if (part > 255) return undefined;
    } else {
      return undefined;
    }
  }
  if (dots !== 3 || digits === 0) return undefined;
  return value * 256 + part;
}

function parseHexGroup(s: string): number | undefined {
  if (s.length < 1 || s.length > 4) return undefined;
  let v = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    let d: number;
    if (c >= 48 && c <= 57) d = c - 48;
    else if (c >= 97 && c <= 102) d = c - 87;
    else if (c >= 65 && c <= 70) d = c - 55;
    else return undefined;
    v = v * 16 + d;
  }
  return v;
}

/** Parses the groups of one side of "::" (may end in a dotted IPv4 tail when `tail`). */
function parseGroups(s: string, tail: boolean): number[] | undefined {
  if (s === "") return [];
  const parts = s.split(":");
  const groups: number[] = [];
  for (let i = 0; i < parts.length; i++) {
    const p = parts[i]!;
    if (tail && i === parts.length - 1 && p.includes(".")) {
      const v4 = parseIPv4Number(p);
      if (v4 === undefined) return undefined;
      groups.push(Math.floor(v4 / 65536), v4 % 65536);
    } else {
      const g = parseHexGroup(p);
      if (g === undefined) return undefined;
      groups.push(g);
    }
  }
  return groups;
}

function parseIPv6(s: string): bigint | undefined {
  // Zone ids (fe80::1%eth0) are not addresses egressd can use.
  if (s.length < 2 || s.length > 45 || s.includes("%")) return undefined;
  const halves = s.split("::");
  let groups: number[];
  if (halves.length === 1) {
    const g = parseGroups(s, true);
    if (g === undefined || g.length !== 8) return undefined;
    groups = g;
  } else if (halves.length === 2) {
    const head = parseGroups(halves[0]!, false);
    const rest = parseGroups(halves[1]!, true);
    if (head === undefined || rest === undefined || head.length + rest.length > 7) return undefined;
    groups = [...head, ...new Array<number>(8 - head.length - rest.length).fill(0), ...rest];
  } else {
    return undefined;
  }
  let v = 0n;
  for (const g of groups) v = (v << 16n) | BigInt(g);
  return v;
}

/** Parses an address without prefix length. Returns undefined if it is not one. */
export function parseAddress(s: string): Address | undefined {
  if (s.includes(":")) {
    const v = parseIPv6(s);
    return v === undefined ? undefined : { family: 6, value: v };
  }
  const v = parseIPv4Number(s);
  return v === undefined ? undefined : { family: 4, value: BigInt(v) };
}

export function formatAddress(family: Family, value: bigint): string {
  if (family === 4) return formatAddress4(Number(value));
  const groups: number[] = [];
  for (let i = 7; i >= 0; i--) groups.push(Number((value >> BigInt(i * 16)) & 0xffffn));
  // RFC 5952: compress the longest run (>= 2) of zero groups, the first one on a tie.
  let bestStart = -1;
  let bestLen = 1;
  for (let i = 0; i < 8; ) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLen) {
      bestStart = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = (g: number[]): string => g.map((x) => x.toString(16)).join(":");
  if (bestStart < 0) return hex(groups);
  return `${hex(groups.slice(0, bestStart))}::${hex(groups.slice(bestStart + bestLen))}`;
}

export function hostMask(family: Family, len: number): bigint {
  return (1n << BigInt(BITS[family] - len)) - 1n;
}

export type PrefixResult = { ok: true; prefix: Prefix } | { ok: false; message: string };

/**
 * Parses "ADDR/LEN" or a bare "ADDR" (host prefix). Host bits set is an error
 * that names the canonical network, e.g. "10.0.0.1/8 has host bits set (did you mean 10.0.0.0/8?)".
 */
export function parsePrefix(s: string): PrefixResult {
  const slash = s.indexOf("/");
  const addrText = slash < 0 ? s : s.slice(0, slash);
  const addr = parseAddress(addrText);
  if (addr === undefined) {
    return {
      ok: false,
      message: `${JSON.stringify(s)} is not ${slash < 0 ? "an IP address or CIDR" : "a CIDR"}`,
    };
  }
  const bits = BITS[addr.family];
  let len = bits;
  if (slash >= 0) {
    const lenText = s.slice(slash + 1);
    if (!/^(0|[1-9][0-9]{0,2})$/.test(lenText) || Number(lenText) > bits) {
      return {
        ok: false,
        message: `${s} is not a CIDR (prefix length must be 0-${bits} for IPv${addr.family})`,
      };
    }
    len = Number(lenText);
  }
  const mask = hostMask(addr.family, len);
  if ((addr.value & mask) !== 0n) {
    const canonical = `${formatAddress(addr.family, addr.value & ~mask)}/${len}`;
    return { ok: false, message: `${s} has host bits set (did you mean ${canonical}?)` };
  }
  return { ok: true, prefix: { family: addr.family, lo: addr.value, hi: addr.value | mask, len } };
}

/** Like parsePrefix, for input already validated: throws on error. */
export function mustParsePrefix(s: string): Prefix {
  const r = parsePrefix(s);
  if (!r.ok) throw new Error(r.message);
  return r.prefix;
}

export function formatPrefix(p: Prefix): string {
  return `${formatAddress(p.family, p.lo)}/${p.len}`;
}

export function contains(outer: Prefix, inner: Prefix): boolean {
  return outer.family === inner.family && outer.lo <= inner.lo && inner.hi <= outer.hi;
}

/**
 * Formats the inclusive interval [lo, hi] in nft element syntax: a single
 * address, a prefix when the interval is exactly one, else "lo-hi".
 */
export function formatInterval(family: Family, lo: bigint, hi: bigint): string {
  if (lo === hi) return formatAddress(family, lo);
  const size = hi - lo + 1n;
  if ((size & (size - 1n)) === 0n && (lo & (size - 1n)) === 0n) {
    const hostBits = size.toString(2).length - 1;
    return `${formatAddress(family, lo)}/${BITS[family] - hostBits}`;
  }
  return `${formatAddress(family, lo)}-${formatAddress(family, hi)}`;
}

/**
 * A prefix as the planner's interval code uses it: numbers for IPv4 (exact,
 * and far cheaper than bigints at 100k entries), bigints for IPv6.
 */
export type Span =
  | { family: 4; lo: number; hi: number; len: number }
  | { family: 6; lo: bigint; hi: bigint; len: number };

/** Parses a valid prefix (as checked by parsePrefix) into a Span; throws on error. */
export function mustParseSpan(s: string): Span {
  if (!s.includes(":")) {
    const slash = s.indexOf("/");
    const v = parseIPv4Number(slash < 0 ? s : s.slice(0, slash));
    const len = slash < 0 ? 32 : Number(s.slice(slash + 1));
    if (v !== undefined && Number.isInteger(len) && len >= 0 && len <= 32) {
      const size = 2 ** (32 - len);
      if (v % size === 0) return { family: 4, lo: v, hi: v + size - 1, len };
    }
  }
  const p = mustParsePrefix(s);
  if (p.family === 4) return { family: 4, lo: Number(p.lo), hi: Number(p.hi), len: p.len };
  return { family: 6, lo: p.lo, hi: p.hi, len: p.len };
}

/** formatInterval for IPv4 addresses held as numbers. */
export function formatInterval4(lo: number, hi: number): string {
  if (lo === hi) return formatAddress4(lo);
  const size = hi - lo + 1;
  const hostBits = Math.log2(size);
  if (Number.isInteger(hostBits) && lo % size === 0) return `${formatAddress4(lo)}/${32 - hostBits}`;
  return `${formatAddress4(lo)}-${formatAddress4(hi)}`;
}

const OCTETS = Array.from({ length: 256 }, (_, i) => String(i));

export function formatAddress4(n: number): string {
  return (
    OCTETS[n >>> 24]! +
    "." +
    OCTETS[(n >>> 16) & 255]! +
    "." +
    OCTETS[(n >>> 8) & 255]! +
    "." +
    OCTETS[n & 255]!
  );
}

/**
 * Address space that is never forwarded between networks (RFC 6890 and the
 * RFCs it names): it can never be an egress IP, a BGP peer or router id, and
 * it is never advertised, whatever a destination covers.
 */
export const NEVER_ROUTED: readonly { prefix: Prefix; what: string }[] = [
  ["0.0.0.0/8", "in 0.0.0.0/8 ('this network', RFC 791)"],
  ["127.0.0.0/8", "a loopback address"],
  ["169.254.0.0/16", "an IPv4 link-local address"],
  ["224.0.0.0/4", "a multicast address"],
  ["240.0.0.0/4", "in 240.0.0.0/4 (reserved, and the limited broadcast address)"],
  ["::/128", "the unspecified address"],
  ["::1/128", "the IPv6 loopback address"],
  ["::ffff:0:0/96", "an IPv4-mapped IPv6 address (write the IPv4 address itself)"],
  ["fe80::/10", "an IPv6 link-local address"],
  ["ff00::/8", "a multicast address"],
].map(([prefix, what]) => ({ prefix: mustParsePrefix(prefix!), what: what! }));

/** What special-use block an address is in ("a loopback address"), or undefined for an ordinary one. */
export function neverRouted(a: Address): string | undefined {
  return NEVER_ROUTED.find(({ prefix: p }) => p.family === a.family && p.lo <= a.value && a.value <= p.hi)
    ?.what;
}

/** An IPv6 link-local address (fe80::/10): usable only together with its interface. */
export function isLinkLocal6(a: Address): boolean {
  return a.family === 6 && a.value >> 118n === 0x3fan;
}

export type PeerAddressResult =
  | { ok: true; address: Address; zone?: string; canonical: string }
  | { ok: false; message: string };

/**
 * A Linux interface name: at most 15 bytes (IFNAMSIZ 16, with the NUL), no
 * '/', ':' or white space. The config schema publishes the same pattern.
 */
export const IFNAME_PATTERN = "^[A-Za-z0-9_][A-Za-z0-9_.@-]{0,14}$";
const IFNAME = new RegExp(IFNAME_PATTERN);

export function isInterfaceName(s: string): boolean {
  return IFNAME.test(s);
}

/**
 * A BGP peer or session address: an IP address, or an IPv6 link-local one
 * with the interface it lives on, "fe80::1%eth1" (data-centre fabrics peer
 * over link-local addresses). A link-local address without its interface is
 * ambiguous and refused; an interface on any other address is meaningless
 * and refused too. `canonical` is the RFC 5952 form, with "%zone" kept.
 */
export function parsePeerAddress(s: string): PeerAddressResult {
  const pct = s.indexOf("%");
  const text = pct < 0 ? s : s.slice(0, pct);
  const zone = pct < 0 ? undefined : s.slice(pct + 1);
  const address = parseAddress(text);
  if (address === undefined) return { ok: false, message: `${JSON.stringify(s)} is not an IP address` };
  const canonical = formatAddress(address.family, address.value);
  if (isLinkLocal6(address)) {
    if (zone === undefined)
      return { ok: false, message: `${s} is link-local: name its interface too, e.g. ${canonical}%eth1` };
    if (!IFNAME.test(zone))
      return { ok: false, message: `${JSON.stringify(zone)} in ${s} is not an interface name` };
    return { ok: true, address, zone, canonical: `${canonical}%${zone}` };
  }
  if (zone !== undefined)
    return { ok: false, message: `${s}: only an IPv6 link-local address takes an interface (%${zone})` };
  return { ok: true, address, canonical };
}

/** An inclusive range of addresses of one family. */
export type Range = { family: Family; lo: bigint; hi: bigint };

/**
 * Parses an address interval as nft writes them: "a", "a/len" or "a-b".
 * Throws, naming the text, when it is not one.
 */
export function parseRange(text: string): Range {
  const s = text.trim();
  const dash = s.indexOf("-");
  if (dash > 0) {
    const lo = parseAddress(s.slice(0, dash).trim());
    const hi = parseAddress(s.slice(dash + 1).trim());
    if (!lo || !hi) throw new Error(`interval ${text}: not two addresses`);
    if (lo.family !== hi.family) throw new Error(`interval ${text}: mixed families`);
    if (hi.value < lo.value) throw new Error(`interval ${text}: end before start`);
    return { family: lo.family, lo: lo.value, hi: hi.value };
  }
  const p = parsePrefix(s);
  if (!p.ok) throw new Error(`interval ${text}: ${p.message}`);
  return { family: p.prefix.family, lo: p.prefix.lo, hi: p.prefix.hi };
}

/** An address as raw network-order bytes (4 or 16). */
export function addressToBytes(a: Address): Buffer {
  const n = a.family === 4 ? 4 : 16;
  const b = Buffer.alloc(n);
  let v = a.value;
  for (let i = n - 1; i >= 0; i--) {
    b[i] = Number(v & 0xffn);
    v >>= 8n;
  }
  return b;
}

/** The address in 4 or 16 network-order bytes. */
export function addressFromBytes(bytes: Uint8Array): Address {
  if (bytes.length !== 4 && bytes.length !== 16) throw new Error(`${bytes.length} bytes is not an address`);
  let v = 0n;
  for (const x of bytes) v = (v << 8n) | BigInt(x);
  return { family: bytes.length === 4 ? 4 : 6, value: v };
}

/** Parses an address, or throws naming it. */
export function mustParseAddress(s: string, what = "address"): Address {
  const a = parseAddress(s);
  if (!a) throw new Error(`${JSON.stringify(s)} is not an IP ${what === "address" ? "address" : what}`);
  return a;
}

/** Canonical text of an address (RFC 5952 for IPv6); throws on what is not one. */
export function canonicalText(s: string): string {
  const a = mustParseAddress(s);
  return formatAddress(a.family, a.value);
}

/** An address as plans keep it: its family, canonical text and value (to sort by); `fail` makes the error for what is not one. */
export function canonicalEntry(
  text: string,
  fail: (message: string) => Error = (m) => new Error(m),
): { family: Family; address: string; value: bigint } {
  const a = parseAddress(text);
  if (a === undefined) throw fail(`${text} is not an IP address`);
  return { family: a.family, address: formatAddress(a.family, a.value), value: a.value };
}

/** Order of canonicalEntry's results: IPv4 first, then by value. */
export const byFamilyThenValue = (
  a: { family: Family; value: bigint },
  b: { family: Family; value: bigint },
) => a.family - b.family || (a.value < b.value ? -1 : a.value > b.value ? 1 : 0);

/** An IPv4-mapped IPv6 address (::ffff:a.b.c.d) as the IPv4 address it carries; any other unchanged. */
export function unmapV4(a: Address): Address {
  return a.family === 6 && a.value >> 32n === 0xffffn ? { family: 4, value: a.value & 0xffffffffn } : a;
}
