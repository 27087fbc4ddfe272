// The gateway's data plane: a config (its text, or a config already
// validated) in; the static plan made, kept and shown to the gateway as a
// small view; the kernel programmed to it on demand. A plan is first
// prepared (parsed, validated, planned: nothing applied), then committed or
// discarded, so a reload that the gateway refuses changes nothing.
//
// InlineDataplane does this on the calling thread (tests with a fake
// kernel, small tools). The daemon uses DataplaneWorker
// (dataplane-worker.ts): the same InlineDataplane in a process of its own,
// so that parsing, planning and diffing 100k sources (and collecting their
// garbage) never block the main thread, where probes are judged and
// withdrawals are sent.
import { createHash } from "node:crypto";
import type { ConfigIssue } from "../inputs/config/issues.js";
import { loadConfig } from "../inputs/config/load.js";
import { writeClusterCache } from "./cluster-cache.js";
import type { GatewayConfig } from "../core/config/gateway-config.js";
import type { Config, PolicyConfig } from "../core/config/schema.js";
import { groupsByName, groupTarget } from "../core/config/groups.js";
import { mustParseSpan } from "../core/ip.js";
import type { SourceChange } from "../core/k8s/cluster.js";
import { withClaims, type HeldGroup } from "../core/k8s/ip-groups.js";
import {
  classifierFor,
  classifierPatched,
  type Classified,
  type KeptClassifier,
} from "../core/plan/classifier.js";
import { actionOf, policyFamily } from "../core/plan/model.js";
import type { NatSourcesDelta } from "../core/state.js";
import { retireIndex, type NatResult, type SourceEdit as NatEdit } from "../core/plan/nat.js";
import { sourceEdit, type LoadedText, type SourceEdit } from "../inputs/config/source-edit.js";
import {
  planStatic,
  sourcesPatched,
  viewOf,
  type MadePlan,
  type PlanView,
  type StaticPlan,
} from "../core/plan/index.js";
import type { KernelActuator } from "../routing/kernel-actuator.js";
import type { NatCounter } from "../routing/nft.js";
import type { KernelChanges, TeardownSummary } from "../routing/reconcile.js";

/**
 * A config file's text, its bytes as read (decoded as UTF-8 in the data-plane
 * process), or a config; or only the policies from the cluster, with the
 * committed file. `cluster`: the policies from the Kubernetes API
 * (core/k8s/cluster.ts), planned after the file's own; when absent, the
 * committed plan's.
 */
export type PrepareInput = (
  | { text: string; node?: string }
  | { bytes: Uint8Array; node?: string }
  | { config: GatewayConfig }
  | { cluster: PolicyConfig[] }
  | { clusterEdits: SourceChange[] }
) & {
  cluster?: PolicyConfig[];
  /** The addresses held of the API's egress IP groups (default: those of the committed plan). */
  claims?: HeldGroup[];
};

/**
 * The file's config with the cluster's policies after its own. A cluster
 * policy names an egress IP group, resolved against the file's groups here;
 * one whose group the file does not have (the file changed since the cluster
 * model last heard of it) is planned as Deny: blocked, never let out with the
 * pod's own address.
 */
export function withCluster(file: GatewayConfig, cluster: readonly PolicyConfig[]): GatewayConfig {
  if (cluster.length === 0) return file;
  const groups = groupsByName(file.egressIPGroups);
  const policies = cluster.map((p): PolicyConfig => {
    if (p.egressIPGroup === undefined) return p;
    const target = groupTarget(groups, p.egressIPGroup, policyFamily(p));
    if (target === undefined) {
      const { egressIPGroup: _, ...rest } = p;
      return { ...rest, action: "Deny" };
    }
    return { ...p, ...target };
  });
  return { ...file, policies: [...file.policies, ...policies] };
}

