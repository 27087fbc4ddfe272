// The audit trail at run time (docs/audit.md): conntrack's NEW and DESTROY
// events, kept to the connections egressd NATed to an address this gateway
// owns, become one record at the start and one at the end of each
// connection, written as JSON lines and/or exported as IPFIX.
//
//   filter:   the source was translated (IPS_SRC_NAT, or the tuples say so),
//             the connection carries one of egressd's policy marks, and the
//             translated address is this gateway's own. A peer's
//             connections that connection sync copied here are the peer's to
//             record.
//   policy:   from the mark, with the plan in force when the connection
//             started (kept with the connection for its end).
//   pod:      the Kubernetes input's owner of the source address, when it
//             runs, taken at the start (the address may be another pod's by
//             the end).
//   loss:     a full socket buffer (ENOBUFS) is counted and logged; then
//             the kernel's table is listed and compared with the connections
//             being followed: a connection in the table that was not seen
//             starting gets a start record marked late, one that left the
//             table unseen gets an end record marked endLost. Both are counted
//             (a connection that started and ended within the gap is in
//             neither; the kernel's SNAT counter still counts it). At start,
//             the table's connections get late starts too (they began before
//             egressd watched).
//   drops:    connections the gateway drops (Deny policies, unmatched) never
//             reach conntrack's table; their log rules report them over NFLOG
//             (routing/nflog.ts), and each becomes a drop record.
import { createSocket, type Socket } from "node:dgram";
import { writeFileSync } from "node:fs";
import { basename, dirname } from "node:path";
import type { Writable } from "node:stream";
import { createStream } from "rotating-file-stream";
import type { AuditConfig } from "../core/config/audit-schema.js";
import { DEFAULTS } from "../core/defaults.js";
import { IpfixExporter, type NatEventRecord } from "../core/audit/ipfix.js";
import { formatRecord, protoName, type AuditRecord, type PodRef } from "../core/audit/record.js";
import { ConntrackEvents, IPS_SRC_NAT, dumpConntrack, type ConntrackEvent } from "../routing/ctnetlink.js";
import { addressBytes, canonicalAddress } from "../routing/ip.js";
import { NflogReader, type DroppedPacket } from "../routing/nflog.js";
import { DROP_PREFIX, NFLOG_GROUP, policyKey } from "../routing/nft-render.js";
import type { Logger } from "./log.js";

const A = DEFAULTS.audit;
/** Destinations whose port use is exported one by one: the fullest ones (bounded cardinality). */
export const PORT_TOP = 10;
const PORTED = new Set([6, 17, 132]);

export interface PortUse {
  egressIP: string;
  protocol: string;
  /** address:port ([address]:port for IPv6) */
  destination: string;
  inUse: number;
  available: number;
}

export interface PortUsage {
  top: PortUse[];
  /** Per egress IP of this gateway: its fullest destination's ports in use over the ports available. */
  fullest: Map<string, number>;
}

/** Per-namespace switches the records need: byte and packet counts, and start and stop times. */
export const AUDIT_SYSCTLS = [
  "/proc/sys/net/netfilter/nf_conntrack_acct",
  "/proc/sys/net/netfilter/nf_conntrack_timestamp",
] as const;

/** A policy as the audit names it: its mark (within the mask) and its name; a Deny policy's drops are recorded. */
export interface AuditPolicy {
  name: string;
  mark: number;
  deny?: boolean;
}

export interface AuditOptions {
  config: AuditConfig;
  gateway: string;
  log: Logger;
  /** The pod that owns a source address now, when the Kubernetes input runs. */
  podAt?: (address: string) => PodRef | undefined;
  /** Wall clock, ms (default Date.now). */
  now?: () => number;
  /** Where "-" writes (default process.stdout). */
  stdout?: Writable;
}

