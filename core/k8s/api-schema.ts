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

export type EgressPolicySpec = Static<typeof EgressPolicySpecSchema>;
export type ClusterEgressPolicySpec = Static<typeof ClusterEgressPolicySpecSchema>;
export type Condition = Static<typeof ConditionSchema>;
export type GatewayStatus = Static<typeof GatewayStatusSchema>;
export type PolicyStatus = Static<typeof PolicyStatusSchema>;

/** A kind of the API, with what its CustomResourceDefinition needs. */
export interface ApiKind {
  kind: string;
  plural: string;
  singular: string;
  shortNames: string[];
  scope: "Namespaced" | "Cluster";
  spec: TSchema;
  description: string;
}

export const KINDS: readonly ApiKind[] = [
  {
    kind: "EgressPolicy",
    plural: "egresspolicies",
    singular: "egresspolicy",
    shortNames: ["egp"],
    scope: "Namespaced",
    spec: EgressPolicySpecSchema,
    description: "Egress for pods of one namespace: which destinations, through which egress IP group.",
  },
  {
    kind: "ClusterEgressPolicy",
    plural: "clusteregresspolicies",
    singular: "clusteregresspolicy",
    shortNames: ["cegp"],
    scope: "Cluster",
    spec: ClusterEgressPolicySpecSchema,
    description:
      "Egress for pods of the namespaces it selects: which destinations, through which egress IP group.",
  },
];
