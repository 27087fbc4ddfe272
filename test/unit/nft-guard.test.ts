// The guard table's plan and text: GTSM for BFD when a peer runs BFD, and the
// BGP listen port open to configured peers only when gobgpd listens.
import test from "ava";
import { stringify } from "yaml";
import { loadConfig } from "../../inputs/config/load.js";
import { guardPlan, plan } from "../../core/plan/kernel.js";
import { renderGuard } from "../../routing/nft-guard.js";

const base = {
  gateway: { name: "gw", site: "a" },
  egressIPs: [{ address: "192.0.2.11", interface: "lo" }],
  uplinks: [{ name: "tor", interface: "eth1", nextHop: "10.1.1.0" }],
  policies: [
    {
      name: "web",
      sources: ["10.244.0.0/16"],
      destinations: ["203.0.113.0/24"],
      egressIP: "192.0.2.11",
      uplink: "tor",
    },
  ],
};
const load = (extra: object) => {
  const r = loadConfig(stringify({ ...base, ...extra }));
  if (!r.ok) throw new Error(JSON.stringify(r.errors));
  return r.config;
};

test("no BGP, no guard; BGP without listening or BFD guards nothing but is still planned", (t) => {
  t.is(plan(load({})).guard, undefined);
  const g = guardPlan(
    load({
      bgp: { asn: 65011, routerId: "10.1.1.1", peers: [{ name: "tor", address: "10.1.1.0", asn: 65010 }] },
    }),
  );
  t.deepEqual(g, { bfdTtl: false });
});

test("BFD peers turn on GTSM; a listening gobgpd admits only its peers, per family", (t) => {
  const c = load({
    bgp: {
      asn: 65011,
      routerId: "10.1.1.1",
      listenPort: 179,
      peers: [
        { name: "tor", address: "10.1.1.0", asn: 65010, localAddress: "10.1.1.1", bfd: {} },
        { name: "tor6", address: "FD00:1::1", asn: 65010 },
        { name: "tor2", address: "10.1.2.0", asn: 65010 },
      ],
    },
  });
  const g = plan(c).guard!;
  t.deepEqual(g, {
    bfdTtl: true,
    bgp: { port: 179, peers4: ["10.1.1.0", "10.1.2.0"], peers6: ["fd00:1::1"] },
  });
  const text = renderGuard(g);
  t.regex(
    text,
    /^table inet egressd_guard \{\}\ndelete table inet egressd_guard\n/,
    "replaces itself atomically",
  );
  t.regex(text, /udp dport 3784 ip ttl != 255 counter drop/);
  t.regex(text, /udp dport 3784 ip6 hoplimit != 255 counter drop/);
  t.regex(text, /elements = \{ 10\.1\.1\.0, 10\.1\.2\.0 \}/);
  t.regex(text, /meta nfproto ipv4 tcp dport 179 ip saddr != @bgp_peers4 counter drop/);
  t.regex(text, /meta nfproto ipv6 tcp dport 179 ip6 saddr != @bgp_peers6 counter drop/);
  const v4only = renderGuard({ bfdTtl: false, bgp: { port: 1179, peers4: ["10.1.1.0"], peers6: [] } });
  t.false(v4only.includes("3784"));
  t.regex(
    v4only,
    /set bgp_peers6 \{\n {4}type ipv6_addr\n {2}\}/,
    "an empty set drops every IPv6 connection",
  );
});
