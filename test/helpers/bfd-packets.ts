// BFD control packets for tests: a valid Up packet, with the fields a test cares about changed.
import { join } from "node:path";
import type { BfdAuthConfig } from "../../health/bfd/auth.js";
import { BfdDiag, BfdState, type ControlPacket } from "../../health/bfd/packet.js";
import { run } from "../../lib/exec.js";
import { REPO } from "./paths.js";

export function controlPacket(over: Partial<ControlPacket> = {}): ControlPacket {
  return {
    version: 1,
    diag: BfdDiag.None,
    state: BfdState.Up,
    poll: false,
    final: false,
    cpi: false,
    authPresent: false,
    demand: false,
    multipoint: false,
    detectMult: 3,
    myDiscriminator: 0x01020304,
    yourDiscriminator: 0xa0b0c0d0,
    desiredMinTxUs: 100_000,
    requiredMinRxUs: 300_000,
    requiredMinEchoRxUs: 0,
    ...over,
  };
}

/** A forged BFD Down: from an address of the sender's namespace, to the victim, with this TTL. */
export interface ForgedDown {
  from: string;
  to: string;
  ttl: number;
  myDiscriminator: number;
  yourDiscriminator: number;
  /** Sign the packet with this (wrong) key. */
  auth?: BfdAuthConfig;
}

/** Sends one forged BFD Down from inside network namespace `ns` (test/fixtures/bfd-forge.ts). */
export async function forgeBfdDown(ns: string, args: ForgedDown): Promise<void> {
  const fixture = join(REPO, "dist", "test", "fixtures", "bfd-forge.js");
  await run(["ip", "netns", "exec", ns, process.execPath, fixture, JSON.stringify(args)]);
}
