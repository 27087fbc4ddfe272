// Steal clocks for tests of the probes' CPU-steal rule (health/steal.ts).
import { StealClock } from "../../health/steal.js";

/** A clock by which the whole machine was stolen between any two reads. */
export function allStolen(): StealClock {
  let stolen = 0;
  let at = 0;
  return new StealClock(
    () => ({ stolenMs: (stolen += 1000), cpus: 1 }),
    () => (at += 1),
  );
}
