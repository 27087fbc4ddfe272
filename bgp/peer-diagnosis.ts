// Why a BGP peer does not come up, in words an operator can act on. gobgpd
// only reports that a session is Idle or Active; egressd asks the network the
// same question gobgpd's connect does (a TCP connect to the peer's port 179
// from the session's local address) and names the answer.
import { connect } from "node:net";

export type PeerProblem = "refused" | "no route" | "timed out" | "reset" | "reachable" | string;

/** One TCP connect attempt to address:port; the outcome as a short phrase. */
export function diagnoseConnect(
  address: string,
  opts: { port?: number; localAddress?: string; timeoutMs?: number } = {},
): Promise<PeerProblem> {
  return new Promise((resolve) => {
    const sock = connect({
      host: address,
      port: opts.port ?? 179,
      ...(opts.localAddress ? { localAddress: opts.localAddress } : {}),
    });
    const done = (what: PeerProblem) => {
      sock.destroy();
      resolve(what);
    };
    sock.setTimeout(opts.timeoutMs ?? 2000, () => done("timed out"));
    sock.once("connect", () => done("reachable"));
    sock.once("error", (e: NodeJS.ErrnoException) => done(ERRNO_WORDS[e.code ?? ""] ?? e.code ?? e.message));
  });
}

const ERRNO_WORDS: Record<string, PeerProblem> = {
  ECONNREFUSED: "refused",
  EHOSTUNREACH: "no route",
  ENETUNREACH: "no route",
  ETIMEDOUT: "timed out",
  ECONNRESET: "reset",
  EADDRNOTAVAIL: "local address not configured",
};

/**
 * When to say it again: first after `firstMs` down, then at doubling
 * intervals up to `maxMs`, so a peer that never comes up is reported, and
 * reported on, without flooding the log.
 */
export class ReportBackoff {
  private next = new Map<string, { at: number; gap: number }>();
  constructor(
    private readonly firstMs = 10_000,
    private readonly maxMs = 300_000,
  ) {}

  /** Whether `key`, down since `downSince`, is due a report at `now`; schedules the next one if so. */
  due(key: string, downSince: number, now: number): boolean {
    const n = this.next.get(key);
    if (!n) {
      if (now - downSince < this.firstMs) return false;
      this.next.set(key, { at: now + this.firstMs * 2, gap: this.firstMs * 2 });
      return true;
    }
    if (now < n.at) return false;
    const gap = Math.min(n.gap * 2, this.maxMs);
    this.next.set(key, { at: now + gap, gap });
    return true;
  }

  /** The peer came up (or went away): start over. */
  reset(key: string): void {
    this.next.delete(key);
  }
}
