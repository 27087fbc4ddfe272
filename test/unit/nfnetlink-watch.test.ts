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
