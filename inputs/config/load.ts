// Loads a configuration file: YAML -> structure (Ajv, against the TypeBox
// schema) -> semantics. All or nothing: the result is either a valid, typed
// Config or every error found, each with its path and YAML line.
//
// Two YAML parsers, for speed. A valid file, the common case, is read by
// js-yaml, which builds the value without a syntax tree: 2.2 MB (100k
// sources) in about 0.1 s. The `yaml` package keeps every node's position,
// which an error or a warning needs for its line, but takes ten times as
// long. So a file with anything to report (or one js-yaml refuses, or one
// with aliases, whose expansion only the second path bounds) is read again
// by `yaml`, and what is reported comes from that reading alone. Both follow
// YAML 1.2's core schema; test/unit/config-load.test.ts checks that they
// agree.
//
// The structure is checked by a validator generated at build time
// (validators.js, from scripts/gen-validators.ts), and `yaml` is loaded only
// when a file has something to report: a process that reads a valid file
// loads neither TypeBox, Ajv's compiler nor `yaml`.
import { readFile } from "node:fs/promises";
import { createRequire } from "node:module";
import type { ErrorObject } from "ajv";
import { constructFromEvents, parseEvents, type Event } from "js-yaml";
import type { Document, LineCounter, Node } from "yaml";
import type { Config } from "../../core/config/schema.js";
import { IFNAME_PATTERN, NAME_PATTERN } from "../../core/config/patterns.js";
import { resolveGroups } from "../../core/config/groups.js";
import { policyFamily } from "../../core/plan/model.js";
import { formatPath, type ConfigIssue, type PathSegment } from "./issues.js";
import { checkSemantics, type NatFor, type RawIssue } from "./semantics.js";
import { fleetNodes, selectNode } from "./fleet.js";
import { layoutOf, type SourceLayout } from "./source-edit.js";
import { validateConfig } from "./validators.js";

export type LoadResult =
  | {
      ok: true;
      config: Config;
      warnings: ConfigIssue[];
      /** With LoadOptions.layout, for a file with nothing to report: where its sources are (see source-edit.ts). */
      layout?: SourceLayout;
    }
  | { ok: false; errors: ConfigIssue[]; warnings: ConfigIssue[] };

const require = createRequire(import.meta.url);
let yamlModule: typeof import("yaml") | undefined;
/** The `yaml` package, loaded on first use (its CommonJS build: a synchronous load). */
const yamlLib = (): typeof import("yaml") => (yamlModule ??= require("yaml") as typeof import("yaml"));

