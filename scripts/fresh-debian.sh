#!/usr/bin/env bash
# Runs a command in a clean clone of this repository's HEAD inside a brand-new
# minimal Debian 12 root file system, as a new user's machine would be: nothing
# installed beyond Debian's "minbase" variant (the Essential and apt packages)
# and Node.js copied in from this machine (on the project's machines Node.js
# is not a Debian package either). What the command needs, it must install
# itself; a step that only works because a package happens to be on this
# machine fails here. CI runs the test command this way (.ci/run).
#
#   bash scripts/fresh-debian.sh [--keep] [--] COMMAND...
#   bash scripts/fresh-debian.sh -- bash scripts/test.sh
#
# The pristine root is made once with debootstrap from the mirror this
# machine's apt uses and cached as a tarball in $EGRESSD_FRESH_CACHE
# (default /var/cache/egressd-fresh) for a week; every run unpacks a new copy
# and removes it afterwards (--keep leaves it and prints where). Only the
# committed HEAD is cloned, never the work tree. Needs root. Exit status: the
# command's, or 2 when the root cannot be made.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
keep=0
while [ $# -gt 0 ]; do
  case $1 in
    --keep) keep=1; shift ;;
    --) shift; break ;;
    -*) echo "fresh-debian: unknown option $1" >&2; exit 2 ;;
    *) break ;;
  esac
done
[ $# -gt 0 ] || { echo "usage: bash scripts/fresh-debian.sh [--keep] [--] COMMAND..." >&2; exit 2; }
[ "$(id -u)" = 0 ] || { echo "fresh-debian: run as root (debootstrap, chroot, mounts)" >&2; exit 2; }

say() { printf '\033[1m==> fresh-debian: %s\033[0m\n' "$*" >&2; }
t0=$(date +%s)
elapsed() { echo "$(($(date +%s) - t0)) s"; }

cache=${EGRESSD_FRESH_CACHE:-/var/cache/egressd-fresh}
tarball=$cache/bookworm-minbase.tar
mkdir -p "$cache"

# The mirror this machine's apt already uses: the only Debian archive it reaches.
mirror() {
  local m
  m=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/*.sources 2>/dev/null || true)
  [ -n "$m" ] || m=$(awk '$1 == "deb" {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
  echo "$m"
}

if [ ! -s "$tarball" ] || [ -n "$(find "$tarball" -mtime +7 2>/dev/null)" ]; then
  if ! command -v debootstrap >/dev/null; then
    say "installing debootstrap on this machine"
    DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends debootstrap >/dev/null
  fi
  url=$(mirror)
  [ -n "$url" ] || { echo "fresh-debian: no Debian mirror in this machine's apt sources" >&2; exit 2; }
  build=$(mktemp -d /tmp/egressd-debootstrap.XXXXXX)
  say "debootstrap --variant=minbase bookworm from this machine's apt mirror (log: $cache/debootstrap.log)"
  if ! debootstrap --variant=minbase bookworm "$build" "$url" >"$cache/debootstrap.log" 2>&1; then
    tail -20 "$cache/debootstrap.log" >&2
    rm -rf --one-file-system "$build"
    exit 2
  fi
  # The same sources as this machine (deb822 or one-line form), nothing else.
  rm -f "$build/etc/apt/sources.list"
  cp /etc/apt/sources.list.d/*.sources "$build/etc/apt/sources.list.d/" 2>/dev/null ||
    cp /etc/apt/sources.list "$build/etc/apt/sources.list"
  tar -C "$build" -cf "$tarball.part" . && mv "$tarball.part" "$tarball"
  rm -rf --one-file-system "$build"
  say "pristine root cached in $tarball ($(elapsed))"
fi

root=$(mktemp -d /tmp/egressd-fresh.XXXXXX)
cleanup() {
  # Processes the command left behind in the root (a daemon, a lab node) go first.
  local pids
  pids=$(for p in /proc/[0-9]*; do
    [ "$(readlink "$p/root" 2>/dev/null)" = "$root" ] && echo "${p#/proc/}"
  done || true)
  [ -z "$pids" ] || kill -9 $pids 2>/dev/null || true
  for m in run dev sys proc; do umount -l "$root/$m" 2>/dev/null || true; done
  umount -l "$root" 2>/dev/null || true
  if [ "$keep" = 1 ]; then
    echo "fresh-debian: kept the root at $root" >&2
  else
    rm -rf --one-file-system "$root"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# `ip netns` needs the root to be a mount point (it bind-mounts namespaces
# under /run/netns), and FRR's daemons drop to their own user, so the root
# directory must be world-readable, as / is on a machine.
mount --bind "$root" "$root"
tar -C "$root" -xf "$tarball"
chmod 755 "$root"
cp -L /etc/resolv.conf "$root/etc/resolv.conf" 2>/dev/null || true
# What every machine of the project starts with besides Debian: the trust
# store (the registries are reached through it), npm's settings, Node.js.
# The local CAs go where update-ca-certificates looks, so that a package that
# installs ca-certificates later rebuilds the bundle with them, not without.
mkdir -p "$root/etc/ssl/certs" "$root/usr/local/share/ca-certificates"
cp -L /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
if [ -d /usr/local/share/ca-certificates ]; then
  cp -rL /usr/local/share/ca-certificates/. "$root/usr/local/share/ca-certificates/"
fi
for f in /etc/npmrc /usr/etc/npmrc; do
  if [ -f "$f" ]; then mkdir -p "$root$(dirname "$f")" && cp "$f" "$root$f"; fi
done
node_bin=$(readlink -f "$(command -v node)")
npm_dir=$(dirname "$(dirname "$(readlink -f "$(command -v npm)")")")
cp "$node_bin" "$root/usr/bin/node"
mkdir -p "$root/usr/lib/node_modules"
cp -a "$npm_dir" "$root/usr/lib/node_modules/npm"
ln -sf ../lib/node_modules/npm/bin/npm-cli.js "$root/usr/bin/npm"
ln -sf ../lib/node_modules/npm/bin/npx-cli.js "$root/usr/bin/npx"

git clone -q "$here" "$root/src/egressd"
say "clone of $(git -C "$here" rev-parse --short HEAD) ready in $root ($(elapsed))"

mount -t proc proc "$root/proc"
mount --rbind /sys "$root/sys"
mount --rbind /dev "$root/dev"
mount -t tmpfs -o mode=755 tmpfs "$root/run"

say "running: $*"
set +e
# A private mount namespace (slave, so nothing mounted inside leaks out) and a
# clean environment: only what a root login on a new machine would have, plus
# the CA bundle that this workplace's registries need.
unshare --mount --propagation slave chroot "$root" /usr/bin/env -i \
  HOME=/root PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 TERM=dumb \
  ${CI:+CI=$CI} NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
  bash -c 'cd /src/egressd && exec "$@"' fresh-debian "$@" </dev/null
rc=$?
set -e
say "exit $rc after $(elapsed)"
exit $rc
