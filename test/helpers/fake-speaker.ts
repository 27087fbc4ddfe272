// A stand-in for gobgpd's API as the path reconciler uses it: local paths in a
// map, every call recorded, and a hook that runs while a read is in flight
// (to change the world between a reconcile's read and its writes).
import { canonicalPath, type BgpPath } from "../../bgp/model.js";
import type { GobgpClient } from "../../bgp/gobgp-client.js";

export class FakeSpeaker {
  readonly paths = new Map<string, BgpPath>();
  readonly calls: string[] = [];
  /** Runs inside listLocalPaths, after the read and before it resolves. */
  duringRead: (() => void) | undefined;

  asClient(): GobgpClient {
    return this as unknown as GobgpClient;
  }

  listLocalPaths(): Promise<BgpPath[]> {
    const out = [...this.paths.values()];
    this.duringRead?.();
    return Promise.resolve(out);
  }

  addPath(p: BgpPath): Promise<void> {
    this.calls.push(`+${p.prefix}`);
    this.paths.set(canonicalPath(p).prefix, canonicalPath(p));
    return Promise.resolve();
  }

  deletePath(p: BgpPath): Promise<void> {
    this.calls.push(`-${p.prefix}`);
    this.paths.delete(canonicalPath(p).prefix);
    return Promise.resolve();
  }

  async applyPaths(d: { add: BgpPath[]; withdraw: BgpPath[] }): Promise<void> {
    for (const p of d.withdraw) await this.deletePath(p);
    for (const p of d.add) await this.addPath(p);
  }
}
