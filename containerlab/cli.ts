#!/usr/bin/env node
// egressd-lab: realise a containerlab topology with network namespaces.
//   egressd-lab up -t FILE [--prefix P]      create nodes, links, run exec, start FRR
//   egressd-lab down -t FILE [--prefix P]    remove all of it (idempotent, works after a crash)
//   egressd-lab exec -t FILE NODE -- CMD...  run a command inside a node
//   egressd-lab status -t FILE [--prefix P]  nodes, processes, interfaces
import { Command } from "commander";
import { spawnSync } from "node:child_process";
import { Lab, LabError } from "./runner.js";
import { loadTopology, TopologyError } from "./topology.js";

function lab(opts: { topo: string; prefix?: string }): Lab {
  return new Lab(loadTopology(opts.topo), opts.prefix);
}

const program = new Command()
  .name("egressd-lab")
  .description("Bring a containerlab topology up with network namespaces (no Docker needed)")
  .enablePositionalOptions()
  .showHelpAfterError();

const common = (c: Command) =>
  c
    .requiredOption("-t, --topo <file>", "containerlab topology file (*.clab.yml)")
    .option("-p, --prefix <prefix>", "instance prefix for namespace names (default: clab-<name>)");

common(program.command("up").description("create the lab")).action(async (o) => {
  await lab(o).up();
});
common(program.command("down").description("remove the lab and everything it created")).action(async (o) => {
  await lab(o).down();
});
common(program.command("status").description("show nodes, their processes and interfaces")).action(
  async (o) => {
    const rows = await lab(o).status();
    for (const r of rows) {
      const procs = r.processes.length ? r.processes.join(",") : "-";
      console.log(
        `${r.node.padEnd(8)} ${(r.up ? "up" : "down").padEnd(5)} ${r.namespace.padEnd(24)} ${r.interfaces.join(" ") || "-"}  [${procs}]`,
      );
    }
  },
);
common(
  program.command("exec").description("run a command inside a node").argument("<node>").argument("<cmd...>"),
)
  .passThroughOptions()
  .action((node: string, cmd: string[], o) => {
    const l = lab(o);
    const argv = ["ip", "netns", "exec", l.ns(node), ...l.execArgv(node, cmd)];
    const r = spawnSync(argv[0] as string, argv.slice(1), { stdio: "inherit" });
    process.exitCode = r.status ?? 1;
  });

try {
  if (process.getuid?.() !== 0) throw new LabError("egressd-lab needs root (network namespaces)");
  await program.parseAsync(process.argv);
} catch (e) {
  if (e instanceof TopologyError || e instanceof LabError) {
    console.error(`egressd-lab: ${e.message}`);
    process.exit(1);
  }
  throw e;
}
