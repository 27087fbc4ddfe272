// The /status snapshot of a gateway, from what the gateway knows: a pure
// function of its parts, so the gateway only gathers them.
import type { BgpPath, SessionState } from "../core/bgp.js";
import type { BfdManagerStats, BfdSessionInfo } from "../health/bfd/manager.js";
import type { ProbeStatus } from "../health/prober.js";
import type { ReconcileResult } from "./controller.js";
import type { ConfigView, PlanView } from "../core/plan/index.js";
import { affectsText, type HealthView } from "../core/plan/health.js";
import { actionOf } from "../core/plan/model.js";
import type { StatusSnapshot } from "./status.js";
import { VERSION } from "./version.js";

export interface StatusParts {
  config: ConfigView;
  kernel: Pick<PlanView["kernel"], "addresses">;
  /** The last kernel apply succeeded. */
  kernelOk: boolean;
  health: HealthView;
  draining: boolean;
  startedAt: Date;
  probes: ProbeStatus[];
  peerStates: ReadonlyMap<string, SessionState>;
  bfd: BfdSessionInfo[];
  bfdStats: BfdManagerStats | undefined;
  advertised: BgpPath[];
  lastReconcile: (ReconcileResult & { at: Date }) | undefined;
  /** With connection sync: whether the first resync is done (not ready before). */
  syncResynced?: boolean;
}

export function statusView(x: StatusParts, now = new Date()): StatusSnapshot {
  const cfg = x.config;
  const established = [...x.peerStates.values()].some((s) => s === "established");
  const notReady: string[] = [];
  if (!x.kernelOk) notReady.push("data plane not programmed");
  if (cfg.bgp && !established) notReady.push("no BGP session established");
  if (x.draining) notReady.push("draining");
  if (x.syncResynced === false) notReady.push("connection state not resynced from the sync peers yet");
  const probeAffects = new Map((cfg.probes ?? []).map((p) => [p.name, affectsText(p)]));
  const bfd = new Map(x.bfd.map((s) => [s.peer, s]));
  return {
    at: now.toISOString(),
    gateway: {
      name: cfg.gateway.name,
      site: cfg.gateway.site,
      version: VERSION,
      startedAt: x.startedAt.toISOString(),
      pid: process.pid,
    },
    ready: notReady.length === 0,
    notReadyReasons: notReady,
    draining: x.draining,
    egressIPs: x.kernel.addresses.map((a) => ({ address: a.address, interface: a.interface })),
    policies: cfg.policies.map((p) => {
      const why = x.health.gatewayDown
        ? x.health.gatewayDownBy
        : x.draining
          ? ["draining"]
          : (x.health.why.get(p.name) ?? []);
      return {
        name: p.name,
        family: p.family,
        ...(p.egressIP ? { egressIP: p.egressIP } : {}),
        ...(p.uplink ? { uplink: p.uplink } : {}),
        gateway: actionOf(p) !== "Direct",
        ...(actionOf(p) === "Deny" ? { deny: true } : {}),
        advertised: actionOf(p) !== "Direct" && why.length === 0 && !!cfg.bgp,
        ...(why.length ? { withdrawnBecause: why.join(", ") } : {}),
      };
    }),
    probes: x.probes.map((s) => ({
      ...s,
      affects: probeAffects.get(s.name) ?? (s.kind === "check" ? "gateway" : "?"),
    })),
    peers: (cfg.bgp?.peers ?? []).map((p) => {
      const b = bfd.get(p.address);
      return {
        name: p.name,
        address: p.address,
        asn: p.asn,
        state: x.peerStates.get(p.address) ?? "unknown",
        ...(b
          ? {
              bfd: {
                state: b.stateName,
                diagnostic: b.localDiagText,
                rxSlackMinMs: b.rxSlackMinUs === null ? null : b.rxSlackMinUs / 1000,
                txLateMaxMs: b.txLateMaxUs / 1000,
              },
            }
          : {}),
      };
    }),
    advertised: x.advertised,
    ...(x.bfdStats
      ? {
          bfdTransport: {
            helperRestarts: Math.max(0, x.bfdStats.helperStarts - 1),
            rxTtlDropped: x.bfdStats.rxTtlDrops,
          },
        }
      : {}),
    ...(x.lastReconcile
      ? {
          lastReconcile: {
            at: x.lastReconcile.at.toISOString(),
            durationMs: x.lastReconcile.durationMs,
            reasons: x.lastReconcile.reasons,
            changes: x.lastReconcile.changes,
            errors: x.lastReconcile.errors,
          },
        }
      : {}),
  };
}
