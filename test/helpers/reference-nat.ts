// The reference NAT plan of the data-plane tests: three policies (two IPv4
// egress IPs on two uplinks, one IPv6), an exception, and sources of both
// families. The rendering tests and the integration topology share it.
import type { NatPlan } from "../../core/state.js";

export function referenceNat(): NatPlan {
  return {
    markMask: 0xff00,
    policies: [
      { name: "a", family: 4, egressIP: "192.0.2.11", mark: 0x100, uplinkInterface: "u1" },
      { name: "b", family: 4, egressIP: "192.0.2.12", mark: 0x200, uplinkInterface: "u2" },
      { name: "v6", family: 6, egressIP: "2001:db8:e::11", mark: 0x300, uplinkInterface: "u1" },
    ],
    classes: [
      {
        id: 1,
        family: 4,
        destinations: [
          { interval: "198.51.100.0/24", policy: "b" },
          { interval: "203.0.113.0-203.0.113.127", policy: "a" },
          { interval: "203.0.113.128/25", policy: null },
        ],
      },
      { id: 2, family: 6, destinations: [{ interval: "2001:db8:100::/48", policy: "v6" }] },
    ],
    sources: [
      { family: 4, interval: "10.244.1.10", classId: 1 },
      { family: 4, interval: "10.244.2.0/24", classId: 1 },
      { family: 6, interval: "fd00:244::10", classId: 2 },
    ],
  };
}
