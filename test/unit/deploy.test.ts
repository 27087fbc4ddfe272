// deploy/ as kustomize renders it: every object valid against the Kubernetes
// OpenAPI schemas (kubernetes-models' validators; the Prometheus Operator's
// for its two kinds), the rules generated from monitoring/, least-privilege
// RBAC, and a DaemonSet that agrees with the image and the daemon: its
// command line is one `egressd run` accepts, the config it names is the
// ConfigMap's file and is valid for every node, and the drain fits in the
// grace period. test/integration/packed-layout.test.ts runs that command.
import test from "ava";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { Namespace, Service, ServiceAccount, ConfigMap } from "kubernetes-models/v1";
import { DaemonSet } from "kubernetes-models/apps/v1";
import { PodDisruptionBudget } from "kubernetes-models/policy/v1";
import {
  ClusterRole,
  ClusterRoleBinding,
  Role,
  RoleBinding,
} from "kubernetes-models/rbac.authorization.k8s.io/v1";
import { CustomResourceDefinition } from "kubernetes-models/apiextensions.k8s.io/v1";
import {
  PrometheusRule,
  ServiceMonitor,
} from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1";
import { loadConfig, nodesOf } from "../../inputs/config/load.js";
import { prometheusRule, RULES_FILE, RULE_OBJECT_FILE } from "../../scripts/gen-prometheusrule.js";
import { DEFAULTS } from "../../core/defaults.js";
import { entrypoint, expandArgs, only, podSpec, renderDeploy, type K8sObject } from "../helpers/deploy.js";
import { REPO } from "../helpers/paths.js";
import { run } from "../../lib/exec.js";

type Validating = { validate(): void };
const MODELS: Record<string, new (o: never) => Validating> = {
  "v1/Namespace": Namespace,
  "v1/Service": Service,
  "v1/ServiceAccount": ServiceAccount,
  "v1/ConfigMap": ConfigMap,
  "apps/v1/DaemonSet": DaemonSet,
  "policy/v1/PodDisruptionBudget": PodDisruptionBudget,
  "rbac.authorization.k8s.io/v1/ClusterRole": ClusterRole,
  "rbac.authorization.k8s.io/v1/ClusterRoleBinding": ClusterRoleBinding,
  "rbac.authorization.k8s.io/v1/Role": Role,
  "rbac.authorization.k8s.io/v1/RoleBinding": RoleBinding,
  "apiextensions.k8s.io/v1/CustomResourceDefinition": CustomResourceDefinition,
  "monitoring.coreos.com/v1/PrometheusRule": PrometheusRule,
  "monitoring.coreos.com/v1/ServiceMonitor": ServiceMonitor,
};

function problems(o: K8sObject): string | undefined {
  const Model = MODELS[`${o.apiVersion}/${o.kind}`];
  if (!Model) return `no schema for ${o.apiVersion} ${o.kind}`;
  try {
    new Model(o as never).validate();
    return undefined;
  } catch (e) {
    return (e as Error).message;
  }
}

const rendered = renderDeploy();

test("kubectl kustomize deploy/ renders every object, each valid against its OpenAPI schema", async (t) => {
  const objects = await rendered;
  t.deepEqual(objects.map((o) => `${o.kind}/${o.metadata.name}`).sort(), [
    "ClusterRole/egressd",
    "ClusterRoleBinding/egressd",
    "ConfigMap/egressd-config",
    "CustomResourceDefinition/clusteregresspolicies.egressd.io",
    "CustomResourceDefinition/egressipgroups.egressd.io",
    "CustomResourceDefinition/egresspolicies.egressd.io",
    "DaemonSet/egressd",
    "Namespace/egressd",
    "PodDisruptionBudget/egressd",
    "PrometheusRule/egressd",
    "Role/egressd-leases",
    "RoleBinding/egressd-leases",
    "Service/egressd",
    "ServiceAccount/egressd",
    "ServiceMonitor/egressd",
  ]);
  for (const o of objects) t.is(problems(o), undefined, `${o.kind}/${o.metadata.name}`);
  for (const o of objects)
    if (!["Namespace", "CustomResourceDefinition", "ClusterRole", "ClusterRoleBinding"].includes(o.kind))
      t.is(o.metadata.namespace, "egressd", `${o.kind}/${o.metadata.name} is in egressd's namespace`);
  // The validator does find what is wrong: a string where a number goes, a container without a name.
  const ds = structuredClone(only(objects, "DaemonSet"));
  (ds as unknown as { spec: { minReadySeconds: unknown } }).spec.minReadySeconds = "ten";
  t.regex(problems(ds) ?? "", /minReadySeconds/);
  const nameless = structuredClone(only(objects, "DaemonSet"));
  delete (podSpec(nameless).containers[0] as { name?: string }).name;
  t.regex(problems(nameless) ?? "", /name/);
});

