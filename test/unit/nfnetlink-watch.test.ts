// Reading the kernel's nf_tables notifications of added elements (what
// bench/nft-watch.ts prints): the messages are the ones egressd writes.
import test from "ava";
import { addedElementKeys, setElementsMessage } from "../../routing/nfnetlink.js";

test("the addresses of NEWSETELEM messages are read back, IPv4 and IPv6; deletions and other messages are not", (t) => {
  const added = setElementsMessage(true, 1, "egressd", "c1_hosts4", ["10.64.1.2", "10.64.1.3"]);
  const added6 = setElementsMessage(true, 2, "egressd", "c2_hosts6", ["2001:db8::1"]);
  const removed = setElementsMessage(false, 3, "egressd", "c1_hosts4", ["10.64.1.9"]);
  t.deepEqual(addedElementKeys(added), ["10.64.1.2", "10.64.1.3"]);
  t.deepEqual(addedElementKeys(Buffer.concat([removed, added6, added])), [
    "2001:db8::1",
    "10.64.1.2",
    "10.64.1.3",
  ]);
  t.deepEqual(addedElementKeys(removed), []);
  // A truncated datagram is nothing, not an exception.
  t.deepEqual(addedElementKeys(added.subarray(0, added.length - 6)), []);
});

test("a NEWSETELEM message is laid out as the kernel reads it (nlmsghdr, nfgenmsg, names, nested elements)", (t) => {
  const words = [
    "38000000 0c0a0004 07000000 00000000", // nlmsghdr: length 56, NFT_MSG_NEWSETELEM, NLM_F_CREATE, seq 7
    "01000000", // nfgenmsg: NFPROTO_INET
    "06000100 74000000", // NFTA_SET_ELEM_LIST_TABLE "t\0", padded
    "06000200 73000000", // NFTA_SET_ELEM_LIST_SET "s\0", padded
    "14000380", // NFTA_SET_ELEM_LIST_ELEMENTS, nested, 20 bytes
    "10000180 0c000180 08000100 0a000001", // LIST_ELEM { KEY { DATA_VALUE 10.0.0.1 } }
  ];
  const want = Buffer.from(words.join("").replace(/ /g, ""), "hex");
  t.deepEqual(setElementsMessage(true, 7, "t", "s", ["10.0.0.1"]), want);
  // Not canonical dotted quads are read as addresses all the same, or refused.
  t.deepEqual(setElementsMessage(true, 7, "t", "s", ["::ffff:10.0.0.1"]).length, want.length + 12);
  t.throws(() => setElementsMessage(true, 7, "t", "s", ["10.0.0.256"]));
});
