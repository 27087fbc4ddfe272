// The core's one entry point: every input the daemon gathers, as one plain
// value, in; the whole desired state (kernel, BGP, and the health view that
// /status shows) out. Pure: no clock, no I/O, no state between calls.
//
//   const planned = planStatic(config);            // once per config
//   const want = planDesired({ config, health }, planned);
//   want.kernel, want.bgp, want.health
//
// The part that depends on the config alone (the kernel plan and the BGP
// advertise scope) is split out so that a health change, which happens far
// more often than a reload, replans only the BGP paths.
import type { BgpConfig } from "../config/bgp-schema.js";
import type { GatewayConfig } from "../config/gateway-config.js";
import type { KernelState } from "../state.js";
import { advertiseScope, planBgp, type AdvertiseScope, type BgpDesired } from "./bgp.js";
import { healthFrom, type HealthView } from "./health.js";
import { plan } from "./kernel.js";

/** What changes at run time, as the daemon last saw it. */
export interface HealthInputs {
  /** Each configured probe's state ("up", "down", "held", "unknown"); absent counts as unknown. */
  probes: ReadonlyMap<string, string>;
  /** Self-checks that are failing now. */
  selfDown: readonly string[];
  /** BGP peers whose session BFD has closed. */
  downPeers: ReadonlySet<string>;
  /** The gateway is draining: destinations are withdrawn, egress IPs stay. */
  draining: boolean;
}

export interface Inputs {
  /** The config file, validated. */
  config: GatewayConfig;
  health: HealthInputs;
}

export interface Desired {
  kernel: KernelState;
  /** Undefined without a bgp section. */
  bgp: BgpDesired | undefined;
  /** Which policies are withdrawn and why (also what /status shows). */
  health: HealthView;
}

/** What depends on the config alone. */
export interface Planned {
  config: GatewayConfig;
  kernel: KernelState;
  scope: AdvertiseScope;
}

export const NO_HEALTH_INPUTS: HealthInputs = {
  probes: new Map(),
  selfDown: [],
  downPeers: new Set(),
  draining: false,
};

export function planStatic(config: GatewayConfig): Planned {
  return { config, kernel: plan(config), scope: advertiseScope(config) };
}

/** The desired state for `inputs`; `planned` must be planStatic(inputs.config) (computed here when absent). */
export function planDesired(inputs: Inputs, planned?: Planned): Desired {
  const p = planned?.config === inputs.config ? planned : planStatic(inputs.config);
  const { config, health: h } = inputs;
  const health = healthFrom(config, h.probes, {
    selfDown: h.selfDown,
    downPeers: h.downPeers,
    draining: h.draining,
  });
  const bgp = config.bgp
    ? planBgp(config as GatewayConfig & { bgp: BgpConfig }, p.kernel, health, p.scope)
    : undefined;
  return { kernel: p.kernel, bgp, health };
}