export type Prepared =
  | { ok: false; errors: ConfigIssue[]; warnings: ConfigIssue[] }
  | {
      ok: true;
      /** Names this plan for commit() or discard(). */
      id: number;
      view: PlanView;
      warnings: ConfigIssue[];
      /** The config equals the committed one: nothing would change. */
      unchanged: boolean;
      /**
       * Only NAT source addresses differ from the committed plan: the kernel's
       * source sets alone need programming, and nothing that health and BGP
       * read changed but the policies' source counts.
       */
      sourcesOnly?: boolean;
      /**
       * With sourcesOnly: the policies whose source count changed, as
       * [index, count]; the view is the committed plan's with these counts (a
       * data-plane process sends these instead of the view).
       */
      sourceCounts?: [number, number][];
    };

export interface Dataplane {
  /** Parses (for text), validates and plans; applies nothing. A plan that throws is an error, not a rejection. */
  prepare(input: PrepareInput): Promise<Prepared>;
  /** Makes prepared plan `id` the one apply() programs; other prepared plans are dropped. */
  commit(id: number): Promise<void>;
  /** Drops prepared plan `id`. */
  discard(id: number): Promise<void>;
  /** Programs the committed plan into the kernel. */
  apply(): Promise<KernelChanges>;
  /** Removes everything egressd owns in the kernel. */
  teardown(): Promise<TeardownSummary>;
  /** The SNAT counters of the committed plan's policies. */
  natCounters(): Promise<NatCounter[]>;
  /**
   * Keeps the committed plan's cluster policies in `runDir` for a restart
   * during an API outage (daemon/cluster-cache.ts). Here, not on the main
   * thread: at 100k pods the list is megabytes of JSON.
   */
  saveCluster(runDir: string): Promise<void>;
  /** Releases sockets (and the thread). */
  close(): Promise<void>;
}

/**
 * What a prepared plan keeps: the kernel plan, the view, a digest of the
 * config (to tell an unchanged one), the NAT classifier with the source
 * lists it was made from (to patch the next one), and, for a config read
 * from a text with nothing to report, that text, the config and where its
 * sources are (to read the next edit of them without a parse; the config's
 * source strings are the classifier's anyway). Not the plan's full
 * advertise scope, nor a config read with warnings: nothing reads them
 * again once the view is made.
 */
interface Kept {
  /** The file's own config (without the cluster's policies). */
  file: GatewayConfig;
  /** The cluster's policies, as given (groups unresolved). */
  cluster: PolicyConfig[];
  /** What this gateway holds of the API's egress IP groups. */
  claims: HeldGroup[];
  kernel: StaticPlan["kernel"];
  view: PlanView;
  /** sha256 of the file config's JSON; made when first needed when the config is kept (loaded). */
  digest?: string;
  classifier: KeptClassifier;
  /** How kernel.nat's sources differ from the plan it was patched from; dropped once applied. */
  sourcesDelta?: NatSourcesDelta;
  /** Nothing but kernel.nat's sources differs from the plan it was patched from; dropped once applied. */
  sourcesOnly?: boolean;
  /** For a config read from a text with nothing to report: the text and where its sources are. */
  loaded?: LoadedText;
}

const madeOf = (plan: StaticPlan): MadePlan => ({ kernel: plan.kernel, view: viewOf(plan) });

const digestOf = (config: unknown) => createHash("sha256").update(JSON.stringify(config)).digest("hex");

/** A kept plan's file digest, made now if it was left for later (it is, for a config read by sourceEdit). */
function keptDigest(k: Kept): string | undefined {
  if (k.digest === undefined && k.loaded) k.digest = digestOf(k.loaded.config);
  return k.digest;
}

const clusterDigests = new WeakMap<PolicyConfig[], string>();
const positions = new WeakMap<PolicyConfig[], Map<string, number>>();

/** Where each cluster policy is in a kept plan's list, by name. */
function clusterPositions(k: Kept): Map<string, number> {
  let m = positions.get(k.cluster);
  if (m === undefined) positions.set(k.cluster, (m = new Map(k.cluster.map((p, i) => [p.name, i]))));
  return m;
}

/** The digest of a kept plan's cluster policies (made once per list). */
function clusterDigest(k: Kept): string {
  let d = clusterDigests.get(k.cluster);
  if (d === undefined) clusterDigests.set(k.cluster, (d = digestOf(k.cluster)));
  return d;
}

