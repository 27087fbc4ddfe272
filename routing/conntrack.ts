// Connections the kernel NATed to an egress IP that egressd no longer owns
// are forgotten: an established flow keeps its SNAT binding in conntrack
// after the rule and the address are gone, and its next packet would leave
// with the old address, which may be another gateway's by then (a claimed
// address given back or taken over). conntrack(8) deletes them by the reply
// direction's destination, which is the SNAT address.
import { CommandError, run } from "../lib/exec.js";
import { parseAddress } from "../core/ip.js";

/** Deletes the conntrack entries NATed to each address; returns how many were deleted per address. */
export async function forgetConnections(addresses: readonly string[]): Promise<Map<string, number>> {
  const out = new Map<string, number>();
  for (const address of addresses) {
    const a = parseAddress(address);
    if (!a) continue;
    const argv = ["conntrack", "-D", "-f", a.family === 4 ? "ipv4" : "ipv6", "--reply-dst", address];
    try {
      const r = await run(argv, { timeoutMs: 10_000 });
      out.set(address, countOf(r.stderr));
    } catch (e) {
      // Exit 1 with "0 flow entries have been deleted" is nothing to delete.
      if (e instanceof CommandError && e.code === 1 && /\b0 flow entries/.test(e.stderr)) out.set(address, 0);
      else throw e;
    }
  }
  return out;
}

const countOf = (text: string) => Number(/(\d+) flow entr/.exec(text)?.[1] ?? 0);
