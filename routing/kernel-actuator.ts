// The kernel side of a gateway as one small interface: apply a desired
// KernelState, tear everything down, read the SNAT counters, and the checks
// that watch the result. The real one drives netlink and nftables; tests give
// a fake that records what it was asked to do.
import { OWNER, type KernelState, type NatPlan, type NatSourcesDelta } from "../core/state.js";
import { forwardingCheck, type CheckFn } from "../health/probes/check.js";
import type { StreamProbe } from "../health/probe-types.js";
import { watchAddresses, type AddressWatch } from "./address-watch.js";
import { NfElementWriter } from "./nfnetlink.js";
import { NftReconciler, readNatCounters, type NatCounter } from "./nft.js";
import { GuardReconciler } from "./nft-guard.js";
import { reconcileKernel, teardownKernel, type KernelChanges, type TeardownSummary } from "./reconcile.js";

export interface KernelActuator {
  apply(
    desired: KernelState,
    opts?: { fullResync?: boolean; sourcesDelta?: NatSourcesDelta; sourcesOnly?: boolean },
  ): Promise<KernelChanges>;
  teardown(): Promise<TeardownSummary>;
  natCounters(nat: NatPlan): Promise<NatCounter[]>;
  /** Self-checks: the address is configured, forwarding is on, egressd's nft table exists. */
  checks: KernelChecks;
  /** Releases sockets (after teardown, or when leaving the state in place). */
  close(): void;
}

export interface KernelChecks {
  /** Pushes ok while the address is on some interface, a failure when a listing does not have it. */
  address(address: string): StreamProbe;
  forwarding(family: 4 | 6): CheckFn;
  nftTable(): CheckFn;
  /** Releases the checks' socket. */
  close(): void;
}

/**
 * The real self-checks: one address listing for all the egress IPs
 * (routing/address-watch.ts), /proc, and one netlink question for the table.
 * `onError`: what the address watch could not do (for the log);
 * `newAddressGraceMs`: the address watch's grace (routing/address-watch.ts).
 */
export function realChecks(
  opts: { onError?: (message: string) => void; newAddressGraceMs?: number } = {},
): KernelChecks {
  let tables: NfElementWriter | undefined;
  let addresses: AddressWatch | undefined;
  const tableCheck: CheckFn = async () => {
    tables ??= new NfElementWriter();
    if (await tables.hasTable(OWNER.nftTable)) return { ok: true };
    return { ok: false, reason: `nft table inet ${OWNER.nftTable} is missing` };
  };
  return {
    address: (address) => {
      let unfollow: (() => void) | undefined;
      return {
        start(onResult) {
          addresses ??= watchAddresses(opts);
          unfollow = addresses.follow(address, (present) =>
            onResult(present ? { ok: true } : { ok: false, reason: `address ${address} is not configured` }),
          );
        },
        close() {
          unfollow?.();
          unfollow = undefined;
        },
      };
    },
    forwarding: forwardingCheck,
    nftTable: () => tableCheck,
    close: () => {
      tables?.close();
      tables = undefined;
      addresses?.close();
      addresses = undefined;
    },
  };
}

/** The real kernel: rtnetlink, nftables, /proc. */
export function realKernel(): KernelActuator {
  const nft = new NftReconciler();
  const guard = new GuardReconciler();
  const checks = realChecks();
  return {
    apply: (desired, opts = {}) => reconcileKernel(desired, { nft, guard, ...opts }),
    teardown: () => teardownKernel({ nft, guard }),
    natCounters: (nat) => readNatCounters(nat),
    checks,
    close: () => {
      nft.close();
      checks.close();
    },
  };
}
