import test from "ava";
import { Readable } from "node:stream";
import { readInSlices, TurnBudget } from "../../lib/slices.js";

/**
 * Reads `n` items with a clock that moves 1 ms per item, and counts the items
 * handled in each turn of the event loop (a setImmediate ticker marks turns).
 */
async function itemsPerTurn(n: number, sliceMs: number): Promise<{ seen: number[]; perTurn: number[] }> {
  let clock = 0;
  const seen: number[] = [];
  const perTurn: number[] = [0];
  let reading = true;
  const tick = () => {
    if (!reading) return;
    perTurn.push(0);
    setImmediate(tick);
  };
  setImmediate(tick);
  await readInSlices<number>(
    Readable.from(Array.from({ length: n }, (_, i) => i)),
    (i) => {
      clock += 1;
      seen.push(i);
      perTurn[perTurn.length - 1]!++;
    },
    () => undefined,
    { now: () => clock, sliceMs },
  );
  reading = false;
  return { seen, perTurn: perTurn.filter((c) => c > 0) };
}

test("a long stream is read a slice per turn of the event loop, every item in order", async (t) => {
  const { seen, perTurn } = await itemsPerTurn(100, 4);
  t.deepEqual(
    seen,
    Array.from({ length: 100 }, (_, i) => i),
  );
  t.true(Math.max(...perTurn) <= 4, `items per turn: ${perTurn.join(" ")}`);
  t.true(perTurn.length >= 25);
});

test("without slices the same stream is read in one turn (what the slicing prevents)", async (t) => {
  const { perTurn } = await itemsPerTurn(100, Infinity);
  t.deepEqual(perTurn, [100]);
});

test("an item that cannot be handled rejects with its error and cancels the stream", async (t) => {
  let cancelled = 0;
  const handled: number[] = [];
  const err = await t.throwsAsync(
    readInSlices<number>(
      Readable.from([1, 2, 3, 4]),
      (i) => {
        if (i === 2) throw new Error("bad item 2");
        handled.push(i);
      },
      () => cancelled++,
    ),
  );
  t.is(err?.message, "bad item 2");
  t.is(cancelled, 1);
  t.deepEqual(handled, [1]);
});

test("a failing stream rejects with the error streamError makes of it", async (t) => {
  const stream = new Readable({ objectMode: true, read() {} });
  const p = readInSlices(
    stream,
    () => undefined,
    () => undefined,
    {
      streamError: (e) => new Error(`ListPath failed: ${e.message}`),
    },
  );
  stream.push(1);
  stream.destroy(new Error("UNAVAILABLE"));
  const err = await t.throwsAsync(p);
  t.is(err?.message, "ListPath failed: UNAVAILABLE");
});

test("a turn's budget is spent after sliceMs, and the next turn starts after the event loop ran", async (t) => {
  let clock = 100;
  const budget = new TurnBudget({ now: () => clock, sliceMs: 4 });
  clock += 3;
  t.false(budget.spent);
  clock += 1;
  t.true(budget.spent);
  let loopRan = false;
  setImmediate(() => (loopRan = true));
  await budget.nextTurn();
  t.true(loopRan);
  t.false(budget.spent);
  clock += 4;
  t.true(budget.spent);
});
