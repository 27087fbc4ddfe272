// egressd's own view of BGP: global settings, peers and paths, with the
// validation and canonical forms the reconcilers compare. Pure: no I/O, no
// generated types (those stay in the codecs).
import { DEFAULTS } from "./defaults.js";
import {
  formatAddress,
  isInterfaceName,
  isLinkLocal6,
  parseAddress,
  parsePrefix as parseCidr,
} from "./ip.js";

export type AddressFamily = "ipv4-unicast" | "ipv6-unicast";

/** BGP speaker settings (gobgpd StartBgp). */
export interface BgpGlobal {
  asn: number;
  /** Dotted-quad router id. */
  routerId: string;
  /** TCP port gobgpd listens on for BGP; -1 means it does not listen (it only connects out). */
  listenPort: number;
  /** Addresses to listen on (default: all). */
  listenAddresses?: string[];
}

/** One BGP neighbor. Absent fields take the defaults in PEER_DEFAULTS. */
export interface BgpPeer {
  /** Neighbor address, IPv4 or IPv6. */
  address: string;
  peerAsn: number;
  /** TCP-MD5 (RFC 2385) password; empty or absent means none. */
  password?: string;
  /** eBGP multihop TTL; absent or 0 means directly connected (TTL 1). */
  ebgpMultihopTtl?: number;
  /** Seconds. */
  holdTime?: number;
  /** Seconds; default holdTime / 3. */
  keepaliveInterval?: number;
  /** Seconds between outgoing connection attempts (gobgpd waits at least 5). */
  connectRetry?: number;
  /**
   * GTSM (RFC 5082, "ttl-security"): send with TTL 255 and accept only TTL 255,
   * so the session can only come from the directly connected peer. The peer
   * must do the same (FRR: `neighbor X ttl-security hops 1`).
   */
  ttlSecurity?: boolean;
  /** Source address for the session. */
  localAddress?: string;
  /** Advertise the graceful-restart capability (peers then keep our routes for restartTime after we go away). */
  gracefulRestart?: boolean;
  /** Seconds; only with gracefulRestart. Default: the hold time. */
  restartTime?: number;
  /** Address families to negotiate; default both unicast families. */
  families?: AddressFamily[];
  /** Never connect out; wait for the neighbor to connect. */
  passive?: boolean;
  description?: string;
}

/** A locally originated path. */
export interface BgpPath {
  /** CIDR, e.g. "203.0.113.0/24" or "2001:db8::/48". */
  prefix: string;
  /** Next hop; same family as the prefix. */
  nextHop: string;
  /** MULTI_EXIT_DISC. */
  med?: number;
  /** Standard communities, "ASN:VALUE" (e.g. "65000:100") or no-export / no-advertise / no-export-subconfed. */
  communities?: string[];
  /**
   * Extra copies of our own ASN in front of the AS path. The neighbor sees our
   * ASN 1 + asPathPrepend times over eBGP (gobgpd adds the first one itself).
   * A path read back whose AS_PATH is not "our ASN N times" has -1 here.
   */
  asPathPrepend?: number;
}

export type SessionState =
  | "unknown"
  | "idle"
  | "connect"
  | "active"
  | "opensent"
  | "openconfirm"
  | "established";

/** What ListPeer and peer events say about a neighbor. */
export interface PeerStatus {
  address: string;
  peerAsn: number;
  state: SessionState;
  adminDown: boolean;
  /** The neighbor's router id once OPEN was received. */
  remoteRouterId?: string;
  /** Session flaps counted by gobgpd. */
  flops: number;
  /** Negotiated hold time in seconds (0 until established). */
  negotiatedHoldTime: number;
  /** Prefixes received / accepted / advertised per family (as gobgpd counts them). */
  families: { family: AddressFamily; received: number; accepted: number; advertised: number }[];
  /** The configuration gobgpd holds for this neighbor (for diffing). */
  config: BgpPeer;
}

export class BgpValidationError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "BgpValidationError";
  }
}

/** What a neighbor gets when a field is left out: egressd's defaults (core/defaults.ts). */
export const PEER_DEFAULTS = {
  holdTime: DEFAULTS.bgp.holdTime,
  connectRetry: DEFAULTS.bgp.connectRetry,
  families: ["ipv4-unicast", "ipv6-unicast"] as AddressFamily[],
} as const;

/** AS_TRANS (RFC 6793): never a real ASN. */
const AS_TRANS = 23456;

export function validateAsn(asn: unknown, what = "ASN", context = ""): number {
  const ctx = context ? ` ${context}` : "";
  if (typeof asn !== "number" || !Number.isInteger(asn) || asn < 1 || asn > 0xffffffff) {
    throw new BgpValidationError(`invalid ${what} ${String(asn)}${ctx}: must be an integer in 1..4294967295`);
  }
  if (asn === AS_TRANS) {
    throw new BgpValidationError(
      `invalid ${what} ${asn}${ctx}: 23456 is AS_TRANS (RFC 6793), not a usable ASN`,
    );
  }
  return asn;
}

