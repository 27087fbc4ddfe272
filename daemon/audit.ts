// The audit trail at run time (docs/audit.md): conntrack's NEW and DESTROY
// events, kept to the connections egressd NATed to an address this gateway
// owns, become one record at the start and one at the end of each
// connection, written as JSON lines and/or exported as IPFIX.
//
//   filter:   the source was translated (IPS_SRC_NAT), the connection carries
//             one of egressd's policy marks, and the translated address is
//             this gateway's own. A peer's connections that connection sync
//             copied here are the peer's to record.
//   policy:   from the mark, with the plan in force when the connection
//             started (kept with the connection for its end).
//   pod:      the Kubernetes input's owner of the source address, when it
//             runs, taken at the start (the address may be another pod's by
//             the end).
//   loss:     a full socket buffer (ENOBUFS) is counted, logged and exported
//             as a metric; nothing is dropped here on purpose.
import { createSocket, type Socket } from "node:dgram";
import { writeFileSync } from "node:fs";
import { basename, dirname } from "node:path";
import type { Writable } from "node:stream";
import { createStream } from "rotating-file-stream";
import type { AuditConfig } from "../core/config/audit-schema.js";
import { DEFAULTS } from "../core/defaults.js";
import { parseAddress, formatAddress } from "../core/ip.js";
import { IpfixExporter, type NatEventRecord } from "../core/audit/ipfix.js";
import { formatRecord, protoName, type AuditRecord, type PodRef } from "../core/audit/record.js";
import {
  ConntrackEvents,
  IPS_SRC_NAT,
  NFNLGRP_CONNTRACK_DESTROY,
  NFNLGRP_CONNTRACK_NEW,
  type ConntrackEvent,
} from "../routing/ctnetlink.js";
import { addressBytes } from "../routing/ip.js";
import type { Logger } from "./log.js";

const A = DEFAULTS.audit;

/** Per-namespace switches the records need: byte and packet counts, and start and stop times. */
export const AUDIT_SYSCTLS = [
  "/proc/sys/net/netfilter/nf_conntrack_acct",
  "/proc/sys/net/netfilter/nf_conntrack_timestamp",
] as const;

/** A policy as the audit names it: its mark (within the mask) and its name. */
export interface AuditPolicy {
  name: string;
  mark: number;
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
  /** Times the kernel reported dropped events (ENOBUFS). */
  overruns: number;
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
}

const canonical = (text: string) => {
  const a = parseAddress(text);
  return a ? formatAddress(a.family, a.value) : text;
};

export class AuditTrail {
  readonly counts: AuditCounts = {
    starts: 0,
    ends: 0,
    overruns: 0,
    ignored: 0,
    writeErrors: 0,
    ipfixMessages: 0,
    ipfixErrors: 0,
  };
  private readonly opts: AuditOptions;
  private readonly now: () => number;
  private markMask = 0;
  private policies = new Map<number, string>();
  private own = new Set<string>();
  /** Connections started while egressd watched, by the kernel's id. */
  private readonly live = new Map<number, Live>();
  private events: ConntrackEvents | undefined;
  private out: Writable | undefined;
  private ipfix: { socket: Socket; exporter: IpfixExporter; port: number; host: string } | undefined;
  private pending: NatEventRecord[] = [];
  private flushTimer: NodeJS.Timeout | undefined;
  private templateTimer: NodeJS.Timeout | undefined;
  private lastOverrunLog = 0;

  constructor(opts: AuditOptions) {
    this.opts = opts;
    this.now = opts.now ?? Date.now;
    if (opts.config.file === "-") this.out = opts.stdout ?? process.stdout;
  }

  /** The plan in force: the policies' marks, the mark bits, and this gateway's egress IPs. */
  setPlan(policies: readonly AuditPolicy[], markMask: number, egressIPs: readonly string[]): void {
    this.markMask = markMask;
    this.policies = new Map(policies.map((p) => [p.mark & markMask, p.name]));
    this.own = new Set(egressIPs.map(canonical));
  }

  /** Connections being followed now (started while egressd watched and not ended). */
  get open(): number {
    return this.live.size;
  }

