// CPU steal as an excuse for a probe window (health/steal.ts): read from
// /proc/stat's text, measured over the window from samples taken on
// activity, excusing a window only when a large share of the machine was
// stolen, and never more than MAX_STEAL_EXCUSES results of a probe in a row.
// The counter and the clock are injected: nothing here depends on the
// machine's own steal or speed.
import test from "ava";
import {
  MAX_STEAL_EXCUSES,
  SAMPLE_GAP_MS,
  STEAL_FRACTION,
  StealClock,
  StealExcuses,
  parseProcStat,
  type StealCounter,
} from "../../health/steal.js";
import { checkProbe } from "../../health/probes/check.js";
import { allStolen } from "../helpers/steal.js";

const PROC_STAT = `cpu  1000 20 300 90000 50 0 40 237 0 0
cpu0 500 10 150 45000 25 0 20 120 0 0
cpu1 500 10 150 45000 25 0 20 117 0 0
intr 123456 0 0
ctxt 999
btime 1700000000
`;

test("parseProcStat: steal of all CPUs in ms, and the number of CPUs", (t) => {
  t.deepEqual(parseProcStat(PROC_STAT), { stolenMs: 2370, cpus: 2 });
  t.is(parseProcStat("cpu  1 2 3 4\ncpu0 1 2 3 4\n"), null, "a kernel without the steal column");
  t.is(parseProcStat("intr 1 2 3\n"), null);
  t.is(parseProcStat(""), null);
});

/** A machine of `cpus` CPUs whose steal and clock the test moves. */
function machine(cpus = 2) {
  const m = { now: 0, stolenMs: 0, reads: 0 };
  const clock = new StealClock(
    (): StealCounter => {
      m.reads++;
      return { stolenMs: m.stolenMs, cpus };
    },
    () => m.now,
  );
  return { m, clock };
}

test("samples are taken on activity at most every SAMPLE_GAP_MS", (t) => {
  const { m, clock } = machine();
  for (let i = 0; i < 1000; i++) {
    m.now = i; // an event every ms for a second
    clock.note();
  }
  t.is(m.reads, Math.ceil(1000 / SAMPLE_GAP_MS));
});

test("steal is measured from the last sample before the window began", (t) => {
  const { m, clock } = machine();
  m.now = 1000;
  clock.note(); // 0 stolen at 1000
  m.now = 1150;
  m.stolenMs = 30;
  clock.note(); // 30 at 1150: the last activity before a quiet window
  m.now = 1400; // the window [1200, 1400] ends, with 200 more stolen
  m.stolenMs = 230;
  const r = clock.over(200);
  t.deepEqual(r, { stolenMs: 200, spanMs: 250, cpus: 2 });
});

test("with no sample as old as the window, the oldest one is the base; with none at all, no reading", (t) => {
  t.is(machine().clock.over(200), null, "nothing to compare with");
  const { m, clock } = machine();
  m.now = 500;
  m.stolenMs = 10;
  clock.note();
  m.now = 560;
  m.stolenMs = 50;
  t.deepEqual(clock.over(200), { stolenMs: 40, spanMs: 60, cpus: 2 });
});

test("a window is excused only when STEAL_FRACTION of the machine's CPU time in it was stolen", (t) => {
  const { m, clock } = machine(2);
  m.now = 0;
  clock.note();
  m.now = 200;
  // 2 CPUs x 200 ms = 400 ms of CPU time; the bar is STEAL_FRACTION of it.
  const bar = STEAL_FRACTION * 400;
  m.stolenMs = bar - 10;
  t.is(clock.excuse(200), null);
  const { m: m2, clock: c2 } = machine(2);
  m2.now = 0;
  c2.note();
  m2.now = 200;
  m2.stolenMs = bar;
  t.is(c2.excuse(200), `the hypervisor stole ${bar} ms of 2 CPUs' 200 ms (CPU steal)`);
});

test("a clock without steal (not a VM, or unreadable) never excuses", (t) => {
  const clock = new StealClock(() => null);
  clock.note();
  t.is(clock.excuse(100), null);
});

test("a probe is excused at most MAX_STEAL_EXCUSES times in a row; a success starts the count again", (t) => {
  const { m, clock } = machine(1);
  const ex = new StealExcuses(clock);
  const stolenWindow = () => {
    ex.note();
    m.now += 100;
    m.stolenMs += 100; // the whole machine, the whole window
    return ex.excuse(100);
  };
  for (let i = 0; i < MAX_STEAL_EXCUSES; i++) t.truthy(stolenWindow(), `excuse ${i + 1}`);
  t.is(stolenWindow(), null, "a hypervisor that keeps the machine does not hide a failure");
  t.is(stolenWindow(), null, "a failure does not start the count again");
  ex.succeeded();
  t.truthy(stolenWindow());
});

test("a check that times out while the machine was stolen is inconclusive", async (t) => {
  const r = await checkProbe(
    () => new Promise<boolean>(() => {}),
    () => 0,
    allStolen(),
  ).run(20);
  t.true(r.inconclusive, JSON.stringify(r));
  t.regex(
    r.reason!,
    /^check timed out after 20 ms: no verdict, the hypervisor stole \d+ ms of 1 CPUs' \d+ ms/,
  );
});
