// Who holds which address of an egress IP group: each address is a
// coordination.k8s.io/v1 Lease, and a gateway uses an address only while its
// lease is its own. This is the decision part, without I/O: a driver lists
// the group's leases, feeds them to observe(), sends the requests step()
// returns, and reports their outcome to done(). Tests drive it with a
// simulated API server, clocks and partitions.
//
// Never two owners. Clocks are never compared across machines; each gateway
// measures durations on its own clock:
// - A holder may use an address until the send time of its last write that
//   the API server confirmed, plus the lease's duration, minus a margin
//   (useUntil). A write that timed out proves nothing and extends nothing.
// - Another gateway may take a lease over only once it has seen the same
//   version of it for a whole duration (takeable), and only by a write
//   conditioned on that version (the API server refuses it with 409 Conflict
//   if the holder renewed in between).
// The holder's last confirmed write was applied after it was sent, so it was
// seen after that, and a takeover is sent a duration after that: the new
// holder starts at least `marginMs` after the old one stopped. The margin
// covers the time the old holder needs to take the address out of its data
// plane and the rate difference of the two clocks.
//
// Sharing: each live gateway of the group (one whose presence lease, renewed
// like an address's, is fresh) wants its fair share, the pool divided by the
// live gateways and rounded up, of each family. It claims free addresses (no
// lease, no holder, or takeable) in an order that differs per gateway
// (rendezvous hashing), so that gateways starting together seldom race for
// the same one. It never gives up an address to rebalance, except one at a
// time to a live gateway that holds none of that family while no address is
// free: connections through an address break when it moves.
import { isIP } from "node:net";

export interface ClaimTiming {
  /** A lease's duration: how long others wait, on their clocks, after its last change. */
  durationMs: number;
  /** How often a holder renews. */
  renewMs: number;
  /** How long before others may take over the holder stops using an address. */
  marginMs: number;
}

/** 15 s leases renewed every 2 s: a holder cut off from the API server stops 10 s after its last renewal. */
export const DEFAULT_TIMING: ClaimTiming = { durationMs: 15_000, renewMs: 2_000, marginMs: 5_000 };

/** A lease as listed: `key` is an address (canonical) or PRESENCE + a gateway's name. */
export interface LeaseRecord {
  key: string;
  holder: string | undefined;
  version: string;
  durationMs: number;
}

/** Omit over each member of a union. */
type Without<T, K extends PropertyKey> = T extends unknown ? Omit<T, K> : never;

export type LeaseRequest =
  | { id: number; key: string; op: "create"; holder: string; durationMs: number }
  | { id: number; key: string; op: "update"; version: string; holder: string; durationMs: number }
  | { id: number; key: string; op: "delete"; version: string };

/** A request's outcome: applied (with the new version), refused by its precondition, or not known (timeout, error). */
export type LeaseResult =
  | { outcome: "ok"; version: string }
  | { outcome: "conflict" }
  | { outcome: "unknown" };

/** The key of a gateway's presence lease in its group. */
export const PRESENCE = "gateway/";

/** The time until which the holder may use what it last confirmed writing at `sentAt`. */
export const useUntil = (sentAt: number, t: ClaimTiming) => sentAt + t.durationMs - t.marginMs;

export const familyOf = (address: string): 4 | 6 => (isIP(address) === 6 ? 6 : 4);

