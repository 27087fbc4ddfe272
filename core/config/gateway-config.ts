// The config as the gateway reads it: every optional section typed.
import type { BgpConfig } from "./bgp-schema.js";
import type { DrainConfig, HttpConfig, ProbeConfig } from "./ops-schema.js";
import type { Config } from "./schema.js";

/** Attributes of an advertised path. */
export interface PathAttributes {
  med?: number;
  asPathPrepend?: number;
  communities?: string[];
}

export type GatewayConfig = Config & {
  bgp?: BgpConfig;
  probes?: ProbeConfig[];
  drain?: DrainConfig;
  http?: HttpConfig;
  /**
   * What of egressIPGroups and egressIPs came from the API's egress IP groups
   * (core/k8s/ip-groups.ts withClaims), not from the file. Never in a file.
   */
  claimed?: {
    groups: string[];
    addresses: string[];
    /** BGP attributes of claimed addresses, by address: their group's for this gateway's site. */
    attributes?: Record<string, PathAttributes>;
  };
};
