#!/usr/bin/env bash
# The test suite: installs what it needs, lints, then runs unit tests and the
# integration tests (network namespaces, FRR, gobgpd, nftables) with ava,
# and, on a full run (no arguments), a 60 s soak at the default timers
# (bench/soak.ts: any false alarm fails the run).
# Namespaces made by this run carry the prefix $EGRESSD_TEST_RUN; whatever a
# crashed test leaves behind is swept when the run ends.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

export EGRESSD_TEST_RUN="et$(od -An -N2 -tx2 /dev/urandom | tr -d ' ')"
sweep() {
  local left
  left=$(ip netns list | awk '{print $1}' | grep "^${EGRESSD_TEST_RUN}" || true)
  for ns in $left; do
    echo "test: removing leftover namespace $ns" >&2
    pids=$(ip netns pids "$ns" 2>/dev/null || true)
    [ -n "$pids" ] && kill -9 $pids 2>/dev/null || true
    ip netns delete "$ns" 2>/dev/null || true
  done
  rm -rf /var/run/frr/"${EGRESSD_TEST_RUN}"* /run/egressd-lab/"${EGRESSD_TEST_RUN}"* 2>/dev/null || true
}
trap sweep EXIT

printf '\033[1m==> %s\033[0m\n' "lint (eslint, prettier)" >&2
npx eslint .
npx prettier --check . >/dev/null || { npx prettier --check .; exit 1; }

printf '\033[1m==> %s\033[0m\n' "tests (run $EGRESSD_TEST_RUN)" >&2
npx ava "$@"
if [ $# -eq 0 ]; then
  printf '\033[1m==> %s\033[0m\n' "soak: 60 s at the default timers (node dist/bench/soak.js)" >&2
  node dist/bench/soak.js --seconds 60 --interval 100
fi
