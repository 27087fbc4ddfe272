// Golden files: every example config and every lab gateway config, planned
// into its whole desired state (addresses, routes, rules, the nftables
// ruleset, the BGP paths per peer with their attributes), exactly as
// `egressd plan` prints it, compared with test/golden/*.plan. A change to the
// planner shows up here as a diff to read. To accept one:
//   EGRESSD_UPDATE_GOLDEN=1 npx ava test/unit/golden.test.ts   (npm run golden)
import test from "ava";
import { existsSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { basename, join } from "node:path";
import { loadConfig } from "../../inputs/config/load.js";
import { plan } from "../../core/plan/kernel.js";
import { steadyBgp } from "../../core/plan/bgp.js";
import { renderDesired } from "../../core/plan/render-text.js";
import { renderNftRuleset } from "../../routing/nft-render.js";
import { renderGuard } from "../../routing/nft-guard.js";
import { REPO } from "../helpers/paths.js";

const GOLDEN = join(REPO, "test", "golden");
const update = process.env.EGRESSD_UPDATE_GOLDEN === "1";

const configs = [
  ...readdirSync(join(REPO, "examples"))
    .filter((f) => f.endsWith(".yaml"))
    .map((f) => ({ name: `example-${basename(f, ".yaml")}`, path: join(REPO, "examples", f) })),
  ...readdirSync(join(REPO, "containerlab", "two-dc"))
    .filter((d) => existsSync(join(REPO, "containerlab", "two-dc", d, "egressd.yaml")))
    .map((d) => ({ name: `two-dc-${d}`, path: join(REPO, "containerlab", "two-dc", d, "egressd.yaml") })),
];

test("there is something to compare", (t) => {
  t.true(configs.length >= 6, configs.map((c) => c.name).join(", "));
});

for (const c of configs) {
  test(`${c.name}: the desired state equals test/golden/${c.name}.plan`, (t) => {
    const r = loadConfig(readFileSync(c.path, "utf8"));
    if (!r.ok) return t.fail(r.errors.map((e) => `${e.path}: ${e.message}`).join("\n"));
    const kernel = plan(r.config);
    const bgp = r.config.bgp ? steadyBgp({ ...r.config, bgp: r.config.bgp }, kernel) : undefined;
    const text = renderDesired(kernel, renderNftRuleset, bgp, renderGuard);
    const file = join(GOLDEN, `${c.name}.plan`);
    if (update) writeFileSync(file, text);
    t.true(existsSync(file), `no golden file yet: run npm run golden`);
    t.is(text, readFileSync(file, "utf8"));
  });
}
