// Network namespace sandboxes for integration tests.
//
// Every sandbox gets a unique name prefix (run id + counter), so tests can run
// in parallel and a leftover can be traced to its run. cleanup() kills every
// process inside the sandbox's namespaces and deletes them; register it with
// t.teardown() so it runs when the test fails too.
import { randomBytes } from "node:crypto";
import type { ExecutionContext } from "ava";
import { destroyNamespaces } from "../../containerlab/namespaces.js";
import { run, tryRun, type RunResult } from "../../lib/exec.js";

/** One id per test run: scripts/test.sh exports it so it can sweep leftovers afterwards. */
export const RUN_ID = process.env.EGRESSD_TEST_RUN ?? `et${randomBytes(2).toString("hex")}`;
let counter = 0;

export class Sandbox {
  readonly namespaces: string[] = [];

  constructor(readonly prefix: string) {}

  /** Namespace name of node `name` in this sandbox. */
  ns(name: string): string {
    return `${this.prefix}-${name}`;
  }

  /** Creates a namespace with loopback up and forwarding as asked. */
  async addNode(name: string, opts: { forwarding?: boolean } = {}): Promise<string> {
    const ns = this.ns(name);
    await run(["ip", "netns", "add", ns]);
    this.namespaces.push(ns);
    await run(["ip", "-n", ns, "link", "set", "lo", "up"]);
    const fwd = opts.forwarding ? "1" : "0";
    await this.exec(name, [
      "sysctl",
      "-qw",
      `net.ipv4.ip_forward=${fwd}`,
      `net.ipv6.conf.all.forwarding=${fwd}`,
    ]);
    // Let IPv6 addresses work at once (no duplicate address detection delay).
    await this.exec(name, [
      "sysctl",
      "-qw",
      "net.ipv6.conf.all.accept_dad=0",
      "net.ipv6.conf.default.accept_dad=0",
    ]);
    return ns;
  }

  /** Creates a veth pair between two nodes, both ends up. */
  async link(a: string, aIf: string, b: string, bIf: string): Promise<void> {
    await run([
      "ip",
      "link",
      "add",
      "name",
      aIf,
      "netns",
      this.ns(a),
      "type",
      "veth",
      "peer",
      "name",
      bIf,
      "netns",
      this.ns(b),
    ]);
    await run(["ip", "-n", this.ns(a), "link", "set", aIf, "up"]);
    await run(["ip", "-n", this.ns(b), "link", "set", bIf, "up"]);
  }

  exec(node: string, argv: readonly string[], timeoutMs?: number): Promise<RunResult> {
    return run(argv, { netns: this.ns(node), timeoutMs });
  }

  tryExec(node: string, argv: readonly string[], timeoutMs?: number) {
    return tryRun(argv, { netns: this.ns(node), timeoutMs });
  }

  /** Runs a shell script inside a node. */
  sh(node: string, script: string, timeoutMs?: number): Promise<RunResult> {
    return run(["sh", "-ec", script], { netns: this.ns(node), timeoutMs });
  }

  /** Kills every process in the sandbox's namespaces and deletes them. Idempotent. */
  async cleanup(): Promise<void> {
    await destroyNamespaces(this.namespaces);
    this.namespaces.length = 0;
  }
}

/** A new sandbox whose cleanup runs when the test ends, pass or fail. */
export function sandbox(t: ExecutionContext, tag = "t"): Sandbox {
  const s = new Sandbox(`${RUN_ID}${tag}${counter++}`);
  t.teardown(() => s.cleanup());
  return s;
}
