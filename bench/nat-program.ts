// Benchmark: programming 100,000 source entries, and adding/removing one pod
// on the running ruleset. Prints figures; not a test.
//   node dist/bench/nat-program.js
import { NftReconciler } from "../routing/nft.js";
import { normalizeNat, renderNftRuleset } from "../routing/nft-render.js";
import { benchSandbox, fmt, median, pct, runInside, stateWithSources } from "./nat-lib.js";

const SOURCES = 100_000;
const SINGLE_RUNS = 50;

async function inner(): Promise<void> {
  const plan = stateWithSources(SOURCES).nat;
  const t0 = performance.now();
  renderNftRuleset(normalizeNat(plan));
  const renderMs = performance.now() - t0;

  const cold = new NftReconciler();
  let t = performance.now();
  await cold.reconcile(plan);
  const coldMs = performance.now() - t;
  // replacing an existing 100k table (e.g. a policy change) in one transaction
  plan.policies[0]!.egressIP = "192.0.2.21";
  t = performance.now();
  await cold.reconcile(plan);
  const replaceMs = performance.now() - t;
  plan.policies[0]!.egressIP = "192.0.2.11";
  await cold.reconcile(plan);
  cold.close();

  // restart: adopt the live table (read 100k elements, diff, no change)
  const adopter = new NftReconciler();
  t = performance.now();
  const adopted = await adopter.reconcile(plan);
  const adoptMs = performance.now() - t;
  adopter.close();

  const single = async (r: NftReconciler) => {
    const add: number[] = [];
    const del: number[] = [];
    const addK: number[] = [];
    const delK: number[] = [];
    for (let i = 0; i < SINGLE_RUNS; i++) {
      plan.sources.push({ family: 4, interval: `10.250.${i >> 8}.${i & 255}`, classId: 1 });
      let s = performance.now();
      const a = await r.reconcile(plan);
      add.push(performance.now() - s);
      addK.push(a.applyMs ?? Number.NaN);
      if (a.action !== "patch" || a.added !== 1) throw new Error(`unexpected ${JSON.stringify(a)}`);
      plan.sources.pop();
      s = performance.now();
      const d = await r.reconcile(plan);
      del.push(performance.now() - s);
      delK.push(d.applyMs ?? Number.NaN);
      if (d.action !== "patch" || d.removed !== 1) throw new Error(`unexpected ${JSON.stringify(d)}`);
    }
    return { add, del, addK, delK };
  };
  const fast = new NftReconciler();
  await fast.reconcile(plan);
  const viaNetlink = await single(fast);
  fast.close();
  const slow = new NftReconciler({ netlinkElements: false });
  await slow.reconcile(plan);
  const viaNft = await single(slow);
  slow.close();
  await new NftReconciler().teardown();

  const line = (name: string, xs: number[]) =>
    `  ${name.padEnd(44)} median ${fmt(median(xs))} ms  p95 ${fmt(pct(xs, 95))} ms  max ${fmt(Math.max(...xs))} ms`;
  console.log(`nat-program: ${SOURCES} source entries (single addresses, one class), nftables ${"1.0.6"}`);
  console.log(`  render script (pure)                         ${fmt(renderMs, 1)} ms`);
  console.log(
    `  program 100k entries, no table yet           ${fmt(coldMs / 1000, 3)} s   (target <= 0.5 s)`,
  );
  console.log(`  change one policy on a 100k table (patch)   ${fmt(replaceMs / 1000, 3)} s`);
  console.log(
    `  adopt live 100k table after restart          ${fmt(adoptMs / 1000, 3)} s   (${adopted.action})`,
  );
  console.log(`one pod added / removed on the running 100k ruleset (${SINGLE_RUNS} runs each):`);
  console.log(" kernel change only (the element patch, diff already computed):");
  console.log(line("add, nf_tables batch on a kept socket", viaNetlink.addK) + "   (target <= 5 ms)");
  console.log(line("remove, nf_tables batch on a kept socket", viaNetlink.delK) + "   (target <= 5 ms)");
  console.log(line("add, one `nft -f` process per change", viaNft.addK));
  console.log(line("remove, one `nft -f` process per change", viaNft.delK));
  console.log(" whole level-triggered reconcile (normalise + diff 100k entries in JS, then the patch):");
  console.log(line("add, kept socket", viaNetlink.add));
  console.log(line("remove, kept socket", viaNetlink.del));
}

async function main(): Promise<void> {
  if (process.argv[2] === "--inner") return inner();
  const s = benchSandbox("p");
  try {
    await s.addNode("gw", { forwarding: true });
    process.stdout.write(await runInside(s.ns("gw"), import.meta.url, ["--inner"]));
  } finally {
    await s.cleanup();
  }
}

await main();
