// The token bucket that paces the status writer's API writes, on a clock run by hand.
import test from "ava";
import { TokenBucket } from "../../lib/token-bucket.js";

function handClock() {
  let now = 0;
  const sleeps: number[] = [];
  return {
    sleeps,
    advance: (ms: number) => (now += ms),
    clock: {
      now: () => now,
      sleep: (ms: number) => {
        sleeps.push(ms);
        now += ms; // the sleep ends when the clock reaches it
        return Promise.resolve();
      },
    },
  };
}

test("a burst at once, then one token per 1/rate second; idle time refills up to the burst only", async (t) => {
  const h = handClock();
  const b = new TokenBucket(10, 3, h.clock);
  for (let i = 0; i < 3; i++) await b.take();
  t.deepEqual(h.sleeps, [], "the burst needs no wait");
  await b.take();
  await b.take();
  t.deepEqual(
    h.sleeps.map((x) => Math.round(x)),
    [100, 100],
  );
  h.advance(60_000); // a minute idle: 3 tokens, not 600
  h.sleeps.length = 0;
  for (let i = 0; i < 4; i++) await b.take();
  t.deepEqual(
    h.sleeps.map((x) => Math.round(x)),
    [100],
  );
});

test("a bucket that could never give a token is refused", (t) => {
  t.throws(() => new TokenBucket(0, 1), { message: /0\/s/ });
  t.throws(() => new TokenBucket(5, 0.5), { message: /burst/ });
});
