// Writes schema/egressd.schema.json from the TypeBox schema. The file is
// generated, never edited by hand; a unit test checks it is up to date.
//   npx tsc -p tsconfig.json && node dist/scripts/gen-schema.js [OUTPUT]
import { writeFile } from "node:fs/promises";
import { fileURLToPath } from "node:url";
import * as prettier from "prettier";
import { configJsonSchema } from "../core/config/json-schema.js";

/** schema/egressd.schema.json at the repository root (this file runs from dist/scripts/). */
export const SCHEMA_PATH = fileURLToPath(new URL("../../schema/egressd.schema.json", import.meta.url));

/** The file's exact contents, formatted as the repository's prettier settings format JSON. */
export async function schemaFileText(): Promise<string> {
  const options = (await prettier.resolveConfig(SCHEMA_PATH)) ?? {};
  return prettier.format(JSON.stringify(configJsonSchema(), null, 2), { ...options, parser: "json" });
}

if (process.argv[1] !== undefined && fileURLToPath(import.meta.url) === process.argv[1]) {
  const out = process.argv[2] ?? SCHEMA_PATH;
  await writeFile(out, await schemaFileText());
  console.log(`wrote ${out}`);
}
