// `egressd status`: the running daemon's /status as a readable table (or the
// JSON itself with --json). Exit 0: ready; 1: reachable but not ready;
// 2: unreachable, a bad answer, or bad usage.
import { Command } from "commander";
import { parseListen } from "../http.js";
import type { StatusSnapshot } from "../status.js";
import { EXIT, usageExit } from "./validate.js";
import { DEFAULTS } from "../../core/defaults.js";

export const STATUS_EXIT = { ready: 0, notReady: 1, unreachable: 2 } as const;

/** Lays rows out in columns: two spaces apart, the last column unpadded. */
export function table(header: string[], rows: string[][], indent = "  "): string[] {
  const all = [header, ...rows];
  const widths = header.map((_, i) => Math.max(...all.map((r) => (r[i] ?? "").length)));
  return all.map(
    (r) =>
      indent +
      r
        .map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i] ?? 0)))
        .join("  ")
        .trimEnd(),
  );
}

/** "3s", "4m12s", "2h05m", "3d04h" */
export function formatAge(ms: number): string {
  if (!Number.isFinite(ms) || ms < 0) return "-";
  const s = Math.floor(ms / 1000);
  if (s < 60) return `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m${String(s % 60).padStart(2, "0")}s`;
  const h = Math.floor(m / 60);
  if (h < 24) return `${h}h${String(m % 60).padStart(2, "0")}m`;
  return `${Math.floor(h / 24)}d${String(h % 24).padStart(2, "0")}h`;
}

function ago(wallMs: number | undefined | null, now: number): string {
  return wallMs ? `${formatAge(now - wallMs)} ago` : "-";
}

/**
 * The readable form of a status snapshot, as lines. Ages ("1m05s ago") are read against the
 * time the daemon took the snapshot, so they do not depend on this host's clock or on how long
 * the answer took to arrive.
 */
export function renderStatus(s: StatusSnapshot, now = Date.parse(s.at)): string[] {
  const out: string[] = [];
  const g = s.gateway;
  const started = Date.parse(g.startedAt);
  out.push(
    `gateway   ${g.name} (site ${g.site}), egressd ${g.version}, pid ${g.pid}, up ${formatAge(now - started)}`,
  );
  out.push(`ready     ${s.ready ? "yes" : `NO: ${s.notReadyReasons.join("; ") || "not ready"}`}`);
  if (s.draining) out.push("draining  yes: routes withdrawn, still forwarding until the drain period ends");
  if (s.kubernetes) {
    const k = s.kubernetes;
    const c = k.counts;
    const state = !k.synced
      ? "NOT SYNCED yet: the cluster's policies are not planned until every kind is listed"
      : k.connected
        ? "synced, connected"
        : `API UNREACHABLE${k.outageSince !== undefined ? ` for ${formatAge(now - k.outageSince)}` : ""}: keeping what is known`;
    out.push(
      `cluster   ${state}; ${c.pods} pods, ${c.namespaces} namespaces, ${c.policies} policies` +
        `${c.refused ? `, ${c.refused} REFUSED (see their status)` : ""}${c.contested ? `, ${c.contested} contested addresses` : ""}` +
        `; status writes ${k.statusWrites.writes}${k.statusWrites.errors ? ` (${k.statusWrites.errors} failed)` : ""}`,
    );
  }

  out.push("", `egress IPs (${s.egressIPs.length})`);
  out.push(
    ...table(
      ["ADDRESS", "INTERFACE"],
      s.egressIPs.map((e) => [e.address, e.interface]),
    ),
  );

  out.push("", `policies (${s.policies.length})`);
  out.push(
    ...table(
      ["POLICY", "FAMILY", "EGRESS IP", "UPLINK", "ADVERTISED"],
      s.policies.map((p) => [
        p.name,
        `ipv${p.family}`,
        p.egressIP ?? "-",
        p.uplink ?? "-",
        !p.gateway
          ? "no gateway (not served)"
          : p.deny
            ? p.advertised
              ? "yes (deny: dropped here)"
              : `WITHDRAWN (deny)${p.withdrawnBecause ? `: ${p.withdrawnBecause}` : ""}`
            : p.advertised
              ? "yes"
              : `WITHDRAWN${p.withdrawnBecause ? `: ${p.withdrawnBecause}` : ""}`,
      ]),
    ),
  );

  out.push("", `probes (${s.probes.length})`);
  if (s.probes.length)
    out.push(
      ...table(
        ["PROBE", "KIND", "TARGET", "STATE", "SINCE", "LAST RTT", "OK/FAILED", "AFFECTS"],
        s.probes.map((p) => [
          p.name,
          p.kind,
          p.target,
          p.state + (p.suppressed ? " (damped)" : ""),
          ago(p.sinceWall, now),
          p.lastRttMs === null || p.lastRttMs === undefined ? "-" : `${p.lastRttMs.toFixed(2)} ms`,
          `${p.results.ok}/${p.results.failed}`,
          p.affects,
        ]),
      ),
    );

  out.push("", `BGP peers (${s.peers.length})`);
  if (s.peers.length)
    out.push(
      ...table(
        ["PEER", "ADDRESS", "ASN", "STATE", "BFD"],
        s.peers.map((p) => [
          p.name,
          p.address,
          String(p.asn),
          p.state,
          p.bfd ? p.bfd.state + (p.bfd.diagnostic ? ` (${p.bfd.diagnostic})` : "") : "-",
        ]),
      ),
    );

  out.push("", `advertised routes (${s.advertised.length})`);
  if (s.advertised.length)
    out.push(
      ...table(
        ["PREFIX", "NEXT HOP", "MED", "PREPEND", "COMMUNITIES"],
        s.advertised.map((r) => [
          r.prefix,
          r.nextHop ?? "-",
          r.med === undefined ? "-" : String(r.med),
          r.asPathPrepend ? String(r.asPathPrepend) : "-",
          r.communities?.length ? r.communities.join(" ") : "-",
        ]),
      ),
    );

  const r = s.lastReconcile;
  out.push("");
  if (!r) out.push("last reconcile  none yet");
  else {
    const errors = Object.entries(r.errors);
    out.push(
      `last reconcile  ${ago(Date.parse(r.at), now)} (${r.at}), ${r.durationMs.toFixed(1)} ms, ` +
        `${errors.length ? "FAILED" : "ok"}, because: ${r.reasons.join(", ") || "-"}`,
    );
    for (const [target, changes] of Object.entries(r.changes))
      out.push(
        `  ${target}: ${changes.length} change${changes.length === 1 ? "" : "s"}: ${changes.join(", ")}`,
      );
    for (const [target, msg] of errors) out.push(`  ${target} error: ${msg}`);
  }
  return out;
}

