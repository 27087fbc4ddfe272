// The load a fleet of gateways puts on the Kubernetes API server, simulated
// for two designs (docs/kubernetes.md, "Load on the API server"):
//
//   pods    every gateway lists and watches every pod (what egressd does
//           today): a pod event is sent to each of G gateways in full;
//   slices  a few replicas (R) watch pods and publish, per policy, compact
//           address-set objects of at most SLICE addresses, updated at most
//           every BATCH_MS; gateways watch those, not pods.
//
// For each fleet size it runs SECONDS of pod churn (Poisson arrivals at RATE
// changes/s, each a pod's address leaving one policy's set and another's
// joining it), batches the slice updates as a publisher would, and counts
// what the API server sends: objects and bytes at a fleet-wide (re)start,
// and events and bytes per second in steady state, plus the watchers
// it keeps. Object sizes are measured from the JSON: the pod from
// bench/k8s-objects.ts, a slice from a filled one.
//
//   node dist/bench/k8s-api-load.js [--pods 1000000] [--policies 1000] [--rate 100]
//                                   [--seconds 60] [--fleets 3,50,500] [--sites 10] [--slice 100]
import { parseArgs } from "node:util";
import { podObject } from "./k8s-objects.js";
import { rng } from "./scale-config.js";

const { values: args } = parseArgs({
  options: {
    pods: { type: "string", default: "1000000" },
    policies: { type: "string", default: "1000" },
    rate: { type: "string", default: "100" },
    seconds: { type: "string", default: "60" },
    fleets: { type: "string", default: "3,50,500" },
    sites: { type: "string", default: "10" },
    slice: { type: "string", default: "100" },
  },
});
const PODS = Number(args.pods);
const POLICIES = Number(args.policies);
const RATE = Number(args.rate);
const SECONDS = Number(args.seconds);
const FLEETS = args.fleets.split(",").map(Number);
const SITES = Number(args.sites);
/** Addresses per slice object (a small slice is cheap to rewrite; a large one to list), batching window, publisher replicas. */
let SLICE = Number(args.slice);
const BATCH_MS = 100;
const REPLICAS = 3;

const podBytes = JSON.stringify(podObject(123456, "payments-prod", "10.65.226.64", "api")).length;
const sliceObject = (n: number) => ({
  apiVersion: "egressd.io/v1alpha1",
  kind: "EgressAddressSlice",
  metadata: {
    name: "payments-card-db-x7k2p",
    namespace: "payments",
    labels: { "egressd.io/policy": "card-db" },
    resourceVersion: "123456789",
  },
  addresses: Array.from({ length: n }, (_, i) => `10.${64 + (i >> 16)}.${(i >> 8) & 255}.${i & 255}`),
});
const sliceBytes = (n: number) => JSON.stringify(sliceObject(n)).length;
/** A watch event's envelope around its object. */
const EVENT_OVERHEAD = '{"type":"MODIFIED","object":}\n'.length;

interface Load {
  startObjects: number;
  startBytes: number;
  eventsPerS: number;
  bytesPerS: number;
  watchers: number;
}

/** Pod churn for SECONDS: which policy's slice each change touches, at what time (ms). */
function churn(): { t: number; policy: number; slice: number }[] {
  const random = rng(42);
  const out: { t: number; policy: number; slice: number }[] = [];
  const podsPerPolicy = PODS / POLICIES;
  const slicesPerPolicy = Math.max(1, Math.ceil(podsPerPolicy / SLICE));
  let t = 0;
  for (;;) {
    t += (-Math.log(1 - random()) / RATE) * 1000;
    if (t >= SECONDS * 1000) break;
    // A pod restarts: its old address leaves its policy's slice, the new one joins (same policy).
    const policy = Math.floor(random() * POLICIES);
    out.push({ t, policy, slice: Math.floor(random() * slicesPerPolicy) });
    out.push({ t, policy, slice: Math.floor(random() * slicesPerPolicy) });
  }
  return out;
}