export interface AuditCounts {
  starts: number;
  ends: number;
  /** New connections dropped (Deny policies, unmatched), as logged to the NFLOG group. */
  drops: number;
  /** Times the kernel reported dropped events (ENOBUFS). */
  overruns: number;
  /** Starts and ends whose events were lost, found by listing the table (see above). */
  lostStarts: number;
  lostEnds: number;
  /** Conntrack events that were not egressd's own connections here. */
  ignored: number;
  writeErrors: number;
  ipfixMessages: number;
  ipfixErrors: number;
}

interface Live {
  policy: string;
  pod: PodRef | undefined;
  startedMs: number;
  /** The start's event: its tuples write the end when the end's event is lost. */
  ev: ConntrackEvent;
}

export class AuditTrail {
  readonly counts: AuditCounts = {
    starts: 0,
    ends: 0,
    drops: 0,
    overruns: 0,
    lostStarts: 0,
    lostEnds: 0,
    ignored: 0,
    writeErrors: 0,
    ipfixMessages: 0,
    ipfixErrors: 0,
  };
  private readonly opts: AuditOptions;
  private readonly now: () => number;
  private markMask = 0;
  private policies = new Map<number, string>();
  /** A Deny policy's key (as its log prefix names it) -> its name. */
  private denyKeys = new Map<string, string>();
  private nflog: NflogReader | undefined;
  private own = new Set<string>();
  /** Ports in use per egress IP, protocol and destination ("192.0.2.11 tcp 198.51.100.7:5432"). */
  private readonly ports = new Map<string, number>();
  private portsAvailable = 64512;
  /** Connections started while egressd watched, by the kernel's id. */
  private readonly live = new Map<number, Live>();
  private events: ConntrackEvents | undefined;
  private out: Writable | undefined;
  private ipfix: { socket: Socket; exporter: IpfixExporter; port: number; host: string } | undefined;
  private pending: NatEventRecord[] = [];
  private lines: string[] = [];
  /** IPFIX messages handed to the socket and not sent yet. */
  private sending = 0;
  private lineBytes = 0;
  private linesTimer: NodeJS.Timeout | undefined;
  private flushTimer: NodeJS.Timeout | undefined;
  private templateTimer: NodeJS.Timeout | undefined;
  private lastOverrunLog = 0;
  /** A listing of the table runs (or is due); ids that ended meanwhile are not taken as open. */
  private repairing: Promise<void> | undefined;
  private repairAgain = false;
  private endedDuringRepair = new Set<number>();
  /** From the last listing, until their own events come or repairGraceMs passes (see repairFrom). */
  private readonly lateWait = new Map<number, { ev: ConntrackEvent; late: "before" | "lost" }>();
  private readonly goneWait = new Set<number>();
  private settleTimer: NodeJS.Timeout | undefined;
  private stopped = false;

  constructor(opts: AuditOptions) {
    this.opts = opts;
    this.now = opts.now ?? Date.now;
    if (opts.config.file === "-") this.out = opts.stdout ?? process.stdout;
  }

  /**
   * The plan in force: the policies' marks, the mark bits, this gateway's
   * egress IPs, and the SNAT port range (absent: the kernel's, 1024-65535).
   */
  setPlan(
    policies: readonly AuditPolicy[],
    markMask: number,
    egressIPs: readonly string[],
    portRange: readonly [number, number] = [1024, 65535],
  ): void {
    this.portsAvailable = portRange[1] - portRange[0] + 1;
    this.markMask = markMask;
    this.policies = new Map(policies.filter((p) => !p.deny).map((p) => [p.mark & markMask, p.name]));
    this.denyKeys = new Map(policies.filter((p) => p.deny).map((p) => [policyKey(p.name), p.name]));
    this.own = new Set(egressIPs.map(canonicalAddress));
  }

  private usePort(ev: ConntrackEvent, by: 1 | -1): void {
    if (!PORTED.has(ev.orig.proto)) return;
    const dst = ev.family === 6 ? `[${ev.orig.dst}]:${ev.orig.dport}` : `${ev.orig.dst}:${ev.orig.dport}`;
    const key = `${ev.reply.dst} ${protoName(ev.orig.proto)} ${dst}`;
    const n = (this.ports.get(key) ?? 0) + by;
    if (n > 0) this.ports.set(key, n);
    else this.ports.delete(key);
  }

