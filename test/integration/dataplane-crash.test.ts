// Crash-only behaviour and ownership: idempotent reconciles, kill -9 at random
// moments then restart converges with nothing stale or duplicated, and what
// egressd does not own survives both reconcile and teardown.
import test from "ava";
import { spawn } from "node:child_process";
import type { KernelState } from "../../core/state.js";
import { sandbox, type Sandbox } from "../helpers/netns.js";
import {
  FIXTURE,
  addPolicyC,
  buildTopology,
  fixture,
  referenceState,
  seenBy,
  startServer,
  stateFile,
} from "../helpers/dataplane-topology.js";

interface Changes {
  addresses: { added: string[]; removed: string[] };
  nat: { action: string };
  routes: { added: string[]; removed: string[] };
  rules: { added: string[]; removed: string[] };
}
const nothingChanged = (c: Changes) =>
  c.nat.action === "none" &&
  c.addresses.added.length +
    c.addresses.removed.length +
    c.routes.added.length +
    c.routes.removed.length +
    c.rules.added.length +
    c.rules.removed.length ===
    0;

/** What egressd owns in the namespace, as sorted text lines (for exact comparisons). */
async function owned(
  s: Sandbox,
): Promise<{ addrs: string[]; routes: string[]; rules: string[]; table: string }> {
  const lines = (x: string) =>
    x
      .split("\n")
      .map((l) => l.trim())
      .filter(Boolean)
      .sort();
  const addrs = (await fixture(s, "gw", ["owned-addresses"])) as string[];
  const r4 = await s.exec("gw", ["ip", "-4", "route", "show", "table", "all", "proto", "201"]);
  const r6 = await s.exec("gw", ["ip", "-6", "route", "show", "table", "all", "proto", "201"]);
  const rulesOf = async (f: string) =>
    (JSON.parse((await s.exec("gw", ["ip", "-j", f, "rule", "show"])).stdout) as Record<string, unknown>[])
      .filter((r) => r.protocol === "201")
      .map((r) => JSON.stringify(r));
  const table = await s.tryExec("gw", ["/usr/sbin/nft", "list", "table", "inet", "egressd"]);
  return {
    addrs,
    routes: lines(r4.stdout + r6.stdout),
    rules: [...(await rulesOf("-4")), ...(await rulesOf("-6"))].sort(),
    table: table.code === 0 ? table.stdout : "",
  };
}

/** A second state that differs from the reference everywhere (addresses, routes, rules, policies, sources). */
function otherState(): KernelState {
  const st = addPolicyC(referenceState(), "192.0.2.128/25");
  for (let i = 0; i < 2000; i++)
    st.nat.sources.push({ family: 4, interval: `10.245.${i >> 8}.${i & 255}`, classId: 1 });
  return st;
}

