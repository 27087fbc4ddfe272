// The cluster's policies as last applied, kept in the run directory (on
// /run: gone with a reboot, as the kernel's own state is). A gateway that
// restarts while the Kubernetes API is unreachable starts with them instead
// of the file's policies alone, so a restart during an API outage takes
// nothing out of the data plane; the first sync replaces them.
//
// The file is egressd's own (root, mode 0600, in a 0700 directory), but it is
// checked like any input: the schema of a policy, and the names the cluster's
// data-plane policies have.
import { readFileSync } from "node:fs";
import { open, rename } from "node:fs/promises";
import { join } from "node:path";
import type { PolicyConfig } from "../core/config/schema.js";
import { validateCachedPolicies } from "../inputs/config/validators.js";

export const CLUSTER_CACHE = "cluster-policies.json";

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
    if (!validateCachedPolicies(v)) {
      const first = validateCachedPolicies.errors?.[0];
      return { problem: `${CLUSTER_CACHE}: ${first?.instancePath ?? ""} ${first?.message ?? "invalid"}` };
    }
    return { policies: v };
  } catch (e) {
    return { problem: `${CLUSTER_CACHE}: ${(e as Error).message}` };
  }
}

/**
 * Writes the policies (a new file renamed over the old: never half written).
 * At 100k pods that is megabytes of JSON: it is made and written a piece at
 * a time (at most SOURCES_PER_PIECE addresses), yielding between pieces, so
 * that the thread's other calls (a pod's change on its way to the kernel)
 * wait for one piece at most. `policies` must not change meanwhile (the data
 * plane's committed lists never do: a change makes new ones).
 */
export async function writeClusterCache(runDir: string, policies: readonly PolicyConfig[]): Promise<void> {
  const file = join(runDir, CLUSTER_CACHE);
  const fh = await open(`${file}.new`, "w", 0o600);
  try {
    let piece = "[";
    const flush = async () => {
      await fh.write(piece);
      piece = "";
    };
    for (const [i, p] of policies.entries()) {
      const { sources, ...rest } = p;
      const head = JSON.stringify(rest);
      piece += `${i > 0 ? "," : ""}${head.slice(0, -1)}${head.length > 2 ? "," : ""}"sources":[`;
      for (let k = 0; k < sources.length; k += SOURCES_PER_PIECE) {
        piece += `${k > 0 ? "," : ""}${JSON.stringify(sources.slice(k, k + SOURCES_PER_PIECE)).slice(1, -1)}`;
        if (piece.length >= PIECE_CHARS) await flush();
      }
      piece += "]}";
    }
    piece += "]";
    await flush();
  } finally {
    await fh.close();
  }
  await rename(`${file}.new`, file);
}

/** Addresses made into JSON at once (about 100 kB), and how much is written at once. */
const SOURCES_PER_PIECE = 5000;
const PIECE_CHARS = 64 * 1024;
