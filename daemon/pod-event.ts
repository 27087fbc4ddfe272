// A Warning Event on egressd's own pod, for a refusal that stops it before it
// runs: in a DaemonSet, `kubectl describe pod` and `kubectl get events` are
// where an operator looks first, and a pod that only restarts says nothing.
//
// Sent only when the pod's name and namespace are in the environment
// (EGRESSD_POD_NAME and EGRESSD_POD_NAMESPACE, from the downward API), with
// the default credentials: the pod's service account in a cluster, else
// $KUBECONFIG. Best effort: the refusal stands whether or not it is recorded.
import type { Logger } from "pino";

/** An Event's message is at most 1 kB (the API server truncates longer ones). */
const MAX_MESSAGE = 1024;

export interface PodRef {
  name: string;
  namespace: string;
  node?: string;
}

/** The pod egressd runs in, when the downward API says so. */
export function podFromEnv(env: NodeJS.ProcessEnv = process.env): PodRef | undefined {
  const name = env.EGRESSD_POD_NAME;
  const namespace = env.EGRESSD_POD_NAMESPACE;
  if (!name || !namespace) return undefined;
  return { name, namespace, ...(env.EGRESSD_NODE ? { node: env.EGRESSD_NODE } : {}) };
}

/** The Event object (core/v1) for `pod`. Exported for its test. */
export function podEvent(pod: PodRef, reason: string, message: string, now: Date): Record<string, unknown> {
  const at = now.toISOString();
  const text = message.length > MAX_MESSAGE ? `${message.slice(0, MAX_MESSAGE - 3)}...` : message;
  return {
    apiVersion: "v1",
    kind: "Event",
    metadata: { generateName: `${pod.name}.`, namespace: pod.namespace },
    involvedObject: { apiVersion: "v1", kind: "Pod", name: pod.name, namespace: pod.namespace },
    reason,
    message: text,
    type: "Warning",
    source: { component: "egressd", ...(pod.node ? { host: pod.node } : {}) },
    reportingComponent: "egressd.io/gateway",
    reportingInstance: pod.node ?? pod.name,
    firstTimestamp: at,
    lastTimestamp: at,
    count: 1,
  };
}

export async function recordPodEvent(
  log: Logger,
  reason: string,
  message: string,
  pod = podFromEnv(),
): Promise<void> {
  if (!pod) return;
  try {
    const [{ KubeConfig }, { apiRequest }] = await Promise.all([
      import("../inputs/k8s/client.js"),
      import("../inputs/k8s/api.js"),
    ]);
    const kc = new KubeConfig();
    if (process.env.KUBERNETES_SERVICE_HOST) kc.loadFromCluster();
    else kc.loadFromDefault();
    const r = await apiRequest(kc, "POST", `/api/v1/namespaces/${encodeURIComponent(pod.namespace)}/events`, {
      body: JSON.stringify(podEvent(pod, reason, message, new Date())),
      timeoutMs: 5000,
    });
    if (r.status >= 300) throw new Error(`the API server answered ${r.status}`);
    log.info({ reason, pod: `${pod.namespace}/${pod.name}` }, "recorded an event on this pod");
  } catch (e) {
    log.warn({ reason, err: (e as Error).message }, "cannot record an event on this pod");
  }
}
