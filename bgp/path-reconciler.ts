// Makes gobgpd's locally originated paths equal the desired set with the
// smallest change: withdraw what is extra, add what is missing or changed
// (an AddPath with the same prefix replaces the old attributes).
import { BgpValidationError, canonicalPath, sameCanonicalPath, type BgpPath } from "./model.js";
import type { GobgpClient } from "./gobgp-client.js";

export interface PathDiff {
  /** Paths to add: missing, or present with other attributes. Sorted by prefix. */
  add: BgpPath[];
  /** Paths to withdraw: present but not desired. Sorted by prefix. */
  withdraw: BgpPath[];
  /** How many desired paths are already there as they should be. */
  unchanged: number;
}

const byPrefix = (a: BgpPath, b: BgpPath) => (a.prefix < b.prefix ? -1 : a.prefix > b.prefix ? 1 : 0);

/**
 * Pure diff of desired vs actual paths, keyed by prefix. Desired paths are
 * validated (a bad or duplicated prefix throws BgpValidationError); the
 * returned paths are in canonical form.
 */
export function diffPaths(desired: readonly BgpPath[], actual: readonly BgpPath[]): PathDiff {
  const want = new Map<string, BgpPath>();
  for (const p of desired) {
    const c = canonicalPath(p);
    if (c.asPathPrepend < 0)
      throw new BgpValidationError(`invalid asPathPrepend ${c.asPathPrepend} for ${p.prefix}`);
    if (want.has(c.prefix)) throw new BgpValidationError(`prefix ${c.prefix} is desired twice`);
    want.set(c.prefix, c);
  }
  const have = new Map<string, BgpPath>();
  for (const p of actual) {
    const c = canonicalPath(p);
    have.set(c.prefix, c);
  }
  const add: BgpPath[] = [];
  const withdraw: BgpPath[] = [];
  let unchanged = 0;
  for (const [prefix, w] of want) {
    const h = have.get(prefix);
    if (h && sameCanonicalPath(w, h)) unchanged++;
    else add.push(w);
  }
  for (const [prefix, h] of have) if (!want.has(prefix)) withdraw.push(h);
  return { add: add.sort(byPrefix), withdraw: withdraw.sort(byPrefix), unchanged };
}

export interface PathReconcilerOptions {
  /** From this many changes on, send them in one AddPathStream instead of one call each (default 32). */
  bulkThreshold?: number;
}

export class PathReconciler {
  constructor(
    private readonly client: GobgpClient,
    private readonly opts: PathReconcilerOptions = {},
  ) {}

  /** Reads gobgpd's local paths, diffs, applies (withdraws first). Returns what it changed. */
  async reconcile(desired: readonly BgpPath[]): Promise<PathDiff> {
    // Validate before touching anything.
    diffPaths(desired, []);
    const actual = await this.client.listLocalPaths();
    const diff = diffPaths(desired, actual);
    await this.apply(diff);
    return diff;
  }

  async apply(diff: PathDiff): Promise<void> {
    const total = diff.add.length + diff.withdraw.length;
    if (total === 0) return;
    if (total >= (this.opts.bulkThreshold ?? 32)) {
      await this.client.applyPaths({ add: diff.add, withdraw: diff.withdraw });
      return;
    }
    for (const p of diff.withdraw) await this.client.deletePath(p);
    for (const p of diff.add) await this.client.addPath(p);
  }
}