/**
 * How long after a patch is applied its garbage is collected. Each source
 * reload at 100k sources leaves the file's old text and the kernel plan's
 * old element lists behind, which V8 would keep until the heap's own limit:
 * bench/scale's RSS rose from about 200 to 309 MB over 100 back-to-back
 * reloads without this, 280 MB with a collection a second after a burst's
 * first patch, 260 MB with one 200 ms after (one run each). A collection
 * takes tens of milliseconds of this thread, which waits at nice +10.
 */
export const PATCH_RECLAIM_MS = 200;

/** Rehearsals of a pod move after start-up (see InlineDataplane.warmEdits). */
export const WARM_ROUNDS = 8;

function unrefTimer(fn: () => void, ms: number): () => void {
  const t = setTimeout(fn, ms);
  t.unref();
  return () => clearTimeout(t);
}

export class InlineDataplane implements Dataplane {
  private nextId = 1;
  private readonly prepared = new Map<number, Kept>();
  private committed: Kept | undefined;
  /**
   * What the plans committed since the last apply() left as garbage: "replaced" when one was
   * made from scratch (the first, or one replacing another), "patched" when all were patches.
   */
  private garbage: "replaced" | "patched" | undefined;
  /** The last apply() programmed the whole committed plan (no error, no interface missing). */
  private inPlace = false;

  /**
   * `reclaim` is called once a plan made from scratch is in the kernel: the
   * plan it replaced, and everything made to build it, is garbage then (the
   * data-plane process collects it; see lib/gc.ts). A patched plan leaves
   * garbage too (the file's text, the kernel plan's element lists): it is
   * collected `patchReclaimMs` (PATCH_RECLAIM_MS) after the first patch of a burst. Either runs
   * after apply() has answered, so it delays no reconcile.
   */
  constructor(
    private readonly kernel: KernelActuator,
    private readonly opts: {
      reclaim?: () => void;
      patchReclaimMs?: number;
      /** Runs `fn` in `ms` and returns its cancel (default: an unref'd setTimeout; tests run it by hand). */
      timer?: (fn: () => void, ms: number) => () => void;
      /** Rounds of warmEdits (default WARM_ROUNDS; 0: none). */
      warmRounds?: number;
    } = {},
  ) {}

