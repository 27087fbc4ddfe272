// Makes gobgpd's locally originated paths equal the desired set with the
// smallest change: withdraw what is extra, add what is missing or changed
// (an AddPath with the same prefix replaces the old attributes).
import { BgpValidationError, canonicalPath, sameCanonicalPath, type BgpPath } from "../core/bgp.js";
import type { Speaker } from "./speaker.js";

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

export interface ReconcileGuards {
  /** Apply withdrawals only: add nothing, change no attributes (what is added must be backed by the kernel). */
  withdrawOnly?: boolean;
  /**
   * Asked right before each path is added: false drops the add. Health can
   * change while a reconcile awaits gobgpd; a path withdrawn since the
   * reconcile began must not be re-advertised by it.
   */
  stillWanted?: (path: BgpPath) => boolean;
}

export class PathReconciler {
  constructor(
    private readonly client: Speaker,
    private readonly opts: PathReconcilerOptions = {},
  ) {}

  /**
   * Reads gobgpd's local paths, diffs, applies (withdraws first). Returns what
   * it changed: `add` holds only the paths really added, `held` those the
   * guards kept back.
   */
  async reconcile(
    desired: readonly BgpPath[],
    guards: ReconcileGuards = {},
  ): Promise<PathDiff & { held: BgpPath[] }> {
    // Validate before touching anything.
    diffPaths(desired, []);
    const actual = await this.client.listLocalPaths();
    const diff = diffPaths(desired, actual);
    const held = guards.withdrawOnly ? diff.add : [];
    if (guards.withdrawOnly) diff.add = [];
    const applied = await this.apply(diff, guards.stillWanted);
    return { ...applied, held: [...held, ...diff.add.filter((p) => !applied.add.includes(p))] };
  }

  /** Applies a diff; `stillWanted` is asked before every add. Returns the diff as applied. */
  async apply(diff: PathDiff, stillWanted: (p: BgpPath) => boolean = () => true): Promise<PathDiff> {
    const total = diff.add.length + diff.withdraw.length;
    if (total === 0) return diff;
    if (total >= (this.opts.bulkThreshold ?? 32)) {
      const add = await this.client.applyPaths({ add: diff.add, withdraw: diff.withdraw, stillWanted });
      return { ...diff, add };
    }
    for (const p of diff.withdraw) await this.client.deletePath(p);
    const added: BgpPath[] = [];
    for (const p of diff.add) {
      if (!stillWanted(p)) continue;
      await this.client.addPath(p);
      added.push(p);
    }
    return { ...diff, add: added };
  }
}
