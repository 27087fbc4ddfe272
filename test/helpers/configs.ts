// Small configs shared by unit tests.
import type { Config, PolicyConfig } from "../../core/config/schema.js";

/** Gateway gw-a1 with egress IPs 192.0.2.11 and 192.0.2.12 on lo, one uplink "tor", and `policies`. */
export function twoEgressIPs(policies: PolicyConfig[]): Config {
  return {
    gateway: { name: "gw-a1", site: "dc-a" },
    egressIPs: [
      { address: "192.0.2.11", interface: "lo" },
      { address: "192.0.2.12", interface: "lo" },
    ],
    uplinks: [{ name: "tor", interface: "eth1", nextHop: "10.1.1.0" }],
    policies,
  };
}
