// The Kubernetes API of egressd (egressd.io/v1alpha1): EgressPolicy
// (namespaced) and ClusterEgressPolicy, as TypeBox schemas. The policy body
// (destinations, exceptions, action) is the configuration file's own schema
// (core/config/schema.ts), so the file and the API cannot drift; only what a
// cluster adds (label selectors, a group instead of an address, the status)
// is defined here. scripts/gen-crds.ts turns these into the
// CustomResourceDefinitions under deploy/crds/, and the same schemas (with
// Ajv) check every object egressd reads from the API server.
//
// Bounds (maxItems, maxLength) are set on every list and string a CEL rule
// reaches, so that the API server can estimate the rules' cost.
import { Type, type Static, type TSchema } from "@sinclair/typebox";
import { ActionSchema, DestinationsSchema, ExceptionsSchema } from "../config/schema.js";
import { NAME_PATTERN } from "../config/patterns.js";
import { cel, LabelSelectorSchema } from "./selector-schema.js";

export { LabelSelectorRequirementSchema, LabelSelectorSchema, type CelRule } from "./selector-schema.js";

export const API_GROUP = "egressd.io";
export const API_VERSION = "v1alpha1";
export const API_GROUP_VERSION = `${API_GROUP}/${API_VERSION}`;

const bounded = (s: TSchema, maxItems: number) => ({ ...s, maxItems, items: { ...s.items, maxLength: 43 } });

/** The policy body shared by both kinds. */
const specProperties = {
  podSelector: {
    ...LabelSelectorSchema,
    description: "The pods this policy applies to. {} selects every pod.",
  },
  destinations: Type.Unsafe<string[]>(bounded(DestinationsSchema, 256)),
  exceptions: Type.Optional(Type.Unsafe<string[]>(bounded(ExceptionsSchema, 256))),
  action: Type.Optional({ ...ActionSchema, default: "SNAT" }),
  egressIPGroup: Type.Optional(
    Type.String({
      pattern: NAME_PATTERN,
      maxLength: 63,
      description:
        "SNAT: the egress IP group whose address (of each pod family) the traffic leaves with. " +
        "The gateways define the groups; a policy cannot name an address. " +
        "A pod selected through a group that a gateway does not have is blocked there, never let out with its own address.",
    }),
  ),
};

const specRules = cel(
  {
    rule: "(has(self.action) ? self.action : 'SNAT') == 'SNAT' ? has(self.egressIPGroup) : !has(self.egressIPGroup)",
    message: "egressIPGroup is required with action SNAT and not allowed with Direct or Deny",
    fieldPath: ".egressIPGroup",
    reason: "FieldValueInvalid",
  },
  {
    rule: "!has(self.action) || self.action != 'Direct' || !has(self.exceptions) || size(self.exceptions) == 0",
    message: "exceptions are not allowed with action Direct (list those CIDRs under destinations)",
    fieldPath: ".exceptions",
    reason: "FieldValueForbidden",
  },
);

export const EgressPolicySpecSchema = Type.Object(specProperties, {
  additionalProperties: false,
  description:
    "Which pods of this namespace reach which destinations, and how: through the gateway with a group's egress IP, " +
    "directly, or not at all. Longest destination prefix wins, then the most specific source.",
  ...specRules,
});

export const ClusterEgressPolicySpecSchema = Type.Object(
  {
    namespaceSelector: {
      ...LabelSelectorSchema,
      description: "The namespaces whose pods this policy may select. {} selects every namespace.",
    },
    ...specProperties,
  },
  {
    additionalProperties: false,
    description: "An EgressPolicy for pods of every namespace namespaceSelector selects.",
    ...specRules,
  },
);

export const ConditionSchema = Type.Object(
  {
    type: Type.String({ maxLength: 316, description: "Accepted or Programmed." }),
    status: Type.Unsafe<"True" | "False" | "Unknown">({ type: "string", enum: ["True", "False", "Unknown"] }),
    reason: Type.String({ maxLength: 1024, description: "CamelCase, for programs." }),
    message: Type.String({ maxLength: 32768, description: "For people." }),
    lastTransitionTime: Type.String({ format: "date-time" }),
    observedGeneration: Type.Optional(Type.Integer({ minimum: 0 })),
  },
  { additionalProperties: false, description: "A condition, as metav1.Condition." },
);

export const GatewayStatusSchema = Type.Object(
  {
    gateway: Type.String({
      maxLength: 253,
      description: "The gateway this entry is from (each writes its own).",
    }),
    site: Type.Optional(Type.String({ maxLength: 253 })),
    observedGeneration: Type.Integer({ minimum: 0, description: "The generation this entry describes." }),
    selectedPods: Type.Integer({
      minimum: 0,
      description: "Pods the policy selects, as this gateway sees them.",
    }),
    conditions: Type.Array(ConditionSchema, {
      maxItems: 8,
      "x-kubernetes-list-type": "map",
      "x-kubernetes-list-map-keys": ["type"],
    }),
  },
  { additionalProperties: false, description: "One gateway's view of the policy." },
);

export const PolicyStatusSchema = Type.Object(
  {
    gateways: Type.Optional(
      Type.Array(GatewayStatusSchema, {
        maxItems: 1024,
        "x-kubernetes-list-type": "map",
        "x-kubernetes-list-map-keys": ["gateway"],
        description:
          "One entry per gateway, each written by that gateway with server-side apply under its own field manager.",
      }),
    ),
  },
  { additionalProperties: false },
);

