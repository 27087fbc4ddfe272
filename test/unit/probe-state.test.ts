// The probe state machine, driven by a fake clock.
import test from "ava";
import {
  ProbeStateMachine,
  penaltyCeiling,
  validateStateConfig,
  type DampingConfig,
  type StateConfig,
  type StateTransition,
} from "../../core/probe-state.js";

const OK = { ok: true };
const FAIL = { ok: false, reason: "timeout" };

/** Feeds results at a fixed interval, calling tick() at each deadline in between. */
class Driver {
  now = 0;
  readonly transitions: StateTransition[] = [];
  readonly sm: ProbeStateMachine;
  constructor(
    cfg: StateConfig,
    readonly intervalMs = 100,
  ) {
    this.sm = new ProbeStateMachine(cfg, 0);
  }
  /** Advances to `t`, firing the state machine's deadlines on the way. */
  advance(t: number): void {
    for (;;) {
      const d = this.sm.nextDeadline();
      if (d === null || d > t) break;
      this.now = Math.max(this.now, d);
      const tr = this.sm.tick(this.now);
      if (tr) this.transitions.push(tr);
      else break;
    }
    this.now = t;
  }
  feed(ok: boolean, n = 1): void {
    for (let i = 0; i < n; i++) {
      this.advance(this.now + this.intervalMs);
      const tr = this.sm.observe(ok ? OK : FAIL, this.now);
      if (tr) this.transitions.push(tr);
    }
  }
  path(): string {
    return this.transitions.map((t) => `${t.from}>${t.to}`).join(" ");
  }
  ups(): number {
    return this.transitions.filter((t) => t.to === "up").length;
  }
}

const base: StateConfig = { rise: 3, fall: 3, holdDownMs: 0, damping: null };

test("starts unknown, goes up after exactly rise successes", (t) => {
  const d = new Driver(base);
  t.is(d.sm.state, "unknown");
  d.feed(true, 2);
  t.is(d.sm.state, "unknown");
  d.feed(true);
  t.is(d.sm.state, "up");
  t.is(d.path(), "unknown>up");
});

test("goes down on exactly the fall-th consecutive failure, and says why", (t) => {
  const d = new Driver(base);
  d.feed(true, 3);
  d.feed(false, 2);
  t.is(d.sm.state, "up");
  const tr = d.sm.observe(FAIL, (d.now += 100));
  t.truthy(tr);
  t.is(tr!.from, "up");
  t.is(tr!.to, "down");
  t.regex(tr!.reason, /fall 3\/3.*timeout/);
});

test("a success resets the failure run (fall counts consecutive failures only)", (t) => {
  const d = new Driver(base);
  d.feed(true, 3);
  for (let i = 0; i < 20; i++) {
    d.feed(false, 2);
    d.feed(true);
  }
  t.is(d.sm.state, "up");
  t.is(d.path(), "unknown>up");
});

test("unknown goes down after fall failures without a flap penalty", (t) => {
  const d = new Driver({ ...base, damping: dampingCfg });
  d.feed(false, 3);
  t.is(d.path(), "unknown>down");
  t.is(d.sm.penalty(d.now), 0);
  t.is(d.sm.snapshot(d.now).flaps, 0);
});

test("without hold-down, recovery goes straight up after rise successes", (t) => {
  const d = new Driver(base);
  d.feed(true, 3);
  d.feed(false, 3);
  d.feed(true, 2);
  t.is(d.sm.state, "down");
  d.feed(true);
  t.is(d.path(), "unknown>up up>down down>up");
});

test("hold-down: recovered probe is held, then up exactly when hold-down ends", (t) => {
  const d = new Driver({ ...base, holdDownMs: 1000 });
  d.feed(true, 3);
  d.feed(false, 3);
  d.feed(true, 3);
  t.is(d.sm.state, "held");
  const heldAt = d.now;
  t.is(d.sm.nextDeadline(), heldAt + 1000);
  t.regex(d.sm.snapshot(d.now).reason, /hold-down 1000 ms/);
  t.is(d.sm.tick(heldAt + 999), null);
  const tr = d.sm.tick(heldAt + 1000);
  t.is(tr?.to, "up");
  t.is(d.sm.nextDeadline(), null);
});

test("hold-down: failures while held send it back down and restart the hold-down", (t) => {
  const d = new Driver({ ...base, holdDownMs: 1000 });
  d.feed(true, 3);
  d.feed(false, 3);
  d.feed(true, 3);
  d.feed(false, 2); // fewer than fall: still held
  t.is(d.sm.state, "held");
  d.feed(false);
  t.is(d.sm.state, "down");
  d.feed(true, 3);
  const heldAt = d.now;
  t.is(d.sm.state, "held");
  t.is(d.sm.nextDeadline(), heldAt + 1000);
  d.advance(heldAt + 1000);
  t.is(d.sm.state, "up");
  t.is(d.path(), "unknown>up up>down down>held held>down down>held held>up");
});

