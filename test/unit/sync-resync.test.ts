// The resync wait of a (re)started gateway (daemon/connection-sync.ts,
// Conntrackd.resync), against a scripted stand-in for conntrackd's control
// commands: `-s` prints counters that grow as a peer's answers would, `-n`
// (ask the peers again) is recorded. The real conntrackd's answers are
// measured in the lab (bench/connections, "resync"); this pins the logic
// that decides when the answers are complete, on a clock driven by the test,
// and how the library's refusals (read from the daemon's standard error)
// reach conntrackd's count of failed injections.
import test from "ava";
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pino } from "pino";
import type { ConnectionSyncConfig } from "../../core/config/sync-schema.js";
import { conntrackdChannels } from "../../core/plan/sync.js";
import { Conntrackd } from "../../daemon/connection-sync.js";

const SYNC: ConnectionSyncConfig = {
  interface: "eth2",
  address: "10.1.9.1",
  peers: [{ name: "gw-a2", address: "10.1.9.2", egressIPs: ["192.0.2.12"] }],
  sources: ["10.244.0.0/16"],
};

/**
 * A stand-in for conntrackd: run without a command it waits (the daemon);
 * `-s` counts its reads in DIR/reads and prints counters from the script in
 * DIR/script ("reads:created" pairs, the last one reached wins, with "+N"
 * meaning N reads after the first `-n`); `-n` is counted in DIR/asked.
 */
const FAKE = `#!/usr/bin/env node
const fs = require("fs"), path = require("path");
const [, , , conf, cmd] = process.argv;
const dir = path.dirname(conf);
const file = (n) => path.join(dir, n);
const num = (n) => (fs.existsSync(file(n)) ? Number(fs.readFileSync(file(n), "utf8")) : 0);
if (cmd === undefined) {
  // What the daemon prints on standard error as it starts (the library's lines), from DIR/stderr.
  if (fs.existsSync(file("stderr"))) process.stderr.write(fs.readFileSync(file("stderr"), "utf8"));
  setInterval(() => {}, 1 << 30);
}
else if (cmd === "-n") fs.writeFileSync(file("asked"), String(num("asked") + 1));
else if (cmd === "-s") {
  const reads = num("reads") + 1;
  fs.writeFileSync(file("reads"), String(reads));
  if (num("asked") > 0 && !fs.existsSync(file("askedAt"))) fs.writeFileSync(file("askedAt"), String(reads));
  const askedAt = fs.existsSync(file("askedAt")) ? num("askedAt") : Infinity;
  let created = 0;
  for (const step of fs.readFileSync(file("script"), "utf8").trim().split(" ")) {
    const [at, value] = step.split(":");
    const due = at.startsWith("+") ? askedAt + Number(at.slice(1)) : Number(at);
    if (reads >= due) created = Number(value);
  }
  const row = (label, n) => label + ":\\t\\t" + n + "\\tfailed:\\t0";
  process.stdout.write([
    "cache internal:", "current active connections:\\t0", row("connections created", 0), row("connections updated", 0), row("connections destroyed", 0), "",
    "external inject:", row("connections created", created), row("connections updated", 0), row("connections destroyed", 0), "",
    "UDP traffic (active device=eth2):", "  10 Bytes sent  10 Bytes recv", "  1 Pckts sent  5 Pckts recv", "",
    "message tracking:", "  0 Malformed msgs  0 Lost msgs", "",
  ].join("\\n"));
}
`;

async function resyncWith(script: string, timeoutMs = 3000, stderr?: string) {
  const dir = mkdtempSync(join(tmpdir(), "egressd-resync-"));
  const binary = join(dir, "conntrackd");
  writeFileSync(binary, FAKE);
  chmodSync(binary, 0o755);
  writeFileSync(join(dir, "script"), script);
  if (stderr !== undefined) writeFileSync(join(dir, "stderr"), stderr);
  // Each reading of the clock is 100 ms later: the quiet period (1000 ms) is ten readings.
  let clock = 0;
  const channel = conntrackdChannels(SYNC, (n) => ({
    lockFile: join(dir, `${n}.lock`),
    socket: join(dir, `${n}.ctl`),
  }))[0]!;
  const c = new Conntrackd(
    {
      config: { ...SYNC, resyncTimeoutMs: timeoutMs },
      runDir: dir,
      log: pino({ level: "silent" }),
      binary,
      now: () => (clock += 100),
    },
    channel,
  );
  const ready = new Promise<void>((resolve) => c.once("ready", () => resolve()));
  await c.start();
  await ready;
  const failed = (await c.stats()).injected.failed;
  await c.stop();
  const asked = existsSync(join(dir, "asked")) ? Number(readFileSync(join(dir, "asked"), "utf8")) : 0;
  rmSync(dir, { recursive: true, force: true });
  return { result: c.lastResync!, asked, failed };
}

test("the first answer's quiet is not the end: the gateway asks again and waits for the complete answer", async (t) => {
  // The peer's conntrackd sends its own 100 at once; the reloaded whole table (250) comes only
  // after the second request, three readings later.
  const { result, asked } = await resyncWith("3:100 +3:250");
  t.is(asked, 1, "asked again once");
  t.is(result.entries, 250, "the whole table, not the first answer's 100");
  t.true(result.heard);
});

test("a peer with nothing more to send: the wait ends resyncTimeoutMs after the second request", async (t) => {
  const { result, asked } = await resyncWith("3:100", 2000);
  t.is(asked, 1);
  t.is(result.entries, 100);
  // Heard at 0.3 s, asked after 1 s of quiet (about 1.3 s), given up 2 s later (the clock moves
  // 100 ms a reading).
  t.true(result.ms >= 3200 && result.ms <= 4000, `${result.ms} ms`);
});

test("states the library wrote at once and the kernel refused count as failed injections", async (t) => {
  // conntrackd counted them as created (its own count of failures is 0 here); the library's
  // running total, on its standard error, is added. The last line's total is the one.
  const line = (n: number, all: number) =>
    `egressd-event-pace: [ERROR] the kernel refused ${n} of 40 peers' states written at once (Cannot allocate memory); ${all} refused in all\n`;
  const { failed } = await resyncWith("3:100", 1000, line(3, 3) + line(4, 7));
  t.is(failed, 7);
});
