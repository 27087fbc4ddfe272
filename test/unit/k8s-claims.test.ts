// The Lease claims of an egress IP group (core/k8s/claims.ts): unit cases,
// and a simulation of gateways and an API server over a network that delays,
// loses and partitions, with clocks that run at slightly different rates.
// The property: no address is ever in two gateways' data planes at once.
import test from "ava";
import fc from "fast-check";
import {
  checkTiming,
  Claimer,
  DEFAULT_TIMING,
  PRESENCE,
  useUntil,
  type LeaseRecord,
  type LeaseRequest,
  type LeaseResult,
} from "../../core/k8s/claims.js";

const T = DEFAULT_TIMING;

/** An API server's lease store: versions, and writes conditioned on them. */
class Store {
  private version = 0;
  readonly leases = new Map<string, LeaseRecord>();
  apply(r: LeaseRequest): LeaseResult {
    const cur = this.leases.get(r.key);
    if (r.op === "create") {
      if (cur) return { outcome: "conflict" };
    } else if (!cur || cur.version !== r.version) return { outcome: "conflict" };
    if (r.op === "delete") {
      this.leases.delete(r.key);
      return { outcome: "ok", version: "" };
    }
    const version = String(++this.version);
    this.leases.set(r.key, { key: r.key, holder: r.holder, version, durationMs: r.durationMs });
    return { outcome: "ok", version };
  }
  list(): LeaseRecord[] {
    return [...this.leases.values()].map((l) => ({ ...l }));
  }
}

test("the timing must leave the holder time to renew and to stop", (t) => {
  t.deepEqual(checkTiming(T), []);
  t.deepEqual(checkTiming({ durationMs: 10_000, renewMs: 3_000, marginMs: 5_000 }), [
    "durationMs - marginMs must leave room for two renewals (2 x renewMs)",
  ]);
  t.throws(() => new Claimer("a", { durationMs: 1000, renewMs: 0, marginMs: 0 }), { message: /renewMs/ });
});

test("a gateway announces itself, then claims its share; it uses an address only after the API confirmed it", (t) => {
  const api = new Store();
  const c = new Claimer("gw-a1");
  c.setGroup(["192.0.2.11", "192.0.2.12"], true);
  const run = (now: number) => {
    for (const r of c.step(now, new Set())) c.done(r, api.apply(r), now);
    c.observe(api.list(), now);
  };
  run(0);
  t.deepEqual([...api.leases.keys()], [PRESENCE + "gw-a1"], "presence first");
  t.deepEqual(c.using(0), new Set());
  run(10);
  t.deepEqual(c.using(10), new Set(["192.0.2.11", "192.0.2.12"]), "alone: the whole pool is its share");
  // Cut off from the API: renewals go unanswered, and it stops at its last confirmed write + duration - margin.
  const req = c.step(T.renewMs + 10, new Set());
  t.true(req.length === 3 && req.every((r) => r.op === "update"));
  for (const r of req) c.done(r, { outcome: "unknown" }, T.renewMs + 20);
  t.is(c.using(useUntil(10, T) - 1).size, 2);
  t.is(c.using(useUntil(10, T)).size, 0);
  t.true(c.nextWake(T.renewMs + 20) <= useUntil(10, T));
});

test("a second gateway waits a whole duration before taking a lease nobody renews, and then gets its share", (t) => {
  const api = new Store();
  const a = new Claimer("gw-a1");
  const b = new Claimer("gw-a2");
  for (const c of [a, b]) c.setGroup(["192.0.2.11", "192.0.2.12"], true);
  const turn = (c: Claimer, now: number) => {
    for (const r of c.step(now, new Set())) c.done(r, api.apply(r), now);
    c.observe(api.list(), now);
  };
  turn(a, 0);
  turn(a, 10);
  t.is(a.using(10).size, 2);
  // b arrives: a holds both, renewing; b sees a live peer and no free address.
  for (let now = 20; now < 10_000; now += 1000) {
    turn(a, now);
    turn(b, now);
  }
  t.is(b.using(10_000).size, 1, "a gave one back to the live gateway that had none");
  t.is(a.using(10_000).size, 1);
  // a dies (stops renewing): b takes its address a duration after it last saw it change.
  const died = 10_000;
  for (let now = died; now < died + T.durationMs + 3000; now += 500) turn(b, now);
  t.is(b.using(died + T.durationMs + 3000).size, 2);
});

