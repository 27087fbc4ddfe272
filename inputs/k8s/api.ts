// Requests to the Kubernetes API server with @kubernetes/client-node's
// KubeConfig for the connection and credentials (in-cluster service
// account, a kubeconfig file, exec plugins, client certificates): it fills
// in the agent and the headers, and Node's own HTTP client sends. Used for
// what the informers do not do: the pages of a list (read as plain JSON,
// trimmed page by page, so memory follows what egressd keeps, not what the
// API returns) and server-side apply of status.
//
// Connections are kept and reused (keepAlive). client-node makes a new agent
// for every request, so each request was a new connection, and in a cluster a
// new TLS handshake: a gateway writing the status of 1,000 policies made
// 1,000 of them. The agent is made again when the TLS material it was made
// with changes (a rotated client certificate or CA); behind a proxy,
// client-node's own proxy agent is used as it is.
import { createHash } from "node:crypto";
import { Agent as HttpAgent, request as httpRequest, type RequestOptions } from "node:http";
import { Agent as HttpsAgent, request as httpsRequest } from "node:https";
import type { KubeConfig } from "./client.js";

export interface ApiResponse {
  status: number;
  body: unknown;
}

/** An error answer of the API server, with its Status code and reason. */
export class ApiError extends Error {
  constructor(
    readonly statusCode: number,
    readonly reason: string,
    message: string,
  ) {
    super(message);
  }
  /** client-node's ListWatch restarts from a fresh list on a code of 410. */
  get code(): number {
    return this.statusCode;
  }
}

export async function apiRequest(
  kc: KubeConfig,
  method: string,
  path: string,
  opts: {
    query?: Record<string, string | number | boolean | undefined>;
    body?: string;
    contentType?: string;
    timeoutMs?: number;
  } = {},
): Promise<ApiResponse> {
  const cluster = kc.getCurrentCluster();
  if (!cluster) throw new Error("the kubeconfig has no current cluster");
  const url = new URL(cluster.server.replace(/\/$/, "") + path);
  for (const [k, v] of Object.entries(opts.query ?? {}))
    if (v !== undefined) url.searchParams.set(k, String(v));
  const ro: RequestOptions = { method, headers: {} };
  await kc.applyToHTTPSOptions(ro);
  if (!cluster.proxyUrl) ro.agent = keptAgent(kc, url.protocol, ro);
  ro.headers = { ...(ro.headers as Record<string, string>), accept: "application/json" };
  if (opts.body !== undefined) {
    ro.headers["content-type"] = opts.contentType ?? "application/json";
    // Framed by its length: Node sends DELETE bodies unchunked, which without one would run into the next request.
    ro.headers["content-length"] = String(Buffer.byteLength(opts.body));
  }
  const send = url.protocol === "http:" ? httpRequest : httpsRequest;
  return new Promise<ApiResponse>((resolve, reject) => {
    const req = send(url, ro, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (d: Buffer) => chunks.push(d));
      res.on("error", reject);
      res.on("end", () => {
        const text = Buffer.concat(chunks).toString("utf8");
        let body: unknown = text;
        try {
          body = JSON.parse(text);
        } catch {
          // not JSON: kept as text
        }
        resolve({ status: res.statusCode ?? 0, body });
      });
    });
    req.on("error", reject);
    req.setTimeout(opts.timeoutMs ?? 30_000, () =>
      req.destroy(new Error(`${method} ${url.pathname}: no answer in ${opts.timeoutMs ?? 30_000} ms`)),
    );
    if (opts.body !== undefined) req.write(opts.body);
    req.end();
  });
}

/** Idle kept connections are closed after this long. */
const IDLE_MS = 60_000;

const agents = new WeakMap<KubeConfig, { key: string; agent: HttpAgent }>();

/** The kept agent of this KubeConfig for this protocol and TLS material (see the top of the file). */
function keptAgent(kc: KubeConfig, protocol: string, ro: RequestOptions): HttpAgent {
  const t = ro as RequestOptions & Record<string, unknown>;
  const tls = ["ca", "cert", "key", "pfx", "passphrase", "servername", "rejectUnauthorized"] as const;
  const h = createHash("sha256").update(protocol);
  for (const k of tls) {
    const v = t[k];
    h.update(`\0${k}=`);
    if (v === undefined) continue;
    for (const x of Array.isArray(v) ? v : [v]) h.update(Buffer.isBuffer(x) ? x : String(x)).update("\0");
  }
  const key = h.digest("hex");
  const kept = agents.get(kc);
  if (kept?.key === key) return kept.agent;
  const options = { keepAlive: true, timeout: IDLE_MS };
  const agent =
    protocol === "http:"
      ? new HttpAgent(options)
      : new HttpsAgent({
          ...options,
          ...Object.fromEntries(tls.filter((k) => t[k] !== undefined).map((k) => [k, t[k]])),
        });
  agents.set(kc, { key, agent });
  return agent;
}

/** The body of a 2xx answer; an ApiError with the Status's code, reason and message otherwise. */
export function okBody(r: ApiResponse, what: string): unknown {
  if (r.status >= 200 && r.status < 300) return r.body;
  const s = (typeof r.body === "object" && r.body !== null ? r.body : {}) as {
    reason?: string;
    message?: string;
  };
  throw new ApiError(
    r.status,
    s.reason ?? "Unknown",
    `${what}: ${r.status} ${s.reason ?? ""}: ${s.message ?? String(r.body).slice(0, 200)}`,
  );
}
