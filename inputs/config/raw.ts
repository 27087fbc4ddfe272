// Reading a config that may not have passed the schema: the semantic checks
// look at the types they need through these, and skip what they cannot read.
export type Obj = Record<string, unknown>;
export const isObj = (x: unknown): x is Obj => typeof x === "object" && x !== null && !Array.isArray(x);
export const list = (x: unknown): unknown[] => (Array.isArray(x) ? x : []);
export const str = (x: unknown): string | undefined => (typeof x === "string" ? x : undefined);
export const quoted = (s: string) => JSON.stringify(s);

/** Notes `key` as seen at `value` (an index, a path); returns where it was seen first, if it was. */
export function seenBefore<K, V>(seen: Map<K, V>, key: K, value: V): V | undefined {
  const prev = seen.get(key);
  if (prev === undefined) seen.set(key, value);
  return prev;
}
