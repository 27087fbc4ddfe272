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
  const backups = sync.peers.flatMap((p) => p.egressIPs.map(canonical));
  const sources = sync.sources.map(canonicalPrefix);
  return {
    interface: sync.interface,
    port: sync.port ?? S.port,
    peers: sync.peers
      .map((p) => canonical(p.address))
      .sort(byFamilyThenValue)
      .map((p) => p.address),
    backup4: backups
      .filter((b) => b.family === 4)
      .sort(byFamilyThenValue)
      .map((b) => b.address),
    backup6: backups
      .filter((b) => b.family === 6)
      .sort(byFamilyThenValue)
      .map((b) => b.address),
    sources4: sources.filter((s) => s.family === 4).map((s) => s.text),
    sources6: sources.filter((s) => s.family === 6).map((s) => s.text),
  };
}

function canonicalPrefix(text: string): { family: 4 | 6; text: string } {
  const p = parsePrefix(text);
  if (!p.ok) throw new Error(p.message);
  return { family: p.prefix.family, text: `${formatAddress(p.prefix.family, p.prefix.lo)}/${p.prefix.len}` };
}

/** The other members' egress IPs as host prefixes ("192.0.2.12/32"): this gateway's backup paths. */
export function backupPrefixes(g: SyncGuard | undefined): string[] {
  if (!g) return [];
  return [...g.backup4.map((a) => `${a}/32`), ...g.backup6.map((a) => `${a}/128`)];
}

export interface ConntrackdPaths {
  lockFile: string;
  socket: string;
}

/** conntrackd.conf for `sync`. */
export function conntrackdConfig(sync: ConnectionSyncConfig, paths: ConntrackdPaths): string {
  const port = sync.port ?? S.port;
  const self = canonical(sync.address).address;
  // One peer: unicast. More: the group's multicast address, so that every member hears every other.
  const link =
    sync.peers.length === 1
      ? [
          "  UDP {",
          `    IPv4_address ${self}`,
          `    IPv4_Destination_Address ${canonical(sync.peers[0]!.address).address}`,
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
  const sources = sync.sources
    .map(canonicalPrefix)
    .map((p) => `      ${p.family === 4 ? "IPv4_address" : "IPv6_address"} ${p.text}`);
  return [
    "# Written by egressd from its connectionSync section; rewritten at every start.",
    "Sync {",
    // FTFW (acknowledged, resent when lost) tracks one peer's sequence: with three members on the
    // multicast group it left 30-60% of the states unsynced in the lab. NOTRACK (sent once, no
    // acknowledgements) synced all of them; on a dedicated link, losses are rare.
    `  Mode ${sync.peers.length === 1 ? "FTFW" : "NOTRACK"} {`,
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
    "  HashSize 32768",
    "  HashLimit 262144",
    // Log lines go to stdout (console mode), where egressd reads them; no file, no syslog.
    "  LogFile off",
    "  Syslog off",
    `  LockFile ${paths.lockFile}`,
    "  UNIX {",
    `    Path ${paths.socket}`,
    "  }",
    "  NetlinkBufferSize 2097152",
    "  NetlinkBufferSizeMaxGrowth 8388608",
    // Lost kernel events make conntrackd resync with the table instead of missing states.
    "  NetlinkEventsReliable On",
    // In user space: the same lists in kernel space sync nothing on these kernels (docs/facts.md).
    "  Filter From Userspace {",
    "    Protocol Accept {",
    "      TCP",
    "    }",
    "    Address Accept {",
    ...sources,
    "    }",
    "  }",
    "}",
    "",
  ].join("\n");
}

export interface ConntrackdStats {
  /** States from peers written into the kernel table: created, updated, destroyed, and the failures. */
  injected: { created: number; updated: number; destroyed: number; failed: number };
  /** Local states in conntrackd's own cache (what it sends). */
  local: number;
  /** Sync messages that were lost or malformed. */
  lost: number;
  malformed: number;
  /** Packets received on the sync link (a peer was heard). */
  received: number;
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
  const tracking = /(\d+)\s+Malformed msgs\s+(\d+)\s+Lost msgs/.exec(text);
  return {
    injected: { created, updated, destroyed, failed: f1 + f2 + f3 },
    local: Number(active?.[1] ?? 0),
    lost: Number(tracking?.[2] ?? 0),
    malformed: Number(tracking?.[1] ?? 0),
    received: Number(/(\d+)\s+Pckts recv/.exec(text)?.[1] ?? 0),
  };
}
