// The published JSON Schema is generated from the TypeBox schema, never
// edited by hand: the committed file must equal the generator's output.
import test from "ava";
import { readFileSync } from "node:fs";
import { SCHEMA_PATH, schemaFileText } from "../../scripts/gen-schema.js";
import { VALIDATORS_PATH, validatorsText } from "../../scripts/gen-validators.js";
import { validateConfig } from "../../inputs/config/validators.js";
import { ConfigSchema } from "../../core/config/schema.js";
import { Ajv } from "ajv";
import { parse } from "yaml";
import { fileURLToPath } from "node:url";

test("schema/egressd.schema.json is up to date (run: node dist/scripts/gen-schema.js)", async (t) => {
  t.is(readFileSync(SCHEMA_PATH, "utf8"), await schemaFileText());
});

test("the built validators are the generator's output for this schema (run: npm run build)", (t) => {
  t.is(readFileSync(VALIDATORS_PATH, "utf8"), validatorsText());
});

test("the generated config validator reports what Ajv compiling the schema at run time reports", (t) => {
  const ajv = new Ajv({ allErrors: true, strict: true, verbose: true });
  ajv.addKeyword("x-kubernetes-validations").addKeyword("x-kubernetes-map-type");
  const compiled = ajv.compile(ConfigSchema);
  const doc = parse(
    readFileSync(fileURLToPath(new URL("../../../examples/red-blue.yaml", import.meta.url)), "utf8"),
  ) as Record<string, unknown>;
  const broken: unknown[] = [
    doc,
    { ...doc, bogus: 1 },
    { ...doc, gateway: { name: "Not A Name", site: 7 } },
    { ...doc, policies: [] },
    { ...doc, egressIPs: [{ address: "192.0.2.1", interface: "an-interface-name-too-long" }] },
    { ...doc, dataplane: { markMask: 0, rulePriority: 40000 } },
    { ...doc, log: { level: "loud" } },
    [],
  ];
  for (const [i, d] of broken.entries()) {
    const want = compiled(d);
    t.is(validateConfig(d), want, `document ${i}`);
    const strip = (errors: typeof compiled.errors) =>
      (errors ?? []).map((e) => ({
        ...e,
        schema: JSON.stringify(e.schema),
        parentSchema: JSON.stringify(e.parentSchema),
      }));
    t.deepEqual(strip(validateConfig.errors), strip(compiled.errors), `document ${i}`);
  }
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
