// From probe states to what must be withdrawn. Pure.
//
// A probe guards the gateway, an uplink (every policy using it) or one policy.
// Only a probe that is "up" vouches for what it guards: "unknown" (not yet
// proven), "down" and "held" (recovered but in hold-down or damped) do not.
import type { Config } from "../config/schema.js";
import type { ProbeConfig } from "../config/ops-schema.js";
import type { BgpHealth } from "./bgp.js";
import { canonicalText } from "../ip.js";

export type ProbeStates = ReadonlyMap<string, string>;

/** Name prefix of the self-check that an egress IP is configured: `self-address-192.0.2.11`. */
export const SELF_ADDRESS = "self-address-";

/** Why a policy with `advertise: false` is never advertised (in the status's list of reasons). */
export const NOT_ADVERTISED = "advertise: false";

export interface HealthView extends BgpHealth {
  /** Why each withdrawn policy is withdrawn (probe names), for /status. */
  why: Map<string, string[]>;
  /** Probes that take the whole gateway down right now. */
  gatewayDownBy: string[];
}

export function affectsText(p: ProbeConfig): string {
  if (p.affects === "gateway") return "gateway";
  return "uplink" in p.affects ? `uplink ${p.affects.uplink}` : `policy ${p.affects.policy}`;
}

/** What health reads of a config: policy names, egress IPs and uplinks, and the probes. */
export interface HealthConfig {
  policies: readonly Pick<Config["policies"][number], "name" | "egressIP" | "uplink" | "advertise">[];
  probes?: ProbeConfig[];
}

export function healthFrom(
  config: HealthConfig,
  states: ProbeStates,
  extra: {
    selfDown?: readonly string[];
    downPeers?: ReadonlySet<string>;
    draining?: boolean;
    backupReady?: boolean;
  } = {},
): HealthView {
  const why = new Map<string, string[]>();
  const gatewayDownBy: string[] = [];
  const downAddresses = new Set<string>();
  const mark = (policy: string, probe: string) => why.set(policy, [...(why.get(policy) ?? []), probe]);
  // A missing egress IP takes down the policies that use it and its own
  // advertisement; every other self-check (forwarding, nft table, gobgpd)
  // concerns the whole gateway.
  for (const check of extra.selfDown ?? []) {
    if (!check.startsWith(SELF_ADDRESS)) {
      gatewayDownBy.push(check);
      continue;
    }
    const address = canonicalText(check.slice(SELF_ADDRESS.length));
    downAddresses.add(address);
    for (const pol of config.policies) {
      if (pol.egressIP !== undefined && canonicalText(pol.egressIP) === address) mark(pol.name, check);
    }
  }
  // Served here if its traffic comes, but not advertised from here.
  for (const pol of config.policies) if (pol.advertise === false) mark(pol.name, NOT_ADVERTISED);
  for (const probe of config.probes ?? []) {
    if (states.get(probe.name) === "up") continue;
    const a = probe.affects;
    if (a === "gateway") gatewayDownBy.push(probe.name);
    else if ("uplink" in a) {
      for (const pol of config.policies) if (pol.uplink === a.uplink) mark(pol.name, probe.name);
    } else mark(a.policy, probe.name);
  }
  return {
    downPolicies: new Set(why.keys()),
    gatewayDown: gatewayDownBy.length > 0,
    draining: extra.draining ?? false,
    backupReady: extra.backupReady ?? false,
    downPeers: extra.downPeers ?? new Set(),
    downAddresses,
    why,
    gatewayDownBy,
  };
}
