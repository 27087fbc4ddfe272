// Pure tests of the BGP model, codecs and diffs: no root, no processes.
import test from "ava";
import { diffPaths } from "../../bgp/path-reconciler.js";
import { diffPeers } from "../../bgp/peer-reconciler.js";
import { decodePath, encodePath, isLocalPath } from "../../bgp/path-codec.js";
import { decodePeer, encodePeer } from "../../bgp/peer-codec.js";
import {
  BgpValidationError,
  canonicalPath,
  parseCommunity,
  parsePrefix,
  validateAsn,
  type BgpPath,
  type BgpPeer,
} from "../../core/bgp.js";

const p4: BgpPath = {
  prefix: "203.0.113.0/24",
  nextHop: "10.0.0.2",
  med: 10,
  communities: ["65001:200", "65001:100"],
};
const p6: BgpPath = { prefix: "2001:db8::/48", nextHop: "fd00::2" };

test("diffPaths: nothing to do when actual equals desired", (t) => {
  t.deepEqual(diffPaths([p4, p6], [p6, p4]), { add: [], withdraw: [], unchanged: 2 });
});

test("diffPaths: adds missing, withdraws extra", (t) => {
  const extra: BgpPath = { prefix: "198.51.100.0/24", nextHop: "10.0.0.2" };
  const d = diffPaths([p4, p6], [p4, extra]);
  t.deepEqual(
    d.add.map((p) => p.prefix),
    ["2001:db8::/48"],
  );
  t.deepEqual(
    d.withdraw.map((p) => p.prefix),
    ["198.51.100.0/24"],
  );
  t.is(d.unchanged, 1);
});

test("diffPaths: a changed attribute re-adds the path (no withdraw)", (t) => {
  for (const changed of [
    { ...p4, med: 20 },
    { ...p4, med: undefined },
    { ...p4, nextHop: "10.0.0.3" },
    { ...p4, communities: ["65001:100"] },
    { ...p4, asPathPrepend: 2 },
  ]) {
    const d = diffPaths([changed], [p4]);
    t.is(d.add.length, 1, JSON.stringify(changed));
    t.is(d.withdraw.length, 0);
  }
});

test("diffPaths: equivalent spellings are equal (community order/duplicates, IPv6 case and zeros, prepend 0)", (t) => {
  const a: BgpPath = {
    prefix: "2001:DB8:0:0::/48",
    nextHop: "FD00:0::2",
    communities: ["1:2", "1:2", "0:5"],
    asPathPrepend: 0,
  };
  const b: BgpPath = { prefix: "2001:db8::/48", nextHop: "fd00::2", communities: ["0:5", "1:2"] };
  t.deepEqual(diffPaths([a], [b]), { add: [], withdraw: [], unchanged: 1 });
});

test("diffPaths: an actual path with a foreign AS_PATH (-1) is replaced", (t) => {
  const d = diffPaths([p4], [{ ...p4, asPathPrepend: -1 }]);
  t.is(d.add.length, 1);
});

test("diffPaths: rejects bad desired paths with a clear message", (t) => {
  const bad = (p: BgpPath, re: RegExp) =>
    t.throws(() => diffPaths([p], []), { instanceOf: BgpValidationError, message: re });
  bad({ prefix: "203.0.113.1/24", nextHop: "10.0.0.2" }, /host bits set/);
  bad({ prefix: "203.0.113.0", nextHop: "10.0.0.2" }, /ADDRESS\/LENGTH/);
  bad({ prefix: "203.0.113.0/33", nextHop: "10.0.0.2" }, /prefix length must be 0-32/);
  bad({ prefix: "203.0.113.0/24", nextHop: "fd00::2" }, /address family/);
  bad({ prefix: "203.0.113.0/24", nextHop: "nope" }, /next hop/);
  bad({ prefix: "203.0.113.0/24", nextHop: "10.0.0.2", communities: ["65536:1"] }, /community/);
  bad({ prefix: "203.0.113.0/24", nextHop: "10.0.0.2", med: -1 }, /MED/);
  bad({ prefix: "203.0.113.0/24", nextHop: "10.0.0.2", asPathPrepend: 300 }, /asPathPrepend/);
  bad({ prefix: "203.0.113.0/24", nextHop: "10.0.0.2", asPathPrepend: -1 }, /asPathPrepend/);
  t.throws(() => diffPaths([p4, { ...p4, med: 1 }], []), { message: /desired twice/ });
});

test("model helpers", (t) => {
  t.is(parseCommunity("65000:100"), 65000 * 65536 + 100);
  t.is(parseCommunity("no-export"), 0xffffff01);
  t.is(parsePrefix("10.0.0.0/8").text, "10.0.0.0/8");
  t.is(parsePrefix("::/0").text, "::/0");
  t.is(validateAsn(4200000000), 4200000000);
  t.throws(() => validateAsn(0), { message: /invalid ASN 0/ });
  t.throws(() => validateAsn(2 ** 32), { message: /1\.\.4294967295/ });
  t.throws(() => validateAsn(23456), { message: /AS_TRANS/ });
  t.throws(() => validateAsn(1.5));
});

