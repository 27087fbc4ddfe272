// Shared pieces of the NAT benchmarks: a namespace sandbox that cleans up
// after itself, plans with many sources, and running this same script inside
// a namespace (the reconcilers act on the namespace they run in).
import { randomBytes } from "node:crypto";
import { fileURLToPath } from "node:url";
import { run } from "../lib/exec.js";
import type { KernelState, NatPlan } from "../core/state.js";
import { Sandbox } from "../test/helpers/netns.js";
import { referenceState } from "../test/helpers/dataplane-topology.js";

/**
 * A sandbox for one benchmark run, removed on exit and, unless the caller
 * handles the signals itself (`signals: false`), on Ctrl-C.
 */
export function benchSandbox(tag: string, o: { signals?: boolean } = {}): Sandbox {
  const s = new Sandbox(`bn${randomBytes(2).toString("hex")}${tag}`);
  if (o.signals === false) return s;
  const stop = () => {
    void s.cleanup().finally(() => process.exit(130));
  };
  process.once("SIGINT", stop);
  process.once("SIGTERM", stop);
  return s;
}

/** `count` single-address sources in class 1: 10.64.0.0, 10.64.0.1, ... (plus the pod itself first). */
export function manySources(count: number, first = "10.244.1.10"): NatPlan["sources"] {
  const out: NatPlan["sources"] = [{ family: 4, interval: first, classId: 1 }];
  for (let i = 0; out.length < count; i++)
    out.push({
      family: 4,
      interval: `10.64.${(i >> 8) & 255}.${i & 255}`.replace(/^10\.64\./, `10.${64 + (i >> 16)}.`),
      classId: 1,
    });
  return out;
}

/** The reference topology's state with `count` source entries. */
export function stateWithSources(count: number): KernelState {
  const st = referenceState();
  st.nat.sources = [...manySources(count), { family: 6, interval: "fd00:244::10", classId: 2 }];
  return st;
}

/** Runs `node <this script> args...` inside a namespace and returns its stdout. */
export async function runInside(ns: string, script: string, args: string[]): Promise<string> {
  const { stdout } = await run(["node", fileURLToPath(script), ...args], { netns: ns, timeoutMs: 300_000 });
  return stdout;
}

export { median, percentile as pct } from "../lib/stats.js";
export const fmt = (n: number, digits = 2) => n.toFixed(digits);
