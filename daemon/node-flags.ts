// The Node.js flags egressd runs with. They must be given when node starts
// (V8 sizes its heap then), so every launcher passes them: bin/egressd, the
// shebang of daemon/cli.ts (an npm-installed `egressd`), and the labs, tests
// and benchmarks that start the daemon (test/unit/node-flags.test.ts checks
// the first two).
//
// --max-semi-space-size=1: V8's young generation for the main thread, in MB
// per semi-space. The default grows to 16 MB on these machines, and the main
// thread's heap then carries 40 MB and more of short-lived garbage between
// scavenges (measured: heap 64-130 MB total for 30-40 MB used, against
// 30-36 MB with 1 MB). Its allocation rate is low (probes, BFD events,
// scrapes), so the extra scavenges are cheap, each well under a
// millisecond. The worker threads set their own young generation (resourceLimits).
export const NODE_FLAGS: readonly string[] = ["--max-semi-space-size=1"];
