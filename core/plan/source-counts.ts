// Apart from the planner (core/plan/index.ts) so that the main thread's side
// of the data-plane worker can use it without loading the planner. Written
// over the shape it reads (a PlanView has it), so it imports nothing back.

interface Counted {
  config: { policies: readonly { sourceCount: number }[] };
}

/** `view` with the source counts of some policies (by index) changed. */
export function withSourceCounts<V extends Counted>(view: V, counts: ReadonlyMap<number, number>): V {
  const policies = view.config.policies.map((p, i) => {
    const n = counts.get(i);
    return n === undefined || n === p.sourceCount ? p : { ...p, sourceCount: n };
  });
  return { ...view, config: { ...view.config, policies } };
}
