// A containerlab `bridge` node in the netns runner: three nodes on one L2
// segment (test/fixtures/bridge.clab.yml) reach each other, multicast sent by
// one reaches the others that joined the group (what conntrackd's state sync
// needs), and `down` leaves nothing.
import test from "ava";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { Lab } from "../../containerlab/runner.js";
import { loadTopology } from "../../containerlab/topology.js";
import { run } from "../../lib/exec.js";
import { RUN_ID } from "../helpers/netns.js";
import { REPO } from "../helpers/paths.js";

const TOPOLOGY = join(REPO, "test/fixtures/bridge.clab.yml");
const ADDRESS: Record<string, string> = { n1: "192.168.77.1", n2: "192.168.77.2", n3: "192.168.77.3" };
// conntrackd's default multicast group and port.
const GROUP = "225.0.0.50";
const PORT = "3780";

// Node's dgram rather than a multicast tool: the runtime is on every machine.
// The receiver joins GROUP on its address's interface and prints the first
// datagram; the sender repeats, so a join that comes a little after the first
// datagram still gets one.
const RECEIVE = `
const [group, port, ifaddr] = process.argv.slice(1);
const s = require("node:dgram").createSocket({ type: "udp4", reuseAddr: true });
s.on("message", (m, from) => { process.stdout.write(m + " from " + from.address); process.exit(0); });
s.bind(Number(port), () => s.addMembership(group, ifaddr));
setTimeout(() => { process.stderr.write("nothing received"); process.exit(1); }, 5000);
`;
const SEND = `
const [group, port, ifaddr] = process.argv.slice(1);
const s = require("node:dgram").createSocket("udp4");
s.bind(0, ifaddr, () => {
  s.setMulticastInterface(ifaddr);
  s.setMulticastTTL(1);
  const timer = setInterval(() => s.send("sync", Number(port), group), 100);
  setTimeout(() => { clearInterval(timer); s.close(); }, 3000);
});
`;

test("bridge node: one L2 segment for three nodes, multicast included, clean teardown", async (t) => {
  const lab = new Lab(loadTopology(TOPOLOGY), `${RUN_ID}br`, { quiet: true });
  t.teardown(() => lab.down());
  await lab.up();

  // The bridge is up, snooping off, with one port per link.
  const [info] = JSON.parse(
    (await lab.exec("br-sync", ["ip", "-d", "-j", "link", "show", "br-sync"])).stdout,
  ) as {
    flags: string[];
    linkinfo: { info_kind: string; info_data: { mcast_snooping: number } };
  }[];
  t.is(info?.linkinfo.info_kind, "bridge");
  t.true(info?.flags.includes("UP"));
  t.is(info?.linkinfo.info_data.mcast_snooping, 0);
  const ports = JSON.parse(
    (await lab.exec("br-sync", ["ip", "-j", "link", "show", "master", "br-sync"])).stdout,
  ) as { ifname: string; flags: string[] }[];
  t.deepEqual(ports.map((p) => p.ifname).sort(), ["eth1", "eth2", "eth3"]);
  t.true(ports.every((p) => p.flags.includes("UP")));

  for (const from of Object.keys(ADDRESS)) {
    for (const [to, address] of Object.entries(ADDRESS)) {
      if (to === from) continue;
      const r = await lab.tryExec(from, ["ping", "-c1", "-W2", address]);
      t.is(r.code, 0, `${from} should reach ${to} (${address}): ${r.stdout}${r.stderr}`);
    }
  }

  const node = process.execPath;
  const [got1, got3] = await Promise.all([
    lab.tryExec("n1", [node, "-e", RECEIVE, GROUP, PORT, ADDRESS.n1!], 15_000),
    lab.tryExec("n3", [node, "-e", RECEIVE, GROUP, PORT, ADDRESS.n3!], 15_000),
    lab.exec("n2", [node, "-e", SEND, GROUP, PORT, ADDRESS.n2!], 15_000),
  ]);
  t.is(got1.stdout, `sync from ${ADDRESS.n2}`, `n1: ${got1.stderr}`);
  t.is(got3.stdout, `sync from ${ADDRESS.n2}`, `n3: ${got3.stderr}`);

  await lab.down();
  const { stdout } = await run(["ip", "netns", "list"]);
  t.false(stdout.includes(`${RUN_ID}br-`), `namespaces left: ${stdout}`);
  // The bridge and the veths lived in the lab's namespaces: none is on the host.
  const host = JSON.parse((await run(["ip", "-j", "link", "show"])).stdout) as { ifname: string }[];
  t.false(
    host.some((l) => l.ifname === "br-sync"),
    "bridge left on the host",
  );
  t.false(existsSync(lab.stateDir), "state dir left behind");
  await lab.down(); // idempotent
});
