// A small parser of the Prometheus text exposition format, for tests.

export interface Family {
  help: string;
  type: string;
  samples: { name: string; labels: Record<string, string>; value: number }[];
}

/** Parses the text exposition format (enough of it for egressd's output). */
export function parseExposition(text: string): Map<string, Family> {
  const out = new Map<string, Family>();
  const fam = (name: string) => {
    let f = out.get(name);
    if (!f) out.set(name, (f = { help: "", type: "", samples: [] }));
    return f;
  };
  for (const line of text.split("\n")) {
    let m;
    if ((m = /^# HELP (\S+) (.*)$/.exec(line))) fam(m[1]!).help = m[2]!;
    else if ((m = /^# TYPE (\S+) (\S+)$/.exec(line))) fam(m[1]!).type = m[2]!;
    else if ((m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)/.exec(line))) {
      const labels: Record<string, string> = {};
      for (const l of (m[2] ?? "").matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]!] = l[2]!;
      const base = m[1]!.replace(/_(bucket|sum|count)$/, "");
      const f = out.get(m[1]!) ?? out.get(base) ?? fam(m[1]!);
      f.samples.push({ name: m[1]!, labels, value: Number(m[3]) });
    }
  }
  return out;
}

export function value(
  fams: Map<string, Family>,
  name: string,
  labels: Record<string, string> = {},
): number | undefined {
  return samplesOf(fams, name, labels)[0]?.value;
}

/** The samples of `name` whose labels include `labels`. */
export function samplesOf(
  fams: Map<string, Family>,
  name: string,
  labels: Record<string, string> = {},
): Family["samples"] {
  const f = fams.get(name.replace(/_(bucket|sum|count)$/, "")) ?? fams.get(name);
  return (f?.samples ?? []).filter(
    (s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v),
  );
}
