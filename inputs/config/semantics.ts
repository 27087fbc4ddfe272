// Checks beyond the schema's structure: addresses and CIDRs, address families,
// cross references (egress IPs, uplinks), uniqueness, mark and table numbers,
// and, once everything else is valid, ambiguous overlaps between policies.
//
// The input may be structurally invalid (the schema errors are reported
// separately), so every check looks at the types it needs and skips what it
// cannot interpret: one run reports as many independent errors as possible.
import type { Family } from "../../core/state.js";
import { flattenNat, type NatResult } from "../../core/plan/nat.js";
import { actionOf, markCapacity, policyModels, uplinkTables } from "../../core/plan/model.js";
import {
  formatPrefix,
  isLinkLocal6,
  neverRouted,
  parseAddress,
  parsePeerAddress,
  parsePrefix,
  type Address,
  type Prefix,
} from "../../core/ip.js";
import { formatPath, type PathSegment } from "./issues.js";
import { checkConnectionSync } from "./sync-semantics.js";
import { checkAudit } from "./audit-semantics.js";
import { isObj, list, quoted, seenBefore, str, type Obj } from "./raw.js";
import { selectorIssues, type LabelSelector } from "../../core/k8s/selector.js";
import { exceptionProblem, unreachableDestination } from "../../core/config/destinations.js";
import { validateProbeSpec, type ProbeSpec } from "../../core/probe-spec.js";
import { parseCommunity, passwordProblem } from "../../core/bgp.js";
import { keyProblem } from "../../core/bfd-auth.js";
import type { Config } from "../../core/config/schema.js";
import { DEFAULTS as ALL_DEFAULTS } from "../../core/defaults.js";

const BGP_DEFAULTS = ALL_DEFAULTS.bgp;
const DEFAULTS = ALL_DEFAULTS.dataplane;

export interface RawIssue {
  segments: PathSegment[];
  message: string;
}

/** Mark bits used by kube-proxy (KUBE-MARK-MASQ 0x4000, KUBE-MARK-DROP 0x8000). */
export const KUBE_PROXY_MARKS = 0x0000c000;
/** Routing tables the kernel reserves: unspec, default, main, local. */
const RESERVED_TABLES = new Map([
  [0, "unspec"],
  [253, "default"],
  [254, "main"],
  [255, "local"],
]);

const hex = (n: number) => `0x${(n >>> 0).toString(16).padStart(8, "0")}`;

export interface SemanticResult {
  errors: RawIssue[];
  warnings: RawIssue[];
}

/** Why an address cannot be a next hop: special-use space, except IPv6 link-local (next hops often are). */
function unusableNextHop(a: Address): string | undefined {
  const what = neverRouted(a);
  return what === undefined || isLinkLocal6(a) ? undefined : what;
}

/**
 * How the overlap check gets the NAT classifier of a valid config: by
 * default it flattens the policies itself; a caller that keeps the previous
 * flattening (the data plane) can patch it instead, and reuse the result to
 * plan.
 */
export type NatFor = (config: Config) => NatResult;

const flattenFresh: NatFor = (config) => flattenNat(policyModels(config));

