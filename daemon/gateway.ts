// One gateway at run time: the imperative shell around plan().
//
//   config --plan()--> KernelState --reconcileKernel--> netlink + nftables
//                  \-> planBgp()   --peers/paths-----> gobgpd (gRPC)
//
// The Controller serialises reconciles; every input change is a trigger.
import { readlinkSync } from "node:fs";
import { join } from "node:path";
import { GobgpClient } from "../bgp/gobgp-client.js";
import { GobgpdProcess } from "../bgp/gobgpd-process.js";
import type { BgpPath } from "../bgp/model.js";
import { PathReconciler } from "../bgp/path-reconciler.js";
import { PeerReconciler } from "../bgp/peer-reconciler.js";
import { changed, reconcileKernel, teardownKernel, type KernelChanges } from "../routing/reconcile.js";
import { NftReconciler } from "../routing/nft.js";
import { Controller, type ReconcileTarget } from "./controller.js";
import type { BgpConfig } from "./config/bgp-schema.js";
import type { Config } from "./config/schema.js";
import type { Logger } from "./log.js";
import { plan } from "./plan.js";
import { planBgp, HEALTHY, type BgpDesired, type BgpHealth } from "./plan/bgp.js";
import type { KernelState } from "./state.js";

export interface Desired {
  kernel: KernelState;
  bgp: BgpDesired | undefined;
}

export interface GatewayOptions {
  log: Logger;
  /** Where gobgpd's API socket lives; default: per network namespace under /run/egressd. */
  runDir?: string;
  resyncMs?: number;
}

/** A run directory unique to this network namespace (gateways of a lab share one filesystem). */
export function defaultRunDir(): string {
  const m = /\[(\d+)\]/.exec(readlinkSync("/proc/self/ns/net"));
  return join("/run/egressd", `net-${m?.[1] ?? "default"}`);
}

function describeKernel(c: KernelChanges): string[] {
  if (!changed(c)) return [];
  return [
    ...c.addresses.added.map((a) => `+address ${a}`),
    ...c.addresses.removed.map((a) => `-address ${a}`),
    ...(c.nat.action !== "none" ? [`nft ${c.nat.action}`] : []),
    ...c.routes.added.map((r) => `+route ${r}`),
    ...c.routes.removed.map((r) => `-route ${r}`),
    ...c.rules.added.map((r) => `+rule ${r}`),
    ...c.rules.removed.map((r) => `-rule ${r}`),
  ];
}

export class Gateway {
  private config: Config;
  private readonly log: Logger;
  private readonly nft = new NftReconciler();
  private readonly controller: Controller<Desired>;
  private health: BgpHealth = HEALTHY;
  private gobgpd: GobgpdProcess | undefined;
  private client: GobgpClient | undefined;
  private bgpStarted = false;
  readonly runDir: string;

  constructor(config: Config, opts: GatewayOptions) {
    this.config = config;
    this.log = opts.log;
    this.runDir = opts.runDir ?? defaultRunDir();
    const targets: ReconcileTarget<Desired>[] = [
      {
        name: "kernel",
        apply: async (d) => describeKernel(await reconcileKernel(d.kernel, { nft: this.nft })),
      },
      { name: "bgp", apply: (d) => this.applyBgp(d.bgp) },
    ];
    this.controller = new Controller<Desired>({
      log: this.log,
      desired: () => this.desired(),
      targets,
      resyncMs: opts.resyncMs ?? 30_000,
    });
  }

  get currentConfig(): Config {
    return this.config;
  }

  desired(): Desired {
    const kernel = plan(this.config);
    const cfg = this.config as Config & { bgp?: BgpConfig };
    const bgp = cfg.bgp ? planBgp(cfg as Config & { bgp: BgpConfig }, kernel, this.health) : undefined;
    return { kernel, bgp };
  }

  async start(): Promise<void> {
    const bgp = (this.config as Config & { bgp?: BgpConfig }).bgp;
    if (bgp) await this.startSpeaker(bgp);
    this.controller.start();
    await this.controller.idle();
  }

