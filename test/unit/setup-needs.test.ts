// scripts/setup.sh installs every program the code runs. The code is read for
// the programs it starts (argv arrays, shell snippets, absolute paths); each
// one that is a program on this machine must come either from Debian's
// Essential set (what a minimal Debian 12 always has) or from a row of setup's
// NEEDS table. A fresh-root CI run proves the same from the other side: a
// program missing from the table is missing there, and its test fails.
import test from "ava";
import { execFileSync } from "node:child_process";
import { existsSync, readdirSync, readFileSync, statSync } from "node:fs";
import { join, relative } from "node:path";

const ROOT = join(import.meta.dirname, "..", "..", "..");
const SOURCE_DIRS = ["bgp", "bench", "containerlab", "core", "daemon", "health", "lib", "routing", "test"];
/** The runtime itself: on the project's machines Node.js is not a Debian package. */
const RUNTIME = new Set(["node", "npm", "npx"]);
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

function sources(dir: string): string[] {
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
function readNeeds(script: string): Map<string, string[]> {
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
function programsIn(text: string): { name: string; line: number }[] {
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

function resolve(name: string): string | undefined {
  if (name.startsWith("/")) return existsSync(name) ? name : undefined;
  for (const dir of (process.env.PATH ?? "").split(":")) {
    const p = join(dir, name);
    if (dir && existsSync(p) && statSync(p).isFile()) return p;
  }
  return undefined;
}

/** Basenames of every program that Debian's Essential packages install here. */
function essentialPrograms(): Set<string> {
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

test("the scanner finds programs in argv arrays, absolute paths and shell snippets", (t) => {
  const sample = [
    'await run(["ip", "-n", ns, "link"]);',
    "const argv = [\n  \"curl\",\n  '-s'];",
    'spawn("pgrep", ["-f", x]); await lab.tryExec(node, [\n"conntrack", "-F"]);',
    'const policies = ["red", "blue"]; t.deepEqual(x, ["idle", "up"]);',
    'const NFT = "/usr/sbin/nft";',
    's.sh("gw", `ip addr add ${a} dev lo; iptables-nft-restore < ${f} && if true; then pkill -f x; fi`);',
  ].join("\n");
  const names = programsIn(sample).map((p) => p.name);
  t.deepEqual([...new Set(names)].sort(), [
    "/usr/sbin/nft",
    "conntrack",
    "curl",
    "ip",
    "iptables-nft-restore",
    "pgrep",
    "pkill",
    "true",
  ]);
});

test("every program the code starts is installed by scripts/setup.sh or is part of a minimal Debian", (t) => {
  const needs = readNeeds(readFileSync(join(ROOT, "scripts", "setup.sh"), "utf8"));
  const listed = new Set<string>();
  for (const items of needs.values())
    for (const item of items) listed.add(item.startsWith("/") ? item.slice(item.lastIndexOf("/") + 1) : item);
  const essential = essentialPrograms();
  t.true(essential.has("sh") && essential.has("cat"), "the Essential set was read");

  const unlisted = new Map<string, string[]>();
  const seen = new Set<string>();
  for (const dir of SOURCE_DIRS) {
    for (const file of sources(join(ROOT, dir))) {
      for (const { name, line } of programsIn(readFileSync(file, "utf8"))) {
        // A word that names no program here ("gw", "apply") is an argument, not a command.
        if (!resolve(name)) continue;
        const base = name.slice(name.lastIndexOf("/") + 1);
        seen.add(base);
        if (listed.has(base) || essential.has(base) || RUNTIME.has(base)) continue;
        const where = unlisted.get(base) ?? [];
        where.push(`${relative(ROOT, file)}:${line}`);
        unlisted.set(base, where);
      }
    }
  }
  for (const want of ["ip", "nft", "curl", "ping", "vtysh", "conntrack"])
    t.true(seen.has(want), `the scan found ${want} (else the scanner has gone blind)`);
  t.deepEqual(
    [...unlisted].map(([name, where]) => `${name} (${where.slice(0, 3).join(", ")})`),
    [],
    "programs the code starts that no row of NEEDS in scripts/setup.sh installs",
  );
});

test("every package row of setup's NEEDS names at least one item, and no package twice", (t) => {
  const script = readFileSync(join(ROOT, "scripts", "setup.sh"), "utf8");
  const block = /^NEEDS=\(\n([\s\S]*?)^\)/m.exec(script)![1]!;
  const pkgs = [...block.matchAll(/^\s*"(\S+)/gm)].map((m) => m[1]!);
  t.is(new Set(pkgs).size, pkgs.length);
  for (const [pkg, items] of readNeeds(script))
    t.true(items.length > 0, `${pkg} lists what it is needed for`);
});
