// `egressd audit find EGRESS [DESTINATION] --at TIME`: the firewall team's
// question, "which pod was 192.0.2.11:40123 -> 198.51.100.7:5432 at 14:02?",
// answered from the JSON-lines trail (the file and its rotated copies).
// Exit 0: found; 1: no connection matches; 2: usage or unreadable trail.
import { Command } from "commander";
import { createReadStream, existsSync } from "node:fs";
import { createInterface } from "node:readline";
import { parseAddress, formatAddress } from "../../core/ip.js";
import {
  ConnectionFinder,
  parseRecord,
  parseWhen,
  type AuditRecord,
  type AuditedConnection,
} from "../../core/audit/record.js";
import { DEFAULTS } from "../../core/defaults.js";
import { EXIT, usageExit } from "./validate.js";

/** "192.0.2.11:40123", "192.0.2.11", "[2001:db8::1]:443" or "2001:db8::1". */
export function parseEndpoint(text: string): { address: string; port?: number } | undefined {
  const bracket = /^\[([^\]]+)\](?::(\d+))?$/.exec(text);
  const v4port = /^([\d.]+):(\d+)$/.exec(text);
  const [host, port] = bracket
    ? [bracket[1]!, bracket[2]]
    : v4port
      ? [v4port[1]!, v4port[2]]
      : [text, undefined];
  const a = parseAddress(host);
  if (!a) return undefined;
  const out: { address: string; port?: number } = { address: formatAddress(a.family, a.value) };
  if (port !== undefined) {
    const n = Number(port);
    if (!Number.isInteger(n) || n < 0 || n > 65535) return undefined;
    out.port = n;
  }
  return out;
}

/** The trail's files, oldest first: file.N ... file.1, file (rotated copies as the daemon names them). */
export function trailFiles(file: string, keep: number = 1000): string[] {
  const out: string[] = [];
  for (let i = keep; i >= 1; i--) if (existsSync(`${file}.${i}`)) out.push(`${file}.${i}`);
  if (existsSync(file)) out.push(file);
  return out;
}

async function* readRecords(files: string[]): AsyncGenerator<AuditRecord> {
  for (const f of files) {
    const lines = createInterface({ input: createReadStream(f, "utf8"), crlfDelay: Infinity });
    for await (const line of lines) {
      const r = parseRecord(line);
      if (r) yield r;
    }
  }
}

const endpoint = (address: string, port: number) =>
  address.includes(":") ? `[${address}]:${port}` : `${address}:${port}`;

/** A connection as the command prints it. */
export function describe(c: AuditedConnection): string[] {
  const r = (c.start ?? c.end)!;
  const lines = [`${endpoint(r.egressIP!, r.egressPort!)} -> ${endpoint(r.dst, r.dport)} ${r.proto}`];
  const pod = c.start?.pod ?? c.end?.pod;
  lines.push(
    `  pod       ${pod ? `${pod.namespace}/${pod.name} (uid ${pod.uid})` : "unknown (no Kubernetes input, or not a pod's address)"}`,
    `  source    ${endpoint(r.src, r.sport)}`,
    `  policy    ${r.policy!} on gateway ${r.gateway}`,
    `  started   ${c.start?.time ?? c.end?.started ?? "before the trail"}`,
    `  ended     ${c.end?.time ?? "not in the trail (still open, or its end was not recorded)"}`,
  );
  if (c.end)
    lines.push(
      `  traffic   out ${c.end.packetsOut} packets ${c.end.bytesOut} bytes, in ${c.end.packetsIn} packets ${c.end.bytesIn} bytes`,
    );
  return lines;
}

export function auditCommand(): Command {
  const find = usageExit(
    new Command("find")
      .description("which connection (and pod) used an egress IP and port at a time, from the audit trail")
      .argument("<egress>", "the translated source as the firewall logged it: ADDRESS[:PORT]")
      .argument("[destination]", "the destination: ADDRESS[:PORT]")
      .requiredOption("--at <time>", "when: ISO 8601 (2026-12-03T14:02:10Z) or a time of day in UTC (14:02)")
      .requiredOption("--file <path>", "the trail file (audit.file); its rotated copies are read too")
      .option("--slack <seconds>", "how far from --at a connection may lie (clocks and logs differ)", "60")
      .option("--json", "print the matching records as JSON")
      .action(async (egress: string, destination: string | undefined, o: Record<string, string>) => {
        const fail = (message: string): never => {
          process.stderr.write(`egressd audit find: ${message}\n`);
          process.exit(EXIT.usage);
        };
        const e = parseEndpoint(egress) ?? fail(`${JSON.stringify(egress)} is not ADDRESS[:PORT]`);
        const d =
          destination === undefined
            ? undefined
            : (parseEndpoint(destination) ?? fail(`${JSON.stringify(destination)} is not ADDRESS[:PORT]`));
        const now = Date.now();
        const at = parseWhen(o.at!, now) ?? fail(`--at ${JSON.stringify(o.at)} is not a time`);
        const slack = Number(o.slack);
        if (!Number.isFinite(slack) || slack < 0)
          fail(`--slack ${JSON.stringify(o.slack)} is not a number of seconds`);
        const files = trailFiles(o.file!, DEFAULTS.audit.rotateKeep * 100);
        if (files.length === 0) fail(`${o.file}: no such trail file`);
        const finder = new ConnectionFinder({
          egressIP: e.address,
          ...(e.port !== undefined ? { egressPort: e.port } : {}),
          ...(d ? { dst: d.address } : {}),
          ...(d?.port !== undefined ? { dport: d.port } : {}),
          at,
          slackMs: slack * 1000,
        });
        try {
          for await (const r of readRecords(files)) finder.add(r);
        } catch (err) {
          fail(`cannot read the trail: ${(err as Error).message}`);
        }
        const found = finder.result(now);
        if (o.json !== undefined) process.stdout.write(JSON.stringify(found, null, 2) + "\n");
        else if (found.length === 0)
          process.stdout.write(
            `no connection from ${egress}${destination ? ` to ${destination}` : ""} near ${new Date(at).toISOString()}\n`,
          );
        else process.stdout.write(found.map((c) => describe(c).join("\n")).join("\n\n") + "\n");
        process.exitCode = found.length > 0 ? EXIT.ok : EXIT.invalid;
      }),
  );
  return new Command("audit").description("read the audit trail").addCommand(find);
}
