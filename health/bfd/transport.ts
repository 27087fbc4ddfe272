// UDP transport for single-hop BFD (RFC 5881) over node:dgram, IPv4 and IPv6.
//
// - Receiving: one socket per local address, bound to <local>:3784.
// - Sending: one socket per session, bound to <local>:<port in 49152-65535>
//   (the same source port for the whole life of the session, unique per session),
//   connected to <peer>:3784, with TTL / hop limit 255 (setTTL sets IP_TTL on IPv4
//   sockets and IPV6_UNICAST_HOPS on IPv6 ones).
//
// Limitation: Node cannot read the TTL / hop limit of a received datagram
// (no IP_RECVTTL / IPV6_RECVHOPLIMIT ancillary data) nor set IP_MINTTL, so the
// GTSM check of RFC 5881 section 5 (discard packets whose TTL is not 255) is not
// done here. Packets are accepted from the configured peer address only, which
// an off-link attacker can still spoof; see docs/bfd.md for an nftables rule that
// restores the check in the kernel.
//
// Link-local IPv6 addresses take their scope as "fe80::1%eth0".
import dgram from "node:dgram";
import { isIPv6 } from "node:net";
import { BFD_CONTROL_PORT } from "./packet.js";
import type { OffloadedActivity } from "./session.js";

export const SOURCE_PORT_MIN = 49152;
export const SOURCE_PORT_MAX = 65535;

/** What a transport that reads the kernel's receive time knows about a packet. */
export interface RxMeta {
  /** Clock time (ms) the kernel received it. */
  at: number;
  /** The packet's name for OffloadControl.accepted(). */
  token: bigint;
}

export type PacketHandler = (msg: Buffer, fromAddress: string, fromPort: number, meta?: RxMeta) => void;

export interface Listener {
  close(): void;
}

export interface TxChannel {
  readonly localPort: number;
  send(packet: Buffer): void;
  close(): void;
  /** Present when the transport can run the session's periodic half (health/bfd/offload.ts). */
  readonly offload?: OffloadControl;
}

/** The periodic half of a session, run by the transport (SessionOptions.offloaded). */
export interface OffloadControl {
  /** Send `packet` every intervalUs less jitter; null stops. */
  program(p: { packet: Buffer; intervalUs: number; mult1: boolean; reschedule: boolean } | null): void;
  /**
   * The session accepted the packet named `token`: its detection deadline is
   * that packet's time plus detectUs (0: none), and packets equal to `steady`
   * only move that deadline, without being passed on.
   */
  accepted(token: bigint, detectUs: number, steady: Buffer | null): void;
  /** The detection time changed. */
  detection(detectUs: number): void;
}

/** What an offloading transport tells a session's owner (BfdTransport.connect). */
export interface OffloadHooks {
  /** No packet for the detection time since the one named lastRx (a token, as in RxMeta). */
  expired(lastRx: bigint): void;
  /** Steady packets received and periodic packets sent since the last call (about once a second). */
  activity(a: OffloadedActivity): void;
}

export interface TransportStats {
  txErrors: number;
  rxErrors: number;
  /** Packets dropped for a TTL / hop limit other than 255 (a transport that can read it). */
  ttlDrops?: number;
  /** Helper processes started (a transport with one). */
  spawns?: number;
}

/** What the manager needs from the network; unit tests substitute an in-memory one. */
export interface BfdTransport {
  /** Receives control packets sent to local:3784. */
  listen(local: string, onPacket: PacketHandler): Promise<Listener>;
  /** Opens the sending side of one session, local -> peer:3784. */
  connect(local: string, peer: string, hooks?: OffloadHooks): Promise<TxChannel>;
  readonly stats: TransportStats;
  /** Releases what the transport holds beyond its sockets (a helper process). */
  close?(): void;
}

export interface UdpTransportOptions {
  /** Destination port (default 3784; tests may change it). */
  port?: number;
  /** Source port range (default 49152-65535, as RFC 5881 requires). */
  sourcePorts?: [number, number];
  /** Called on socket errors that are not per-packet (optional). */
  onError?: (err: Error) => void;
}

function family(address: string): "udp4" | "udp6" {
  return isIPv6(address.split("%")[0] ?? address) ? "udp6" : "udp4";
}

function bindSocket(sock: dgram.Socket, address: string, port: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const onError = (err: Error) => {
      sock.off("listening", onListening);
      reject(err);
    };
    const onListening = () => {
      sock.off("error", onError);
      resolve();
    };
    sock.once("error", onError);
    sock.once("listening", onListening);
    sock.bind({ address, port, exclusive: true });
  });
}

function connectSocket(sock: dgram.Socket, port: number, address: string): Promise<void> {
  return new Promise((resolve, reject) => {
    sock.connect(port, address, (err?: Error) => (err ? reject(err) : resolve()));
  });
}

export class UdpTransport implements BfdTransport {
  readonly stats: TransportStats = { txErrors: 0, rxErrors: 0 };
  private readonly port: number;
  private readonly sourcePorts: [number, number];

  constructor(private readonly opts: UdpTransportOptions = {}) {
    this.port = opts.port ?? BFD_CONTROL_PORT;
    this.sourcePorts = opts.sourcePorts ?? [SOURCE_PORT_MIN, SOURCE_PORT_MAX];
  }

  async listen(local: string, onPacket: PacketHandler): Promise<Listener> {
    const sock = dgram.createSocket({ type: family(local) });
    try {
      await bindSocket(sock, local, this.port);
    } catch (e) {
      sock.close();
      throw new Error(`BFD: cannot listen on [${local}]:${this.port}: ${(e as Error).message}`, { cause: e });
    }
    sock.on("error", (err) => {
      this.stats.rxErrors++;
      this.opts.onError?.(err);
    });
    sock.on("message", (msg, rinfo) => onPacket(msg, rinfo.address, rinfo.port));
    return { close: () => sock.close() };
  }

  async connect(local: string, peer: string): Promise<TxChannel> {
    const [lo, hi] = this.sourcePorts;
    let lastErr: unknown;
    for (let attempt = 0; attempt < 32; attempt++) {
      const port = lo + Math.floor(Math.random() * (hi - lo + 1));
      const sock = dgram.createSocket({ type: family(local) });
      try {
        await bindSocket(sock, local, port);
      } catch (e) {
        sock.close();
        lastErr = e;
        if ((e as NodeJS.ErrnoException).code === "EADDRINUSE") continue;
        break;
      }
      try {
        sock.setTTL(255);
        await connectSocket(sock, this.port, peer);
      } catch (e) {
        sock.close();
        throw new Error(
          `BFD: cannot connect [${local}]:${port} -> [${peer}]:${this.port}: ${(e as Error).message}`,
          {
            cause: e,
          },
        );
      }
      // ICMP errors (peer's bfdd not running) surface as ECONNREFUSED on a connected socket.
      sock.on("error", () => this.stats.txErrors++);
      // Nothing is expected on the sending socket; read and drop whatever arrives.
      sock.on("message", () => {});
      const stats = this.stats;
      const onSent = (err: Error | null) => {
        if (err) stats.txErrors++;
      };
      return {
        localPort: port,
        send: (packet: Buffer) => {
          try {
            sock.send(packet, onSent);
          } catch {
            stats.txErrors++; // socket closed under us: never let a send throw into the scheduler
          }
        },
        close: () => {
          try {
            sock.close();
          } catch {
            // already closed
          }
        },
      };
    }
    throw new Error(
      `BFD: no free source port on [${local}]: ${(lastErr as Error | undefined)?.message ?? "?"}`,
    );
  }
}
