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

# Every program and file that the build, the demo, the tests and the benchmarks
# use, with the Debian package that ships it: "package item...". An item that
# starts with / is a file; any other is a command looked up in PATH. This table
# is the install list (its first words) and, after the install, the check that
# each item is really there. test/unit/setup-needs.test.ts fails when the code
# calls a program that is not listed here.
NEEDS=(
  "iproute2 ip ss nstat"
  "nftables /usr/sbin/nft"
  "conntrack conntrack"
  "conntrackd conntrackd"
  "iptables iptables-nft iptables-nft-restore"
  "iputils-ping ping"
  "gcc gcc"
  "libc6-dev /usr/include/netinet/icmp6.h"
  "iperf3 iperf3"
  "procps kill pgrep pkill sysctl"
  "util-linux setpriv prlimit"
  "mount mount"
  "curl curl"
  "stress-ng stress-ng"
  "nfdump nfcapd nfdump"
  "frr vtysh /usr/lib/frr/zebra /usr/lib/frr/staticd /usr/lib/frr/bgpd /usr/lib/frr/bfdd"
  "bird2 /usr/sbin/bird /usr/sbin/birdc"
  "gobgpd /usr/bin/gobgpd"
  "protobuf-compiler protoc"
  "libprotobuf-dev /usr/include/google/protobuf/any.proto /usr/include/google/protobuf/empty.proto /usr/include/google/protobuf/timestamp.proto"
  "golang-github-osrg-gobgp-dev /usr/share/gocode/src/github.com/osrg/gobgp/api/gobgp.proto"
  "prometheus /usr/bin/prometheus /usr/bin/promtool"
  "exabgp /usr/bin/python3 /usr/lib/python3/dist-packages/exabgp/application/healthcheck.py"
  "kubernetes-client kubectl"
)

installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }
present() { case $1 in /*) [ -e "$1" ] ;; *) command -v "$1" >/dev/null 2>&1 ;; esac; }

# A package is wanted when it is not installed and something it ships is not
# there either: a machine may have the same program from elsewhere (kubectl
# from Kubernetes' own repository conflicts with Debian's kubernetes-client).
all_present() { for item in "$@"; do present "$item" || return 1; done; }
missing=()
for row in "${NEEDS[@]}"; do
  read -r pkg items <<<"$row"
  # shellcheck disable=SC2086 # items is a list of words
  installed "$pkg" || all_present $items || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  say "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
  # Installing frr/gobgpd/prometheus may start their host-wide services;
  # egressd runs its own instances inside network namespaces and needs none.
  if [ -d /run/systemd/system ]; then
    systemctl disable --now gobgpd.service frr.service prometheus.service bird.service exabgp.service conntrackd.service >/dev/null 2>&1 || true
  fi
else
  say "Debian packages present"
fi

# Installed is not the same as there: a package can be half-removed, or a file
# can live in a package that nobody installed (a "recommends").
absent=0
for row in "${NEEDS[@]}"; do
  read -r pkg items <<<"$row"
  for item in $items; do
    if ! present "$item"; then
      echo "setup: $item is missing; it comes from the Debian package $pkg (apt-get install --reinstall $pkg)" >&2
      absent=1
    fi
  done
done
[ "$absent" = 0 ] || exit 1

stamp=node_modules/.egressd-lock.sha256
want=$(sha256sum package-lock.json | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  say "installing npm dependencies (npm ci)"
  npm ci --no-audit --no-fund
  echo "$want" >"$stamp"
else
  say "npm dependencies up to date"
fi

say "building (generated code, TypeScript, the native helper)"
npm run --silent build