const UNQUOTED_IPV6 = /(^|[\s[{,])[0-9a-fA-F]{0,4}:[0-9a-fA-F]{0,4}:/;

const TYPE_NAMES: Record<string, string> = {
  string: "a string",
  array: "a list",
  object: "a map (key: value)",
  integer: "an integer",
  number: "a number",
  boolean: "true or false",
};

function levenshtein(a: string, b: string): number {
  const row = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    let diag = row[0]!;
    row[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const up = row[j]!;
      row[j] = Math.min(row[j]! + 1, row[j - 1]! + 1, diag + (a[i - 1] === b[j - 1] ? 0 : 1));
      diag = up;
    }
  }
  return row[b.length]!;
}

function suggest(key: string, known: string[]): string {
  const k = key.toLowerCase();
  const hit =
    known.find((x) => x.toLowerCase() === k) ?? known.find((x) => levenshtein(x.toLowerCase(), k) <= 2);
  return hit === undefined ? ` (known keys: ${known.join(", ")})` : ` (did you mean ${JSON.stringify(hit)}?)`;
}

function pointerToSegments(pointer: string): PathSegment[] {
  if (pointer === "") return [];
  return pointer
    .slice(1)
    .split("/")
    .map((s) => s.replace(/~1/g, "/").replace(/~0/g, "~"))
    .map((s) => (/^(0|[1-9][0-9]*)$/.test(s) ? Number(s) : s));
}

function structuralIssue(e: ErrorObject): RawIssue {
  const segments = pointerToSegments(e.instancePath);
  const params = e.params as Record<string, unknown>;
  const schema = e.parentSchema as { properties?: Record<string, unknown>; pattern?: string } | undefined;
  switch (e.keyword) {
    case "required":
      return { segments, message: `missing required field ${JSON.stringify(params.missingProperty)}` };
    case "additionalProperties": {
      const key = String(params.additionalProperty);
      const known = Object.keys(schema?.properties ?? {});
      return { segments: [...segments, key], message: `unknown key${suggest(key, known)}` };
    }
    case "type": {
      const want = TYPE_NAMES[String(params.type)] ?? String(params.type);
      const got = e.data;
      const hint =
        params.type === "string" && typeof got === "object" && got !== null
          ? ' (an unquoted IPv6 address ending in ":" reads as a map; quote it)'
          : "";
      return { segments, message: `must be ${want}${hint}` };
    }
    case "minItems":
      return {
        segments,
        message:
          params.limit === 1 ? "must not be empty" : `must have at least ${String(params.limit)} entries`,
      };
    case "pattern": {
      const v = JSON.stringify(e.data);
      if (schema?.pattern === NAME_PATTERN) {
        return {
          segments,
          message: `${v} is not a valid name: 1-63 lowercase letters, digits or "-", starting and ending with a letter or digit`,
        };
      }
      if (schema?.pattern === IFNAME_PATTERN) {
        return {
          segments,
          message: `${v} is not a valid interface name: 1-15 letters, digits, "_", ".", "-" or "@"`,
        };
      }
      return { segments, message: `${v} must match ${String(params.pattern)}` };
    }
    case "minimum":
      return { segments, message: `must be at least ${String(params.limit)}` };
    case "maximum":
      return { segments, message: `must be at most ${String(params.limit)}` };
    default:
      return { segments, message: e.message ?? `fails ${e.keyword}` };
  }
}

/** The 1-based line of the node at `segments` (for a map entry: of its key), or of its closest ancestor. */
function lineOf(doc: Document, lc: LineCounter, segments: PathSegment[]): number | undefined {
  const { isMap, isScalar, isSeq } = yamlLib();
  const start = (node: unknown): number | undefined => {
    const range = (node as Node | null | undefined)?.range;
    return range ? lc.linePos(range[0]).line : undefined;
  };
  for (let n = segments.length; n > 0; n--) {
    const parent: unknown = n === 1 ? doc.contents : doc.getIn(segments.slice(0, n - 1), true);
    const last = segments[n - 1];
    let line: number | undefined;
    if (isMap(parent)) line = start(parent.items.find((p) => isScalar(p.key) && p.key.value === last)?.key);
    else if (isSeq(parent) && typeof last === "number") line = start(parent.items[last]);
    if (line !== undefined) return line;
  }
  return start(doc.contents);
}

function sortIssues(issues: ConfigIssue[]): ConfigIssue[] {
  return issues
    .map((issue, i) => ({ issue, i }))
    .sort((a, b) => (a.issue.line ?? Infinity) - (b.issue.line ?? Infinity) || a.i - b.i)
    .map(({ issue }) => issue);
}

export interface LoadOptions {
  /** Where the overlap check gets the NAT classifier (see NatFor); by default it flattens the policies. */
  natFor?: NatFor;
  /** Also return where the sources are in the text, so that the next edit of them can be read alone. */
  layout?: boolean;
  /**
   * This gateway's node, for a file with per-node sections (see fleet.ts):
   * its config is that node's, and a file without a section for it is refused.
   */
  node?: string;
}

/** Parses and validates configuration text. Never throws for bad input. */
export function loadConfig(text: string, o: LoadOptions = {}): LoadResult {
  return loadClean(text, o) ?? loadWithPositions(text, o);
}

/**
 * The fast path: the config when the file is valid and has nothing to warn
 * about; undefined when there is anything to report, which needs lines.
 */
function loadClean(text: string, o: LoadOptions): LoadResult | undefined {
  let raw: unknown;
  let events: Event[];
  try {
    // js-yaml's load() is these two steps; the events also say where each source is.
    events = parseEvents(text, {});
    const docs = constructFromEvents(events, { source: text, maxAliases: 0 });
    if (docs.length !== 1) return undefined;
    raw = docs[0];
  } catch {
    return undefined;
  }
  const selected = selectNode(raw, o.node);
  if (!selected.ok) return undefined;
  raw = selected.raw;
  if (typeof raw !== "object" || raw === null || !validateConfig(raw)) return undefined;
  const semantic = checkSemantics(raw, true, o.natFor);
  if (semantic.errors.length > 0 || semantic.warnings.length > 0) return undefined;
  // A fleet file's sources are not where a plain file's are: no layout, its edits are read whole.
  const layout = o.layout && !selected.fleet ? layoutOf(text, events) : undefined;
  const config = resolveGroups(raw as Config, policyFamily);
  return layout ? { ok: true, config, warnings: [], layout } : { ok: true, config, warnings: [] };
}

/** Parses and validates with the `yaml` package, which knows the line of every node. */
function loadWithPositions(text: string, o: LoadOptions): LoadResult {
  const { LineCounter, parseDocument } = yamlLib();
  const lc = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lc, uniqueKeys: true, prettyErrors: false });
  const lines = text.split("\n");
  const yamlIssues = (list: typeof doc.errors): ConfigIssue[] =>
    list.map((e) => {
      const line = lc.linePos(e.pos[0]).line;
      // The usual cause: an unquoted IPv6 address (a ":" at the end or before a space starts a map).
      const hint = UNQUOTED_IPV6.test(lines[line - 1] ?? "") ? ' (quote IPv6 addresses: "2001:db8::1")' : "";
      return { path: "(yaml)", message: `${e.message.split("\n")[0]!}${hint}`, line };
    });
  const warnings = yamlIssues(doc.warnings);
  if (doc.errors.length > 0) return { ok: false, errors: yamlIssues(doc.errors), warnings };

  let raw: unknown;
  try {
    raw = doc.toJS({ maxAliasCount: 1000 });
  } catch (e) {
    return { ok: false, errors: [{ path: "(yaml)", message: (e as Error).message }], warnings };
  }
  if (raw === null || raw === undefined) {
    return { ok: false, errors: [{ path: "(top level)", message: "the file is empty" }], warnings };
  }

  const at =
    (locate: (segments: PathSegment[]) => PathSegment[]) =>
    (r: RawIssue): ConfigIssue => {
      const segments = locate(r.segments);
      const line = lineOf(doc, lc, segments);
      const issue: ConfigIssue = { path: formatPath(segments), message: r.message };
      if (line !== undefined) issue.line = line;
      return issue;
    };
  const selected = selectNode(raw, o.node);
  if (!selected.ok) return { ok: false, errors: sortIssues(selected.issues.map(at((s) => s))), warnings };
  raw = selected.raw;
  const toIssue = at(selected.locate);

  const structurallyValid = validateConfig(raw);
  const structural = (validateConfig.errors ?? []).map(structuralIssue);
  const semantic = checkSemantics(raw, structurallyValid, o.natFor);
  const errors = sortIssues([...structural, ...semantic.errors].map(toIssue));
  warnings.push(...semantic.warnings.map(toIssue));
  if (errors.length > 0 || !structurallyValid) return { ok: false, errors, warnings: sortIssues(warnings) };
  return { ok: true, config: resolveGroups(raw as Config, policyFamily), warnings: sortIssues(warnings) };
}

/** Reads and validates a file. Throws only if the file cannot be read. */
export async function loadConfigFile(path: string, o: LoadOptions = {}): Promise<LoadResult> {
  return loadConfig(await readFile(path, "utf8"), o);
}

/** The node names of a file with per-node sections; undefined for a plain config (or one that does not parse). */
export function nodesOf(text: string): string[] | undefined {
  try {
    const docs = constructFromEvents(parseEvents(text, {}), { source: text, maxAliases: 0 });
    return docs.length === 1 ? fleetNodes(docs[0]) : undefined;
  } catch {
    return undefined;
  }
}
