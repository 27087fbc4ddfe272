// Long-lived connections through DC A's gateways while one of them fails:
// the triggers of docs/connection-sync.md, each measured on the connections
// themselves (containerlab/conn-streams.ts). Shared by the integration test,
// bench/connections.ts and the demo.
import { fileURLToPath } from "node:url";
import { tryRun } from "../lib/exec.js";
import { startConnections, startStreamServer, type Connections, type StreamServer } from "./conn-streams.js";
import { freezeNode, TWO_DC_GATEWAYS as GW } from "./failover.js";
import { bgpTable, kernelNextHops } from "./observe.js";
import { sleep, waitFor, type Lab } from "./runner.js";
import { GW_A3 } from "./three-gateways.js";

const REPO_BIN = fileURLToPath(new URL("../../bin", import.meta.url));
export const SERVER = "203.0.113.10";
export const PORT = 9000;
/** pod-a's addresses for the streams: the ToR hashes on addresses, so eight of them spread the connections. */
export const POD_SOURCES = [20, 21, 22, 23, 24, 25, 26, 27].map((i) => `10.244.1.${i}`);
export const DC_A = ["gw-a1", "gw-a2"] as const;
export type DcAGateway = (typeof DC_A)[number];

/**
 * "ecmp": a third gateway (gw-a3, containerlab/three-gateways.ts) leaves the
 * ECMP group (drained) and joins it again: flows move between live gateways.
 */
export type Trigger = "freeze" | "kill" | "drain" | "dc-a" | "ecmp";
export type Gateway = DcAGateway | "gw-a3";

/** Each gateway's link address (its next hop at tor-a) and web egress IP. */
const ADDRESSES: Record<Gateway, { link: string; web: string }> = {
  "gw-a1": GW["gw-a1"],
  "gw-a2": GW["gw-a2"],
  "gw-a3": GW_A3,
};
/** What undoes a trigger: the gateway (or site) comes back and attracts its traffic again. */
export type Restore = () => Promise<void>;

export interface TrialResult {
  trigger: string;
  gateway: string;
  /** Connections alive before the trigger, and of those, alive after it. */
  before: number;
  survived: number;
  /** The longest stall of any connection during the trial (ms). */
  maxStallMs: number;
  /** The median over the connections of each one's longest stall (ms). */
  medianStallMs: number;
  /** Of those alive before, each that broke: its id and why ("reset", "gap", ...). */
  lost: string[];
}

/** Waits until `gateway` serves again: in the ToR's ECMP group, its egress IP's best path its own. */
export async function serving(lab: Lab, gateway: Gateway, timeoutMs = 30_000): Promise<void> {
  const g = ADDRESSES[gateway];
  await waitFor(
    `${gateway} serving`,
    async () => {
      if (!(await kernelNextHops(lab, "tor-a", "203.0.113.0/24")).includes(g.link)) return false;
      const best = (await bgpTable(lab, "tor-a")).get(`${g.web}/32`)?.find((p) => p.best);
      return best?.nextHop === g.link && best.asPath.split(" ").filter(Boolean).length <= 1;
    },
    timeoutMs,
  );
}

/** gw-b1's link address at tor-b: the next hop of DC B's paths. */
const GW_B1_LINK = "10.2.1.1";

/**
 * Waits until DC B's gateway stands by for DC A: it has resynced the state
 * DC A's gateways send it and advertises their egress IPs as last-resort
 * paths (tor-b has a path for each through gw-b1). Resolves at once in a lab
 * whose gw-b1 holds nothing for DC A only after `timeoutMs` (it throws then).
 */
export async function standingBy(lab: Lab, timeoutMs = 30_000): Promise<void> {
  await waitFor(
    "gw-b1 standing by for DC A",
    async () => {
      const table = await bgpTable(lab, "tor-b");
      return DC_A.every((g) => table.get(`${GW[g].web}/32`)?.some((p) => p.nextHop === GW_B1_LINK));
    },
    timeoutMs,
  );
}

export class ConnectionTrials {
  private server: StreamServer | undefined;
  private conns: Connections | undefined;

  constructor(private readonly lab: Lab) {}

  private count = 64;

  async start(count = 64): Promise<void> {
    this.count = count;
    this.server = await startStreamServer(this.lab, "server", `${SERVER}:${PORT}`);
    await this.connect();
  }

  /** A new set of connections (after a trial broke some: each trial starts with all alive). */
  async reconnect(): Promise<void> {
    await this.conns?.stop().catch(() => undefined);
    await this.connect();
  }

  /**
   * A new set; tried three times. After a failure, a new connection can meet
   * what the old ones left: a source port used again whose old entry is still
   * in a gateway's table, and a server socket that never heard the old one
   * end. TCP sorts that out (a challenge ACK, a reset, the SYN again), slowly.
   */
  private async connect(): Promise<void> {
    for (let attempt = 1; ; attempt++) {
      try {
        return await this.connectOnce();
      } catch (e) {
        if (attempt >= 3) throw e;
      }
    }
  }

  private async connectOnce(): Promise<void> {
    const count = this.count;
    this.conns = await startConnections(this.lab, "pod-a", {
      target: `${SERVER}:${PORT}`,
      sources: POD_SOURCES,
      count,
      intervalMs: 10,
    });
  }

  async stop(): Promise<void> {
    await this.conns?.stop().catch(() => undefined);
    await this.server?.stop().catch(() => undefined);
  }

  /** Sequence errors the server saw (gaps, duplicates, bad records). */
  anomalies(): string[] {
    return this.server?.anomalies() ?? [];
  }

