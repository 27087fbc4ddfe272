// For benchmarks: prints the addresses added to nf_tables sets in this
// network namespace, one line per kernel notification, after a first line
// "ready" once subscribed. Run inside the gateway's namespace:
//
//   ip netns exec NS node dist/bench/nft-watch.js
//
// Unlike `nft monitor`, which loads the whole ruleset when it starts (a
// second of CPU at 100k elements, on the cores the measured gateway uses),
// this reads nothing but the notifications.
import { watchAddedElements } from "../routing/nfnetlink.js";

watchAddedElements((keys) => process.stdout.write(`${keys.join(" ")}\n`));
process.stdout.write("ready\n");
process.on("SIGTERM", () => process.exit(0));