export function isIP(s: string): boolean {
  return parseAddress(s) !== undefined;
}

/**
 * Canonical text of an address: IPv4 dotted quad, IPv6 RFC 5952 (as gobgpd
 * prints them); an IPv6 link-local address keeps its interface ("fe80::1%eth1").
 * The one address module (core/ip.ts) does the parsing.
 */
export function canonicalAddress(s: string, what = "address"): string {
  const pct = s.indexOf("%");
  const a = parseAddress(pct < 0 ? s : s.slice(0, pct));
  const zone = pct < 0 ? undefined : s.slice(pct + 1);
  if (a && (zone === undefined || (isLinkLocal6(a) && isInterfaceName(zone))))
    return `${formatAddress(a.family, a.value)}${zone === undefined ? "" : `%${zone}`}`;
  throw new BgpValidationError(`invalid ${what} "${s}": not an IPv4 or IPv6 address`);
}

export function familyOfAddress(s: string): AddressFamily {
  return parseAddress(s.split("%")[0]!)?.family === 4 ? "ipv4-unicast" : "ipv6-unicast";
}

/** Parses and canonicalises a CIDR prefix; host bits must be zero. */
export function parsePrefix(cidr: string): {
  family: AddressFamily;
  address: string;
  length: number;
  text: string;
} {
  if (!cidr.includes("/")) throw new BgpValidationError(`invalid prefix "${cidr}": expected ADDRESS/LENGTH`);
  const r = parseCidr(cidr);
  if (!r.ok) throw new BgpValidationError(`invalid prefix "${cidr}": ${r.message}`);
  const address = formatAddress(r.prefix.family, r.prefix.lo);
  return {
    family: r.prefix.family === 4 ? "ipv4-unicast" : "ipv6-unicast",
    address,
    length: r.prefix.len,
    text: `${address}/${r.prefix.len}`,
  };
}

export const WELL_KNOWN_COMMUNITIES: Record<string, number> = {
  "no-export": 0xffffff01,
  "no-advertise": 0xffffff02,
  "no-export-subconfed": 0xffffff03,
};

/** "65000:100" (or a well-known name) -> 32-bit value. */
export function parseCommunity(s: string): number {
  const known = WELL_KNOWN_COMMUNITIES[s.toLowerCase()];
  if (known !== undefined) return known;
  const m = /^(\d{1,5}):(\d{1,5})$/.exec(s);
  const hi = m ? Number(m[1]) : NaN;
  const lo = m ? Number(m[2]) : NaN;
  if (!m || hi > 0xffff || lo > 0xffff) {
    throw new BgpValidationError(`invalid community "${s}": expected ASN:VALUE with both parts in 0..65535`);
  }
  return ((hi << 16) | lo) >>> 0;
}

export function formatCommunity(v: number): string {
  return `${Math.floor(v / 65536)}:${v % 65536}`;
}

function checkUint32(v: number | undefined, what: string): void {
  if (v === undefined) return;
  if (!Number.isInteger(v) || v < 0 || v > 0xffffffff) {
    throw new BgpValidationError(`invalid ${what} ${v}: must be an integer in 0..4294967295`);
  }
}

/**
 * Validates a path and returns its canonical form: canonical prefix and next
 * hop text, communities as sorted unique "hi:lo", asPathPrepend 0 when absent.
 * Two paths mean the same advertisement iff their canonical forms are equal.
 */
export function canonicalPath(p: BgpPath): Required<Omit<BgpPath, "med">> & { med?: number } {
  const prefix = parsePrefix(p.prefix);
  const nextHop = canonicalAddress(p.nextHop, `next hop of ${p.prefix}`);
  if (familyOfAddress(nextHop) !== prefix.family) {
    throw new BgpValidationError(
      `invalid path ${p.prefix}: next hop ${p.nextHop} is not in the prefix's address family`,
    );
  }
  checkUint32(p.med, `MED of ${p.prefix}`);
  const prepend = p.asPathPrepend ?? 0;
  if (!Number.isInteger(prepend) || prepend < -1 || prepend > 254) {
    throw new BgpValidationError(
      `invalid asPathPrepend ${prepend} for ${p.prefix}: must be an integer in 0..254`,
    );
  }
  const communities = [...new Set((p.communities ?? []).map(parseCommunity))]
    .sort((a, b) => a - b)
    .map(formatCommunity);
  const out: Required<Omit<BgpPath, "med">> & { med?: number } = {
    prefix: prefix.text,
    nextHop,
    communities,
    asPathPrepend: prepend,
  };
  if (p.med !== undefined) out.med = p.med;
  return out;
}

export function samePath(a: BgpPath, b: BgpPath): boolean {
  return sameCanonicalPath(canonicalPath(a), canonicalPath(b));
}

/** samePath for paths already in canonical form (no re-parsing). */
export function sameCanonicalPath(x: BgpPath, y: BgpPath): boolean {
  const cx = x.communities ?? [];
  const cy = y.communities ?? [];
  return (
    x.prefix === y.prefix &&
    x.nextHop === y.nextHop &&
    x.med === y.med &&
    (x.asPathPrepend ?? 0) === (y.asPathPrepend ?? 0) &&
    cx.length === cy.length &&
    cx.every((c, i) => c === cy[i])
  );
}

