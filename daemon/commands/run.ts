// `egressd run -c FILE`: the daemon. Refuses to start on an invalid config
// (and programs nothing); SIGHUP reloads (an invalid file keeps the running
// config); SIGTERM/SIGINT withdraw routes, remove what egressd owns, exit 0.
import { Command } from "commander";
import { watch } from "node:fs";
import { readFile } from "node:fs/promises";
import { basename, dirname, resolve } from "node:path";
import { DataplaneWorker } from "../dataplane-worker.js";
import type { ConfigView } from "../../core/plan/index.js";
import { formatIssue } from "../../inputs/config/issues.js";
import type { Gateway } from "../gateway.js";
import { defaultRunDir } from "../run-dir.js";
import type { ClusterInput } from "../cluster-input.js";
import { VERSION } from "../version.js";
import { DEFAULTS } from "../../core/defaults.js";
import { createLogger } from "../log.js";
import { EXIT, usageExit } from "./validate.js";
import { runCommandsViaHelper } from "../../lib/exec.js";

/**
 * The daemon's own modules (gobgpd's gRPC client, the metrics, the HTTP
 * endpoints), loaded by `run` once the data-plane process is started, so that
 * they load while that process loads its own and parses the config: about
 * 0.4 s of a start on these machines, where they took turns before.
 */
