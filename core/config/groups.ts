// Egress IP groups: a policy names a group, and each gateway's own file says
// which of its addresses (one per family) and which uplink the group means
// here. Resolved once, before planning, so that the planner sees every policy
// with a literal egress IP and uplink, whichever input it came from.
import { parseAddress } from "../ip.js";
import type { Family } from "../state.js";
import type { Config, EgressIPGroupConfig, PolicyConfig } from "./schema.js";

/** The group's address of `family`, if it has one. */
export function groupAddress(group: EgressIPGroupConfig, family: Family): string | undefined {
  return group.egressIPs.find((a) => parseAddress(a)?.family === family);
}

/**
 * Gives every policy of `config` that names a group the group's egress IP of
 * the policy's family and its uplink, in place (the config is the one just
 * made from a file or from the cluster, and keeps its identity: the
 * classifier made while validating it stays its own). The config must have
 * passed validation, which checks that each such group exists and has that
 * family; a policy that still cannot be resolved is an error.
 */
export function resolveGroups<C extends Pick<Config, "egressIPGroups" | "policies">>(
  config: C,
  familyOf: (p: PolicyConfig) => Family,
): C {
  if (!config.policies.some((p) => p.egressIPGroup !== undefined)) return config;
  const groups = new Map((config.egressIPGroups ?? []).map((g) => [g.name, g]));
  for (const p of config.policies) {
    if (p.egressIPGroup === undefined) continue;
    const g = groups.get(p.egressIPGroup);
    const family = familyOf(p);
    const address = g && groupAddress(g, family);
    if (!g || address === undefined)
      throw new Error(
        `policy ${p.name}: egress IP group ${p.egressIPGroup} has no IPv${family} address here`,
      );
    p.egressIP = address;
    p.uplink = g.uplink;
  }
  return config;
}
