// Removing network namespaces and everything running in them: shared by the
// lab runner and the tests' sandboxes.
import { tryRun } from "../lib/exec.js";

/**
 * Kills the processes inside the given namespaces (TERM, then KILL), then
 * deletes the namespaces, and with them their links. Namespaces already gone
 * are fine; any other failure to delete one is thrown.
 */
export async function destroyNamespaces(namespaces: Iterable<string>): Promise<void> {
  const list = [...namespaces];
  for (const signal of ["TERM", "KILL"]) {
    let any = false;
    for (const ns of list) {
      const { stdout } = await tryRun(["ip", "netns", "pids", ns]);
      const pids = stdout.split(/\s+/).filter(Boolean);
      if (pids.length) {
        any = true;
        await tryRun(["kill", `-${signal}`, ...pids]);
      }
    }
    if (!any) break;
    await new Promise((r) => setTimeout(r, signal === "TERM" ? 500 : 200));
  }
  for (const ns of list) {
    const r = await tryRun(["ip", "netns", "delete", ns]);
    if (r.code !== 0 && !/No such file/.test(r.stderr)) {
      throw new Error(`could not delete namespace ${ns}: ${r.stderr.trim()}`);
    }
  }
}