test("path codec: encode then decode gives the canonical path back", (t) => {
  for (const p of [{ ...p4, asPathPrepend: 3 }, p6, { prefix: "0.0.0.0/0", nextHop: "192.0.2.1" }]) {
    const api = encodePath(p, 65001);
    t.true(isLocalPath(api));
    const back = decodePath(api, 65001);
    t.truthy(back);
    t.deepEqual(diffPaths([p], back ? [back] : []), { add: [], withdraw: [], unchanged: 1 });
  }
});

test("path codec: IPv6 uses MP_REACH_NLRI, IPv4 NEXT_HOP; prepend is one AS_SEQUENCE of our ASN", (t) => {
  const v4 = encodePath({ ...p4, asPathPrepend: 2 }, 65001);
  t.deepEqual(
    v4.pattrs.map((a) => a.typeUrl.replace("type.googleapis.com/", "")),
    [
      "apipb.OriginAttribute",
      "apipb.NextHopAttribute",
      "apipb.AsPathAttribute",
      "apipb.MultiExitDiscAttribute",
      "apipb.CommunitiesAttribute",
    ],
  );
  const v6 = encodePath(p6, 65001);
  t.deepEqual(
    v6.pattrs.map((a) => a.typeUrl.replace("type.googleapis.com/", "")),
    ["apipb.OriginAttribute", "apipb.MpReachNLRIAttribute"],
  );
  t.is(v6.family?.afi, 2);
  // Someone else's AS in the path is not "our prepend".
  t.is(decodePath(encodePath({ ...p4, asPathPrepend: 2 }, 65001), 65002)?.asPathPrepend, -1);
});

const peer: BgpPeer = { address: "10.0.0.1", peerAsn: 65000, holdTime: 3, connectRetry: 1 };

test("diffPeers: add, delete, nothing", (t) => {
  t.deepEqual(diffPeers([peer], []).add.length, 1);
  t.deepEqual(diffPeers([], [peer]).delete, ["10.0.0.1"]);
  const same = diffPeers(
    [peer],
    [{ ...peer, keepaliveInterval: 1, families: ["ipv6-unicast", "ipv4-unicast"] }],
  );
  t.deepEqual(same, { add: [], update: [], replace: [], delete: [] });
});

test("diffPeers: timer-only change is an update, others a replace", (t) => {
  t.is(diffPeers([{ ...peer, holdTime: 9 }], [peer]).update.length, 1);
  t.is(diffPeers([{ ...peer, connectRetry: 5 }], [peer]).update.length, 1);
  for (const changed of [
    { ...peer, password: "secret" },
    { ...peer, peerAsn: 65010 },
    { ...peer, ebgpMultihopTtl: 2 },
    { ...peer, gracefulRestart: true },
    { ...peer, families: ["ipv4-unicast" as const] },
    { ...peer, localAddress: "10.0.0.2" },
  ]) {
    t.is(diffPeers([changed], [peer]).replace.length, 1, JSON.stringify(changed));
  }
});

test("diffPeers: an unconfigured local address ignores the one gobgpd reports in use", (t) => {
  t.is(diffPeers([peer], [{ ...peer, localAddress: "10.0.0.2" }]).replace.length, 0);
});

test("diffPeers: rejects invalid and duplicated neighbors", (t) => {
  t.throws(() => diffPeers([{ ...peer, peerAsn: 0 }], []), { message: /invalid peer ASN 0/ });
  t.throws(() => diffPeers([{ ...peer, address: "10.0.0.300" }], []), { message: /neighbor address/ });
  t.throws(() => diffPeers([{ ...peer, holdTime: 2 }], []), { message: /hold time/ });
  t.throws(() => diffPeers([peer, { ...peer }], []), { message: /desired twice/ });
});

test("peer codec: what we send reads back as the same configuration", (t) => {
  const full: BgpPeer = {
    ...peer,
    password: "pw",
    ebgpMultihopTtl: 3,
    gracefulRestart: true,
    restartTime: 30,
    localAddress: "10.0.0.2",
    families: ["ipv4-unicast"],
  };
  const back = decodePeer(encodePeer(full));
  t.deepEqual(diffPeers([full], [back.config]), { add: [], update: [], replace: [], delete: [] });
});

test("canonicalPath keeps MED 0 distinct from no MED", (t) => {
  t.is(canonicalPath({ ...p4, med: 0 }).med, 0);
  t.is(diffPaths([{ ...p4, med: 0 }], [{ ...p4, med: undefined }]).add.length, 1);
});
