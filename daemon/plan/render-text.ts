// Renders a KernelState for people, in iproute2's own syntax where there is
// one, so that `egressd plan` output compares directly with `ip` output.
import type { KernelState, NatPlan } from "../state.js";

const hex = (n: number) => `0x${(n >>> 0).toString(16)}`;

export function renderAddresses(state: KernelState): string[] {
  return state.addresses.map((a) => `${a.address}/${a.prefixLength} dev ${a.interface}`);
}

export function renderRoutes(state: KernelState): string[] {
  return state.routes.map((r) => {
    const dest = r.destination === "0.0.0.0/0" || r.destination === "::/0" ? "default" : r.destination;
    const via = r.gateway === undefined ? "" : ` via ${r.gateway}`;
    return `${r.family === 6 ? "-6 " : ""}${dest}${via} dev ${r.interface} table ${r.table}`;
  });
}

export function renderRules(state: KernelState): string[] {
  const byMark = new Map(state.nat.policies.map((p) => [`${p.family}/${p.mark}`, p.name]));
  return state.rules.map((r) => {
    const policy = byMark.get(`${r.family}/${r.fwmark}`);
    const comment = policy === undefined ? "" : `   # policy ${policy}`;
    return `${r.family === 6 ? "-6 " : ""}${r.priority}: from all fwmark ${hex(r.fwmark)}/${hex(r.fwmask)} lookup ${r.table}${comment}`;
  });
}

/**
 * The whole desired state as text. `nft` is the rendered nftables ruleset;
 * without it the NatPlan is printed as JSON.
 */
export function renderKernelState(state: KernelState, nft?: (plan: NatPlan) => string): string {
  const section = (title: string, lines: string[]) =>
    [`# ${title}`, ...(lines.length === 0 ? ["# (none)"] : lines), ""].join("\n");
  const out = [
    section("addresses (ip address add ...)", renderAddresses(state)),
    section("routes (ip route add ... proto 201)", renderRoutes(state)),
    section("rules (ip rule add ... proto 201)", renderRules(state)),
  ];
  if (nft !== undefined) {
    out.push(`# nftables (nft -f)\n${nft(state.nat).trimEnd()}\n`);
  } else {
    out.push(
      `# nftables: NAT plan (the ruleset renderer is not available in this build)\n${JSON.stringify(state.nat, null, 2)}\n`,
    );
  }
  return out.join("\n");
}
