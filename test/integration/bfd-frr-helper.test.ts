// egressd's BFD against FRR's bfdd, the sessions' periodic half in egressd-bfd
// as the daemon runs them (the scenarios: test/helpers/bfd-frr-scenarios.ts).
import { bfdFrrScenarios } from "../helpers/bfd-frr-scenarios.js";

bfdFrrScenarios({ transport: "helper" });
