// The published JSON Schema (schema/egressd.schema.json), derived from the
// TypeBox schema. Editors use it to complete and check configuration files.
import { ConfigSchema } from "./schema.js";

export function configJsonSchema(): Record<string, unknown> {
  // JSON round trip: drops TypeBox's symbol-keyed metadata, and the keywords that only the
  // Kubernetes API server reads (the label selector's schema is shared with the CRDs).
  const body = JSON.parse(JSON.stringify(ConfigSchema), (k, v: unknown) =>
    k.startsWith("x-kubernetes-") ? undefined : v,
  ) as Record<string, unknown>;
  return { $schema: "http://json-schema.org/draft-07/schema#", ...body };
}
