// The claims' I/O (inputs/k8s/leases.ts) against the test API server: real
// Leases, created, renewed and deleted with their resourceVersion, and taken
// over only through it. Each gateway's clock is the test's: a tick is a
// second of it, whatever the machine's speed.
import test from "ava";
import { KubeConfig } from "../../inputs/k8s/client.js";
import { Claimer, DEFAULT_TIMING, PRESENCE } from "../../core/k8s/claims.js";
import { LeaseDriver, leaseName, recordOf } from "../../inputs/k8s/leases.js";
import { KubeApiServer } from "../helpers/kube-apiserver.js";

const POOL = ["192.0.2.11", "192.0.2.12"];

async function cluster(t: import("ava").ExecutionContext) {
  const api = new KubeApiServer();
  await api.start();
  t.teardown(() => api.stop());
  const kc = new KubeConfig();
  kc.loadFromString(api.kubeconfig());
  // A gateway cut off from the API server: its requests are refused (nothing listens there).
  const cut = new KubeConfig();
  cut.loadFromString(api.kubeconfig().replace(api.url, "http://127.0.0.1:9"));
  const gateway = (name: string) => {
    const g = {
      name,
      now: 0,
      claimer: new Claimer(name),
      programmed: new Set<string>(),
      partitioned: false,
      driver: undefined as unknown as LeaseDriver,
      cutDriver: undefined as unknown as LeaseDriver,
    };
    g.claimer.setGroup(POOL, true);
    const o = { namespace: "egressd", group: "payments", claimer: g.claimer, clock: () => g.now };
    g.driver = new LeaseDriver({ ...o, kc });
    g.cutDriver = new LeaseDriver({ ...o, kc: cut });
    return g;
  };
  type G = ReturnType<typeof gateway>;
  /** One second of every gateway's clock: a tick, then the data plane takes what using() says. */
  const second = async (gs: G[]) => {
    for (const g of gs) {
      g.now += 1000;
      await (g.partitioned ? g.cutDriver : g.driver).tick(g.programmed);
      g.programmed = g.claimer.using(g.now);
    }
  };
  return { api, gateway, second };
}

test("two gateways announce themselves and hold one address each, as Leases the API server keeps", async (t) => {
  const { api, gateway, second } = await cluster(t);
  const a = gateway("gw-a1");
  const b = gateway("gw-a2");
  for (let i = 0; i < 4; i++) await second([a, b]);
  t.is(a.programmed.size, 1);
  t.is(b.programmed.size, 1);
  t.notDeepEqual([...a.programmed], [...b.programmed]);
  const leases = api.list("Lease") as {
    metadata: { name: string; labels: Record<string, string>; annotations: Record<string, string> };
    spec: { holderIdentity: string; leaseDurationSeconds: number; renewTime: string };
  }[];
  t.deepEqual(leases.map((l) => l.metadata.name).sort(), [
    "egressd.payments.c000020b",
    "egressd.payments.c000020c",
    "egressd.payments.gw.gw-a1",
    "egressd.payments.gw.gw-a2",
  ]);
  for (const l of leases) {
    t.is(l.metadata.labels["egressd.io/group"], "payments");
    t.is(l.spec.leaseDurationSeconds, 15);
    t.regex(l.spec.renewTime, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$/);
  }
  const holderOf = (address: string) =>
    leases.find((l) => l.metadata.annotations["egressd.io/key"] === address)!.spec.holderIdentity;
  t.is(holderOf([...a.programmed][0]!), "gw-a1");
  t.is(holderOf([...b.programmed][0]!), "gw-a2");
});

test("cut off from the API, a gateway stops using its address before the other may take it; healed, they share again", async (t) => {
  const { gateway, second } = await cluster(t);
  const a = gateway("gw-a1");
  const b = gateway("gw-a2");
  for (let i = 0; i < 4; i++) await second([a, b]);
  const address = [...a.programmed][0]!;
  a.partitioned = true;
  const cutAt = a.now;
  let stoppedAt: number | undefined;
  let takenAt: number | undefined;
  for (let i = 0; i < 25 && takenAt === undefined; i++) {
    await second([a, b]);
    if (stoppedAt === undefined && !a.programmed.has(address)) stoppedAt = a.now;
    if (b.programmed.has(address)) takenAt = b.now;
  }
  t.truthy(stoppedAt);
  t.truthy(takenAt);
  t.log(
    `cut at ${cutAt} ms; gw-a1 stopped using ${address} at ${stoppedAt} ms, gw-a2 started at ${takenAt} ms (${takenAt! - stoppedAt!} ms later)`,
  );
  t.true(
    stoppedAt! - cutAt <= DEFAULT_TIMING.durationMs - DEFAULT_TIMING.marginMs,
    "within duration - margin of its last renewal",
  );
  t.true(takenAt! - stoppedAt! >= DEFAULT_TIMING.marginMs - 1000, "the margin between them, to a tick");
  t.is(a.driver.stats.conflicts, 0);
  t.true(a.cutDriver.stats.unknown > 0, "its requests had no answer");
  // Healed: it learns that it lost the address, and gets one back from the gateway that holds both.
  a.partitioned = false;
  for (let i = 0; i < 6; i++) await second([a, b]);
  t.is(a.programmed.size, 1);
  t.is(b.programmed.size, 1);
  t.notDeepEqual([...a.programmed], [...b.programmed]);
});

test("a drained gateway deletes its leases once its data plane let go, and the other takes them at once", async (t) => {
  const { api, gateway, second } = await cluster(t);
  const a = gateway("gw-a1");
  const b = gateway("gw-a2");
  for (let i = 0; i < 4; i++) await second([a, b]);
  b.claimer.drain();
  await second([a, b]);
  t.is(b.programmed.size, 0);
  await second([a, b]);
  t.false(
    api
      .list("Lease")
      .some((l) => (l as { spec: { holderIdentity: string } }).spec.holderIdentity === "gw-a2"),
    "gw-a2's leases are deleted",
  );
  for (let i = 0; i < 2; i++) await second([a, b]);
  t.deepEqual([...a.programmed].sort(), POOL, "taken without waiting for a lease to expire");
});

test("lease names are DNS subdomains; a listed Lease counts only with the group's label, its key and the name of that key", (t) => {
  t.is(leaseName("payments", "2001:db8:e::11"), "egressd.payments.20010db8000e00000000000000000011");
  t.is(leaseName("payments", PRESENCE + "gw-a1.example.net"), "egressd.payments.gw.gw-a1.example.net");
  t.throws(() => leaseName("payments", "not-an-address"));
  const ok = {
    metadata: {
      name: "egressd.payments.c000020b",
      resourceVersion: "7",
      labels: { "egressd.io/group": "payments" },
      annotations: { "egressd.io/key": "192.0.2.11" },
    },
    spec: { holderIdentity: "gw-a1", leaseDurationSeconds: 15 },
  };
  t.deepEqual(recordOf("payments", ok), {
    key: "192.0.2.11",
    holder: "gw-a1",
    version: "7",
    durationMs: 15_000,
  });
  t.is(recordOf("web", ok), undefined, "another group's");
  t.is(
    recordOf("payments", { ...ok, metadata: { ...ok.metadata, name: "egressd.payments.c000020c" } }),
    undefined,
  );
  t.deepEqual(recordOf("payments", { ...ok, spec: { holderIdentity: "", leaseDurationSeconds: 0 } }), {
    key: "192.0.2.11",
    holder: undefined,
    version: "7",
    durationMs: 15_000,
  });
});