  /**
   * SNAT ports in use: the `top` fullest (egress IP, protocol, destination)
   * and, per egress IP, its fullest destination's share of the range. One
   * pass over the destinations, keeping the top ones in a small sorted list.
   */
  portUsage(top = PORT_TOP): PortUsage {
    const best: PortUse[] = [];
    const fullest = new Map<string, number>();
    for (const [key, inUse] of this.ports) {
      const [egressIP, protocol, destination] = key.split(" ") as [string, string, string];
      const ratio = inUse / this.portsAvailable;
      if (ratio > (fullest.get(egressIP) ?? 0)) fullest.set(egressIP, ratio);
      if (best.length === top && inUse <= best[best.length - 1]!.inUse) continue;
      const u = { egressIP, protocol, destination, inUse, available: this.portsAvailable };
      let i = best.length;
      while (i > 0 && best[i - 1]!.inUse < inUse) i--;
      best.splice(i, 0, u);
      if (best.length > top) best.pop();
    }
    for (const ip of this.own) if (!fullest.has(ip)) fullest.set(ip, 0);
    return { top: best, fullest };
  }

  /** Connections being followed now (started while egressd watched and not ended). */
  get open(): number {
    return this.live.size;
  }

  /** Opens the event sockets and the outputs. Throws (and leaves nothing open) when one cannot be. */
  async start(): Promise<void> {
    for (const path of AUDIT_SYSCTLS) writeFileSync(path, "1\n");
    const c = this.opts.config;
    try {
      if (c.file !== undefined && c.file !== "-") {
        const stream = createStream(basename(c.file), {
          path: dirname(c.file),
          size: c.rotateSize ?? A.rotateSize,
          rotate: c.rotateKeep ?? A.rotateKeep,
          mode: 0o640,
        });
        stream.on("error", (e) => this.writeFailed(e));
        stream.on("warning", (e) => this.opts.log.warn({ err: e.message }, "audit trail file"));
        this.out = stream;
      }
      if (c.ipfix) {
        const host = canonicalAddress(c.ipfix.collector);
        const socket = createSocket(host.includes(":") ? "udp6" : "udp4");
        socket.on("error", (e) => {
          this.counts.ipfixErrors++;
          this.opts.log.warn({ err: e.message }, "IPFIX export failed");
        });
        socket.unref();
        this.ipfix = {
          socket,
          host,
          port: c.ipfix.port ?? A.ipfixPort,
          exporter: new IpfixExporter({
            domain: c.ipfix.observationDomain ?? A.observationDomain,
            maxMessageBytes: A.ipfixMessageBytes,
            refreshMs: (c.ipfix.templateRefreshSeconds ?? A.templateRefreshSeconds) * 1000,
          }),
        };
        // Templates go out at start and on their period even while no connection is made.
        this.sendIpfix([]);
        this.templateTimer = setInterval(() => this.sendIpfix([]), 1000);
        this.templateTimer.unref();
      }
      this.events = new ConntrackEvents({
        recvBufferSize: c.receiveBufferBytes ?? A.receiveBufferBytes,
        flushMs: A.eventsFlushMs,
        onEvent: (ev) => this.handle(ev),
        onOverrun: () => this.overrun(),
        onError: (e) => this.opts.log.error({ err: e.message }, "conntrack events"),
      });
      await this.events.start();
      const granted = (this.events.granted ?? 0) / 2;
      const asked = c.receiveBufferBytes ?? A.receiveBufferBytes;
      if (granted < asked)
        this.opts.log.warn(
          { asked, granted },
          "the conntrack event socket's buffer is smaller than asked (egressd needs CAP_NET_ADMIN to go above net.core.rmem_max)",
        );
      this.nflog = new NflogReader({
        group: NFLOG_GROUP,
        recvBufferSize: 1 << 20,
        onPacket: (p) => this.dropped(p),
        onOverrun: () => this.overrun(),
        onError: (e) => this.opts.log.error({ err: e.message }, "NFLOG socket"),
      });
      await this.nflog.start();
      // Connections open before egressd watched: their starts, from the table.
      this.scheduleRepair("start", 0);
    } catch (e) {
      void this.stop();
      throw e;
    }
  }

