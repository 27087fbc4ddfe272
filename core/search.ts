// Binary search over anything sorted, by a predicate.

/**
 * The first index in [0, n) for which `before(i)` is false, or n. `before`
 * must be true for a prefix of the indexes and false for the rest (as
 * "value < x" is over ascending values).
 */
export function partitionPoint(n: number, before: (i: number) => boolean): number {
  let lo = 0;
  let hi = n;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (before(mid)) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}
