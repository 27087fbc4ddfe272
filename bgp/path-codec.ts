// BgpPath <-> GoBGP API Path. Attributes and NLRI travel as
// google.protobuf.Any, each packing one message from attribute.proto; the
// type URL is "type.googleapis.com/apipb.<Message>" (gobgpd resolves it by
// the name after the last "/").
import {
  AsPathAttribute,
  AsSegment_Type,
  CommunitiesAttribute,
  IPAddressPrefix,
  MpReachNLRIAttribute,
  MultiExitDiscAttribute,
  NextHopAttribute,
  OriginAttribute,
} from "./generated/attribute.js";
import { Family, Family_Afi, Family_Safi, type Path } from "./generated/gobgp.js";
import { Any } from "./generated/google/protobuf/any.js";
import {
  canonicalPath,
  formatCommunity,
  parseCommunity,
  parsePrefix,
  type AddressFamily,
  type BgpPath,
} from "../core/bgp.js";

const TYPE_PREFIX = "type.googleapis.com/apipb.";

interface Codec<T> {
  encode(message: T): { finish(): Uint8Array };
  decode(input: Uint8Array): T;
}

export function pack<T>(name: string, codec: Codec<T>, message: T): Any {
  return { typeUrl: TYPE_PREFIX + name, value: Buffer.from(codec.encode(message).finish()) };
}

/** The message name an Any carries ("apipb.NextHopAttribute" -> "NextHopAttribute"). */
export function anyName(a: Any): string {
  const slash = a.typeUrl.lastIndexOf("/");
  const full = a.typeUrl.slice(slash + 1);
  return full.startsWith("apipb.") ? full.slice("apipb.".length) : full;
}

export function apiFamily(f: AddressFamily): Family {
  return {
    afi: f === "ipv4-unicast" ? Family_Afi.AFI_IP : Family_Afi.AFI_IP6,
    safi: Family_Safi.SAFI_UNICAST,
  };
}

export function familyFromApi(f: Family | undefined): AddressFamily | undefined {
  if (!f || f.safi !== Family_Safi.SAFI_UNICAST) return undefined;
  if (f.afi === Family_Afi.AFI_IP) return "ipv4-unicast";
  if (f.afi === Family_Afi.AFI_IP6) return "ipv6-unicast";
  return undefined;
}

/** ORIGIN IGP: the path was originated here on purpose. */
const ORIGIN_IGP = 0;

/**
 * Encodes a path for AddPath (or, with withdraw, for DeletePath / a withdraw in
 * AddPathStream). `localAsn` is needed for AS-path prepending.
 */
export function encodePath(p: BgpPath, localAsn: number, withdraw = false): Path {
  const c = canonicalPath(p);
  if (c.asPathPrepend < 0) throw new Error(`path ${p.prefix}: asPathPrepend must not be negative`);
  const prefix = parsePrefix(c.prefix);
  const nlri = pack("IPAddressPrefix", IPAddressPrefix, { prefix: prefix.address, prefixLen: prefix.length });
  const family = apiFamily(prefix.family);
  const pattrs: Any[] = [pack("OriginAttribute", OriginAttribute, { origin: ORIGIN_IGP })];
  if (prefix.family === "ipv4-unicast") {
    pattrs.push(pack("NextHopAttribute", NextHopAttribute, { nextHop: c.nextHop }));
  } else {
    pattrs.push(
      pack("MpReachNLRIAttribute", MpReachNLRIAttribute, { family, nextHops: [c.nextHop], nlris: [nlri] }),
    );
  }
  if (c.asPathPrepend > 0) {
    // Locally originated paths normally carry no AS_PATH; gobgpd adds its own
    // ASN once when it sends to an eBGP neighbor (in front of an existing
    // AS_SEQUENCE). So N extra copies go in as one AS_SEQUENCE of N.
    const numbers = new Array<number>(c.asPathPrepend).fill(localAsn);
    pattrs.push(
      pack("AsPathAttribute", AsPathAttribute, { segments: [{ type: AsSegment_Type.AS_SEQUENCE, numbers }] }),
    );
  }
  if (c.med !== undefined)
    pattrs.push(pack("MultiExitDiscAttribute", MultiExitDiscAttribute, { med: c.med }));
  if (c.communities.length > 0) {
    pattrs.push(
      pack("CommunitiesAttribute", CommunitiesAttribute, { communities: c.communities.map(parseCommunity) }),
    );
  }
  return {
    nlri,
    pattrs,
    age: undefined,
    best: false,
    isWithdraw: withdraw,
    validation: undefined,
    noImplicitWithdraw: false,
    family,
    sourceAsn: 0,
    sourceId: "",
    filtered: false,
    stale: false,
    isFromExternal: false,
    neighborIp: "",
    uuid: Buffer.alloc(0),
    isNexthopInvalid: false,
    identifier: 0,
    localIdentifier: 0,
    nlriBinary: Buffer.alloc(0),
    pattrsBinary: [],
  };
}

/** True for paths that were added through the API (AddPath), not learnt from a neighbor. */
export function isLocalPath(p: Path): boolean {
  // gobgpd reports a nil source address for local paths; Go prints it "<nil>".
  return (p.neighborIp === "" || p.neighborIp === "<nil>") && p.sourceAsn === 0 && !p.isFromExternal;
}

export interface DecodedPath extends BgpPath {
  /** The source neighbor for learnt paths; absent for local ones. */
  neighbor?: string;
  withdrawn: boolean;
  best: boolean;
}

/**
 * Decodes an API path into a BgpPath. Only IPv4/IPv6 unicast NLRI are
 * understood; others give undefined. `localAsn` lets the AS_PATH be read back
 * as a prepend count (-1 when it is anything other than our ASN N times).
 */
export function decodePath(p: Path, localAsn: number): DecodedPath | undefined {
  if (!p.nlri || anyName(p.nlri) !== "IPAddressPrefix") return undefined;
  const n = IPAddressPrefix.decode(p.nlri.value);
  const out: DecodedPath = {
    prefix: `${n.prefix}/${n.prefixLen}`,
    nextHop: "",
    withdrawn: p.isWithdraw,
    best: p.best,
  };
  if (!isLocalPath(p)) out.neighbor = p.neighborIp;
  for (const a of p.pattrs) {
    switch (anyName(a)) {
      case "NextHopAttribute":
        out.nextHop = NextHopAttribute.decode(a.value).nextHop;
        break;
      case "MpReachNLRIAttribute": {
        const mp = MpReachNLRIAttribute.decode(a.value);
        // A global next hop may be followed by a link-local one.
        out.nextHop = mp.nextHops[0] ?? "";
        break;
      }
      case "MultiExitDiscAttribute":
        out.med = MultiExitDiscAttribute.decode(a.value).med;
        break;
      case "CommunitiesAttribute":
        out.communities = CommunitiesAttribute.decode(a.value).communities.map(formatCommunity);
        break;
      case "AsPathAttribute": {
        const segs = AsPathAttribute.decode(a.value).segments;
        const all = segs.flatMap((s) => s.numbers);
        const ours =
          segs.every((s) => s.type === AsSegment_Type.AS_SEQUENCE) && all.every((x) => x === localAsn);
        out.asPathPrepend = ours ? all.length : -1;
        break;
      }
      default:
        break;
    }
  }
  return out;
}