async function loadDaemon() {
  const [gateway, cache, observability, podEvent] = await Promise.all([
    import("../gateway.js"),
    import("../cluster-cache.js"),
    import("../observability.js"),
    import("../pod-event.js"),
  ]);
  return {
    Gateway: gateway.Gateway,
    ReloadRefused: gateway.ReloadRefused,
    readClusterCache: cache.readClusterCache,
    startObservability: observability.startObservability,
    recordPodEvent: podEvent.recordPodEvent,
  };
}

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
        "--node <name>",
        "this gateway's node, for a config with a section per node (default: $EGRESSD_NODE); in a pod, " +
          "from the downward API (spec.nodeName)",
      )
      .option(
        "--log-level <level>",
        "fatal, error, warn, info, debug or trace (default: $EGRESSD_LOG_LEVEL or info)",
      )
      .option(
        "--dataplane-heap-mb <mb>",
        "heap limit of the process that parses, plans and programs the config; a config that needs more is " +
          "refused and the one in force stays (default: 1024; 128 holds 100k sources with room to spare)",
      )
      .addHelpText(
        "after",
        "\nSignals: SIGTERM/SIGINT drain (withdraw the served destinations, keep forwarding for drain.periodMs, then\n" +
          "remove addresses, rules and the nft table, exit 0; a second signal skips the wait). SIGHUP, or a change to the\n" +
          "config file, reloads it: validated first; an invalid file keeps the running config.\n" +
          "Exit status: 0 clean stop, 1 invalid config or failed start, 2 unreadable file or bad usage.",
      )
      .action(
        async (opts: {
          config: string;
          node?: string;
          runDir?: string;
          logLevel?: string;
          dataplaneHeapMb?: string;
        }) => {
          let log: ReturnType<typeof createLogger>;
          try {
            log = createLogger({ level: opts.logLevel });
          } catch (e) {
            console.error(`egressd run: ${(e as Error).message}`);
            return void (process.exitCode = EXIT.usage);
          }
          // The text is read once per attempt and parsed from that copy, so the
          // text remembered for reloads is exactly the text of the config in force.
          // It stays bytes here (outside the JS heap): only the data-plane process
          // decodes it, and a 2 MB file read on each reload leaves no string
          // behind on this thread for a major collection to find.
          const read = async (): Promise<Buffer | undefined> => {
            try {
              return await readFile(opts.config);
            } catch (e) {
              log.error({ file: opts.config, err: (e as Error).message }, "cannot read config");
              return undefined;
            }
          };
          const heapMb = opts.dataplaneHeapMb === undefined ? undefined : Number(opts.dataplaneHeapMb);
          if (heapMb !== undefined && !(Number.isInteger(heapMb) && heapMb >= 16)) {
            console.error(
              `egressd run: --dataplane-heap-mb: ${JSON.stringify(opts.dataplaneHeapMb)} is not a whole number of MB, 16 or more`,
            );
            return void (process.exitCode = EXIT.usage);
          }
          const node = opts.node ?? (process.env.EGRESSD_NODE || undefined);
          const nodeOpt = node === undefined ? {} : { node };
          const firstText = await read();
          if (firstText === undefined) return void (process.exitCode = EXIT.usage);
          // Commands (nft, conntrack) are started by a small helper process from here on:
          // this process does not fork once its heap is large (lib/spawner.ts).
          if (!runCommandsViaHelper())
            log.warn("egressd-spawn is not built (npm run build): commands are started by egressd itself");
          // Parsing, validating and planning happen in the data plane's own
          // process, as does programming the kernel (see daemon/dataplane.ts).
          // The gateway, once there is one: told when the data-plane process was restored.
          const running: { gw?: Gateway } = {};
          const dataplane = new DataplaneWorker({
            ...(heapMb ? { heapMb } : {}),
            onRestart: (e) => {
              log.error(
                { reason: e.reason, restarts: e.restarts, restored: e.restored, err: e.error },
                e.restored
                  ? "data-plane process restarted with the config in force"
                  : "data-plane process restarted without a config",
              );
              running.gw?.events.emit("dataplaneRestart", e);
              running.gw?.resync("data-plane process restarted");
            },
          });
          let first: Awaited<ReturnType<DataplaneWorker["prepare"]>>;
          const preparing = performance.now();
          const preparedFirst = dataplane.prepare({ bytes: firstText, ...nodeOpt });
          const daemon = loadDaemon();
          daemon.catch(() => undefined); // awaited below; a start that ends first must not leave it unhandled
          try {
            first = await preparedFirst;
          } catch (e) {
            log.fatal(
              { file: opts.config, err: (e as Error).message },
              "the config could not be prepared: nothing was programmed",
            );
            await dataplane.close();
            return void (process.exitCode = EXIT.invalid);
          }
          log.info(
            {
              file: opts.config,
              bytes: firstText.length,
              durationMs: Math.round(performance.now() - preparing),
              sinceStartMs: Math.round(performance.now()),
            },
            first.ok ? "config read, checked and planned" : "config read and refused",
          );
          for (const w of first.warnings) log.warn({ file: opts.config }, formatIssue(w));
          if (!first.ok) {
            for (const e of first.errors)
              log.error({ file: opts.config, path: e.path, line: e.line }, formatIssue(e));
            log.fatal(
              { file: opts.config, errors: first.errors.length },
              "invalid config: nothing was programmed",
            );
            const noSection = first.errors.some((e) => e.message.startsWith("no section for node"));
            const shown = first.errors.slice(0, 3).map((e) => formatIssue(e, basename(opts.config)));
            const more = first.errors.length > 3 ? ` (and ${first.errors.length - 3} more)` : "";
            const { recordPodEvent } = await daemon;
            await recordPodEvent(
              log,
              noSection ? "NoNodeSection" : "InvalidConfig",
              `egressd refused its config, nothing was programmed: ${shown.join("; ")}${more}`,
            );
            await dataplane.close();
            return void (process.exitCode = EXIT.invalid);
          }
          const { Gateway, ReloadRefused, readClusterCache, startObservability } = await daemon;
          // With Kubernetes: the cluster's policies of the last run, until the first sync (an API
          // outage at start must not take them out of the data plane).
          const runDir = opts.runDir ?? defaultRunDir();
          if (first.view.config.kubernetes) {
            const cache = readClusterCache(runDir);
            if (cache.problem)
              log.warn({ problem: cache.problem }, "kubernetes: the last run's policies are not used");
            if (cache.policies) {
              const withCache = await dataplane
                .prepare({ bytes: firstText, ...nodeOpt, cluster: cache.policies })
                .catch(() => undefined);
              if (withCache?.ok) {
                await dataplane.discard(first.id);
                first = withCache;
                log.info(
                  { policies: cache.policies.length },
                  "kubernetes: the cluster's policies of the last run are kept until the first sync",
                );
              } else log.warn("kubernetes: the last run's policies no longer plan with this file; not used");
            }
          }
          const firstConfig = first.view.config;

          // The config's log level applies unless --log-level or EGRESSD_LOG_LEVEL says otherwise.
          const applyLogLevel = (c: ConfigView) => {
            if (!opts.logLevel && !process.env.EGRESSD_LOG_LEVEL && c.log?.level) log.level = c.log.level;
          };
          applyLogLevel(firstConfig);
          let clusterInput: ClusterInput | undefined;
          const gw = new Gateway(first, {
            log,
            runDir: opts.runDir,
            dataplane,
            // The audit trail names the pod behind a source address once the cluster is followed.
            podAt: (address) => {
              const pod = clusterInput?.cluster.podAt(address);
              return pod && { namespace: pod.namespace, name: pod.name, uid: pod.uid };
            },
          });
          running.gw = gw;
          // The HTTP listener first: /healthz and /readyz answer while the gateway starts.
          try {
            await startObservability({
              gateway: gw,
              listen: firstConfig.http?.listen ?? DEFAULTS.http.listen,
              log,
              version: VERSION,
            });
          } catch (e) {
            log.fatal(
              { err: (e as Error).message },
              "cannot start the HTTP listener; nothing was programmed",
            );
            await dataplane.close();
            return void (process.exitCode = EXIT.invalid);
          }
          let stopping = false;
          const finish = (p: Promise<boolean>) =>
            p.then(
              async (clean) => {
                // The data plane is torn down: the egress IP groups' leases go back at once.
                await clusterInput
                  ?.releaseClaims()
                  .catch((e: unknown) =>
                    log.warn(
                      { err: (e as Error).message },
                      "egress IP groups: leases not given back; they expire",
                    ),
                  );
                log.info({ clean }, "stopped");
                process.exit(clean ? 0 : 1);
              },
              (e: unknown) => {
                log.error({ err: e }, "stop failed");
                process.exit(1);
              },
            );
          // SIGTERM/SIGINT drain (withdraw, forward on for drain.periodMs, clean up);
          // a second one stops at once.
          const onSignal = (signal: string) => {
            if (stopping) {
              log.warn({ signal }, "second signal: stopping without waiting for the drain");
              void finish(gw.stop());
              return;
            }
            stopping = true;
            log.info({ signal }, "stopping");
            void finish(gw.drain());
          };
          process.on("SIGTERM", () => onSignal("SIGTERM"));
          process.on("SIGINT", () => onSignal("SIGINT"));
          // Reloads: SIGHUP, or the file changing. One at a time; a file that
          // did not change since the last attempt is not reloaded again, and a
          // SIGHUP with the very text in force is "unchanged" without parsing
          // it again (at 100k sources, parsing and validating take a second).
          // Reloads (the file's and the cluster's) wait for the gateway's start.
          let started!: () => void;
          let reloading = new Promise<void>((resolve) => (started = resolve));
          let lastText: Buffer | undefined = firstText;
          let appliedText = firstText;
          const reload = (trigger: string) => {
            reloading = reloading
              .then(async () => {
                const text = await read();
                if (trigger === "file" && sameBytes(text, lastText)) return;
                lastText = text;
                if (text === undefined) return void gw.events.emit("reload", { result: "invalid" });
                if (text.equals(appliedText)) {
                  gw.events.emit("reload", { result: "unchanged" });
                  log.info({ file: opts.config, result: "unchanged", trigger }, "config reloaded");
                  return;
                }
                let next: Awaited<ReturnType<DataplaneWorker["prepare"]>>;
                try {
                  next = await dataplane.prepare({ bytes: text, ...nodeOpt });
                } catch (e) {
                  // The data-plane process ended on it (its heap limit): it is restarted with the config in force.
                  log.error(
                    { file: opts.config, trigger, err: (e as Error).message },
                    "reload refused: the config could not be prepared; the running config stays in force",
                  );
                  gw.events.emit("reload", { result: "refused" });
                  return;
                }
                if (!next.ok) {
                  for (const e of next.errors) {
                    log.error({ file: opts.config, path: e.path, line: e.line }, formatIssue(e));
                  }
                  log.error(
                    { errors: next.errors.length, trigger },
                    "reload rejected: the running config stays in force",
                  );
                  gw.events.emit("reload", { result: "invalid" });
                  return;
                }
                let result: Awaited<ReturnType<Gateway["reload"]>>;
                try {
                  result = await gw.reload(next);
                } catch (e) {
                  if (!(e instanceof ReloadRefused)) throw e;
                  log.error(
                    { file: opts.config, trigger, reason: e.message },
                    "reload refused: the running config stays in force",
                  );
                  return;
                }
                applyLogLevel(next.view.config);
                appliedText = text;
                clusterInput?.fileChanged();
                if (result === "failed") {
                  log.error(
                    { file: opts.config, trigger, errors: gw.status().lastReconcile?.errors },
                    "config switched but applying it failed; retrying (see /status)",
                  );
                } else log.info({ file: opts.config, result, trigger }, "config reloaded");
              })
              .catch((e: unknown) => log.error({ err: e }, "reload failed; the daemon carries on"));
          };
          process.on("SIGHUP", () => reload("SIGHUP"));
          // Watch the folder, not the file: editors replace files and Kubernetes
          // swaps a ConfigMap's symlink, both of which a file watch would miss.
          let debounce: NodeJS.Timeout | undefined;
          const base = basename(opts.config);
          watch(dirname(resolve(opts.config)), (_event, name) => {
            if (name !== base && name !== "..data") return;
            clearTimeout(debounce);
            debounce = setTimeout(() => reload("file"), 200);
          }).unref();

          // The cluster is listed while the gateway starts (at 100k pods the list takes seconds).
          if (firstConfig.kubernetes) {
            try {
              // Loaded only here: the Kubernetes client takes a second of CPU to
              // load, which a gateway without a cluster should not pay at start.
              const { ClusterInput } = await import("../cluster-input.js");
              clusterInput = new ClusterInput({
                config: firstConfig.kubernetes,
                gateway: gw,
                prepare: (input) => dataplane.prepare(input),
                log,
                serialize: (fn) => {
                  reloading = reloading
                    .then(fn)
                    .catch((e: unknown) =>
                      log.error({ err: e }, "kubernetes reload failed; the daemon carries on"),
                    );
                },
                view: () => gw.config,
                keep: () => dataplane.saveCluster(gw.runDir),
                node: node ?? firstConfig.gateway.name,
                // The pod's own namespace (the downward API), where deploy/ lets it manage leases.
                leaseNamespace: process.env.EGRESSD_POD_NAMESPACE || "egressd",
              });
              gw.setClusterStatus(() => clusterInput!.status());
              // A new data-plane process gets the cluster's policies from the model.
              dataplane.setClusterSource(() => clusterInput!.policiesIfSynced());
              clusterInput.start();
              log.info(
                "kubernetes: watching pods, namespaces and egress policies (applied once the gateway runs)",
              );
            } catch (e) {
              log.error(
                { err: (e as Error).message },
                "kubernetes: cannot follow the cluster (kubeconfig); the file's policies stay in force",
              );
            }
          }
          try {
            await gw.start();
          } catch (e) {
            log.fatal({ err: e }, "start failed; removing what was programmed");
            await gw.stop().catch(() => undefined);
            process.exit(EXIT.invalid);
          }
          log.info(
            { gateway: firstConfig.gateway.name, site: firstConfig.gateway.site, runDir: gw.runDir },
            "egressd running",
          );
          started();
        },
      ),
  );
}

function sameBytes(a: Buffer | undefined, b: Buffer | undefined): boolean {
  return a === undefined || b === undefined ? a === b : a.equals(b);
}