  /** How many live connections each DC A gateway carries (by the egress IP they are NATed to). */
  async carried(): Promise<Map<DcAGateway, number>> {
    const owners = new Map<string, DcAGateway>();
    for (const g of DC_A) {
      const { stdout } = await tryRun([
        "ip",
        "netns",
        "exec",
        this.lab.ns(g),
        "conntrack",
        "-L",
        "-p",
        "tcp",
        "--dport",
        String(PORT),
        "--state",
        "ESTABLISHED",
      ]);
      for (const line of stdout.split("\n")) {
        const m = /sport=(\d+) dport=\d+ .*src=\S+ dst=(\S+) sport=/.exec(line);
        if (!m) continue;
        const owner = DC_A.find((x) => GW[x].web === m[2]);
        if (owner) owners.set(m[1]!, owner);
      }
    }
    const out = new Map<DcAGateway, number>(DC_A.map((g) => [g, 0]));
    for (const g of owners.values()) out.set(g, out.get(g)! + 1);
    return out;
  }

  /** The DC A gateway that carries the most connections. */
  async busiest(): Promise<DcAGateway> {
    const c = await this.carried();
    return [...c.entries()].sort((a, b) => b[1] - a[1])[0]![0];
  }

  /**
   * Applies `act` and measures: stalls are counted from the moment before it,
   * and the report is taken once `settled` resolved and `afterMs` more passed.
   */
  async measure<T>(
    trigger: string,
    gateway: string,
    act: () => Promise<T>,
    settled: () => Promise<unknown>,
    afterMs = 1000,
  ): Promise<{ result: TrialResult; value: T }> {
    const conns = this.conns!;
    const before = (await conns.report()).connections.filter((c) => c.broken === null).map((c) => c.id);
    await conns.resetStalls();
    const value = await act();
    await settled();
    await sleep(afterMs);
    const r = await conns.report();
    const alive = new Set(r.connections.filter((c) => c.broken === null).map((c) => c.id));
    const stalls = r.connections
      .filter((c) => before.includes(c.id))
      .map((c) => c.maxStallMs)
      .sort((a, b) => a - b);
    return {
      value,
      result: {
        trigger,
        gateway,
        before: before.length,
        survived: before.filter((id) => alive.has(id)).length,
        maxStallMs: Math.round(stalls[stalls.length - 1] ?? 0),
        medianStallMs: Math.round(stalls[Math.floor(stalls.length / 2)] ?? 0),
        lost: r.connections
          .filter((c) => before.includes(c.id) && c.broken !== null)
          .map((c) => `${c.id}: ${c.broken}`),
      },
    };
  }

  /** One trigger on `gateway`; resolves with its result and what brings the gateway back. */
  async fail(trigger: Trigger, gateway: Gateway): Promise<{ result: TrialResult; restore: Restore }> {
    const lab = this.lab;
    const gone = () =>
      waitFor(
        `${gateway} out of the ECMP group`,
        async () => !(await kernelNextHops(lab, "tor-a", "203.0.113.0/24")).includes(ADDRESSES[gateway].link),
        15_000,
      );
    if (trigger === "freeze") {
      const { result, value: thaw } = await this.measure(
        "freeze",
        gateway,
        () => freezeNode(lab, gateway),
        gone,
      );
      return { result, restore: thaw };
    }
    if (trigger === "kill") {
      const pid = lab.cmdPid(gateway);
      if (pid === undefined) throw new Error(`${gateway}: egressd is not running`);
      const { result } = await this.measure(
        "kill -9",
        gateway,
        () => tryRun(["kill", "-KILL", String(pid)]),
        gone,
      );
      return { result, restore: () => lab.startCmd(gateway).then(() => undefined) };
    }
    if (trigger === "drain" || trigger === "ecmp") {
      const { result } = await this.measure(
        trigger === "ecmp" ? `${gateway} leaves the ECMP group (drained)` : "drain",
        gateway,
        async () => undefined,
        async () => {
          const r = await tryRun([`${REPO_BIN}/egressd`, "drain"], { netns: lab.ns(gateway) });
          if (r.code !== 0) throw new Error(`egressd drain on ${gateway}: ${r.stderr.trim()}`);
        },
      );
      return { result, restore: () => lab.startCmd(gateway).then(() => undefined) };
    }
    // All of DC A: both gateways frozen; DC B's gateway is the backup site.
    const { result, value: thaws } = await this.measure(
      "DC A lost",
      "gw-a1+gw-a2",
      () => Promise.all(DC_A.map((g) => freezeNode(lab, g))),
      () =>
        waitFor(
          "DC B serving DC A's pods",
          async () =>
            (await kernelNextHops(lab, "tor-a", "203.0.113.0/24")).every((h) => !h.startsWith("10.1.")),
          15_000,
        ),
      2000,
    );
    return { result, restore: async () => void (await Promise.all(thaws.map((t) => t()))) };
  }

  /** Brings a failed gateway back and measures the move of its traffic back to it. */
  async failback(trigger: Trigger, gateway: Gateway, restore: Restore): Promise<TrialResult> {
    const lab = this.lab;
    const back =
      trigger === "dc-a"
        ? () => Promise.all(DC_A.map((g) => serving(lab, g, 60_000))).then(() => undefined)
        : () => serving(lab, gateway, 60_000);
    const label = trigger === "ecmp" ? `${gateway} joins the ECMP group` : `back after ${trigger}`;
    const { result } = await this.measure(label, gateway, restore, back);
    return result;
  }
}
