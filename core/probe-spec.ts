// A probe as the config describes it, its settings resolved against the
// defaults, and the rules a spec must meet. Pure: the config validation (inputs)
// and the prober (health) both read it.
import { DEFAULTS, PROBE_KINDS, type ProbeKind } from "./defaults.js";
import { validateStateConfig, type DampingConfig } from "./probe-state.js";
import { redactUrl } from "./redact.js";
import { isInterfaceName, parseAddress } from "./ip.js";

/** The URL schemes an http probe can GET. */
export function probeableScheme(url: URL): boolean {
  return url.protocol === "http:" || url.protocol === "https:";
}

/** A probe as configured. Only name, kind and target (or url) are required. */
/** How often a probe runs and how its results become a state; every field defaults. */
export interface ProbeTiming {
  intervalMs?: number;
  timeoutMs?: number;
  rise?: number;
  fall?: number;
  holdDownMs?: number;
  /** Flap damping; `false` disables it; a partial object overrides the defaults. */
  damping?: Partial<DampingConfig> | false;
}

export interface ProbeSpec extends ProbeTiming {
  name: string;
  kind: ProbeKind;
  /** Address probed (icmp: an IP address; http: the host, used when url is absent). */
  target: string;
  /** tcp: required; http: optional port when url is absent. */
  port?: number;
  /** http: full URL (http:// or https://); default http://target[:port]/. */
  url?: string;
  /** http: status that counts as healthy (default 200). */
  expectStatus?: number;
  /** https: skip certificate verification (default false). */
  tlsSkipVerify?: boolean;
  /** Local source address (icmp: address or interface name). */
  sourceAddress?: string;
}

/** Defaults; see docs/health.md for the reasoning. */
export const PROBE_DEFAULTS = DEFAULTS.probe satisfies { damping: DampingConfig };

/** Settings resolved from a spec and the defaults. */
export interface ResolvedTiming {
  intervalMs: number;
  timeoutMs: number;
  rise: number;
  fall: number;
  holdDownMs: number;
  damping: DampingConfig | null;
}

export function resolveTiming(s: ProbeTiming): ResolvedTiming {
  return {
    intervalMs: s.intervalMs ?? PROBE_DEFAULTS.intervalMs,
    timeoutMs: s.timeoutMs ?? PROBE_DEFAULTS.timeoutMs,
    rise: s.rise ?? PROBE_DEFAULTS.rise,
    fall: s.fall ?? PROBE_DEFAULTS.fall,
    holdDownMs: s.holdDownMs ?? PROBE_DEFAULTS.holdDownMs,
    damping: s.damping === false ? null : { ...PROBE_DEFAULTS.damping, ...(s.damping ?? {}) },
  };
}

/**
 * An ICMP probe's target must be an IP address (the helper takes literal
 * addresses: a probe that guards a path must not wait on DNS), and its
 * source an address of the same family or an interface name.
 */
export function icmpAddressProblems(target: string, source: string | undefined): string[] {
  const errs: string[] = [];
  const t = parseAddress(target);
  if (!t) errs.push(`target ${target} is not an IP address`);
  if (source !== undefined) {
    const s = parseAddress(source);
    if (s ? t && s.family !== t.family : !isInterfaceName(source))
      errs.push(`sourceAddress ${source} is neither an address of the target's family nor an interface name`);
  }
  return errs;
}

/** Checks a probe spec; returns the problems (empty when valid). */
export function validateProbeSpec(s: ProbeSpec): string[] {
  const errs: string[] = [];
  const t = resolveTiming(s);
  if (!s.name) errs.push("name is required");
  if (!(PROBE_KINDS as readonly string[]).includes(s.kind)) errs.push(`unknown kind ${String(s.kind)}`);
  if (!s.target && !(s.kind === "http" && s.url)) errs.push("target is required");
  if (s.kind === "tcp" && !(Number.isInteger(s.port) && s.port! >= 1 && s.port! <= 65535)) {
    errs.push("tcp probe needs a port 1-65535");
  }
  if (s.url !== undefined) {
    let url: URL | undefined;
    try {
      url = new URL(s.url);
    } catch {
      errs.push(`url ${redactUrl(s.url)} is not a URL`);
    }
    if (s.kind !== "http") errs.push("url is for http probes only");
    else if (url && !probeableScheme(url))
      errs.push(`url ${redactUrl(s.url)}: only http: and https: can be probed (not ${url.protocol})`);
  }
  if (s.kind === "icmp" && t.intervalMs < 10) errs.push("icmp intervalMs must be >= 10");
  if (s.kind === "icmp" && s.target)
    errs.push(...icmpAddressProblems(s.target, s.sourceAddress).map((e) => `icmp ${e}`));
  if (!(t.intervalMs > 0)) errs.push("intervalMs must be > 0");
  if (!(t.timeoutMs > 0)) errs.push("timeoutMs must be > 0");
  errs.push(...validateStateConfig(t));
  return errs.map((e) => `probe ${s.name || "?"}: ${e}`);
}
