// `egressd validate FILE...`: checks configuration files without touching
// anything. Exit 0: all valid; 1: some invalid; 2: unreadable file or usage.
import { Command } from "commander";
import { readFile } from "node:fs/promises";
import type { LoadResult } from "../../inputs/config/load.js";
import { formatIssue } from "../../inputs/config/issues.js";

export const EXIT = { ok: 0, invalid: 1, usage: 2 } as const;

/**
 * Reads and validates a file, printing its errors and warnings. Returns the
 * exit code for it. A file with per-node sections is checked as each node's
 * config (or only `node`'s, when given), each finding prefixed with the node.
 */
export async function checkFile(
  file: string,
  out: (line: string) => void,
  err: (line: string) => void,
  node?: string,
): Promise<{ code: number; result?: LoadResult; nodes?: number }> {
  let text: string;
  try {
    text = await readFile(file, "utf8");
  } catch (e) {
    err(`${file}: cannot read: ${(e as Error).message}`);
    return { code: EXIT.usage };
  }
  // Loaded here, not at the top: `egressd run` imports this module for EXIT, and its main thread
  // never parses a config (its data-plane process does), so it need not carry the validator.
  const { loadConfig, nodesOf } = await import("../../inputs/config/load.js");
  const nodes = node === undefined ? nodesOf(text) : [node];
  let code: number = EXIT.ok;
  let result: LoadResult | undefined;
  for (const n of nodes?.length ? nodes : [undefined]) {
    result = loadConfig(text, n === undefined ? {} : { node: n });
    const who = n === undefined || nodes?.length === 1 ? "" : `node ${n}: `;
    for (const w of result.warnings)
      err(`${who}${formatIssue({ ...w, message: `warning: ${w.message}` }, file)}`);
    if (!result.ok) {
      for (const e of result.errors) err(`${who}${formatIssue(e, file)}`);
      const count = result.errors.length;
      err(`${file}: ${who}invalid (${count} error${count === 1 ? "" : "s"})`);
      code = EXIT.invalid;
    }
  }
  return { code, ...(result ? { result } : {}), ...(nodes ? { nodes: nodes.length } : {}) };
}

/** Exit code 2 for usage errors, 0 for --help. */
export function usageExit(cmd: Command): Command {
  return cmd.exitOverride((e) => process.exit(e.exitCode === 0 ? 0 : EXIT.usage));
}

export function validateCommand(): Command {
  return usageExit(
    new Command("validate")
      .description("check configuration files and print every error with its path and line")
      .argument("<file...>", "YAML configuration file(s)")
      .option(
        "--node <name>",
        "for a file with per-node sections: check this node's config only (default: every node's)",
      )
      .addHelpText(
        "after",
        "\nPrints FILE: OK for a valid file; otherwise one line per error, FILE:LINE: PATH: MESSAGE, on stderr.\n" +
          "Exit status: 0 all valid, 1 some file invalid, 2 a file could not be read or bad usage.",
      )
      .action(async (files: string[], opts: { node?: string }) => {
        let code: number = EXIT.ok;
        for (const file of files) {
          const r = await checkFile(
            file,
            (l) => console.log(l),
            (l) => console.error(l),
            opts.node,
          );
          const each = r.nodes === undefined || opts.node ? "" : ` (${r.nodes} nodes)`;
          if (r.code === EXIT.ok) console.log(`${file}: OK${each}`);
          code = Math.max(code, r.code);
        }
        process.exitCode = code;
      }),
  );
}
