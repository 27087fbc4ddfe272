// Validation findings: where (a path into the document, and the YAML line when
// known) and what. Printed as "FILE:LINE: policies[2].destinations[0]: message".

export type PathSegment = string | number;

export interface ConfigIssue {
  /** Path into the document, e.g. "policies[2].destinations[0]"; "(top level)" for the document itself. */
  path: string;
  message: string;
  /** 1-based line in the YAML file, when known. */
  line?: number;
}

const IDENT = /^[A-Za-z_$][A-Za-z0-9_$]*$/;

export function formatPath(segments: readonly PathSegment[]): string {
  if (segments.length === 0) return "(top level)";
  let out = "";
  for (const s of segments) {
    if (typeof s === "number") out += `[${s}]`;
    else if (IDENT.test(s)) out += out === "" ? s : `.${s}`;
    else out += `[${JSON.stringify(s)}]`;
  }
  return out;
}

/** "FILE:LINE: PATH: MESSAGE" (FILE and LINE when known). */
export function formatIssue(issue: ConfigIssue, file?: string): string {
  const where = [file, issue.line].filter((x) => x !== undefined).join(":");
  return `${where === "" ? "" : `${where}: `}${issue.path}: ${issue.message}`;
}
