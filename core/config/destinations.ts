// Checks of a policy's destinations and exceptions that the file and the
// Kubernetes API share (inputs/config/semantics.ts, core/k8s/policy.ts):
// one wording, one rule.
import { contains, neverRouted, type Prefix } from "../ip.js";

/**
 * Why traffic to destination `d` never reaches a gateway (all of it is one
 * special-use range: loopback, link-local, multicast...), as the rest of a
 * sentence after the prefix; undefined when some of it can.
 */
export function unreachableDestination(d: Prefix): string | undefined {
  const special = neverRouted({ family: d.family, value: d.lo });
  if (d.len === 0 || special === undefined || neverRouted({ family: d.family, value: d.hi }) !== special)
    return undefined;
  return `is ${special.replace(/address/, "range")}: traffic to it never reaches a gateway`;
}

/** An exception must lie inside one of its policy's destinations (of its family). */
export function exceptionProblem(x: Prefix, destinations: readonly Prefix[]): string | undefined {
  return destinations.some((d) => d.family === x.family && contains(d, x))
    ? undefined
    : "is not inside any of this policy's destinations";
}
