// The one module through which egressd loads @kubernetes/client-node.
//
// The library ships its generated API as some 1,600 files and 21 MB of
// JavaScript, and KubeConfig imports all of it. Loaded file by file, that
// costs the daemon's main thread about 30 MB of heap (mostly the files'
// source text, which V8 keeps) and 70-80 MB of RSS, and 0.6 s at start.
// `npm run build` therefore replaces this module's compiled form with one
// bundle of the library and its dependencies, minified (whitespace and
// syntax only: names are kept, so stack traces stay readable), by
// scripts/bundle-kubernetes-client.sh. Without that step (a bare `tsc`),
// this file re-exports the library as it is, with the same behaviour.
//
// Everything in this repository imports the library from here, so that a
// process holds one copy of it: eslint refuses direct imports.
export { KubeConfig, ListWatch, Watch } from "@kubernetes/client-node";
export type { KubernetesObject } from "@kubernetes/client-node";
