// The published JSON Schema (schema/egressd.schema.json), derived from the
// TypeBox schema. Editors use it to complete and check configuration files.
import { ConfigSchema } from "./schema.js";

export function configJsonSchema(): Record<string, unknown> {
  // JSON round trip: drops TypeBox's symbol-keyed metadata.
  const body = JSON.parse(JSON.stringify(ConfigSchema)) as Record<string, unknown>;
  return { $schema: "http://json-schema.org/draft-07/schema#", ...body };
}
