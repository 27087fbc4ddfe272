// TCP connect probe: healthy when a connection to target:port is established
// within the timeout. The connection is closed at once; nothing is sent.
import { connect, isIPv6 } from "node:net";
import { performance } from "node:perf_hooks";
import type { ProbeResult } from "../../core/probe-state.js";
import type { PollProbe } from "../probe-types.js";
import { deadline, inconclusiveResult, stalledResult } from "../deadline.js";
import { StealExcuses, type StealClock } from "../steal.js";

export interface TcpProbeOptions {
  target: string;
  port: number;
  /** Local address to connect from (selects the egress path). */
  sourceAddress?: string;
  /** The machine's CPU steal (default: /proc/stat; health/steal.ts). */
  steal?: StealClock;
}

export function tcpProbe(opts: TcpProbeOptions): PollProbe {
  if (!Number.isInteger(opts.port) || opts.port < 1 || opts.port > 65535) {
    throw new Error(`tcp probe: invalid port ${opts.port}`);
  }
  const label = isIPv6(opts.target) ? `[${opts.target}]:${opts.port}` : `${opts.target}:${opts.port}`;
  const excuses = new StealExcuses(opts.steal);
  return {
    run(timeoutMs: number): Promise<ProbeResult> {
      excuses.note();
      return new Promise((resolve) => {
        const started = performance.now();
        let done = false;
        const socket = connect({
          host: opts.target,
          port: opts.port,
          localAddress: opts.sourceAddress,
          noDelay: true,
        });
        const finish = (r: ProbeResult): void => {
          if (done) return;
          done = true;
          timer.cancel();
          socket.destroy();
          if (r.ok) excuses.succeeded();
          resolve(r);
        };
        const timer = deadline(timeoutMs, (stalledMs) => {
          if (stalledMs) return finish(stalledResult(`tcp connect ${label}`, stalledMs));
          const what = `tcp connect ${label}: timeout after ${timeoutMs} ms`;
          const stolen = excuses.excuse(timeoutMs);
          finish(stolen ? inconclusiveResult(what, stolen) : { ok: false, reason: what });
        });
        socket.once("connect", () => finish({ ok: true, rttMs: performance.now() - started }));
        socket.once("error", (err: NodeJS.ErrnoException) =>
          finish({ ok: false, reason: `tcp connect ${label}: ${err.code ?? err.message}` }),
        );
      });
    },
    close(): void {},
  };
}
