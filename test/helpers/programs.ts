// What programs the code starts, read from its source (argv arrays, shell
// snippets, absolute paths), and where they come from on Debian: setup's
// NEEDS table, the Essential set. Used by the tests that check scripts/setup.sh
// and the Containerfile install what the code runs.
import { execFileSync } from "node:child_process";
import { existsSync, readdirSync, statSync } from "node:fs";
import { join } from "node:path";

export const SOURCE_DIRS = [
  "bgp",
  "bench",
  "containerlab",
  "core",
  "daemon",
  "health",
  "inputs",
  "lib",
  "routing",
  "test",
];
/** Where the code a gateway runs lives (what the image ships). */
export const RUNTIME_DIRS = ["bgp", "core", "daemon", "health", "inputs", "lib", "routing"];
/** The runtime itself: on the project's machines Node.js is not a Debian package. */
export const RUNTIME = new Set(["node", "npm", "npx"]);
/** Words of shell syntax that start a segment of a snippet but are not programs. */
const SHELL_WORDS = new Set([
  "if",
  "then",
  "else",
  "elif",
  "fi",
  "for",
  "while",
  "do",
  "done",
  "case",
  "esac",
  "exec",
]);

export function sources(dir: string): string[] {
  const out: string[] = [];
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    if (name === "generated" || name === "node_modules") continue;
    if (statSync(p).isDirectory()) out.push(...sources(p));
    else if (name.endsWith(".ts")) out.push(p);
  }
  return out;
}

/** setup.sh's NEEDS rows: package -> items (commands or absolute paths). */
export function readNeeds(script: string): Map<string, string[]> {
  const block = /^NEEDS=\(\n([\s\S]*?)^\)/m.exec(script)?.[1];
  if (!block) throw new Error("scripts/setup.sh has no NEEDS=( ... ) table");
  const rows = new Map<string, string[]>();
  for (const m of block.matchAll(/^\s*"([^"]+)"/gm)) {
    const [pkg, ...items] = m[1]!.trim().split(/\s+/);
    rows.set(pkg!, items);
  }
  return rows;
}

/** Programs a TypeScript file starts, with the line each is named on. */
export function programsIn(text: string): { name: string; line: number }[] {
  const found: { name: string; line: number }[] = [];
  const lineOf = (i: number) => text.slice(0, i).split("\n").length;
  // argv arrays handed to a runner: run(["ip", ...]), s.exec(node, ["ping", ...]), argv = ["curl", ...]
  const argv =
    /(?:\b(?:run|tryRun|exec|tryExec|spawnDetached|execFileSync|spawnSync)\((?:[^()[\]]*?,\s*)?|\bargv\s*=\s*)\[\s*"([a-z][\w.+-]*)"/g;
  for (const m of text.matchAll(argv)) found.push({ name: m[1]!, line: lineOf(m.index) });
  // spawn("ip", [...]), execFile("promtool", [...])
  for (const m of text.matchAll(/\b(?:spawn|execFile|spawnSync|execFileSync)\(\s*"([a-z][\w.+-]*)"/g))
    found.push({ name: m[1]!, line: lineOf(m.index) });
  // absolute paths of programs: "/usr/sbin/nft", "/usr/lib/frr/bgpd"
  for (const m of text.matchAll(/"(\/(?:usr\/)?(?:s?bin|lib\/frr)\/[\w.+-]+)"/g))
    found.push({ name: m[1]!, line: lineOf(m.index) });
  // shell snippets: .sh(node, "a; b && c") - the first word of every command in them
  for (const m of text.matchAll(/\.sh\(\s*[^,]+,\s*(["`])([\s\S]*?)\1/g)) {
    const body = m[2]!.replace(/\$\{[^}]*\}/g, "X");
    for (const seg of body.split(/;|&&|\|\||\||\n|\$\(/)) {
      const words = seg.trim().split(/\s+/);
      while (words.length && SHELL_WORDS.has(words[0]!)) words.shift();
      const word = words[0];
      if (word && /^[a-z][\w.+-]*$/.test(word)) found.push({ name: word, line: lineOf(m.index) });
    }
  }
  return found;
}

export function resolve(name: string): string | undefined {
  if (name.startsWith("/")) return existsSync(name) ? name : undefined;
  for (const dir of (process.env.PATH ?? "").split(":")) {
    const p = join(dir, name);
    if (dir && existsSync(p) && statSync(p).isFile()) return p;
  }
  return undefined;
}

/** Basenames of every program that Debian's Essential packages install here. */
export function essentialPrograms(): Set<string> {
  const list = execFileSync("dpkg-query", ["-W", "-f", "${Package} ${Essential}\\n"], { encoding: "utf8" });
  const essential = list
    .split("\n")
    .filter((l) => l.endsWith(" yes"))
    .map((l) => l.split(" ")[0]!);
  const files = execFileSync("dpkg-query", ["-L", ...essential], { encoding: "utf8" });
  return new Set(
    files
      .split("\n")
      .filter((f) => /\/s?bin\/[^/]+$/.test(f))
      .map((f) => f.slice(f.lastIndexOf("/") + 1)),
  );
}
