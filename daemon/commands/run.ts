// `egressd run -c FILE`: the daemon. Refuses to start on an invalid config
// (and programs nothing); SIGHUP reloads (an invalid file keeps the running
// config); SIGTERM/SIGINT withdraw routes, remove what egressd owns, exit 0.
import { Command } from "commander";
import { loadConfigFile } from "../config/load.js";
import { formatIssue } from "../config/issues.js";
import { Gateway } from "../gateway.js";
import { createLogger } from "../log.js";
import { EXIT, usageExit } from "./validate.js";

export function runCommand(): Command {
  return usageExit(
    new Command("run")
      .description("run the gateway: own egress IPs, program SNAT and routing, advertise over BGP")
      .requiredOption("-c, --config <file>", "YAML configuration file")
      .option(
        "--run-dir <dir>",
        "directory for gobgpd's API socket (default: /run/egressd/net-<netns inode>)",
      )
      .option(
        "--log-level <level>",
        "fatal, error, warn, info, debug or trace (default: $EGRESSD_LOG_LEVEL or info)",
      )
      .addHelpText(
        "after",
        "\nSignals: SIGTERM/SIGINT stop cleanly (withdraw, remove addresses/rules/table, exit 0); SIGHUP reloads the config.\n" +
          "Exit status: 0 clean stop, 1 invalid config or failed start, 2 unreadable file or bad usage.",
      )
      .action(async (opts: { config: string; runDir?: string; logLevel?: string }) => {
        const log = createLogger({ level: opts.logLevel });
        const load = async () => {
          try {
            return await loadConfigFile(opts.config);
          } catch (e) {
            log.fatal({ file: opts.config, err: (e as Error).message }, "cannot read config");
            return undefined;
          }
        };
        const first = await load();
        if (!first) return void (process.exitCode = EXIT.usage);
        for (const w of first.warnings) log.warn({ file: opts.config }, formatIssue(w));
        if (!first.ok) {
          for (const e of first.errors)
            log.error({ file: opts.config, path: e.path, line: e.line }, formatIssue(e));
          log.fatal(
            { file: opts.config, errors: first.errors.length },
            "invalid config: nothing was programmed",
          );
          return void (process.exitCode = EXIT.invalid);
        }

        const gw = new Gateway(first.config, { log, runDir: opts.runDir });
        let stopping = false;
        const stop = async (signal: string) => {
          if (stopping) return;
          stopping = true;
          log.info({ signal }, "stopping");
          try {
            await gw.stop();
            log.info("stopped");
            process.exit(0);
          } catch (e) {
            log.error({ err: e }, "stop failed");
            process.exit(1);
          }
        };
        process.on("SIGTERM", () => void stop("SIGTERM"));
        process.on("SIGINT", () => void stop("SIGINT"));
        process.on("SIGHUP", () => {
          void (async () => {
            const next = await load();
            if (!next) return;
            if (!next.ok) {
              for (const e of next.errors)
                log.error({ file: opts.config, path: e.path, line: e.line }, formatIssue(e));
              log.error({ errors: next.errors.length }, "reload rejected: the running config stays in force");
              return;
            }
            log.info({ file: opts.config }, "reloading config");
            await gw.reload(next.config);
          })();
        });

        try {
          await gw.start();
        } catch (e) {
          log.fatal({ err: e }, "start failed; removing what was programmed");
          await gw.stop().catch(() => undefined);
          process.exit(EXIT.invalid);
        }
        log.info(
          { gateway: first.config.gateway.name, site: first.config.gateway.site, runDir: gw.runDir },
          "egressd running",
        );
      }),
  );
}
