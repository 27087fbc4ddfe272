// Runs gobgpd as egressd's child ("managed mode").
//
// - The gRPC API listens on a unix socket (gobgpd accepts "unix://PATH" in
//   --api-hosts) or on a loopback address; never on all addresses.
// - pprof is off; there is no config file: everything goes through gRPC.
// - gobgpd dies with egressd and is restarted with backoff if it exits on its
//   own (lib/supervised.ts); "started" is emitted each time, and the client's
//   "ready" tells when to re-apply state.
// - Sidecar mode needs none of this: just point GobgpClient at the address.
import { mkdirSync, rmSync } from "node:fs";
import { dirname } from "node:path";
import { Supervised, type SupervisedEvents, type SupervisedExit } from "../lib/supervised.js";

export interface GobgpdProcessOptions {
  /** Unix socket path for the API (preferred). */
  socketPath?: string;
  /** Or a loopback host:port, e.g. "127.0.0.1:50051". */
  apiHost?: string;
  /** gobgpd binary (default "gobgpd" from PATH). */
  binary?: string;
  /** Start gobgpd inside this network namespace (ip netns exec). */
  netns?: string;
  /** gobgpd log level (default "info"). */
  logLevel?: "debug" | "info" | "warn" | "error";
  /** Restart backoff bounds (default 200 ms .. 10 s); reset after 30 s of uptime. */
  restartMinMs?: number;
  restartMaxMs?: number;
  /** Lines of gobgpd output kept for error messages (default 50). */
  keepLogLines?: number;
}

export type GobgpdExit = SupervisedExit;
export type GobgpdProcessEvents = SupervisedEvents;

export class GobgpdProcess extends Supervised {
  /** The gRPC target GobgpClient should use. */
  readonly target: string;
  private readonly gobgpd: GobgpdProcessOptions;

  constructor(opts: GobgpdProcessOptions) {
    if (!!opts.socketPath === !!opts.apiHost) {
      throw new Error("GobgpdProcess: give exactly one of socketPath and apiHost");
    }
    if (opts.socketPath && Buffer.byteLength(opts.socketPath) > 100) {
      throw new Error(
        `GobgpdProcess: socket path ${opts.socketPath} is too long for a unix socket (max ~107 bytes)`,
      );
    }
    if (opts.apiHost && !/^(127\.\d+\.\d+\.\d+|\[::1\]|localhost):\d+$/.test(opts.apiHost)) {
      throw new Error(
        `GobgpdProcess: apiHost ${opts.apiHost} is not a loopback address (gobgpd's API has no auth)`,
      );
    }
    super({
      name: "gobgpd",
      argv: () => this.argv(),
      beforeStart: () => {
        if (!opts.socketPath) return;
        // gobgpd cannot bind over a socket file left by a killed predecessor.
        mkdirSync(dirname(opts.socketPath), { recursive: true, mode: 0o700 });
        rmSync(opts.socketPath, { force: true });
      },
      ...(opts.restartMinMs !== undefined ? { restartMinMs: opts.restartMinMs } : {}),
      ...(opts.restartMaxMs !== undefined ? { restartMaxMs: opts.restartMaxMs } : {}),
      ...(opts.keepLogLines !== undefined ? { keepLogLines: opts.keepLogLines } : {}),
    });
    this.gobgpd = opts;
    this.target = opts.socketPath ? `unix://${opts.socketPath}` : (opts.apiHost as string);
  }

  /** The argv that runs gobgpd (inside the namespace, with the parent-death signal). */
  argv(): string[] {
    const o = this.gobgpd;
    const gobgpd = [
      o.binary ?? "gobgpd",
      "--api-hosts",
      this.target,
      "--pprof-disable",
      "--log-level",
      o.logLevel ?? "info",
    ];
    const withDeathSig = ["setpriv", "--pdeathsig", "KILL", "--", ...gobgpd];
    return o.netns ? ["ip", "netns", "exec", o.netns, ...withDeathSig] : withDeathSig;
  }

  /** Stops gobgpd (SIGTERM, then SIGKILL after graceMs) and does not restart it. */
  override async stop(graceMs = 3000): Promise<void> {
    await super.stop(graceMs);
    if (this.gobgpd.socketPath) rmSync(this.gobgpd.socketPath, { force: true });
  }
}
