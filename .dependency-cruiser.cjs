// The layers of egressd, lowest first, and the rule that holds them: a module
// imports only from its own folder and the levels listed before its own, and
// nothing imports in a circle. `npx depcruise --config .dependency-cruiser.cjs
// core lib inputs bgp routing health daemon containerlab scripts test bench`
// checks the tree; test/unit/layers.test.ts runs the same check in the suite.
//
//   core/          shared types and pure logic (no I/O): addresses, defaults,
//                  the config schema, the BGP model, the planner (core/plan)
//   lib/           process execution, waiting
//   inputs/        what feeds the daemon: config loading and validation
//   bgp/ routing/ health/   actuators and probes: gobgpd, the kernel, BFD
//                  (inputs and actuators are siblings: neither imports the other)
//   daemon/        composition: the gateway, CLI, HTTP, metrics
//   containerlab/  the lab runner and the demo
//   scripts/       generators (the published JSON Schema)
//   test/          tests and the test kit (test/helpers) that benchmarks share
//   bench/         benchmarks
// Each row is a level. A module may not import a sibling on its own level or
// anything on a later level.
const LEVELS = [
  [["core", "core"]],
  [["lib", "lib"]],
  [
    ["inputs", "inputs"],
    ["actuators", "(bgp|routing|health)"],
  ],
  [["daemon", "daemon"]],
  [["lab", "containerlab"]],
  [["scripts", "scripts"]],
  [["test", "test"]],
  [["bench", "bench"]],
];

const forbidden = [
  {
    name: "no-circular",
    severity: "error",
    comment: "A cycle makes two modules one: split out what both need.",
    from: {},
    to: { circular: true },
  },
];
LEVELS.forEach((level, i) => {
  const below = LEVELS.slice(i + 1).flat();
  for (const [name, dir] of level) {
    const siblings = level.filter(([n]) => n !== name);
    const banned = [...siblings, ...below];
    if (banned.length === 0) continue;
    forbidden.push({
      name: `${name}-imports-upward`,
      severity: "error",
      comment: `${name} may not import ${banned.map(([n]) => n).join(", ")}: move what it needs down, or the code up`,
      from: { path: `^${dir}/` },
      to: { path: `^(${banned.map(([, d]) => d).join("|")})/` },
    });
  }
});

module.exports = {
  forbidden,
  options: {
    doNotFollow: { path: "node_modules" },
    exclude: { path: "(^dist/|^node_modules/|/generated/)" },
    tsPreCompilationDeps: true,
    tsConfig: { fileName: "tsconfig.json" },
    moduleSystems: ["es6"],
  },
};
