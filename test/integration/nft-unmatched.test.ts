// The table with unmatched: Deny and drop logging, on the kernel: nft takes
// it, and a table read back from the kernel is recognised as what was
// written (so a restarted egressd adopts it instead of replacing it), with or
// without logging and with a Deny policy; a change of either flag is a
// replacement, never a patch that leaves the other mode's rules behind.
import test from "ava";
import type { NatPlan, SnatPorts } from "../../core/state.js";
import { normalizedFromLive, parseLiveTable } from "../../routing/nft.js";
import { diffNormalized, normalizeNat, renderNftRuleset } from "../../routing/nft-render.js";
import { referenceNat } from "../helpers/reference-nat.js";
import { sandbox } from "../helpers/netns.js";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

function variant(o: { unmatched: boolean; logDrops: boolean; deny: boolean; snat?: SnatPorts }): NatPlan {
  const p = referenceNat();
  if (o.snat) p.snat = o.snat;
  if (o.deny)
    p.policies[1] = { name: "b", family: 4, deny: true, egressIP: "", mark: 0x200, uplinkInterface: "" };
  if (o.unmatched) p.unmatched = "Deny";
  if (o.logDrops) p.logDrops = true;
  return p;
}

const SNATS: (SnatPorts | undefined)[] = [
  undefined,
  { range: [40000, 40999], mode: "fully-random" },
  { range: [1024, 65535] },
  { mode: "random" },
];

test("unmatched, drop logging, SNAT port ranges and modes: nft takes the table, and the table read back is adopted as written", async (t) => {
  const s = sandbox(t, "nu");
  await s.addNode("gw");
  const dir = mkdtempSync(join(tmpdir(), "egressd-nu-"));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  for (const unmatched of [false, true])
    for (const logDrops of [false, true])
      for (const deny of [false, true])
        for (const snat of SNATS) {
          const name = `unmatched ${unmatched}, logging ${logDrops}, deny ${deny}, snat ${JSON.stringify(snat)}`;
          const want = normalizeNat(variant({ unmatched, logDrops, deny, ...(snat ? { snat } : {}) }));
          const file = join(dir, "t.nft");
          writeFileSync(file, renderNftRuleset(want));
          await s.exec("gw", ["/usr/sbin/nft", "-f", file]);
          const { stdout } = await s.exec("gw", ["/usr/sbin/nft", "-j", "list", "table", "inet", "egressd"]);
          const got = normalizedFromLive(parseLiveTable(stdout), want.markMask);
          t.truthy(got, `${name}: adopted`);
          t.is(got?.structureHash, want.structureHash, name);
          t.is(got?.unmatched, want.unmatched, name);
          t.is(got?.logDrops, want.logDrops, name);
          t.deepEqual(diffNormalized(got, want).kind, "none", `${name}: nothing to change`);
        }
  // From one mode to another: replaced whole.
  const plain = normalizeNat(variant({ unmatched: false, logDrops: false, deny: true }));
  const strict = normalizeNat(variant({ unmatched: true, logDrops: true, deny: true }));
  t.is(diffNormalized(plain, strict).kind, "replace");
  t.is(diffNormalized(strict, plain).kind, "replace");
  const ranged = normalizeNat(
    variant({ unmatched: true, logDrops: true, deny: true, snat: { range: [2000, 2999] } }),
  );
  t.is(diffNormalized(strict, ranged).kind, "replace", "a new port range is a replacement");
  // Served destinations follow the SNAT policies' destinations, as elements: a patch.
  const more = variant({ unmatched: true, logDrops: true, deny: true });
  more.classes[0]!.destinations.push({ interval: "192.0.2.128/25", policy: "a" });
  const d = diffNormalized(strict, normalizeNat(more));
  t.is(d.kind, "patch");
  t.regex(d.kind === "patch" ? d.script : "", /add element inet egressd served_v4 \{ 192\.0\.2\.128\/25 \}/);
});
