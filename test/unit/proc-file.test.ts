import test from "ava";
import { readFileSync } from "node:fs";
import { statFields } from "../../lib/proc-file.js";

test("statFields starts after the command name, whatever it holds", (t) => {
  // A command name with a space and parentheses: the fields start after the last ")".
  const f = statFields("4242 (my (odd) name) S 1 4242 4242 0 -1 4194560 91 0 0 0 3 5 0 0 20 0 1 0 777 1000");
  t.is(f[3 - 3], "S"); // state
  t.is(f[4 - 3], "1"); // ppid
  t.is(f[14 - 3], "3"); // utime
  t.is(f[19 - 3], "0"); // nice
  t.is(f[22 - 3], "777"); // starttime
  // This process: its own pid's parent is node's parent, and its state is running.
  const self = statFields(readFileSync("/proc/self/stat", "utf8"));
  t.is(Number(self[4 - 3]), process.ppid);
  t.is(self[0], "R");
});
