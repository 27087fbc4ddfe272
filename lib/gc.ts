// A full garbage collection of the calling thread's heap, on demand.
//
// V8 collects when its heap grows, not when a program knows that much has
// just become garbage. The data-plane process knows exactly that after it
// replaces a 100k-source plan: the old plan and everything made while
// building the new one (parser events, parsed prefixes, the normalised
// table) are garbage at once, and left alone the heap keeps them, and the
// RSS, as long as we watched (20 s and more). Node has no public call for
// this; `--expose-gc` set at run time gives a `gc` function to contexts made
// afterwards, which is how this one is obtained. It collects only the heap of
// the thread that calls it.
import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";

let gc: (() => void) | undefined;

/** Collects garbage now, on this thread (tens of milliseconds for a large heap). */
export function collectGarbage(): void {
  if (gc === undefined) {
    setFlagsFromString("--expose-gc");
    gc = runInNewContext("gc") as () => void;
  }
  gc();
}
