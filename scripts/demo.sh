#!/usr/bin/env bash
# The demo: brings up the two-dc reference lab (FRR ToRs, core, firewall,
# gateway nodes, pod hosts, an external server), shows what it does, and tears
# it down again.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec node dist/containerlab/demo.js "$@"
