#!/usr/bin/env -S MALLOC_ARENA_MAX=2 node --max-semi-space-size=2 --no-memory-reducer --max-old-space-size=1024
// egressd's command line. Each subcommand lives in daemon/commands/ and is
// registered here; exit codes are documented in the README. The shebang
// carries NODE_ENV and NODE_FLAGS (daemon/node-flags.ts).
import { Command } from "commander";
import { realpathSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { VERSION } from "./version.js";
import { planCommand } from "./commands/plan.js";
import { runCommand } from "./commands/run.js";
import { statusCommand } from "./commands/status.js";
import { drainCommand } from "./commands/drain.js";
import { validateCommand } from "./commands/validate.js";
import { auditCommand } from "./commands/audit.js";

export function buildCli(): Command {
  const program = new Command();
  program
    .name("egressd")
    .description(
      "BGP-speaking egress gateway: owns egress IPs, SNATs pod traffic, advertises routes via gobgpd",
    )
    .version(VERSION, "-V, --version", "print the version and exit")
    .showHelpAfterError();
  program.addCommand(validateCommand());
  program.addCommand(planCommand());
  program.addCommand(runCommand());
  program.addCommand(statusCommand());
  program.addCommand(drainCommand());
  program.addCommand(auditCommand());
  return program;
}

// Run when executed (also through a bin symlink), not when imported by tests.
const entry = process.argv[1] ? realpathSync(process.argv[1]) : "";
if (entry === fileURLToPath(import.meta.url)) {
  await buildCli().parseAsync(process.argv);
}
