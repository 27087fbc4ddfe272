// Checks of the audit section beyond its structure: where the trail goes.
import { isAbsolute } from "node:path";
import { parseAddress } from "../../core/ip.js";
import type { PathSegment } from "./issues.js";
import { isObj, quoted, str } from "./raw.js";

export function checkAudit(raw: unknown, err: (segments: PathSegment[], message: string) => void): void {
  if (!isObj(raw)) return;
  const file = str(raw.file);
  if (raw.file === undefined && raw.ipfix === undefined)
    err(["audit"], "records go nowhere: give a file, ipfix, or both");
  if (file !== undefined && file !== "-" && (!isAbsolute(file) || file.endsWith("/")))
    err(["audit", "file"], `${quoted(file)} is not an absolute file path (or "-" for standard output)`);
  if (isObj(raw.ipfix)) {
    const c = str(raw.ipfix.collector);
    if (c !== undefined) {
      const a = parseAddress(c);
      if (a === undefined) err(["audit", "ipfix", "collector"], `${quoted(c)} is not an IP address`);
      else if (a.value === 0n) err(["audit", "ipfix", "collector"], `${c} is not a collector's address`);
    }
  }
}
