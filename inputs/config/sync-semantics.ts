// Checks of the connectionSync section beyond its structure: the sync link's
// addresses, the members' egress IPs (never this gateway's own: a backup path
// for an address the gateway owns would compete with itself), and the sources.
import { neverRouted, parseAddress, parsePrefix } from "../../core/ip.js";
import type { Family } from "../../core/state.js";
import { DEFAULTS } from "../../core/defaults.js";
import type { PathSegment } from "./issues.js";

import { isObj, list, quoted, seenBefore, str } from "./raw.js";

/** IPv4 224.0.0.0/4. */
const isMulticast4 = (v: bigint) => v >> 28n === 0xen;

export function checkConnectionSync(
  raw: unknown,
  owned: ReadonlyMap<string, { index: number; family: Family }>,
  err: (segments: PathSegment[], message: string) => void,
  uplinkInterfaces: ReadonlyMap<string, number> = new Map(),
): void {
  if (!isObj(raw)) return;
  const at = (...rest: PathSegment[]): PathSegment[] => ["connectionSync", ...rest];
  /** A unicast IPv4 address usable on a link, or an error at `where`. */
  const linkAddress = (text: string, where: PathSegment[]): bigint | undefined => {
    const a = parseAddress(text);
    if (a === undefined || a.family !== 4) {
      err(where, `${quoted(text)} is not an IPv4 address (the sync link is IPv4)`);
      return undefined;
    }
    if (isMulticast4(a.value) || a.value === 0n || a.value === 0xffffffffn) {
      err(where, `${text} is not a unicast address`);
      return undefined;
    }
    return a.value;
  };
  const self = str(raw.address);
  const seen = new Map<bigint, string>();
  if (self !== undefined) {
    const v = linkAddress(self, at("address"));
    if (v !== undefined) seen.set(v, "connectionSync.address");
  }
  const names = new Map<string, number>();
  const peerIPs = new Map<string, string>();
  /** Another gateway's egress IP (a member's, or another site's): a routable address, never this gateway's own, listed once. */
  const egressIP = (text: string, where: PathSegment[], here: string): void => {
    const a = parseAddress(text);
    if (a === undefined)
      return err(where, `${quoted(text)} is not an IP address (write it without a prefix length)`);
    const bad = neverRouted(a);
    if (bad !== undefined) return err(where, `${text} is ${bad}; it cannot be an egress IP`);
    const k = `${a.family}/${a.value}`;
    if (owned.has(k))
      return err(
        where,
        `${text} is this gateway's own egress IP (egressIPs[${owned.get(k)!.index}]), not another gateway's`,
      );
    const prev = seenBefore(peerIPs, k, here);
    if (prev !== undefined) return err(where, `${text} is already listed at ${prev}`);
  };
  list(raw.peers).forEach((p, i) => {
    if (!isObj(p)) return;
    const name = str(p.name);
    const prev = name === undefined ? undefined : seenBefore(names, name, i);
    if (prev !== undefined)
      err(at("peers", i, "name"), `${quoted(name!)} is already connectionSync.peers[${prev}]`);
    const address = str(p.address);
    if (address !== undefined) {
      const v = linkAddress(address, at("peers", i, "address"));
      if (v !== undefined) {
        const prev = seen.get(v);
        if (prev !== undefined) err(at("peers", i, "address"), `${address} is already ${prev}`);
        else seen.set(v, `connectionSync.peers[${i}].address`);
      }
    }
    list(p.egressIPs).forEach((e, j) => {
      const text = str(e);
      if (text !== undefined)
        egressIP(text, at("peers", i, "egressIPs", j), `connectionSync.peers[${i}].egressIPs[${j}]`);
    });
  });
  // The group: interface, address and peers together, or none of them (then acrossSites).
  const linkFields = ["interface", "address", "peers"].filter((k) => raw[k] !== undefined);
  if (linkFields.length > 0 && linkFields.length < 3)
    for (const k of ["interface", "address", "peers"].filter((k) => raw[k] === undefined))
      err(
        at(k),
        `is required with ${linkFields.map((g) => `connectionSync.${g}`).join(" and ")} (the group's sync link)`,
      );
  if (linkFields.length === 0 && raw.acrossSites === undefined)
    err(at(), "needs peers (a group on a sync link), acrossSites (other sites' gateways), or both");
  // Local repair forwards over the sync link, untouched and with its TTL as it came: a sync link
  // that is also an uplink would hand the peer packets on the interface its own repair listens on.
  if (raw.localRepair === true) {
    const link = str(raw.interface);
    if (link === undefined)
      err(at("localRepair"), "needs connectionSync.interface and peers (it forwards over the sync link)");
    else if (uplinkInterfaces.has(link))
      err(
        at("localRepair"),
        `the sync link ${link} is also uplinks[${uplinkInterfaces.get(link)}].interface; local repair needs a link of its own`,
      );
  }
  const sites = raw.acrossSites;
  if (isObj(sites)) {
    const siteAt = (...rest: PathSegment[]) => at("acrossSites", ...rest);
    const siteSelf = str(sites.address);
    const selfValue = siteSelf === undefined ? undefined : linkAddress(siteSelf, siteAt("address"));
    const ports = new Map<number, string>();
    const own = raw.port ?? DEFAULTS.sync.port;
    if (linkFields.length === 3 && typeof own === "number") ports.set(own, "connectionSync.port");
    const pairNames = new Map<string, string>();
    for (const key of ["sendTo", "holdFor"] as const)
      list(sites[key]).forEach((p, i) => {
        if (!isObj(p)) return;
        const here = `connectionSync.acrossSites.${key}[${i}]`;
        const name = str(p.name);
        if (name !== undefined) {
          const prev = seenBefore(pairNames, name, `${here}.name`);
          if (prev !== undefined) err(siteAt(key, i, "name"), `${quoted(name)} is already ${prev}`);
        }
        const address = str(p.address);
        if (address !== undefined) {
          const v = linkAddress(address, siteAt(key, i, "address"));
          if (v !== undefined && v === selfValue)
            err(siteAt(key, i, "address"), `${address} is this gateway's own (acrossSites.address)`);
        }
        if (typeof p.port === "number") {
          // Each pair has a conntrackd of its own, listening on its port.
          const prev = seenBefore(ports, p.port, `${here}.port`);
          if (prev !== undefined) err(siteAt(key, i, "port"), `${p.port} is already ${prev}`);
        }
        if (key === "holdFor")
          list(p.egressIPs).forEach((e, j) => {
            const text = str(e);
            if (text !== undefined) egressIP(text, siteAt(key, i, "egressIPs", j), `${here}.egressIPs[${j}]`);
          });
      });
  }
  list(raw.sources).forEach((s, i) => {
    const text = str(s);
    if (text === undefined) return;
    const p = parsePrefix(text);
    if (!p.ok) err(at("sources", i), p.message);
  });
  const group = str(raw.multicastGroup);
  if (group !== undefined) {
    const a = parseAddress(group);
    if (a === undefined || a.family !== 4 || !isMulticast4(a.value))
      err(at("multicastGroup"), `${quoted(group)} is not an IPv4 multicast address (224.0.0.0/4)`);
  }
}
