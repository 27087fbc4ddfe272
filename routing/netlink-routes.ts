// Policy routing: routes in egressd's tables and fwmark rules, over rtnetlink.
//
// Everything egressd adds carries protocol OWNER.rtProtocol (rtm_protocol on
// routes, FRA_PROTOCOL on rules); only entries with that protocol are ever
// deleted. Foreign routes, even in a table egressd uses, are left alone.
import type { RtNetlinkSocket } from "netlink";
import { OWNER, type DesiredRoute, type DesiredRule, type Family } from "../core/state.js";
import { addressBytes, bytesToAddress, canonicalAddress, canonicalInterval } from "./ip.js";
import { parseRange } from "../core/ip.js";
import {
  AF_INET,
  AF_INET6,
  afOf,
  NLM_F_CREATE,
  NLM_F_EXCL,
  errnoCode,
  readLinks,
  withRtNetlink,
  type LinkIndex,
} from "./netlink-link.js";

const RT_TABLE_COMPAT = 252;
const RTN_UNICAST = 1;
const RT_SCOPE_UNIVERSE = 0;
const RT_SCOPE_LINK = 253;
const FR_ACT_TO_TBL = 1;

const num = (v: unknown) => (typeof v === "number" ? v : Number.NaN);

interface LiveRoute extends DesiredRoute {
  protocol: number;
  oif: number;
  dstLen: number;
  dst: Buffer | undefined;
  gw: Buffer | undefined;
}

const routeKey = (r: {
  family: Family;
  table: number;
  destination: string;
  gateway?: string;
  interface: string;
}) =>
  `${r.family}|${r.table}|${canonicalInterval(r.destination)}|${r.gateway ? canonicalAddress(r.gateway) : ""}|${r.interface}`;

function prefixLen(destination: string): { addr: string; len: number } {
  const iv = parseRange(destination);
  const bits = iv.family === 4 ? 32 : 128;
  const slash = destination.indexOf("/");
  const addr = slash > 0 ? destination.slice(0, slash) : destination;
  return { addr, len: slash > 0 ? Number(destination.slice(slash + 1)) : bits };
}

async function listOwnedRoutes(rt: RtNetlinkSocket, links: LinkIndex): Promise<LiveRoute[]> {
  const out: LiveRoute[] = [];
  for (const af of [AF_INET, AF_INET6]) {
    const msgs = await rt.getRoutes({ family: af });
    for (const m of msgs) {
      const protocol = num(m.data.protocol);
      if (protocol !== OWNER.rtProtocol) continue;
      const family: Family = m.data.family === AF_INET ? 4 : 6;
      const table = m.attrs.table ?? m.data.table ?? 0;
      const dstLen = m.data.dstLen ?? 0;
      const dst = m.attrs.dst;
      const base = dst ? bytesToAddress(dst) : family === 4 ? "0.0.0.0" : "::";
      const gw = m.attrs.gateway;
      const oif = m.attrs.oif ?? 0;
      out.push({
        family,
        table,
        destination: `${base}/${dstLen}`,
        ...(gw ? { gateway: bytesToAddress(gw) } : {}),
        interface: links.byIndex.get(oif) ?? `#${oif}`,
        protocol,
        oif,
        dstLen,
        dst,
        gw,
      });
    }
  }
  return out;
}

function routeMessage(r: { family: Family; table: number; dstLen: number; gateway?: string | undefined }) {
  return {
    family: afOf(r.family),
    dstLen: r.dstLen,
    table: r.table < 256 ? r.table : RT_TABLE_COMPAT,
    protocol: OWNER.rtProtocol as never,
    scope: (r.gateway ? RT_SCOPE_UNIVERSE : RT_SCOPE_LINK) as never,
    type: RTN_UNICAST as never,
  };
}

export interface RouteChanges {
  added: string[];
  removed: string[];
  /** Desired routes that could not be added (interface missing, or a foreign route in the way). */
  blocked: string[];
}

const describeRoute = (r: DesiredRoute) =>
  `${r.destination}${r.gateway ? ` via ${r.gateway}` : ""} dev ${r.interface} table ${r.table}`;

