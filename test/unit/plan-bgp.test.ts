import test from "ava";
import { mergeRanges, parseInterval, rangeToCidrs, servedPrefixes } from "../../daemon/plan/bgp.js";
import type { KernelState } from "../../daemon/state.js";

const cidrs = (lo: string, hi: string) => {
  const a = parseInterval(lo);
  const b = parseInterval(hi);
  return rangeToCidrs({ family: a.family, lo: a.lo, hi: b.hi });
};

test("ranges are cut into the fewest CIDRs", (t) => {
  t.deepEqual(cidrs("203.0.113.0", "203.0.113.255"), ["203.0.113.0/24"]);
  t.deepEqual(cidrs("203.0.113.0", "203.0.113.127"), ["203.0.113.0/25"]);
  t.deepEqual(cidrs("10.0.0.1", "10.0.0.6"), ["10.0.0.1/32", "10.0.0.2/31", "10.0.0.4/31", "10.0.0.6/32"]);
  t.deepEqual(cidrs("0.0.0.0", "255.255.255.255"), ["0.0.0.0/0"]);
  t.deepEqual(cidrs("::", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"), ["::/0"]);
  t.deepEqual(cidrs("2001:db8::", "2001:db8::ffff"), ["2001:db8::/112"]);
});

test("adjacent and overlapping ranges merge, families stay apart", (t) => {
  const merged = mergeRanges(
    ["10.0.1.0/24", "10.0.0.0/24", "10.0.0.128/25", "2001:db8::/64", "10.0.3.0/24"].map(parseInterval),
  );
  t.deepEqual(merged.flatMap(rangeToCidrs), ["10.0.0.0/23", "10.0.3.0/24", "2001:db8::/64"]);
});

function kernel(dests: { interval: string; policy: string | null }[][]): KernelState {
  return {
    addresses: [],
    routes: [],
    rules: [],
    nat: {
      markMask: 0x0ff00000,
      policies: [],
      sources: [],
      classes: dests.map((d, id) => ({ id, family: 4, destinations: d })),
    },
  };
}

test("served prefixes leave out exceptions, no-gateway holes and unhealthy policies", (t) => {
  // Class 0: red serves 203.0.113.0/24 except the upper /25; class 1: blue serves 198.51.100.0/24.
  const k = kernel([
    [
      { interval: "203.0.113.0/25", policy: "red" },
      { interval: "203.0.113.128/25", policy: null },
    ],
    [{ interval: "198.51.100.0/24", policy: "blue" }],
  ]);
  t.deepEqual(servedPrefixes(k, new Set()), ["198.51.100.0/24", "203.0.113.0/25"]);
  t.deepEqual(servedPrefixes(k, new Set(["blue"])), ["203.0.113.0/25"]);
});

test("a destination served for one source class is advertised once", (t) => {
  const k = kernel([
    [{ interval: "203.0.113.0/24", policy: "red" }],
    [
      { interval: "203.0.113.0/25", policy: "green" },
      { interval: "203.0.113.128/25", policy: null },
    ],
  ]);
  t.deepEqual(servedPrefixes(k, new Set()), ["203.0.113.0/24"]);
  t.deepEqual(servedPrefixes(k, new Set(["red"])), ["203.0.113.0/25"]);
});
