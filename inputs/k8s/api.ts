// Requests to the Kubernetes API server with @kubernetes/client-node's
// KubeConfig for the connection and credentials (in-cluster service
// account, a kubeconfig file, exec plugins, client certificates): it fills
// in the agent and the headers, and Node's own HTTP client sends. Used for
// what the informers do not do: the pages of a list (read as plain JSON,
// trimmed page by page, so memory follows what egressd keeps, not what the
// API returns) and server-side apply of status.
import { request as httpRequest, type RequestOptions } from "node:http";
import { request as httpsRequest } from "node:https";
import type { KubeConfig } from "@kubernetes/client-node";

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