  prepare(input: PrepareInput): Promise<Prepared> {
    if ("clusterEdits" in input) {
      this.editsWarm = true;
      return Promise.resolve(this.prepareEdits(input.clusterEdits));
    }
    const base = this.committed;
    const cluster = input.cluster ?? base?.cluster ?? [];
    const claims = input.claims ?? base?.claims ?? [];
    // Validation's overlap check needs the classifier and planning reuses it. When only sources
    // changed since the committed config, it is patched from the committed one, not made again.
    let classified: { config: unknown; c: Classified } | undefined;
    const natFor = (config: Config) => {
      classified = { config, c: classifierFor(config, base?.classifier) };
      return classified.c.index.result;
    };
    let file: GatewayConfig;
    let warnings: ConfigIssue[] = [];
    let loaded: LoadedText | undefined;
    let fileUnchanged: boolean | undefined;
    let edited: SourceEdit | undefined;
    if ("text" in input || "bytes" in input) {
      const text =
        "text" in input
          ? input.text
          : Buffer.from(input.bytes.buffer, input.bytes.byteOffset, input.bytes.byteLength).toString("utf8");
      edited =
        base?.loaded && cluster.length === 0 ? this.sourcesEdited(base.loaded, text, natFor) : undefined;
      if (edited) {
        loaded = edited;
        file = edited.config as GatewayConfig;
        // Only this list changed in the text: the config is unchanged if the list is (a line reformatted).
        const before = base!.loaded!.config.policies[edited.policy]!.sources;
        const after = file.policies[edited.policy]!.sources;
        fileUnchanged = before.length === after.length && before.every((x, i) => x === after[i]);
      } else {
        const r = loadConfig(text, { natFor, layout: true, ...(input.node ? { node: input.node } : {}) });
        if (!r.ok) return Promise.resolve(r);
        file = r.config as GatewayConfig;
        warnings = r.warnings;
        if (r.layout) loaded = { text, config: r.config, layout: r.layout };
      }
    } else if ("config" in input) file = input.config;
    else {
      if (!base) {
        const message = "the cluster's policies came before any config was committed";
        return Promise.resolve({ ok: false, errors: [{ path: "(top level)", message }], warnings });
      }
      file = base.file;
      loaded = base.loaded;
      fileUnchanged = true;
    }
    const digest = fileUnchanged === undefined ? digestOf(file) : undefined;
    fileUnchanged ??= base !== undefined && digest === keptDigest(base);
    const clusterUnchanged =
      base !== undefined && (input.cluster === undefined || digestOf(cluster) === clusterDigest(base));
    const claimsUnchanged =
      base !== undefined && (input.claims === undefined || digestOf(claims) === digestOf(base.claims));
    const unchanged = fileUnchanged && clusterUnchanged && claimsUnchanged;
    let kept: Kept;
    try {
      if (unchanged) kept = base!;
      else {
        const config = withCluster(withClaims(file, claims), cluster);
        if (classified?.config !== config) natFor(config);
        const c = classified!.c;
        // Source lines of one policy edited in the file, as pods moving: the plan in force with its
        // sources replaced, as prepareEdits does for the cluster's, when nothing else can differ.
        const count = edited
          ? new Map([[edited.policy, file.policies[edited.policy]!.sources.length]])
          : undefined;
        const made =
          edited && count && base && c.delta && config === file && clusterUnchanged && claimsUnchanged
            ? sourcesPatched(base, c.index.result, edited.changed.map(mustParseSpan), count)
            : undefined;
        const plan = made ?? madeOf(planStatic(config, c.index));
        kept = { file, cluster, claims, ...plan, classifier: { index: c.index, sources: c.sources } };
        if (digest !== undefined) kept.digest = digest;
        else if (fileUnchanged && base?.digest !== undefined) kept.digest = base.digest;
        if (c.delta && base) kept.sourcesDelta = { base: base.kernel.nat, ...c.delta };
        if (loaded) kept.loaded = loaded;
        if (made) {
          kept.sourcesOnly = true;
          const out = this.keep(kept, false);
          return Promise.resolve(out.ok ? { ...out, warnings, sourceCounts: [...count!] } : out);
        }
      }
    } catch (e) {
      const message = `the config cannot be planned: ${(e as Error).message}`;
      return Promise.resolve({ ok: false, errors: [{ path: "(top level)", message }], warnings });
    }
    const id = this.nextId++;
    this.prepared.set(id, kept);
    return Promise.resolve({ ok: true, id, view: kept.view, warnings, unchanged });
  }

