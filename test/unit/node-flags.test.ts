// Every launcher of the daemon gives node the flags of daemon/node-flags.ts:
// V8 reads them only when it starts.
import test from "ava";
import { readFileSync } from "node:fs";
import { NODE_ENV, NODE_FLAGS } from "../../daemon/node-flags.js";
import { REPO } from "../helpers/paths.js";

const flags = NODE_FLAGS.join(" ");
const env = Object.entries(NODE_ENV)
  .map(([k, v]) => `${k}=${v}`)
  .join(" ");

test("bin/egressd and the shebang of the built cli pass NODE_ENV and NODE_FLAGS", (t) => {
  t.regex(readFileSync(`${REPO}/bin/egressd`, "utf8"), new RegExp(`^${env} exec node ${flags} "`, "m"));
  t.is(
    readFileSync(`${REPO}/dist/daemon/cli.js`, "utf8").split("\n")[0],
    `#!/usr/bin/env -S ${env} node ${flags}`,
  );
});
