// The `bgp:` section of the config: the speaker (gobgpd, managed or sidecar),
// the peers (ToR routers), and what is advertised with which attributes.
import { DEFAULTS } from "../defaults.js";
import { WELL_KNOWN_COMMUNITIES } from "../bgp.js";
import { Type, type Static } from "@sinclair/typebox";
import { NAME_PATTERN } from "./patterns.js";

const Strict = { additionalProperties: false } as const;
const Family = Type.Union([Type.Literal("ipv4-unicast"), Type.Literal("ipv6-unicast")]);

export const BfdSchema = Type.Object(
  {
    enabled: Type.Optional(
      Type.Boolean({ default: true, description: "Run a BFD session towards this peer." }),
    ),
    minRxMs: Type.Optional(
      Type.Integer({
        minimum: 10,
        maximum: 60_000,
        default: DEFAULTS.bfd.minRxMs,
        description: "Required min RX interval, ms.",
      }),
    ),
    minTxMs: Type.Optional(
      Type.Integer({
        minimum: 10,
        maximum: 60_000,
        default: DEFAULTS.bfd.minTxMs,
        description: "Desired min TX interval, ms.",
      }),
    ),
    multiplier: Type.Optional(
      Type.Integer({
        minimum: 2,
        maximum: 255,
        default: DEFAULTS.bfd.multiplier,
        description: "Detection time multiplier.",
      }),
    ),
    auth: Type.Optional(
      Type.Object(
        {
          type: Type.Union([Type.Literal("keyed-sha1"), Type.Literal("meticulous-keyed-sha1")], {
            description:
              "RFC 5880 6.7: meticulous (a new sequence number in every packet) resists replay best.",
          }),
          keyId: Type.Integer({
            minimum: 0,
            maximum: 255,
            description: "Auth Key ID; the peer must use the same.",
          }),
          secret: Type.String({ minLength: 1, maxLength: 20, description: "The shared key, 1 to 20 bytes." }),
        },
        {
          ...Strict,
          description: "Authenticate every BFD packet with SHA1 (the peer must be configured alike).",
        },
      ),
    ),
  },
  {
    ...Strict,
    description: "BFD (RFC 5880/5881 single hop) towards the peer, so a dead gateway is noticed fast.",
  },
);

export const PeerSchema = Type.Object(
  {
    name: Type.String({ pattern: NAME_PATTERN, description: "A name for logs and metrics, e.g. tor-a." }),
    address: Type.String({ description: "The neighbour's address (IPv4 or IPv6)." }),
    asn: Type.Integer({ minimum: 1, maximum: 4294967295, description: "The neighbour's AS number." }),
    localAddress: Type.Optional(Type.String({ description: "Source address of the session." })),
    password: Type.Optional(
      Type.String({
        minLength: 1,
        maxLength: 80,
        description: "TCP-MD5 password (RFC 2385): at most 80 bytes, no control characters.",
      }),
    ),
    ebgpMultihopTtl: Type.Optional(
      Type.Integer({
        minimum: 1,
        maximum: 255,
        description: "eBGP multihop TTL; absent: directly connected.",
      }),
    ),
    holdTime: Type.Optional(
      Type.Integer({
        minimum: 3,
        maximum: 65535,
        default: DEFAULTS.bgp.holdTime,
        description: "BGP hold time, seconds.",
      }),
    ),
    keepalive: Type.Optional(
      Type.Integer({
        minimum: 1,
        maximum: 21845,
        description: "Keepalive interval, seconds (default hold time / 3).",
      }),
    ),
    ttlSecurity: Type.Optional(
      Type.Boolean({
        default: false,
        description:
          "GTSM (RFC 5082): TTL 255 both ways, so only the directly connected peer can reach the session; the peer must use it too (FRR: neighbor X ttl-security hops 1).",
      }),
    ),
    connectRetry: Type.Optional(
      Type.Integer({
        minimum: 1,
        maximum: 65535,
        default: DEFAULTS.bgp.connectRetry,
        description: "Seconds between connection attempts (and the idle hold after a reset).",
      }),
    ),
    gracefulRestart: Type.Optional(
      Type.Boolean({
        default: false,
        description:
          "Advertise graceful restart. Off by default: a gateway that dies must lose its routes at once, not keep them for the restart time.",
      }),
    ),
    families: Type.Optional(
      Type.Array(Family, {
        minItems: 1,
        uniqueItems: true,
        description: "Address families; default: the peer address's.",
      }),
    ),
    bfd: Type.Optional(BfdSchema),
  },
  { ...Strict, description: "A BGP neighbour, usually a top-of-rack router." },
);

