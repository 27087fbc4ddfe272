// egressd's side of a BFD test: test/fixtures/bfd-peer.js in a network
// namespace (BfdManager on its main thread, or the daemon's BFD worker), its
// events collected as they are printed.
import { spawn, type ChildProcess } from "node:child_process";
import { join } from "node:path";
import { createInterface } from "node:readline";
import type { BfdPeerConfig } from "../../health/bfd/manager.js";
import { waitFor } from "../../lib/wait.js";
import { REPO } from "./paths.js";

const FIXTURE = join(REPO, "dist/test/fixtures/bfd-peer.js");

export interface SpeakerEvent {
  event: string;
  wall: number;
  peer?: string;
  reason?: string;
  to?: string;
  [k: string]: unknown;
}

export interface SpeakerArgs {
  sessions: BfdPeerConfig[];
  /** Where the sessions run (default: the main thread). */
  thread?: "main" | "worker";
  /** On the main thread: node:dgram (default) or the egressd-bfd helper. The worker always uses the helper. */
  transport?: "udp" | "helper";
  /** How long SIGUSR2 keeps the main thread busy. */
  blockMs?: number;
}

/** A session at 100 ms x 3 from `local` to `peer`. */
export function fastSession(p: { tor: string; ours: string }): BfdPeerConfig {
  return { peer: p.tor, local: p.ours, desiredMinTxMs: 100, requiredMinRxMs: 100, detectMultiplier: 3 };
}

export class BfdSpeaker {
  readonly events: SpeakerEvent[] = [];
  readonly child: ChildProcess;
  readonly exited: Promise<number | null>;
  stderr = "";

  constructor(ns: string, args: SpeakerArgs) {
    this.child = spawn("ip", ["netns", "exec", ns, process.execPath, FIXTURE, JSON.stringify(args)], {
      stdio: ["ignore", "pipe", "pipe"],
    });
    createInterface({ input: this.child.stdout! }).on("line", (line) => {
      try {
        this.events.push(JSON.parse(line) as SpeakerEvent);
      } catch {
        this.stderr += `${line}\n`;
      }
    });
    this.child.stderr!.on("data", (d: Buffer) => (this.stderr += d.toString()));
    this.exited = new Promise((r) => this.child.on("exit", (code) => r(code)));
  }

  async waitEvent(
    pred: (e: SpeakerEvent) => boolean,
    timeoutMs: number,
    what: string,
  ): Promise<SpeakerEvent> {
    let found: SpeakerEvent | undefined;
    await waitFor(
      `${what}\n${this.stderr}`,
      () => (found = this.events.find(pred)) !== undefined,
      timeoutMs,
      20,
    );
    return found!;
  }

  signal(sig: NodeJS.Signals): void {
    this.child.kill(sig);
  }

  /** Kills it, and waits until it is gone. */
  async kill(): Promise<void> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    this.child.kill("SIGKILL");
    await this.exited;
  }
}
