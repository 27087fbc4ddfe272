// The event loop's turns, from the kernel: how long egressd's main thread ran
// between two polls, and how much of that it was on a CPU, waiting for one,
// or asleep.
//
// The loop-delay histogram (prom-client's, from node) says how late a timer
// ran, not why: a delay can be egressd's own work, or the thread runnable with
// both cores taken by something else (the data-plane process, V8's helpers,
// the kernel, FRR, the bench). The main thread's schedstat tells the wait of a
// whole window, not of one delay. This reads the scheduler's tracepoints
// instead, for the main thread only, and cuts its time at the loop's polls
// (libuv enters epoll when it has nothing to run): a "turn" is the time from a
// poll's return to the next poll, which is what a due timer can be kept
// waiting by. Within it, on a CPU is egressd's work; waiting for one is the
// machine's; asleep (a futex or a synchronous read: a collection waiting for
// V8's helpers, for example) is egressd's own blocking.
//
// tracefs, an instance of its own (its events, filters and buffer are private
// to it, so other users of tracing are not disturbed), with four events
// filtered in the kernel to the thread: sched_switch, sched_waking (who woke
// it from a sleep), and raw_syscalls enter/exit of the epoll waits. Written
// by hand: what exists (perf sched, trace-cmd) is not in a minimal Debian and
// reports switches, not the loop's turns.
import { existsSync, mkdirSync, readFileSync, readdirSync, rmdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";

/** One turn of the loop: from a poll's return to the next poll (ms). */
export interface LoopTurn {
  /** Trace timestamp of the poll's return (s, the trace clock). */
  at: number;
  wallMs: number;
  onCpuMs: number;
  /** Runnable, preempted or not yet scheduled: the machine's share. */
  waitMs: number;
  /** Sleeping outside a poll (futex, synchronous I/O): the thread's own blocking. */
  asleepMs: number;
  /** The longest of those sleeps, and the thread that woke it (undefined when not seen). */
  longestSleepMs: number;
  wokenBy: number | undefined;
  /** The trace ended before the turn did: measured to its last event. */
  cut: boolean;
}

/** The epoll waits libuv may use, by architecture (epoll_wait, epoll_pwait, epoll_pwait2). */
export const EPOLL_SYSCALLS: Readonly<Record<string, readonly number[]>> = {
  x64: [232, 281, 441],
  arm64: [22, 441],
};

const LINE =
  /^\s*.*?-(\d+)\s+\[\d+\]\s+\S+\s+(\d+\.\d+): (sched_switch|sched_waking|sys_enter|sys_exit): (.*)$/;
const WAKING = / pid=(\d+) /;
const SWITCH = /prev_pid=(\d+) prev_prio=\d+ prev_state=(\S+) ==> .*next_pid=(\d+) next_prio=/;
const NR = /^NR (\d+)/;

/**
 * The turns of thread `tid` in a tracefs text trace of sched_switch,
 * sched_waking and the epoll waits' sys_enter/sys_exit. A turn that had
 * begun before the trace did is not counted (its start is unknown); one
 * still running at the end is, up to the last event, marked `cut`.
 */
export function loopTurns(text: string, tid: number, epoll: readonly number[]): LoopTurn[] {
  const turns: LoopTurn[] = [];
  type Cpu = "on" | "wait" | "asleep";
  let cpu: Cpu | undefined;
  let since = 0;
  let last = 0;
  let turn:
    | { at: number; on: number; wait: number; asleep: number; longest: number; by?: number }
    | undefined;
  // Who woke the thread from its current sleep.
  let waker: number | undefined;
  // Time since the last event goes to the state the thread was in.
  const account = (t: number, next: Cpu) => {
    if (turn && cpu) turn[cpu] += t - since;
    if (turn && cpu === "asleep" && next !== "asleep" && t - since > turn.longest) {
      turn.longest = t - since;
      turn.by = waker;
    }
    if (next === "asleep") waker = undefined;
    cpu = next;
    since = t;
  };
  const end = (t: number, cut: boolean) => {
    if (!turn) return;
    turns.push({
      at: turn.at,
      wallMs: (t - turn.at) * 1000,
      onCpuMs: turn.on * 1000,
      waitMs: turn.wait * 1000,
      asleepMs: turn.asleep * 1000,
      longestSleepMs: turn.longest * 1000,
      wokenBy: turn.by,
      cut,
    });
    turn = undefined;
  };
  for (const line of text.split("\n")) {
    const m = LINE.exec(line);
    if (!m) continue;
    const pid = Number(m[1]);
    const t = Number(m[2]);
    last = t;
    const body = m[4]!;
    if (m[3] === "sched_waking") {
      // Woken: runnable from here, waiting for a CPU until it is switched in.
      if (Number(WAKING.exec(body)?.[1]) === tid && cpu === "asleep") {
        waker = pid;
        account(t, "wait");
      }
      continue;
    }
    if (m[3] === "sched_switch") {
      const s = SWITCH.exec(body);
      if (!s) continue;
      if (Number(s[1]) === tid) account(t, s[2]!.startsWith("R") ? "wait" : "asleep");
      else if (Number(s[3]) === tid) account(t, "on");
      continue;
    }
    if (pid !== tid) continue;
    const nr = NR.exec(body);
    if (!nr || !epoll.includes(Number(nr[1]))) continue;
    // The thread wrote this event, so it is on a CPU now.
    account(t, "on");
    if (m[3] === "sys_exit") turn = { at: t, on: 0, wait: 0, asleep: 0, longest: 0 };
    else end(t, false);
  }
  if (turn) {
    account(last, cpu ?? "on");
    end(last, true);
  }
  return turns;
}

/**
 * What a window's turns come to: how many, the longest, the one with the most
 * of egressd's own time, and the most time on a CPU in one turn (ms).
 */
export interface TurnSummary {
  turns: number;
  longest: LoopTurn | undefined;
  mostOwn: LoopTurn | undefined;
  mostOnCpuMs: number;
  /** Events the buffer dropped: a summary of an incomplete trace. */
  lost: number;
}

export const ownMs = (t: LoopTurn) => t.onCpuMs + t.asleepMs;

const longer = (a: LoopTurn | undefined, b: LoopTurn | undefined) =>
  !a || (b && b.wallMs > a.wallMs) ? b : a;
const moreOwn = (a: LoopTurn | undefined, b: LoopTurn | undefined) =>
  !a || (b && ownMs(b) > ownMs(a)) ? b : a;

/** Two windows' summaries as one (the first keeps a tie). */
export function mergeSummaries(a: TurnSummary, b: TurnSummary): TurnSummary {
  return {
    turns: a.turns + b.turns,
    longest: longer(a.longest, b.longest),
    mostOwn: moreOwn(a.mostOwn, b.mostOwn),
    mostOnCpuMs: Math.max(a.mostOnCpuMs, b.mostOnCpuMs),
    lost: a.lost + b.lost,
  };
}

export const NO_TURNS: TurnSummary = {
  turns: 0,
  longest: undefined,
  mostOwn: undefined,
  mostOnCpuMs: 0,
  lost: 0,
};

export function summarize(turns: readonly LoopTurn[], lost = 0): TurnSummary {
  return turns.reduce(
    (s, t) => mergeSummaries(s, { turns: 1, longest: t, mostOwn: t, mostOnCpuMs: t.onCpuMs, lost: 0 }),
    { ...NO_TURNS, lost },
  );
}

const f1 = (ms: number) => ms.toFixed(1);
/**
 * "31.2 ms (on a CPU 12.0, waiting for one 19.0, asleep 0.2)", and the
 * longest sleep's waker when it is 1 ms or more, named by `who`.
 */
export function describeTurn(t: LoopTurn, who: (tid: number) => string = (tid) => `thread ${tid}`): string {
  const sleep =
    t.longestSleepMs >= 1
      ? `; its longest sleep ${f1(t.longestSleepMs)} ms, woken by ${t.wokenBy === undefined ? "an unseen thread" : who(t.wokenBy)}`
      : "";
  return `${f1(t.wallMs)} ms (on a CPU ${f1(t.onCpuMs)}, waiting for one ${f1(t.waitMs)}, asleep ${f1(t.asleepMs)}${sleep}${t.cut ? ", cut by the trace's end" : ""})`;
}

/** Where tracefs is mounted (the caller mounts it when it is not: `mount -t tracefs nodev TRACEFS`). */
export const TRACEFS = "/sys/kernel/tracing";
const PREFIX = "egressd-loop-";

/**
 * A tracefs instance that records one thread's switches and epoll waits.
 * open() returns a reason instead when tracing cannot be used here (tracefs
 * not mounted, no permission, an architecture without a known epoll number).
 */
export class LoopTrace {
  private constructor(
    private readonly dir: string,
    private readonly tid: number,
    private readonly epoll: readonly number[],
  ) {}

  static async open(tid: number, bufferKbPerCpu = 16384): Promise<LoopTrace | string> {
    const epoll = EPOLL_SYSCALLS[process.arch];
    if (!epoll) return `no epoll syscall numbers for ${process.arch}`;
    if (!existsSync(join(TRACEFS, "instances"))) return `tracefs is not mounted at ${TRACEFS}`;
    removeStale();
    const dir = join(TRACEFS, "instances", `${PREFIX}${process.pid}-${tid}`);
    try {
      mkdirSync(dir);
      const trace = new LoopTrace(dir, tid, epoll);
      trace.write("tracing_on", "0");
      trace.write("buffer_size_kb", String(bufferKbPerCpu));
      const waits = `common_pid == ${tid} && (${epoll.map((n) => `id == ${n}`).join(" || ")})`;
      trace.write("events/raw_syscalls/sys_enter/filter", waits);
      trace.write("events/raw_syscalls/sys_exit/filter", waits);
      trace.write("events/sched/sched_switch/filter", `prev_pid == ${tid} || next_pid == ${tid}`);
      trace.write("events/sched/sched_waking/filter", `pid == ${tid}`);
      for (const e of [
        "raw_syscalls/sys_enter",
        "raw_syscalls/sys_exit",
        "sched/sched_switch",
        "sched/sched_waking",
      ])
        trace.write(`events/${e}/enable`, "1");
      trace.restart();
      return trace;
    } catch (e) {
      try {
        rmdirSync(dir);
      } catch {
        // never made
      }
      return `could not set up a trace instance: ${(e as Error).message}`;
    }
  }

  private write(file: string, value: string): void {
    writeFileSync(join(this.dir, file), value);
  }

  /** Empties the buffer and records from now. */
  restart(): void {
    this.write("trace", "");
    this.write("tracing_on", "1");
  }

  /** The turns since the last take (or open), and records on from now. */
  take(): TurnSummary {
    this.write("tracing_on", "0");
    const text = readFileSync(join(this.dir, "trace"), "utf8");
    this.restart();
    // "# entries-in-buffer/entries-written: 4120/4120   #P:2": fewer in the buffer than written is an overrun.
    const m = /entries-in-buffer\/entries-written: (\d+)\/(\d+)/.exec(text);
    const lost = m ? Number(m[2]) - Number(m[1]) : 0;
    return summarize(loopTurns(text, this.tid, this.epoll), lost);
  }

  close(): void {
    try {
      this.write("tracing_on", "0");
      this.write("events/enable", "0");
    } catch {
      // already gone
    }
    try {
      rmdirSync(this.dir);
    } catch {
      // in use or gone: removeStale() takes it next time
    }
  }
}

/** Instances left by a bench that died (its pid is gone). */
function removeStale(): void {
  let names: string[];
  try {
    names = readdirSync(join(TRACEFS, "instances")).filter((n) => n.startsWith(PREFIX));
  } catch {
    return;
  }
  for (const n of names) {
    const pid = Number(n.slice(PREFIX.length).split("-")[0]);
    if (existsSync(`/proc/${pid}`)) continue;
    try {
      writeFileSync(join(TRACEFS, "instances", n, "events/enable"), "0");
      rmdirSync(join(TRACEFS, "instances", n));
    } catch {
      // someone else's, or busy
    }
  }
}