test("drain: addresses leave the data plane first, then their leases are deleted", (t) => {
  const api = new Store();
  const c = new Claimer("gw-a1");
  c.setGroup(["192.0.2.11"], true);
  for (const now of [0, 10]) {
    for (const r of c.step(now, new Set())) c.done(r, api.apply(r), now);
    c.observe(api.list(), now);
  }
  t.is(c.using(20).size, 1);
  c.drain();
  t.is(c.using(20).size, 0, "out of the data plane at once");
  const still = c.step(20, new Set(["192.0.2.11"]));
  t.deepEqual(
    still.map((r) => `${r.op} ${r.key}`),
    [`delete ${PRESENCE}gw-a1`],
    "not deleted while programmed",
  );
  for (const r of still) c.done(r, api.apply(r), 20);
  for (const r of c.step(30, new Set())) c.done(r, api.apply(r), 30);
  t.deepEqual([...api.leases.keys()], []);
});

// --- the simulation

/** A small deterministic generator (mulberry32). */
function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let x = Math.imul(s ^ (s >>> 15), 1 | s);
    x = (x + Math.imul(x ^ (x >>> 7), 61 | x)) ^ x;
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296;
  };
}

interface SimGateway {
  name: string;
  claimer: Claimer;
  rate: number;
  offset: number;
  /** What the data plane has, from when. */
  programmed: Set<string>;
  /** What the data plane was last asked to have, and when that is done. */
  requested: Set<string>;
  pending: Set<string>[];
  applyAt: number;
  partitions: [number, number][];
}

interface Scenario {
  seed: number;
  gateways: number;
  pool: number;
  partitions: { gw: number; start: number; length: number }[];
  drainAt?: { gw: number; at: number };
  /** Slow answers (5 % take 0.5 to 3.5 s, past the 2 s timeout) until then; default: the whole run. */
  slowUntil?: number;
}

/**
 * Runs `seconds` of real time. Each gateway wakes when its claimer asks
 * (nextWake: renewals and deadlines) and every second, and its data plane
 * takes up to `programMs` for each change using() asks for. Returns the
 * violations (an address in two data planes at once) and who holds what at
 * the end.
 */
function simulate(s: Scenario, seconds: number) {
  const random = rng(s.seed);
  const api = new Store();
  const pool = Array.from({ length: s.pool }, (_, i) => `192.0.2.${10 + i}`);
  const programMs = 800;
  const timeoutMs = T.renewMs;
  const gws: SimGateway[] = Array.from({ length: s.gateways }, (_, i) => {
    const c = new Claimer(`gw-${i}`);
    c.setGroup(pool, true);
    return {
      name: `gw-${i}`,
      claimer: c,
      rate: 1 + (random() - 0.5) * 2e-3, // clocks 0.1 % apart
      offset: Math.floor(random() * 1e9),
      programmed: new Set<string>(),
      requested: new Set<string>(),
      pending: [],
      applyAt: 0,
      partitions: s.partitions.filter((p) => p.gw === i).map((p) => [p.start, p.start + p.length]),
    };
  });
  type Ev = { at: number; seq: number; run: () => void };
  // A binary heap by time, then by order of scheduling.
  const queue: Ev[] = [];
  let seq = 0;
  const before = (a: Ev, b: Ev) => a.at < b.at || (a.at === b.at && a.seq < b.seq);
  const at = (time: number, run: () => void) => {
    queue.push({ at: time, seq: seq++, run });
    for (let i = queue.length - 1; i > 0; ) {
      const p = (i - 1) >> 1;
      if (!before(queue[i]!, queue[p]!)) break;
      [queue[i], queue[p]] = [queue[p]!, queue[i]!];
      i = p;
    }
  };
  const pop = (): Ev => {
    const top = queue[0]!;
    const last = queue.pop()!;
    if (queue.length) {
      queue[0] = last;
      for (let i = 0; ; ) {
        const l = 2 * i + 1;
        const r = l + 1;
        let m = i;
        if (l < queue.length && before(queue[l]!, queue[m]!)) m = l;
        if (r < queue.length && before(queue[r]!, queue[m]!)) m = r;
        if (m === i) break;
        [queue[i], queue[m]] = [queue[m]!, queue[i]!];
        i = m;
      }
    }
    return top;
  };
  const local = (g: SimGateway, real: number) => g.offset + real * g.rate;
  const cut = (g: SimGateway, real: number) => g.partitions.some(([a, b]) => real >= a && real < b);
  const delay = (real: number) =>
    real < (s.slowUntil ?? Infinity) && random() < 0.05 ? 500 + random() * 3000 : random() * 50;
  const violations: string[] = [];
  const holders = new Map<string, Set<string>>();
  const program = (g: SimGateway, want: Set<string>) => {
    for (const a of g.programmed) if (!want.has(a)) holders.get(a)!.delete(g.name);
    for (const a of want)
      if (!g.programmed.has(a)) {
        const others = [...(holders.get(a) ?? [])].filter((x) => x !== g.name);
        if (others.length) violations.push(`${a}: ${g.name} while ${others.join(",")}`);
        holders.set(a, (holders.get(a) ?? new Set()).add(g.name));
      }
    g.programmed = new Set(want);
  };
  const wake = (g: SimGateway, real: number) => {
    const now = local(g, real);
    const c = g.claimer;
    // The data plane applies what using() says now, in order, each change taking up to programMs.
    const want = c.using(now);
    if (want.size !== g.requested.size || [...want].some((a) => !g.requested.has(a))) {
      g.requested = want;
      g.applyAt = Math.max(g.applyAt, real) + random() * programMs;
      g.pending.push(want);
      at(g.applyAt, () => {
        g.pending.shift();
        program(g, want);
      });
    }
    // What the data plane has or will have once the changes asked for are done.
    const inUse = new Set([...g.programmed, ...g.pending.flatMap((p) => [...p])]);
    for (const r of c.step(now, inUse)) {
      const there = delay(real);
      const back = delay(real);
      const lost = cut(g, real) || cut(g, real + there);
      if (!lost)
        at(real + there, () => {
          const result = api.apply(r);
          if (there + back < timeoutMs && !cut(g, real + there + back))
            at(real + there + back, () => c.done(r, result, local(g, real + there + back)));
        });
      at(real + timeoutMs, () => c.done(r, { outcome: "unknown" }, local(g, real + timeoutMs)));
    }
    // A list every second (a watch would be faster; a list is enough for safety).
    if (!cut(g, real)) {
      const there = delay(real);
      const back = delay(real);
      at(real + there, () => {
        const snapshot = api.list();
        if (!cut(g, real + there + back))
          at(real + there + back, () => c.observe(snapshot, local(g, real + there + back), now));
      });
    }
    const next = Math.min((c.nextWake(now) - now) / g.rate, 1000);
    at(real + Math.max(1, next), () => wake(g, real + Math.max(1, next)));
  };
  for (const g of gws) at(random() * 1000, () => wake(g, 0));
  if (s.drainAt) {
    const g = gws[s.drainAt.gw % gws.length]!;
    at(s.drainAt.at, () => g.claimer.drain());
  }
  const end = seconds * 1000;
  while (queue.length) {
    const ev = pop();
    if (ev.at > end) break;
    ev.run();
  }
  const held = new Map([...holders].filter(([, set]) => set.size > 0).map(([a, set]) => [a, [...set]]));
  return { violations, held, gws };
}

