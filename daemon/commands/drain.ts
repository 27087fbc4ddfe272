// `egressd drain`: asks the egressd of this network namespace to drain (the
// same as SIGTERM: withdraw, keep forwarding for drain.periodMs, clean up,
// exit) and waits until it has gone. For a Kubernetes preStop hook.
import { Command } from "commander";
import { readFileSync } from "node:fs";
import { isRunning } from "../exec.js";
import { join } from "node:path";
import { defaultRunDir } from "../gateway.js";
import { EXIT, usageExit } from "./validate.js";

export function drainCommand(): Command {
  return usageExit(
    new Command("drain")
      .description("drain the running egressd of this network namespace and wait for it to exit")
      .option("--run-dir <dir>", "egressd's run directory (default: /run/egressd/net-<netns inode>)")
      .option("--timeout <seconds>", "give up waiting after this long", "120")
      .addHelpText(
        "after",
        "\nExit status: 0 drained and gone, 1 still running at the timeout, 2 no egressd found.",
      )
      .action(async (opts: { runDir?: string; timeout: string }) => {
        const pidFile = join(opts.runDir ?? defaultRunDir(), "egressd.pid");
        let pid: number;
        try {
          pid = Number(readFileSync(pidFile, "utf8").trim());
        } catch {
          console.error(`egressd drain: no egressd here (${pidFile} not found)`);
          return void (process.exitCode = EXIT.usage);
        }
        if (!Number.isInteger(pid) || !isRunning(pid)) {
          console.error(`egressd drain: egressd (pid ${pid}) is not running`);
          return void (process.exitCode = EXIT.usage);
        }
        process.kill(pid, "SIGTERM");
        console.log(`draining egressd (pid ${pid})...`);
        const deadline = Date.now() + Number(opts.timeout) * 1000;
        while (isRunning(pid)) {
          if (Date.now() > deadline) {
            console.error(`egressd drain: pid ${pid} still running after ${opts.timeout} s`);
            return void (process.exitCode = EXIT.invalid);
          }
          await new Promise((r) => setTimeout(r, 100));
        }
        console.log("drained: egressd has exited");
      }),
  );
}
