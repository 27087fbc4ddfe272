// Requests to the API server reuse their connections (inputs/k8s/api.ts): a
// status write per policy must not be a connection (and in a cluster a TLS
// handshake) per policy.
import test from "ava";
import { KubeConfig } from "../../inputs/k8s/client.js";
import { apiRequest, okBody } from "../../inputs/k8s/api.js";
import { KubeApiServer } from "../helpers/kube-apiserver.js";

test("requests reuse kept connections: 50 one after another on one, 40 at once on at most 8", async (t) => {
  const api = new KubeApiServer();
  await api.start();
  t.teardown(() => api.stop());
  const kc = new KubeConfig();
  kc.loadFromString(api.kubeconfig());
  for (let i = 0; i < 50; i++) okBody(await apiRequest(kc, "GET", "/api/v1/namespaces"), "list");
  t.is(api.connections, 1);
  const before = api.connections;
  // 8 at a time, as the status writer sends them
  for (let round = 0; round < 5; round++)
    await Promise.all(Array.from({ length: 8 }, () => apiRequest(kc, "GET", "/api/v1/pods")));
  t.true(api.connections - before <= 8, `${api.connections - before} new connections`);
  // another KubeConfig (other credentials) does not share them
  const other = new KubeConfig();
  other.loadFromString(api.kubeconfig());
  okBody(await apiRequest(other, "GET", "/api/v1/namespaces"), "list");
  t.true(api.connections > before);
});
