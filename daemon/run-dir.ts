// Where a gateway keeps its pid file, sockets and helpers' files, apart from
// the gateway itself so that commands that only need the path (drain) do not
// load the daemon.
import { readlinkSync } from "node:fs";
import { join } from "node:path";

/** A run directory unique to this network namespace (gateways of a lab share one filesystem). */
export function defaultRunDir(): string {
  const m = /\[(\d+)\]/.exec(readlinkSync("/proc/self/ns/net"));
  return join("/run/egressd", `net-${m?.[1] ?? "default"}`);
}
