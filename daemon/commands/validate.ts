// `egressd validate FILE...`: checks configuration files without touching
// anything. Exit 0: all valid; 1: some invalid; 2: unreadable file or usage.
import { Command } from "commander";
import type { LoadResult } from "../../inputs/config/load.js";
import { formatIssue } from "../../inputs/config/issues.js";

export const EXIT = { ok: 0, invalid: 1, usage: 2 } as const;

/** Reads and validates a file, printing its errors and warnings. Returns the exit code for it. */
export async function checkFile(
  file: string,
  out: (line: string) => void,
  err: (line: string) => void,
): Promise<{ code: number; result?: LoadResult }> {
  let result: LoadResult;
  try {
    // Loaded here, not at the top: `egressd run` imports this module for EXIT, and its main thread
    // never parses a config (its data-plane thread does), so it need not carry the validator.
    const { loadConfigFile } = await import("../../inputs/config/load.js");
    result = await loadConfigFile(file);
  } catch (e) {
    err(`${file}: cannot read: ${(e as Error).message}`);
    return { code: EXIT.usage };
  }
  for (const w of result.warnings) err(formatIssue({ ...w, message: `warning: ${w.message}` }, file));
  if (!result.ok) {
    for (const e of result.errors) err(formatIssue(e, file));
    const n = result.errors.length;
    err(`${file}: invalid (${n} error${n === 1 ? "" : "s"})`);
    return { code: EXIT.invalid, result };
  }
  return { code: EXIT.ok, result };
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
      .addHelpText(
        "after",
        "\nPrints FILE: OK for a valid file; otherwise one line per error, FILE:LINE: PATH: MESSAGE, on stderr.\n" +
          "Exit status: 0 all valid, 1 some file invalid, 2 a file could not be read or bad usage.",
      )
      .action(async (files: string[]) => {
        let code: number = EXIT.ok;
        for (const file of files) {
          const r = await checkFile(
            file,
            (l) => console.log(l),
            (l) => console.error(l),
          );
          if (r.code === EXIT.ok) console.log(`${file}: OK`);
          code = Math.max(code, r.code);
        }
        process.exitCode = code;
      }),
  );
}