  /**
   * The committed config with the cluster's policies changed by `edits`
   * (addresses added to or removed from them, as the cluster model reports
   * them): the classifier is patched with exactly those addresses, no list is
   * compared or parsed again, and the kernel gets the element changes alone.
   * The edits must be relative to the committed cluster policies; one that is
   * not (an address to remove that is not there) is an error, and the caller
   * sends the whole list instead.
   */
  private prepareEdits(edits: SourceChange[]): Prepared {
    const base = this.committed;
    const fail = (message: string): Prepared => ({
      ok: false,
      errors: [{ path: "(cluster)", message }],
      warnings: [],
    });
    if (!base) return fail("the cluster's changes came before any config was committed");
    if (edits.length === 0) return this.keep(base, true);
    const offset = base.file.policies.length;
    const at = clusterPositions(base);
    const cluster = [...base.cluster];
    const sources = [...base.classifier.sources];
    const removed: NatEdit[] = [];
    const added: NatEdit[] = [];
    const byPolicy = new Map<number, { drop: Set<string>; add: string[] }>();
    for (const e of edits) {
      const i = at.get(e.policy);
      if (i === undefined)
        return fail(`the cluster's change names policy ${e.policy}, which is not in force`);
      let g = byPolicy.get(i);
      if (!g) byPolicy.set(i, (g = { drop: new Set(), add: [] }));
      if (e.add) g.add.push(e.address);
      else g.drop.add(e.address);
      (e.add ? added : removed).push({ policy: offset + i, span: mustParseSpan(e.address) });
    }
    for (const [i, g] of byPolicy) {
      const p = cluster[i]!;
      const kept = g.drop.size > 0 ? p.sources.filter((s) => !g.drop.has(s)) : [...p.sources];
      if (kept.length !== p.sources.length - g.drop.size)
        return fail(`the cluster's change removes an address policy ${p.name} does not have`);
      const next = { ...p, sources: [...kept, ...g.add] };
      cluster[i] = next;
      sources[offset + i] = next.sources;
    }
    const patched = classifierPatched(base.classifier, sources, removed, added);
    const keptWith = (made: { kernel: Kept["kernel"]; view: PlanView }, c: Classified): Kept => {
      const kept: Kept = {
        file: base.file,
        cluster,
        claims: base.claims,
        ...made,
        classifier: { index: c.index, sources: c.sources },
      };
      if (base.digest !== undefined) kept.digest = base.digest;
      if (c.delta) kept.sourcesDelta = { base: base.kernel.nat, ...c.delta };
      if (base.loaded) kept.loaded = base.loaded;
      return kept;
    };
    // Pods moved where no destination is: the plan in force with its sources replaced, nothing planned again.
    if (patched) {
      const counts = new Map([...byPolicy.keys()].map((i) => [offset + i, cluster[i]!.sources.length]));
      const spans = [...removed, ...added].map((e) => e.span);
      const made = sourcesPatched(base, patched.index.result, spans, counts);
      if (made) {
        const out = this.keep({ ...keptWith(made, patched), sourcesOnly: true }, false);
        return out.ok ? { ...out, sourceCounts: [...counts] } : out;
      }
    }
    const config = withCluster(withClaims(base.file, base.claims), cluster);
    const c = patched ?? classifierFor(config);
    try {
      return this.keep(keptWith(madeOf(planStatic(config, c.index)), c), false);
    } catch (e) {
      return fail(`the config cannot be planned: ${(e as Error).message}`);
    }
  }

  private keep(kept: Kept, unchanged: boolean): Prepared {
    const id = this.nextId++;
    this.prepared.set(id, kept);
    const out: Prepared = { ok: true, id, view: kept.view, warnings: [], unchanged };
    if (kept.sourcesOnly) out.sourcesOnly = true;
    return out;
  }

  /**
   * The config of `text` when it is the committed text with only source
   * items of one policy edited (see sourceEdit), and the patched classifier
   * finds nothing to report (no ambiguity, every gateway policy applies
   * somewhere): then the file is not parsed again. Undefined: load it in full.
   */
  private sourcesEdited(
    loaded: LoadedText,
    text: string,
    natFor: (config: Config) => NatResult,
  ): SourceEdit | undefined {
    const e = sourceEdit(loaded, text);
    if (e === undefined) return undefined;
    const nat = natFor(e.config);
    if (nat.conflicts.length > 0) return undefined;
    if (e.config.policies.some((p, i) => actionOf(p) !== "Direct" && !nat.effective.has(i))) return undefined;
    return e;
  }

  commit(id: number): Promise<void> {
    const p = this.prepared.get(id);
    if (!p) return Promise.reject(new Error(`no prepared plan ${id}`));
    // Moved pods leave little garbage on the heap (their arrays are typed, and V8 reclaims those
    // by itself): no collection is forced for them. A file whose sources were edited leaves its
    // old text (megabytes at 100k sources): that is a patch's garbage.
    const podsMoved = p.sourcesOnly === true && p.loaded === this.committed?.loaded;
    if (p !== this.committed && !podsMoved)
      this.garbage = p.sourcesDelta === undefined ? "replaced" : (this.garbage ?? "patched");
    // The replaced plan is dropped (prepared ones too): its classifier's arrays serve the next patches.
    const old = this.committed?.classifier.index;
    if (old !== undefined && old !== p.classifier.index) retireIndex(old, p.classifier.index);
    this.committed = p;
    this.prepared.clear();
    return Promise.resolve();
  }

  discard(id: number): Promise<void> {
    this.prepared.delete(id);
    return Promise.resolve();
  }

