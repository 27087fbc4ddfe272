// BgpPeer <-> GoBGP API Peer, and peer state decoding.
import {
  Peer,
  PeerState_AdminState,
  PeerState_SessionState,
  type Peer as ApiPeer,
} from "./generated/gobgp.js";
import { apiFamily, familyFromApi } from "./path-codec.js";
import {
  canonicalPeer,
  type AddressFamily,
  type BgpPeer,
  type PeerStatus,
  type SessionState,
} from "../core/bgp.js";

/** Encodes a neighbor for AddPeer / UpdatePeer. Every field is explicit, so what ListPeer returns compares equal. */
export function encodePeer(p: BgpPeer): ApiPeer {
  const c = canonicalPeer(p);
  return Peer.fromPartial({
    conf: {
      neighborAddress: c.address,
      peerAsn: c.peerAsn,
      authPassword: c.password,
      description: c.description,
    },
    ebgpMultihop: { enabled: c.ebgpMultihopTtl > 0, multihopTtl: c.ebgpMultihopTtl },
    ttlSecurity: { enabled: c.ttlSecurity, ttlMin: c.ttlSecurity ? 255 : 0 },
    timers: {
      config: {
        holdTime: BigInt(c.holdTime),
        keepaliveInterval: BigInt(c.keepaliveInterval),
        connectRetry: BigInt(c.connectRetry),
      },
    },
    transport: { localAddress: c.localAddress, passiveMode: c.passive },
    gracefulRestart: { enabled: c.gracefulRestart, restartTime: c.restartTime },
    afiSafis: c.families.map((f) => ({
      config: { family: apiFamily(f), enabled: true },
      // Per-family GR state must be on for the family to be listed in the GR capability.
      mpGracefulRestart: { config: { enabled: c.gracefulRestart } },
    })),
  });
}

const SESSION_STATES: Record<number, SessionState> = {
  [PeerState_SessionState.UNKNOWN]: "unknown",
  [PeerState_SessionState.IDLE]: "idle",
  [PeerState_SessionState.CONNECT]: "connect",
  [PeerState_SessionState.ACTIVE]: "active",
  [PeerState_SessionState.OPENSENT]: "opensent",
  [PeerState_SessionState.OPENCONFIRM]: "openconfirm",
  [PeerState_SessionState.ESTABLISHED]: "established",
};

/** An unspecified local address means "not configured". */
function configuredLocalAddress(a: string | undefined): string | undefined {
  return a && a !== "0.0.0.0" && a !== "::" ? a : undefined;
}

/** Decodes what ListPeer / a peer event reports. */
export function decodePeer(p: ApiPeer): PeerStatus {
  const address = p.conf?.neighborAddress || p.state?.neighborAddress || "";
  const families: PeerStatus["families"] = [];
  const configFamilies: AddressFamily[] = [];
  for (const a of p.afiSafis) {
    const f = familyFromApi(a.config?.family ?? a.state?.family);
    if (!f) continue;
    if (a.config?.enabled ?? true) configFamilies.push(f);
    families.push({
      family: f,
      received: Number(a.state?.received ?? 0n),
      accepted: Number(a.state?.accepted ?? 0n),
      advertised: Number(a.state?.advertised ?? 0n),
    });
  }
  const timers = p.timers?.config;
  const config: BgpPeer = {
    address,
    peerAsn: p.conf?.peerAsn ?? 0,
    password: p.conf?.authPassword ?? "",
    ebgpMultihopTtl: p.ebgpMultihop?.enabled ? p.ebgpMultihop.multihopTtl : 0,
    holdTime: Number(timers?.holdTime ?? 0n),
    keepaliveInterval: Number(timers?.keepaliveInterval ?? 0n),
    connectRetry: Number(timers?.connectRetry ?? 0n),
    ttlSecurity: p.ttlSecurity?.enabled ?? false,
    gracefulRestart: p.gracefulRestart?.enabled ?? false,
    restartTime: p.gracefulRestart?.enabled ? p.gracefulRestart.restartTime : 0,
    families: configFamilies,
    passive: p.transport?.passiveMode ?? false,
    description: p.conf?.description ?? "",
  };
  // When a session is up gobgpd reports the address in use here, configured or not.
  const local = configuredLocalAddress(p.transport?.localAddress);
  if (local) config.localAddress = local;
  const status: PeerStatus = {
    address,
    peerAsn: p.conf?.peerAsn || p.state?.peerAsn || 0,
    state: SESSION_STATES[p.state?.sessionState ?? 0] ?? "unknown",
    adminDown: p.state?.adminState === PeerState_AdminState.DOWN || (p.conf?.adminDown ?? false),
    flops: p.state?.flops ?? 0,
    negotiatedHoldTime: Number(p.timers?.state?.negotiatedHoldTime ?? 0n),
    families,
    config,
  };
  if (p.state?.routerId) status.remoteRouterId = p.state.routerId;
  return status;
}
