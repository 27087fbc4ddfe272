// Which addresses this network namespace has: one listing for all the egress
// IPs, and a word to a follower only when its address comes or goes.
//
// The gateway must know when one of its egress IPs is gone (deleted by hand,
// by another agent, with its interface): what it advertises for that address
// must go. It used to run one check per egress IP every 500 ms, each through
// the prober's machinery (a timer, an abort signal, a result to judge and to
// count): 100 runs a second at 50 egress IPs, to learn nothing new, and a
// deletion was seen after two failed runs. Here one rtnetlink dump of the
// namespace's addresses every interval serves every address, and a follower
// hears only of changes. A deletion is seen within one interval (it took one
// to three before).
//
// Why not the kernel's notifications (RTNLGRP_IPV4_IFADDR and _IPV6_IFADDR),
// which would tell at once and cost nothing in between? A notification socket
// overflows when a burst of changes meets a busy loop, and the kernel then
// flags the socket with ENOBUFS. The `netlink` package's native poll handler
// turns that error into an exception it cannot throw, and the process aborts
// (`terminate called after throwing an instance of 'Napi::Error'`; seen with
// 400 address changes while the loop was busy for 1.5 s). A dump is a request
// and its answer: nothing arrives that was not asked for.
//
// A dump that a change interrupted (NLM_F_DUMP_INTR) is run again at once. An
// address that comes and goes within one interval is not seen; that is the
// price of listing rather than listening.
//
// A newly followed address that is not there yet is not reported absent at
// once: on a reload the gateway follows a new egress IP before the reconcile
// that adds it has run, and one listing in between would take its check down
// (and hold it down for the hold-down) for an address that was never
// missing. Its absence is told once it has been seen, or after a grace
// (NEW_ADDRESS_GRACE_MS) in which the reconcile had time to add it.
import { createRtNetlink, type NetlinkMessage, type RtNetlinkSocket } from "netlink";
import { performance } from "node:perf_hooks";
import { addressBytes } from "./ip.js";
import { NLM_F_DUMP } from "./netlink-link.js";
import { attrMap } from "./nlattr.js";

const RTM_NEWADDR = 20;
const RTM_GETADDR = 22;
const NLM_F_DUMP_INTR = 0x10;
const IFA_ADDRESS = 1;
const IFA_LOCAL = 2;

/** How often the addresses are listed (ms): the self-checks' interval. */
export const ADDRESS_LIST_MS = 500;
/** A newly followed address that is absent is not told so before this (ms); see the header. */
export const NEW_ADDRESS_GRACE_MS = 5_000;
/** A listing that has not answered in this long has failed (ms). */
const DUMP_TIMEOUT_MS = 2_000;

export interface AddressWatchOptions {
  intervalMs?: number;
  newAddressGraceMs?: number;
  /** A listing failed (for the log; said once until one succeeds again). The watch goes on. */
  onError?: (message: string) => void;
  now?: () => number;
}

export interface AddressWatch {
  /**
   * Follows one address: `onChange(present)` is called once its presence is
   * known (after the next listing that has it, or after the grace if none
   * has) and then on every change. Returns the unfollow.
   */
  follow(address: string, onChange: (present: boolean) => void): () => void;
  /** Listings run so far (for tests). */
  readonly listings: number;
  close(): void;
}

/**
 * The addresses in a dump's messages, each as the hex of its bytes (the
 * cheapest key to make: no text is formatted for the 50 and more addresses
 * of each listing). Pure.
 */
export function addressesOf(msgs: readonly NetlinkMessage[]): Set<string> {
  const out = new Set<string>();
  for (const m of msgs) {
    if (m.type !== RTM_NEWADDR) continue;
    // struct ifaddrmsg (8 bytes), then attributes: IFA_LOCAL is the address itself; IFA_ADDRESS,
    // the peer's on a point-to-point link, stands in when there is no IFA_LOCAL (IPv6).
    const a = attrMap(m.data.subarray(8));
    const bytes = a.get(IFA_LOCAL) ?? a.get(IFA_ADDRESS);
    if (bytes) out.add(bytes.toString("hex"));
  }
  return out;
}

/** The key addressesOf gives `address`. */
export const addressKey = (address: string): string => addressBytes(address).toString("hex");

export function watchAddresses(opts: AddressWatchOptions = {}): AddressWatch {
  const intervalMs = opts.intervalMs ?? ADDRESS_LIST_MS;
  const graceMs = opts.newAddressGraceMs ?? NEW_ADDRESS_GRACE_MS;
  const now = opts.now ?? (() => performance.now());
  const followers = new Map<string, Set<(present: boolean) => void>>();
  /** Each followed address's presence as last told to its followers. */
  const told = new Map<string, boolean>();
  /** When each address not yet seen since it was first followed was followed. */
  const unseenSince = new Map<string, number>();
  let rt: RtNetlinkSocket | undefined;
  let timer: NodeJS.Timeout | undefined;
  let listing = false;
  let failing = false;
  let listings = 0;
  let closed = false;

  const dump = async (): Promise<Set<string> | undefined> => {
    rt ??= createRtNetlink();
    for (let attempt = 0; attempt < 3; attempt++) {
      // struct ifaddrmsg, all zero: family AF_UNSPEC, every family's addresses.
      const [msgs] = await rt.socket.request(RTM_GETADDR, [Buffer.alloc(8)], {
        flags: NLM_F_DUMP,
        timeout: DUMP_TIMEOUT_MS,
      });
      if (!msgs.some((m) => m.flags & NLM_F_DUMP_INTR)) return addressesOf(msgs);
    }
    return undefined; // changing all the time: the next interval's listing
  };

  const list = async (): Promise<void> => {
    if (listing || closed) return;
    listing = true;
    try {
      const present = await dump();
      listings++;
      failing = false;
      if (!present || closed) return;
      for (const [address, fs] of followers) {
        const has = present.has(address);
        if (has) unseenSince.delete(address);
        else if (now() - (unseenSince.get(address) ?? -Infinity) < graceMs) continue;
        if (told.get(address) === has) continue;
        told.set(address, has);
        for (const f of fs) f(has);
      }
    } catch (e) {
      if (!failing && !closed)
        opts.onError?.(`listing addresses failed: ${e instanceof Error ? e.message : String(e)}`);
      failing = true;
    } finally {
      listing = false;
    }
  };

  /** On the interval's multiples, so the listing shares its wake-up with the self-checks' round. */
  const schedule = (): void => {
    timer = setTimeout(
      () => {
        void list();
        schedule();
      },
      intervalMs - (now() % intervalMs),
    );
    timer.unref();
  };

  return {
    follow(address, onChange) {
      if (closed) throw new Error("the address watch is closed");
      const key = addressKey(address);
      let fs = followers.get(key);
      if (!fs) {
        followers.set(key, (fs = new Set()));
        unseenSince.set(key, now());
      }
      fs.add(onChange);
      const known = told.get(key);
      if (known !== undefined) onChange(known);
      // A new address is listed at once rather than at the next multiple.
      else void list();
      if (!timer) schedule();
      return () => {
        fs.delete(onChange);
        if (fs.size) return;
        followers.delete(key);
        told.delete(key);
        unseenSince.delete(key);
        if (followers.size || !timer) return;
        clearTimeout(timer);
        timer = undefined;
      };
    },
    get listings() {
      return listings;
    },
    close() {
      closed = true;
      clearTimeout(timer);
      timer = undefined;
      followers.clear();
      rt?.socket.close();
      rt = undefined;
    },
  };
}