  /** Opens the event socket and the outputs. Throws (and leaves nothing open) when one cannot be. */
  start(): void {
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
        const host = canonical(c.ipfix.collector);
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
        groups: [NFNLGRP_CONNTRACK_NEW, NFNLGRP_CONNTRACK_DESTROY],
        recvBufferSize: c.receiveBufferBytes ?? A.receiveBufferBytes,
        onEvent: (ev) => this.handle(ev),
        onOverrun: () => this.overrun(),
        onError: (e) => this.opts.log.error({ err: e.message }, "conntrack event socket"),
      });
      const granted = this.events.recvBufferSize / 2;
      const asked = c.receiveBufferBytes ?? A.receiveBufferBytes;
      if (granted < asked)
        this.opts.log.warn(
          { asked, granted },
          "the conntrack event socket's buffer is smaller than asked: raise net.core.rmem_max",
        );
    } catch (e) {
      void this.stop();
      throw e;
    }
  }

  /** One conntrack event (public for tests). */
  handle(ev: ConntrackEvent): void {
    const mark = ev.mark & this.markMask;
    // The status is not in every kernel's DESTROY events; the tuples tell a translated source too.
    const translated = (ev.status & IPS_SRC_NAT) !== 0 || ev.reply.dst !== ev.orig.src;
    if (!translated || mark === 0 || !this.own.has(ev.reply.dst)) {
      this.counts.ignored++;
      return;
    }
    const nowMs = this.now();
    const started = this.live.get(ev.id);
    const policy = started?.policy ?? this.policies.get(mark) ?? `mark 0x${mark.toString(16)}`;
    const startMs =
      started?.startedMs ?? (ev.startNs !== undefined ? Number(ev.startNs / 1_000_000n) : nowMs);
    const base: AuditRecord = {
      time: "",
      event: ev.type === "new" ? "start" : "end",
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
    let endMs = startMs;
    if (ev.type === "new") {
      const pod = this.opts.podAt?.(ev.orig.src);
      if (pod) base.pod = pod;
      base.time = new Date(startMs).toISOString();
      this.live.set(ev.id, { policy, pod, startedMs: startMs });
      this.counts.starts++;
    } else {
      endMs = ev.stopNs !== undefined ? Number(ev.stopNs / 1_000_000n) : nowMs;
      if (started?.pod) base.pod = started.pod;
      this.live.delete(ev.id);
      base.time = new Date(endMs).toISOString();
      base.started = new Date(startMs).toISOString();
      base.packetsOut = Number(ev.origCounters?.packets ?? 0n);
      base.bytesOut = Number(ev.origCounters?.bytes ?? 0n);
      base.packetsIn = Number(ev.replyCounters?.packets ?? 0n);
      base.bytesIn = Number(ev.replyCounters?.bytes ?? 0n);
      this.counts.ends++;
    }
    if (this.out) this.write(formatRecord(base) + "\n");
    if (this.ipfix) {
      this.pending.push({
        family: ev.family,
        event: ev.type === "new" ? "create" : "delete",
        observedMs: ev.type === "new" ? startMs : endMs,
        startMs,
        endMs,
        src: addressBytes(ev.orig.src),
        sport: ev.orig.sport,
        postSrc: addressBytes(ev.reply.dst),
        postSport: ev.reply.dport,
        dst: addressBytes(ev.orig.dst),
        dport: ev.orig.dport,
        proto: ev.orig.proto,
        bytesOut: ev.origCounters?.bytes ?? 0n,
        packetsOut: ev.origCounters?.packets ?? 0n,
        bytesIn: ev.replyCounters?.bytes ?? 0n,
        packetsIn: ev.replyCounters?.packets ?? 0n,
      });
      if (this.pending.length >= 64) this.flushIpfix();
      else this.flushTimer ??= setTimeout(() => this.flushIpfix(), A.ipfixFlushMs);
    }
  }

  private write(line: string): void {
    try {
      this.out!.write(line);
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
        "the kernel dropped conntrack events (socket buffer full): the audit trail misses records",
      );
    }
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
      x.socket.send(msg, x.port, x.host, (e) => {
        if (e) this.counts.ipfixErrors++;
      });
    }
  }

  /** Closes the socket, sends what waits, and closes the outputs. */
  async stop(): Promise<void> {
    this.events?.close();
    this.events = undefined;
    if (this.templateTimer) clearInterval(this.templateTimer);
    this.templateTimer = undefined;
    if (this.ipfix) {
      this.flushIpfix();
      const socket = this.ipfix.socket;
      this.ipfix = undefined;
      await new Promise<void>((resolve) => socket.close(() => resolve()));
    }
    const out = this.out;
    this.out = undefined;
    if (out && out !== (this.opts.stdout ?? process.stdout))
      await new Promise<void>((resolve) => out.end(() => resolve()));
  }
}
