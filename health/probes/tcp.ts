// TCP connect probe: healthy when a connection to target:port is established
// within the timeout. The connection is closed at once; nothing is sent.
import { connect, isIPv6 } from "node:net";
import { performance } from "node:perf_hooks";
import type { ProbeResult } from "../../core/probe-state.js";
import type { PollProbe } from "../probe-types.js";
import { deadline, stalledResult } from "../deadline.js";

export interface TcpProbeOptions {
  target: string;
  port: number;
  /** Local address to connect from (selects the egress path). */
  sourceAddress?: string;
}

export function tcpProbe(opts: TcpProbeOptions): PollProbe {
  if (!Number.isInteger(opts.port) || opts.port < 1 || opts.port > 65535) {
    throw new Error(`tcp probe: invalid port ${opts.port}`);
  }
  const label = isIPv6(opts.target) ? `[${opts.target}]:${opts.port}` : `${opts.target}:${opts.port}`;
  return {
    run(timeoutMs: number): Promise<ProbeResult> {
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
          resolve(r);
        };
        const timer = deadline(timeoutMs, (stalledMs) =>
          finish(
            stalledMs
              ? stalledResult(`tcp connect ${label}`, stalledMs)
              : { ok: false, reason: `tcp connect ${label}: timeout after ${timeoutMs} ms` },
          ),
        );
        socket.once("connect", () => finish({ ok: true, rttMs: performance.now() - started }));
        socket.once("error", (err: NodeJS.ErrnoException) =>
          finish({ ok: false, reason: `tcp connect ${label}: ${err.code ?? err.message}` }),
        );
      });
    },
    close(): void {},
  };
}
