#!/usr/bin/env bash
# Installs egressd as it ships into PREFIX (an empty or absent directory):
# what `npm pack` puts in the package (package.json "files": the built
# dist/ without tests, benchmarks and build scripts; bin/; the CRDs), with
# the production dependencies the lockfile pins, and nothing else. The
# image's build stage runs exactly this (Containerfile), and a lab test
# runs the gateways' egressd from such a prefix (test/integration/packed-layout.test.ts).
#
#   bash scripts/install-packed.sh /opt/egressd     (after npm run build)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
prefix=${1:?usage: install-packed.sh PREFIX}
[ -x "$root/dist/native/egressd-icmp" ] || {
  echo "install-packed: build first (npm run build): dist/native/egressd-icmp is missing" >&2
  exit 1
}
if [ -e "$prefix" ] && [ -n "$(ls -A "$prefix")" ]; then
  echo "install-packed: $prefix is not empty" >&2
  exit 1
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
tarball=$(cd "$root" && npm pack --silent --pack-destination "$work")
mkdir -p "$prefix"
tar -xzf "$work/$tarball" -C "$prefix" --strip-components=1
# npm pack leaves the lockfile out; the production dependencies are the ones it pins.
cp "$root/package-lock.json" "$prefix/"
(cd "$prefix" && npm ci --omit=dev --ignore-scripts --no-audit --no-fund --loglevel=error)
rm "$prefix/package-lock.json"
