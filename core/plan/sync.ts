// Connection sync, the pure half: what the guard table enforces for it, the
// backup paths' prefixes, conntrackd's configuration, and the reading of its
// statistics (docs/connection-sync.md).
//
// conntrackd runs with its external cache disabled (FTFW for a pair, NOTRACK
// for larger groups): the state a peer sends goes straight into this
// gateway's kernel table, so a connection that arrives here after its
// gateway failed finds its NAT mapping at once, with no commit step (a commit later than the first packet resets or stalls
// the connection; docs/facts.md has the measurements).
import type { ConnectionSyncConfig } from "../config/sync-schema.js";
import { DEFAULTS } from "../defaults.js";
import { byFamilyThenValue, canonicalEntry, formatAddress, parsePrefix } from "../ip.js";
import type { SyncGuard } from "../state.js";

const S = DEFAULTS.sync;

const canonical = (text: string) => canonicalEntry(text);

/** What the guard table enforces for connection sync; undefined without it. */
export function syncGuard(sync: ConnectionSyncConfig | undefined): SyncGuard | undefined {
  if (!sync) return undefined;
  const peers = sync.peers ?? [];
  const sites = sync.acrossSites;
  const held = (sites?.holdFor ?? []).flatMap((p) => p.egressIPs.map(canonical));
  const backups = [...peers.flatMap((p) => p.egressIPs.map(canonical)), ...held];
  const sources = sync.sources.map(canonicalPrefix);
  const sorted = (list: ReturnType<typeof canonical>[], family: 4 | 6) =>
    list
      .filter((b) => b.family === family)
      .sort(byFamilyThenValue)
      .map((b) => b.address);
  const guard: SyncGuard = {
    peers: peers
      .map((p) => canonical(p.address))
      .sort(byFamilyThenValue)
      .map((p) => p.address),
    backup4: sorted(backups, 4),
    backup6: sorted(backups, 6),
    sources4: sources.filter((s) => s.family === 4).map((s) => s.text),
    sources6: sources.filter((s) => s.family === 6).map((s) => s.text),
  };
  if (sync.interface !== undefined && peers.length > 0) {
    guard.interface = sync.interface;
    guard.port = sync.port ?? S.port;
  }
  if (sites) {
    const pairs = [...(sites.sendTo ?? []), ...(sites.holdFor ?? [])];
    guard.sites = {
      interface: sites.interface,
      channels: pairs
        .map((p) => ({ port: p.port, peer: canonical(p.address).address }))
        .sort((a, b) => a.port - b.port),
    };
    if (held.length) {
      guard.lastResort4 = sorted(held, 4);
      guard.lastResort6 = sorted(held, 6);
    }
  }
  return guard;
}

function canonicalPrefix(text: string): { family: 4 | 6; text: string } {
  const p = parsePrefix(text);
  if (!p.ok) throw new Error(p.message);
  return { family: p.prefix.family, text: `${formatAddress(p.prefix.family, p.prefix.lo)}/${p.prefix.len}` };
}

const hostPrefixes = (four: readonly string[], six: readonly string[]) => [
  ...four.map((a) => `${a}/32`),
  ...six.map((a) => `${a}/128`),
];

/**
 * The egress IPs of others that this gateway advertises as host prefixes
 * ("192.0.2.12/32"): its group's members' (backup paths) and, across sites,
 * those of the gateways it holds state for (last-resort paths).
 */
export function backupPrefixes(g: SyncGuard | undefined): string[] {
  if (!g) return [];
  return hostPrefixes(g.backup4, g.backup6);
}

/** Of backupPrefixes, those of another site: advertised with the last-resort prepend. */
export function lastResortPrefixes(g: SyncGuard | undefined): string[] {
  if (!g) return [];
  return hostPrefixes(g.lastResort4 ?? [], g.lastResort6 ?? []);
}

export interface ConntrackdPaths {
  lockFile: string;
  socket: string;
}

/** One conntrackd of a gateway: the group's, or one per pair across sites. */
export interface ConntrackdChannel {
  /** "conntrackd", or "conntrackd-site-<peer>": the base name of its config, lock file and socket. */
  name: string;
  /** What it is for, in logs. */
  role: "group" | "send" | "hold";
  text: string;
  paths: ConntrackdPaths;
}

