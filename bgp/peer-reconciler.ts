// Makes gobgpd's neighbors equal the desired set.
import { BgpValidationError, canonicalPeer, type BgpPeer, type CanonicalPeer } from "../core/bgp.js";
import type { Speaker } from "./speaker.js";

export interface PeerDiff {
  /** Neighbors to add. */
  add: BgpPeer[];
  /**
   * Neighbors whose only change is timers: sent with UpdatePeer. (gobgpd 3.10
   * still resets the session for it; see GobgpClient.updatePeer.)
   */
  update: BgpPeer[];
  /** Neighbors with other changes (ASN, password, multihop, ...): delete and add again. */
  replace: BgpPeer[];
  /** Addresses of neighbors to delete. */
  delete: string[];
}

const TIMER_FIELDS = ["holdTime", "keepaliveInterval", "connectRetry"] as const;

function differingFields(want: CanonicalPeer, have: CanonicalPeer): string[] {
  const out: string[] = [];
  for (const k of Object.keys(want) as (keyof CanonicalPeer)[]) {
    // gobgpd reports the address in use once a session is up, configured or
    // not: only a configured local address is compared.
    if (k === "localAddress" && want.localAddress === "") continue;
    const a = want[k];
    const b = have[k];
    const same = Array.isArray(a) && Array.isArray(b) ? a.join(",") === b.join(",") : a === b;
    if (!same) out.push(k);
  }
  return out;
}

/** Pure diff of desired vs actual neighbors, keyed by address. Invalid or duplicated desired peers throw. */
export function diffPeers(desired: readonly BgpPeer[], actual: readonly BgpPeer[]): PeerDiff {
  const want = new Map<string, CanonicalPeer>();
  for (const p of desired) {
    const c = canonicalPeer(p);
    if (want.has(c.address)) throw new BgpValidationError(`neighbor ${c.address} is desired twice`);
    want.set(c.address, c);
  }
  const have = new Map<string, CanonicalPeer | undefined>();
  for (const p of actual) {
    let c: CanonicalPeer | undefined;
    try {
      c = canonicalPeer(p);
    } catch {
      c = undefined; // something we would never configure: replace it
    }
    have.set(c?.address ?? p.address, c);
  }
  const diff: PeerDiff = { add: [], update: [], replace: [], delete: [] };
  for (const [address, w] of want) {
    if (!have.has(address)) {
      diff.add.push(w);
      continue;
    }
    const h = have.get(address);
    const fields = h ? differingFields(w, h) : ["*"];
    if (fields.length === 0) continue;
    if (fields.every((f) => (TIMER_FIELDS as readonly string[]).includes(f))) diff.update.push(w);
    else diff.replace.push(w);
  }
  for (const address of have.keys()) if (!want.has(address)) diff.delete.push(address);
  const byAddr = (a: BgpPeer, b: BgpPeer) => (a.address < b.address ? -1 : a.address > b.address ? 1 : 0);
  diff.add.sort(byAddr);
  diff.update.sort(byAddr);
  diff.replace.sort(byAddr);
  diff.delete.sort();
  return diff;
}

export class PeerReconciler {
  constructor(private readonly client: Speaker) {}

  async reconcile(desired: readonly BgpPeer[]): Promise<PeerDiff> {
    diffPeers(desired, []); // validate first
    const actual = (await this.client.listPeers()).map((s) => s.config);
    const diff = diffPeers(desired, actual);
    for (const a of diff.delete) await this.client.deletePeer(a);
    for (const p of diff.replace) {
      await this.client.deletePeer(p.address);
      await this.client.addPeer(p);
    }
    for (const p of diff.update) await this.client.updatePeer(p);
    for (const p of diff.add) await this.client.addPeer(p);
    return diff;
  }
}