test("the first up (from unknown) needs no hold-down", (t) => {
  const d = new Driver({ ...base, holdDownMs: 60_000 });
  d.feed(true, 3);
  t.is(d.sm.state, "up");
});

test("a probe that starts failing is held after its first recovery", (t) => {
  const d = new Driver({ ...base, holdDownMs: 500 });
  d.feed(false, 3);
  d.feed(true, 3);
  t.is(d.sm.state, "held");
  d.advance(d.now + 500);
  t.is(d.sm.state, "up");
});

const dampingCfg: DampingConfig = {
  halfLifeMs: 10_000,
  penalty: 1000,
  suppressAbove: 2000,
  reuseBelow: 750,
  maxSuppressMs: 40_000,
};

test("damping: penalty per up->down, decays with the half-life", (t) => {
  const d = new Driver({ ...base, damping: dampingCfg });
  d.feed(true, 3);
  d.feed(false, 3);
  const at = d.now;
  t.is(d.sm.penalty(at), 1000);
  t.true(Math.abs(d.sm.penalty(at + 10_000) - 500) < 1e-9);
  t.true(Math.abs(d.sm.penalty(at + 20_000) - 250) < 1e-9);
  t.false(d.sm.snapshot(at).suppressed);
});

test("damping: suppressed above the threshold, held until the penalty is below reuse", (t) => {
  const d = new Driver({ ...base, holdDownMs: 0, damping: dampingCfg });
  d.feed(true, 3);
  // Three quick flaps: 1000, then ~1990, then ~2960 > 2000 -> suppressed.
  for (let i = 0; i < 3; i++) {
    d.feed(false, 3);
    d.feed(true, 3);
  }
  t.is(d.ups(), 3, "the first up and two re-ups before suppression");
  t.is(d.sm.state, "held");
  const snap = d.sm.snapshot(d.now);
  t.true(snap.suppressed);
  t.true(snap.penalty > 2000);
  t.regex(snap.reason, /suppressed by damping/);
  // Reuse when penalty decays to 750: halfLife * log2(p/750) after the last flap.
  const lastDown = d.transitions.filter((x) => x.to === "down").at(-1)!;
  const expected = lastDown.at + dampingCfg.halfLifeMs * Math.log2(lastDown.penalty / 750);
  t.true(Math.abs(d.sm.nextDeadline()! - expected) < 1e-6);
  // Stays healthy: no up before the reuse time, up right at it.
  t.is(d.sm.tick(expected - 1), null);
  t.is(d.sm.tick(expected)?.to, "up");
  t.false(d.sm.snapshot(expected).suppressed);
  t.true(d.sm.penalty(expected) <= 750 + 1e-6);
});

test("damping: hold-down and reuse both apply; the later one wins", (t) => {
  const d = new Driver({ ...base, holdDownMs: 60_000, damping: dampingCfg });
  d.feed(true, 3);
  d.feed(false, 3);
  d.feed(true, 3);
  t.is(d.sm.state, "held");
  t.false(d.sm.snapshot(d.now).suppressed);
  t.is(d.sm.nextDeadline(), d.now + 60_000);
});

test("damping: max suppress time caps suppression after the last flap", (t) => {
  const d = new Driver({ ...base, holdDownMs: 0, damping: dampingCfg }, 10);
  d.feed(true, 3);
  // 200 flaps in quick succession pile up penalty, capped at the ceiling.
  for (let i = 0; i < 200; i++) {
    d.feed(false, 3);
    d.feed(true, 3);
  }
  const ceiling = penaltyCeiling(dampingCfg);
  t.is(ceiling, 750 * 16);
  const lastDown = d.transitions.filter((x) => x.to === "down").at(-1)!;
  t.true(lastDown.penalty <= ceiling + 1e-6);
  t.true(lastDown.suppressed);
  const deadline = d.sm.nextDeadline()!;
  t.true(deadline - lastDown.at <= dampingCfg.maxSuppressMs + 1e-6, `${deadline - lastDown.at}`);
  t.true(deadline - lastDown.at > dampingCfg.maxSuppressMs - 1000);
  d.advance(lastDown.at + dampingCfg.maxSuppressMs + 1);
  t.is(d.sm.state, "up");
});

