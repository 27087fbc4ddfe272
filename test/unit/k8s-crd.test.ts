// The CustomResourceDefinitions: generated from the schemas and up to date,
// structural, and they accept the examples and refuse the invalid ones with
// the message each invalid example names (defaults, unknown fields, OpenAPI
// and the CEL rules, as the API server applies them).
import test from "ava";
import { readdirSync, readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { parse } from "yaml";
import { crdFiles } from "../../scripts/gen-crds.js";
import { allCrds } from "../../core/k8s/crd.js";
import { crdValidator } from "../helpers/crd-validator.js";

const ROOT = fileURLToPath(new URL("../../../", import.meta.url));
type Json = Record<string, unknown>;

test("deploy/crds holds exactly what scripts/gen-crds.ts makes", (t) => {
  const files = crdFiles();
  t.deepEqual(readdirSync(`${ROOT}deploy/crds`).sort(), files.map((f) => f.file).sort());
  for (const f of files)
    t.is(readFileSync(`${ROOT}deploy/crds/${f.file}`, "utf8"), f.text, `${f.file} is stale: run gen-crds`);
});

test("every schema node is structural: a type everywhere, no properties beside additionalProperties, no keyword OpenAPI v3 lacks", (t) => {
  const problems: string[] = [];
  const walk = (node: Json, path: string) => {
    if (typeof node.type !== "string") problems.push(`${path}: no type`);
    for (const k of ["examples", "patternProperties", "const", "anyOf", "oneOf", "$ref", "$id"])
      if (k in node) problems.push(`${path}: ${k}`);
    if (node.properties && node.additionalProperties !== undefined)
      problems.push(`${path}: properties and additionalProperties`);
    for (const [k, v] of Object.entries((node.properties as Record<string, Json>) ?? {}))
      walk(v, `${path}.${k}`);
    if (node.additionalProperties && typeof node.additionalProperties === "object")
      walk(node.additionalProperties as Json, `${path}[*]`);
    if (node.items) walk(node.items as Json, `${path}[]`);
  };
  for (const { crd } of allCrds()) {
    const v = ((crd.spec as Json).versions as Json[])[0]!;
    walk((v.schema as Json).openAPIV3Schema as Json, (crd.metadata as Json).name as string);
  }
  t.deepEqual(problems, []);
});

const validators = new Map(
  allCrds().map(({ crd }) => [((crd.spec as Json).names as Json).kind as string, crdValidator(crd)]),
);
const examples = (dir: string) =>
  readdirSync(`${ROOT}examples/kubernetes/${dir}`)
    .filter((f) => f.endsWith(".yaml"))
    .map((f) => ({ f, text: readFileSync(`${ROOT}examples/kubernetes/${dir}/${f}`, "utf8") }));

test("the examples are valid, and a policy's action defaults to SNAT", (t) => {
  const list = examples(".");
  t.true(list.length >= 3);
  for (const { f, text } of list) {
    const obj = parse(text) as Json;
    t.deepEqual(validators.get(obj.kind as string)!.validate(obj), [], f);
    if (obj.kind !== "EgressIPGroup") t.truthy((obj.spec as Json).action, f);
  }
});

test("each invalid example is refused with the message it expects", (t) => {
  const list = examples("invalid");
  t.true(list.length >= 5);
  for (const { f, text } of list) {
    const want = /^# expect: (.*)$/m.exec(text)![1]!;
    const obj = parse(text) as Json;
    const errors = validators.get(obj.kind as string)!.validate(obj);
    t.true(
      errors.some((e) => e.includes(want)),
      `${f}: expected "${want}" in ${JSON.stringify(errors)}`,
    );
  }
});
