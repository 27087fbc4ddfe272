// The cluster's policies kept in the run directory for a restart during an
// API outage: written in pieces, read back whole and checked.
import test from "ava";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { CLUSTER_CACHE, readClusterCache, writeClusterCache } from "../../daemon/cluster-cache.js";
import type { PolicyConfig } from "../../core/config/schema.js";

const dir = (t: { teardown: (fn: () => void) => void }) => {
  const d = mkdtempSync(join(tmpdir(), "egressd-cache-"));
  t.teardown(() => rmSync(d, { recursive: true, force: true }));
  return d;
};

test("what is written is read back: many sources (several pieces), none, exceptions and groups", async (t) => {
  const d = dir(t);
  const many = Array.from({ length: 12_345 }, (_, i) => `10.${64 + (i >> 16)}.${(i >> 8) & 255}.${i & 255}`);
  const policies: PolicyConfig[] = [
    { name: "ns/a:v4", sources: many, destinations: ["203.0.113.0/24"], action: "SNAT", egressIPGroup: "g" },
    { name: "ns/b:v6", sources: [], destinations: ["2001:db8::/32"], action: "Deny" },
    {
      name: "c:v4",
      sources: ["10.1.2.3"],
      destinations: ["198.51.100.0/24"],
      exceptions: ["198.51.100.7/32"],
      action: "Direct",
    },
  ];
  await writeClusterCache(d, policies);
  t.deepEqual(readClusterCache(d), { policies });
  await writeClusterCache(d, []);
  t.deepEqual(readClusterCache(d), { policies: [] });
});

test("no file is no cache; a file that is not what egressd writes is a problem named, not policies", (t) => {
  const d = dir(t);
  t.deepEqual(readClusterCache(d), {});
  writeFileSync(join(d, CLUSTER_CACHE), "[{");
  t.regex(readClusterCache(d).problem ?? "", /cluster-policies\.json: /);
  writeFileSync(join(d, CLUSTER_CACHE), JSON.stringify([{ name: "web", sources: [], destinations: [] }]));
  t.regex(readClusterCache(d).problem ?? "", /\/0\/name/);
});