/**
 * The size of conntrackd's cache of the connections it sends. Its manual asks
 * for twice the kernel's table (nf_conntrack_max): it keeps ended
 * connections a while, to resend them. A smaller limit makes it stop
 * caching, so stop sending, the connections over it. Never below 262144,
 * what egressd asked before it read the kernel's limit. The hash table gets
 * about eight entries a bucket when full, in powers of two up to 2^20.
 */
export interface CacheLimits {
  hashSize: number;
  hashLimit: number;
}

export function cacheLimits(conntrackMax?: number): CacheLimits {
  const kernel =
    conntrackMax !== undefined && Number.isSafeInteger(conntrackMax) && conntrackMax > 0 ? conntrackMax : 0;
  const hashLimit = Math.max(262144, 2 * kernel);
  let hashSize = 32768;
  while (hashSize * 8 < hashLimit && hashSize < 1 << 20) hashSize *= 2;
  return { hashSize, hashLimit };
}

/**
 * Every conntrackd `sync` needs, with their configs; `paths` places each
 * one's files; `limits` sizes their caches (cacheLimits of the kernel's).
 */
export function conntrackdChannels(
  sync: ConnectionSyncConfig,
  paths: (name: string) => ConntrackdPaths,
  limits: CacheLimits = cacheLimits(),
): ConntrackdChannel[] {
  const out: ConntrackdChannel[] = [];
  if (sync.peers?.length) {
    const p = paths("conntrackd");
    out.push({ name: "conntrackd", role: "group", text: conntrackdConfig(sync, p, limits), paths: p });
  }
  const sites = sync.acrossSites;
  for (const [role, list] of [
    ["send", sites?.sendTo ?? []],
    ["hold", sites?.holdFor ?? []],
  ] as const)
    for (const peer of list) {
      const name = `conntrackd-site-${peer.name}`;
      const p = paths(name);
      out.push({ name, role, text: siteConntrackdConfig(sync, peer, role, p, limits), paths: p });
    }
  return out;
}

/** conntrackd.conf for `sync`'s group (it has peers). */
export function conntrackdConfig(
  sync: ConnectionSyncConfig,
  paths: ConntrackdPaths,
  limits: CacheLimits = cacheLimits(),
): string {
  const peers = sync.peers ?? [];
  if (!peers.length || sync.address === undefined || sync.interface === undefined)
    throw new Error("connectionSync has no group (peers, interface, address)");
  const port = sync.port ?? S.port;
  const self = canonical(sync.address).address;
  // One peer: unicast. More: the group's multicast address, so that every member hears every other.
  const link =
    peers.length === 1
      ? [
          "  UDP {",
          `    IPv4_address ${self}`,
          `    IPv4_Destination_Address ${canonical(peers[0]!.address).address}`,
          `    Port ${port}`,
          `    Interface ${sync.interface}`,
        ]
      : [
          "  Multicast {",
          `    IPv4_address ${canonical(sync.multicastGroup ?? S.multicastGroup).address}`,
          `    Group ${port}`,
          `    IPv4_interface ${self}`,
          `    Interface ${sync.interface}`,
        ];
  // FTFW (acknowledged, resent when lost) tracks one peer's sequence: with three members on the
  // multicast group it left 30-60% of the states unsynced in the lab. NOTRACK (sent once, no
  // acknowledgements) synced all of them; on a dedicated link, losses are rare.
  return conntrackdText(peers.length === 1 ? "FTFW" : "NOTRACK", link, sourcesFilter(sync), paths, limits);
}

/**
 * conntrackd.conf for one pair across sites: FTFW over unicast UDP on the
 * pair's own port, so that each pair is acknowledged and resent on its own.
 * The sending side sends its connections from the sources (its own and those
 * its group injected); the holding side sends none (its filter accepts no
 * connection), so that nothing it holds goes back, and the pair is one way:
 * a state injected here cannot come back to its sender through another pair.
 */
