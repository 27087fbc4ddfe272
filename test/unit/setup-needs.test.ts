// scripts/setup.sh installs every program the code runs. The code is read for
// the programs it starts (argv arrays, shell snippets, absolute paths); each
// one that is a program on this machine must come either from Debian's
// Essential set (what a minimal Debian 12 always has) or from a row of setup's
// NEEDS table. A fresh-root CI run proves the same from the other side: a
// program missing from the table is missing there, and its test fails.
import test from "ava";
import { readFileSync } from "node:fs";
import { join, relative } from "node:path";
import {
  essentialPrograms,
  programsIn,
  readNeeds,
  resolve,
  RUNTIME,
  SOURCE_DIRS,
  sources,
} from "../helpers/programs.js";

const ROOT = join(import.meta.dirname, "..", "..", "..");

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