  /** A new connection the gateway dropped, as its log rule reported it (public for tests). */
  dropped(p: DroppedPacket): void {
    if (!p.prefix.startsWith(DROP_PREFIX)) return;
    const what = p.prefix.slice(DROP_PREFIX.length);
    const r: AuditRecord = {
      time: new Date(p.timeMs ?? this.now()).toISOString(),
      event: "drop",
      gateway: this.opts.gateway,
      proto: protoName(p.proto),
      src: p.src,
      sport: p.sport,
      dst: p.dst,
      dport: p.dport,
    };
    if (what === "unmatched") r.unmatched = true;
    else r.policy = this.denyKeys.get(what) ?? what;
    const pod = this.opts.podAt?.(p.src);
    if (pod) r.pod = pod;
    this.counts.drops++;
    if (this.out) this.write(formatRecord(r) + "\n");
  }

  /** Whether a conntrack entry is one of egressd's NATed connections to this gateway's addresses. */
  private ours(ev: ConntrackEvent): boolean {
    // The status says it (6.18 sends it in DESTROY events too); so do the tuples, should it be absent.
    const translated = (ev.status & IPS_SRC_NAT) !== 0 || ev.reply.dst !== ev.orig.src;
    return translated && (ev.mark & this.markMask) !== 0 && this.own.has(ev.reply.dst);
  }

  /** One conntrack event (public for tests). */
  handle(ev: ConntrackEvent): void {
    if (!this.ours(ev)) {
      this.counts.ignored++;
      return;
    }
    if (ev.type === "new") {
      this.lateWait.delete(ev.id);
      this.started(ev, false);
      return;
    }
    this.goneWait.delete(ev.id);
    const waiting = this.lateWait.get(ev.id);
    if (waiting) {
      // Its start was only in the table: written before its end.
      this.lateWait.delete(ev.id);
      this.started(waiting.ev, waiting.late);
    }
    this.ended(ev, false);
  }

  /** late: written from the table, for a connection open before egressd watched, or whose event was lost. */
  private started(ev: ConntrackEvent, late: false | "before" | "lost"): void {
    const mark = ev.mark & this.markMask;
    const policy = this.policies.get(mark) ?? `mark 0x${mark.toString(16)}`;
    const startMs = ev.startNs !== undefined ? Number(ev.startNs / 1_000_000n) : this.now();
    const pod = this.opts.podAt?.(ev.orig.src);
    if (!this.live.has(ev.id)) this.usePort(ev, 1);
    this.live.set(ev.id, { policy, pod, startedMs: startMs, ev });
    const r = this.record(ev, "start", policy, startMs);
    if (pod) r.pod = pod;
    if (late) r.late = true;
    if (late === "lost") this.counts.lostStarts++;
    else this.counts.starts++;
    this.emit(r, ev, startMs, startMs);
  }

  private ended(ev: ConntrackEvent, lost: boolean): void {
    const started = this.live.get(ev.id);
    if (started) this.usePort(started.ev, -1);
    this.live.delete(ev.id);
    if (this.repairing) this.endedDuringRepair.add(ev.id);
    const mark = ev.mark & this.markMask;
    const policy = started?.policy ?? this.policies.get(mark) ?? `mark 0x${mark.toString(16)}`;
    const startMs =
      started?.startedMs ?? (ev.startNs !== undefined ? Number(ev.startNs / 1_000_000n) : this.now());
    const endMs = !lost && ev.stopNs !== undefined ? Number(ev.stopNs / 1_000_000n) : this.now();
    const r = this.record(ev, "end", policy, endMs);
    if (started?.pod) r.pod = started.pod;
    r.started = new Date(startMs).toISOString();
    if (lost) {
      r.endLost = true;
      this.counts.lostEnds++;
    } else {
      r.packetsOut = Number(ev.origCounters?.packets ?? 0n);
      r.bytesOut = Number(ev.origCounters?.bytes ?? 0n);
      r.packetsIn = Number(ev.replyCounters?.packets ?? 0n);
      r.bytesIn = Number(ev.replyCounters?.bytes ?? 0n);
      this.counts.ends++;
    }
    this.emit(r, ev, startMs, endMs);
  }