export function checkSemantics(
  raw: unknown,
  structurallyValid: boolean,
  natFor: NatFor = flattenFresh,
): SemanticResult {
  const errors: RawIssue[] = [];
  const warnings: RawIssue[] = [];
  const err = (segments: PathSegment[], message: string) => errors.push({ segments, message });
  const root = isObj(raw) ? raw : {};

  // dataplane
  const dpRaw = isObj(root.dataplane) ? root.dataplane : {};
  const markMask = Number.isInteger(dpRaw.markMask) ? (dpRaw.markMask as number) : DEFAULTS.markMask;
  if ((markMask & KUBE_PROXY_MARKS) !== 0) {
    err(
      ["dataplane", "markMask"],
      `${hex(markMask)} overlaps kube-proxy's mark bits 0x4000 and 0x8000; choose bits outside ${hex(KUBE_PROXY_MARKS)}`,
    );
  }
  const tableBase = Number.isInteger(dpRaw.tableBase) ? (dpRaw.tableBase as number) : DEFAULTS.tableBase;

  // egressIPs
  const owned = new Map<string, { index: number; family: Family }>();
  list(root.egressIPs).forEach((e, i) => {
    const text = isObj(e) ? str(e.address) : undefined;
    if (text === undefined) return;
    const at: PathSegment[] = ["egressIPs", i, "address"];
    if (text.includes("/")) {
      err(at, `${text}: write the address without a prefix length (egress IPs are always /32 or /128)`);
      return;
    }
    const a = parseAddress(text);
    if (a === undefined) {
      err(at, `${quoted(text)} is not an IP address`);
      return;
    }
    const bad = neverRouted(a);
    if (bad !== undefined) {
      err(at, `${text} is ${bad}; it cannot be an egress IP (it is never routed to this gateway)`);
      return;
    }
    const k = `${a.family}/${a.value}`;
    const prev = owned.get(k);
    if (prev !== undefined) err(at, `${text} is already listed at ${formatPath(["egressIPs", prev.index])}`);
    else owned.set(k, { index: i, family: a.family });
  });

  // uplinks
  const uplinks = new Map<string, { index: number; v4: boolean; v6: boolean }>();
  const uplinkList = list(root.uplinks);
  uplinkList.forEach((u, i) => {
    if (!isObj(u)) return;
    const name = str(u.name);
    const hops: [string, Family, string][] = [
      ["nextHop", 4, "nextHop6"],
      ["nextHop6", 6, "nextHop"],
    ];
    const has = { 4: false, 6: false };
    for (const [key, family, other] of hops) {
      const text = str(u[key]);
      if (text === undefined) continue;
      const a = parseAddress(text);
      if (a === undefined) err(["uplinks", i, key], `${quoted(text)} is not an IP address`);
      else if (a.family !== family) {
        err(
          ["uplinks", i, key],
          `${text} is IPv${a.family}; ${key} takes an IPv${family} address (use ${other})`,
        );
      } else if (unusableNextHop(a) !== undefined) {
        err(["uplinks", i, key], `${text} is ${unusableNextHop(a)}; it cannot be a next hop`);
      } else has[family] = true;
    }
    if (u.nextHop === undefined && u.nextHop6 === undefined) {
      err(["uplinks", i], "needs nextHop (IPv4) and/or nextHop6 (IPv6)");
    }
    if (name === undefined) return;
    const prev = uplinks.get(name);
    if (prev !== undefined) {
      err(["uplinks", i, "name"], `duplicate uplink name ${quoted(name)} (also uplinks[${prev.index}])`);
    } else uplinks.set(name, { index: i, v4: has[4], v6: has[6] });
  });
  // Routing tables: explicit or tableBase + index; unique, not reserved.
  if (uplinkList.every(isObj)) {
    const tableOf = uplinkTables(
      uplinkList.map((u) =>
        Number.isInteger((u as Obj).table) ? { table: (u as Obj).table as number } : {},
      ),
      tableBase,
    );
    const seen = new Map<number, number>();
    tableOf.forEach((t, i) => {
      const explicit = Number.isInteger((uplinkList[i] as Obj).table);
      const at: PathSegment[] = explicit ? ["uplinks", i, "table"] : ["uplinks", i];
      const how = explicit ? `table ${t}` : `table ${t} (dataplane.tableBase ${tableBase} + ${i})`;
      const reserved = RESERVED_TABLES.get(t);
      if (reserved !== undefined) err(at, `${how} is the kernel's ${reserved} table`);
      else if (t > 0xffffffff) err(at, `${how} is above 4294967295`);
      const prev = seen.get(t);
      if (prev !== undefined) err(at, `${how} is also used by uplinks[${prev}]`);
      else seen.set(t, i);
    });
  }

  // egress IP groups: each address owned, at most one per family, the uplink able to carry it
  const groups = new Map<string, { index: number; families: Set<Family> }>();
  list(root.egressIPGroups).forEach((g, i) => {
    if (!isObj(g)) return;
    const families = new Set<Family>();
    const uplinkName = str(g.uplink);
    const u = uplinkName === undefined ? undefined : uplinks.get(uplinkName);
    if (uplinkName !== undefined && u === undefined) {
      const known = [...uplinks.keys()].map(quoted).join(", ");
      err(
        ["egressIPGroups", i, "uplink"],
        `unknown uplink ${quoted(uplinkName)} (${known === "" ? "no uplinks are defined" : `known: ${known}`})`,
      );
    }
    list(g.egressIPs).forEach((x, j) => {
      if (typeof x !== "string") return;
      const at: PathSegment[] = ["egressIPGroups", i, "egressIPs", j];
      const a = parseAddress(x);
      if (a === undefined) return err(at, `${quoted(x)} is not an IP address`);
      if (!owned.has(`${a.family}/${a.value}`))
        return err(
          at,
          `${x} is not owned by this gateway (not in egressIPs${owned.size === 0 ? ", which is empty" : ""})`,
        );
      if (families.has(a.family))
        return err(at, `a second IPv${a.family} address; a group has at most one per family`);
      families.add(a.family);
      if (u !== undefined && !(a.family === 4 ? u.v4 : u.v6))
        err(
          at,
          `uplink ${quoted(uplinkName!)} has no IPv${a.family} ${a.family === 4 ? "nextHop" : "nextHop6"}, which this address needs`,
        );
    });
    if (isObj(g.namespaceSelector))
      for (const issue of selectorIssues(g.namespaceSelector as LabelSelector))
        err(
          [
            "egressIPGroups",
            i,
            "namespaceSelector",
            ...issue.path
              .split(/\.|\[(\d+)\]/)
              .filter((x) => x)
              .map((x) => (/^\d+$/.test(x) ? Number(x) : x)),
          ],
          issue.message,
        );
    const name = str(g.name);
    if (name === undefined) return;
    const prev = groups.get(name);
    if (prev !== undefined)
      err(
        ["egressIPGroups", i, "name"],
        `duplicate group name ${quoted(name)} (also egressIPGroups[${prev.index}])`,
      );
    else groups.set(name, { index: i, families });
  });

  // policies
  const policyNames = new Map<string, number>();
  let gatewayPolicies = 0;
  list(root.policies).forEach((p, i) => {
    if (!isObj(p)) return;
    const at = (...rest: PathSegment[]): PathSegment[] => ["policies", i, ...rest];
    const name = str(p.name);
    if (name !== undefined) {
      const prev = policyNames.get(name);
      if (prev !== undefined)
        err(at("name"), `duplicate policy name ${quoted(name)} (also policies[${prev}])`);
      else policyNames.set(name, i);
    }
    const action = p.action ?? (p.gateway === false ? "Direct" : "SNAT");
    if (p.gateway === false && p.action !== undefined && p.action !== "Direct")
      err(at("action"), `${p.action} contradicts gateway: false (which means Direct); keep one of them`);
    const gateway = action !== "Direct";
    if (gateway) gatewayPolicies++;

    // The policy's family: its egress IP's, else its first source's.
    let family: Family | undefined;
    let familyFrom = "";
    const egressText = str(p.egressIP);
    let egress: ReturnType<typeof parseAddress>;
    if (egressText !== undefined) {
      egress = parseAddress(egressText);
      if (egress !== undefined) {
        family = egress.family;
        familyFrom = `egressIP ${egressText}`;
      }
    }

    const lists: Record<"sources" | "destinations" | "exceptions", Prefix[]> = {
      sources: [],
      destinations: [],
      exceptions: [],
    };
    for (const field of ["sources", "destinations", "exceptions"] as const) {
      list(p[field]).forEach((x, j) => {
        if (typeof x !== "string") return;
        const r = parsePrefix(x);
        if (!r.ok) {
          err(at(field, j), r.message);
          return;
        }
        if (family === undefined) {
          family = r.prefix.family;
          familyFrom = `${formatPath([field, j])} ${x}`;
        } else if (r.prefix.family !== family) {
          err(
            at(field, j),
            `${x} is IPv${r.prefix.family} but this policy is IPv${family} (${familyFrom}); a policy is one family`,
          );
          return;
        }
        lists[field].push(r.prefix);
      });
    }

    if (!gateway) {
      for (const key of ["egressIP", "uplink", "egressIPGroup"] as const) {
        if (p[key] !== undefined) err(at(key), `not allowed with action Direct (traffic is left alone)`);
      }
      if (list(p.exceptions).length > 0) {
        err(at("exceptions"), "not allowed with action Direct; list these CIDRs under destinations");
      }
      return;
    }

    const groupName = str(p.egressIPGroup);
    if (action === "Deny" || groupName !== undefined) {
      for (const key of ["egressIP", "uplink"] as const) {
        if (p[key] !== undefined)
          err(
            at(key),
            action === "Deny"
              ? "not allowed with action Deny (the traffic is dropped)"
              : "not allowed with egressIPGroup (the group names the egress IP and the uplink)",
          );
      }
      if (action === "Deny" && groupName !== undefined)
        err(at("egressIPGroup"), "not allowed with action Deny (the traffic is dropped)");
      else if (groupName !== undefined) {
        const g = groups.get(groupName);
        const known = [...groups.keys()].map(quoted).join(", ");
        if (g === undefined)
          err(
            at("egressIPGroup"),
            `unknown egress IP group ${quoted(groupName)} (${known === "" ? "no egressIPGroups are defined" : `known: ${known}`})`,
          );
        else if (family !== undefined && !g.families.has(family))
          err(
            at("egressIPGroup"),
            `group ${quoted(groupName)} has no IPv${family} address, which this IPv${family} policy needs`,
          );
      }
    } else if (p.egressIP === undefined) {
      err(at(), `missing required field "egressIP" (or egressIPGroup, or action Direct)`);
    } else if (egressText !== undefined) {
      if (egress === undefined) err(at("egressIP"), `${quoted(egressText)} is not an IP address`);
      else if (!owned.has(`${egress.family}/${egress.value}`)) {
        err(
          at("egressIP"),
          `${egressText} is not owned by this gateway (not in egressIPs${owned.size === 0 ? ", which is empty" : ""})`,
        );
      }
    }

    if (action === "Deny" || groupName !== undefined) {
      // no uplink of its own: checked above
    } else if (p.uplink === undefined) {
      err(at(), `missing required field "uplink" (or egressIPGroup, or action Direct)`);
    } else if (typeof p.uplink === "string") {
      const u = uplinks.get(p.uplink);
      if (u === undefined) {
        const known = [...uplinks.keys()].map(quoted).join(", ");
        err(
          at("uplink"),
          `unknown uplink ${quoted(p.uplink)} (${known === "" ? "no uplinks are defined" : `known: ${known}`})`,
        );
      } else if (family === 4 && !u.v4) {
        err(at("uplink"), `uplink ${quoted(p.uplink)} has no IPv4 nextHop, which this IPv4 policy needs`);
      } else if (family === 6 && !u.v6) {
        err(at("uplink"), `uplink ${quoted(p.uplink)} has no IPv6 nextHop6, which this IPv6 policy needs`);
      }
    }

    const bgpRaw = isObj(root.bgp) ? root.bgp : undefined;
    const advRaw = bgpRaw && isObj(bgpRaw.advertise) ? bgpRaw.advertise : {};
    const advertisesDestinations = bgpRaw !== undefined && advRaw.destinations !== false;
    list(p.destinations).forEach((x, j) => {
      if (typeof x !== "string") return;
      const r = parsePrefix(x);
      if (!r.ok || r.prefix.family !== family) return;
      const d = r.prefix;
      const unreachable = unreachableDestination(d);
      if (unreachable) {
        err(at("destinations", j), `${x} ${unreachable}`);
        return;
      }
      if (d.len === 0) {
        if (advertisesDestinations && advRaw.allowDefaultRoute !== true) {
          warnings.push({
            segments: at("destinations", j),
            message:
              `${x} is SNATed but not advertised: a /0 destination is advertised as the default route only with ` +
              `bgp.advertise.allowDefaultRoute: true; until then, route this traffic to the gateway by other means`,
          });
        }
        return;
      }
      const own = lists.sources.filter((s) => s.lo <= d.hi && d.lo <= s.hi);
      if (own.length > 0) {
        warnings.push({
          segments: at("destinations", j),
          message:
            `${x} covers this policy's own sources (${own.map(formatPrefix).join(", ")}): ` +
            `traffic between them would be SNATed if it reached the gateway; that part is never advertised`,
        });
      }
    });

    list(p.exceptions).forEach((x, j) => {
      if (typeof x !== "string") return;
      const r = parsePrefix(x);
      if (!r.ok || r.prefix.family !== family) return;
      const outside = exceptionProblem(r.prefix, lists.destinations);
      if (outside) err(at("exceptions", j), `${x} ${outside}`);
    });
  });

  const capacity = markCapacity(markMask);
  if (gatewayPolicies > capacity) {
    err(
      ["policies"],
      `${gatewayPolicies} policies use the gateway but dataplane.markMask ${hex(markMask)} has room for ${capacity}; widen the mask`,
    );
  }

  checkBgp(root.bgp, owned, err);
  checkProbes(root, err);
  checkConnectionSync(
    root.connectionSync,
    owned,
    err,
    new Map(
      uplinkList.flatMap((u, i) => {
        const name = isObj(u) ? str(u.interface) : undefined;
        return name === undefined ? [] : [[name, i] as [string, number]];
      }),
    ),
  );
  checkAudit(root.audit, err);
  if (isObj(root.dataplane) && typeof root.dataplane.snatPorts === "string") {
    const [lo, hi] = root.dataplane.snatPorts.split("-").map(Number) as [number, number];
    if (!(lo >= 1 && hi <= 65535 && lo <= hi))
      err(
        ["dataplane", "snatPorts"],
        `${root.dataplane.snatPorts} is not a port range: two ports from 1 to 65535, the first not above the second`,
      );
  }

  // Overlaps: only on an otherwise valid file, where the planner's model is well defined.
  if (structurallyValid && errors.length === 0) {
    const config = raw as Config;
    const nat = natFor(config);
    const reported = new Set<string>();
    for (const c of nat.conflicts) {
      const k = c.policies.join(",");
      if (reported.has(k)) continue;
      reported.add(k);
      const last = c.policies[c.policies.length - 1]!;
      const others = c.policies
        .slice(0, -1)
        .map((pi) => `policies[${pi}] (${quoted(config.policies[pi]!.name)})`)
        .join(" and ");
      err(
        ["policies", last],
        `${quoted(config.policies[last]!.name)} is ambiguous with ${others}: both apply to sources ${c.source} ` +
          `and destination ${c.destination} with the same prefix lengths (source /${c.sourceLength}, ` +
          `destination ${c.destination.slice(c.destination.indexOf("/"))}) but different results; ` +
          `make a source or destination more specific, or merge the policies`,
      );
    }
    if (errors.length > 0) return { errors, warnings };
    config.policies.forEach((p, i) => {
      if (actionOf(p) !== "Direct" && !nat.effective.has(i)) {
        warnings.push({
          segments: ["policies", i],
          message: `policy ${quoted(p.name)} never applies: more specific destinations, exceptions or policies override all of it`,
        });
      }
    });
  }
  return { errors, warnings };
}

