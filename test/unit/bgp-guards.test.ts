// The path reconciler's guards: nothing new while the kernel is not
// programmed, and nothing re-added that health withdrew while the reconcile
// was waiting on gobgpd.
import test from "ava";
import { PathReconciler } from "../../bgp/path-reconciler.js";
import type { BgpPath } from "../../core/bgp.js";
import { FakeSpeaker } from "../helpers/fake-speaker.js";

const path = (prefix: string, med?: number): BgpPath => ({
  prefix,
  nextHop: "0.0.0.0",
  ...(med === undefined ? {} : { med }),
});

for (const bulkThreshold of [1000, 1]) {
  const mode = bulkThreshold === 1 ? "one stream" : "one call each";
  test(`withdrawOnly applies withdrawals and holds back adds and attribute changes (${mode})`, async (t) => {
    const s = new FakeSpeaker();
    await s.addPath(path("192.0.2.11/32"));
    await s.addPath(path("198.51.100.0/24", 10));
    await s.addPath(path("203.0.113.0/24"));
    s.calls.length = 0;
    const r = await new PathReconciler(s.asClient(), { bulkThreshold }).reconcile(
      [path("192.0.2.11/32"), path("198.51.100.0/24", 20), path("198.51.101.0/24")],
      { withdrawOnly: true },
    );
    t.deepEqual(s.calls, ["list", "-203.0.113.0/24"]);
    t.deepEqual(r.add, []);
    t.deepEqual(
      r.held.map((p) => p.prefix),
      ["198.51.100.0/24", "198.51.101.0/24"],
    );
    t.is(s.paths.get("198.51.100.0/24")?.med, 10, "the old attributes stay until the kernel is programmed");
  });

  test(`a path withdrawn while the reconcile reads gobgpd is not re-added by it (${mode})`, async (t) => {
    const s = new FakeSpeaker();
    const allowed = new Set(["192.0.2.11/32", "203.0.113.0/24", "198.51.100.0/24"]);
    // The probe guarding 203.0.113.0/24 goes down while the reconcile awaits its read.
    s.duringRead = () => allowed.delete("203.0.113.0/24");
    const r = await new PathReconciler(s.asClient(), { bulkThreshold }).reconcile(
      [path("192.0.2.11/32"), path("198.51.100.0/24"), path("203.0.113.0/24")],
      { stillWanted: (p) => allowed.has(p.prefix) },
    );
    t.deepEqual([...s.paths.keys()].sort(), ["192.0.2.11/32", "198.51.100.0/24"]);
    t.false(s.calls.includes("+203.0.113.0/24"), "never added, so never flapped");
    t.deepEqual(
      r.held.map((p) => p.prefix),
      ["203.0.113.0/24"],
    );
  });
}
