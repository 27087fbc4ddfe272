// BFD control packets for tests: a valid Up packet, with the fields a test cares about changed.
import { BfdDiag, BfdState, type ControlPacket } from "../../health/bfd/packet.js";

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
