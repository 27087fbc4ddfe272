// Local repair's table (routing/local-repair.ts) in the kernel: three
// namespaces, a pod's side (p), the gateway (g) with its uplink from p and a
// sync link to its peer (q). While a destination is repaired, packets from
// the pod to it leave g for q untouched (they never reach g's IP stack, so
// no conntrack and no NAT there); other destinations are not; with nothing
// repaired the table, and its hook on the uplink, are gone.
import test from "ava";
import { spawn } from "node:child_process";
import { createInterface } from "node:readline";
import { sandbox } from "../helpers/netns.js";
import { REPO } from "../helpers/paths.js";
import type { RepairPlan } from "../../core/plan/repair.js";

const NFT = "/usr/sbin/nft";

test("repaired destinations go from the uplink to the sync peer untouched, others do not, and nothing stays", async (t) => {
  const sb = sandbox(t, "lr");
  await sb.addNode("p");
  const g = await sb.addNode("g", { forwarding: true });
  await sb.addNode("q", { forwarding: true });
  await sb.link("p", "p0", "g", "up0");
  await sb.link("g", "sync0", "q", "sync0");
  await sb.sh("p", "ip addr add 10.244.1.10/24 dev p0 && ip route add default via 10.244.1.1");
  await sb.sh("g", "ip addr add 10.244.1.1/24 dev up0 && ip addr add 10.9.0.1/24 dev sync0");
  await sb.sh("q", "ip addr add 10.9.0.2/24 dev sync0");
  // What reaches each of g's and q's IP stacks from the pod, by destination.
  const counters = (node: string) =>
    sb.sh(
      node,
      `${NFT} -f - <<'END'\ntable inet seen {\n  chain pre {\n    type filter hook prerouting priority -400;\n` +
        `    ip saddr 10.244.1.10 ip daddr 203.0.113.10 counter\n    ip saddr 10.244.1.10 ip daddr 198.51.100.10 counter\n  }\n}\nEND`,
    );
  await counters("g");
  await counters("q");
  const seen = async (node: string): Promise<{ web: number; other: number }> => {
    const r = await sb.exec(node, [NFT, "-j", "list", "table", "inet", "seen"]);
    const packets = (r.stdout.match(/"packets": (\d+)/g) ?? []).map((m) => Number(m.split(": ")[1]));
    return { web: packets[0] ?? 0, other: packets[1] ?? 0 };
  };
  const ping = (to: string) => sb.tryExec("p", ["ping", "-c", "3", "-i", "0.05", "-W", "0.2", to]);

  const child = spawn(
    "ip",
    ["netns", "exec", g, process.execPath, `${REPO}/dist/test/fixtures/local-repair.js`],
    {
      stdio: ["pipe", "pipe", "inherit"],
    },
  );
  t.teardown(() => child.kill("SIGKILL"));
  const answers = createInterface({ input: child.stdout! })[Symbol.asyncIterator]();
  const apply = async (plan: RepairPlan | null) => {
    child.stdin!.write(JSON.stringify(plan) + "\n");
    const { value } = await answers.next();
    return JSON.parse(value as string) as { change?: string; error?: string; prefixes?: string[] };
  };
  const plan = (prefixes4: string[]): RepairPlan => ({
    via: { address: "10.9.0.2", interface: "sync0" },
    uplinks: ["up0"],
    prefixes4,
  });
  const table = () => sb.tryExec("g", [NFT, "list", "table", "netdev", "egressd_repair"]);

  t.deepEqual(await apply(plan([])), { change: "none", prefixes: [] }, "nothing to repair, no table");
  t.not((await table()).code, 0);

  t.deepEqual(await apply(plan(["203.0.113.0/24"])), { change: "applied", prefixes: ["203.0.113.0/24"] });
  t.regex((await table()).stdout, /hook ingress device "up0"/);
  await ping("203.0.113.10");
  await ping("198.51.100.10");
  t.deepEqual(
    await seen("q"),
    { web: 3, other: 0 },
    "the repaired destination's packets, and only they, reach the peer",
  );
  t.deepEqual(await seen("g"), { web: 0, other: 3 }, "they never entered the gateway's own IP stack");

  t.deepEqual(
    await apply(plan(["203.0.113.0/24"])),
    { change: "none", prefixes: ["203.0.113.0/24"] },
    "the same plan again",
  );

  t.deepEqual(await apply(null), { change: "removed", prefixes: [] });
  t.not((await table()).code, 0, "the table and its hook are gone");
  await ping("203.0.113.10");
  t.deepEqual(await seen("q"), { web: 3, other: 0 }, "nothing more reaches the peer");
  t.deepEqual(await seen("g"), { web: 3, other: 3 }, "the gateway's own stack sees them again");
});
