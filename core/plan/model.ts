// Turns a validated Config into the parsed values the planner works on:
// policies with numeric prefixes, uplink tables, mark values.
import type { Config, PolicyAction, PolicyConfig } from "../config/schema.js";
import { DEFAULTS as ALL_DEFAULTS } from "../defaults.js";
import { mustParseSpan, parseAddress } from "../ip.js";
import type { Family } from "../state.js";
import type { PolicyModel } from "./nat.js";

const DEFAULTS = ALL_DEFAULTS.dataplane;

export interface Dataplane {
  markMask: number;
  tableBase: number;
  rulePriority: number;
  unmatched: "Deny" | "Direct";
  snatPorts?: [number, number];
  snatMode?: "random" | "fully-random" | "persistent";
}

export function dataplaneOf(config: Pick<Config, "dataplane">): Dataplane {
  return {
    markMask: config.dataplane?.markMask ?? DEFAULTS.markMask,
    tableBase: config.dataplane?.tableBase ?? DEFAULTS.tableBase,
    rulePriority: config.dataplane?.rulePriority ?? DEFAULTS.rulePriority,
    unmatched: config.dataplane?.unmatched ?? DEFAULTS.unmatched,
    ...(config.dataplane?.snatPorts !== undefined
      ? { snatPorts: config.dataplane.snatPorts.split("-").map(Number) as [number, number] }
      : {}),
    ...(config.dataplane?.snatMode !== undefined ? { snatMode: config.dataplane.snatMode } : {}),
  };
}

/** The routing table of each uplink, by uplink index: explicit, else tableBase + index. */
export function uplinkTables(uplinks: readonly { table?: number }[], tableBase: number): number[] {
  return uplinks.map((u, i) => u.table ?? tableBase + i);
}

/** Number of distinct non-zero mark values the mask allows (2^bits - 1). */
export function markCapacity(mask: number): number {
  let bits = 0;
  for (let m = mask >>> 0; m !== 0; m >>>= 1) bits += m & 1;
  return 2 ** bits - 1;
}

/** The n-th (1-based) mark value within mask: n's bits deposited into the mask's set bits, low to high. */
export function markValue(n: number, mask: number): number {
  let value = 0;
  let rest = n;
  for (let bit = 0; bit < 32 && rest > 0; bit++) {
    const b = 2 ** bit;
    if (Math.floor((mask >>> 0) / b) % 2 === 1) {
      if (rest % 2 === 1) value += b;
      rest = Math.floor(rest / 2);
    }
  }
  if (rest > 0) throw new Error(`mark ${n} does not fit in mask 0x${(mask >>> 0).toString(16)}`);
  return value;
}

/** What a (validated) policy does: its action, else Direct for gateway: false, else SNAT. */
export function actionOf(p: Pick<PolicyConfig, "action" | "gateway">): PolicyAction {
  return p.action ?? (p.gateway === false ? "Direct" : "SNAT");
}

/** A policy's family: its egress IP's, else its first source's, else (no sources yet) its first destination's. */
export function policyFamily(p: Config["policies"][number]): Family {
  const first = p.egressIP ?? p.sources[0] ?? p.destinations[0]!;
  const a = parseAddress(first.split("/")[0]!);
  if (a === undefined) throw new Error(`policy ${p.name}: ${first} is not an address`);
  return a.family;
}

export function policyModels(config: Pick<Config, "policies">): PolicyModel[] {
  return config.policies.map((p, index) => ({
    index,
    name: p.name,
    family: policyFamily(p),
    gateway: actionOf(p) !== "Direct",
    sources: p.sources.map(mustParseSpan),
    destinations: p.destinations.map(mustParseSpan),
    exceptions: (p.exceptions ?? []).map(mustParseSpan),
  }));
}
