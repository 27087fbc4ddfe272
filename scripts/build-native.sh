#!/usr/bin/env bash
# Builds egressd's native helper: native/icmp-prober.c -> dist/native/egressd-icmp
# (the ICMP probes; docs/health.md). Part of `npm run build`.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v gcc >/dev/null; then
  echo "build-native: gcc is required (Debian: apt-get install gcc libc6-dev)" >&2
  exit 1
fi
mkdir -p dist/native
gcc -std=gnu11 -O2 -Wall -Wextra -Werror -D_FORTIFY_SOURCE=2 -fstack-protector-strong -Wl,-z,relro,-z,now \
  -o dist/native/egressd-icmp.tmp native/icmp-prober.c
mv dist/native/egressd-icmp.tmp dist/native/egressd-icmp
