// The desired state: what plan() produces and the reconcilers realise.
//
// This file is the contract between the pure planner (core/plan) and the
// imperative shell (routing/*, bgp/*). It holds data only: no I/O, no logic.

export type Family = 4 | 6;

/** Marks what egressd owns in the kernel. */
export const OWNER = {
  /** rtnetlink protocol number on egressd's routes, rules and (where the kernel has IFA_PROTO) addresses. */
  rtProtocol: 201,
  /** Name of egressd's nftables table (family inet). */
  nftTable: "egressd",
} as const;

/** An egress IP egressd owns on an interface. */
export interface DesiredAddress {
  family: Family;
  /** The address without prefix length, e.g. "192.0.2.11" or "2001:db8:e::11". */
  address: string;
  /** Always the host length (32 or 128): egress IPs are host addresses. */
  prefixLength: number;
  interface: string;
}

/** A route in one of egressd's routing tables. */
export interface DesiredRoute {
  family: Family;
  table: number;
  /** CIDR, e.g. "203.0.113.0/24". */
  destination: string;
  /** Next hop; absent for on-link routes. */
  gateway?: string;
  interface: string;
}

/** A policy-routing rule: packets with (mark & mask) == mark look up `table`. */
export interface DesiredRule {
  family: Family;
  priority: number;
  fwmark: number;
  fwmask: number;
  table: number;
}

/**
 * An address interval in nft element syntax: a prefix ("10.244.1.0/24"),
 * a single address ("10.244.1.5") or an inclusive range ("10.244.0.0-10.244.0.255").
 * Intervals within one set are disjoint.
 */
export type NftInterval = string;

/** One policy as the data plane sees it: SNAT to egressIP (and route by mark). */
export interface NatPolicy {
  /** Policy name from the config (unique). */
  name: string;
  family: Family;
  /** A Deny policy: its traffic is counted and dropped (egressIP and uplinkInterface are ""). */
  deny?: boolean;
  egressIP: string;
  /** Packet/conntrack mark the classifier gives this policy's traffic; selects its routing rule. */
  mark: number;
  /** Uplink interface the traffic leaves through. */
  uplinkInterface: string;
}

/**
 * A source class: all sources that see the same destination -> policy function.
 * `destinations` is the longest-prefix-match result flattened into disjoint
 * intervals; `policy: null` means "leave alone" (an exception or a no-gateway rule).
 */
export interface NatClass {
  id: number;
  family: Family;
  destinations: { interval: NftInterval; policy: string | null }[];
}

export interface SnatPorts {
  range?: [number, number];
  mode?: "random" | "fully-random" | "persistent";
}

export interface NatPlan {
  /** Bits of the packet mark egressd may use (others are preserved). */
  markMask: number;
  /**
   * New connections to a served destination (one of a SNAT policy's) from a
   * source no policy decides for: "Deny" drops and counts them; absent, they
   * are left alone.
   */
  unmatched?: "Deny";
  /** Dropped connections (Deny policies, unmatched) are reported to the audit trail (NFLOG_GROUP). */
  logDrops?: boolean;
  /**
   * How source ports are chosen: the range translated TCP, UDP and SCTP
   * sources take their port from (absent: the kernel's choice, 1024-65535 for
   * unprivileged ports), and the kernel's allocation mode.
   */
  snat?: SnatPorts;
  policies: NatPolicy[];
  classes: NatClass[];
  /** Disjoint per family: which class each source address belongs to. */
  sources: NatSource[];
}

/** One source interval of the classifier and its class. */
export interface NatSource {
  family: Family;
  interval: NftInterval;
  classId: number;
}

/**
 * How a NAT plan's sources differ from those of the plan it was patched from
 * (`base`; same policies, classes and mark mask). The kernel side uses it to
 * patch the sets it programmed for `base` without re-reading every source.
 */
export interface NatSourcesDelta {
  base: NatPlan;
  remove: NatSource[];
  add: NatSource[];
}

/** Everything egressd wants the kernel to hold. */
export interface KernelState {
  addresses: DesiredAddress[];
  routes: DesiredRoute[];
  rules: DesiredRule[];
  nat: NatPlan;
  /** The guard of the control protocols (only with BGP configured). */
  guard?: GuardPlan;
}

/** What the `inet egressd_guard` table enforces. */
export interface GuardPlan {
  /** Drop BFD control packets whose TTL / hop limit is not 255 (any peer runs BFD). */
  bfdTtl: boolean;
  /** Accept connections to the BGP listen port only from these peers (when gobgpd listens). */
  bgp?: { port: number; peers4: string[]; peers6: string[] };
  /** Connection sync: state messages only from the members on the sync link; no forwarding to their egress IPs. */
  sync?: SyncGuard;
}

/** The guard's part for connection sync (core/plan/sync.ts). */
export interface SyncGuard {
  /** The group's sync link (with peers): state messages on `port` are accepted on it only. */
  interface?: string;
  port?: number;
  /** The members' sync-link addresses (IPv4, canonical, sorted); empty without a group. */
  peers: string[];
  /** Across sites: each pair's state messages (on its port) are accepted on `interface` from its peer only. */
  sites?: { interface: string; channels: { port: number; peer: string }[] };
  /**
   * The members' egress IPs (canonical, sorted). Replies to them are de-NATed
   * with the synced state; any other packet to them is dropped, not routed
   * back to the fabric that delivered it (a loop while the backup path is the best).
   */
  backup4: string[];
  backup6: string[];
  /** Of the backups, the egress IPs of the other sites' gateways this one holds state for (last-resort paths). */
  lastResort4?: string[];
  lastResort6?: string[];
  /**
   * The synced connections' sources (canonical CIDRs). Their TCP connections
   * report only three events to conntrackd: new, established (assured) and
   * gone, not every state change: what a member needs, at a fraction of the cost.
   */
  sources4: string[];
  sources6: string[];
}