/** The fully defaulted peer configuration egressd sends (and compares). */
export interface CanonicalPeer {
  address: string;
  peerAsn: number;
  password: string;
  ebgpMultihopTtl: number;
  holdTime: number;
  keepaliveInterval: number;
  connectRetry: number;
  ttlSecurity: boolean;
  /** "" means let the kernel choose. */
  localAddress: string;
  gracefulRestart: boolean;
  /** 0 unless gracefulRestart. */
  restartTime: number;
  families: AddressFamily[];
  passive: boolean;
  description: string;
}

/** The kernel's TCP-MD5 key limit (TCP_MD5SIG_MAXKEYLEN), in bytes. */
export const MD5_KEY_MAX_BYTES = 80;

/**
 * What is wrong with a TCP-MD5 password, or undefined. The kernel counts
 * bytes, not characters; gobgpd passes the key through its config and FRR
 * through a line of its own, where a newline, NUL or other control character
 * cannot survive. Never repeats the password itself.
 */
export function passwordProblem(password: string): string | undefined {
  const bytes = Buffer.byteLength(password, "utf8");
  if (bytes > MD5_KEY_MAX_BYTES)
    return `${bytes} bytes, more than the kernel's ${MD5_KEY_MAX_BYTES}-byte key limit`;
  // eslint-disable-next-line no-control-regex
  if (/[\u0000-\u001f\u007f]/.test(password)) return "contains a control character (newline, NUL, tab, ...)";
  return undefined;
}

export function canonicalPeer(p: BgpPeer): CanonicalPeer {
  const address = canonicalAddress(p.address, "neighbor address");
  validateAsn(p.peerAsn, "peer ASN", `for neighbor ${p.address}`);
  const holdTime = p.holdTime ?? PEER_DEFAULTS.holdTime;
  if (!Number.isInteger(holdTime) || (holdTime !== 0 && holdTime < 3) || holdTime > 65535) {
    throw new BgpValidationError(
      `invalid hold time ${holdTime} for neighbor ${address}: must be 0 or 3..65535 seconds`,
    );
  }
  const keepaliveInterval = p.keepaliveInterval ?? Math.floor(holdTime / 3);
  if (
    !Number.isInteger(keepaliveInterval) ||
    keepaliveInterval < 0 ||
    (holdTime > 0 && keepaliveInterval > holdTime)
  ) {
    throw new BgpValidationError(
      `invalid keepalive ${keepaliveInterval} for neighbor ${address}: must be 0..holdTime seconds`,
    );
  }
  const connectRetry = p.connectRetry ?? PEER_DEFAULTS.connectRetry;
  if (!Number.isInteger(connectRetry) || connectRetry < 1 || connectRetry > 65535) {
    throw new BgpValidationError(`invalid connect retry ${connectRetry} for neighbor ${address}`);
  }
  const ttl = p.ebgpMultihopTtl ?? 0;
  if (!Number.isInteger(ttl) || ttl < 0 || ttl > 255) {
    throw new BgpValidationError(`invalid eBGP multihop TTL ${ttl} for neighbor ${address}: must be 0..255`);
  }
  const ttlSecurity = p.ttlSecurity ?? false;
  if (ttlSecurity && ttl > 0) {
    throw new BgpValidationError(`neighbor ${address}: ttl security and eBGP multihop exclude each other`);
  }
  const password = p.password ?? "";
  const problem = passwordProblem(password);
  if (problem) throw new BgpValidationError(`TCP-MD5 password for neighbor ${address}: ${problem}`);
  const localAddress = p.localAddress
    ? canonicalAddress(p.localAddress, `local address for neighbor ${address}`)
    : "";
  const families = [...new Set(p.families ?? PEER_DEFAULTS.families)].sort();
  if (families.length === 0) throw new BgpValidationError(`neighbor ${address}: no address families`);
  for (const f of families) {
    if (f !== "ipv4-unicast" && f !== "ipv6-unicast") {
      throw new BgpValidationError(`neighbor ${address}: unsupported address family "${String(f)}"`);
    }
  }
  const gracefulRestart = p.gracefulRestart ?? false;
  const restartTime = gracefulRestart ? (p.restartTime ?? holdTime) : 0;
  if (!Number.isInteger(restartTime) || restartTime < 0 || restartTime > 4095) {
    throw new BgpValidationError(
      `invalid restart time ${restartTime} for neighbor ${address}: must be 0..4095 seconds`,
    );
  }
  return {
    address,
    peerAsn: p.peerAsn,
    password,
    ebgpMultihopTtl: ttl,
    holdTime,
    keepaliveInterval,
    connectRetry,
    ttlSecurity,
    localAddress,
    gracefulRestart,
    restartTime,
    families,
    passive: p.passive ?? false,
    description: p.description ?? "",
  };
}
