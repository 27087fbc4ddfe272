// The two shapes of a probe, apart from the prober that runs them, so that
// the probes (health/probes/*) and the prober import in one direction only.
import type { ProbeResult } from "../core/probe-state.js";

/** A probe the prober calls every interval. run() must resolve (never reject) within timeoutMs. */
export interface PollProbe {
  run(timeoutMs: number): Promise<ProbeResult>;
  close(): void;
}

/** A probe that keeps its own cadence and pushes results (ICMP: the helper's verdicts; BFD). */
export interface StreamProbe {
  start(onResult: (r: ProbeResult) => void): void;
  close(): void;
}
