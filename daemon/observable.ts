// What a gateway offers to observers (daemon/gateway.ts implements it): the
// one type that metrics, the HTTP endpoints and their wiring share, in a file
// of its own so that they import it in one direction only.
import type { EventEmitter } from "node:events";
import type { NatCounter } from "../routing/nft.js";
import type { ConntrackdChannelStats } from "../core/plan/sync.js";
import type { GatewayEvents } from "./events.js";
import type { StatusSnapshot } from "./status.js";

export interface ObservableGateway {
  readonly events: EventEmitter<GatewayEvents>;
  /** Cheap and synchronous. */
  status(): StatusSnapshot;
  /** Per-policy nftables counters (one `nft` call). */
  natCounters(): Promise<NatCounter[]>;
  /** The counters of each conntrackd of connection sync (one `conntrackd -s` each); none without sync. */
  syncStats(): Promise<ConntrackdChannelStats[]>;
  /** The event loop and the controller are not stuck. */
  loopAlive(): boolean;
}
