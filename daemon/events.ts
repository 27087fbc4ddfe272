// What a running gateway tells observers (metrics, logs, /status): typed
// events emitted by daemon/gateway.ts. Observers never change the gateway.
import type { SessionState } from "../core/bgp.js";
import type { ProbeSample, ProbeTransition } from "../health/prober.js";
import type { ReconcileResult } from "./controller.js";

export type WithdrawReason = "probe" | "bfd" | "drain" | "config" | "self-check" | "fail-safe" | "sync";

export interface GatewayEvents {
  /** A reconcile finished (also when nothing changed). */
  reconciled: [ReconcileResult];
  /** A probe (configured or self-check) changed state. */
  probe: [ProbeTransition];
  /** Health was evaluated (BGP planned again) for these reasons: once per burst of probe transitions. */
  health: [{ reasons: string[] }];
  /** One probe result; rttMs when it succeeded and the kind measures it. */
  probeSample: [ProbeSample];
  /** A BGP neighbour changed state (as gobgpd reports it). */
  peer: [{ name: string; address: string; state: SessionState }];
  /** A BFD session changed state. */
  bfd: [{ name: string; peer: string; state: "up" | "down" | "init" | "admin-down"; reason?: string }];
  /** After each BGP reconcile: how many paths gobgpd advertises now. */
  advertised: [{ paths: number }];
  /** Paths taken back, with why. */
  withdrawn: [{ prefixes: string[]; reason: WithdrawReason }];
  /** Traffic was moved away from (part of) this gateway, by what. */
  failover: [{ trigger: "probe" | "bfd" | "drain" | "self-check" | "fail-safe" }];
  /**
   * A config reload was attempted: applied; unchanged; invalid (validation);
   * refused (valid, but could not be built, or needs a restart: the running
   * config stays); failed (switched, but applying it failed; retried).
   */
  reload: [{ result: "applied" | "unchanged" | "invalid" | "refused" | "failed" }];
  /** gobgpd (managed) was restarted after it exited. */
  gobgpdRestart: [{ pid: number; restarts: number }];
  /** The data-plane process ended unasked and was started again (restored: with the committed config). */
  dataplaneRestart: [{ reason: string; restarts: number; restored: boolean }];
  /** The gateway starts draining (SIGTERM / egressd drain). */
  draining: [{ periodMs: number }];
}