  private record(ev: ConntrackEvent, event: "start" | "end", policy: string, atMs: number): AuditRecord {
    return {
      time: new Date(atMs).toISOString(),
      event,
      gateway: this.opts.gateway,
      policy,
      proto: protoName(ev.orig.proto),
      src: ev.orig.src,
      sport: ev.orig.sport,
      egressIP: ev.reply.dst,
      egressPort: ev.reply.dport,
      dst: ev.orig.dst,
      dport: ev.orig.dport,
      ctId: ev.id,
    };
  }

  private emit(r: AuditRecord, ev: ConntrackEvent, startMs: number, endMs: number): void {
    if (this.out) this.write(formatRecord(r) + "\n");
    if (!this.ipfix) return;
    const end = r.event === "end";
    this.pending.push({
      family: ev.family,
      event: end ? "delete" : "create",
      observedMs: end ? endMs : startMs,
      startMs,
      endMs,
      src: addressBytes(ev.orig.src),
      sport: ev.orig.sport,
      postSrc: addressBytes(ev.reply.dst),
      postSport: ev.reply.dport,
      dst: addressBytes(ev.orig.dst),
      dport: ev.orig.dport,
      proto: ev.orig.proto,
      bytesOut: BigInt(r.bytesOut ?? 0),
      packetsOut: BigInt(r.packetsOut ?? 0),
      bytesIn: BigInt(r.bytesIn ?? 0),
      packetsIn: BigInt(r.packetsIn ?? 0),
    });
    if (this.pending.length >= 64) this.flushIpfix();
    else this.flushTimer ??= setTimeout(() => this.flushIpfix(), A.ipfixFlushMs);
  }

  /** Lists the table after `delayMs` (once, however often asked meanwhile) and repairs the trail from it. */
  private scheduleRepair(why: "start" | "overrun", delayMs: number): void {
    if (this.repairing) {
      this.repairAgain = true;
      return;
    }
    this.endedDuringRepair = new Set();
    this.repairing = (async () => {
      await new Promise((r) => setTimeout(r, delayMs));
      do {
        this.repairAgain = false;
        if (this.stopped) return;
        try {
          this.repairFrom(await dumpConntrack(), why);
        } catch (e) {
          this.opts.log.error({ err: (e as Error).message }, "audit: listing the conntrack table failed");
        }
      } while (this.repairAgain);
    })().finally(() => {
      this.repairing = undefined;
    });
  }

  /**
   * Compares the table with the connections followed (public for tests).
   * Events the kernel sent before the listing may still wait in the socket,
   * so nothing is written at once: a connection in the table that was not
   * seen starting, or one followed that is not in the table, is written from
   * the table only if its own event has not come within repairGraceMs.
   */
  repairFrom(table: readonly ConntrackEvent[], why: "start" | "overrun"): void {
    const inTable = new Set<number>();
    for (const ev of table) {
      if (!this.ours(ev)) continue;
      inTable.add(ev.id);
      if (!this.live.has(ev.id) && !this.endedDuringRepair.has(ev.id))
        this.lateWait.set(ev.id, { ev, late: why === "start" ? "before" : "lost" });
    }
    if (why === "overrun") for (const id of this.live.keys()) if (!inTable.has(id)) this.goneWait.add(id);
    this.endedDuringRepair.clear();
    if (this.settleTimer) clearTimeout(this.settleTimer);
    this.settleTimer = setTimeout(() => this.settle(), A.repairGraceMs);
    this.settleTimer.unref();
  }