test("reconcile is idempotent and teardown removes only what egressd owns", async (t) => {
  const s = sandbox(t, "dpf");
  await buildTopology(s);
  // foreign state egressd must never touch: an nft table, a route inside one of egressd's tables,
  // a rule, and the same address egressd wants, configured by the host first
  await s.sh(
    "gw",
    `/usr/sbin/nft add table inet foreign; /usr/sbin/nft add chain inet foreign c '{ type filter hook forward priority 0; policy accept; }'
     /usr/sbin/nft add rule inet foreign c counter
     ip route add 10.99.0.0/24 via 100.64.1.2 dev u1 table 100
     ip route add 10.98.0.0/24 via 100.64.1.2 dev u1
     ip rule add fwmark 0x100/0xff00 lookup 100 pref 999
     ip addr add 192.0.2.12/32 dev lo`,
  );
  const file = stateFile(referenceState());
  const first = (await fixture(s, "gw", ["apply", file])) as Changes;
  t.false(nothingChanged(first));
  t.deepEqual(first.addresses.added.sort(), ["192.0.2.11/32 dev lo", "2001:db8:e::11/128 dev lo"]);
  const second = (await fixture(s, "gw", ["apply", file])) as Changes;
  t.true(nothingChanged(second), JSON.stringify(second));
  type Checks = Record<"nftTable" | "forwarding" | "address", { ok: boolean; reason?: string }>;
  const programmed = (await fixture(s, "gw", ["self-checks", "192.0.2.11"])) as Checks;
  t.deepEqual(programmed, { nftTable: { ok: true }, forwarding: { ok: true }, address: { ok: true } });

  const down = (await fixture(s, "gw", ["teardown"])) as {
    nftTable: boolean;
    addresses: string[];
    routes: string[];
    rules: string[];
  };
  t.true(down.nftTable);
  const removed = (await fixture(s, "gw", ["self-checks", "192.0.2.11"])) as Checks;
  t.deepEqual(removed.nftTable, { ok: false, reason: "nft table inet egressd is missing" });
  t.false(removed.address.ok);
  t.is(down.routes.length, 3);
  t.is(down.rules.length, 3);
  t.is(down.addresses.length, 2);
  const left = await owned(s);
  t.deepEqual(left, { addrs: [], routes: [], rules: [], table: "" });
  // the foreign objects survived
  t.is((await s.tryExec("gw", ["/usr/sbin/nft", "list", "chain", "inet", "foreign", "c"])).code, 0);
  t.regex((await s.exec("gw", ["ip", "route", "show", "table", "100"])).stdout, /10\.99\.0\.0\/24/);
  t.regex((await s.exec("gw", ["ip", "route", "show"])).stdout, /10\.98\.0\.0\/24/);
  t.regex((await s.exec("gw", ["ip", "rule", "show"])).stdout, /999:.*fwmark 0x100\/0xff00 lookup 100/);
  t.regex((await s.exec("gw", ["ip", "-4", "addr", "show", "dev", "lo"])).stdout, /192\.0\.2\.12\/32/);
});

test("kill -9 at random moments, then a restart converges with nothing stale or duplicated", async (t) => {
  const s = sandbox(t, "dpk");
  await buildTopology(s);
  await startServer(s);
  const a = stateFile(referenceState());
  const b = stateFile(otherState());
  await s.sh(
    "gw",
    "/usr/sbin/nft add table ip foreign; ip route add 10.97.0.0/24 via 100.64.1.2 dev u1 table 101",
  );

  for (let round = 0; round < 6; round++) {
    const child = spawn("ip", ["netns", "exec", s.ns("gw"), "node", FIXTURE, "apply-loop", b, a], {
      stdio: ["ignore", "pipe", "pipe"],
    });
    await new Promise<void>((resolve, reject) => {
      child.stdout.once("data", () => resolve());
      child.once("exit", (code) => reject(new Error(`apply-loop exited early (${code})`)));
    });
    await new Promise((r) => setTimeout(r, 20 + Math.floor(Math.random() * 400)));
    child.kill("SIGKILL");
    await new Promise((r) => child.once("exit", r));
  }

  // restart with the reference state: converge, then the next run changes nothing
  const restart = (await fixture(s, "gw", ["apply", a])) as Changes;
  t.truthy(restart);
  const again = (await fixture(s, "gw", ["apply", a])) as Changes;
  t.true(nothingChanged(again), JSON.stringify(again));

  const o = await owned(s);
  t.deepEqual(o.addrs, ["192.0.2.11/32 dev lo", "192.0.2.12/32 dev lo", "2001:db8:e::11/128 dev lo"]);
  t.is(o.routes.length, 3, o.routes.join("\n"));
  t.is(o.rules.length, 3, o.rules.join("\n"));
  t.notRegex(o.table, /192\.0\.2\.13|10\.245\./);
  t.regex(o.table, /10\.244\.1\.10/);
  // traffic works as specified after the crashes
  t.is(await seenBy(s, "203.0.113.10", "10.244.1.10"), "192.0.2.11");
  t.is(await seenBy(s, "198.51.100.10", "10.244.1.10"), "192.0.2.12");
  // foreign objects survived
  t.is((await s.tryExec("gw", ["/usr/sbin/nft", "list", "table", "ip", "foreign"])).code, 0);
  t.regex((await s.exec("gw", ["ip", "route", "show", "table", "101"])).stdout, /10\.97\.0\.0\/24/);
});
