// Validates custom resources against a CustomResourceDefinition the way the
// API server does on create and update, for the tests and the in-process API
// server: defaults applied, unknown fields refused (kubectl's default
// server-side field validation, Strict), the OpenAPI schema checked (Ajv),
// then every x-kubernetes-validations CEL rule evaluated on its node
// (@marcbachmann/cel-js). Not a second implementation in egressd: the daemon
// checks what it reads with its own code (core/k8s).
import { Ajv } from "ajv";
import { parse as parseCel } from "@marcbachmann/cel-js";

type Json = Record<string, unknown>;

export interface CrdValidator {
  /** The errors of `obj` ("spec.x: message"), empty when valid; defaults are applied to `obj` in place. */
  validate(obj: Json): string[];
}

const isObj = (x: unknown): x is Json => typeof x === "object" && x !== null && !Array.isArray(x);

/** Unknown fields of `value` under `schema`, as paths. */
function unknownFields(schema: Json, value: unknown, path: string, out: string[]): void {
  if (isObj(value) && schema.type === "object") {
    const props = schema.properties as Record<string, Json> | undefined;
    const extra = schema.additionalProperties as Json | undefined;
    if (path === "metadata") return; // the API server's own schema
    for (const [k, v] of Object.entries(value)) {
      const sub = props?.[k] ?? (isObj(extra) ? extra : undefined);
      if (sub === undefined) {
        if (schema["x-kubernetes-preserve-unknown-fields"] !== true)
          out.push(`unknown field "${path ? `${path}.` : ""}${k}"`);
      } else unknownFields(sub, v, path ? `${path}.${k}` : k, out);
    }
  } else if (Array.isArray(value) && schema.type === "array" && isObj(schema.items))
    value.forEach((v, i) => unknownFields(schema.items as Json, v, `${path}[${i}]`, out));
}

/** Evaluates the CEL rules of every node of `value`. */
function celErrors(schema: Json, value: unknown, path: string, out: string[]): void {
  if (value === undefined) return;
  for (const r of (schema["x-kubernetes-validations"] as {
    rule: string;
    message: string;
    fieldPath?: string;
  }[]) ?? []) {
    let ok: unknown;
    try {
      ok = parseCel(r.rule)({ self: value });
    } catch (e) {
      out.push(`${path}: rule ${r.rule} failed: ${(e as Error).message}`);
      continue;
    }
    if (ok !== true) out.push(`${path}${r.fieldPath ?? ""}: ${r.message}`);
  }
  if (isObj(value) && schema.type === "object") {
    const props = (schema.properties as Record<string, Json> | undefined) ?? {};
    for (const [k, v] of Object.entries(value))
      if (props[k]) celErrors(props[k], v, path ? `${path}.${k}` : k, out);
  } else if (Array.isArray(value) && isObj(schema.items))
    value.forEach((v, i) => celErrors(schema.items as Json, v, `${path}[${i}]`, out));
}

/** A validator for the served version of `crd`. */
export function crdValidator(crd: Json): CrdValidator {
  const version = ((crd.spec as Json).versions as Json[]).find((v) => v.served === true)!;
  const schema = (version.schema as Json).openAPIV3Schema as Json;
  const ajv = new Ajv({ strict: false, allErrors: true, useDefaults: true, validateFormats: false });
  const check = ajv.compile(schema);
  return {
    validate(obj) {
      const out: string[] = [];
      unknownFields(schema, obj, "", out);
      if (!check(obj))
        for (const e of check.errors ?? [])
          out.push(
            `${e.instancePath.slice(1).replaceAll("/", ".") || "(object)"}: ${e.message ?? e.keyword}`,
          );
      if (out.length === 0) celErrors(schema, obj, "", out);
      return out;
    },
  };
}
