// Config sections for operating the gateway: health probes (and what depends
// on them), graceful drain, the HTTP listener and logging.
import { DEFAULTS } from "../defaults.js";
import { Type, type Static } from "@sinclair/typebox";
import { NAME_PATTERN } from "./patterns.js";

const Strict = { additionalProperties: false } as const;
const P = DEFAULTS.probe;
const Ms = (description: string, minimum = 1) => Type.Integer({ minimum, maximum: 3_600_000, description });

export const DampingSchema = Type.Object(
  {
    halfLifeMs: Type.Optional(Ms(`Time for the flap penalty to halve (default ${P.damping.halfLifeMs}).`)),
    penalty: Type.Optional(
      Type.Integer({ minimum: 1, description: `Penalty per flap (default ${P.damping.penalty}).` }),
    ),
    suppressAbove: Type.Optional(
      Type.Integer({ minimum: 1, description: `Suppress above this (default ${P.damping.suppressAbove}).` }),
    ),
    reuseBelow: Type.Optional(
      Type.Integer({ minimum: 1, description: `Reuse below this (default ${P.damping.reuseBelow}).` }),
    ),
    maxSuppressMs: Type.Optional(
      Ms(`Longest suppression after the last flap (default ${P.damping.maxSuppressMs}).`),
    ),
  },
  { ...Strict, description: "Route-flap-damping style suppression of a target that keeps flapping." },
);

export const ProbeSchema = Type.Object(
  {
    name: Type.String({ pattern: NAME_PATTERN, description: "The probe's name (logs, metrics, /status)." }),
    kind: Type.Union([Type.Literal("icmp"), Type.Literal("tcp"), Type.Literal("http")], {
      description: "icmp echo, tcp connect, or http(s) GET with an expected status.",
    }),
    target: Type.String({ description: "Address probed (http: host, when url is absent)." }),
    port: Type.Optional(
      Type.Integer({ minimum: 1, maximum: 65535, description: "tcp: required; http: optional." }),
    ),
    url: Type.Optional(Type.String({ description: "http: the full URL; default http://target[:port]/." })),
    expectStatus: Type.Optional(
      Type.Integer({ minimum: 100, maximum: 599, description: "http: healthy status (200)." }),
    ),
    tlsSkipVerify: Type.Optional(Type.Boolean({ description: "https: do not verify the certificate." })),
    sourceAddress: Type.Optional(
      Type.String({ description: "Local source address (icmp: or an interface)." }),
    ),
    intervalMs: Type.Optional(Ms(`Time between probes (default ${P.intervalMs}).`, 10)),
    timeoutMs: Type.Optional(
      Ms(`A probe without an answer within this has failed (default ${P.timeoutMs}).`),
    ),
    rise: Type.Optional(
      Type.Integer({ minimum: 1, maximum: 100, description: `Successes to come up (default ${P.rise}).` }),
    ),
    fall: Type.Optional(
      Type.Integer({ minimum: 1, maximum: 100, description: `Failures to go down (default ${P.fall}).` }),
    ),
    holdDownMs: Type.Optional(
      Ms(
        `After a failure, how long a recovered target must stay healthy before routes return (default ${P.holdDownMs}).`,
        0,
      ),
    ),
    damping: Type.Optional(Type.Union([Type.Literal(false), DampingSchema])),
    affects: Type.Union(
      [
        Type.Literal("gateway"),
        Type.Object({ uplink: Type.String({ description: "Every policy using this uplink." }) }, Strict),
        Type.Object({ policy: Type.String({ description: "This policy's destinations." }) }, Strict),
      ],
      {
        description:
          'What depends on this probe: "gateway" (everything), {uplink: NAME} or {policy: NAME}. A failure withdraws exactly those routes.',
      },
    ),
  },
  { ...Strict, description: "A health probe and what it guards." },
);

export const DrainSchema = Type.Object(
  {
    periodMs: Type.Optional(
      Ms(
        `After SIGTERM or \`egressd drain\`: routes are withdrawn at once, forwarding goes on this long, then addresses and rules are removed (default ${DEFAULTS.drain.periodMs}).`,
        0,
      ),
    ),
  },
  { ...Strict, description: "Graceful drain." },
);

export const HttpSchema = Type.Object(
  {
    listen: Type.Optional(
      Type.String({
        default: DEFAULTS.http.listen,
        description: "host:port for /metrics, /healthz, /readyz and /status. Loopback by default.",
      }),
    ),
  },
  { ...Strict, description: "The HTTP listener." },
);

export const LogSchema = Type.Object(
  {
    level: Type.Optional(
      Type.Union(
        ["fatal", "error", "warn", "info", "debug", "trace"].map((l) => Type.Literal(l)),
        { description: "Log level (EGRESSD_LOG_LEVEL and --log-level override it)." },
      ),
    ),
  },
  { ...Strict, description: "Logging." },
);

export const KubernetesSchema = Type.Object(
  {
    kubeconfig: Type.Optional(
      Type.String({
        description:
          "A kubeconfig file. Default: the pod's service account when egressd runs in a pod, else $KUBECONFIG or ~/.kube/config.",
      }),
    ),
  },
  {
    ...Strict,
    description:
      "Follow EgressPolicies and ClusterEgressPolicies, pods and namespaces from the Kubernetes API. " +
      "The policies name this file's egressIPGroups.",
  },
);

export type KubernetesConfig = Static<typeof KubernetesSchema>;
export type ProbeConfig = Static<typeof ProbeSchema>;
export type DrainConfig = Static<typeof DrainSchema>;
export type HttpConfig = Static<typeof HttpSchema>;
