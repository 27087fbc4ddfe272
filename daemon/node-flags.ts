// The Node.js flags egressd runs with. They must be given when node starts
// (V8 sizes its heap then), so every launcher passes them: bin/egressd, the
// shebang of daemon/cli.ts (an npm-installed `egressd`), and the labs, tests
// and benchmarks that start the daemon (test/unit/node-flags.test.ts checks
// the first two).
//
// --max-semi-space-size=4: V8's young generation for the main thread, in MB
// per semi-space. The default grows to 16 MB on these machines, and the main
// thread's heap then carries 40 MB and more of short-lived garbage between
// scavenges (heap 64-130 MB total for 30-40 MB used). Measured with a CPU
// profile of the main thread through 20 source reloads, 2 full reloads and
// 20 scrapes at 100k sources (one run each, RSS before and after):
//   default: RSS 207 -> 249 MB, main thread busy 1629 ms, 4 tasks over 20 ms
//   4 MB:    RSS 192 -> 194 MB, busy 1849 ms, 5 tasks over 20 ms
//   1 MB:    RSS 188 -> 192 MB, busy 2264 ms, 9 tasks over 20 ms (scavenges
//            on every scrape's garbage)
// 4 MB kept most of the memory for a little of the CPU. 2 MB since: with
// 100k pods, RSS over 60 relabels was 263-278 MB against 278-292 MB at 4 MB
// (bench/k8s-scale, two runs each), the event latency the same; bench/scale
// after 100 reloads peaked at 217 MB against 240 MB, loop delay max 113 ms
// at start against 79 ms, 21 ms across the reloads against 32 ms (one run
// each, the same hour). The BFD worker thread sets its own young generation
// (resourceLimits).
//
// --no-memory-reducer: V8's memory reducer runs full collections when it
// judges the program idle, to give memory back. egressd is never idle in
// that sense (probe replies arrive every few ms), and at 100k sources the
// reducer kept the GC helper threads at 2 % of a core after reloads, with
// its major collections on the main thread besides. The data-plane process,
// where the memory is, collects itself after each plan (daemon/dataplane.ts).
// bench/scale, the same tree and hour, after 100 reloads (one run each):
//   with the reducer:    idle CPU 6.5 and 7.1 %, RSS max 325-329 MB
//   without:             idle CPU 3.4 %, RSS max 309 MB
//
// --max-old-space-size=1024 (HEAP_MB): the heap limit of each thread, in MB
// (worker threads take it too unless they set their own; the data-plane
// process takes it unless --dataplane-heap-mb is given). V8 lets a heap grow to a
// multiple of what it held after its last full collection before it
// collects again; that multiple may reach 4 when the limit is 2 GB or more
// (V8's default here is 4 GB) and at most 1.6 at 1 GB. After the initial
// sync of a 100k-pod cluster the main thread holds about 140 MB.
// bench/k8s-scale, 100k pods, 400 relabels over 100 s, RSS read every 5 s
// (one run each, same tree and hour):
//   default: 297-311 MB
//   1024:    272-281 MB
// The limit holds the model of about 700k pods (1.15 kB each on top of
// 25 MB); docs/kubernetes.md says how to raise it, and from which size on
// gateways should not watch pods themselves.
export const HEAP_MB = 1024;
// MALLOC_ARENA_MAX=2 (NODE_ENV): glibc's malloc gives each thread that
// allocates its own arena, up to 8 per core, and an arena keeps the pages
// it grew to. node's threads (libuv's pool, V8's helpers, the main thread)
// each had one, and what the data plane's big plans left in them stayed
// resident. Two arenas for all threads: bench/scale --reloads 30, RSS of
// egressd and its data-plane process summed, max over the reloads (two
// runs each, in turns, the same hour):
//   default: 256, 243 MB (PSS after the reloads 178, 179 MB)
//   2:       231, 236 MB (PSS 148, 154 MB)
//   1:       237, 228 MB (PSS 147, 148 MB)
// Start to /readyz and the reload times did not move beyond the noise. 2
// rather than 1: threads that allocate at once (libuv's pool) need not
// queue for one lock. It is read when the process starts, so it is an
// environment variable, set by every launcher beside NODE_FLAGS, and by
// egressd for its data-plane process (daemon/dataplane-worker.ts).
export const NODE_ENV: Readonly<Record<string, string>> = { MALLOC_ARENA_MAX: "2" };
export const NODE_FLAGS: readonly string[] = [
  "--max-semi-space-size=2",
  "--no-memory-reducer",
  `--max-old-space-size=${HEAP_MB}`,
];

/**
 * The flags of the data-plane process (daemon/dataplane-process.ts): egressd's
 * own, with its heap limit `heapMb` when one is given (--dataplane-heap-mb).
 * The young generation is the main thread's size: the worker thread it
 * replaced had 8 MB in all (a third of which is the semi-spaces' copy), and a
 * full reload's cost did not change with its size.
 */
export function dataplaneNodeFlags(heapMb?: number): string[] {
  return NODE_FLAGS.map((f) =>
    heapMb !== undefined && f.startsWith("--max-old-space-size=") ? `--max-old-space-size=${heapMb}` : f,
  );
}