/** bgp: addresses and their families, unique peers, router id. */
function checkBgp(
  raw: unknown,
  owned: Map<string, { index: number; family: Family }>,
  err: (segments: PathSegment[], message: string) => void,
): void {
  if (!isObj(raw)) return;
  const routerId = str(raw.routerId);
  const rid = routerId === undefined ? undefined : parseAddress(routerId);
  if (routerId !== undefined && rid?.family !== 4) {
    err(
      ["bgp", "routerId"],
      `${quoted(routerId)} is not an IPv4 address (a BGP router id is written as one)`,
    );
  } else if (rid?.value === 0n) {
    err(["bgp", "routerId"], "0.0.0.0 is not a BGP identifier (RFC 6286: it must be non-zero)");
  }
  if (raw.asn === 23456) err(["bgp", "asn"], "23456 is AS_TRANS (RFC 6793), not a usable AS number");
  const names = new Map<string, number>();
  const addresses = new Map<string, number>();
  list(raw.peers).forEach((p, i) => {
    if (!isObj(p)) return;
    const name = str(p.name);
    const prev = name === undefined ? undefined : seenBefore(names, name, i);
    if (prev !== undefined)
      err(["bgp", "peers", i, "name"], `${quoted(name!)} is already used by bgp.peers[${prev}]`);
    if (p.asn === 23456)
      err(["bgp", "peers", i, "asn"], "23456 is AS_TRANS (RFC 6793), not a usable AS number");
    const addrText = str(p.address);
    const parsed = addrText === undefined ? undefined : parsePeerAddress(addrText);
    const addr = parsed?.ok ? parsed.address : undefined;
    const zone = parsed?.ok ? parsed.zone : undefined;
    // A link-local address is special-use, and fine for a peer once its interface is named.
    const special = addr && !zone ? neverRouted(addr) : undefined;
    if (parsed && !parsed.ok) {
      err(["bgp", "peers", i, "address"], parsed.message);
    } else if (addr !== undefined && special !== undefined) {
      err(["bgp", "peers", i, "address"], `${addrText} is ${special}; it cannot be a BGP peer`);
    } else if (addr !== undefined && parsed?.ok) {
      const k = parsed.canonical;
      const prev = addresses.get(k);
      if (prev !== undefined)
        err(["bgp", "peers", i, "address"], `${addrText} is already bgp.peers[${prev}]`);
      else addresses.set(k, i);
      if (owned.has(`${addr.family}/${addr.value}`))
        err(["bgp", "peers", i, "address"], `${addrText} is one of this gateway's egress IPs`);
    }
    if (p.ttlSecurity === true && typeof p.ebgpMultihopTtl === "number" && p.ebgpMultihopTtl > 0)
      err(
        ["bgp", "peers", i, "ttlSecurity"],
        "excludes ebgpMultihopTtl: GTSM is for directly connected peers",
      );
    const password = str(p.password);
    const badPassword = password === undefined ? undefined : passwordProblem(password);
    if (badPassword) err(["bgp", "peers", i, "password"], badPassword);
    const localText = str(p.localAddress);
    if (localText !== undefined) {
      const lp = parsePeerAddress(localText);
      const local = lp.ok ? lp.address : undefined;
      if (!lp.ok) err(["bgp", "peers", i, "localAddress"], lp.message);
      else if (local && !lp.zone && neverRouted(local) !== undefined)
        err(
          ["bgp", "peers", i, "localAddress"],
          `${localText} is ${neverRouted(local)}; it cannot be a session address`,
        );
      else if (local && addr !== undefined && local.family !== addr.family) {
        err(
          ["bgp", "peers", i, "localAddress"],
          `${localText} is IPv${local.family} but the peer address ${addrText} is IPv${addr.family}`,
        );
      } else if (lp.ok && zone !== undefined && lp.zone !== zone) {
        err(
          ["bgp", "peers", i, "localAddress"],
          `${localText}: a session with the link-local peer ${addrText} runs from a link-local address on ${zone} (e.g. fe80::2%${zone})`,
        );
      }
    }
    const bfdAuth = isObj(p.bfd) && isObj(p.bfd.auth) ? p.bfd.auth : undefined;
    const keyBad = bfdAuth && typeof bfdAuth.secret === "string" ? keyProblem(bfdAuth.secret) : undefined;
    if (keyBad) err(["bgp", "peers", i, "bfd", "auth", "secret"], keyBad);
    if (isObj(p.bfd) && p.bfd.enabled !== false && localText === undefined) {
      err(["bgp", "peers", i, "localAddress"], "required with bfd: the BFD session runs from this address");
    }
    const hold = typeof p.holdTime === "number" ? p.holdTime : BGP_DEFAULTS.holdTime;
    if (typeof p.keepalive === "number" && p.keepalive * 3 > hold) {
      err(
        ["bgp", "peers", i, "keepalive"],
        `${p.keepalive} s is more than a third of the hold time (${hold} s)`,
      );
    }
    const families = list(p.families);
    if (addr !== undefined && families.length > 0) {
      const own = addr.family === 4 ? "ipv4-unicast" : "ipv6-unicast";
      if (!families.includes(own)) {
        err(
          ["bgp", "peers", i, "families"],
          `the session runs over IPv${addr.family} but does not carry ${own}; egressd needs next hops of the session's family`,
        );
      }
    }
  });
  if (raw.listenPort === 0) {
    err(
      ["bgp", "listenPort"],
      "0 is not a port: -1 to only connect out, or the port to accept sessions on (179)",
    );
  }
  const adv = isObj(raw.advertise) ? raw.advertise : {};
  list(adv.communities).forEach((c, i) => {
    if (typeof c !== "string") return;
    try {
      parseCommunity(c); // the parser the speaker uses: what validates, works
    } catch (e) {
      err(["bgp", "advertise", "communities", i], (e as Error).message);
    }
  });
  const speaker = isObj(raw.speaker) ? raw.speaker : {};
  const speakerAddress = str(speaker.address);
  if (speakerAddress !== undefined) {
    const problem = speakerAddressProblem(speakerAddress);
    if (problem) err(["bgp", "speaker", "address"], problem);
  }
  if (speaker.mode === "sidecar" && str(speaker.address) === undefined) {
    err(
      ["bgp", "speaker", "address"],
      "required in sidecar mode: gobgpd's gRPC address (host:port or unix:///path)",
    );
  }
}

