// A two-node BGP lab in network namespaces, shared by the BGP integration
// test and the BGP and scale benchmarks:
//
//   [tor] FRR (AS 65000)  tor0 10.0.0.1/30 fd00::1/64
//            |  veth
//   [gw]  gobgpd (AS 65001, managed, driven by GobgpClient)  gw0 10.0.0.2/30 fd00::2/64
//
// gobgpd's API is a unix socket under a temporary directory, reachable from
// the root namespace (filesystem sockets ignore network namespaces).
import { chmodSync, chownSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { run } from "../../lib/exec.js";
import type { Sandbox } from "./netns.js";
import { GobgpClient } from "../../bgp/gobgp-client.js";
import { GobgpdProcess } from "../../bgp/gobgpd-process.js";
import type { BgpPeer } from "../../core/bgp.js";

export const TOR_ASN = 65000;
export const GW_ASN = 65001;
export const TOR_V4 = "10.0.0.1";
export const GW_V4 = "10.0.0.2";
export const TOR_V6 = "fd00::1";
export const GW_V6 = "fd00::2";

const FRR_RUN = "/var/run/frr";

export interface FrrOptions {
  /** TCP-MD5 password FRR uses for the gateway neighbor. */
  password?: string;
  /** Runs bfdd too, and BFD on the gateway neighbors with these timers. */
  bfd?: { intervalMs: number; multiplier: number };
  /** The gateway's session addresses, with the ToR's own address for each (default: GW_V4 from TOR_V4). */
  neighbors?: { address: string; updateSource?: string }[];
  /**
   * Runs FRR's daemons in the real-time class (SCHED_RR at this priority),
   * for a ToR that stands in for a router with CPUs of its own.
   */
  realtime?: number;
}

/** A path as FRR's `show bgp ... json` gives it (the fields the tests read). */
export interface FrrPath {
  aspath?: { string: string };
  metric?: number;
  community?: { list: string[] };
  nexthops?: { ip: string }[];
  valid?: boolean;
}

/** Runs zebra + bgpd of FRR inside namespace `ns` (pathspace = ns name). */
export class Frr {
  readonly runDir: string;
  constructor(
    readonly ns: string,
    readonly confDir: string,
  ) {
    this.runDir = join(FRR_RUN, ns);
  }

  static async start(ns: string, opts: FrrOptions = {}): Promise<Frr> {
    const confDir = mkdtempSync(join(tmpdir(), "egressd-frr-"));
    chmodSync(confDir, 0o755);
    const frr = new Frr(ns, confDir);
    mkdirSync(frr.runDir, { recursive: true });
    const { uid, gid } = await frrIds();
    chownSync(frr.runDir, uid, gid);
    chownSync(confDir, uid, gid);
    const zebraConf = join(confDir, "zebra.conf");
    const bgpdConf = join(confDir, "bgpd.conf");
    writeFileSync(zebraConf, `hostname ${ns}\nlog file ${join(confDir, "zebra.log")}\n`, { mode: 0o644 });
    writeFileSync(
      bgpdConf,
      [
        `hostname ${ns}`,
        `log file ${join(confDir, "bgpd.log")}`,
        `router bgp ${TOR_ASN}`,
        ` bgp router-id ${TOR_V4}`,
        " no bgp ebgp-requires-policy",
        " no bgp network import-check",
        " timers bgp 1 3",
        ...(opts.neighbors ?? [{ address: GW_V4 }]).flatMap(({ address, updateSource }) => [
          ` neighbor ${address} remote-as ${GW_ASN}`,
          ` neighbor ${address} timers connect 1`,
          ...(updateSource ? [` neighbor ${address} update-source ${updateSource}`] : []),
          ...(opts.password ? [` neighbor ${address} password ${opts.password}`] : []),
          ...(opts.bfd ? [` neighbor ${address} bfd profile gw`] : []),
        ]),
        " address-family ipv6 unicast",
        `  neighbor ${GW_V4} activate`,
        " exit-address-family",
        "",
      ].join("\n"),
      { mode: 0o644 },
    );
    const bfddConf = join(confDir, "bfdd.conf");
    const daemons: [string, string][] = [["zebra", zebraConf]];
    if (opts.bfd) {
      const { intervalMs, multiplier } = opts.bfd;
      writeFileSync(
        bfddConf,
        `hostname ${ns}\nlog file ${join(confDir, "bfdd.log")}\nbfd\n profile gw\n` +
          `  receive-interval ${intervalMs}\n  transmit-interval ${intervalMs}\n  detect-multiplier ${multiplier}\n` +
          ` !\n!\n`,
        { mode: 0o644 },
      );
      daemons.push(["bfdd", bfddConf]);
    }
    daemons.push(["bgpd", bgpdConf]);
    for (const [, f] of daemons) chownSync(f, uid, gid);
    // Each daemon in the namespace, daemonised, with its own pathspace (-N), vty off (-P 0).
    for (const [daemon, conf] of daemons) {
      const pid = join(frr.runDir, `${daemon}.pid`);
      await run([
        "ip",
        "netns",
        "exec",
        ns,
        ...(opts.realtime ? ["chrt", "--rr", String(opts.realtime)] : []),
        `/usr/lib/frr/${daemon}`,
        "-d",
        "-N",
        ns,
        "-P",
        "0",
        "-f",
        conf,
        "-i",
        pid,
      ]);
    }
    // vtysh answers once both daemons are up.
    const deadline = Date.now() + 10_000;
    for (;;) {
      try {
        await frr.vtysh("show bgp summary json");
        return frr;
      } catch (e) {
        if (Date.now() > deadline) throw new Error(`FRR in ${ns} did not come up: ${(e as Error).message}`);
        await new Promise((r) => setTimeout(r, 100));
      }
    }
  }

  /** Applies configuration lines (as typed after `configure terminal`) through vtysh. */
  async configure(...lines: string[]): Promise<void> {
    await run(["vtysh", "-N", this.ns, "-c", "configure terminal", ...lines.flatMap((l) => ["-c", l])], {
      timeoutMs: 10_000,
    });
  }

  async vtysh(command: string): Promise<string> {
    return (await run(["vtysh", "-N", this.ns, "-c", command], { timeoutMs: 10_000 })).stdout;
  }

  async json<T = unknown>(command: string): Promise<T> {
    return JSON.parse(await this.vtysh(command)) as T;
  }

  /** The prefixes in FRR's BGP table of one family, sorted. */
  async prefixes(family: 4 | 6 = 4): Promise<string[]> {
    const out = await this.json<{ routes?: Record<string, unknown> }>(`show bgp ipv${family} unicast json`);
    return Object.keys(out.routes ?? {}).sort();
  }

  /** FRR's best path for `prefix`, if it has one. */
  async path(prefix: string): Promise<FrrPath | undefined> {
    const out = await this.json<{ paths?: FrrPath[] }>(
      `show bgp ipv${prefix.includes(":") ? 6 : 4} unicast ${prefix} json`,
    );
    return out.paths?.[0];
  }

  /** The process id of one of FRR's daemons ("bfdd", "bgpd", "zebra"). */
  pid(daemon: string): number {
    return Number(readFileSync(join(this.runDir, `${daemon}.pid`), "utf8").trim());
  }

  /** Removes FRR's run and config directories (the processes die with the namespace). */
  cleanup(): void {
    rmSync(this.runDir, { recursive: true, force: true });
    rmSync(this.confDir, { recursive: true, force: true });
  }
}

async function frrIds(): Promise<{ uid: number; gid: number }> {
  const uid = Number((await run(["id", "-u", "frr"])).stdout.trim());
  const gid = Number((await run(["id", "-g", "frr"])).stdout.trim());
  return { uid, gid };
}

/** Creates the tor and gw namespaces and the veth between them. */
export async function buildTopology(sb: Sandbox): Promise<{ tor: string; gw: string }> {
  const tor = await sb.addNode("tor");
  const gw = await sb.addNode("gw");
  await sb.link("tor", "tor0", "gw", "gw0");
  await sb.exec("tor", ["ip", "addr", "add", `${TOR_V4}/30`, "dev", "tor0"]);
  await sb.exec("tor", ["ip", "-6", "addr", "add", `${TOR_V6}/64`, "dev", "tor0", "nodad"]);
  await sb.exec("gw", ["ip", "addr", "add", `${GW_V4}/30`, "dev", "gw0"]);
  await sb.exec("gw", ["ip", "-6", "addr", "add", `${GW_V6}/64`, "dev", "gw0", "nodad"]);
  return { tor, gw };
}

/** The gateway's neighbor config for the ToR, with fast timers. */
export function torPeer(extra: Partial<BgpPeer> = {}): BgpPeer {
  return {
    address: TOR_V4,
    peerAsn: TOR_ASN,
    holdTime: 3,
    keepaliveInterval: 1,
    connectRetry: 1,
    families: ["ipv4-unicast", "ipv6-unicast"],
    ...extra,
  };
}

/** A scratch directory for gobgpd's socket (short path: unix sockets have a ~107 byte limit). */
export function socketDir(): string {
  return mkdtempSync(join(tmpdir(), "egbgp-"));
}

/** Starts managed gobgpd in the gw namespace and a client for it. */
export async function startGateway(
  gwNs: string,
  dir: string,
): Promise<{ gobgpd: GobgpdProcess; client: GobgpClient }> {
  const gobgpd = new GobgpdProcess({ socketPath: join(dir, "gobgpd.sock"), netns: gwNs });
  await gobgpd.start();
  const client = new GobgpClient({ target: gobgpd.target });
  await client.waitReady(10_000);
  return { gobgpd, client };
}

export { waitFor } from "../../lib/wait.js";
