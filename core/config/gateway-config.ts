// The config as the gateway reads it: every optional section typed.
import type { BgpConfig } from "./bgp-schema.js";
import type { DrainConfig, HttpConfig, ProbeConfig } from "./ops-schema.js";
import type { Config } from "./schema.js";

export type GatewayConfig = Config & {
  bgp?: BgpConfig;
  probes?: ProbeConfig[];
  drain?: DrainConfig;
  http?: HttpConfig;
};
