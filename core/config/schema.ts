// The configuration file's structure, as a TypeBox schema. It is the single
// source of truth for the TypeScript types (Static<>), for the structural
// validation (Ajv) and for the published JSON Schema (schema/egressd.schema.json,
// written by scripts/gen-schema.ts). Checks that need more than the
// structure (CIDRs, cross references, overlaps) live in validate.ts.
import { Type, type Static } from "@sinclair/typebox";

import { IFNAME_PATTERN, NAME_PATTERN } from "./patterns.js";
import { BgpSchema } from "./bgp-schema.js";
import { ConnectionSyncSchema } from "./sync-schema.js";
import { AuditSchema } from "./audit-schema.js";
import { DrainSchema, HttpSchema, KubernetesSchema, LogSchema, ProbeSchema } from "./ops-schema.js";
import { DEFAULTS as ALL } from "../defaults.js";
import { LabelSelectorSchema } from "../k8s/selector-schema.js";

export { IFNAME_PATTERN, NAME_PATTERN };

/** The data plane's defaults (core/defaults.ts holds them all). */
export const DEFAULTS = ALL.dataplane;

const Name = (description: string) => Type.String({ pattern: NAME_PATTERN, description });
const Ifname = (description: string) => Type.String({ pattern: IFNAME_PATTERN, description });
const Strict = { additionalProperties: false } as const;

export const GatewaySchema = Type.Object(
  {
    name: Name("This gateway's name, e.g. gw-a1. Appears in logs and metrics."),
    site: Name("The site (data centre) this gateway runs in, e.g. dc-a."),
  },
  { ...Strict, description: "The gateway's identity." },
);

export const EgressIPSchema = Type.Object(
  {
    address: Type.String({
      description: 'An IPv4 or IPv6 address, without prefix length, e.g. 192.0.2.11 or "2001:db8:e::11".',
      examples: ["192.0.2.11", "2001:db8:e::11"],
    }),
    interface: Ifname("The interface egressd adds the address to (as a /32 or /128), e.g. lo."),
  },
  { ...Strict, description: "An egress IP this gateway owns." },
);

export const UplinkSchema = Type.Object(
  {
    name: Name("The uplink's name, referred to by policies."),
    interface: Ifname("The interface traffic for this uplink leaves through."),
    nextHop: Type.Optional(
      Type.String({
        description: "IPv4 next hop on the interface. Required if an IPv4 policy uses the uplink.",
      }),
    ),
    nextHop6: Type.Optional(
      Type.String({
        description: "IPv6 next hop on the interface. Required if an IPv6 policy uses the uplink.",
      }),
    ),
    table: Type.Optional(
      Type.Integer({
        minimum: 1,
        maximum: 0xffffffff,
        description:
          "Routing table egressd owns for this uplink. Default: dataplane.tableBase + the uplink's index in this list.",
      }),
    ),
  },
  { ...Strict, description: "A way out of the gateway: an interface and its next hops." },
);

const CidrList = (description: string, minItems: number) =>
  Type.Array(Type.String({ examples: ["10.244.1.0/24", "10.244.2.5"] }), { minItems, description });

/** What a policy does with the traffic it selects; shared with the Kubernetes API (core/k8s/api-schema.ts). */
export const POLICY_ACTIONS = ["SNAT", "Direct", "Deny"] as const;
export type PolicyAction = (typeof POLICY_ACTIONS)[number];

export const ActionSchema = Type.Unsafe<PolicyAction>({
  type: "string",
  enum: [...POLICY_ACTIONS],
  description:
    "SNAT (the default): the traffic leaves through the gateway with the egress IP. " +
    "Direct: no gateway for these destinations; the traffic is left alone (the same as gateway: false). " +
    "Deny: the gateway drops the traffic and counts it.",
});

/** The destinations and exceptions of a policy, as the file and the Kubernetes API both write them. */
export const DestinationsSchema = CidrList(
  "Destination CIDRs this policy applies to (a bare address is a host prefix).",
  1,
);
export const ExceptionsSchema = CidrList(
  "Destination CIDRs, each inside one of this policy's destinations, that are left alone: " +
    "not SNATed, not routed through the uplink. They take part in longest-prefix match at their own length.",
  0,
);

export const EgressIPGroupSchema = Type.Object(
  {
    name: Name(
      "The group's name, as policies refer to it (egressIPGroup). Policies in the cluster name a group, " +
        "never an address, so a tenant can use only the groups the gateways define.",
    ),
    egressIPs: Type.Array(Type.String(), {
      minItems: 1,
      maxItems: 2,
      description: "This gateway's addresses for the group: at most one per family, each one of egressIPs.",
    }),
    uplink: Type.String({ description: "Name of the uplink the group's traffic leaves through." }),
    namespaceSelector: Type.Optional({
      ...LabelSelectorSchema,
      description:
        "The namespaces whose EgressPolicies may use the group ({} for all). Absent: none; only " +
        "ClusterEgressPolicies (which cluster administrators write) may. A policy that names a group its " +
        "namespace may not use is refused here, and its pods are blocked.",
    }),
  },
  {
    ...Strict,
    description:
      "A named egress identity: the egress IP of each family and the uplink that policies naming it use on this gateway.",
  },
);

