// The layers of egressd, lowest first, and the rule that holds them: a module
// imports only from its own layer or the layers below it, and nothing imports
// in a circle. `npx depcruise --config .dependency-cruiser.cjs core lib bgp
// routing health daemon containerlab bench test` checks the tree;
// test/unit/layers.test.ts runs the same check in the suite.
//
//   core/          shared types and pure logic (no I/O)
//   lib/           process execution
//   bgp/ routing/ health/   actuators and probes: gobgpd, the kernel, BFD
//   daemon/        inputs (config), planning, the gateway, CLI, HTTP, metrics
//   containerlab/  the lab runner and the demo
//   test/          tests and the test kit (test/kit) that benchmarks share
//   bench/         benchmarks
const LAYERS = [
  ["core", "^core/"],
  ["lib", "^lib/"],
  ["actuators", "^(bgp|routing|health)/"],
  ["daemon", "^daemon/"],
  ["lab", "^containerlab/"],
  ["test", "^test/"],
  ["bench", "^bench/"],
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
// Each layer may not import any layer above it.
LAYERS.forEach(([name, path], i) => {
  const above = LAYERS.slice(i + 1).map(([, p]) => p.slice(1, -1));
  if (above.length === 0) return;
  forbidden.push({
    name: `${name}-imports-upward`,
    severity: "error",
    comment: `${name} sits below ${LAYERS.slice(i + 1)
      .map(([n]) => n)
      .join(", ")}: move what it needs down, or the code up`,
    from: { path },
    to: { path: `^(${above.join("|")})/` },
  });
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
