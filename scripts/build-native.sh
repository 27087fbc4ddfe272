#!/usr/bin/env bash
# Builds egressd's native helpers (part of `npm run build`):
#   native/icmp-prober.c -> dist/native/egressd-icmp  (the ICMP probes; docs/health.md)
#   native/bfd-offload.c -> dist/native/egressd-bfd   (BFD's periodic packets; docs/bfd.md)
#   native/spawner.c     -> dist/native/egressd-spawn (starts commands: egressd does not fork; docs/dataplane.md)
#   native/ct-events.c   -> dist/native/egressd-ctevents (conntrack events in batches; docs/audit.md)
#   native/event-pace.c  -> dist/native/egressd-event-pace.so (loaded into conntrackd: it reads
#                           its events in batches; docs/connection-sync.md)
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v gcc >/dev/null; then
  echo "build-native: gcc is required (Debian: apt-get install gcc libc6-dev)" >&2
  exit 1
fi
mkdir -p dist/native
build() {
  local out=$1 src=$2
  shift 2
  gcc -std=gnu11 -O2 -Wall -Wextra -Werror -D_FORTIFY_SOURCE=2 -fstack-protector-strong -Wl,-z,relro,-z,now \
    "$@" -o "dist/native/$out.tmp" "native/$src"
  mv "dist/native/$out.tmp" "dist/native/$out"
}
build egressd-icmp icmp-prober.c
build egressd-bfd bfd-offload.c
build egressd-spawn spawner.c
build egressd-ctevents ct-events.c
build egressd-event-pace.so event-pace.c -shared -fPIC