  /** Writes what the listing found and no event has told since (public for tests). */
  settle(): void {
    if (this.settleTimer) clearTimeout(this.settleTimer);
    this.settleTimer = undefined;
    const before = { lost: this.counts.lostStarts, ends: this.counts.lostEnds, starts: this.counts.starts };
    for (const { ev, late } of this.lateWait.values()) this.started(ev, late);
    this.lateWait.clear();
    for (const id of this.goneWait) {
      const l = this.live.get(id);
      if (l) this.ended({ ...l.ev, type: "destroy" }, true);
    }
    this.goneWait.clear();
    const open = this.counts.starts - before.starts;
    const lostStarts = this.counts.lostStarts - before.lost;
    const lostEnds = this.counts.lostEnds - before.ends;
    if (open)
      this.opts.log.info({ connections: open }, "audit: connections open before egressd watched recorded");
    if (lostStarts || lostEnds)
      this.opts.log.error(
        { lostStarts, lostEnds },
        "audit: records written from the conntrack table for events the kernel dropped",
      );
  }

  /**
   * Lines wait up to linesFlushMs (or 64 KiB) and go out as one write: the
   * file stream costs about 25 µs per write whatever its size (measured: 200k
   * single-line writes), and at a steady rate each event comes on its own.
   */
  private write(line: string): void {
    this.lines.push(line);
    this.lineBytes += line.length;
    if (this.lineBytes >= 1 << 16) this.flushLines();
    else this.linesTimer ??= setTimeout(() => this.flushLines(), A.linesFlushMs);
  }

  private flushLines(): void {
    if (this.linesTimer) clearTimeout(this.linesTimer);
    this.linesTimer = undefined;
    if (this.lines.length === 0 || !this.out) return;
    const chunk = this.lines.join("");
    this.lines = [];
    this.lineBytes = 0;
    try {
      this.out.write(chunk);
    } catch (e) {
      this.writeFailed(e as Error);
    }
  }

  private writeFailed(e: Error): void {
    this.counts.writeErrors++;
    this.opts.log.error({ err: e.message }, "audit trail write failed");
  }

  private overrun(): void {
    this.counts.overruns++;
    const now = this.now();
    // Logged at most once a second; the metric counts every one.
    if (now - this.lastOverrunLog >= 1000) {
      this.lastOverrunLog = now;
      this.opts.log.error(
        { overruns: this.counts.overruns },
        "the kernel dropped conntrack events (socket buffer full): repairing the trail from the table",
      );
    }
    // Once the burst has passed: the listing then finds what the lost events said.
    this.scheduleRepair("overrun", 200);
  }

  private flushIpfix(): void {
    if (this.flushTimer) clearTimeout(this.flushTimer);
    this.flushTimer = undefined;
    const records = this.pending;
    this.pending = [];
    this.sendIpfix(records);
  }

  private sendIpfix(records: NatEventRecord[]): void {
    const x = this.ipfix;
    if (!x) return;
    for (const msg of x.exporter.encode(records, this.now())) {
      this.counts.ipfixMessages++;
      this.sending++;
      x.socket.send(msg, x.port, x.host, (e) => {
        this.sending--;
        if (e) this.counts.ipfixErrors++;
      });
    }
  }

  /** Closes the socket, sends what waits, and closes the outputs. */
  async stop(): Promise<void> {
    this.stopped = true;
    await this.repairing;
    this.settle();
    this.events?.close();
    this.events = undefined;
    this.nflog?.close();
    this.nflog = undefined;
    if (this.templateTimer) clearInterval(this.templateTimer);
    this.templateTimer = undefined;
    if (this.ipfix) {
      this.flushIpfix();
      const socket = this.ipfix.socket;
      this.ipfix = undefined;
      // Sends still queued would be cancelled by the close: wait for them (a little).
      for (let i = 0; i < 100 && this.sending > 0; i++) await new Promise((r) => setTimeout(r, 10));
      await new Promise<void>((resolve) => socket.close(() => resolve()));
    }
    this.flushLines();
    const out = this.out;
    this.out = undefined;
    if (out && out !== (this.opts.stdout ?? process.stdout))
      await new Promise<void>((resolve) => out.end(() => resolve()));
  }
}