export async function reconcileRoutesIn(
  rt: RtNetlinkSocket,
  links: LinkIndex,
  desired: DesiredRoute[],
): Promise<RouteChanges> {
  const changes: RouteChanges = { added: [], removed: [], blocked: [] };
  const live = await listOwnedRoutes(rt, links);
  const liveKeys = new Set(live.map(routeKey));
  const want = new Set<string>();
  for (const d of desired) {
    const k = routeKey(d);
    want.add(k);
    if (liveKeys.has(k)) continue;
    const oif = links.byName.get(d.interface);
    if (oif === undefined) {
      changes.blocked.push(`${describeRoute(d)} (no such interface)`);
      continue;
    }
    const { addr, len } = prefixLen(d.destination);
    try {
      await rt.newRoute(
        routeMessage({ family: d.family, table: d.table, dstLen: len, gateway: d.gateway }),
        {
          dst: addressBytes(addr),
          oif,
          table: d.table,
          ...(d.gateway ? { gateway: addressBytes(d.gateway) } : {}),
        },
        { flags: NLM_F_CREATE | NLM_F_EXCL },
      );
      changes.added.push(describeRoute(d));
    } catch (e) {
      const code = errnoCode(e);
      if (code === "EEXIST" || code === "ENETUNREACH" || code === "EHOSTUNREACH" || code === "ENODEV")
        changes.blocked.push(`${describeRoute(d)} (${code})`);
      else throw e;
    }
  }
  for (const r of live) {
    if (want.has(routeKey(r))) continue;
    try {
      await rt.delRoute(
        routeMessage({ family: r.family, table: r.table, dstLen: r.dstLen, gateway: r.gateway }),
        {
          ...(r.dst ? { dst: r.dst } : {}),
          oif: r.oif,
          table: r.table,
          ...(r.gw ? { gateway: r.gw } : {}),
        },
      );
    } catch (e) {
      if (errnoCode(e) !== "ESRCH") throw e;
    }
    changes.removed.push(describeRoute(r));
  }
  return changes;
}

interface LiveRule extends DesiredRule {
  protocol: number;
}

const ruleKey = (r: DesiredRule) =>
  `${r.family}|${r.priority}|${r.fwmark >>> 0}|${r.fwmask >>> 0}|${r.table}`;
const describeRule = (r: DesiredRule) =>
  `pref ${r.priority} fwmark 0x${(r.fwmark >>> 0).toString(16)}/0x${(r.fwmask >>> 0).toString(16)} lookup ${r.table} (IPv${r.family})`;

async function listOwnedRules(rt: RtNetlinkSocket): Promise<LiveRule[]> {
  const out: LiveRule[] = [];
  for (const af of [AF_INET, AF_INET6]) {
    for (const m of await rt.getRules({ family: af })) {
      if (m.attrs.protocol !== OWNER.rtProtocol) continue;
      out.push({
        family: m.data.family === AF_INET ? 4 : 6,
        priority: m.attrs.priority ?? 0,
        fwmark: (m.attrs.fwmark ?? 0) >>> 0,
        fwmask: (m.attrs.fwmask ?? 0) >>> 0,
        table: m.attrs.table ?? m.data.table ?? 0,
        protocol: m.attrs.protocol,
      });
    }
  }
  return out;
}

function ruleMessage(r: DesiredRule) {
  return {
    family: afOf(r.family),
    table: r.table < 256 ? r.table : RT_TABLE_COMPAT,
    action: FR_ACT_TO_TBL as never,
  };
}
function ruleAttrs(r: DesiredRule) {
  return {
    priority: r.priority,
    fwmark: r.fwmark >>> 0,
    fwmask: r.fwmask >>> 0,
    table: r.table,
    protocol: OWNER.rtProtocol,
  };
}

export interface RuleChanges {
  added: string[];
  removed: string[];
}

export async function reconcileRulesIn(rt: RtNetlinkSocket, desired: DesiredRule[]): Promise<RuleChanges> {
  const changes: RuleChanges = { added: [], removed: [] };
  const live = await listOwnedRules(rt);
  const liveKeys = new Map<string, number>();
  for (const r of live) liveKeys.set(ruleKey(r), (liveKeys.get(ruleKey(r)) ?? 0) + 1);
  const want = new Set<string>();
  for (const d of desired) {
    const k = ruleKey(d);
    if (want.has(k)) continue;
    want.add(k);
    if (liveKeys.has(k)) continue;
    await rt.newRule(ruleMessage(d), ruleAttrs(d), { flags: NLM_F_CREATE | NLM_F_EXCL });
    changes.added.push(describeRule(d));
  }
  // delete extras, and duplicates (the kernel allows identical rules; keep one)
  const kept = new Set<string>();
  for (const r of live) {
    const k = ruleKey(r);
    if (want.has(k) && !kept.has(k)) {
      kept.add(k);
      continue;
    }
    try {
      await rt.delRule(ruleMessage(r), ruleAttrs(r));
    } catch (e) {
      if (errnoCode(e) !== "ENOENT") throw e;
    }
    changes.removed.push(describeRule(r));
  }
  return changes;
}

/** Routes and rules in one go (routes first, so a new rule never points at an empty table). */
export async function reconcileRouting(
  routes: DesiredRoute[],
  rules: DesiredRule[],
): Promise<{ routes: RouteChanges; rules: RuleChanges }> {
  return withRtNetlink(async (rt) => {
    const links = await readLinks(rt);
    const r = await reconcileRoutesIn(rt, links, routes);
    const u = await reconcileRulesIn(rt, rules);
    return { routes: r, rules: u };
  });
}

/** Removes egressd's rules, then its routes (clean shutdown). */
export async function removeOwnedRouting(): Promise<{ routes: RouteChanges; rules: RuleChanges }> {
  return withRtNetlink(async (rt) => {
    const links = await readLinks(rt);
    const u = await reconcileRulesIn(rt, []);
    const r = await reconcileRoutesIn(rt, links, []);
    return { routes: r, rules: u };
  });
}

export { AF_INET6 };
