// The two-dc lab with a third gateway in DC A (gw-a3), made from the
// committed topology in memory: how a test or a benchmark adds a gateway to
// the ECMP group and takes it away again while connections run. gw-a3 is
// gw-a2's twin on its own ToR port (eth6) and sync port; the three DC A
// gateways' connectionSync lists the two others (so they use the group's
// multicast address). tor-a accepts it through its listen range; its FRR
// configuration only gains the announcement of gw-a3's link.
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { Topology } from "./topology.js";

export const GW_A3 = { link: "10.1.3.1", tor: "10.1.3.0", web: "192.0.2.13", sync: "10.1.9.3" } as const;

const SYNC_PEER = (name: string, address: string, ips: string[]) =>
  `    - { name: ${name}, address: ${address}, egressIPs: [${ips.map((i) => JSON.stringify(i)).join(", ")}] }`;
const PEERS = {
  "gw-a1": SYNC_PEER("gw-a1", "10.1.9.1", ["192.0.2.11", "192.0.2.131", "2001:db8:e::11"]),
  "gw-a2": SYNC_PEER("gw-a2", "10.1.9.2", ["192.0.2.12", "192.0.2.132", "2001:db8:e::12"]),
  "gw-a3": SYNC_PEER("gw-a3", GW_A3.sync, [GW_A3.web, "192.0.2.133", "2001:db8:e::13"]),
};

/** Adds gw-a3 to `topo` (loaded from two-dc.clab.yml); its config files go to a new folder under `dir`. */
export function addThirdGateway(topo: Topology, dir: string): Topology {
  const out = mkdtempSync(join(dir, "three-gateways-"));
  const node = (name: string) => {
    const n = topo.nodes.find((x) => x.name === name);
    if (!n) throw new Error(`two-dc has no node ${name}`);
    return n;
  };
  const config = (name: string) => node(name).binds.find((b) => b.target === "/etc/egressd/egressd.yaml")!;
  // Each DC A member's sync peers: the two others.
  const rewrite = (name: "gw-a1" | "gw-a2" | "gw-a3", text: string) => {
    const others = (Object.keys(PEERS) as (keyof typeof PEERS)[])
      .filter((n) => n !== name)
      .map((n) => PEERS[n]);
    const peers = /(\n {2}peers:\n)( {4}- \{ name: gw-a\d[^\n]*\n)/;
    if (!peers.test(text)) throw new Error(`${name}: no connectionSync peer to replace`);
    return text.replace(peers, `$1${others.join("\n")}\n`);
  };
  const a2original = readFileSync(config("gw-a2").source, "utf8");
  for (const name of ["gw-a1", "gw-a2"] as const) {
    const b = config(name);
    const file = join(out, `${name}.yaml`);
    writeFileSync(file, rewrite(name, readFileSync(b.source, "utf8")));
    b.source = file;
  }
  const a2 = node("gw-a2");
  const a3text = rewrite(
    "gw-a3",
    a2original
      .replaceAll("gw-a2", "gw-a3")
      .replace(/192\.0\.2\.12\b/g, GW_A3.web)
      .replaceAll("192.0.2.132", "192.0.2.133")
      .replaceAll("2001:db8:e::12", "2001:db8:e::13")
      .replaceAll("10.1.2.0", GW_A3.tor)
      .replaceAll("10.1.2.1", GW_A3.link)
      .replaceAll("fd00:1:2::", "fd00:1:3::")
      .replaceAll("10.1.9.2", GW_A3.sync),
  );
  const a3file = join(out, "gw-a3.yaml");
  writeFileSync(a3file, a3text);
  topo.nodes.push({
    ...a2,
    name: "gw-a3",
    binds: [{ source: a3file, target: "/etc/egressd/egressd.yaml", readOnly: false }],
    exec: a2.exec.map((c) =>
      c
        .replaceAll("10.1.2.", "10.1.3.")
        .replaceAll("fd00:1:2::", "fd00:1:3::")
        .replaceAll("10.1.9.2/", `${GW_A3.sync}/`),
    ),
  });
  // tor-a announces its gateway links (the probes' answers come back over them): gw-a3's too.
  const frr = node("tor-a").binds.find((b) => b.target === "/etc/frr/frr.conf")!;
  const frrText = readFileSync(frr.source, "utf8");
  const withLink = frrText
    .replace("  network 10.1.2.0/31\n", "  network 10.1.2.0/31\n  network 10.1.3.0/31\n")
    .replace("  network fd00:1:2::/64\n", "  network fd00:1:2::/64\n  network fd00:1:3::/64\n");
  if (withLink.split("network").length !== frrText.split("network").length + 2)
    throw new Error("tor-a's frr.conf does not announce gw-a2's link as expected");
  frr.source = join(out, "tor-a-frr.conf");
  writeFileSync(frr.source, withLink);
  node("tor-a").exec.push(
    `ip addr add ${GW_A3.tor}/31 dev eth6`,
    "ip addr add fd00:1:3::1/64 dev eth6",
    "ip rule add iif eth6 lookup 100 pref 100",
    "ip -6 rule add iif eth6 lookup 100 pref 100",
  );
  topo.links.push(
    { a: { node: "tor-a", interface: "eth6" }, b: { node: "gw-a3", interface: "eth1" } },
    { a: { node: "sync-a", interface: "eth3" }, b: { node: "gw-a3", interface: "eth2" } },
  );
  return topo;
}
