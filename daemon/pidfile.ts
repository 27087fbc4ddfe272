// The pid file `egressd drain` reads.
import { renameSync, rmSync, writeFileSync } from "node:fs";

/**
 * Writes this process's pid to `path`: into a new file beside it, then renamed
 * into place, so a symlink planted at that name is replaced, never followed.
 */
export function writePidFile(path: string, pid = process.pid): void {
  const tmp = `${path}.${pid}.tmp`;
  rmSync(tmp, { force: true });
  writeFileSync(tmp, `${pid}\n`, { flag: "wx", mode: 0o644 });
  renameSync(tmp, path);
}
