// The import graph keeps its shape (.dependency-cruiser.cjs): no module
// imports from a layer above its own or from a sibling on its level (inputs
// and actuators), and nothing imports in a circle. The
// second test shows the check bites, on a small tree made for it.
import test from "ava";
import { spawnSync } from "node:child_process";
import { cpSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { REPO } from "../helpers/paths.js";

const DEPCRUISE = join(REPO, "node_modules", ".bin", "depcruise");
const TREE = [
  "core",
  "lib",
  "inputs",
  "bgp",
  "routing",
  "health",
  "daemon",
  "containerlab",
  "scripts",
  "test",
  "bench",
];

function depcruise(cwd: string, dirs: string[]) {
  return spawnSync(DEPCRUISE, ["--config", ".dependency-cruiser.cjs", "--output-type", "err", ...dirs], {
    cwd,
    encoding: "utf8",
    timeout: 120_000,
  });
}

test("no import runs up a layer, and no import circles", (t) => {
  const r = depcruise(REPO, TREE);
  t.is(r.status, 0, `${r.stdout}${r.stderr}`);
});

test("the check catches an upward import, a sibling import and a cycle", (t) => {
  const dir = mkdtempSync(join(tmpdir(), "egressd-layers-"));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  cpSync(join(REPO, ".dependency-cruiser.cjs"), join(dir, ".dependency-cruiser.cjs"));
  writeFileSync(
    join(dir, "tsconfig.json"),
    JSON.stringify({ compilerOptions: { module: "NodeNext", moduleResolution: "NodeNext" } }),
  );
  mkdirSync(join(dir, "core"));
  mkdirSync(join(dir, "daemon"));
  mkdirSync(join(dir, "inputs"));
  mkdirSync(join(dir, "health"));
  writeFileSync(join(dir, "core", "a.ts"), 'import { b } from "../daemon/b.js";\nexport const a = b;\n');
  writeFileSync(join(dir, "daemon", "b.ts"), "export const b = 1;\n");
  writeFileSync(join(dir, "daemon", "x.ts"), 'import { y } from "./y.js";\nexport const x = () => y;\n');
  writeFileSync(join(dir, "daemon", "y.ts"), 'import { x } from "./x.js";\nexport const y = () => x;\n');
  writeFileSync(join(dir, "health", "h.ts"), "export const h = 1;\n");
  writeFileSync(join(dir, "inputs", "i.ts"), 'import { h } from "../health/h.js";\nexport const i = h;\n');
  const r = depcruise(dir, ["core", "daemon", "inputs", "health"]);
  t.not(r.status, 0);
  t.regex(r.stdout, /core-imports-upward: core\/a\.ts → daemon\/b\.ts/);
  t.regex(r.stdout, /inputs-imports-upward: inputs\/i\.ts → health\/h\.ts/);
  t.regex(r.stdout, /no-circular: daemon\/x\.ts → /);
});
