// reconcileAddressesWith() over a fake kernel: ownership marks, foreign
// addresses, missing interfaces, and a kernel that drops IFA_PROTO (< 5.18),
// which must be refused before a second address is added, with the first one
// taken away again.
import test from "ava";
import {
  reconcileAddressesWith,
  type AddressKernel,
  type LiveAddress,
} from "../../routing/netlink-addresses.js";
import type { DesiredAddress } from "../../core/state.js";
import { OWNER } from "../../core/state.js";

class FakeKernel implements AddressKernel {
  readonly links = new Map([
    ["lo", 1],
    ["eth1", 2],
  ]);
  addresses: LiveAddress[] = [];
  readonly calls: string[] = [];
  constructor(private readonly keepsProtocol = true) {}
  list() {
    return Promise.resolve(this.addresses.map((a) => ({ ...a })));
  }
  add(d: DesiredAddress, ifindex: number) {
    this.calls.push(`add ${d.address}`);
    this.addresses.push({
      family: d.family,
      address: d.address,
      prefixLength: d.prefixLength,
      interface: d.interface,
      ifindex,
      protocol: this.keepsProtocol ? OWNER.rtProtocol : 0,
    });
    return Promise.resolve();
  }
  remove(a: LiveAddress) {
    this.calls.push(`remove ${a.address}`);
    this.addresses = this.addresses.filter((x) => !(x.address === a.address && x.ifindex === a.ifindex));
    return Promise.resolve();
  }
}

const want = (address: string, iface = "lo"): DesiredAddress => ({
  family: 4,
  address,
  prefixLength: 32,
  interface: iface,
});

test("adds what is missing, marked; removes only its own extras; leaves foreign ones", async (t) => {
  const k = new FakeKernel();
  k.addresses.push(
    {
      family: 4,
      address: "192.0.2.9",
      prefixLength: 32,
      interface: "lo",
      ifindex: 1,
      protocol: OWNER.rtProtocol,
    },
    { family: 4, address: "192.0.2.12", prefixLength: 32, interface: "lo", ifindex: 1, protocol: 0 },
  );
  const c = await reconcileAddressesWith(k, [
    want("192.0.2.11"),
    want("192.0.2.12"),
    want("192.0.2.13", "nosuch0"),
  ]);
  t.deepEqual(c.added, ["192.0.2.11/32 dev lo"]);
  t.deepEqual(c.removed, ["192.0.2.9/32 dev lo"]);
  t.deepEqual(c.foreign, ["192.0.2.12/32 dev lo"]);
  t.deepEqual(c.missingInterface, ["192.0.2.13/32 dev nosuch0"]);
});

test("a kernel that drops IFA_PROTO: refused after the first add, which is taken away again", async (t) => {
  const k = new FakeKernel(false);
  const err = await t.throwsAsync(reconcileAddressesWith(k, [want("192.0.2.11"), want("192.0.2.12")]));
  t.regex(err?.message ?? "", /does not keep the address protocol \(IFA_PROTO, Linux >= 5\.18\)/);
  t.deepEqual(k.calls, ["add 192.0.2.11", "remove 192.0.2.11"], "no second address, and nothing left behind");
  t.deepEqual(k.addresses, []);
});
