// Failover measurement on the traffic itself, and the failures we inject.
// Shared by the end-to-end tests, bench/failover.ts and the demo.
//
// A stream is `ping -D -i 0.01` from a pod to the server: one echo every
// 10 ms. The gap is the longest time between two consecutive replies, less
// the interval; lost counts the echoes that never came back.
import { spawn } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { run, tryRun } from "../lib/exec.js";
import { statFields } from "../lib/proc-file.js";
import type { Lab } from "./runner.js";

export interface StreamResult {
  sent: number;
  received: number;
  lost: number;
  /** Longest stretch without replies, in ms, beyond the sending interval. */
  gapMs: number;
}

export interface Stream {
  /** Resolves once the first reply came back. */
  flowing: Promise<void>;
  stop(): Promise<StreamResult>;
}

/** Starts a probe stream from `node` (source `source`) to `target`. */
export function startStream(
  lab: Lab,
  node: string,
  target: string,
  source?: string,
  intervalMs = 10,
): Stream {
  const argv = [
    "ip",
    "netns",
    "exec",
    lab.ns(node),
    "ping",
    "-n",
    "-D",
    "-W",
    "1",
    "-i",
    String(intervalMs / 1000),
  ];
  if (source) argv.push("-I", source);
  argv.push(target);
  const child = spawn(argv[0] as string, argv.slice(1), { stdio: ["ignore", "pipe", "ignore"] });
  const replies: { seq: number; at: number }[] = [];
  let maxSeq = 0;
  let onFirst: () => void = () => undefined;
  const flowing = new Promise<void>((r) => (onFirst = r));
  const rl = createInterface({ input: child.stdout });
  rl.on("line", (line) => {
    const m = /^\[(\d+\.\d+)\] \d+ bytes from .* icmp_seq=(\d+)/.exec(line);
    if (!m) return;
    const seq = Number(m[2]);
    replies.push({ seq, at: Number(m[1]) * 1000 });
    maxSeq = Math.max(maxSeq, seq);
    if (replies.length === 1) onFirst();
  });
  const done = new Promise<void>((r) => child.on("close", () => r()));
  return {
    flowing,
    async stop() {
      // Let echoes in flight come back, then stop; count what was sent up to the last reply.
      await new Promise((r) => setTimeout(r, 100));
      child.kill("SIGINT");
      await done;
      let gap = 0;
      for (let i = 1; i < replies.length; i++) {
        gap = Math.max(gap, replies[i]!.at - replies[i - 1]!.at - intervalMs);
      }
      const seen = new Set(replies.map((r) => r.seq));
      const sent = maxSeq;
      return {
        sent,
        received: seen.size,
        lost: Math.max(0, sent - seen.size),
        gapMs: Math.max(0, Math.round(gap)),
      };
    },
  };
}

/**
 * Drops, on `node`, every forwarded packet from `sources` (to `destinations`
 * only, when given): a firewall that stops admitting a gateway, or a path
 * that breaks for it. Returns the undo.
 */
export async function blockSources(
  lab: Lab,
  node: string,
  sources: string[],
  opts: { destinations?: string[]; table?: string } = {},
): Promise<() => Promise<void>> {
  const table = opts.table ?? "failover";
  const rules: string[] = [];
  for (const [fam, match] of [
    [4, "ip"],
    [6, "ip6"],
  ] as const) {
    const src = sources.filter((s) => s.includes(":") === (fam === 6));
    const dst = (opts.destinations ?? []).filter((s) => s.includes(":") === (fam === 6));
    if (!src.length || (opts.destinations && !dst.length)) continue;
    rules.push(
      `${match} saddr { ${src.join(", ")} }${dst.length ? ` ${match} daddr { ${dst.join(", ")} }` : ""} drop`,
    );
  }
  const chain = ["type filter hook forward priority -10;", ...rules].join("\n    ");
  await nft(lab, node, `table inet ${table} {\n  chain forward {\n    ${chain}\n  }\n}`);
  return () => nft(lab, node, `delete table inet ${table}`);
}

/**
 * Freezes a node as a power loss or kernel hang would look from outside:
 * every process stopped (SIGSTOP) and nothing forwarded or answered, while
 * its links stay up (so only BFD or the BGP hold timer can notice).
 */
export async function freezeNode(lab: Lab, node: string): Promise<() => Promise<void>> {
  await nft(
    lab,
    node,
    [
      "table inet frozen {",
      "  chain pre {\n    type filter hook prerouting priority -400; policy drop;\n  }",
      "  chain out {\n    type filter hook output priority -400; policy drop;\n  }",
      "}",
    ].join("\n"),
  );
  const pids = await nodePids(lab, node);
  if (pids.length) await tryRun(["kill", "-STOP", ...pids]);
  return async () => {
    if (pids.length) await tryRun(["kill", "-CONT", ...pids]);
    await nft(lab, node, "delete table inet frozen");
  };
}

export async function nodePids(lab: Lab, node: string): Promise<string[]> {
  const { stdout } = await tryRun(["ip", "netns", "pids", lab.ns(node)]);
  return stdout.split(/\s+/).filter(Boolean);
}

/** The processes named `comm` in a node, each with its /proc stat fields (statFields: [0] is the state). */
export async function nodeProcesses(
  lab: Lab,
  node: string,
  comm: string,
): Promise<{ pid: number; stat: string[] }[]> {
  const out: { pid: number; stat: string[] }[] = [];
  for (const pid of await nodePids(lab, node)) {
    try {
      const text = readFileSync(`/proc/${pid}/stat`, "utf8");
      if (text.includes(`(${comm})`)) out.push({ pid: Number(pid), stat: statFields(text) });
    } catch {
      // ended meanwhile
    }
  }
  return out;
}

/** Runs an nft script (file syntax) in a node, through a private temporary file. */
async function nft(lab: Lab, node: string, script: string): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), "egressd-lab-nft-"));
  try {
    const file = join(dir, "rules.nft");
    writeFileSync(file, `${script}\n`, { mode: 0o600 });
    await run(["/usr/sbin/nft", "-f", file], { netns: lab.ns(node) });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

export { median } from "../lib/stats.js";

/** The two-dc lab's gateways: link address, egress IPs, ToR. */
export const TWO_DC_GATEWAYS = {
  "gw-a1": {
    link: "10.1.1.1",
    web: "192.0.2.11",
    partner: "192.0.2.131",
    web6: "2001:db8:e::11",
    tor: "tor-a",
  },
  "gw-a2": {
    link: "10.1.2.1",
    web: "192.0.2.12",
    partner: "192.0.2.132",
    web6: "2001:db8:e::12",
    tor: "tor-a",
  },
  "gw-b1": {
    link: "10.2.1.1",
    web: "192.0.2.21",
    partner: "192.0.2.141",
    web6: "2001:db8:e::21",
    tor: "tor-b",
  },
} as const;
export type TwoDcGateway = keyof typeof TWO_DC_GATEWAYS;

/** The gateway whose web egress IP is `seen`. */
export function gatewayByEgress(seen: string | undefined): TwoDcGateway | undefined {
  return (Object.keys(TWO_DC_GATEWAYS) as TwoDcGateway[]).find((g) => TWO_DC_GATEWAYS[g].web === seen);
}
