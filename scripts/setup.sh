#!/usr/bin/env bash
# Installs what egressd needs, idempotently: Debian packages, npm dependencies,
# generated code and the TypeScript build. Run as root on Debian 12.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

if [ "$(id -u)" != 0 ]; then
  echo "setup: run as root (installs Debian packages, creates network namespaces)" >&2
  exit 1
fi

# Node.js 20+ is the machines' runtime (Debian 12's own nodejs is 18, too old).
if ! command -v node >/dev/null || [ "$(node -p 'process.versions.node.split(".")[0]')" -lt 20 ]; then
  echo "setup: Node.js >= 20 with npm is required (found: $(node --version 2>/dev/null || echo none))" >&2
  exit 1
fi

PACKAGES=(
  iproute2 nftables conntrack iptables iputils-ping iperf3 procps util-linux tcpdump
  frr gobgpd
  protobuf-compiler golang-github-osrg-gobgp-dev
  prometheus
)
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  say "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
  # Installing frr/gobgpd may start their host-wide services; egressd runs its
  # own instances inside network namespaces and needs none on the host.
  if [ -d /run/systemd/system ]; then
    systemctl disable --now gobgpd.service frr.service prometheus.service >/dev/null 2>&1 || true
  fi
else
  say "Debian packages present"
fi

stamp=node_modules/.egressd-lock.sha256
want=$(sha256sum package-lock.json | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  say "installing npm dependencies (npm ci)"
  npm ci --no-audit --no-fund
  echo "$want" >"$stamp"
else
  say "npm dependencies up to date"
fi

say "building (generated code + TypeScript)"
npm run --silent build
