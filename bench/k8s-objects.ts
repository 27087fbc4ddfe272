// Kubernetes objects as an API server returns them, for the benchmarks: a
// pod is a few kilobytes, most of which egressd does not keep.

type Json = Record<string, unknown>;

/** A pod as an API server returns it: a few kilobytes, most of which egressd does not keep. */
export function podObject(k: number, ns: string, ip: string, app: string): Json {
  return {
    apiVersion: "v1",
    kind: "Pod",
    metadata: {
      name: `pod-${k}`,
      namespace: ns,
      uid: `00000000-0000-4000-8000-${k.toString(16).padStart(12, "0")}`,
      labels: { app, "pod-template-hash": "5d8c7b9f4" },
      annotations: { "kubectl.kubernetes.io/restartedAt": "2026-12-01T10:00:00Z" },
      ownerReferences: [
        { apiVersion: "apps/v1", kind: "ReplicaSet", name: `rs-${k}`, uid: "x", controller: true },
      ],
      creationTimestamp: "2026-12-01T10:00:00Z",
    },
    spec: {
      containers: [
        {
          name: "app",
          image: "registry.example/app:1.2.3",
          ports: [{ containerPort: 8080 }],
          env: [{ name: "MODE", value: "production" }],
          resources: { requests: { cpu: "100m", memory: "128Mi" } },
        },
      ],
      nodeName: `node-${k % 500}`,
      serviceAccountName: "default",
    },
    status: {
      phase: "Running",
      hostIP: `10.0.${k % 500 >> 8}.${k % 250}`,
      podIP: ip,
      podIPs: [{ ip }],
      conditions: [
        { type: "Ready", status: "True" },
        { type: "ContainersReady", status: "True" },
      ],
      containerStatuses: [{ name: "app", ready: true, restartCount: 0, image: "registry.example/app:1.2.3" }],
    },
  };
}