export function siteConntrackdConfig(
  sync: ConnectionSyncConfig,
  peer: { address: string; port: number },
  role: "send" | "hold",
  paths: ConntrackdPaths,
  limits: CacheLimits = cacheLimits(),
): string {
  const sites = sync.acrossSites;
  if (!sites) throw new Error("connectionSync has no acrossSites");
  const link = [
    "  UDP {",
    `    IPv4_address ${canonical(sites.address).address}`,
    `    IPv4_Destination_Address ${canonical(peer.address).address}`,
    `    Port ${peer.port}`,
    `    Interface ${sites.interface}`,
  ];
  if (role === "send") return conntrackdText("FTFW", link, sourcesFilter(sync), paths, limits);
  // No TCP connection has the limited broadcast address as its source: nothing is accepted.
  const nothing = ["    Address Accept {", "      IPv4_address 255.255.255.255/32", "    }"];
  // The holding side has nothing to learn from its own kernel: it does not listen to its events
  // (conntrackd opens no event socket when it polls). Listening, it read an event for every state
  // it injected and for every connection of its own site, and dropped each in its filter.
  return conntrackdText("FTFW", link, nothing, paths, limits, HOLD_POLL_SECS);
}

/**
 * Events conntrackd handles in one pass before it turns to its other
 * sockets: at the 5 ms pace, up to a million a second, far above what it can
 * process, so the pace never caps it.
 */
export const EVENT_ITERATION_LIMIT = 5000;

/** How often a holding pair's conntrackd reads the kernel table (to send nothing of it): hourly. */
const HOLD_POLL_SECS = 3600;

/** The address filter of what is sent: TCP from the sources. */
function sourcesFilter(sync: ConnectionSyncConfig): string[] {
  const sources = sync.sources
    .map(canonicalPrefix)
    .map((p) => `      ${p.family === 4 ? "IPv4_address" : "IPv6_address"} ${p.text}`);
  return ["    Address Accept {", ...sources, "    }"];
}

function conntrackdText(
  mode: "FTFW" | "NOTRACK",
  link: string[],
  addressFilter: string[],
  paths: ConntrackdPaths,
  limits: CacheLimits,
  pollSecs?: number,
): string {
  return [
    "# Written by egressd from its connectionSync section; rewritten at every start.",
    "Sync {",
    `  Mode ${mode} {`,
    // States from peers go straight into the kernel table: nothing to commit at failover.
    "    DisableExternalCache On",
    // Ask the peers for their whole state at start (a restarted member learns what it missed).
    "    StartupResync On",
    "  }",
    ...link,
    "    SndSocketBuffer 1249280",
    "    RcvSocketBuffer 1249280",
    "    Checksum on",
    "  }",
    "}",
    "General {",
    `  HashSize ${limits.hashSize}`,
    `  HashLimit ${limits.hashLimit}`,
    // Log lines go to stdout (console mode), where egressd reads them; no file, no syslog.
    "  LogFile off",
    "  Syslog off",
    `  LockFile ${paths.lockFile}`,
    "  UNIX {",
    `    Path ${paths.socket}`,
    "  }",
    "  NetlinkBufferSize 2097152",
    "  NetlinkBufferSizeMaxGrowth 8388608",
    // Events lost while conntrackd was stalled are repaired by reading the whole table again, 30 s
    // after the socket overran (conntrackd's default): the states it missed are sent then (most
    // of them: from a large table not all, docs/connection-sync.md), and those of connections
    // gone meanwhile are withdrawn. Reliable events would have the kernel
    // keep what it could not deliver instead, but report it only with that connection's next
    // event, and conntrackd would never learn of the overrun: a long connection's state could be
    // missing for hours (measured in docs/connection-sync.md, item 1). Not more often than 30 s:
    // a read of the table at 10k connections a second is over a million entries.
    "  NetlinkEventsReliable Off",
    "  NetlinkOverrunResync On",
    // egressd has conntrackd read the kernel's events at most once per pace (the library it
    // loads into it: native/event-pace.c), all those waiting at once; the default limit of 100
    // per pass would cap it at 100 per pace.
    `  EventIterationLimit ${EVENT_ITERATION_LIMIT}`,
    // conntrackd puts itself in the real-time class unless told otherwise (SCHED_RR at priority
    // 99). There it outranks the BFD helper (SCHED_FIFO 1) and egressd's loop, and it is woken
    // at once for each event: it took 1.3-1.6 times the CPU per connection in the lab
    // (bench/connections), about 3 times on two namespaces alone. Priority 0 is not a
    // real-time priority, so the kernel refuses it, and conntrackd stays in the normal class at
    // egressd's nice, below failure detection (it logs the refusal, which egressd expects).
    "  Scheduler {",
    "    Type RR",
    "    Priority 0",
    "  }",
    ...(pollSecs === undefined ? [] : [`  PollSecs ${pollSecs}`]),
    // In user space: the same lists in kernel space sync nothing on these kernels (docs/facts.md).
    "  Filter From Userspace {",
    "    Protocol Accept {",
    "      TCP",
    "    }",
    ...addressFilter,
    "  }",
    "}",
    "",
  ].join("\n");
}

