// The audit section: a record of every connection egressd NATs, when it
// starts and when it ends, as JSON lines and/or IPFIX (docs/audit.md).
import { Type, type Static } from "@sinclair/typebox";
import { DEFAULTS } from "../defaults.js";

const Strict = { additionalProperties: false } as const;
const A = DEFAULTS.audit;

export const AuditIpfixSchema = Type.Object(
  {
    collector: Type.String({
      description: "The collector's IP address (IPv4 or IPv6). Records go to it over UDP.",
      examples: ["192.0.2.50"],
    }),
    port: Type.Optional(
      Type.Integer({
        minimum: 1,
        maximum: 65535,
        default: A.ipfixPort,
        description: "The collector's UDP port.",
      }),
    ),
    observationDomain: Type.Optional(
      Type.Integer({
        minimum: 0,
        maximum: 0xffffffff,
        default: A.observationDomain,
        description: "The IPFIX observation domain id: one per gateway lets the collector tell them apart.",
      }),
    ),
    templateRefreshSeconds: Type.Optional(
      Type.Integer({
        minimum: 1,
        maximum: 3600,
        default: A.templateRefreshSeconds,
        description:
          "How often the templates are sent again (a collector that restarts drops records until then).",
      }),
    ),
  },
  { ...Strict, description: "IPFIX export of NAT events (RFC 8158 fields) to a collector." },
);

export const AuditSchema = Type.Object(
  {
    file: Type.Optional(
      Type.String({
        description:
          'The JSON-lines trail: an absolute path (rotated by size), or "-" for standard output (for a log shipper).',
        examples: ["/var/log/egressd/audit.jsonl", "-"],
      }),
    ),
    rotateSize: Type.Optional(
      Type.String({
        pattern: "^[1-9][0-9]*[KMG]$",
        default: A.rotateSize,
        description: "The trail file is rotated when it reaches this size (K, M or G bytes), e.g. 100M.",
      }),
    ),
    rotateKeep: Type.Optional(
      Type.Integer({
        minimum: 1,
        maximum: 1000,
        default: A.rotateKeep,
        description: "How many rotated trail files are kept (file.1 the newest); older ones are deleted.",
      }),
    ),
    ipfix: Type.Optional(AuditIpfixSchema),
    receiveBufferBytes: Type.Optional(
      Type.Integer({
        minimum: 65536,
        maximum: 1 << 30,
        default: A.receiveBufferBytes,
        description:
          "Receive buffer of the conntrack event socket (forced above net.core.rmem_max with CAP_NET_ADMIN); " +
          "events lost to a full buffer are counted (egressd_audit_events_lost_total).",
      }),
    ),
  },
  {
    ...Strict,
    description:
      "An audit trail of the connections this gateway NATs: one record at the start and one at the end of each.",
  },
);

export type AuditConfig = Static<typeof AuditSchema>;
export type AuditIpfixConfig = Static<typeof AuditIpfixSchema>;