  apply(): Promise<KernelChanges> {
    const k = this.committed;
    if (!k) return Promise.reject(new Error("no plan committed"));
    const sourcesDelta = k.sourcesDelta;
    // Only when the plan before it is known to be in place: else the whole plan is reconciled.
    const sourcesOnly = k.sourcesOnly === true && this.inPlace;
    // Tried once: after that (applied, or failed and retried later) the plan is diffed whole.
    k.sourcesDelta = undefined;
    k.sourcesOnly = undefined;
    this.inPlace = false;
    const applied = this.kernel
      .apply(k.kernel, { ...(sourcesDelta ? { sourcesDelta } : {}), ...(sourcesOnly ? { sourcesOnly } : {}) })
      .then((changes) => {
        this.inPlace = changes.addresses.missingInterface.length === 0;
        return changes;
      });
    const garbage = this.garbage;
    this.garbage = undefined;
    const warm = () => {
      if (!this.editsWarm && this.opts.warmRounds !== 0) this.warmEdits(this.opts.warmRounds ?? WARM_ROUNDS);
    };
    if (!this.opts.reclaim || !garbage) return applied.finally(warm);
    const ms = garbage === "replaced" ? 0 : (this.opts.patchReclaimMs ?? PATCH_RECLAIM_MS);
    return applied.finally(() => {
      this.scheduleReclaim(ms);
      warm();
    });
  }

  /** Pods have moved on this thread (prepareEdits ran for the cluster), or warmEdits rehearsed it. */
  private editsWarm = false;

  /**
   * Rehearses a pod move `rounds` times, one round per timer turn, once a
   * plan with a cluster policy that selects a pod is in force: the pod is
   * taken out of its policy in a plan that is then dropped, and that plan's
   * arrays go back to the pool the next patches take theirs from (nat.ts).
   * Why: the first real moves after start-up ran that code for the first
   * time (V8 interprets a function before it compiles it, and each patch
   * then filled fresh arrays), and took 25-70 ms each where later ones take
   * 1-2 ms (bench/k8s-scale, 100k pods). Stops at the first round that is
   * not a move of sources alone (it would plan in full) and when another
   * plan has been committed meanwhile.
   */
  private warmEdits(rounds: number): void {
    const base = this.committed;
    const policy = base?.cluster.find((p) => p.sources.length > 0);
    if (!base || !policy || this.editsWarm) return;
    this.editsWarm = true;
    const round = (left: number) => {
      if (left === 0 || this.committed !== base) return;
      const r = this.prepareEdits([{ policy: policy.name, address: policy.sources[0]!, add: false }]);
      if (!r.ok) return;
      const kept = this.prepared.get(r.id)!;
      this.prepared.delete(r.id);
      if (kept.classifier.index !== base.classifier.index)
        retireIndex(kept.classifier.index, base.classifier.index);
      if (!r.sourcesOnly) return;
      (this.opts.timer ?? unrefTimer)(() => round(left - 1), 0);
    };
    (this.opts.timer ?? unrefTimer)(() => round(rounds), 0);
  }

  private reclaimPending: { ms: number; cancel: () => void } | undefined;

  /** Collects garbage in `ms`, unless a collection is already due as soon: one for a burst of patches. */
  private scheduleReclaim(ms: number): void {
    if (this.reclaimPending && this.reclaimPending.ms <= ms) return;
    this.reclaimPending?.cancel();
    const cancel = (this.opts.timer ?? unrefTimer)(() => {
      this.reclaimPending = undefined;
      this.opts.reclaim?.();
    }, ms);
    this.reclaimPending = { ms, cancel };
  }

  teardown(): Promise<TeardownSummary> {
    return this.kernel.teardown();
  }

  natCounters(): Promise<NatCounter[]> {
    return this.committed ? this.kernel.natCounters(this.committed.kernel.nat) : Promise.resolve([]);
  }

  private saving: Promise<void> = Promise.resolve();

  saveCluster(runDir: string): Promise<void> {
    const cluster = this.committed?.cluster;
    if (cluster === undefined) return Promise.resolve();
    // One write at a time: each writes the same temporary file.
    const next = this.saving.then(() => writeClusterCache(runDir, cluster));
    this.saving = next.catch(() => undefined);
    return next;
  }

  close(): Promise<void> {
    this.kernel.close();
    return Promise.resolve();
  }
}