test("the PrometheusRule is generated from monitoring/alerts.yml and is up to date", (t) => {
  t.is(
    readFileSync(RULE_OBJECT_FILE, "utf8"),
    prometheusRule(readFileSync(RULES_FILE, "utf8")),
    "stale: npx tsc -p tsconfig.json && node dist/scripts/gen-prometheusrule.js",
  );
});

test("RBAC: read pods, namespaces, policies, groups and nodes; patch policy status, create events; leases only in its namespace", async (t) => {
  const objects = await rendered;
  const rules = (o: K8sObject) =>
    (o as unknown as { rules: { apiGroups: string[]; resources: string[]; verbs: string[] }[] }).rules
      .flatMap((r) =>
        r.apiGroups.flatMap((g) => r.resources.map((res) => `${g}/${res}: ${[...r.verbs].sort().join(",")}`)),
      )
      .sort();
  t.deepEqual(rules(only(objects, "ClusterRole")), [
    "/events: create",
    "/namespaces: get,list,watch",
    "/nodes: get",
    "/pods: get,list,watch",
    "egressd.io/clusteregresspolicies/status: patch",
    "egressd.io/clusteregresspolicies: get,list,watch",
    "egressd.io/egressipgroups: get,list,watch",
    "egressd.io/egresspolicies/status: patch",
    "egressd.io/egresspolicies: get,list,watch",
  ]);
  t.deepEqual(rules(only(objects, "Role")), [
    "coordination.k8s.io/leases: create,delete,get,list,update,watch",
  ]);
  for (const kind of ["ClusterRoleBinding", "RoleBinding"]) {
    const b = only(objects, kind) as unknown as { subjects: unknown[] };
    t.deepEqual(b.subjects, [{ kind: "ServiceAccount", name: "egressd", namespace: "egressd" }], kind);
  }
});

test("the DaemonSet: gateway nodes, the host's network, drain before stop, probes, priority, capabilities", async (t) => {
  const objects = await rendered;
  const ds = only(objects, "DaemonSet") as K8sObject & {
    spec: { template: { metadata: { labels: Record<string, string> } }; updateStrategy: unknown };
  };
  const spec = podSpec(ds);
  const c = spec.containers[0]!;
  t.like(spec, {
    hostNetwork: true,
    dnsPolicy: "ClusterFirstWithHostNet",
    priorityClassName: "system-node-critical",
    nodeSelector: { "egressd.io/gateway": "true" },
    serviceAccountName: "egressd",
  });
  t.deepEqual(ds.spec.updateStrategy, { type: "RollingUpdate", rollingUpdate: { maxUnavailable: 1 } });
  t.like(c, {
    readinessProbe: { httpGet: { path: "/readyz", port: "metrics" } },
    livenessProbe: { httpGet: { path: "/healthz", port: "metrics" } },
    securityContext: {
      runAsUser: 0,
      allowPrivilegeEscalation: false,
      readOnlyRootFilesystem: true,
      capabilities: { drop: ["ALL"], add: ["NET_ADMIN", "NET_RAW", "NET_BIND_SERVICE", "SYS_NICE"] },
    },
  });
  t.is(
    (c as unknown as { resources: { limits: Record<string, string> } }).resources.limits.cpu,
    undefined,
    "no CPU limit",
  );
  // The PDB and the Service select the DaemonSet's pods.
  const labels = ds.spec.template.metadata.labels;
  for (const kind of ["PodDisruptionBudget", "Service"]) {
    const sel = (only(objects, kind) as unknown as { spec: { selector: Record<string, unknown> } }).spec
      .selector;
    const match = (sel.matchLabels ?? sel) as Record<string, string>;
    for (const [k, v] of Object.entries(match)) t.is(labels[k], v, `${kind} selects the pods by ${k}`);
  }
  t.like(only(objects, "PodDisruptionBudget"), { spec: { maxUnavailable: 1 } });
});

