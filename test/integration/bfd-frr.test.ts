// egressd's BFD against FRR's bfdd, the sessions on node:dgram (the scenarios: test/helpers/bfd-frr-scenarios.ts).
import { bfdFrrScenarios } from "../helpers/bfd-frr-scenarios.js";

bfdFrrScenarios({ transport: "udp" });
