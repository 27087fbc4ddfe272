// "check" probes: any async test the daemon wants to run on the same
// rise/fall/hold-down machinery, such as the gateway watching itself
// (forwarding on, its nftables table present, its egress address present,
// gobgpd answering). A check resolves ok/failed with a reason; one that
// throws counts as failed, and one that does not answer in time as well.
import { readFile } from "node:fs/promises";
import { networkInterfaces } from "node:os";
import { performance } from "node:perf_hooks";
import { execFile } from "node:child_process";
import type { ProbeResult } from "../../core/probe-state.js";
import type { PollProbe } from "../probe-types.js";

export interface CheckOutcome {
  ok: boolean;
  reason?: string;
}

/** A check: resolves with the outcome, or a boolean. `signal` aborts at the timeout. */
export type CheckFn = (signal: AbortSignal) => Promise<CheckOutcome | boolean>;

export function checkProbe(fn: CheckFn): PollProbe {
  return {
    run(timeoutMs: number): Promise<ProbeResult> {
      const started = performance.now();
      const ac = new AbortController();
      return new Promise<ProbeResult>((resolve) => {
        const timer = setTimeout(() => {
          ac.abort();
          resolve({ ok: false, reason: `check timed out after ${timeoutMs} ms` });
        }, timeoutMs);
        fn(ac.signal).then(
          (out) => {
            clearTimeout(timer);
            const o = typeof out === "boolean" ? { ok: out } : out;
            resolve({ ok: o.ok, reason: o.reason, rttMs: performance.now() - started });
          },
          (err: unknown) => {
            clearTimeout(timer);
            resolve({ ok: false, reason: err instanceof Error ? err.message : String(err) });
          },
        );
      });
    },
    close(): void {},
  };
}

/** IP forwarding is on in this network namespace (reads /proc, no process). */
export function forwardingCheck(family: 4 | 6 = 4): CheckFn {
  const path = family === 4 ? "/proc/sys/net/ipv4/ip_forward" : "/proc/sys/net/ipv6/conf/all/forwarding";
  return async () => {
    const v = (await readFile(path, "utf8")).trim();
    return v === "1" ? { ok: true } : { ok: false, reason: `${path} is ${v}` };
  };
}

/** An address is configured on some interface (no process; os.networkInterfaces()). */
export function addressCheck(address: string): CheckFn {
  const want = address.toLowerCase();
  return async () => {
    for (const list of Object.values(networkInterfaces())) {
      for (const a of list ?? []) if (a.address.toLowerCase() === want) return { ok: true };
    }
    return { ok: false, reason: `address ${address} is not configured` };
  };
}

/**
 * An nftables table exists (runs `nft list table`, ~5 ms of process start:
 * give it an interval of a second or so, not 100 ms).
 */
export function nftTableCheck(family: string, table: string, nft = "/usr/sbin/nft"): CheckFn {
  return (signal) =>
    new Promise((resolve) => {
      execFile(nft, ["-t", "list", "table", family, table], { signal }, (err, _out, stderr) => {
        if (!err) resolve({ ok: true });
        else resolve({ ok: false, reason: `nft table ${family} ${table}: ${stderr.trim() || err.message}` });
      });
    });
}