test("the DaemonSet's command is one egressd accepts, on the ConfigMap's file, valid for every node; the drain fits the grace period", async (t) => {
  const objects = await rendered;
  const spec = podSpec(only(objects, "DaemonSet"));
  const c = spec.containers[0]!;
  t.is(c.command, undefined, "the image's entrypoint starts the daemon");
  t.is(c.image, "egressd:0.1.0");
  const args = expandArgs(c, {
    "spec.nodeName": "gw-a1",
    "metadata.name": "egressd-x",
    "metadata.namespace": "egressd",
  });
  t.deepEqual(args.slice(0, 1), ["run"]);
  const flag = (name: string) => args[args.indexOf(name) + 1];
  t.is(flag("--node"), "gw-a1", "the node's name from the downward API");
  // Every flag is one `egressd run` knows.
  const help = (await run(["node", join(REPO, "dist/daemon/cli.js"), "run", "--help"])).stdout;
  for (const a of args.filter((x) => x.startsWith("--")))
    t.true(help.includes(`${a} `), `egressd run knows ${a}`);
  // The config it names is the ConfigMap's one key, in the directory the ConfigMap is mounted at.
  const configPath = flag("--config")!;
  const mount = c.volumeMounts!.find((m) => configPath.startsWith(`${m.mountPath}/`))!;
  const volume = spec.volumes!.find((v) => v.name === mount.name)!;
  const cm = only(objects, "ConfigMap", volume.configMap!.name) as unknown as {
    data: Record<string, string>;
  };
  const key = configPath.slice(mount.mountPath.length + 1);
  t.deepEqual(Object.keys(cm.data), [key]);
  const text = cm.data[key]!;
  t.is(text, readFileSync(join(REPO, "deploy/config/egressd.yaml"), "utf8"));
  const nodes = nodesOf(text)!;
  t.true(nodes.length >= 2);
  let longestDrainMs = 0;
  for (const node of nodes) {
    const r = loadConfig(text, { node });
    t.true(r.ok, `node ${node}: ${JSON.stringify(!r.ok && r.errors)}`);
    if (r.ok) {
      longestDrainMs = Math.max(longestDrainMs, r.config.drain?.periodMs ?? DEFAULTS.drain.periodMs);
      t.is(r.config.gateway.name, node);
      t.is(r.config.http?.listen?.split(":").at(-1), "9469", "the port the probes and the Service use");
    }
  }
  // The run directory is a volume (the root file system is read-only); the preStop drains that egressd.
  t.true(c.volumeMounts!.some((m) => m.mountPath === flag("--run-dir")));
  const preStop = c.lifecycle!.preStop!.exec!.command;
  t.is(preStop[0], join(entrypoint().at(-1)!, "../../../bin/egressd"), "the layout's launcher");
  t.deepEqual(preStop.slice(1, 4), ["drain", "--run-dir", flag("--run-dir")]);
  const timeoutS = Number(preStop[preStop.indexOf("--timeout") + 1]);
  const grace = spec.terminationGracePeriodSeconds!;
  t.true(
    longestDrainMs / 1000 + 15 <= timeoutS,
    `drain ${longestDrainMs} ms + 15 s of clean-up within --timeout ${timeoutS}`,
  );
  t.true(timeoutS < grace, `the drain's --timeout ${timeoutS} s ends before the grace period's ${grace} s`);
});

test("the example's connection-sync pairs agree: each peer is a member that syncs back, with its own egress IPs and sync address", (t) => {
  const text = readFileSync(join(REPO, "deploy/config/egressd.yaml"), "utf8");
  const configs = new Map(
    nodesOf(text)!.map((node) => {
      const r = loadConfig(text, { node });
      if (!r.ok) throw new Error(`node ${node}: ${JSON.stringify(r.errors)}`);
      return [node, r.config];
    }),
  );
  const members = [...configs].filter(([, c]) => c.connectionSync);
  t.true(members.length >= 2, "the example shows a sync group");
  for (const [node, c] of members) {
    const sync = c.connectionSync!;
    for (const peer of sync.peers ?? []) {
      const other = configs.get(peer.name);
      t.truthy(other?.connectionSync, `${node}'s peer ${peer.name} syncs too`);
      if (!other?.connectionSync) continue;
      t.is(
        peer.address,
        other.connectionSync.address ?? "",
        `${node} reaches ${peer.name} at its sync address`,
      );
      t.deepEqual(
        [...peer.egressIPs].sort(),
        other.egressIPs.map((e) => e.address).sort(),
        `${node} backs up exactly ${peer.name}'s egress IPs`,
      );
      t.true(
        (other.connectionSync.peers ?? []).some((p) => p.name === node && p.address === sync.address),
        `${peer.name} names ${node} back`,
      );
      t.is(other.gateway.site, c.gateway.site, "a sync group stays within a site");
    }
  }
});
