#!/usr/bin/env bash
# Replaces the compiled inputs/k8s/client.js with one bundle of
# @kubernetes/client-node and its dependencies (part of `npm run build`,
# after tsc; inputs/k8s/client.ts says why). esbuild keeps only what the
# module exports needs, so KubeConfig's import of the whole generated API
# costs nothing. Names are kept (no identifier minification), and the
# libraries' licence comments are kept at the end of the file.
#
# CommonJS dependencies call require() for Node's own modules; an ES module
# has no `require`, so the bundle makes one (node:module createRequire).
set -euo pipefail
cd "$(dirname "$0")/.."
out=dist/inputs/k8s/client.js
npx --no-install esbuild inputs/k8s/client.ts \
  --bundle --platform=node --target=node20 --format=esm \
  --minify-whitespace --minify-syntax --keep-names --legal-comments=eof \
  --banner:js='import { createRequire as egressdCreateRequire } from "node:module"; const require = egressdCreateRequire(import.meta.url);' \
  --log-level=warning --outfile="$out.tmp"
mv "$out.tmp" "$out"
# tsc's source map describes the re-export, not the bundle
rm -f "$out.map"
