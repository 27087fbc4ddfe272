import test from "ava";
import { createServer } from "node:net";
import type { AddressInfo } from "node:net";
import { diagnoseConnect, ReportBackoff } from "../../bgp/peer-diagnosis.js";

test("a connect is named: reachable, refused", async (t) => {
  const server = createServer((s) => s.destroy());
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const port = (server.address() as AddressInfo).port;
  t.is(await diagnoseConnect("127.0.0.1", { port }), "reachable");
  await new Promise((r) => server.close(r));
  t.is(await diagnoseConnect("127.0.0.1", { port }), "refused");
  t.is(
    await diagnoseConnect("127.0.0.1", { port, localAddress: "192.0.2.99" }),
    "local address not configured",
  );
});

test("reports come first after 10 s down, then at doubling intervals up to 5 minutes", (t) => {
  const b = new ReportBackoff(10_000, 300_000);
  const due: number[] = [];
  for (let now = 0; now <= 1_000_000; now += 1000) if (b.due("tor", 0, now)) due.push(now);
  t.deepEqual(due.slice(0, 6), [10_000, 30_000, 70_000, 150_000, 310_000, 610_000]);
  b.reset("tor");
  t.false(b.due("tor", 1_000_000, 1_005_000));
  t.true(b.due("tor", 1_000_000, 1_010_000));
});