function podsDesign(gateways: number, changes: number): Load {
  // Each restart: the old pod's DELETED and the new pod's ADDED plus a few MODIFIED as it starts
  // (scheduled, IP assigned, ready): 4 events per restart; counted as one per change here, twice.
  const events = (changes / 2) * 4;
  return {
    startObjects: gateways * PODS,
    startBytes: gateways * PODS * podBytes,
    eventsPerS: (gateways * events) / SECONDS,
    bytesPerS: (gateways * events * (podBytes + EVENT_OVERHEAD)) / SECONDS,
    watchers: gateways * 4,
  };
}

function slicesDesign(gateways: number, changes: { t: number; policy: number; slice: number }[]): Load {
  const slicesPerPolicy = Math.max(1, Math.ceil(PODS / POLICIES / SLICE));
  const total = POLICIES * slicesPerPolicy;
  const fill = Math.min(SLICE, Math.ceil(PODS / total));
  // Batching: a slice is written at most once per BATCH_MS window.
  const writes = new Set(changes.map((c) => `${c.policy}/${c.slice}/${Math.floor(c.t / BATCH_MS)}`)).size;
  const bytes = sliceBytes(fill) + EVENT_OVERHEAD;
  // The publishers still watch every pod (4 events per restart, as above).
  const podEvents = (changes.length / 2) * 4;
  return {
    startObjects: gateways * total + REPLICAS * PODS,
    startBytes: gateways * total * sliceBytes(fill) + REPLICAS * PODS * podBytes,
    eventsPerS: (gateways * writes + REPLICAS * podEvents) / SECONDS,
    bytesPerS: (gateways * writes * bytes + REPLICAS * podEvents * (podBytes + EVENT_OVERHEAD)) / SECONDS,
    watchers: gateways * 3 + REPLICAS * 2,
  };
}

const human = (b: number) =>
  b >= 2 ** 40
    ? `${(b / 2 ** 40).toFixed(1)} TB`
    : b >= 2 ** 30
      ? `${(b / 2 ** 30).toFixed(1)} GB`
      : b >= 2 ** 20
        ? `${(b / 2 ** 20).toFixed(1)} MB`
        : `${(b / 1024).toFixed(0)} kB`;
const count = (n: number) =>
  n >= 1e6 ? `${(n / 1e6).toFixed(1)}M` : n >= 1e3 ? `${(n / 1e3).toFixed(1)}k` : n.toFixed(0);

const changes = churn();
console.log(
  `${PODS} pods, ${POLICIES} policies, ${RATE} pod changes/s (${changes.length / 2} restarts in ${SECONDS} s), ` +
    `${SITES} sites; a pod is ${podBytes} bytes of JSON, a slice of ${SLICE} addresses ${sliceBytes(SLICE)} bytes; ` +
    `slices written at most every ${BATCH_MS} ms by ${REPLICAS} publishers`,
);
console.log(
  "gateways  design  start: objects   bytes      steady: events/s  bytes/s     watchers   ratio of bytes/s (pods / slices)",
);
for (const g of FLEETS) {
  const a = podsDesign(g, changes.length);
  const b = slicesDesign(g, changes);
  for (const [name, l] of [
    ["pods", a],
    ["slices", b],
  ] as const)
    console.log(
      `${String(g).padStart(8)}  ${name.padEnd(6)}  ${count(l.startObjects).padStart(14)}  ${human(l.startBytes).padStart(9)}  ` +
        `${count(l.eventsPerS).padStart(16)}  ${human(l.bytesPerS).padStart(9)}/s  ${String(l.watchers).padStart(8)}` +
        (name === "slices"
          ? `   ${(a.bytesPerS / b.bytesPerS).toFixed(1)}x, start ${(a.startBytes / b.startBytes).toFixed(1)}x`
          : ""),
    );
}

// The slice size: every change rewrites a whole slice, so steady bytes grow with it; a start lists
// fewer, larger objects. At the largest fleet:
const g = FLEETS[FLEETS.length - 1]!;
const base = podsDesign(g, changes.length);
const sizes = [25, 50, 100, 250, 500];
console.log(
  `slice size at ${g} gateways: ${sizes
    .map((n) => {
      SLICE = n;
      const l = slicesDesign(g, changes);
      return `${n}: ${human(l.bytesPerS)}/s (${(base.bytesPerS / l.bytesPerS).toFixed(1)}x less than pods), start ${human(l.startBytes)}`;
    })
    .join("; ")}`,
);
