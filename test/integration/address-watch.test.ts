// The egress IPs' presence as routing/address-watch.ts lists it, in a
// namespace of its own: a new address's absence told only after the grace,
// additions and deletions, an address on two interfaces, an interface
// deleted under its addresses, and a burst of 800 changes among them.
import test from "ava";
import { spawn } from "node:child_process";
import { writeFileSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { sandbox } from "../helpers/netns.js";
import { REPO } from "../helpers/paths.js";

test("an address's presence follows the namespace's listings, through a burst of 800 changes", async (t) => {
  const sb = sandbox(t, "aw");
  const ns = await sb.addNode("w");
  for (const d of ["d0", "d1"]) {
    // veth pairs: this kernel may have no dummy driver.
    await sb.exec("w", ["ip", "link", "add", d, "type", "veth", "peer", "name", `${d}p`]);
    await sb.exec("w", ["ip", "link", "set", d, "up"]);
  }
  const watched = ["192.0.2.7", "2001:db8::7", "198.51.100.9"];
  const graceMs = 1000;
  const started = Date.now();
  const child = spawn(
    "ip",
    [
      "netns",
      "exec",
      ns,
      process.execPath,
      join(REPO, "dist/test/fixtures/address-watch.js"),
      String(graceMs),
      ...watched,
    ],
    { stdio: ["pipe", "pipe", "inherit"] },
  );
  t.teardown(() => child.kill("SIGKILL"));
  const lines: string[] = [];
  let seen = 0;
  createInterface({ input: child.stdout! }).on("line", (l) => lines.push(l));
  /** The next line after those already taken that satisfies `want`, within 10 s. */
  const next = async (what: string, want: (l: string) => boolean): Promise<string> => {
    for (const end = Date.now() + 10_000; Date.now() < end; ) {
      while (seen < lines.length) {
        const l = lines[seen++]!;
        if (want(l)) return l;
      }
      await new Promise((r) => setTimeout(r, 10));
    }
    throw new Error(`timed out waiting for ${what}; lines: ${lines.join(" | ")}`);
  };
  const told = (address: string, present: boolean) =>
    next(`${address} ${present ? "present" : "absent"}`, (l) => l === JSON.stringify({ address, present }));

  // None of them is configured, which is told once the grace has passed
  // (a reconcile may still be adding a new egress IP).
  for (const a of watched) await told(a, false);
  t.true(Date.now() - started >= graceMs, "no absence told within the grace");

  await sb.exec("w", ["ip", "addr", "add", "192.0.2.7/32", "dev", "d0"]);
  await told("192.0.2.7", true);
  await sb.exec("w", ["ip", "-6", "addr", "add", "2001:db8::7/128", "dev", "d0", "nodad"]);
  await told("2001:db8::7", true);

  // On two interfaces: deleting it from one leaves it present. A watched
  // address added after that deletion is told by a listing made after it,
  // and nothing was said of 192.0.2.7 up to then.
  await sb.exec("w", ["ip", "addr", "add", "192.0.2.7/32", "dev", "d1"]);
  await sb.exec("w", ["ip", "addr", "del", "192.0.2.7/32", "dev", "d0"]);
  await sb.exec("w", ["ip", "addr", "add", "198.51.100.9/32", "dev", "d1"]);
  const mark = seen;
  await told("198.51.100.9", true);
  t.false(
    lines.slice(mark, seen).some((l) => l.includes("192.0.2.7")),
    "no change was told while the address was still on d1",
  );
  await sb.exec("w", ["ip", "addr", "del", "192.0.2.7/32", "dev", "d1"]);
  await told("192.0.2.7", false);
  await sb.exec("w", ["ip", "addr", "del", "198.51.100.9/32", "dev", "d1"]);
  await told("198.51.100.9", false);

  // The interface goes, its addresses with it.
  await sb.exec("w", ["ip", "link", "del", "d0"]);
  await told("2001:db8::7", false);

  // A burst: 400 other addresses come and go, one watched address is added
  // and another deleted. The listing after it is right.
  await sb.exec("w", ["ip", "addr", "add", "192.0.2.7/32", "dev", "d1"]);
  await told("192.0.2.7", true);
  const dir = mkdtempSync(join(tmpdir(), "egressd-aw-"));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const batch = join(dir, "batch");
  const noise = Array.from({ length: 400 }, (_, i) => `10.77.${i >> 8}.${i & 255}/32`);
  writeFileSync(
    batch,
    [
      ...noise.map((a) => `addr add ${a} dev d1`),
      "addr add 198.51.100.9/32 dev d1",
      ...noise.map((a) => `addr del ${a} dev d1`),
      "addr del 192.0.2.7/32 dev d1",
    ].join("\n") + "\n",
  );
  await sb.exec("w", ["ip", "-batch", batch]);
  // One listing may tell both, in either order.
  const after = seen;
  await told("198.51.100.9", true);
  seen = after;
  await told("192.0.2.7", false);
  t.false(
    lines.some((l) => l.startsWith('{"error"')),
    lines.filter((l) => l.startsWith('{"error"')).join("\n"),
  );
});
