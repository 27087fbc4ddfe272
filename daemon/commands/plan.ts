// `egressd plan FILE`: prints the kernel state egressd would program for a
// configuration (addresses, routes, rules, nftables ruleset), touching nothing.
import { Command } from "commander";
import { plan } from "../plan.js";
import { renderKernelState } from "../plan/render-text.js";
import type { NatPlan } from "../state.js";
import { checkFile, EXIT, usageExit } from "./validate.js";

type NftRenderer = (plan: NatPlan) => string;

// TODO(lead): once routing/nft-render.ts is in the tree, replace this with
//   import { renderNftRuleset } from "../../routing/nft-render.js";
// It is loaded dynamically so that this command builds and runs before the
// renderer exists; until then `plan` prints the NatPlan as JSON instead.
async function loadNftRenderer(): Promise<NftRenderer | undefined> {
  const specifier = "../../routing/nft-render.js";
  try {
    const mod = (await import(specifier)) as { renderNftRuleset?: NftRenderer };
    return mod.renderNftRuleset;
  } catch (e) {
    if ((e as { code?: string }).code === "ERR_MODULE_NOT_FOUND") return undefined;
    throw e;
  }
}

export function planCommand(): Command {
  return usageExit(
    new Command("plan")
      .description("print the desired kernel state for a configuration, without touching anything")
      .argument("<file>", "YAML configuration file")
      .option("--json", "print the desired state (KernelState) as JSON")
      .addHelpText(
        "after",
        "\nThe text output lists egress addresses, routes and rules in ip(8) syntax, then the nftables ruleset.\n" +
          "An invalid file prints its errors as `egressd validate` does. Exit status: 0 ok, 1 invalid, 2 unreadable.",
      )
      .action(async (file: string, opts: { json?: boolean }) => {
        const r = await checkFile(
          file,
          (l) => console.log(l),
          (l) => console.error(l),
        );
        if (r.result === undefined || !r.result.ok) {
          process.exitCode = r.code;
          return;
        }
        const state = plan(r.result.config);
        if (opts.json === true) {
          process.stdout.write(`${JSON.stringify(state, null, 2)}\n`);
        } else {
          process.stdout.write(renderKernelState(state, await loadNftRenderer()));
        }
        process.exitCode = EXIT.ok;
      }),
  );
}
