// HTTP(S) GET probe: healthy when the response status equals the expected one
// (200 by default) and arrives within the timeout. Each probe opens a new
// connection (no keep-alive), so it also tests connection set-up along the
// path. TLS certificates are verified unless the probe says to skip it.
import { request as httpRequest, type IncomingMessage } from "node:http";
import { request as httpsRequest } from "node:https";
import { isIPv6 } from "node:net";
import { performance } from "node:perf_hooks";
import type { ProbeResult } from "../../core/probe-state.js";
import type { PollProbe } from "../probe-types.js";
import { redactUrl } from "../../core/redact.js";
import { probeableScheme } from "../../core/probe-spec.js";
import { deadline, inconclusiveResult, stalledResult } from "../deadline.js";
import { StealExcuses, type StealClock } from "../steal.js";

export interface HttpProbeOptions {
  /** Full URL; if absent it is built from target and port. */
  url?: string;
  target?: string;
  port?: number;
  /** Status that counts as healthy (default 200). */
  expectStatus?: number;
  /** Local address to connect from. */
  sourceAddress?: string;
  /** HTTPS only: accept any certificate. Off unless configured. */
  tlsSkipVerify?: boolean;
  /** The machine's CPU steal (default: /proc/stat; health/steal.ts). */
  steal?: StealClock;
}

/** The URL a probe will GET. */
export function httpProbeUrl(opts: HttpProbeOptions): URL {
  if (opts.url) return new URL(opts.url);
  if (!opts.target) throw new Error("http probe: needs url or target");
  const host = isIPv6(opts.target) ? `[${opts.target}]` : opts.target;
  return new URL(`http://${host}${opts.port ? `:${opts.port}` : ""}/`);
}

export function httpProbe(opts: HttpProbeOptions): PollProbe {
  const url = httpProbeUrl(opts);
  if (!probeableScheme(url)) {
    throw new Error(`http probe: unsupported scheme ${url.protocol}`);
  }
  const expect = opts.expectStatus ?? 200;
  const request = url.protocol === "https:" ? httpsRequest : httpRequest;
  // Failure reasons go to logs and /status: never the credentials a URL may hold.
  const shown = redactUrl(url.toString());
  const excuses = new StealExcuses(opts.steal);
  return {
    run(timeoutMs: number): Promise<ProbeResult> {
      excuses.note();
      return new Promise((resolve) => {
        const started = performance.now();
        const ac = new AbortController();
        const signal = ac.signal;
        let done = false;
        const finish = (r: ProbeResult): void => {
          if (done) return;
          done = true;
          timer.cancel();
          req.destroy();
          if (r.ok) excuses.succeeded();
          resolve(r);
        };
        const timer = deadline(timeoutMs, (stalledMs) => {
          if (stalledMs) return finish(stalledResult(`GET ${shown}`, stalledMs));
          const stolen = excuses.excuse(timeoutMs);
          if (stolen) finish(inconclusiveResult(`GET ${shown}: timeout after ${timeoutMs} ms`, stolen));
          else ac.abort();
        });
        const req = request(url, {
          method: "GET",
          agent: false,
          signal,
          localAddress: opts.sourceAddress,
          rejectUnauthorized: !opts.tlsSkipVerify,
          headers: { "user-agent": "egressd-probe", connection: "close" },
        });
        req.once("response", (res: IncomingMessage) => {
          const status = res.statusCode ?? 0;
          res.resume();
          if (status === expect) finish({ ok: true, rttMs: performance.now() - started });
          else finish({ ok: false, reason: `GET ${shown}: status ${status}, expected ${expect}` });
        });
        req.once("error", (err: NodeJS.ErrnoException) => {
          const what = signal.aborted ? `timeout after ${timeoutMs} ms` : (err.code ?? err.message);
          finish({ ok: false, reason: `GET ${shown}: ${what}` });
        });
        req.end();
      });
    },
    close(): void {},
  };
}
