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

/** What group `name` means here for a policy of `family`: undefined when there is no such group or no such address. */
export function groupTarget(
  groups: ReadonlyMap<string, EgressIPGroupConfig>,
  name: string,
  family: Family,
): { egressIP: string; uplink: string } | undefined {
  const g = groups.get(name);
  const egressIP = g && groupAddress(g, family);
  return g && egressIP !== undefined ? { egressIP, uplink: g.uplink } : undefined;
}

/** The groups of a config, by name. */
export const groupsByName = (groups: readonly EgressIPGroupConfig[] | undefined) =>
  new Map((groups ?? []).map((g) => [g.name, g]));

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
  const groups = groupsByName(config.egressIPGroups);
  for (const p of config.policies) {
    if (p.egressIPGroup === undefined) continue;
    const family = familyOf(p);
    const target = groupTarget(groups, p.egressIPGroup, family);
    if (target === undefined)
      throw new Error(
        `policy ${p.name}: egress IP group ${p.egressIPGroup} has no IPv${family} address here`,
      );
    p.egressIP = target.egressIP;
    p.uplink = target.uplink;
  }
  return config;
}