/**
 * What a line of conntrackd's log is to egressd: a peer asking for the whole
 * state, the refusal of the priority 0 that egressd configures (conntrackd
 * then goes on in the normal class, as asked: conntrackdText), the library's
 * count of peers' states the kernel refused in its batched writes
 * (refusedInAll), another warning or error, or anything else.
 */
export function conntrackdLine(
  line: string,
): "peer-resync" | "normal-class" | "library-refused" | "fault" | "other" {
  if (/resync requested by other node/.test(line)) return "peer-resync";
  if (refusedInAll(line) !== undefined) return "library-refused";
  if (/scheduler configuration failed: Invalid argument.*Continuing with system default scheduler/.test(line))
    return "normal-class";
  if (/\[(ERROR|WARNING)\]/i.test(line)) return "fault";
  return "other";
}

/**
 * The total in a line of the library conntrackd runs with
 * (native/event-pace.c, "Writing in batches"): how many peers' states the
 * kernel refused since this conntrackd started, where conntrackd itself
 * counted them as written. undefined for any other line.
 */
export function refusedInAll(line: string): number | undefined {
  const m =
    /^egressd-event-pace: \[ERROR\] the kernel refused \d+ of \d+ peers' states written at once \(.*\); (\d+) refused in all$/.exec(
      line,
    );
  if (!m) return undefined;
  const n = Number(m[1]);
  return Number.isSafeInteger(n) ? n : undefined;
}

export interface ConntrackdStats {
  /** States from peers written into the kernel table: created, updated, destroyed, and the failures. */
  injected: { created: number; updated: number; destroyed: number; failed: number };
  /** Local states in conntrackd's own cache (what it sends). */
  local: number;
  /**
   * Local states it could not add to that cache, so did not send: the
   * cache was full (HashLimit; conntrackd logs nothing of it).
   */
  cacheFailed: number;
  /** Sync messages that were lost or malformed. */
  lost: number;
  malformed: number;
  /** Packets received on the sync link (a peer was heard). */
  received: number;
}

/** One conntrackd's counters, named as in egressd's log ("conntrackd", "conntrackd-site-<peer>"). */
export interface ConntrackdChannelStats {
  conntrackd: string;
  stats: ConntrackdStats;
}

/** Reads `conntrackd -s`; throws on output that does not have the sections it needs. */
export function parseConntrackdStats(text: string): ConntrackdStats {
  const section = (title: string): string => {
    const at = text.indexOf(`${title}:`);
    if (at < 0) throw new Error(`conntrackd -s: no "${title}" section`);
    const end = text.indexOf("\n\n", at);
    return text.slice(at, end < 0 ? undefined : end);
  };
  const row = (s: string, label: string): [number, number] => {
    const m = new RegExp(`${label}:\\s+(\\d+)\\s+failed:\\s+(\\d+)`).exec(s);
    if (!m) throw new Error(`conntrackd -s: no "${label}" row`);
    return [Number(m[1]), Number(m[2])];
  };
  const ext = section("external inject");
  const [created, f1] = row(ext, "connections created");
  const [updated, f2] = row(ext, "connections updated");
  const [destroyed, f3] = row(ext, "connections destroyed");
  const internal = section("cache internal");
  const active = /current active connections:\s+(\d+)/.exec(internal);
  const [, cacheFailed] = row(internal, "connections created");
  const tracking = /(\d+)\s+Malformed msgs\s+(\d+)\s+Lost msgs/.exec(text);
  return {
    injected: { created, updated, destroyed, failed: f1 + f2 + f3 },
    local: Number(active?.[1] ?? 0),
    cacheFailed,
    lost: Number(tracking?.[2] ?? 0),
    malformed: Number(tracking?.[1] ?? 0),
    received: Number(/(\d+)\s+Pckts recv/.exec(text)?.[1] ?? 0),
  };
}
