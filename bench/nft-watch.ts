// For benchmarks: prints the addresses added to nf_tables sets in this
// network namespace, one line per kernel notification (the wall-clock time
// it was read, in milliseconds to the microsecond, then the addresses),
// after a first line "ready" once subscribed. Run inside the gateway's namespace:
//
//   ip netns exec NS node dist/bench/nft-watch.js
//
// Unlike `nft monitor`, which loads the whole ruleset when it starts (a
// second of CPU at 100k elements, on the cores the measured gateway uses),
// this reads nothing but the notifications.
import { watchAddedElements } from "../routing/nfnetlink.js";

watchAddedElements((keys) =>
  process.stdout.write(`${(performance.timeOrigin + performance.now()).toFixed(3)} ${keys.join(" ")}\n`),
);
process.stdout.write("ready\n");
process.on("SIGTERM", () => process.exit(0));
