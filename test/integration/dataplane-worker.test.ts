// The data-plane process (daemon/dataplane-worker.ts): its heap limit and
// restart (a config too large for the limit is refused, the process is
// started again with the committed config, and it goes on preparing), the
// file's bytes on its stdin, and its life tied to egressd's. Nothing here
// programs the kernel; the process is the daemon's own.
import test from "ava";
import { spawn, spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { DataplaneWorker } from "../../daemon/dataplane-worker.js";
import { waitFor } from "../../lib/wait.js";

/** A valid config with `sources` pod addresses in one policy (text built directly: stringify is slow at this size). */
function configText(sources: number, first = "10.64.0.1"): string {
  const lines = [
    "gateway: { name: gw-a1, site: dc-a }",
    "egressIPs:",
    "  - { address: 192.0.2.11, interface: lo }",
    "uplinks:",
    "  - { name: tor, interface: eth1, nextHop: 10.1.1.0 }",
    "policies:",
    "  - name: pods",
    "    destinations: [203.0.113.0/24]",
    "    egressIP: 192.0.2.11",
    "    uplink: tor",
    "    sources:",
    `      - ${first}`,
  ];
  for (let i = 2; i < sources; i++) lines.push(`      - 10.${64 + (i >> 16)}.${(i >> 8) & 255}.${i & 255}`);
  return `${lines.join("\n")}\n`;
}

test("a config too large for the heap limit is refused; the process comes back with the config in force", async (t) => {
  const restarts: { reason: string; restored: boolean }[] = [];
  const dp = new DataplaneWorker({ heapMb: 32, onRestart: (e) => restarts.push(e) });
  t.teardown(() => dp.close());

  const small = configText(1000);
  const first = await dp.prepare({ text: small });
  if (!first.ok) return t.fail(JSON.stringify(first.errors));
  await dp.commit(first.id);

  // 400k sources (7 MB of YAML) need several times 32 MB.
  await t.throwsAsync(dp.prepare({ text: configText(400_000) }), {
    message: /data-plane process ended: it ran out of its 32 MB heap \(--dataplane-heap-mb\)/,
  });

  // The next call waits for the new thread, which already holds the committed plan.
  const again = await dp.prepare({ text: small });
  t.true(again.ok);
  t.true(again.ok && again.unchanged, "the new process has the committed config");
  t.deepEqual(
    restarts.map((r) => r.restored),
    [true],
  );
  t.is(dp.restartCount, 1);

  const changed = await dp.prepare({ text: configText(1000, "10.64.0.0") });
  t.true(changed.ok && !changed.unchanged, "and prepares what it is given");
});

test("without a limit, the same large config prepares", async (t) => {
  const dp = new DataplaneWorker();
  t.teardown(() => dp.close());
  const big = await dp.prepare({ text: configText(400_000) });
  t.true(big.ok);
  t.is(big.ok && big.view.config.policies[0]!.sourceCount, 399_999);
});

test("moved pods come back as source counts, and the view made of them is the one the whole list gives", async (t) => {
  const dp = new DataplaneWorker();
  t.teardown(() => dp.close());
  const file = [
    "gateway: { name: gw-a1, site: dc-a }",
    "egressIPs: [{ address: 192.0.2.11, interface: lo }]",
    "uplinks: [{ name: tor, interface: eth1, nextHop: 10.1.1.0 }]",
    "egressIPGroups: [{ name: g, egressIPs: [192.0.2.11], uplink: tor }]",
    "policies: [{ name: web, sources: [10.244.0.0/16], destinations: [203.0.113.0/24], egressIP: 192.0.2.11, uplink: tor }]",
    "",
  ].join("\n");
  const pol = (name: string, dest: string, sources: string[]) => ({
    name,
    sources,
    destinations: [dest],
    action: "SNAT" as const,
    egressIPGroup: "g",
  });
  const step = async (input: Parameters<DataplaneWorker["prepare"]>[0]) => {
    const p = await dp.prepare(input);
    if (!p.ok) throw new Error(p.errors.map((e) => e.message).join("; "));
    await dp.commit(p.id);
    return p;
  };
  await step({ text: file });
  await step({
    cluster: [
      pol("ns/a:v4", "198.51.100.0/24", ["10.245.0.1", "10.245.0.2", "10.245.0.3"]),
      pol("ns/b:v4", "192.0.2.128/25", ["10.245.0.4"]),
    ],
  });
  const moved = await step({
    clusterEdits: [
      { policy: "ns/a:v4", address: "10.245.0.3", add: false },
      { policy: "ns/b:v4", address: "10.245.0.3", add: true },
    ],
  });
  t.true(moved.ok && moved.sourcesOnly, "planned as moved pods");
  const counts = (v: typeof moved.view) => v.config.policies.map((p) => [p.name, p.sourceCount]);
  t.deepEqual(counts(moved.view), [
    ["web", 1],
    ["ns/a:v4", 2],
    ["ns/b:v4", 2],
  ]);
  const whole = await dp.prepare({
    cluster: [
      pol("ns/a:v4", "198.51.100.0/24", ["10.245.0.1", "10.245.0.2"]),
      pol("ns/b:v4", "192.0.2.128/25", ["10.245.0.4", "10.245.0.3"]),
    ],
  });
  t.true(whole.ok && whole.unchanged, "the process's plan is the whole list's");
  if (whole.ok) t.deepEqual(counts(whole.view), counts(moved.view));
});

test("a process restarted before the cluster model has synced keeps the cluster policies committed last", async (t) => {
  const dp = new DataplaneWorker({ heapMb: 32 });
  t.teardown(() => dp.close());
  // The second restart waits out a backoff on an unref'd timer: this keeps the test's process up meanwhile.
  const keepAlive = setInterval(() => {}, 1000);
  t.teardown(() => clearInterval(keepAlive));
  const file = configText(1000).replace(
    "policies:",
    "egressIPGroups: [{ name: g, egressIPs: [192.0.2.11], uplink: tor }]\npolicies:",
  );
  // The last run's cluster policies (daemon/cluster-cache.ts), committed with the file at start.
  const cluster = [
    {
      name: "ns/p:v4",
      sources: ["10.245.0.1"],
      destinations: ["198.51.100.0/24"],
      action: "SNAT" as const,
      egressIPGroup: "g",
    },
  ];
  const first = await dp.prepare({ text: file, cluster });
  if (!first.ok) return t.fail(JSON.stringify(first.errors));
  await dp.commit(first.id);
  let synced = false;
  dp.setClusterSource(() => (synced ? [] : undefined));

  await t.throwsAsync(dp.prepare({ text: configText(400_000) }), { message: /ran out of its 32 MB heap/ });
  const again = await dp.prepare({ text: file, cluster });
  t.true(
    again.ok && again.unchanged,
    "the new process holds the committed cluster policies, not the empty model's",
  );

  // Once synced, a new process takes the model's list.
  synced = true;
  await t.throwsAsync(dp.prepare({ text: configText(400_000) }), { message: /ran out of its 32 MB heap/ });
  const after = await dp.prepare({ text: file, cluster: [] });
  t.true(after.ok && after.unchanged, "the new process holds the model's list");
});

test("a file's bytes, sent beside the calls, reach the process in the order of the calls", async (t) => {
  const dp = new DataplaneWorker();
  t.teardown(() => dp.close());
  // Sent at once, without waiting: each prepare must get its own bytes, and the text between them its own.
  const sizes = [5000, 2, 70_000, 3000];
  const answers = await Promise.all(
    sizes.map((n, i) =>
      i === 1 ? dp.prepare({ text: configText(n) }) : dp.prepare({ bytes: Buffer.from(configText(n)) }),
    ),
  );
  t.deepEqual(
    answers.map((p) => (p.ok ? p.view.config.policies[0]!.sourceCount : p.errors[0]?.message)),
    sizes.map((n) => n - 1),
  );
  // An empty file is bytes too (and not a config).
  const empty = await dp.prepare({ bytes: Buffer.alloc(0) });
  t.false(empty.ok);
});

test("the process outlives signals sent to egressd's process group, and ends with egressd, even when egressd is killed", async (t) => {
  // A stand-in for egressd: starts the data plane, says the process's pid, and on SIGTERM (as egressd
  // drains) still calls it. It leads a process group of its own, as egressd under a shell would.
  const worker = fileURLToPath(new URL("../../daemon/dataplane-worker.js", import.meta.url));
  const script = [
    `const { DataplaneWorker } = await import(${JSON.stringify(worker)});`,
    "const dp = new DataplaneWorker();",
    `await dp.prepare({ text: "x: 1\\n" });`,
    "process.on('SIGTERM', async () => {",
    `  const p = await dp.prepare({ text: "x: 2\\n" });`,
    "  console.log(p.ok ? 'planned' : 'answered');",
    "});",
    "process.on('SIGHUP', () => {});",
    "console.log(dp.pid);",
    "setInterval(() => {}, 1000);",
  ].join("\n");
  const parent = spawn(process.execPath, ["--input-type=module", "-e", script], {
    stdio: ["ignore", "pipe", "inherit"],
    detached: true,
  });
  t.teardown(() => parent.kill("SIGKILL"));
  const lines: string[] = [];
  parent.stdout!.setEncoding("utf8");
  parent.stdout!.on("data", (s: string) => lines.push(...s.split("\n").filter(Boolean)));
  const pid = Number(await waitFor("the data plane's pid", () => lines[0]));
  t.true(Number.isInteger(pid) && pid > 0, `the data plane's pid: ${lines[0]}`);
  // It is node (prlimit ran it in its own place), and it leaves no core dump (an abort at its heap limit).
  t.is(readFileSync(`/proc/${pid}/comm`, "utf8").trim(), "egressd-datapla");
  t.regex(readFileSync(`/proc/${pid}/limits`, "utf8"), /^Max core file size\s+0\s+0\s/m);
  const alive = () => {
    try {
      process.kill(pid, 0);
      return true;
    } catch {
      return false;
    }
  };
  process.kill(-parent.pid!, "SIGHUP");
  process.kill(-parent.pid!, "SIGTERM");
  t.is(await waitFor("the call made on SIGTERM to be answered", () => lines[1], 10_000), "answered");
  t.true(alive());
  parent.kill("SIGKILL");
  await waitFor("the data-plane process to end", () => !alive(), 5000);
  t.false(alive());
});

test("a call that fails before it starts is answered with its error, and the calls after it still run", async (t) => {
  const dp = new DataplaneWorker();
  t.teardown(() => dp.close());
  // No such operation: the process throws as it looks the call up (send is private; reached here on purpose).
  const raw = dp as unknown as { send(op: string, arg?: unknown): Promise<unknown> };
  await t.throwsAsync(raw.send("noSuchCall", 1), { message: "no such call: noSuchCall" });
  await t.throwsAsync(raw.send("constructor", 1), { message: /Class constructor InlineDataplane/ });
  const after = await dp.prepare({ text: configText(10) });
  t.true(after.ok, "the next call is answered");
});

test("a program with nothing else to do still learns that its call failed when the process ended", async (t) => {
  // Only the pending call keeps this stand-in running: it must see the rejection, not exit first.
  const dir = mkdtempSync(join(tmpdir(), "egressd-dp-"));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const big = join(dir, "big.yaml");
  writeFileSync(big, configText(400_000));
  const worker = fileURLToPath(new URL("../../daemon/dataplane-worker.js", import.meta.url));
  const script = [
    `const { DataplaneWorker } = await import(${JSON.stringify(worker)});`,
    `const { readFileSync } = await import("node:fs");`,
    "const dp = new DataplaneWorker({ heapMb: 32 });",
    `try { await dp.prepare({ bytes: readFileSync(${JSON.stringify(big)}) }); console.log("prepared"); }`,
    "catch (e) { console.log(e.message); }",
    "await dp.close();",
  ].join("\n");
  const r = spawnSync(process.execPath, ["--input-type=module", "-e", script], { encoding: "utf8" });
  t.is(r.status, 0, r.stderr.slice(-500));
  t.is(r.stdout.trim(), "the data-plane process ended: it ran out of its 32 MB heap (--dataplane-heap-mb)");
});
