// routing/address-watch.ts in the test's own namespace (listing addresses
// needs no privilege): what is there and what is not, and no timer left
// behind once nothing is followed.
import test from "ava";
import { watchAddresses } from "../../routing/address-watch.js";

const first = (w: ReturnType<typeof watchAddresses>, address: string) =>
  new Promise<boolean>((resolve) => {
    const stop = w.follow(address, (present) => {
      resolve(present);
      queueMicrotask(stop);
    });
  });

test("loopback's address is present, a documentation address is not", async (t) => {
  const w = watchAddresses({ newAddressGraceMs: 0 });
  t.teardown(() => w.close());
  t.true(await first(w, "127.0.0.1"));
  t.true(await first(w, "::1"));
  t.false(await first(w, "192.0.2.254"));
});

test("a new address's absence waits for the grace; its presence does not", async (t) => {
  let clock = 0; // the watch's clock, moved by hand; the listings' timers are real
  const w = watchAddresses({ intervalMs: 10, newAddressGraceMs: 300, now: () => clock });
  t.teardown(() => w.close());
  const heard: string[] = [];
  w.follow("192.0.2.254", (p) => heard.push(`192.0.2.254 ${p}`));
  t.true(await first(w, "127.0.0.1"), "present: told by a listing, the grace not over");
  const n = w.listings;
  while (w.listings < n + 3) await new Promise((r) => setTimeout(r, 5));
  t.deepEqual(heard, [], "three listings later, still nothing said of the absent one");
  clock = 300;
  while (!heard.length) await new Promise((r) => setTimeout(r, 5));
  t.deepEqual(heard, ["192.0.2.254 false"], "absent once the grace is over");
});

test("a follower of a known address hears at once; with none left, no more listings run", async (t) => {
  const w = watchAddresses({ intervalMs: 10 });
  t.teardown(() => w.close());
  const heard: boolean[] = [];
  const stop = w.follow("127.0.0.1", (p) => heard.push(p));
  while (!heard.length) await new Promise((r) => setTimeout(r, 5));
  const again: boolean[] = [];
  const stop2 = w.follow("127.0.0.1", (p) => again.push(p));
  t.deepEqual(again, [true], "told synchronously, from the last listing");
  stop();
  stop2();
  const n = w.listings;
  await new Promise((r) => setTimeout(r, 100));
  t.true(w.listings <= n + 1, "at most the listing already under way");
  t.deepEqual(heard, [true], "a present address is told once, not on every listing");
});
