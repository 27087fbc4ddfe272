// The label selector (metav1.LabelSelector) as a TypeBox schema, shared by
// the Kubernetes API's kinds (api-schema.ts) and the configuration file (an
// egress IP group says which namespaces may use it). Resolution is
// selector.ts's.
import { Type } from "@sinclair/typebox";
import type { SelectorOperator } from "./selector.js";

/** A CEL rule the API server checks on the object (x-kubernetes-validations). */
export interface CelRule {
  rule: string;
  message: string;
  /** The field the message is about, relative to the object the rule is on (e.g. ".egressIPGroup"). */
  fieldPath?: string;
  reason?: "FieldValueInvalid" | "FieldValueForbidden" | "FieldValueRequired" | "FieldValueDuplicate";
}

export const cel = (...rules: CelRule[]) => ({ "x-kubernetes-validations": rules });

const LABEL_KEY_MAX = 317; // a 253-character prefix, "/", and a 63-character name
const LABEL_VALUE_MAX = 63;

export const LabelSelectorRequirementSchema = Type.Object(
  {
    key: Type.String({ minLength: 1, maxLength: LABEL_KEY_MAX, description: "The label key." }),
    operator: Type.Unsafe<SelectorOperator>({
      type: "string",
      enum: ["In", "NotIn", "Exists", "DoesNotExist"],
      description: "In, NotIn: the value is (not) one of values. Exists, DoesNotExist: the key is (not) set.",
    }),
    values: Type.Optional(
      Type.Array(Type.String({ maxLength: LABEL_VALUE_MAX }), {
        maxItems: 64,
        description: "In and NotIn: at least one value. Exists and DoesNotExist: none.",
      }),
    ),
  },
  {
    additionalProperties: false,
    description: "One requirement of a label selector.",
    ...cel({
      rule: "self.operator in ['In', 'NotIn'] ? has(self.values) && size(self.values) > 0 : !has(self.values) || size(self.values) == 0",
      message: "In and NotIn need at least one value; Exists and DoesNotExist take none",
      fieldPath: ".values",
      reason: "FieldValueInvalid",
    }),
  },
);

export const LabelSelectorSchema = Type.Object(
  {
    matchLabels: Type.Optional(
      Type.Record(Type.String(), Type.String({ maxLength: LABEL_VALUE_MAX }), {
        description: "Labels that must all be set to these values.",
      }),
    ),
    matchExpressions: Type.Optional(
      Type.Array(LabelSelectorRequirementSchema, {
        maxItems: 32,
        description: "Requirements that must all hold.",
      }),
    ),
  },
  {
    additionalProperties: false,
    "x-kubernetes-map-type": "atomic",
    description: "A label selector: {} selects everything; every entry narrows it.",
  },
);