export const PolicySchema = Type.Object(
  {
    name: Name("The policy's name, unique in this file."),
    sources: CidrList(
      "Pod CIDRs and/or pod IPs this policy applies to. A bare address means a /32 or /128.",
      1,
    ),
    destinations: DestinationsSchema,
    exceptions: Type.Optional(ExceptionsSchema),
    action: Type.Optional(ActionSchema),
    gateway: Type.Optional(
      Type.Boolean({
        default: true,
        description:
          "false: no gateway for these destinations; matching traffic is left alone (no egressIP or uplink allowed). " +
          "The same as action: Direct.",
      }),
    ),
    advertise: Type.Optional(
      Type.Boolean({
        default: true,
        description:
          "false: this gateway serves the policy's traffic that reaches it but does not advertise its destinations " +
          "(other gateways attract it). A gateway that holds no address of a group from the cluster plans that " +
          "group's policies so.",
      }),
    ),
    egressIP: Type.Optional(
      Type.String({
        description: "The egress IP (one of egressIPs) to SNAT to. SNAT needs it or egressIPGroup.",
      }),
    ),
    uplink: Type.Optional(
      Type.String({
        description: "Name of the uplink the traffic leaves through. SNAT needs it or egressIPGroup.",
      }),
    ),
    egressIPGroup: Type.Optional(
      Type.String({
        pattern: NAME_PATTERN,
        description:
          "An egress IP group (egressIPGroups) in place of egressIP and uplink: its address of the sources' family.",
      }),
    ),
  },
  {
    ...Strict,
    description:
      "Which sources reach which destinations through which egress IP and uplink. " +
      "Longest destination prefix wins, then the most specific source prefix.",
  },
);

export const DataplaneSchema = Type.Object(
  {
    markMask: Type.Optional(
      Type.Integer({
        minimum: 1,
        maximum: 0xffffffff,
        default: DEFAULTS.markMask,
        description:
          "Bits of the packet mark egressd may use (write it in hex, e.g. 0x0ff00000). " +
          "Must not overlap kube-proxy's 0x4000 and 0x8000 or your CNI's bits.",
      }),
    ),
    tableBase: Type.Optional(
      Type.Integer({
        minimum: 1,
        maximum: 0xffffffff,
        default: DEFAULTS.tableBase,
        description: "First routing table number for uplinks without an explicit table.",
      }),
    ),
    rulePriority: Type.Optional(
      Type.Integer({
        minimum: 1,
        maximum: 32765,
        default: DEFAULTS.rulePriority,
        description: "Priority of egressd's fwmark policy-routing rules (before the main table's 32766).",
      }),
    ),
    snatPorts: Type.Optional(
      Type.String({
        pattern: "^[0-9]{1,5}-[0-9]{1,5}$",
        description:
          "The source ports TCP, UDP and SCTP connections are translated to, e.g. 1024-65535 (absent: the kernel's " +
          "choice, which keeps the pod's port when it is free). Its size is how many connections one egress IP " +
          "can have to one destination address and port at a time.",
        examples: ["1024-65535"],
      }),
    ),
    snatMode: Type.Optional(
      Type.Unsafe<"random" | "fully-random" | "persistent">({
        type: "string",
        enum: ["random", "fully-random", "persistent"],
        description:
          "The kernel's port allocation: random (a hash-based random start), fully-random (a random port for " +
          "every connection) or persistent (the same address for a source). Absent: the kernel's default.",
      }),
    ),
    unmatched: Type.Optional(
      Type.Unsafe<"Deny" | "Direct">({
        type: "string",
        enum: ["Deny", "Direct"],
        default: DEFAULTS.unmatched,
        description:
          "New connections to a destination this gateway serves (a SNAT policy's) from a source that no policy " +
          "allows. Deny (the default): dropped, counted, and recorded in the audit trail. Direct: forwarded as " +
          "they are, not NATed (what egressd did before this setting; the firewall behind sees the pod's address).",
      }),
    ),
  },
  {
    ...Strict,
    description:
      "Kernel resources egressd uses (mark bits, routing tables, rule priority), and what it does with traffic no policy allows.",
  },
);

export const ConfigSchema = Type.Object(
  {
    gateway: GatewaySchema,
    egressIPs: Type.Array(EgressIPSchema, { description: "The egress IPs this gateway owns." }),
    uplinks: Type.Array(UplinkSchema, { description: "The gateway's uplinks." }),
    egressIPGroups: Type.Optional(
      Type.Array(EgressIPGroupSchema, { description: "Named egress identities that policies refer to." }),
    ),
    policies: Type.Array(PolicySchema, { description: "Egress policies." }),
    dataplane: Type.Optional(DataplaneSchema),
    bgp: Type.Optional(BgpSchema),
    probes: Type.Optional(
      Type.Array(ProbeSchema, { description: "Health probes and what depends on them." }),
    ),
    drain: Type.Optional(DrainSchema),
    connectionSync: Type.Optional(ConnectionSyncSchema),
    audit: Type.Optional(AuditSchema),
    kubernetes: Type.Optional(KubernetesSchema),
    http: Type.Optional(HttpSchema),
    log: Type.Optional(LogSchema),
  },
  {
    ...Strict,
    title: "egressd configuration",
    description: "Configuration file of egressd, the egress gateway.",
  },
);

/**
 * The cluster's policies as daemon/cluster-cache.ts keeps them: policies as
 * the file has them, but named "<policy>:v4" or ":v6" (one per family) and
 * with any list of sources, empty included.
 */
export const CachedPoliciesSchema = Type.Array({
  ...PolicySchema,
  properties: {
    ...PolicySchema.properties,
    name: Type.String({ pattern: ":v[46]$" }),
    sources: Type.Array(Type.String()),
  },
});

export type GatewayConfig = Static<typeof GatewaySchema>;
export type EgressIPConfig = Static<typeof EgressIPSchema>;
export type UplinkConfig = Static<typeof UplinkSchema>;
export type PolicyConfig = Static<typeof PolicySchema>;
export type EgressIPGroupConfig = Static<typeof EgressIPGroupSchema>;
export type DataplaneConfig = Static<typeof DataplaneSchema>;
/** A configuration that passed validation (loadConfig). */
export type Config = Static<typeof ConfigSchema>;
