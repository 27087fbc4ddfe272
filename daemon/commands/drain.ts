// `egressd drain`: asks the egressd of this network namespace to drain (the
// same as SIGTERM: withdraw, keep forwarding for drain.periodMs, clean up,
// exit) and waits until it has gone. For a Kubernetes preStop hook.
import { Command } from "commander";
import { readFileSync } from "node:fs";
import { isRunning } from "../../lib/exec.js";
import { join } from "node:path";
import { defaultRunDir } from "../run-dir.js";
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
        const timeoutS = Number(opts.timeout);
        if (!/^\d+(\.\d+)?$/.test(opts.timeout.trim()) || !(timeoutS > 0)) {
          console.error(
            `egressd drain: --timeout ${JSON.stringify(opts.timeout)} is not a number of seconds`,
          );
          return void (process.exitCode = EXIT.usage);
        }
        const pidFile = join(opts.runDir ?? defaultRunDir(), "egressd.pid");
        let pid: number;
        try {
          pid = Number(readFileSync(pidFile, "utf8").trim());
        } catch {
          console.error(`egressd drain: no egressd here (${pidFile} not found)`);
          return void (process.exitCode = EXIT.usage);
        }
        if (!Number.isInteger(pid) || pid <= 1 || !isRunning(pid)) {
          console.error(`egressd drain: egressd (pid ${pid}) is not running`);
          return void (process.exitCode = EXIT.usage);
        }
        // A stale pid file can name a pid that now belongs to something else:
        // signal it only if it is an egressd run.
        if (!isEgressdRun(pid)) {
          console.error(`egressd drain: pid ${pid} in ${pidFile} is not an egressd run; not signalling it`);
          return void (process.exitCode = EXIT.usage);
        }
        process.kill(pid, "SIGTERM");
        console.log(`draining egressd (pid ${pid})...`);
        const deadline = Date.now() + timeoutS * 1000;
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

/** Whether `pid` is a node process running egressd's CLI with the run command. */
export function isEgressdRun(pid: number): boolean {
  let argv: string[];
  try {
    argv = readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0");
  } catch {
    return false;
  }
  const cli = argv.findIndex((a) => /(^|\/)(egressd|cli\.js)$/.test(a));
  return cli >= 0 && argv[cli + 1] === "run";
}
