// plan(): the functional core. A validated Config in, the full desired kernel
// state out (egress addresses, uplink routing tables, fwmark rules, the NAT
// classifier). Pure: no I/O, no clock, no randomness; equal inputs give equal
// (deep-equal, identically ordered) outputs.
import type { Config } from "../config/schema.js";
import { byFamilyThenValue, canonicalEntry } from "../ip.js";
import type {
  DesiredAddress,
  DesiredRoute,
  DesiredRule,
  GuardPlan,
  KernelState,
  NatPolicy,
} from "../state.js";
import { flattenNat, type NatResult } from "./nat.js";
import { syncGuard } from "./sync.js";
import { actionOf, dataplaneOf, markValue, policyFamily, policyModels, uplinkTables } from "./model.js";

export class PlanError extends Error {
  override name = "PlanError";
}

const canonical = (address: string) => canonicalEntry(address, (m) => new PlanError(m));

/**
 * Computes the desired kernel state. `config` must have passed validation
 * (loadConfig); plan() throws PlanError on what validation would reject.
 * `nat`, when given, is the config's NAT classifier already made (by
 * validation, or patched from the previous one): it is not made again.
 */
export function plan(config: Config, nat: NatResult = flattenNat(policyModels(config))): KernelState {
  const dp = dataplaneOf(config);

  const addresses: DesiredAddress[] = config.egressIPs
    .map((e) => ({ ...canonical(e.address), interface: e.interface }))
    .sort(byFamilyThenValue)
    .map(({ family, address, interface: ifname }) => ({
      family,
      address,
      prefixLength: family === 4 ? 32 : 128,
      interface: ifname,
    }));

  const tables = uplinkTables(config.uplinks, dp.tableBase);
  const uplinkIndex = new Map(config.uplinks.map((u, i) => [u.name, i]));

  const natPolicies: NatPolicy[] = [];
  const rules: DesiredRule[] = [];
  const usedUplinks = new Set<string>(); // "index/family"
  let n = 0;
  for (const p of config.policies) {
    const action = actionOf(p);
    if (action === "Direct") continue;
    if (action === "Deny") {
      // A mark of its own keeps the table's shape (every policy has a mark), though no packet carries it.
      natPolicies.push({
        name: p.name,
        family: policyFamily(p),
        deny: true,
        egressIP: "",
        mark: markValue(++n, dp.markMask),
        uplinkInterface: "",
      });
      continue;
    }
    if (p.egressIP === undefined || p.uplink === undefined) {
      throw new PlanError(`policy ${p.name}: egressIP and uplink are required`);
    }
    const ui = uplinkIndex.get(p.uplink);
    if (ui === undefined) throw new PlanError(`policy ${p.name}: unknown uplink ${p.uplink}`);
    const family = policyFamily(p);
    const mark = markValue(++n, dp.markMask);
    natPolicies.push({
      name: p.name,
      family,
      egressIP: canonical(p.egressIP).address,
      mark,
      uplinkInterface: config.uplinks[ui]!.interface,
    });
    rules.push({ family, priority: dp.rulePriority, fwmark: mark, fwmask: dp.markMask, table: tables[ui]! });
    usedUplinks.add(`${ui}/${family}`);
  }
  rules.sort((a, b) => a.family - b.family || a.fwmark - b.fwmark);

  const routes: DesiredRoute[] = [];
  config.uplinks.forEach((u, ui) => {
    for (const family of [4, 6] as const) {
      if (!usedUplinks.has(`${ui}/${family}`)) continue;
      const hop = family === 4 ? u.nextHop : u.nextHop6;
      if (hop === undefined) throw new PlanError(`uplink ${u.name} has no IPv${family} next hop`);
      routes.push({
        family,
        table: tables[ui]!,
        destination: family === 4 ? "0.0.0.0/0" : "::/0",
        gateway: canonical(hop).address,
        interface: u.interface,
      });
    }
  });
  routes.sort((a, b) => a.table - b.table || a.family - b.family);

  if (nat.conflicts.length > 0) {
    const c = nat.conflicts[0]!;
    throw new PlanError(
      `ambiguous policies ${c.policies.map((i) => config.policies[i]!.name).join(", ")} for destination ${c.destination}`,
    );
  }

  const state: KernelState = {
    addresses,
    routes,
    rules,
    nat: {
      markMask: dp.markMask,
      policies: natPolicies,
      classes: nat.classes,
      sources: nat.sources,
      ...(dp.unmatched === "Deny" ? { unmatched: "Deny" as const } : {}),
      ...(config.audit ? { logDrops: true } : {}),
      ...(dp.snatPorts || dp.snatMode
        ? {
            snat: {
              ...(dp.snatPorts ? { range: dp.snatPorts } : {}),
              ...(dp.snatMode ? { mode: dp.snatMode } : {}),
            },
          }
        : {}),
    },
  };
  const guard = guardPlan(config);
  if (guard) state.guard = guard;
  return state;
}

/**
 * The control-protocol guard: GTSM for BFD, the BGP listen port open to
 * configured peers only, and connection sync's rules.
 */
export function guardPlan(config: Config): GuardPlan | undefined {
  const bgp = config.bgp;
  const sync = syncGuard(config.connectionSync);
  if (!bgp && !sync) return undefined;
  const guard: GuardPlan = {
    bfdTtl: bgp?.peers.some((p) => p.bfd !== undefined && p.bfd.enabled !== false) ?? false,
  };
  if (sync) guard.sync = sync;
  if (!bgp) return guard;
  const port = bgp.listenPort ?? -1;
  if (port > 0) {
    // The guard matches source addresses: a link-local peer's interface does not enter into it.
    const peers = bgp.peers.map((p) => canonical(p.address.split("%")[0]!));
    guard.bgp = {
      port,
      peers4: peers
        .filter((p) => p.family === 4)
        .sort(byFamilyThenValue)
        .map((p) => p.address),
      peers6: peers
        .filter((p) => p.family === 6)
        .sort(byFamilyThenValue)
        .map((p) => p.address),
    };
  }
  return guard;
}
