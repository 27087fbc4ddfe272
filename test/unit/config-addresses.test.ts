// Addresses that validate must work: special-use space is refused where it can
// never work (egress IPs, peers, router id, destinations wholly inside it), and
// what works but surprises (a /0 not advertised, a destination covering its own
// pods) draws a warning that says why.
import test from "ava";
import { loadConfig } from "../../inputs/config/load.js";

const base = (
  egress = "192.0.2.11",
  policy = "destinations: [203.0.113.0/24]",
  bgp = "",
) => `gateway: { name: gw, site: a }
egressIPs: [{ address: "${egress}", interface: lo }]
uplinks: [{ name: tor, interface: eth1, nextHop: 10.1.1.0 }]
policies:
  - { name: web, sources: [10.244.0.0/16], ${policy}, egressIP: "${egress}", uplink: tor }
${bgp}`;

const BGP = (extra = "", peer = "10.1.1.0", routerId = "10.1.1.1") => `bgp:
  asn: 65011
  routerId: ${routerId}
  peers: [{ name: tor, address: "${peer}", asn: 65010 }]
${extra}`;

function issues(yaml: string) {
  const r = loadConfig(yaml);
  return {
    errors: r.ok ? [] : r.errors.map((e) => `${e.path}: ${e.message}`),
    warnings: r.warnings.map((w) => `${w.path}: ${w.message}`),
  };
}

test("egress IPs that are never routed to a gateway are refused, naming the kind of space", (t) => {
  for (const [addr, what] of [
    ["127.0.0.1", /loopback/],
    ["255.255.255.255", /240\.0\.0\.0\/4/],
    ["0.0.0.0", /this network/],
    ["169.254.1.1", /link-local/],
    ["::ffff:192.0.2.11", /IPv4-mapped/],
    ["::1", /loopback/],
    ["fe80::1", /link-local/],
    ["ff02::1", /multicast/],
  ] as const) {
    const e = issues(base(addr)).errors;
    t.true(
      e.some(
        (x) => x.startsWith("egressIPs[0].address:") && what.test(x) && /cannot be an egress IP/.test(x),
      ),
      `${addr}: ${e.join("; ")}`,
    );
  }
  t.deepEqual(issues(base()).errors, []);
});

test("router id 0.0.0.0 and special-use peer addresses are refused", (t) => {
  t.true(
    issues(base(undefined, undefined, BGP("", "10.1.1.0", "0.0.0.0"))).errors.some((e) =>
      /^bgp\.routerId: 0\.0\.0\.0 is not a BGP identifier/.test(e),
    ),
  );
  for (const peer of ["0.0.0.0", "127.0.0.1", "224.0.0.5", "::"]) {
    const e = issues(base(undefined, undefined, BGP("", peer))).errors;
    t.true(
      e.some((x) => x.startsWith("bgp.peers[0].address:") && /cannot be a BGP peer/.test(x)),
      `${peer}: ${e.join("; ")}`,
    );
  }
});

test("a destination wholly in special-use space is refused; one that contains some is not", (t) => {
  t.true(
    issues(base(undefined, "destinations: [224.0.0.0/4]")).errors.some((e) =>
      /^policies\[0\]\.destinations\[0\]: 224\.0\.0\.0\/4 is a multicast range/.test(e),
    ),
  );
  t.true(
    issues(base(undefined, "destinations: [127.0.0.0/16]")).errors.some((e) => /loopback range/.test(e)),
  );
  t.deepEqual(issues(base(undefined, "destinations: [0.0.0.0/1]")).errors, []);
});

test("a /0 destination with BGP but no allowDefaultRoute warns that it is not advertised", (t) => {
  const w = issues(base(undefined, "destinations: [0.0.0.0/0]", BGP())).warnings;
  t.true(
    w.some((x) => /^policies\[0\]\.destinations\[0\]: 0\.0\.0\.0\/0 is SNATed but not advertised/.test(x)),
    w.join("; "),
  );
  t.deepEqual(
    issues(base(undefined, "destinations: [0.0.0.0/0]", BGP("  advertise: { allowDefaultRoute: true }")))
      .warnings,
    [],
  );
  t.deepEqual(
    issues(base(undefined, "destinations: [0.0.0.0/0]")).warnings,
    [],
    "no BGP, nothing to advertise",
  );
});

test("a destination that covers the policy's own sources warns", (t) => {
  const w = issues(base(undefined, "destinations: [10.0.0.0/8]", BGP())).warnings;
  t.true(
    w.some((x) =>
      /^policies\[0\]\.destinations\[0\]: 10\.0\.0\.0\/8 covers this policy's own sources \(10\.244\.0\.0\/16\)/.test(
        x,
      ),
    ),
    w.join("; "),
  );
});

test("values that validate are the values that run: communities, listen port, probe URLs", (t) => {
  const bgp = (extra: string) => issues(base(undefined, undefined, BGP(extra))).errors;
  t.true(
    bgp("  advertise: { communities: ['70000:100'] }").some((e) =>
      /^bgp\.advertise\.communities\[0\]: invalid community "70000:100"/.test(e),
    ),
  );
  t.deepEqual(bgp("  advertise: { communities: ['65011:100', no-export] }"), []);
  t.true(bgp("  listenPort: 0").some((e) => /^bgp\.listenPort: 0 is not a port/.test(e)));
  const probe = (url: string) =>
    issues(
      `${base()}probes:\n  - { name: fw, kind: http, target: 10.1.1.0, url: "${url}", affects: gateway }\n`,
    ).errors;
  t.true(
    probe("file:///etc/shadow").some((e) => /only http: and https: can be probed \(not file:\)/.test(e)),
    probe("file:///etc/shadow").join("; "),
  );
  t.deepEqual(probe("https://10.1.1.0:8443/healthz"), []);
  const secret = probe("gopher://user:hunter2@10.1.1.0/");
  t.true(secret.length > 0);
  t.false(secret.join(" ").includes("hunter2"), "the password in a URL is never repeated");
});

test("link-local peers name their interface; the session runs from a link-local address on it", (t) => {
  const peer = (address: string, local?: string) =>
    issues(
      base(
        undefined,
        undefined,
        `bgp:
  asn: 65011
  routerId: 10.1.1.1
  peers: [{ name: tor, address: "${address}", asn: 65010${local ? `, localAddress: "${local}"` : ""} }]
`,
      ),
    ).errors;
  t.deepEqual(peer("fe80::1%eth1"), []);
  t.deepEqual(peer("FE80::0001%eth1", "fe80::2%eth1"), []);
  t.true(
    peer("fe80::1").some((e) =>
      /^bgp\.peers\[0\]\.address: fe80::1 is link-local: name its interface too, e\.g\. fe80::1%eth1$/.test(
        e,
      ),
    ),
  );
  t.true(peer("2001:db8::1%eth1").some((e) => /only an IPv6 link-local address takes an interface/.test(e)));
  t.true(peer("fe80::1%bad name").some((e) => /is not an interface name/.test(e)));
  t.true(
    peer("fe80::1%eth1", "fe80::2%eth2").some((e) =>
      /^bgp\.peers\[0\]\.localAddress: .* runs from a link-local address on eth1/.test(e),
    ),
  );
});
