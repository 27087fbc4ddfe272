// The connectionSync section: the gateways of a group share their NAT state
// (conntrackd) so that a connection survives the failure of the gateway that
// carries it, and each member advertises the others' egress IPs as backup
// paths (docs/connection-sync.md).
import { Type, type Static } from "@sinclair/typebox";
import { DEFAULTS } from "../defaults.js";
import { IFNAME_PATTERN, NAME_PATTERN } from "./patterns.js";

const Strict = { additionalProperties: false } as const;
const S = DEFAULTS.sync;

export const SyncPeerSchema = Type.Object(
  {
    name: Type.String({
      pattern: NAME_PATTERN,
      description: "The member's gateway name, for logs and status.",
    }),
    address: Type.String({ description: "The member's IPv4 address on the sync link." }),
    egressIPs: Type.Array(Type.String(), {
      minItems: 1,
      description:
        "The member's egress IPs. This gateway advertises them as backup paths (that lose to the owner's) " +
        "and de-NATs replies sent to them with the state the member shared; it never uses them for new connections.",
    }),
  },
  { ...Strict, description: "Another gateway of this gateway's sync group." },
);

const SitePeerFields = {
  name: Type.String({
    pattern: NAME_PATTERN,
    description: "The other site's gateway name, for logs and status.",
  }),
  address: Type.String({ description: "Its IPv4 address, reached over the fabric." }),
  port: Type.Integer({
    minimum: 1,
    maximum: 65535,
    description:
      "The UDP port of this pair's state messages, the same at both ends; one conntrackd per pair listens on it.",
  }),
};

export const AcrossSitesSchema = Type.Object(
  {
    interface: Type.String({
      pattern: IFNAME_PATTERN,
      description: "The interface the state messages to and from other sites use (the uplink).",
    }),
    address: Type.String({ description: "This gateway's IPv4 address on that interface." }),
    sendTo: Type.Optional(
      Type.Array(Type.Object(SitePeerFields, Strict), {
        maxItems: 8,
        description:
          "Gateways at another site that hold this gateway's connections, to carry them if this whole site fails.",
      }),
    ),
    holdFor: Type.Optional(
      Type.Array(
        Type.Object(
          {
            ...SitePeerFields,
            egressIPs: Type.Array(Type.String(), {
              minItems: 1,
              description:
                "Its egress IPs. This gateway advertises them as last-resort paths (that lose to every path of their own site) " +
                "and de-NATs replies sent to them with the state it holds; it never uses them for new connections.",
            }),
          },
          Strict,
        ),
        {
          maxItems: 16,
          description:
            "Gateways at another site whose connections this gateway holds (it sends them nothing).",
        },
      ),
    ),
    lastResortAsPathPrepend: Type.Optional(
      Type.Integer({
        minimum: 1,
        maximum: 16,
        default: S.lastResortAsPathPrepend,
        description:
          "Extra AS hops on the last-resort paths: more than any path of the other site, its backups included.",
      }),
    ),
  },
  {
    ...Strict,
    description:
      "Connection state across sites, one way per pair over the fabric: when a whole site fails, a gateway of another site carries its connections.",
  },
);

export const ConnectionSyncSchema = Type.Object(
  {
    interface: Type.Optional(
      Type.String({
        pattern: IFNAME_PATTERN,
        description: "The dedicated link the members exchange connection state on (with peers).",
      }),
    ),
    address: Type.Optional(
      Type.String({ description: "This gateway's IPv4 address on the sync link (with peers)." }),
    ),
    peers: Type.Optional(
      Type.Array(SyncPeerSchema, {
        minItems: 1,
        maxItems: 15,
        description:
          "The other members of the group. One peer: unicast UDP; more: the multicast group. " +
          "Without peers (and then without interface and address), acrossSites is required.",
      }),
    ),
    acrossSites: Type.Optional(AcrossSitesSchema),
    sources: Type.Array(Type.String({ examples: ["10.244.0.0/16", "fd00:244::/48"] }), {
      minItems: 1,
      description:
        "Connections from these sources (the pod networks) are shared; nothing else is. " +
        "Only TCP connections are shared (docs/connection-sync.md says why).",
    }),
    port: Type.Optional(
      Type.Integer({
        minimum: 1,
        maximum: 65535,
        default: S.port,
        description: "UDP port of the state messages.",
      }),
    ),
    multicastGroup: Type.Optional(
      Type.String({
        default: S.multicastGroup,
        description: "IPv4 multicast group of a group with more than two members.",
      }),
    ),
    backupAsPathPrepend: Type.Optional(
      Type.Integer({
        minimum: 1,
        maximum: 16,
        default: S.backupAsPathPrepend,
        description:
          "Extra AS hops on the backup paths, so that the owner's path wins while it is advertised. " +
          "More than any prepend the owner itself uses.",
      }),
    ),
    resyncTimeoutMs: Type.Optional(
      Type.Integer({
        minimum: 0,
        maximum: 60_000,
        default: S.resyncTimeoutMs,
        description:
          "At start, the longest wait for the peers' connection state before advertising anything (a peer that is down sends none).",
      }),
    ),
    localRepair: Type.Optional(
      Type.Boolean({
        default: false,
        description:
          "While a failed probe has IPv4 destinations withdrawn, forward what still arrives for them on an uplink, " +
          "untouched, to the first peer over the sync link, until the routers stop sending it here (docs/connection-sync.md).",
      }),
    ),
  },
  {
    ...Strict,
    description:
      "Share NAT state with the other gateways of a group (conntrackd), so that established connections survive a gateway failure.",
  },
);

export type SyncPeerConfig = Static<typeof SyncPeerSchema>;
export type AcrossSitesConfig = Static<typeof AcrossSitesSchema>;
export type ConnectionSyncConfig = Static<typeof ConnectionSyncSchema>;
