// egressd's HTTP listener (node:http, loopback by default):
//
//   GET /metrics  Prometheus exposition of the gateway's registry
//   GET /healthz  200 while the event loop and the controller are alive, else 503
//   GET /readyz   200 when the data plane is programmed and a BGP session is
//                 Established, else 503 with the reasons, one a line
//   GET /status   the gateway's StatusSnapshot as JSON
//
// Anything else is 404; a method other than GET is 405.
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import type { Registry } from "prom-client";
import type { Logger } from "./log.js";
import type { ObservableGateway } from "./observable.js";

export interface HttpOptions {
  gateway: Pick<ObservableGateway, "status" | "loopAlive">;
  registry: Registry;
  /** Renders /metrics (default: the registry's own, in one task). */
  render?: () => Promise<string>;
  log?: Logger;
}

/** Splits "host:port", "[v6]:port" or ":port" (every address). */
export function parseListen(listen: string): { host: string | undefined; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:[\]]*)):(\d{1,5})$/.exec(listen.trim());
  const port = Number(m?.[3]);
  if (!m || !Number.isInteger(port) || port > 65535)
    throw new Error(`listen address ${JSON.stringify(listen)} is not host:port`);
  const host = m[1] ?? m[2];
  return { host: host ? host : undefined, port };
}

/** host:port as a URL authority (IPv6 in brackets). */
export function formatAddress(host: string, port: number): string {
  return host.includes(":") ? `[${host}]:${port}` : `${host}:${port}`;
}

function send(
  res: ServerResponse,
  code: number,
  type: string,
  body: string,
  extra: Record<string, string> = {},
) {
  res.writeHead(code, {
    "Content-Type": type,
    "Content-Length": Buffer.byteLength(body),
    "Cache-Control": "no-store",
    ...extra,
  });
  res.end(body);
}

const TEXT = "text/plain; charset=utf-8";

export function httpHandler(opts: HttpOptions): (req: IncomingMessage, res: ServerResponse) => Promise<void> {
  const { gateway, registry, log } = opts;
  return async (req, res) => {
    const path = (req.url ?? "/").split("?")[0];
    const known = path === "/metrics" || path === "/healthz" || path === "/readyz" || path === "/status";
    if (!known) return send(res, 404, TEXT, "not found: try /metrics, /healthz, /readyz or /status\n");
    if (req.method !== "GET") return send(res, 405, TEXT, "method not allowed\n", { Allow: "GET" });
    try {
      switch (path) {
        case "/metrics": {
          const body = await (opts.render ? opts.render() : registry.metrics());
          return send(res, 200, registry.contentType, body);
        }
        case "/healthz":
          return gateway.loopAlive()
            ? send(res, 200, TEXT, "ok\n")
            : send(res, 503, TEXT, "not alive: the control loop is stuck\n");
        case "/readyz": {
          const s = gateway.status();
          if (s.ready) return send(res, 200, TEXT, "ready\n");
          const reasons = s.notReadyReasons.length ? s.notReadyReasons : ["not ready"];
          return send(res, 503, TEXT, reasons.map((r) => `${r}\n`).join(""));
        }
        default:
          return send(
            res,
            200,
            "application/json; charset=utf-8",
            `${JSON.stringify(gateway.status(), null, 2)}\n`,
          );
      }
    } catch (e) {
      log?.error({ err: e, path }, "HTTP handler failed");
      if (!res.headersSent) send(res, 500, TEXT, `internal error: ${(e as Error).message}\n`);
      else res.destroy();
    }
  };
}

export interface HttpServer {
  server: Server;
  /** host:port actually listened on. */
  address: string;
  close(): Promise<void>;
}

/**
 * Bounds on the listener. Every socket it holds is a file descriptor that nft,
 * the ICMP helper's pipes and netlink need too: running out would make the gateway withdraw
 * itself. So connections are capped, and slow or idle ones are closed.
 */
export interface HttpLimits {
  /** Connections held at once; more are closed at once (default 64). */
  maxConnections: number;
  /** A request's headers must be complete this long after the connection opened (default 5 s). */
  headersTimeoutMs: number;
  /** A whole request (default 10 s). */
  requestTimeoutMs: number;
  /** A connection with nothing to do (no request yet, or kept alive) is closed after this (default 5 s). */
  idleTimeoutMs: number;
  /** How often the header and request deadlines are enforced (Node's default is 30 s; default 1 s). */
  checkIntervalMs: number;
}

export const HTTP_LIMITS: HttpLimits = {
  maxConnections: 64,
  headersTimeoutMs: 5_000,
  requestTimeoutMs: 10_000,
  idleTimeoutMs: 5_000,
  checkIntervalMs: 1_000,
};

/** Listens on `listen` (host:port); rejects if the address cannot be bound. */
export async function startHttpServer(
  opts: HttpOptions & { listen: string; limits?: Partial<HttpLimits> },
): Promise<HttpServer> {
  const { host, port } = parseListen(opts.listen);
  const limits = { ...HTTP_LIMITS, ...opts.limits };
  const handler = httpHandler(opts);
  const server = createServer(
    {
      connectionsCheckingInterval: limits.checkIntervalMs,
      headersTimeout: limits.headersTimeoutMs,
      requestTimeout: limits.requestTimeoutMs,
      keepAliveTimeout: limits.idleTimeoutMs,
    },
    (req, res) => void handler(req, res),
  );
  server.maxConnections = limits.maxConnections;
  // Idle sockets (connected, nothing sent) are closed too, not only slow requests.
  server.setTimeout(limits.idleTimeoutMs, (socket) => socket.destroy());
  await new Promise<void>((resolve, reject) => {
    const onError = (e: Error) => reject(new Error(`cannot listen on ${opts.listen}: ${e.message}`));
    server.once("error", onError);
    server.listen({ host, port }, () => {
      server.off("error", onError);
      resolve();
    });
  });
  server.on("error", (e) => opts.log?.error({ err: e }, "HTTP server error"));
  const a = server.address() as AddressInfo;
  return {
    server,
    address: formatAddress(a.address, a.port),
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