/** Fetches /status; throws with a readable message when unreachable or the answer is not a status. */
export async function fetchStatus(address: string, timeoutMs = 5000): Promise<StatusSnapshot> {
  const url = `http://${address}/status`;
  let res: Response;
  try {
    res = await fetch(url, { signal: AbortSignal.timeout(timeoutMs) });
  } catch (e) {
    const cause = (e as { cause?: { code?: string; message?: string } }).cause;
    throw new Error(
      `cannot reach egressd at ${url}: ${cause?.code ?? cause?.message ?? (e as Error).message}`,
    );
  }
  if (res.status !== 200) throw new Error(`${url} answered HTTP ${res.status}`);
  const body = (await res.json().catch(() => undefined)) as StatusSnapshot | undefined;
  if (!body || typeof body !== "object" || !body.gateway || !Array.isArray(body.policies))
    throw new Error(`${url} did not answer an egressd status`);
  return body;
}

export function statusCommand(): Command {
  return usageExit(
    new Command("status")
      .description("show the running daemon's state: readiness, egress IPs, policies, probes, peers, routes")
      .option(
        "-a, --address <host:port>",
        "the daemon's HTTP listener (http.listen in its config)",
        DEFAULTS.http.listen,
      )
      .option("--json", "print the /status JSON as is")
      .option("--timeout <ms>", "give up after this long", "5000")
      .addHelpText(
        "after",
        "\nRun it where the daemon's listener is reachable (inside the gateway's network namespace for a loopback listener).\n" +
          "Exit status: 0 ready, 1 running but not ready (reasons printed), 2 unreachable, bad answer or bad usage.",
      )
      .action(async (opts: { address: string; json?: boolean; timeout: string }) => {
        const timeoutMs = Number(opts.timeout);
        try {
          parseListen(opts.address);
          if (!Number.isFinite(timeoutMs) || timeoutMs <= 0)
            throw new Error(`--timeout ${opts.timeout}: not a number of ms`);
        } catch (e) {
          console.error(`egressd status: ${(e as Error).message}`);
          return void (process.exitCode = EXIT.usage);
        }
        let s: StatusSnapshot;
        try {
          s = await fetchStatus(opts.address, timeoutMs);
        } catch (e) {
          console.error(`egressd status: ${(e as Error).message}`);
          return void (process.exitCode = STATUS_EXIT.unreachable);
        }
        console.log(opts.json ? JSON.stringify(s, null, 2) : renderStatus(s).join("\n"));
        process.exitCode = s.ready ? STATUS_EXIT.ready : STATUS_EXIT.notReady;
      }),
  );
}