test("simulation: with delays, lost requests, partitions and drifting clocks, no address is ever in two data planes", (t) => {
  const scenario = fc.record({
    seed: fc.integer(),
    gateways: fc.integer({ min: 2, max: 4 }),
    pool: fc.integer({ min: 1, max: 4 }),
    partitions: fc.array(
      fc.record({
        gw: fc.integer({ min: 0, max: 3 }),
        start: fc.integer({ min: 0, max: 100_000 }),
        length: fc.integer({ min: 500, max: 40_000 }),
      }),
      { maxLength: 6 },
    ),
    drainAt: fc.option(
      fc.record({ gw: fc.integer({ min: 0, max: 3 }), at: fc.integer({ min: 0, max: 120_000 }) }),
      {
        nil: undefined,
      },
    ),
  });
  let runs = 0;
  fc.assert(
    fc.property(scenario, (s) => {
      runs++;
      const { violations } = simulate(s, 180);
      return violations.length === 0;
    }),
    { numRuns: 600 },
  );
  t.log(`${runs} runs of 180 s`);
  t.pass();
});

test("simulation: once the faults end (partitions, slow answers), every address is held, one per gateway", (t) => {
  for (let seed = 1; seed <= 20; seed++) {
    const s: Scenario = {
      seed,
      gateways: 3,
      pool: 3,
      partitions: [
        { gw: seed % 3, start: 20_000, length: 30_000 },
        { gw: (seed + 1) % 3, start: 40_000, length: 10_000 },
      ],
      slowUntil: 50_000,
    };
    const { violations, held, gws } = simulate(s, 150);
    if (held.size !== 3)
      for (const g of gws) {
        const c = g.claimer as unknown as Record<string, Map<string, unknown> | Set<string>>;
        t.log(
          seed,
          g.name,
          [...g.programmed],
          [...g.requested],
          JSON.stringify([...c.held!]),
          [...c.releasing!],
          JSON.stringify([...(c.seen as Map<string, unknown>)]),
          [...c.inflight!],
        );
      }
    t.deepEqual(violations, [], `seed ${seed}`);
    t.is(held.size, 3, `seed ${seed}: every address is held`);
    const owners = [...held.values()].map((h) => h.join(","));
    t.is(new Set(owners).size, 3, `seed ${seed}: one each (${owners.join(" ")})`);
  }
});
