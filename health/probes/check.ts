// "check" probes: any async test the daemon wants to run on the same
// rise/fall/hold-down machinery, such as the gateway watching itself
// (forwarding on, gobgpd answering; the nftables table check is routing's,
// on its netlink socket, and an egress IP's presence is pushed from one
// address listing for all of them, routing/address-watch.ts). A check resolves
// ok/failed with a reason; one that throws counts as failed, and one that
// does not answer in time as well.
import { performance } from "node:perf_hooks";
import type { ProbeResult } from "../../core/probe-state.js";
import type { PollProbe } from "../probe-types.js";
import { deadline, inconclusiveResult, stalledResult } from "../deadline.js";
import { StealExcuses, type StealClock } from "../steal.js";
import { readProcFile } from "../../lib/proc-file.js";

export interface CheckOutcome {
  ok: boolean;
  reason?: string;
}

/** A check: resolves with the outcome, or a boolean. `signal` aborts at the timeout. */
export type CheckFn = (signal: AbortSignal) => Promise<CheckOutcome | boolean>;

/**
 * `now`: the clock the timeout's lateness is read on (tests pin it; default
 * performance.now); `steal`: the machine's CPU steal (health/steal.ts).
 */
export function checkProbe(fn: CheckFn, now?: () => number, steal?: StealClock): PollProbe {
  const excuses = new StealExcuses(steal);
  return {
    run(timeoutMs: number): Promise<ProbeResult> {
      const started = performance.now();
      const ac = new AbortController();
      excuses.note();
      return new Promise<ProbeResult>((resolve) => {
        const timer = deadline(
          timeoutMs,
          (stalledMs) => {
            ac.abort();
            if (stalledMs) return resolve(stalledResult("check", stalledMs));
            const stolen = excuses.excuse(timeoutMs);
            resolve(
              stolen
                ? inconclusiveResult(`check timed out after ${timeoutMs} ms`, stolen)
                : { ok: false, reason: `check timed out after ${timeoutMs} ms` },
            );
          },
          now,
        );
        fn(ac.signal).then(
          (out) => {
            timer.cancel();
            const o = typeof out === "boolean" ? { ok: out } : out;
            if (o.ok) excuses.succeeded();
            resolve({ ok: o.ok, reason: o.reason, rttMs: performance.now() - started });
          },
          (err: unknown) => {
            timer.cancel();
            resolve({ ok: false, reason: err instanceof Error ? err.message : String(err) });
          },
        );
      });
    },
    close(): void {},
  };
}

/** IP forwarding is on in this network namespace (reads /proc through a kept descriptor, no process). */
export function forwardingCheck(family: 4 | 6 = 4): CheckFn {
  const path = family === 4 ? "/proc/sys/net/ipv4/ip_forward" : "/proc/sys/net/ipv6/conf/all/forwarding";
  return async () => {
    const v = readProcFile(path).trim();
    return v === "1" ? { ok: true } : { ok: false, reason: `${path} is ${v}` };
  };
}
