// EgressIPGroups from the API: their pools, which gateways serve them, and
// what the addresses a gateway holds (claims.ts) make of its config. Pure.
//
// A held group becomes a group of the gateway's own config, as a file's group
// would be: its SNAT address of each family is the lowest one it holds of
// that family, and every address it holds is one of its egress IPs (on `lo`,
// advertised as a /32 or /128 like the file's), so that the replies of
// connections through any of them come back. A group of the same name in the
// gateway's file wins: the file is the operator's word on that gateway.
import type { GatewayConfig, PathAttributes } from "../config/gateway-config.js";
import type { EgressIPConfig, EgressIPGroupConfig } from "../config/schema.js";
import { canonicalText, formatAddress, parseAddress } from "../ip.js";
import type { EgressIPGroupSpec } from "./api-schema.js";
import { compileSelector, type Labels } from "./selector.js";

/** At most this many addresses in a group's pool, ranges expanded. */
export const MAX_POOL = 256;

/** The interface claimed addresses are put on. */
export const CLAIMED_INTERFACE = "lo";

/** The addresses of a pool's entries (canonical, in order, each once), or what is wrong with them. */
export function expandPool(entries: readonly string[]): { addresses: string[]; errors: string[] } {
  const out = new Set<string>();
  const errors: string[] = [];
  entries.forEach((entry, i) => {
    const [first, last, ...rest] = entry.split("-");
    const a = parseAddress(first ?? "");
    const b = last === undefined ? a : parseAddress(last);
    if (!a || !b || rest.length > 0) {
      errors.push(`addresses[${i}]: ${JSON.stringify(entry)} is not an address or a range first-last`);
      return;
    }
    if (a.family !== b.family || b.value < a.value) {
      errors.push(`addresses[${i}]: ${JSON.stringify(entry)}: the range must run upwards within one family`);
      return;
    }
    if (b.value - a.value >= BigInt(MAX_POOL)) {
      errors.push(`addresses[${i}]: ${JSON.stringify(entry)} holds more than ${MAX_POOL} addresses`);
      return;
    }
    for (let v = a.value; v <= b.value; v++) out.add(formatAddress(a.family, v));
  });
  if (out.size > MAX_POOL) errors.push(`addresses: more than ${MAX_POOL} addresses in all`);
  return { addresses: errors.length ? [] : [...out], errors };
}

/** A group as a gateway uses it: its pool, or why it cannot be used. */
export interface ApiGroup {
  name: string;
  spec: EgressIPGroupSpec;
  pool: string[];
  errors: string[];
}

export function apiGroup(name: string, spec: EgressIPGroupSpec): ApiGroup {
  const { addresses, errors } = expandPool(spec.addresses ?? []);
  return { name, spec, pool: addresses, errors };
}

/** Whether a gateway on a node with `labels` serves the group (no gatewaySelector: every gateway). */
export function serves(g: ApiGroup, labels: Labels): boolean {
  if (g.errors.length > 0) return false;
  if (g.spec.gatewaySelector === undefined) return true;
  try {
    return compileSelector(g.spec.gatewaySelector).matches(labels);
  } catch {
    return false;
  }
}

/** What a gateway holds of a group now. */
export interface HeldGroup {
  name: string;
  uplink: string;
  namespaceSelector?: EgressIPGroupSpec["namespaceSelector"];
  /** The addresses held and in use (claims.ts's using()), canonical. */
  addresses: string[];
  /** The group's BGP attributes for this gateway's site (its `sites` entry), if it has some. */
  bgp?: PathAttributes;
}

/** A group's attributes for `site` (its entry in `sites`), without the site's name. */
export function siteAttributes(spec: EgressIPGroupSpec, site: string): PathAttributes | undefined {
  const entry = spec.sites?.find((s) => s.site === site);
  if (!entry) return undefined;
  const { site: _, ...attributes } = entry;
  return Object.keys(attributes).length ? attributes : undefined;
}

/** `held` as groups and egress IPs of a config; groups the file defines, or whose uplink it lacks, are left out. */
export function claimedParts(
  file: Pick<GatewayConfig, "egressIPGroups" | "egressIPs" | "uplinks">,
  held: readonly HeldGroup[],
): {
  groups: EgressIPGroupConfig[];
  egressIPs: EgressIPConfig[];
  skipped: string[];
  attributes: Record<string, PathAttributes>;
} {
  const fileGroups = new Set((file.egressIPGroups ?? []).map((g) => g.name));
  const uplinks = new Set(file.uplinks.map((u) => u.name));
  const fileAddresses = new Set(file.egressIPs.map((e) => canonicalText(e.address)));
  const groups: EgressIPGroupConfig[] = [];
  const egressIPs: EgressIPConfig[] = [];
  const skipped: string[] = [];
  const attributes: Record<string, PathAttributes> = {};
  for (const h of held) {
    if (fileGroups.has(h.name) || !uplinks.has(h.uplink)) {
      skipped.push(h.name);
      continue;
    }
    const mine = h.addresses.filter((a) => !fileAddresses.has(a));
    const lowest = (family: 4 | 6) =>
      mine
        .map((a) => parseAddress(a)!)
        .filter((a) => a.family === family)
        .sort((x, y) => (x.value < y.value ? -1 : 1))[0];
    const snat = [lowest(4), lowest(6)]
      .filter((a) => a !== undefined)
      .map((a) => formatAddress(a.family, a.value));
    groups.push({
      name: h.name,
      egressIPs: snat,
      uplink: h.uplink,
      ...(h.namespaceSelector ? { namespaceSelector: h.namespaceSelector } : {}),
    });
    for (const a of mine) {
      egressIPs.push({ address: a, interface: CLAIMED_INTERFACE });
      if (h.bgp) attributes[a] = h.bgp;
    }
  }
  return { groups, egressIPs, skipped, attributes };
}

/** The file's config with the groups and addresses held from the API. */
export function withClaims(file: GatewayConfig, held: readonly HeldGroup[]): GatewayConfig {
  if (held.length === 0) return file;
  const { groups, egressIPs, attributes } = claimedParts(file, held);
  if (groups.length === 0) return file;
  return {
    ...file,
    egressIPs: [...file.egressIPs, ...egressIPs],
    egressIPGroups: [...(file.egressIPGroups ?? []), ...groups],
    claimed: {
      groups: groups.map((g) => g.name),
      addresses: egressIPs.map((e) => e.address),
      ...(Object.keys(attributes).length ? { attributes } : {}),
    },
  };
}

/** The file's own part of a config that withClaims() made. */
export function fileOnly<C extends Pick<GatewayConfig, "egressIPGroups" | "egressIPs" | "claimed">>(
  config: C,
): C {
  const c = config.claimed;
  if (!c) return config;
  const groups = new Set(c.groups);
  const addresses = new Set(c.addresses);
  return {
    ...config,
    egressIPGroups: (config.egressIPGroups ?? []).filter((g) => !groups.has(g.name)),
    egressIPs: config.egressIPs.filter((e) => !addresses.has(e.address)),
    claimed: undefined,
  };
}
