// Every default egressd applies, in one place. The config schema publishes
// them (schema/egressd.schema.json), the planner and the daemon apply them,
// and docs/config.md and docs/health.md describe them: each reads this table.
export const DEFAULTS = {
  dataplane: {
    /** Bits of the packet mark egressd may use. */
    markMask: 0x0ff00000,
    /** Routing table of the first uplink; the next ones follow. */
    tableBase: 20100,
    /** Priority of the fwmark rules. */
    rulePriority: 1000,
    /** New connections to a served destination from a source no policy allows: dropped. */
    unmatched: "Deny" as "Deny" | "Direct",
  },
  bgp: {
    /** Seconds. A dead peer without BFD is noticed after this. */
    holdTime: 9,
    /** Seconds between connection attempts. */
    connectRetry: 1,
    /** gobgpd only connects out unless a port is given. */
    listenPort: -1,
  },
  bfd: { minRxMs: 100, minTxMs: 100, multiplier: 3 },
  probe: {
    intervalMs: 100,
    /** Equal to the interval: see docs/health.md for why not 300 ms. */
    timeoutMs: 100,
    rise: 3,
    fall: 3,
    holdDownMs: 5000,
    expectStatus: 200,
    damping: {
      halfLifeMs: 30_000,
      penalty: 1000,
      suppressAbove: 2000,
      reuseBelow: 750,
      maxSuppressMs: 120_000,
    },
  },
  drain: { periodMs: 5000 },
  sync: {
    /** conntrackd's UDP port on the sync link. */
    port: 3780,
    /** The group address used when a group has more than two members. */
    multicastGroup: "225.0.0.50",
    /** Backup paths for other members' egress IPs lose to the owner's by this many extra AS hops. */
    backupAsPathPrepend: 3,
    /** Last-resort paths for another site's egress IPs lose to every path of that site by this many. */
    lastResortAsPathPrepend: 6,
    /** A (re)started gateway waits at most this long for its peers' connection state. */
    resyncTimeoutMs: 3000,
    /**
     * The resync is complete once no state has arrived for this long (300 ms
     * ended it early, with states still arriving: docs/connection-sync.md).
     */
    resyncQuietMs: 1000,
    /**
     * conntrackd reads the kernel's events at most this often, in batches
     * (native/event-pace.c): a state reaches the peers up to this much later,
     * for a fraction of the CPU (docs/connection-sync.md).
     */
    eventPaceUs: 5000,
  },
  audit: {
    /** A trail file is rotated at this size ... */
    rotateSize: "100M",
    /** ... and this many rotated files are kept. */
    rotateKeep: 10,
    /** IPFIX collectors listen on 4739 (RFC 7011). */
    ipfixPort: 4739,
    observationDomain: 1,
    /** Over UDP, the templates are sent again this often (RFC 7011 8.4). */
    templateRefreshSeconds: 60,
    /** Largest IPFIX message: one UDP datagram under a 1500-byte MTU. */
    ipfixMessageBytes: 1400,
    /** Records wait at most this long to share an IPFIX message. */
    ipfixFlushMs: 100,
    /** egressd-ctevents hands conntrack events over this often (one wake-up of egressd per batch). */
    eventsFlushMs: 50,
    /** Lines of the trail wait at most this long to share a write. */
    linesFlushMs: 50,
    /** The conntrack event socket's receive buffer (bursts wait here; the kernel caps it at net.core.rmem_max). */
    receiveBufferBytes: 16 << 20,
    /** After a listing of the table, events already sent get this long to arrive before the listing is believed. */
    repairGraceMs: 2000,
  },
  /**
   * Linux nice values. Failure detection (the BFD thread, the ICMP probes'
   * helper process) runs ahead of the rest of the node when the CPU is
   * contended, so that a busy node delays neither a BFD packet nor a probe's
   * answer; lowering needs CAP_SYS_NICE, and without it they keep the
   * process's priority. Background work (the data-plane process, all its
   * threads: parsing, planning, diffing, and collecting that heap;
   * lib/threads.ts) gives way to everything else.
   */
  nice: { detection: -10, background: 10 },
  http: { listen: "127.0.0.1:9469" },
} as const;

/** The keepalive for a hold time: a third of it, at least a second. */
export function keepaliveFor(holdTime: number): number {
  return Math.max(1, Math.floor(holdTime / 3));
}

/** The probe kinds egressd runs. */
export const PROBE_KINDS = ["icmp", "tcp", "http"] as const;
export type ProbeKind = (typeof PROBE_KINDS)[number];