export const AdvertiseSchema = Type.Object(
  {
    egressIPs: Type.Optional(
      Type.Boolean({
        default: true,
        description: "Advertise the egress IPs as host routes, so replies come back.",
      }),
    ),
    destinations: Type.Optional(
      Type.Boolean({
        default: true,
        description:
          "Advertise the destinations this gateway serves (policy destinations less exceptions and no-gateway holes), so the fabric sends matching pod traffic here.",
      }),
    ),
    allowDefaultRoute: Type.Optional(
      Type.Boolean({
        default: false,
        description: "Allow advertising 0.0.0.0/0 or ::/0 when a policy serves it.",
      }),
    ),
    med: Type.Optional(
      Type.Integer({ minimum: 0, maximum: 4294967295, description: "MED on destination paths." }),
    ),
    asPathPrepend: Type.Optional(
      Type.Integer({
        minimum: 0,
        maximum: 16,
        default: 0,
        description:
          "Extra copies of our ASN on destination paths: a backup site prepends so it is used only when the primary is gone.",
      }),
    ),
    communities: Type.Optional(
      // The shape only; the values (0-65535 each) are checked by the speaker's own parser.
      Type.Array(
        Type.String({
          pattern: `^([0-9]{1,5}:[0-9]{1,5}|${Object.keys(WELL_KNOWN_COMMUNITIES).join("|")})$`,
        }),
        {
          uniqueItems: true,
          description: 'Standard communities on destination paths, e.g. "65011:100".',
        },
      ),
    ),
  },
  { ...Strict, description: "What this gateway advertises and with which attributes (site preference)." },
);

export const SpeakerSchema = Type.Object(
  {
    mode: Type.Optional(
      Type.Union([Type.Literal("managed"), Type.Literal("sidecar")], {
        default: "managed",
        description:
          "managed: egressd starts gobgpd itself (API on loopback, dies with egressd). sidecar: connect to a gobgpd at `address`.",
      }),
    ),
    address: Type.Optional(
      Type.String({
        description: "sidecar: gobgpd's gRPC address, host:port. managed: the loopback address to use.",
      }),
    ),
    binary: Type.Optional(
      Type.String({ default: "/usr/bin/gobgpd", description: "managed: the gobgpd binary." }),
    ),
  },
  { ...Strict, description: "How egressd reaches its BGP speaker, gobgpd." },
);

export const BgpSchema = Type.Object(
  {
    asn: Type.Integer({ minimum: 1, maximum: 4294967295, description: "This gateway's AS number." }),
    routerId: Type.String({ description: "BGP router id (an IPv4 address), unique in the fabric." }),
    listenPort: Type.Optional(
      Type.Integer({
        minimum: -1,
        maximum: 65535,
        default: DEFAULTS.bgp.listenPort,
        description: "TCP port gobgpd accepts BGP sessions on; -1 (default): it only connects out.",
      }),
    ),
    speaker: Type.Optional(SpeakerSchema),
    peers: Type.Array(PeerSchema, { minItems: 1, description: "The neighbours (ToR routers)." }),
    advertise: Type.Optional(AdvertiseSchema),
  },
  { ...Strict, description: "BGP: the speaker, its peers and what is advertised." },
);

export type BgpConfig = Static<typeof BgpSchema>;
export type PeerConfig = Static<typeof PeerSchema>;
export type AdvertiseConfig = Static<typeof AdvertiseSchema>;
