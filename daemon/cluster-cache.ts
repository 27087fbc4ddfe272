// The cluster's policies as last applied, kept in the run directory (on
// /run: gone with a reboot, as the kernel's own state is). A gateway that
// restarts while the Kubernetes API is unreachable starts with them instead
// of the file's policies alone, so a restart during an API outage takes
// nothing out of the data plane; the first sync replaces them.
//
// The file is egressd's own (root, mode 0600, in a 0700 directory), but it is
// checked like any input: the schema of a policy, and the names the cluster's
// data-plane policies have.
import { readFileSync, renameSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { Type } from "@sinclair/typebox";
import { Ajv } from "ajv";
import { PolicySchema, type PolicyConfig } from "../core/config/schema.js";

export const CLUSTER_CACHE = "cluster-policies.json";

const check = new Ajv({ strict: false }).compile<PolicyConfig[]>(
  Type.Array({
    ...PolicySchema,
    properties: {
      ...PolicySchema.properties,
      name: Type.String({ pattern: ":v[46]$" }),
      sources: Type.Array(Type.String()),
    },
  }),
);

/** The cached policies, or undefined (none, unreadable, or not what egressd writes: then why). */
export function readClusterCache(runDir: string): { policies?: PolicyConfig[]; problem?: string } {
  let text: string;
  try {
    text = readFileSync(join(runDir, CLUSTER_CACHE), "utf8");
  } catch {
    return {};
  }
  try {
    const v = JSON.parse(text) as unknown;
    if (!check(v))
      return {
        problem: `${CLUSTER_CACHE}: ${check.errors?.[0]?.instancePath ?? ""} ${check.errors?.[0]?.message ?? "invalid"}`,
      };
    return { policies: v };
  } catch (e) {
    return { problem: `${CLUSTER_CACHE}: ${(e as Error).message}` };
  }
}

/** Writes the policies (a new file renamed over the old: never half written). */
export function writeClusterCache(runDir: string, policies: PolicyConfig[]): void {
  const file = join(runDir, CLUSTER_CACHE);
  writeFileSync(`${file}.new`, JSON.stringify(policies), { mode: 0o600 });
  renameSync(`${file}.new`, file);
}
