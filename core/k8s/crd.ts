// The CustomResourceDefinitions of egressd's API, made from the TypeBox
// schemas of api-schema.ts. Pure: scripts/gen-crds.ts writes them under
// deploy/crds/, and the tests check the files are what this makes.
//
// A CRD's schema must be structural (the API server's rules): every node
// says its type, `properties` and `additionalProperties` are never both set,
// and keywords outside OpenAPI v3's subset (`examples`, `patternProperties`)
// do not appear. The API server prunes unknown fields itself, which is what
// the file's `additionalProperties: false` means, so that keyword is left
// out; a map (TypeBox's Record) becomes `additionalProperties: <value>`.
import { API_GROUP, API_VERSION, KINDS, type ApiKind } from "./api-schema.js";

type Json = Record<string, unknown>;

/** `schema` as a structural OpenAPI v3 schema (a new object). */
export function structuralSchema(schema: unknown): Json {
  const walk = (node: unknown): unknown => {
    if (Array.isArray(node)) return node.map(walk);
    if (node === null || typeof node !== "object") return node;
    const out: Json = {};
    for (const [k, v] of Object.entries(node as Json)) {
      if (k === "examples" || k === "$id") continue;
      if (k === "additionalProperties" && v === false) continue;
      if (k === "patternProperties") {
        const values = Object.values(v as Json);
        if (values.length !== 1) throw new Error("a map must have one value schema");
        out.additionalProperties = walk(values[0]);
        continue;
      }
      out[k] = walk(v);
    }
    return out;
  };
  // JSON round trip first: drops TypeBox's symbol-keyed metadata.
  return walk(JSON.parse(JSON.stringify(schema))) as Json;
}

export function crdName(k: ApiKind): string {
  return `${k.plural}.${API_GROUP}`;
}

/** The CustomResourceDefinition of one kind. */
export function crdOf(k: ApiKind): Json {
  return {
    apiVersion: "apiextensions.k8s.io/v1",
    kind: "CustomResourceDefinition",
    metadata: { name: crdName(k), labels: { "app.kubernetes.io/name": "egressd" } },
    spec: {
      group: API_GROUP,
      names: {
        kind: k.kind,
        listKind: `${k.kind}List`,
        plural: k.plural,
        singular: k.singular,
        shortNames: k.shortNames,
        categories: ["egressd"],
      },
      scope: k.scope,
      versions: [
        {
          name: API_VERSION,
          served: true,
          storage: true,
          ...(k.status ? { subresources: { status: {} } } : {}),
          additionalPrinterColumns: [
            ...k.columns,
            { name: "Age", type: "date", jsonPath: ".metadata.creationTimestamp" },
          ],
          schema: {
            openAPIV3Schema: {
              type: "object",
              description: k.description,
              required: ["spec"],
              properties: {
                apiVersion: { type: "string" },
                kind: { type: "string" },
                metadata: { type: "object" },
                spec: structuralSchema(k.spec),
                ...(k.status ? { status: structuralSchema(k.status) } : {}),
              },
            },
          },
        },
      ],
    },
  };
}

/** Every CRD, by the file name it is written to. */
export function allCrds(): { file: string; crd: Json }[] {
  return KINDS.map((k) => ({ file: `${crdName(k)}.yaml`, crd: crdOf(k) }));
}