/** probes: unique names, what they affect exists, timing that the state machine accepts; http.listen. */
function checkProbes(root: Obj, err: (segments: PathSegment[], message: string) => void): void {
  const uplinkNames = new Set(list(root.uplinks).map((u) => (isObj(u) ? str(u.name) : undefined)));
  const policyNames = new Set(list(root.policies).map((p) => (isObj(p) ? str(p.name) : undefined)));
  const seen = new Map<string, number>();
  list(root.probes).forEach((p, i) => {
    if (!isObj(p)) return;
    const name = str(p.name);
    if (name !== undefined) {
      const prev = seen.get(name);
      if (prev !== undefined)
        err(["probes", i, "name"], `${quoted(name)} is already used by probes[${prev}]`);
      else seen.set(name, i);
    }
    const affects = p.affects;
    if (isObj(affects)) {
      const uplink = str(affects.uplink);
      const policy = str(affects.policy);
      if (uplink !== undefined && !uplinkNames.has(uplink)) {
        err(["probes", i, "affects", "uplink"], `no uplink named ${quoted(uplink)}`);
      }
      if (policy !== undefined && !policyNames.has(policy)) {
        err(["probes", i, "affects", "policy"], `no policy named ${quoted(policy)}`);
      }
    }
    const kind = str(p.kind);
    const target = str(p.target);
    if ((kind === "icmp" || kind === "tcp") && target !== undefined && parseAddress(target) === undefined) {
      err(["probes", i, "target"], `${quoted(target)} is not an IP address`);
    }
    if (kind === "tcp" && p.port === undefined) err(["probes", i, "port"], "required for a tcp probe");
    if (kind !== undefined && target !== undefined) {
      for (const problem of validateProbeSpec(p as unknown as ProbeSpec)) {
        err(["probes", i], problem.replace(/^probe [^:]*: /, ""));
      }
    }
  });
  const http = isObj(root.http) ? root.http : {};
  const listen = str(http.listen);
  if (listen !== undefined) {
    const m = /^(.*):(\d{1,5})$/.exec(listen);
    const host = m?.[1]?.replace(/^\[(.*)\]$/, "$1");
    // An empty host (":9469") listens on every address, as docs/operating.md says.
    if (
      !m ||
      host === undefined ||
      (host !== "" && parseAddress(host) === undefined) ||
      Number(m[2]) > 65535
    ) {
      err(
        ["http", "listen"],
        `${quoted(listen)} is not ADDRESS:PORT (e.g. 127.0.0.1:9469, [::1]:9469, or :9469 for every address)`,
      );
    }
  }
}

/**
 * gobgpd's API is plaintext gRPC without authentication: whoever reaches it
 * controls what the gateway advertises. So egressd talks to it only over a
 * unix socket or a loopback address.
 */
export function speakerAddressProblem(address: string): string | undefined {
  if (/^unix:(\/\/)?\/[^\0\s]+$/.test(address)) return undefined;
  const m = /^(?:\[([^\]]+)\]|([^:[\]\s]+)):(\d{1,5})$/.exec(address);
  const port = Number(m?.[3]);
  if (!m || port < 1 || port > 65535)
    return `${JSON.stringify(address)} is not unix:///path or host:port (e.g. unix:///run/gobgpd/api.sock, 127.0.0.1:50051)`;
  const host = (m[1] ?? m[2])!;
  const a = parseAddress(host);
  const loopback = host === "localhost" || (a !== undefined && neverRouted(a)?.includes("loopback") === true);
  if (!loopback)
    return `${host} is not a loopback address: gobgpd's API is plaintext and unauthenticated, so egressd reaches it only over a unix socket or loopback`;
  return undefined;
}
