// SNAT and policy routing through a real gateway namespace: what the external
// server sees, per source and destination, IPv4 and IPv6.
import test from "ava";
import { sandbox } from "../helpers/netns.js";
import {
  buildTopology,
  fixture,
  referenceState,
  seenBy,
  startServer,
  stateFile,
} from "../helpers/dataplane-topology.js";

test("server sees egress IPs per destination, exceptions and unlisted pods are not NATed, IPv6 works", async (t) => {
  const s = sandbox(t, "dps");
  await buildTopology(s);
  await startServer(s);
  const state = referenceState();
  const file = stateFile(state);

  t.deepEqual(await fixture(s, "gw", ["forwarding"]), { ipv4: true, ipv6: true });
  await fixture(s, "gw", ["apply", file]);

  // external server sees the egress IP, not the pod IP
  t.is(await seenBy(s, "203.0.113.10", "10.244.1.10"), "192.0.2.11");
  // a second destination gives the same pod a different egress IP (and a different uplink:
  // the main table has no route to 198.51.100.0/24, only policy b's table does)
  t.is(await seenBy(s, "198.51.100.10", "10.244.1.10"), "192.0.2.12");
  // an exception destination is not NATed
  t.is(await seenBy(s, "203.0.113.200", "10.244.1.10"), "10.244.1.10");
  // a pod outside every policy is not NATed
  t.is(await seenBy(s, "203.0.113.10", "10.244.1.11"), "10.244.1.11");
  // IPv6
  t.is(await seenBy(s, "2001:db8:100::10", "fd00:244::10"), "2001:db8:e::11");
  // a v6 pod outside every policy: no NAT, and no route to the destination without policy routing
  const r = await s.tryExec("pod", [
    "node",
    "-e",
    "require('net').connect({host:'2001:db8:100::10',port:8080,localAddress:'fd00:244::11',timeout:1500}).on('timeout',()=>process.exit(3)).on('error',()=>process.exit(4)).on('data',d=>{process.stdout.write(d)})",
  ]);
  t.not(r.stdout.trim(), "2001:db8:e::11");

  // counters per policy and egress IP
  const counters = (await fixture(s, "gw", ["counters", file])) as {
    policy: string;
    egressIP: string;
    packets: string;
    connections: string;
  }[];
  const by = new Map(counters.map((c) => [c.policy, c]));
  t.is(by.get("a")?.egressIP, "192.0.2.11");
  t.is(by.get("a")?.connections, "1");
  t.is(by.get("b")?.connections, "1");
  t.is(by.get("v6")?.connections, "1");
  t.true(Number(by.get("a")?.packets) >= 3);

  // adding a pod is an element update; the new pod is NATed at once
  state.nat.sources.push({ family: 4, interval: "10.244.1.11", classId: 1 });
  const added = (await fixture(s, "gw", ["apply", stateFile(state)])) as {
    nat: { action: string; added: number };
  };
  t.is(added.nat.action, "patch");
  t.is(added.nat.added, 1);
  t.is(await seenBy(s, "203.0.113.10", "10.244.1.11"), "192.0.2.11");
  // removing it again
  state.nat.sources.pop();
  const removed = (await fixture(s, "gw", ["apply", stateFile(state)])) as {
    nat: { action: string; removed: number };
  };
  t.is(removed.nat.action, "patch");
  t.is(removed.nat.removed, 1);
  t.is(await seenBy(s, "203.0.113.10", "10.244.1.11"), "10.244.1.11");
});

test("a Deny policy drops and counts what it selects; turned into SNAT it NATs, and other policies carry on", async (t) => {
  const s = sandbox(t, "dpd");
  await buildTopology(s, { ipv6: false });
  await startServer(s);
  const state = referenceState();
  state.addresses = state.addresses.filter((a) => a.family === 4);
  state.rules = state.rules.filter((r) => r.family === 4);
  state.routes = state.routes.filter((r) => r.family === 4);
  // Pod .11 is denied 203.0.113.0/24; pod .10 keeps policy a.
  state.nat.policies = state.nat.policies.filter((p) => p.family === 4);
  state.nat.policies.push({
    name: "no",
    family: 4,
    deny: true,
    egressIP: "",
    mark: 0x400,
    uplinkInterface: "",
  });
  state.nat.classes = [
    state.nat.classes[0]!,
    { id: 3, family: 4, destinations: [{ interval: "203.0.113.0/24", policy: "no" }] },
  ];
  state.nat.sources = [
    ...state.nat.sources.filter((x) => x.family === 4),
    { family: 4, interval: "10.244.1.11", classId: 3 },
  ];
  await fixture(s, "gw", ["apply", stateFile(state)]);
  const tryFrom = (local: string) =>
    s.tryExec("pod", [
      "node",
      "-e",
      `require('net').connect({host:'203.0.113.10',port:8080,localAddress:'${local}',timeout:1000})` +
        `.on('timeout',()=>process.exit(3)).on('error',()=>process.exit(4)).on('data',d=>{process.stdout.write(d)})`,
    ]);
  const denied = await tryFrom("10.244.1.11");
  t.is(denied.code, 3, `a denied connection times out (dropped, not rejected): ${denied.stdout}`);
  t.is(await seenBy(s, "203.0.113.10", "10.244.1.10"), "192.0.2.11", "the other pod is NATed as before");
  const counters = (await fixture(s, "gw", ["counters", stateFile(state)])) as {
    policy: string;
    egressIP: string;
    packets: string;
    connections: string;
  }[];
  const no = counters.find((c) => c.policy === "no");
  t.truthy(no);
  t.true(Number(no!.packets) >= 1, `the SYN is counted: ${no!.packets}`);
  t.is(no!.connections, "0");
  t.is(no!.egressIP, "");

  // The same policy as SNAT to 192.0.2.12: a structural patch that rewrites only its chains.
  const snat = structuredClone(state);
  snat.nat.policies = snat.nat.policies.map((p) =>
    p.name === "no" ? { ...p, deny: false, egressIP: "192.0.2.12", uplinkInterface: "u1" } : p,
  );
  snat.rules.push({ family: 4, priority: 1000, fwmark: 0x400, fwmask: 0xff00, table: 100 });
  const changed = (await fixture(s, "gw", ["apply", stateFile(snat)])) as { nat: { action: string } };
  t.is(changed.nat.action, "patch-structure");
  t.is(await seenBy(s, "203.0.113.10", "10.244.1.11"), "192.0.2.12");
});
