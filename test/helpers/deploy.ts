// What the image and the manifests say about how egressd runs: the
// Containerfile's stages and entrypoint, and deploy/ as kustomize renders it
// (with the kubectl of Debian's kubernetes-client). Shared by the unit tests
// of both and by the lab test that runs the DaemonSet's command.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { parseAllDocuments } from "yaml";
import { run } from "../../lib/exec.js";
import { REPO } from "./paths.js";

export type K8sObject = {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string; labels?: Record<string, string> };
  [k: string]: unknown;
};

/** The Containerfile's stages: their instructions, continuation lines joined, comments left out. */
export function containerfileStages(): { from: string; lines: string[] }[] {
  const text = readFileSync(join(REPO, "Containerfile"), "utf8");
  const out: { from: string; lines: string[] }[] = [];
  for (const raw of text.replace(/\\\n\s*/g, " ").split("\n")) {
    const line = raw.trim().replace(/\s+/g, " ");
    if (line === "" || line.startsWith("#")) continue;
    if (line.startsWith("FROM ")) out.push({ from: line, lines: [] });
    else out[out.length - 1]!.lines.push(line);
  }
  return out;
}

/** The runtime stage's ENTRYPOINT (exec form). */
export function entrypoint(): string[] {
  const entry = containerfileStages()
    .at(-1)!
    .lines.find((l) => l.startsWith("ENTRYPOINT "));
  if (!entry) throw new Error("Containerfile: the runtime stage has no ENTRYPOINT");
  return JSON.parse(entry.slice("ENTRYPOINT ".length)) as string[];
}

/** `kubectl kustomize deploy/`, parsed. */
export async function renderDeploy(dir = join(REPO, "deploy")): Promise<K8sObject[]> {
  const { stdout } = await run(["kubectl", "kustomize", dir], { timeoutMs: 60_000 });
  return parseAllDocuments(stdout).map((d) => {
    if (d.errors.length) throw new Error(`kubectl kustomize: ${d.errors[0]!.message}`);
    return d.toJS() as K8sObject;
  });
}

export function only(objects: K8sObject[], kind: string, name?: string): K8sObject {
  const hits = objects.filter((o) => o.kind === kind && (name === undefined || o.metadata.name === name));
  if (hits.length !== 1)
    throw new Error(`expected one ${kind}${name ? ` ${name}` : ""}, found ${hits.length}`);
  return hits[0]!;
}

export interface Container {
  name: string;
  image: string;
  command?: string[];
  args?: string[];
  env?: { name: string; value?: string; valueFrom?: { fieldRef?: { fieldPath: string } } }[];
  volumeMounts?: { name: string; mountPath: string; readOnly?: boolean }[];
  lifecycle?: { preStop?: { exec?: { command: string[] } } };
  [k: string]: unknown;
}

export interface PodSpec {
  containers: Container[];
  volumes?: { name: string; configMap?: { name: string }; emptyDir?: unknown }[];
  terminationGracePeriodSeconds?: number;
  [k: string]: unknown;
}

export function podSpec(ds: K8sObject): PodSpec {
  return (ds as unknown as { spec: { template: { spec: PodSpec } } }).spec.template.spec;
}

/**
 * `$(VAR)` references of a container's args expanded as the kubelet does, with
 * the downward API's fields given by `fields` (e.g. spec.nodeName).
 */
export function expandArgs(c: Container, fields: Record<string, string>): string[] {
  const env = new Map<string, string>();
  for (const e of c.env ?? []) {
    const path = e.valueFrom?.fieldRef?.fieldPath;
    const value = e.value ?? (path !== undefined ? fields[path] : undefined);
    if (value === undefined) throw new Error(`env ${e.name}: no value for ${path ?? "it"}`);
    env.set(e.name, value);
  }
  return (c.args ?? []).map((a) =>
    a.replace(/\$\(([A-Za-z_][A-Za-z0-9_]*)\)/g, (ref, name: string) => env.get(name) ?? ref),
  );
}