/** An address or a range of one family, "192.0.2.10" or "192.0.2.10-192.0.2.13"; the values are egressd's to check. */
const POOL_ENTRY = "^[0-9a-fA-F.:]{2,39}(-[0-9a-fA-F.:]{2,39})?$";

export const SiteAttributesSchema = Type.Object(
  {
    site: Type.String({
      pattern: NAME_PATTERN,
      maxLength: 63,
      description: "A gateway site (gateway.site).",
    }),
    med: Type.Optional(
      Type.Integer({
        minimum: 0,
        maximum: 4294967295,
        description: "MED on the group's addresses from this site.",
      }),
    ),
    asPathPrepend: Type.Optional(
      Type.Integer({
        minimum: 0,
        maximum: 16,
        description: "Extra copies of the gateway's ASN from this site.",
      }),
    ),
    communities: Type.Optional(
      Type.Array(Type.String({ pattern: "^[0-9]{1,5}:[0-9]{1,5}$", maxLength: 11 }), {
        maxItems: 16,
        description: 'Standard communities on the group\'s addresses from this site, e.g. "65011:100".',
      }),
    ),
  },
  {
    additionalProperties: false,
    description: "BGP attributes of the group's addresses as one site advertises them.",
  },
);

export const EgressIPGroupSpecSchema = Type.Object(
  {
    addresses: Type.Array(Type.String({ pattern: POOL_ENTRY, maxLength: 79 }), {
      minItems: 1,
      maxItems: 64,
      description:
        "The pool the firewalls allow-list: addresses and ranges (first-last), IPv4 and IPv6. " +
        "Each address is held by at most one gateway at a time, through a Lease in egressd's namespace.",
    }),
    gatewaySelector: Type.Optional({
      ...LabelSelectorSchema,
      description: "The gateway nodes that serve this group, by node label. Absent: every gateway.",
    }),
    namespaceSelector: Type.Optional({
      ...LabelSelectorSchema,
      description:
        "The namespaces whose EgressPolicies may name this group. Absent: none (ClusterEgressPolicies only).",
    }),
    uplink: Type.String({
      pattern: NAME_PATTERN,
      maxLength: 63,
      description: "The uplink (by its name in each gateway's file) the group's traffic leaves through.",
    }),
    sites: Type.Optional(
      Type.Array(SiteAttributesSchema, {
        maxItems: 64,
        "x-kubernetes-list-type": "map",
        "x-kubernetes-list-map-keys": ["site"],
        description: "Per-site BGP attributes of the group's addresses (site preference).",
      }),
    ),
  },
  {
    additionalProperties: false,
    description:
      "An egress identity: a pool of addresses that the selected gateways share, claimed with Leases.",
  },
);

export type EgressPolicySpec = Static<typeof EgressPolicySpecSchema>;
export type ClusterEgressPolicySpec = Static<typeof ClusterEgressPolicySpecSchema>;
export type Condition = Static<typeof ConditionSchema>;
export type GatewayStatus = Static<typeof GatewayStatusSchema>;
export type PolicyStatus = Static<typeof PolicyStatusSchema>;
export type EgressIPGroupSpec = Static<typeof EgressIPGroupSpecSchema>;

/** A kind of the API, with what its CustomResourceDefinition needs. */
export interface ApiKind {
  kind: string;
  plural: string;
  singular: string;
  shortNames: string[];
  scope: "Namespaced" | "Cluster";
  spec: TSchema;
  description: string;
  /** The status subresource's schema; none: the kind has no status. */
  status?: TSchema;
  /** kubectl get's extra columns. */
  columns: { name: string; type: string; jsonPath: string }[];
}

const POLICY_COLUMNS = [
  { name: "Action", type: "string", jsonPath: ".spec.action" },
  { name: "Group", type: "string", jsonPath: ".spec.egressIPGroup" },
];

export const KINDS: readonly ApiKind[] = [
  {
    kind: "EgressPolicy",
    plural: "egresspolicies",
    singular: "egresspolicy",
    shortNames: ["egp"],
    scope: "Namespaced",
    spec: EgressPolicySpecSchema,
    status: PolicyStatusSchema,
    columns: POLICY_COLUMNS,
    description: "Egress for pods of one namespace: which destinations, through which egress IP group.",
  },
  {
    kind: "ClusterEgressPolicy",
    plural: "clusteregresspolicies",
    singular: "clusteregresspolicy",
    shortNames: ["cegp"],
    scope: "Cluster",
    spec: ClusterEgressPolicySpecSchema,
    status: PolicyStatusSchema,
    columns: POLICY_COLUMNS,
    description:
      "Egress for pods of the namespaces it selects: which destinations, through which egress IP group.",
  },
  {
    kind: "EgressIPGroup",
    plural: "egressipgroups",
    singular: "egressipgroup",
    shortNames: ["egg"],
    scope: "Cluster",
    spec: EgressIPGroupSpecSchema,
    columns: [
      { name: "Uplink", type: "string", jsonPath: ".spec.uplink" },
      { name: "Addresses", type: "string", jsonPath: ".spec.addresses" },
    ],
    description:
      "A pool of egress addresses that firewalls allow-list, shared by the gateways it selects: each address is " +
      "held by one gateway at a time (a Lease), and policies name the group.",
  },
];
