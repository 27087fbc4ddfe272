// docs/kubernetes.md's deployment sections, held to the code: the commands of
// the walkthrough that can run here are run and print what the text says, the
// YAML it shows is valid (the fleet example as every node's config, the
// policy against its CRD), and the names it uses (the node label, the
// namespace label, the group, the egress IP) are the manifests' and the
// ConfigMap's.
import test from "ava";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { parse } from "yaml";
import { run } from "../../lib/exec.js";
import { allCrds } from "../../core/k8s/crd.js";
import { loadConfig, nodesOf } from "../../inputs/config/load.js";
import { crdValidator } from "../helpers/crd-validator.js";
import { only, podSpec, renderDeploy } from "../helpers/deploy.js";
import { REPO } from "../helpers/paths.js";

const doc = readFileSync(join(REPO, "docs/kubernetes.md"), "utf8");
const walkthrough = doc.slice(doc.indexOf("## Walkthrough"));
/** The YAML blocks, each unindented by its first line's indent (a block in a list item is indented). */
const yamlBlocks = (text: string) =>
  [...text.matchAll(/```yaml\n([\s\S]*?)```/g)].map((m) => {
    const indent = /^ */.exec(m[1]!)![0].length;
    return m[1]!.replace(new RegExp(`^ {0,${indent}}`, "gm"), "");
  });
/** The inline commands of the text: `...` spans that start with one of `programs`. */
const commands = (text: string, ...programs: string[]) =>
  [...text.matchAll(/`([^`\n]+)`/g)]
    .map((m) => m[1]!)
    .filter((c) => programs.some((p) => c.startsWith(`${p} `)));

test("the walkthrough's validate command prints what it says, and its kustomize command renders", async (t) => {
  const [validate] = commands(walkthrough, "bin/egressd");
  t.is(validate, "bin/egressd validate deploy/config/egressd.yaml");
  const out = await run(
    validate!.split(" ").map((w, i) => (i === 0 || w.startsWith("deploy/") ? join(REPO, w) : w)),
  );
  t.is(out.stdout.trim(), `${join(REPO, "deploy/config/egressd.yaml")}: OK (3 nodes)`);
  t.true(walkthrough.includes("`deploy/config/egressd.yaml: OK (3 nodes)`"));
  t.true(commands(walkthrough, "kubectl").includes("kubectl kustomize deploy/"));
  t.true((await renderDeploy()).length > 0);
});

test("the walkthrough's names are the manifests' and the ConfigMap's", async (t) => {
  const objects = await renderDeploy();
  const spec = podSpec(only(objects, "DaemonSet")) as unknown as { nodeSelector: Record<string, string> };
  const [label] = commands(walkthrough, "kubectl").filter((c) => c.startsWith("kubectl label node "));
  const [key, value] = label!.split(" ").at(-1)!.split("=");
  t.is(spec.nodeSelector[key!], value, "the node label is the DaemonSet's nodeSelector");
  const nodes = label!.split(" ").slice(3, -1);
  const fleet = readFileSync(join(REPO, "deploy/config/egressd.yaml"), "utf8");
  t.deepEqual(nodes, nodesOf(fleet), "the labelled nodes are the ConfigMap's");
  // The namespace label admits the namespace to the group the policy names, on every gateway.
  const nsLabel = commands(walkthrough, "kubectl").find((c) => c.startsWith("kubectl label namespace "))!;
  const [nsKey, nsValue] = nsLabel.split(" ").at(-1)!.split("=");
  const policy = parse(yamlBlocks(walkthrough).find((b) => b.includes("kind: EgressPolicy"))!) as {
    metadata: { namespace: string };
    spec: { egressIPGroup: string };
  };
  t.true(nsLabel.startsWith(`kubectl label namespace ${policy.metadata.namespace} `));
  const firstAddress = /seen by the firewall as ([0-9.]+)/.exec(walkthrough)![1];
  for (const node of nodes) {
    const r = loadConfig(fleet, { node });
    if (!r.ok) return t.fail(node);
    const group = r.config.egressIPGroups?.find((g) => g.name === policy.spec.egressIPGroup);
    t.truthy(group, `${node} defines the group ${policy.spec.egressIPGroup}`);
    t.deepEqual(group?.namespaceSelector, { matchLabels: { [nsKey!]: nsValue } }, node);
    if (node === nodes[0])
      t.deepEqual(group?.egressIPs, [firstAddress], "the address the title names is the first node's");
  }
});

test("the YAML the deployment sections show is valid: the fleet example for its node, the policy against its CRD", (t) => {
  const deploySections = doc.slice(doc.indexOf("## Installing the gateways"));
  const blocks = yamlBlocks(deploySections);
  const fleet = blocks.find((b) => b.includes("nodes:"))!;
  for (const node of nodesOf(fleet)!) {
    const r = loadConfig(fleet, { node });
    t.true(r.ok, `${node}: ${JSON.stringify(!r.ok && r.errors)}`);
  }
  const validators = new Map(
    allCrds().map(({ crd }) => [
      ((crd.spec as Record<string, unknown>).names as { kind: string }).kind,
      crdValidator(crd),
    ]),
  );
  const policies = blocks
    .filter((b) => b.includes("kind: EgressPolicy"))
    .map((b) => parse(b) as { kind: string });
  t.is(policies.length, 1);
  for (const p of policies) t.deepEqual(validators.get(p.kind)!.validate(p), []);
  // And the group the API section shows.
  const groups = yamlBlocks(doc)
    .filter((b) => b.includes("kind: EgressIPGroup"))
    .map((b) => parse(b) as { kind: string });
  t.is(groups.length, 1);
  for (const g of groups) t.deepEqual(validators.get(g.kind)!.validate(g), []);
  // The finding the per-node section quotes is the one the loader gives for that mistake.
  const quoted = /`(egressd\.yaml:\d+: sites\["dc-a"\]\.uplinks\[0\]\.nextHop: [^`]*)`/.exec(
    deploySections,
  )![1]!;
  const bad = loadConfig(fleet.replace("nextHop: 10.1.0.1", "nextHop: banana"), { node: "gw-a1" });
  t.false(bad.ok);
  if (!bad.ok)
    t.deepEqual(
      bad.errors.map((e) => `egressd.yaml:${e.line}: ${e.path}: ${e.message}`),
      [quoted],
    );
});