test("damping: a slow flapper (well apart) is never suppressed", (t) => {
  const d = new Driver({ ...base, holdDownMs: 1000, damping: dampingCfg });
  d.feed(true, 3);
  for (let i = 0; i < 10; i++) {
    d.feed(false, 3);
    d.feed(true, 3);
    d.advance(d.now + 60_000); // 6 half-lives apart
  }
  t.is(d.ups(), 11);
  t.is(d.transitions.filter((x) => x.suppressed).length, 0);
});

/**
 * A target that flaps forever: `upFor` ms reachable, `downFor` ms unreachable.
 * Returns the up transitions seen in `windowMs`.
 */
function flapping(cfg: StateConfig, upFor: number, downFor: number, windowMs: number, interval = 100) {
  const d = new Driver(cfg, interval);
  while (d.now < windowMs) {
    const phase = d.now % (upFor + downFor);
    d.feed(phase < upFor);
  }
  return d;
}

test("flapping target: hold-down alone prevents any re-up when it never stays up long enough", (t) => {
  // Up 1 s, down 1 s, hold-down 2 s: recoveries never outlast the hold-down.
  const d = flapping({ ...base, holdDownMs: 2000 }, 1000, 1000, 10 * 60_000);
  t.is(d.ups(), 1); // the initial one
  t.not(d.sm.state, "up");
});

test("flapping target: damping bounds the up transitions (the number of BGP updates)", (t) => {
  // Defaults of the prober: half-life 30 s, penalty 1000, suppress 2000,
  // reuse 750, max suppress 120 s; hold-down 5 s. Target up 6 s / down 1 s:
  // each recovery outlasts the hold-down, so without damping it re-ups every 7 s.
  const damping: DampingConfig = {
    halfLifeMs: 30_000,
    penalty: 1000,
    suppressAbove: 2000,
    reuseBelow: 750,
    maxSuppressMs: 120_000,
  };
  const windowMs = 10 * 60_000;
  const undamped = flapping({ ...base, holdDownMs: 5000 }, 6000, 1000, windowMs);
  const damped = flapping({ ...base, holdDownMs: 5000, damping }, 6000, 1000, windowMs);
  t.log(`10 min of a 6 s up / 1 s down flapper: ${undamped.ups()} ups undamped, ${damped.ups()} damped`);
  t.true(undamped.ups() >= 80);
  // Bound: the first up, then re-ups only until the penalty first exceeds
  // suppressAbove (at most ceil(suppressAbove / penalty) flaps). Each further
  // flap adds to the penalty (held -> down too), so while the target keeps
  // flapping faster than the penalty decays it is never reused.
  const bound = 1 + Math.ceil(damping.suppressAbove / damping.penalty);
  t.log(`bound ${bound}`);
  t.true(damped.ups() <= bound, `${damped.ups()} > ${bound}`);
  t.true(damped.ups() < undamped.ups() / 3);
  // Every up comes after a down; nothing goes up while suppressed.
  for (const tr of damped.transitions) if (tr.to === "up") t.false(tr.suppressed);
});

test("flapping target: once it stops flapping, it is up within maxSuppress + hold-down", (t) => {
  const damping = { ...dampingCfg };
  const d = flapping({ ...base, holdDownMs: 2000, damping }, 3000, 500, 5 * 60_000);
  t.is(d.sm.state, "held");
  t.true(d.sm.snapshot(d.now).suppressed);
  const stop = d.now;
  // Healthy from now on.
  while (d.now < stop + damping.maxSuppressMs + 2000 + 500) d.feed(true);
  t.is(d.sm.state, "up");
  const up = d.transitions.at(-1)!;
  t.log(`up ${Math.round(up.at - stop)} ms after the flapping stopped`);
  t.true(up.at - stop <= damping.maxSuppressMs + 2000 + 200);
});

test("transitions alternate consistently (from = previous to)", (t) => {
  const d = flapping({ ...base, holdDownMs: 300, damping: dampingCfg }, 700, 400, 120_000);
  let prev: string = "unknown";
  for (const tr of d.transitions) {
    t.is(tr.from as string, prev);
    t.not(tr.from, tr.to);
    prev = tr.to;
  }
});

test("config validation", (t) => {
  t.deepEqual(validateStateConfig(base), []);
  t.true(validateStateConfig({ ...base, rise: 0 }).length > 0);
  t.true(validateStateConfig({ ...base, fall: 1.5 }).length > 0);
  t.true(validateStateConfig({ ...base, holdDownMs: -1 }).length > 0);
  t.true(validateStateConfig({ ...base, damping: { ...dampingCfg, reuseBelow: 3000 } }).length > 0);
  t.throws(() => new ProbeStateMachine({ ...base, fall: 0 }, 0));
});
