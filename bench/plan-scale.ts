// plan() at scale: N pod IPs (random, distinct, inside a /14 pod network)
// spread over several policies, plus CIDR-level policies and exceptions.
// Prints plan() time, the time to validate the same config from YAML text
// (loadConfig, which includes the overlap check), and the planning a health
// change costs on the main thread (planDesired on the view).
//   npx tsc -p tsconfig.json && node dist/bench/plan-scale.js [N...]
import { fileURLToPath } from "node:url";
import { stringify } from "yaml";
import { loadConfig } from "../inputs/config/load.js";
import type { Config } from "../core/config/schema.js";
import { plan } from "../core/plan/kernel.js";
import { podAddresses } from "./scale-config.js";
import { NO_HEALTH_INPUTS, planDesired, planStatic, viewOf } from "../core/plan/index.js";
import { median } from "../lib/stats.js";

export function scaleConfig(n: number, policies = 8): Config {
  const lists = podAddresses(n, policies);
  return {
    gateway: { name: "gw-bench", site: "dc-a" },
    egressIPs: Array.from({ length: policies }, (_, i) => ({ address: `192.0.2.${i + 1}`, interface: "lo" })),
    uplinks: [{ name: "tor", interface: "eth1", nextHop: "10.1.1.0" }],
    policies: [
      ...lists.map((sources, i) => ({
        name: `pods-${i}`,
        sources,
        destinations: [`203.0.${113 + (i % 4)}.0/24`, "198.51.100.0/24"],
        exceptions: ["198.51.100.128/25"],
        egressIP: `192.0.2.${i + 1}`,
        uplink: "tor",
      })),
      {
        name: "all-pods",
        sources: ["10.244.0.0/14"],
        destinations: ["0.0.0.0/0"],
        exceptions: ["10.0.0.0/8"],
        egressIP: "192.0.2.1",
        uplink: "tor",
      },
      { name: "cluster", sources: ["10.244.0.0/14"], destinations: ["10.96.0.0/12"], gateway: false },
    ],
  };
}

function time<T>(f: () => T): [T, number] {
  const t0 = process.hrtime.bigint();
  const r = f();
  return [r, Number(process.hrtime.bigint() - t0) / 1e6];
}

function main(sizes: number[]): void {
  for (const n of sizes.length > 0 ? sizes : [1000, 10000, 100000]) {
    const config = scaleConfig(n);
    plan(config); // warm up
    const runs = n >= 100000 ? 3 : 5;
    let best = Infinity;
    let state;
    for (let i = 0; i < runs; i++) {
      const [s, ms] = time(() => plan(config));
      state = s;
      best = Math.min(best, ms);
    }
    const text = stringify(config);
    const [loaded, loadMs] = time(() => loadConfig(text));
    if (!loaded.ok) throw new Error(`bench config invalid: ${JSON.stringify(loaded.errors.slice(0, 3))}`);
    // A health change: the main thread replans BGP from the view alone.
    const bgp = {
      asn: 65001,
      routerId: "10.1.1.1",
      peers: [{ name: "tor", address: "10.1.1.0", asn: 65000 }],
    };
    const view = viewOf(planStatic({ ...config, bgp }));
    const down = { ...NO_HEALTH_INPUTS, probes: new Map([["none", "up"]]) };
    const health = [];
    for (let i = 0; i < 50; i++) health.push(time(() => planDesired({ view, health: down }))[1]);
    console.log(
      `sources=${String(n).padStart(6)}  plan()=${best.toFixed(1).padStart(7)} ms (best of ${runs})  ` +
        `nft source elements=${state!.nat.sources.length}  classes=${state!.nat.classes.length}  ` +
        `loadConfig(yaml)=${loadMs.toFixed(0)} ms  health change (planDesired on the view)=` +
        `${median(health).toFixed(2)} ms median`,
    );
  }
}

if (process.argv[1] !== undefined && fileURLToPath(import.meta.url) === process.argv[1]) {
  main(process.argv.slice(2).map(Number));
}
