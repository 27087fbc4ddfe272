import test from "ava";
import { loadConfig } from "../../inputs/config/load.js";

const base = `gateway: { name: gw, site: a }
egressIPs: [{ address: 192.0.2.11, interface: lo }]
uplinks: [{ name: tor, interface: eth1, nextHop: 10.1.1.0 }]
policies:
  - { name: web, sources: [10.244.0.0/16], destinations: [203.0.113.0/24], egressIP: 192.0.2.11, uplink: tor }
`;

const errors = (bgp: string) => {
  const r = loadConfig(base + bgp);
  return r.ok ? [] : r.errors.map((e) => `${e.path}: ${e.message}`);
};

test("a valid bgp section loads", (t) => {
  t.deepEqual(
    errors(`bgp:
  asn: 65011
  routerId: 10.1.1.1
  peers:
    - { name: tor, address: 10.1.1.0, asn: 65010, password: s3cret, localAddress: 10.1.1.1, bfd: { minRxMs: 100 } }
    - { name: tor6, address: "fd00::1", asn: 65010, localAddress: "fd00::2" }
  advertise: { asPathPrepend: 3, communities: ["65011:200"], med: 10 }
`),
    [],
  );
});

test("bad ASNs, router id, addresses and families are named by path", (t) => {
  const e = errors(`bgp:
  asn: 23456
  routerId: "fd00::1"
  peers:
    - { name: tor, address: 10.1.1.300, asn: 4294967296 }
    - { name: tor, address: 10.1.1.0, asn: 65010, localAddress: "fd00::2", families: [ipv6-unicast] }
    - { name: tor2, address: 10.1.1.0, asn: 0, keepalive: 5, holdTime: 9 }
`);
  const has = (re: RegExp) =>
    t.true(
      e.some((x) => re.test(x)),
      `${re} not in:\n${e.join("\n")}`,
    );
  has(/^bgp\.asn: 23456 is AS_TRANS/);
  has(/^bgp\.routerId: "fd00::1" is not an IPv4 address/);
  has(/^bgp\.peers\[0\]\.asn: /);
  has(/^bgp\.peers\[0\]\.address: "10\.1\.1\.300" is not an IP address/);
  has(/^bgp\.peers\[1\]\.name: "tor" is already used by bgp\.peers\[0\]/);
  has(/^bgp\.peers\[1\]\.localAddress: fd00::2 is IPv6 but the peer address 10\.1\.1\.0 is IPv4/);
  has(/^bgp\.peers\[1\]\.families: the session runs over IPv4 but does not carry ipv4-unicast/);
  has(/^bgp\.peers\[2\]\.address: 10\.1\.1\.0 is already bgp\.peers\[1\]/);
  has(/^bgp\.peers\[2\]\.asn: /);
  has(/^bgp\.peers\[2\]\.keepalive: 5 s is more than a third of the hold time \(9 s\)/);
  t.deepEqual(
    errors(
      `bgp: { asn: 65011, routerId: 10.1.1.1, peers: [{ name: tor, address: 10.1.1.0, asn: 65010, bfd: {} }] }\n`,
    ),
    ["bgp.peers[0].localAddress: required with bfd: the BFD session runs from this address"],
  );
});

test("sidecar mode needs an address; unknown keys are refused", (t) => {
  const e = errors(`bgp:
  asn: 65011
  routerId: 10.1.1.1
  speaker: { mode: sidecar }
  peers: [{ name: tor, address: 10.1.1.0, asn: 65010, colour: red }]
`);
  t.true(
    e.some((x) => x.startsWith("bgp.speaker.address: required in sidecar mode")),
    e.join("\n"),
  );
  t.true(
    e.some((x) => x.startsWith("bgp.peers[0].colour: unknown key")),
    e.join("\n"),
  );
});

test("TCP-MD5 passwords: the 80-byte limit counts bytes, control characters are refused, the value is never echoed", (t) => {
  const withPassword = (pw: string) =>
    errors(`bgp:
  asn: 65011
  routerId: 10.1.1.1
  peers: [{ name: tor, address: 10.1.1.0, asn: 65010, password: ${JSON.stringify(pw)} }]
`);
  t.deepEqual(withPassword("x".repeat(80)), []);
  const multibyte = "é".repeat(41); // 41 characters, 82 bytes
  t.true(
    withPassword(multibyte).some((e) =>
      /^bgp\.peers\[0\]\.password: 82 bytes, more than the kernel's 80-byte key limit$/.test(e),
    ),
  );
  for (const pw of ["sec\nret", "sec\u0000ret", "tab\there"]) {
    const e = withPassword(pw);
    t.true(
      e.some((x) => /^bgp\.peers\[0\]\.password: contains a control character/.test(x)),
      JSON.stringify(e),
    );
    t.false(e.join(" ").includes("sec"), "the password is never repeated in an error");
  }
});

test("the sidecar speaker is reached only over a unix socket or loopback", (t) => {
  const withSpeaker = (address: string) =>
    errors(`bgp:
  asn: 65011
  routerId: 10.1.1.1
  speaker: { mode: sidecar, address: ${JSON.stringify(address)} }
  peers: [{ name: tor, address: 10.1.1.0, asn: 65010 }]
`);
  for (const ok of ["unix:///run/gobgpd/api.sock", "127.0.0.1:50051", "[::1]:50051", "localhost:50051"])
    t.deepEqual(withSpeaker(ok), [], ok);
  t.true(
    withSpeaker("10.1.1.5:50051").some((e) =>
      /^bgp\.speaker\.address: 10\.1\.1\.5 is not a loopback address/.test(e),
    ),
  );
  t.true(
    withSpeaker("http://evil example:abc").some((e) =>
      /^bgp\.speaker\.address: "http:\/\/evil example:abc" is not unix:\/\/\/path or host:port/.test(e),
    ),
  );
  t.true(withSpeaker("0.0.0.0:50051").some((e) => /is not a loopback address/.test(e)));
});