/** FNV-1a, 32 bits: a gateway's preference order over addresses (rendezvous hashing). */
function score(gateway: string, address: string): number {
  let h = 0x811c9dc5;
  for (const c of `${gateway}|${address}`) {
    h ^= c.charCodeAt(0);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h;
}

/** A timing that cannot keep the promise is refused. */
export function checkTiming(t: ClaimTiming): string[] {
  const errors: string[] = [];
  if (!(t.renewMs > 0)) errors.push("renewMs must be above 0");
  if (!(t.marginMs > 0)) errors.push("marginMs must be above 0");
  if (!(t.durationMs - t.marginMs >= 2 * t.renewMs))
    errors.push("durationMs - marginMs must leave room for two renewals (2 x renewMs)");
  return errors;
}

interface Seen {
  rec: LeaseRecord;
  /** Our clock when we first saw this version. */
  at: number;
}

interface Held {
  version: string;
  /** Our clock when we sent the write that the API server confirmed. */
  sentAt: number;
  /** Our clock when its confirmation came. */
  confirmedAt: number;
  /**
   * When a write conditioned on `version` was refused: the version is not the
   * lease's any more (another's write, or ours whose answer was lost). Until
   * a list asked for after that says which, nothing is sent for it; the
   * deadline stands either way.
   */
  staleSince?: number;
}

export class Claimer {
  private readonly seen = new Map<string, Seen>();
  private readonly held = new Map<string, Held>();
  private readonly inflight = new Map<string, { id: number; sentAt: number }>();
  private readonly releasing = new Set<string>();
  private pool: string[] = [];
  private eligible = false;
  private draining = false;
  private nextId = 1;

  constructor(
    readonly self: string,
    readonly timing: ClaimTiming = DEFAULT_TIMING,
  ) {
    const errors = checkTiming(timing);
    if (errors.length) throw new Error(`lease timing: ${errors.join("; ")}`);
  }

  /** The group's pool (canonical addresses) and whether this gateway serves the group. */
  setGroup(pool: readonly string[], eligible: boolean): void {
    this.pool = [...new Set(pool)];
    this.eligible = eligible;
  }

  /** Stop claiming, and give every address back once the data plane no longer uses it. */
  drain(): void {
    this.draining = true;
  }

  /**
   * A complete list of the group's leases, received `now`; `requestedAt`: when
   * the list was asked for. What it says about our own leases counts only if
   * it was asked for after our last confirmed write to them: an older list
   * would take back what we since confirmed.
   */
  observe(list: readonly LeaseRecord[], now: number, requestedAt = now): void {
    const present = new Set<string>();
    for (const rec of list) {
      present.add(rec.key);
      const old = this.seen.get(rec.key);
      if (old?.rec.version !== rec.version) this.seen.set(rec.key, { rec, at: now });
      else old.rec = rec;
      const h = this.held.get(rec.key);
      if (!h || requestedAt < Math.max(h.confirmedAt, h.staleSince ?? -Infinity)) continue;
      // Someone else's now: we lost it. Ours at another version: a renewal of
      // ours whose answer we never got. Its send time is unknown, so the
      // deadline stays where the last confirmed one put it; the version is
      // what the next renewal must name.
      if (rec.holder === this.self) {
        h.version = rec.version;
        delete h.staleSince;
      } else this.held.delete(rec.key);
    }
    for (const key of [...this.seen.keys()]) if (!present.has(key)) this.seen.delete(key);
    // Deleted since we confirmed it (by an administrator): nothing to renew.
    for (const [key, h] of [...this.held])
      if (!present.has(key) && requestedAt >= Math.max(h.confirmedAt, h.staleSince ?? -Infinity))
        this.held.delete(key);
  }

  /** Whether `key`'s lease may be claimed by us now. */
  private free(key: string, now: number): boolean {
    const s = this.seen.get(key);
    if (!s || !s.rec.holder) return true;
    if (s.rec.holder === this.self) return true;
    return now - s.at >= s.rec.durationMs;
  }

  /** The gateways of the group that are alive now, as their presence leases say (and us, if we serve it). */
  live(now: number): Set<string> {
    const out = new Set<string>();
    for (const [key, s] of this.seen)
      if (key.startsWith(PRESENCE) && s.rec.holder && now - s.at < s.rec.durationMs)
        out.add(key.slice(PRESENCE.length));
    if (this.eligible && !this.draining) out.add(this.self);
    else out.delete(this.self);
    return out;
  }

  /** The earliest time an address now in use stops being usable; undefined when none is in use. */
  usableUntil(): number | undefined {
    let t: number | undefined;
    for (const [key, h] of this.held)
      if (!key.startsWith(PRESENCE)) t = Math.min(t ?? Infinity, useUntil(h.sentAt, this.timing));
    return t;
  }

  /** True once every lease this gateway held is given back (or lost). */
  holdsNothing(): boolean {
    return this.held.size === 0;
  }

  /** The addresses this gateway may have in its data plane now. */
  using(now: number): Set<string> {
    const out = new Set<string>();
    if (!this.eligible || this.draining) return out;
    for (const [key, h] of this.held)
      if (
        !key.startsWith(PRESENCE) &&
        !this.releasing.has(key) &&
        this.pool.includes(key) &&
        now < useUntil(h.sentAt, this.timing)
      )
        out.add(key);
    return out;
  }

  /** When using() can next shrink, or a renewal falls due: the driver's next wake-up (at most renewMs away). */
  nextWake(now: number): number {
    let t = now + this.timing.renewMs;
    for (const h of this.held.values())
      for (const due of [h.sentAt + this.timing.renewMs, useUntil(h.sentAt, this.timing)])
        if (due > now) t = Math.min(t, due);
    return t;
  }

  /**
   * The requests to send now. `programmed`: the addresses the data plane has
   * in force; an address being given back is deleted only once it is not.
   */
  step(now: number, programmed: ReadonlySet<string>): LeaseRequest[] {
    const out: LeaseRequest[] = [];
    const busy = (key: string) => this.inflight.has(key);
    const send = (r: Without<LeaseRequest, "id">): void => {
      const req = { ...r, id: this.nextId++ } as LeaseRequest;
      this.inflight.set(r.key, { id: req.id, sentAt: now });
      out.push(req);
    };
    const d = this.timing.durationMs;
    const presence = PRESENCE + this.self;
    const serving = this.eligible && !this.draining;
    // Presence, then renewals of what we hold.
    if (serving && !this.held.has(presence) && !busy(presence)) this.claim(presence, now, send);
    for (const [key, h] of this.held) {
      if (busy(key) || h.staleSince !== undefined) continue;
      const gone =
        key === presence ? !serving : !serving || !this.pool.includes(key) || this.releasing.has(key);
      if (gone) {
        this.releasing.add(key);
        if (!programmed.has(key)) send({ key, op: "delete", version: h.version });
      } else if (now - h.sentAt >= this.timing.renewMs)
        send({ key, op: "update", version: h.version, holder: this.self, durationMs: d });
    }
    if (!serving || !this.held.has(presence)) return out;
    // Claims: up to the fair share of each family.
    const live = this.live(now);
    for (const family of [4, 6] as const) {
      const pool = this.pool.filter((a) => familyOf(a) === family);
      if (pool.length === 0) continue;
      const share = Math.ceil(pool.length / Math.max(1, live.size));
      const mine = pool.filter((a) => this.held.has(a) && !this.releasing.has(a));
      const pending = pool.filter((a) => !this.held.has(a) && busy(a)).length;
      const candidates = pool
        .filter((a) => !this.held.has(a) && !busy(a) && this.free(a, now))
        .sort((a, b) => score(this.self, b) - score(this.self, a));
      for (const a of candidates.slice(0, Math.max(0, share - mine.length - pending)))
        this.claim(a, now, send);
      if (candidates.length === 0 && mine.length >= 2) this.giveOneBack(pool, mine, live);
    }
    return out;
  }

  /** With no address free, the gateway holding the most gives one to a live gateway that holds none. */
  private giveOneBack(pool: string[], mine: string[], live: Set<string>): void {
    const count = new Map<string, number>([...live].map((g) => [g, 0]));
    for (const a of pool) {
      const holder = this.held.has(a) ? this.self : this.seen.get(a)?.rec.holder;
      if (holder !== undefined && count.has(holder)) count.set(holder, count.get(holder)! + 1);
    }
    if (![...count.values()].includes(0)) return;
    const most = Math.max(...count.values());
    const first = [...count].filter(([, n]) => n === most).sort(([a], [b]) => (a < b ? -1 : 1))[0]![0];
    if (first !== this.self) return;
    const least = [...mine].sort((a, b) => score(this.self, a) - score(this.self, b))[0]!;
    this.releasing.add(least);
  }

  private claim(key: string, now: number, send: (r: Without<LeaseRequest, "id">) => void): void {
    const s = this.seen.get(key);
    const d = this.timing.durationMs;
    if (!s) send({ key, op: "create", holder: this.self, durationMs: d });
    else if (this.free(key, now))
      send({ key, op: "update", version: s.rec.version, holder: this.self, durationMs: d });
  }

  /** A request's outcome, `now` being when it came. */
  done(req: LeaseRequest, result: LeaseResult, now: number): void {
    const f = this.inflight.get(req.key);
    if (f?.id !== req.id) return;
    this.inflight.delete(req.key);
    if (result.outcome === "unknown") return;
    if (result.outcome === "conflict") {
      const h = this.held.get(req.key);
      if (h && req.op !== "create") h.staleSince = now;
      return;
    }
    if (req.op === "delete") {
      this.held.delete(req.key);
      this.releasing.delete(req.key);
      this.seen.delete(req.key);
      return;
    }
    this.held.set(req.key, { version: result.version, sentAt: f.sentAt, confirmedAt: now });
    this.seen.set(req.key, {
      rec: { key: req.key, holder: this.self, version: result.version, durationMs: req.durationMs },
      at: now,
    });
  }
}
