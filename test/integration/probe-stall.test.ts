// An ICMP probe at 50 ms x 3 while the prober's own event loop stalls for a
// second, three times: the ICMP helper goes on in its own process, and the
// verdicts it wrote meanwhile are read before the watchdog is judged
// (health/deadline.ts), so not one result fails. In a file of its own: the stall would stall any
// test running beside it in the same process.
//
//   a (the helper runs here, from the test process: Prober netns option)  10.0.0.1 <--veth--> 10.0.0.2  b
import test from "ava";
import { Prober, type ProbeTransition } from "../../health/prober.js";
import { sleep, waitFor } from "../../lib/wait.js";
import { sandbox } from "../helpers/netns.js";

const canRun = process.getuid?.() === 0;
const serial = canRun ? test.serial : test.serial.skip;

serial("icmp at 50 ms x 3: the prober's event loop stalling for a second is no failure", async (t) => {
  const sb = sandbox(t, "ps");
  await sb.addNode("a");
  await sb.addNode("b");
  await sb.link("a", "a0", "b", "b0");
  await sb.exec("a", ["ip", "addr", "add", "10.0.0.1/30", "dev", "a0"]);
  await sb.exec("b", ["ip", "addr", "add", "10.0.0.2/30", "dev", "b0"]);
  const prober = new Prober({ netns: sb.ns("a") });
  t.teardown(() => prober.stop());
  const timers = { intervalMs: 50, timeoutMs: 150, rise: 1, fall: 3, holdDownMs: 0, damping: false } as const;
  prober.add({ name: "icmp", kind: "icmp", target: "10.0.0.2", ...timers });
  const transitions: ProbeTransition[] = [];
  const failed: string[] = [];
  prober.on("transition", (tr) => transitions.push(tr));
  prober.on("sample", (s) => !s.ok && failed.push(s.inconclusive ? "inconclusive" : "failed"));
  prober.start();
  await waitFor("icmp up", () => prober.state("icmp") === "up", 5000, 10);
  for (let i = 0; i < 3; i++) {
    const until = Date.now() + 1000;
    while (Date.now() < until) {
      // the prober's loop is stalled; the helper goes on in its own process
    }
    await sleep(300);
  }
  t.log(`results other than ok through the stalls: ${failed.length ? failed.join(", ") : "none"}`);
  t.deepEqual(failed, []);
  t.deepEqual(
    transitions.map((x) => x.to),
    ["up"],
  );
});
