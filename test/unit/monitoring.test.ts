// The shipped monitoring assets: promtool accepts the alerting rules and their
// unit tests pass; the Grafana dashboard is valid JSON whose queries parse and
// refer only to metrics egressd (or prom-client's process metrics) exports.
import test from "ava";
import { spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Metrics } from "../../daemon/metrics.js";
import { parseExposition } from "../helpers/exposition.js";
import { FakeGateway } from "../helpers/fake-gateway.js";
import { REPO } from "../helpers/paths.js";

const PROMTOOL = "/usr/bin/promtool";
const DIR = join(REPO, "monitoring");

function promtool(args: string[], cwd = DIR) {
  const r = spawnSync(PROMTOOL, args, { cwd, encoding: "utf8" });
  return { code: r.status, out: `${r.stdout}${r.stderr}` };
}

interface Panel {
  type: string;
  title: string;
  id: number;
  gridPos: { x: number; y: number; w: number; h: number };
  targets?: { expr: string; refId: string }[];
}

const dashboard = JSON.parse(readFileSync(join(DIR, "grafana-dashboard.json"), "utf8")) as {
  title: string;
  uid: string;
  schemaVersion: number;
  panels: Panel[];
  templating: { list: { name: string }[] };
};
const queries = dashboard.panels.flatMap((p) =>
  (p.targets ?? []).map((t) => ({ panel: p.title, expr: t.expr })),
);

/** Metric names a query uses: what is left after strings, matchers, grouping clauses, functions and numbers go. */
function metricNames(expr: string): string[] {
  const bare = expr
    .replace(/"[^"]*"/g, '""')
    .replace(/\{[^}]*\}/g, "{}")
    .replace(/\[[^\]]*\]/g, "[]")
    .replace(/\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g, " ");
  const words = [...bare.matchAll(/[a-zA-Z_:][a-zA-Z0-9_:]*/g)]
    .filter((m) => !/^\s*\(/.test(bare.slice(m.index + m[0].length)))
    .map((m) => m[0]);
  const keywords = new Set(["and", "or", "unless", "bool", "offset"]);
  return words.filter((w) => !keywords.has(w));
}

test("promtool check rules: alerts.yml is valid", (t) => {
  if (!existsSync(PROMTOOL)) return t.fail(`${PROMTOOL} missing: apt-get install prometheus`);
  const r = promtool(["check", "rules", "alerts.yml"]);
  t.is(r.code, 0, r.out);
  t.regex(r.out, /SUCCESS: 9 rules found/);
});

test("promtool test rules: alerts.test.yml passes", (t) => {
  if (!existsSync(PROMTOOL)) return t.fail(`${PROMTOOL} missing: apt-get install prometheus`);
  const r = promtool(["test", "rules", "alerts.test.yml"]);
  t.is(r.code, 0, r.out);
  t.regex(r.out, /SUCCESS/);
});

test("the alerts cover what the issue asks for and use only exported metrics", async (t) => {
  const text = readFileSync(join(DIR, "alerts.yml"), "utf8");
  for (const a of [
    "EgressdGatewayDown",
    "EgressdBgpPeerDown",
    "EgressdProbeFailing",
    "EgressdSiteDown",
    "EgressdConntrackNearLimit",
  ])
    t.regex(text, new RegExp(`alert: ${a}\\b`));
  const exported = await exportedNames();
  const used = [...new Set([...text.matchAll(/\begressd_[a-z0-9_]+/g)].map((m) => m[0]))];
  t.deepEqual(
    used.filter((n) => !exported.has(n)),
    [],
  );
});

async function exportedNames(): Promise<Set<string>> {
  const dir = mkdtempSync(join(tmpdir(), "egressd-ct-"));
  writeFileSync(join(dir, "nf_conntrack_count"), "1\n");
  writeFileSync(join(dir, "nf_conntrack_max"), "2\n");
  const m = new Metrics({ gateway: new FakeGateway(), version: "0.1.0", conntrackDir: dir });
  const fams = parseExposition(await m.registry.metrics());
  m.close();
  rmSync(dir, { recursive: true });
  const names = new Set<string>(["up"]);
  for (const [name, f] of fams) {
    names.add(name);
    if (f.type === "histogram") for (const s of ["_bucket", "_sum", "_count"]) names.add(name + s);
  }
  return names;
}

test("the dashboard is a Grafana dashboard with the expected panels", (t) => {
  t.is(dashboard.title, "egressd");
  t.truthy(dashboard.uid);
  t.true(dashboard.schemaVersion >= 36);
  t.deepEqual(
    dashboard.templating.list.map((v) => v.name),
    ["datasource", "job", "site", "instance"],
  );
  const ids = dashboard.panels.map((p) => p.id);
  t.is(new Set(ids).size, ids.length, "panel ids are unique");
  for (const p of dashboard.panels) t.true(p.gridPos.x + p.gridPos.w <= 24, p.title);
  const byMetric = (m: string) => queries.filter((q) => q.expr.includes(m)).map((q) => q.panel);
  for (const m of [
    "egressd_bgp_peer_state",
    "egressd_bgp_advertised_routes",
    "egressd_failovers_total",
    "egressd_probe_state",
    "egressd_probe_rtt_seconds_bucket",
    "egressd_snat_packets_total",
    "egressd_snat_bytes_total",
    "egressd_conntrack_entries_limit",
    "egressd_reconcile_duration_seconds_bucket",
    "egressd_connection_sync_ready",
    "egressd_conntrackd_cache_refused_total",
  ])
    t.true(byMetric(m).length > 0, `a panel shows ${m}`);
});

test("every dashboard query refers to exported metrics only", async (t) => {
  const exported = await exportedNames();
  const unknown = queries.flatMap((q) =>
    metricNames(q.expr)
      .filter((n) => !exported.has(n))
      .map((n) => `${q.panel}: ${n}`),
  );
  t.deepEqual(unknown, []);
  t.true(queries.length > 20);
  const found = new Set(queries.flatMap((q) => metricNames(q.expr)));
  for (const n of [
    "up",
    "egressd_snat_packets_total",
    "egressd_probe_rtt_seconds_bucket",
    "process_cpu_seconds_total",
  ])
    t.true(found.has(n), `the name extraction finds ${n}`);
});

test("every dashboard query is valid PromQL (promtool parses it as a recording rule)", (t) => {
  if (!existsSync(PROMTOOL)) return t.fail(`${PROMTOOL} missing: apt-get install prometheus`);
  const dir = mkdtempSync(join(tmpdir(), "egressd-dash-"));
  const rules = queries.map((q, i) => {
    const expr = q.expr
      .replace(/\$__rate_interval/g, "1m")
      .replace(/\$job/g, "egressd")
      .replace(/\$instance/g, ".*");
    return `      - record: dashboard:q${i}\n        expr: ${JSON.stringify(expr)}\n`;
  });
  writeFileSync(join(dir, "dash-rules.yml"), `groups:\n  - name: dashboard\n    rules:\n${rules.join("")}`);
  const r = promtool(["check", "rules", "dash-rules.yml"], dir);
  rmSync(dir, { recursive: true });
  t.is(r.code, 0, r.out);
});
