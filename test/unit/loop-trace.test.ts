import test from "ava";
import { describeTurn, loopTurns, mergeSummaries, ownMs, summarize } from "../../lib/loop-trace.js";

const TID = 4200;
const EPOLL = [232, 281, 441];

// Lines as tracefs prints them (text format), for thread 4200 ("node").
const sw = (t: number, prev: number, state: string, next: number) =>
  `            node-${prev}    [001] d..2.  ${t.toFixed(6)}: sched_switch: prev_comm=node prev_pid=${prev} prev_prio=120 prev_state=${state} ==> next_comm=x y next_pid=${next} next_prio=120`;
const exit = (t: number, nr = 281) =>
  `            node-${TID}    [000] .....  ${t.toFixed(6)}: sys_exit: NR ${nr} = 1`;
const enter = (t: number, nr = 281) =>
  `            node-${TID}    [000] .....  ${t.toFixed(6)}: sys_enter: NR ${nr} (e, 7ffc983d9d80, 400, 0, 0, 8)`;

test("a turn is cut at the polls and split into on a CPU, waiting for one and asleep", (t) => {
  const text = [
    "# tracer: nop",
    "# entries-in-buffer/entries-written: 9/9   #P:2",
    exit(100.0), // the poll returns: the turn starts, on a CPU
    sw(100.004, TID, "R+", 77), // preempted after 4 ms
    sw(100.01, 77, "S", TID), // back after 6 ms of waiting
    sw(100.012, TID, "S", 0), // a futex: asleep 2 ms, then woken by thread 4203 and waiting 1 ms for a CPU
    `            node-4203    [000] d..2.  100.014000: sched_waking: comm=node pid=${TID} prio=120 target_cpu=001`,
    sw(100.015, 0, "I", TID),
    enter(100.02), // 5 more ms on a CPU, then the next poll
    sw(100.02, TID, "S", 0), // asleep in the poll: not a turn's
    sw(100.5, 0, "I", TID),
    exit(100.5),
    enter(100.501, 232),
  ].join("\n");
  const turns = loopTurns(text, TID, EPOLL);
  t.is(turns.length, 2);
  const [a, b] = turns;
  t.is(a!.at, 100.0);
  t.true(Math.abs(a!.wallMs - 20) < 1e-6);
  t.true(Math.abs(a!.onCpuMs - 11) < 1e-6);
  t.true(Math.abs(a!.waitMs - 7) < 1e-6);
  t.true(Math.abs(a!.asleepMs - 2) < 1e-6);
  t.true(Math.abs(a!.longestSleepMs - 2) < 1e-6);
  t.is(a!.wokenBy, 4203);
  t.false(a!.cut);
  t.true(Math.abs(ownMs(a!) - 13) < 1e-6);
  t.regex(
    describeTurn(a!),
    /^20\.0 ms \(on a CPU 11\.0, waiting for one 7\.0, asleep 2\.0; its longest sleep 2\.0 ms, woken by thread 4203\)$/,
  );
  t.true(Math.abs(b!.wallMs - 1) < 1e-6);
  t.true(Math.abs(b!.onCpuMs - 1) < 1e-6);
});

test("a turn begun before the trace is not counted; one still running at its end is, cut", (t) => {
  const text = [
    sw(5.0, 11, "S", TID), // the thread is running, in a turn whose start was not seen
    enter(5.03), // its end: ignored
    exit(5.1),
    sw(5.11, TID, "R", 9), // preempted, and the trace ends while it waits
    sw(5.14, 9, "R", 12), // someone else's switch: the last event
  ].join("\n");
  const turns = loopTurns(text, TID, EPOLL);
  t.is(turns.length, 1);
  t.true(turns[0]!.cut);
  t.true(Math.abs(turns[0]!.wallMs - 40) < 1e-6);
  t.true(Math.abs(turns[0]!.onCpuMs - 10) < 1e-6);
  t.true(Math.abs(turns[0]!.waitMs - 30) < 1e-6);
});

test("other threads' syscalls, other syscalls and lines that are not events are ignored", (t) => {
  const text = [
    "#           TASK-PID     CPU#  |||||  TIMESTAMP  FUNCTION",
    exit(1.0),
    `            node-4201    [000] .....  1.001000: sys_enter: NR 281 (e, 0, 400, 0, 0, 8)`, // another thread
    `            node-${TID}    [000] .....  1.002000: sys_enter: NR 0 (e, 0, 400, 0, 0, 8)`, // read(): not a poll
    "garbage",
    enter(1.003),
  ].join("\n");
  const turns = loopTurns(text, TID, EPOLL);
  t.is(turns.length, 1);
  t.true(Math.abs(turns[0]!.wallMs - 3) < 1e-6);
});

test("summarize picks the longest turn and the one with the most of egressd's own time", (t) => {
  const turn = (wallMs: number, onCpuMs: number, waitMs: number, asleepMs: number) => ({
    at: 0,
    wallMs,
    onCpuMs,
    waitMs,
    asleepMs,
    longestSleepMs: asleepMs,
    wokenBy: undefined,
    cut: false,
  });
  const s = summarize([turn(40, 5, 35, 0), turn(25, 18, 0, 6), turn(3, 3, 0, 0)], 2);
  t.is(s.turns, 3);
  t.is(s.longest!.wallMs, 40);
  t.is(s.mostOwn!.wallMs, 25);
  t.is(s.mostOnCpuMs, 18);
  t.is(s.lost, 2);
  t.deepEqual(summarize([]), { turns: 0, longest: undefined, mostOwn: undefined, mostOnCpuMs: 0, lost: 0 });
  // Two windows merged are the summary of all their turns.
  const a = [turn(40, 5, 35, 0), turn(3, 3, 0, 0)];
  const b = [turn(25, 18, 0, 6), turn(41, 1, 40, 0)];
  t.deepEqual(mergeSummaries(summarize(a, 1), summarize(b, 2)), summarize([...a, ...b], 3));
});