  private async startSpeaker(bgp: BgpConfig): Promise<void> {
    const speaker = bgp.speaker ?? {};
    let target: string;
    if ((speaker.mode ?? "managed") === "managed") {
      const socketPath = join(this.runDir, "gobgpd.sock");
      this.gobgpd = new GobgpdProcess({
        socketPath,
        binary: speaker.binary ?? "/usr/bin/gobgpd",
        logLevel: "warn",
      });
      this.gobgpd.on("exited", (e) =>
        this.log.error(
          {
            pid: e.pid,
            code: e.code,
            signal: e.signal,
            restartInMs: e.restartInMs,
            lastLines: e.lastLines.slice(-5),
          },
          "gobgpd exited; restarting it",
        ),
      );
      this.gobgpd.on("started", (s) => this.log.info({ pid: s.pid, restarts: s.restarts }, "gobgpd started"));
      await this.gobgpd.start();
      target = this.gobgpd.target;
    } else {
      target = speaker.address as string;
    }
    const client = new GobgpClient({ target });
    this.client = client;
    client.on("ready", (info) => {
      this.bgpStarted = info.started && info.asn === bgp.asn;
      this.log.info({ target, bgpStarted: info.started }, "connected to gobgpd");
      this.controller.trigger("gobgpd ready");
    });
    client.on("disconnected", (reason) => {
      this.bgpStarted = false;
      this.log.warn({ reason }, "lost gobgpd");
    });
    client.on("peer", (p) => {
      this.log.info({ peer: p.address, asn: p.peerAsn, state: p.state }, "BGP peer state");
    });
    client.on("warning", (e) => this.log.warn({ err: e }, "gobgpd client"));
    client.watch({ peers: true });
    await client.waitReady(15_000);
  }

  private async applyBgp(d: BgpDesired | undefined): Promise<string[]> {
    const client = this.client;
    if (!d || !client) return [];
    if (!client.isReady) throw new Error("gobgpd is not reachable yet");
    const out: string[] = [];
    if (!this.bgpStarted) {
      const current = await client.getBgp();
      if (
        current &&
        current.asn !== 0 &&
        (current.asn !== d.global.asn || current.routerId !== d.global.routerId)
      ) {
        // A different identity cannot be changed in place.
        await client.stopBgp();
        out.push(`stopped BGP AS${current.asn}`);
      }
      if (!current || current.asn !== d.global.asn || current.routerId !== d.global.routerId) {
        await client.startBgp(d.global);
        out.push(`started BGP AS${d.global.asn} router-id ${d.global.routerId}`);
      }
      this.bgpStarted = true;
    }
    const peerDiff = await new PeerReconciler(client).reconcile(d.peers);
    for (const p of peerDiff.add) out.push(`+peer ${p.address} AS${p.peerAsn}`);
    for (const p of [...peerDiff.update, ...peerDiff.replace]) out.push(`~peer ${p.address}`);
    for (const a of peerDiff.delete) out.push(`-peer ${a}`);
    const pathDiff = await new PathReconciler(client).reconcile(d.paths);
    for (const p of pathDiff.withdraw) out.push(`-path ${p.prefix}`);
    for (const p of pathDiff.add) out.push(`+path ${p.prefix}`);
    return out;
  }

  /** Replaces the config (already validated) and reconciles to it. */
  async reload(config: Config): Promise<void> {
    this.config = config;
    this.controller.trigger("config reload");
    await this.controller.idle();
  }

  /** Sets health inputs; a newly withdrawn policy is withdrawn at once, before the full reconcile. */
  async setHealth(h: BgpHealth): Promise<void> {
    const before = this.desired().bgp?.paths ?? [];
    this.health = h;
    const after = new Set((this.desired().bgp?.paths ?? []).map((p) => p.prefix));
    const gone: BgpPath[] = before.filter((p) => !after.has(p.prefix));
    if (gone.length && this.client?.isReady) {
      await Promise.all(gone.map((p) => this.client?.deletePath(p)));
      this.log.warn({ withdrawn: gone.map((p) => p.prefix) }, "fast withdraw");
    }
    this.controller.trigger("health");
  }

  /** Withdraws every path, stops gobgpd and removes everything egressd owns in the kernel. */
  async stop(): Promise<void> {
    this.controller.stop();
    await this.controller.idle();
    if (this.client?.isReady) {
      try {
        await new PathReconciler(this.client).reconcile([]);
      } catch (e) {
        this.log.warn({ err: e }, "could not withdraw paths before stopping");
      }
    }
    await this.client?.close();
    await this.gobgpd?.stop();
    const summary = await teardownKernel({ nft: this.nft });
    this.nft.close();
    this.log.info({ removed: summary }, "removed everything egressd owned");
  }
}
