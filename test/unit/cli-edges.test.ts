// The command line's edges: bad values are usage errors that name the value,
// never a stack trace or a wait forever; drain signals only an egressd.
import test from "ava";
import { spawn, spawnSync } from "node:child_process";
import { lstatSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { writePidFile } from "../../daemon/pidfile.js";
import { isEgressdRun } from "../../daemon/commands/drain.js";
import { loadConfig } from "../../inputs/config/load.js";

const CLI = join(import.meta.dirname, "..", "..", "daemon", "cli.js");
const cli = (...args: string[]) =>
  spawnSync(process.execPath, [CLI, ...args], { encoding: "utf8", timeout: 20_000 });

function scratch(t: { teardown: (f: () => void) => void }): string {
  const dir = mkdtempSync(join(tmpdir(), "egressd-cli-"));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

test("run --log-level foo is a usage error naming the level, without a stack trace", (t) => {
  const r = cli("run", "-c", "/nonexistent.yaml", "--log-level", "foo");
  t.is(r.status, 2);
  t.regex(
    r.stderr,
    /--log-level: "foo" is not a log level \(fatal, error, warn, info, debug, trace, silent\)/,
  );
  t.false(/\n\s+at /.test(r.stderr), r.stderr);
});

test("run --dataplane-heap-mb needs a whole number of MB, 16 or more", (t) => {
  for (const bad of ["abc", "8", "64.5"]) {
    const r = cli("run", "-c", "/nonexistent.yaml", "--dataplane-heap-mb", bad);
    t.is(r.status, 2, bad);
    t.regex(
      r.stderr,
      new RegExp(`--dataplane-heap-mb: "${bad.replace(".", "\\.")}" is not a whole number of MB, 16 or more`),
    );
    t.false(/\n\s+at /.test(r.stderr), r.stderr);
  }
});

test("drain --timeout abc is a usage error at once", (t) => {
  const r = cli("drain", "--timeout", "abc", "--run-dir", scratch(t));
  t.is(r.status, 2);
  t.regex(r.stderr, /--timeout "abc" is not a number of seconds/);
});

test("drain does not signal a pid that is not an egressd run", async (t) => {
  const dir = scratch(t);
  const victim = spawn("sleep", ["30"], { stdio: "ignore" });
  t.teardown(() => victim.kill("SIGKILL"));
  writeFileSync(join(dir, "egressd.pid"), `${victim.pid}\n`);
  const r = cli("drain", "--run-dir", dir, "--timeout", "1");
  t.is(r.status, 2);
  t.regex(r.stderr, new RegExp(`pid ${victim.pid} in .* is not an egressd run; not signalling it`));
  t.is(victim.exitCode, null);
  t.is(victim.signalCode, null, "still running");
  t.false(isEgressdRun(victim.pid!));
  t.false(isEgressdRun(process.pid), "the test runner is not one either");
});

test("the pid file replaces a symlink planted at its name instead of writing through it", (t) => {
  const dir = scratch(t);
  const target = join(dir, "precious");
  writeFileSync(target, "do not touch\n");
  symlinkSync(target, join(dir, "egressd.pid"));
  writePidFile(join(dir, "egressd.pid"), 4242);
  t.is(readFileSync(target, "utf8"), "do not touch\n");
  t.false(lstatSync(join(dir, "egressd.pid")).isSymbolicLink());
  t.is(readFileSync(join(dir, "egressd.pid"), "utf8"), "4242\n");
});

test('http.listen ":9469" (every address), as docs/operating.md says, validates', (t) => {
  const base = `gateway: { name: gw, site: a }
egressIPs: [{ address: 192.0.2.11, interface: lo }]
uplinks: [{ name: tor, interface: eth1, nextHop: 10.1.1.0 }]
policies:
  - { name: web, sources: [10.244.0.0/16], destinations: [203.0.113.0/24], egressIP: 192.0.2.11, uplink: tor }
`;
  t.true(loadConfig(`${base}http: { listen: ":9469" }\n`).ok);
  t.true(loadConfig(`${base}http: { listen: "[::]:9469" }\n`).ok);
  t.false(loadConfig(`${base}http: { listen: "localhost:9469" }\n`).ok);
});
