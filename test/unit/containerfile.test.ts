// The Containerfile cannot be built here (no container engine), so it is held
// to the code: its build stage installs with scripts/install-packed.sh (the
// layout test/integration/packed-layout.test.ts runs a gateway from), its
// runtime stage copies that layout and starts the daemon with the Node.js
// flags of daemon/node-flags.ts, and the Debian packages of each stage cover
// what the code there runs.
import test from "ava";
import { readFileSync } from "node:fs";
import { join, relative } from "node:path";
import { NODE_ENV, NODE_FLAGS } from "../../daemon/node-flags.js";
import {
  essentialPrograms,
  programsIn,
  readNeeds,
  resolve,
  RUNTIME,
  RUNTIME_DIRS,
  sources,
} from "../helpers/programs.js";
import { containerfileStages, entrypoint } from "../helpers/deploy.js";

const ROOT = join(import.meta.dirname, "..", "..", "..");

const stages = containerfileStages;

const aptPackages = (lines: string[]) =>
  lines
    .filter((l) => l.startsWith("RUN ") && l.includes("apt-get install"))
    .flatMap((l) => /apt-get install ([^&]*)/.exec(l)![1]!.split(/\s+/))
    .filter((w) => w !== "" && !w.startsWith("-"));

test("two stages on Debian 12 with Node.js 20; the runtime copies the layout install-packed.sh makes, and nothing else", (t) => {
  const [build, run] = stages();
  t.truthy(build && run);
  t.regex(build!.from, /node:20-bookworm-slim AS build$/);
  t.regex(run!.from, /node:20-bookworm-slim$/);
  const steps = build!.lines.find((l) => l.startsWith("RUN npm ci"));
  t.truthy(steps, "the build stage installs with the lockfile");
  t.regex(steps!, /npm ci .*&& npm run build && bash scripts\/install-packed\.sh \/opt\/egressd$/);
  const copies = run!.lines.filter((l) => l.startsWith("COPY"));
  t.deepEqual(copies, ["COPY --from=build /opt/egressd /opt/egressd"]);
  // The build context leaves out what the build stage makes itself.
  const ignored = readFileSync(join(ROOT, ".dockerignore"), "utf8").split("\n");
  for (const p of ["node_modules/", "dist/", ".git/"])
    t.true(ignored.includes(p), `.dockerignore leaves out ${p}`);
});

test("the entrypoint is the daemon of the layout with daemon/node-flags.ts's flags and environment", (t) => {
  t.deepEqual(entrypoint(), ["node", ...NODE_FLAGS, "/opt/egressd/dist/daemon/cli.js"]);
  const env = containerfileStages()
    .at(-1)!
    .lines.filter((l) => l.startsWith("ENV "))
    .map((l) => l.slice("ENV ".length));
  t.deepEqual(
    env,
    Object.entries(NODE_ENV).map(([k, v]) => `${k}=${v}`),
  );
});

test("the runtime's Debian packages hold every program the daemon's code starts; the build's what the build needs", (t) => {
  const [build, run] = stages();
  const needs = readNeeds(readFileSync(join(ROOT, "scripts", "setup.sh"), "utf8"));
  const packageOf = new Map<string, string>();
  for (const [pkg, items] of needs)
    for (const item of items)
      packageOf.set(item.startsWith("/") ? item.slice(item.lastIndexOf("/") + 1) : item, pkg);
  const essential = essentialPrograms();
  const runtimePackages = new Set(aptPackages(run!.lines));
  const missing = new Map<string, string>();
  const seen = new Set<string>();
  for (const dir of RUNTIME_DIRS)
    for (const file of sources(join(ROOT, dir)))
      for (const { name, line } of programsIn(readFileSync(file, "utf8"))) {
        if (!resolve(name)) continue;
        const base = name.slice(name.lastIndexOf("/") + 1);
        seen.add(base);
        if (essential.has(base) || RUNTIME.has(base)) continue;
        const pkg = packageOf.get(base);
        if (pkg === undefined || !runtimePackages.has(pkg))
          missing.set(base, `${relative(ROOT, file)}:${line} (${pkg ?? "no package in setup's NEEDS"})`);
      }
  t.log(`programs the daemon's code starts: ${[...seen].sort().join(", ")}`);
  for (const want of ["nft", "gobgpd"]) t.true(seen.has(want), `the scan found ${want}`);
  t.deepEqual(
    [...missing].map(([name, where]) => `${name}: ${where}`),
    [],
  );
  // The build: the native helpers (gcc, libc headers) and the generated gRPC code (protoc, the protos).
  for (const pkg of [
    "gcc",
    "libc6-dev",
    "protobuf-compiler",
    "libprotobuf-dev",
    "golang-github-osrg-gobgp-dev",
  ])
    t.true(aptPackages(build!.lines).includes(pkg), `the build stage installs ${pkg}`);
});
