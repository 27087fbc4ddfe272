// The published JSON Schema is generated from the TypeBox schema, never
// edited by hand: the committed file must equal the generator's output.
import test from "ava";
import { readFileSync } from "node:fs";
import { SCHEMA_PATH, schemaFileText } from "../../scripts/gen-schema.js";
import { Ajv } from "ajv";
import { parse } from "yaml";
import { fileURLToPath } from "node:url";

test("schema/egressd.schema.json is up to date (run: node dist/scripts/gen-schema.js)", async (t) => {
  t.is(readFileSync(SCHEMA_PATH, "utf8"), await schemaFileText());
});

test("the published schema accepts the examples and rejects unknown keys", (t) => {
  const schema = JSON.parse(readFileSync(SCHEMA_PATH, "utf8")) as object;
  const validate = new Ajv({ strict: true }).compile(schema);
  for (const f of ["minimal.yaml", "red-blue.yaml", "dual-stack.yaml"]) {
    const doc = parse(
      readFileSync(fileURLToPath(new URL(`../../../examples/${f}`, import.meta.url)), "utf8"),
    );
    t.true(validate(doc), `${f}: ${JSON.stringify(validate.errors)}`);
    t.false(validate({ ...doc, bogus: 1 }));
  }
});
