// The audit trail's records: one when a NATed connection starts, one when it
// ends (docs/audit.md). A record is one JSON object on one line, so a log
// shipper can take the file as it is, and `egressd audit find` can read it
// back. Fields are flat where a firewall team would search on them.

/** The pod a source address belonged to when the connection started (from the Kubernetes input). */
export interface PodRef {
  namespace: string;
  name: string;
  uid: string;
}

export interface AuditRecord {
  /**
   * When it happened, ISO 8601 UTC. start: the connection's first packet;
   * end: when the kernel forgot it; drop: when the gateway dropped it.
   */
  time: string;
  /** drop: a new connection the gateway dropped (a Deny policy's, or one no policy allows). */
  event: "start" | "end" | "drop";
  gateway: string;
  /** The data-plane policy that NATed (or denied) it (a cluster policy's data-plane name). */
  policy?: string;
  /** drop only: no policy allows it (dataplane.unmatched: Deny). */
  unmatched?: true;
  proto: string;
  src: string;
  sport: number;
  /** start and end: the address and port the source was translated to, what the firewall sees. */
  egressIP?: string;
  egressPort?: number;
  dst: string;
  dport: number;
  pod?: PodRef;
  /** start and end: the kernel's connection id, the same in a connection's start and end (with the gateway). */
  ctId?: number;
  /**
   * Start only: written from the kernel's table, not from the connection's
   * event: it started before egressd watched, or its event was lost. `time`
   * is still when it started.
   */
  late?: true;
  /**
   * End only: the connection left the kernel's table but its event was lost;
   * `time` is when egressd noticed, and there are no counters.
   */
  endLost?: true;
  /** End only: when the connection started, ISO 8601 UTC. */
  started?: string;
  /** End only: packets and bytes from the pod (out) and back to it (in). */
  packetsOut?: number;
  bytesOut?: number;
  packetsIn?: number;
  bytesIn?: number;
}

const PROTOCOLS: Record<number, string> = { 1: "icmp", 6: "tcp", 17: "udp", 58: "ipv6-icmp", 132: "sctp" };
/** The protocol's name as /etc/protocols spells it, or its number. */
export const protoName = (n: number): string => PROTOCOLS[n] ?? String(n);

/** One line of the trail (without its newline). Field order is fixed, so lines diff and grep well. */
export function formatRecord(r: AuditRecord): string {
  return JSON.stringify(r);
}

const isStr = (v: unknown): v is string => typeof v === "string";
const isPort = (v: unknown): v is number =>
  Number.isInteger(v) && (v as number) >= 0 && (v as number) <= 65535;

/**
 * A line of the trail read back; undefined for anything else (a partial last
 * line, a line from another program). Checks what `find` relies on.
 */
export function parseRecord(line: string): AuditRecord | undefined {
  let v: unknown;
  try {
    v = JSON.parse(line);
  } catch {
    return undefined;
  }
  if (typeof v !== "object" || v === null) return undefined;
  const r = v as Record<string, unknown>;
  if (r.event !== "start" && r.event !== "end" && r.event !== "drop") return undefined;
  if (!isStr(r.time) || Number.isNaN(Date.parse(r.time))) return undefined;
  if (![r.gateway, r.proto, r.src, r.dst].every(isStr) || ![r.sport, r.dport].every(isPort)) return undefined;
  if (r.event !== "drop" && !(isStr(r.policy) && isStr(r.egressIP) && isPort(r.egressPort))) return undefined;
  return v as AuditRecord;
}

/** What the firewall team asks about: the translated source, maybe the destination, and when. */
export interface AuditQuery {
  egressIP: string;
  egressPort?: number;
  dst?: string;
  dport?: number;
  /** Milliseconds since the epoch. */
  at: number;
  /** How far from `at` a connection may lie and still match (clocks differ, logs round), ms. */
  slackMs: number;
}

/** A connection as the trail knows it: its start and end records (either may be missing). */
export interface AuditedConnection {
  start?: AuditRecord;
  end?: AuditRecord;
}

const key = (r: AuditRecord) => `${r.gateway}/${r.ctId}/${r.egressIP}/${r.egressPort}/${r.dst}/${r.dport}`;

/**
 * Pairs each connection's records (fed in the order written: a start before
 * its end) and keeps those that answer the query: the same translated source
 * (and destination, when asked), alive at some point within `slackMs` of
 * `at`. A connection whose end is not in the trail is taken as alive until
 * `now`. Fed one record at a time, so a large trail is never held whole.
 */
export class ConnectionFinder {
  private readonly open = new Map<string, AuditedConnection>();
  private readonly done: AuditedConnection[] = [];

  constructor(private readonly q: AuditQuery) {}

  add(r: AuditRecord): void {
    const q = this.q;
    if (r.event === "drop" || r.egressIP !== q.egressIP) return;
    if (q.egressPort !== undefined && r.egressPort !== q.egressPort) return;
    if (q.dst !== undefined && r.dst !== q.dst) return;
    if (q.dport !== undefined && r.dport !== q.dport) return;
    const k = key(r);
    if (r.event === "start") {
      const before = this.open.get(k);
      if (before && r.late) return; // the same connection, written again from the table
      if (before) this.keep(before); // a start again: the kernel reused the id; the first never ended here
      this.open.set(k, { start: r });
    } else {
      const c = this.open.get(k) ?? {};
      this.open.delete(k);
      c.end = r;
      this.keep(c, Date.parse(r.time));
    }
  }

  /** The matching connections, in the order they started. */
  result(now: number): AuditedConnection[] {
    for (const c of this.open.values()) this.keep(c, now);
    this.open.clear();
    const from = (c: AuditedConnection) => Date.parse(c.start?.time ?? c.end?.started ?? c.end!.time);
    return this.done.sort((a, b) => from(a) - from(b));
  }

  private keep(c: AuditedConnection, to?: number): void {
    const from = Date.parse(c.start?.time ?? c.end?.started ?? c.end!.time);
    const until = to ?? from;
    if (from <= this.q.at + this.q.slackMs && until >= this.q.at - this.q.slackMs) this.done.push(c);
  }
}

/** findConnections over records held in memory. */
export function findConnections(
  records: Iterable<AuditRecord>,
  q: AuditQuery,
  now: number,
): AuditedConnection[] {
  const f = new ConnectionFinder(q);
  for (const r of records) f.add(r);
  return f.result(now);
}

/**
 * A time as the firewall log gives it: ISO 8601 (with a date), or a time of
 * day (HH:MM or HH:MM:SS, UTC) on the day of `now`. Undefined when it is neither.
 */
export function parseWhen(text: string, now: number): number | undefined {
  const tod = /^(\d{1,2}):(\d{2})(?::(\d{2}))?$/.exec(text);
  if (tod) {
    const [h, m, s] = [Number(tod[1]), Number(tod[2]), Number(tod[3] ?? 0)];
    if (h > 23 || m > 59 || s > 59) return undefined;
    const d = new Date(now);
    return Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), d.getUTCDate(), h, m, s);
  }
  if (!/^\d{4}-\d{2}-\d{2}/.test(text)) return undefined;
  const t = Date.parse(text);
  return Number.isNaN(t) ? undefined : t;
}
