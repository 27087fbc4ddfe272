// What egressd shows operators: Prometheus metrics and the HTTP endpoints
// (/metrics, /healthz, /readyz, /status), started beside the gateway by
// `egressd run`. Observers only read: they subscribe to the gateway's events
// and call its cheap status(); they never change it.
import type { Registry } from "prom-client";
import { startHttpServer } from "./http.js";
import type { Logger } from "./log.js";
import { Metrics } from "./metrics.js";

export type { ObservableGateway } from "./observable.js";
import type { ObservableGateway } from "./observable.js";

export interface ObservabilityOptions {
  gateway: ObservableGateway;
  /** host:port ("127.0.0.1:9469", "[::1]:9469", ":9469" for every address); port 0 picks one. */
  listen: string;
  log: Logger;
  version: string;
}

export interface Observability {
  /** Stops listening and unsubscribes from the gateway. */
  close(): Promise<void>;
  registry: Registry;
  /** The address actually listened on, host:port. */
  address: string;
}

export async function startObservability(opts: ObservabilityOptions): Promise<Observability> {
  const metrics = new Metrics({ gateway: opts.gateway, version: opts.version, log: opts.log });
  let server;
  try {
    server = await startHttpServer({
      gateway: opts.gateway,
      registry: metrics.registry,
      render: () => metrics.render(),
      listen: opts.listen,
      log: opts.log,
    });
  } catch (e) {
    metrics.close();
    throw e;
  }
  opts.log.info({ address: server.address }, "HTTP listening: /metrics /healthz /readyz /status");
  return {
    registry: metrics.registry,
    address: server.address,
    close: async () => {
      await server.close();
      metrics.close();
    },
  };
}
