// `egressd plan FILE`: prints the kernel state egressd would program for a
// configuration (addresses, routes, rules, nftables ruleset) and the BGP paths
// it would advertise to each peer, touching nothing.
import { Command } from "commander";
import { checkFile, EXIT, usageExit } from "./validate.js";

export function planCommand(): Command {
  return usageExit(
    new Command("plan")
      .description("print the desired kernel state for a configuration, without touching anything")
      .argument("<file>", "YAML configuration file")
      .option("--node <name>", "for a file with per-node sections: the node whose plan to print")
      .option(
        "--json",
        "print the desired state as JSON: the kernel state, and under bgp the speaker, peers and paths",
      )
      .addHelpText(
        "after",
        "\nThe text output lists egress addresses, routes and rules in ip(8) syntax, then the nftables ruleset,\n" +
          "then the BGP paths each peer is sent while every probe is up (next hop, MED, AS-path prepend, communities).\n" +
          "An invalid file prints its errors as `egressd validate` does. Exit status: 0 ok, 1 invalid, 2 unreadable.",
      )
      .action(async (file: string, opts: { json?: boolean; node?: string }) => {
        const r = await checkFile(
          file,
          (l) => console.log(l),
          (l) => console.error(l),
          opts.node,
        );
        if (r.result === undefined || !r.result.ok) {
          process.exitCode = r.code;
          return;
        }
        if (r.nodes !== undefined && r.nodes !== 1 && opts.node === undefined) {
          console.error(`${file}: has a section for each of ${r.nodes} nodes: name one with --node`);
          process.exitCode = EXIT.usage;
          return;
        }
        // Loaded here, not with the command line: `egressd run` starts faster without the planner on its thread.
        const [{ plan }, { renderDesired }, { steadyBgp }, { renderNftRuleset }, { renderGuard }] =
          await Promise.all([
            import("../../core/plan/kernel.js"),
            import("../../core/plan/render-text.js"),
            import("../../core/plan/bgp.js"),
            import("../../routing/nft-render.js"),
            import("../../routing/nft-guard.js"),
          ]);
        const config = r.result.config;
        const state = plan(config);
        const bgp = config.bgp ? steadyBgp({ ...config, bgp: config.bgp }, state) : undefined;
        if (opts.json === true) {
          // A TCP-MD5 password is a secret: say that one is set, never what it is.
          const shown = bgp && {
            ...bgp,
            peers: bgp.peers.map((p) => (p.password === undefined ? p : { ...p, password: "(set)" })),
          };
          process.stdout.write(`${JSON.stringify(shown ? { ...state, bgp: shown } : state, null, 2)}\n`);
        } else {
          process.stdout.write(renderDesired(state, renderNftRuleset, bgp, renderGuard));
        }
        process.exitCode = EXIT.ok;
      }),
  );
}
