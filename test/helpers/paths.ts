// Paths of the repository's files, from compiled tests (dist/test/...) or sources.
import { fileURLToPath } from "node:url";
import { resolve } from "node:path";

const here = fileURLToPath(new URL(".", import.meta.url));
/** The repository root (dist/test/helpers -> ../../..). */
export const REPO = resolve(here, here.includes("/dist/") ? "../../.." : "../..");
export const TWO_DC = resolve(REPO, "containerlab/two-dc/two-dc.clab.yml");
