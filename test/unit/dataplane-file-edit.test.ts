// A config file whose sources alone were edited (lines of one policy's list)
// is programmed as pods moving: the plan in force with its sources replaced,
// only the kernel's source sets applied. Whatever the edits, the result must
// equal a plan made from the whole file by a new data plane.
import test from "ava";
import fc from "fast-check";
import { stringify } from "yaml";
import { InlineDataplane } from "../../daemon/dataplane.js";
import type { Config } from "../../core/config/schema.js";
import type { PlanView } from "../../core/plan/index.js";
import { assertSamePlan, DeltaKernel, FakeKernel } from "../helpers/fake-kernel.js";
import { twoEgressIPs } from "../helpers/configs.js";

/** Policy "a" has `sources`; "b" serves 192.0.2.128/25, which an edited source may fall into. */
function config(sources: string[]): Config {
  return twoEgressIPs([
    {
      name: "a",
      sources,
      destinations: ["203.0.113.0/24"],
      egressIP: "192.0.2.11",
      uplink: "tor",
    },
    {
      name: "b",
      sources: ["10.251.0.0/24"],
      destinations: ["198.51.100.0/24", "192.0.2.128/25"],
      egressIP: "192.0.2.12",
      uplink: "tor",
    },
  ]);
}

async function prepared(dp: InlineDataplane, text: string) {
  const p = await dp.prepare({ text });
  if (!p.ok) throw new Error(p.errors.map((e) => e.message).join("; "));
  return p;
}

test("one source line replaced: programmed as a move of sources, and the plan is what the whole file plans", async (t) => {
  const pad = Array.from({ length: 40 }, (_, i) => `10.250.0.${i}`);
  const kernel = new DeltaKernel();
  const dp = new InlineDataplane(kernel, { warmRounds: 0 });
  const first = await prepared(dp, stringify(config(["10.244.1.10", ...pad])));
  await dp.commit(first.id);
  await dp.apply();
  const next = await prepared(dp, stringify(config(["10.244.1.11", ...pad])));
  t.true(next.sourcesOnly, "a source line edited is a move of sources");
  t.deepEqual(next.sourceCounts, [[0, 41]]);
  await dp.commit(next.id);
  await dp.apply();
  t.deepEqual(kernel.sourcesOnly, [false, true]);

  const full = new FakeKernel();
  const fdp = new InlineDataplane(full, { warmRounds: 0 });
  const whole = await prepared(fdp, stringify(config(["10.244.1.11", ...pad])));
  await fdp.commit(whole.id);
  await fdp.apply();
  t.notThrows(() =>
    assertSamePlan({ kernel: kernel.applied!, view: next.view }, { kernel: full.applied!, view: whole.view }),
  );
});

test("a source edited into a served destination is planned in full (what BGP reads may change)", async (t) => {
  const pad = Array.from({ length: 40 }, (_, i) => `10.250.0.${i}`);
  const dp = new InlineDataplane(new DeltaKernel(), { warmRounds: 0 });
  const first = await prepared(dp, stringify(config(["10.244.1.10", ...pad])));
  await dp.commit(first.id);
  await dp.apply();
  const next = await prepared(dp, stringify(config(["192.0.2.200", ...pad])));
  t.falsy(next.sourcesOnly);
});

test("property: any run of source-line edits programs what the whole file plans", async (t) => {
  let moves = 0;
  let planned = 0;
  await fc.assert(
    fc.asyncProperty(
      fc.array(
        fc.record({
          at: fc.nat(30),
          op: fc.constantFrom("replace", "insert", "delete"),
          ip: fc.nat(20),
          // Some addresses fall into policy b's served destination: that edit is planned again.
          served: fc.boolean(),
        }),
        { minLength: 1, maxLength: 12 },
      ),
      async (edits) => {
        const kernel = new DeltaKernel();
        const dp = new InlineDataplane(kernel, { warmRounds: 0 });
        let sources = Array.from({ length: 30 }, (_, i) => `10.250.0.${i}`);
        let view: PlanView;
        const first = await prepared(dp, stringify(config(sources)));
        view = first.view;
        await dp.commit(first.id);
        await dp.apply();
        for (const e of edits) {
          const address = e.served ? `192.0.2.${129 + e.ip}` : `10.244.1.${e.ip}`;
          const at = e.at % sources.length;
          const next = [...sources];
          if (e.op === "replace") next[at] = address;
          else if (e.op === "insert") next.splice(at, 0, address);
          else if (next.length > 1) next.splice(at, 1);
          // Duplicates are an error in the file; an edit that would make one is skipped.
          if (new Set(next).size !== next.length) continue;
          sources = next;
          const p = await prepared(dp, stringify(config(sources)));
          if (p.unchanged) continue;
          await dp.commit(p.id);
          await dp.apply();
          view = p.view;
        }
        moves += kernel.sourcesOnly.filter(Boolean).length;
        planned += kernel.sourcesOnly.filter((x) => !x).length;
        const full = new FakeKernel();
        const fdp = new InlineDataplane(full, { warmRounds: 0 });
        const whole = await prepared(fdp, stringify(config(sources)));
        await fdp.commit(whole.id);
        await fdp.apply();
        assertSamePlan({ kernel: kernel.applied!, view }, { kernel: full.applied!, view: whole.view });
      },
    ),
    { numRuns: 60 },
  );
  t.log(`source sets alone: ${moves}; planned again: ${planned}`);
  t.true(moves > 0 && planned > 0, "both paths were taken");
});
