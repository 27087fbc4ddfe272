// The gateway's state as /status shows it (JSON) and `egressd status` prints it.
import type { AuditCounts, PortUse } from "./audit.js";
import type { BgpPath, SessionState } from "../core/bgp.js";
import type { ProbeStatus } from "../health/prober.js";
import type { ClusterWatchStatus } from "../inputs/k8s/watch.js";

/** The Kubernetes input: whether it has synced, whether the API is reachable, what it holds. */
export type KubernetesStatus = ClusterWatchStatus & {
  counts: { namespaces: number; pods: number; policies: number; refused: number; contested: number };
  /** Status writes to the API (server-side apply) and Events, and those that failed. */
  statusWrites: { writes: number; errors: number; events: number };
  /** The API's egress IP groups: whether this gateway serves each, and the addresses it holds and uses. */
  egressIPGroups?: {
    group: string;
    serving: boolean;
    using: string[];
    errors: string[];
    lastError?: string;
  }[];
};

export interface StatusSnapshot {
  /** When the daemon took this snapshot (ISO 8601): the "now" that ages in it are read against. */
  at: string;
  gateway: { name: string; site: string; version: string; startedAt: string; pid: number };
  /** What readiness means for a gateway: data plane programmed and a BGP session Established. */
  ready: boolean;
  notReadyReasons: string[];
  draining: boolean;
  /** With a kubernetes section: the cluster input's state. */
  kubernetes?: KubernetesStatus;
  egressIPs: { address: string; interface: string }[];
  policies: {
    name: string;
    family: 4 | 6;
    egressIP?: string;
    uplink?: string;
    gateway: boolean;
    /** A Deny policy: the gateway drops what it selects. */
    deny?: boolean;
    /** Whether its destinations are advertised now; when not, why. */
    advertised: boolean;
    withdrawnBecause?: string;
  }[];
  probes: (ProbeStatus & { affects: string })[];
  peers: {
    name: string;
    address: string;
    asn: number;
    state: SessionState;
    /**
     * Since Up: rxSlackMinMs, the least slack a received packet left before detection (null: not measured
     * yet); txLateMaxMs, the most a packet we sent left after its time.
     */
    bfd?: { state: string; diagnostic?: string; rxSlackMinMs?: number | null; txLateMaxMs?: number };
  }[];
  advertised: BgpPath[];
  /**
   * With a connectionSync section: whether conntrackd runs and has resynced (the backup paths are
   * advertised only then), whether the first resync after the start is done (nothing is advertised
   * before), conntrackd's restarts, and what the last resync brought.
   */
  connectionSync?: {
    ready: boolean;
    resynced: boolean;
    restarts: number;
    lastResync?: { entries: number; ms: number; heard: boolean };
  };
  /**
   * With an audit section: records written (starts, ends), events that were not egressd's own,
   * times the kernel dropped events (overruns), write and IPFIX errors, and the connections
   * being followed.
   */
  audit?: AuditCounts & { open: number };
  /**
   * With an audit section: SNAT ports in use, the fullest destinations (egress IP, protocol,
   * destination) and, per egress IP, its fullest destination's share of the port range.
   */
  snatPorts?: { top: PortUse[]; fullest: Record<string, number> };
  /**
   * BFD's helper (egressd-bfd): times it was started again after it ended, and packets it dropped for a
   * TTL / hop limit other than 255. Absent before the BFD worker first reports.
   */
  bfdTransport?: { helperRestarts: number; rxTtlDropped: number };
  lastReconcile?: {
    at: string;
    durationMs: number;
    reasons: string[];
    changes: Record<string, string[]>;
    errors: Record<string, string>;
  };
}
