#!/bin/sh
# Generates the TypeScript gRPC client for gobgpd's API into bgp/generated/.
#
# Inputs are GoBGP's own .proto files as Debian ships them
# (golang-github-osrg-gobgp-dev, same release as the gobgpd package) and the
# google.protobuf well-known types (libprotobuf-dev; protoc itself is in
# protobuf-compiler, which only recommends them).
# They are copied next to the output (bgp/generated/proto/) so the generated
# code always records which sources it came from. Nothing here is committed:
# the build runs this script. Idempotent: every run starts from an empty
# bgp/generated/.
#
# Environment overrides (for machines that keep these files elsewhere):
#   GOBGP_PROTO_DIR   directory holding gobgp.proto, attribute.proto, capability.proto
#   PROTOBUF_INCLUDE  directory holding google/protobuf/*.proto
set -eu

root=$(cd "$(dirname "$0")/.." && pwd)
out="$root/bgp/generated"
gobgp_dir=${GOBGP_PROTO_DIR:-/usr/share/gocode/src/github.com/osrg/gobgp/api}
pb_include=${PROTOBUF_INCLUDE:-/usr/include}
plugin="$root/node_modules/.bin/protoc-gen-ts_proto"

die() {
  echo "gen-proto: $*" >&2
  exit 1
}

command -v protoc >/dev/null 2>&1 ||
  die "protoc not found in PATH (Debian: apt-get install protobuf-compiler)"
[ -x "$plugin" ] ||
  die "$plugin not found or not executable (run npm ci to install ts-proto)"
for f in gobgp.proto attribute.proto capability.proto; do
  [ -r "$gobgp_dir/$f" ] ||
    die "$gobgp_dir/$f not found (Debian: apt-get install golang-github-osrg-gobgp-dev, or set GOBGP_PROTO_DIR)"
done
for f in any.proto empty.proto timestamp.proto; do
  [ -r "$pb_include/google/protobuf/$f" ] ||
    die "$pb_include/google/protobuf/$f not found (Debian: apt-get install libprotobuf-dev, or set PROTOBUF_INCLUDE)"
done

# Build in a scratch directory and swap it in at the end, so a failed run
# never leaves a half-written bgp/generated/ behind.
tmp=$(mktemp -d "$root/bgp/.generated.XXXXXX")
trap 'rm -rf "$tmp"' EXIT INT TERM

mkdir -p "$tmp/proto/google/protobuf"
cp "$gobgp_dir/gobgp.proto" "$gobgp_dir/attribute.proto" "$gobgp_dir/capability.proto" "$tmp/proto/"
cp "$pb_include/google/protobuf/any.proto" "$pb_include/google/protobuf/empty.proto" \
  "$pb_include/google/protobuf/timestamp.proto" "$tmp/proto/google/protobuf/"

# ts-proto options:
#   outputServices=grpc-js   grpc-js client classes (GobgpApiClient)
#   esModuleInterop, importSuffix=.js  ESM under "module": "NodeNext"
#   forceLong=bigint         64-bit fields (timers, counters) as bigint
#   env=node                 Buffer/Node typings
#   useOptionals=messages    sub-message fields are optional (build requests with plain objects)
#   useDate=false            google.protobuf.Timestamp stays a message (seconds: bigint, nanos)
protoc \
  --plugin=protoc-gen-ts_proto="$plugin" \
  --proto_path="$tmp/proto" \
  --ts_proto_out="$tmp" \
  --ts_proto_opt=outputServices=grpc-js \
  --ts_proto_opt=esModuleInterop=true \
  --ts_proto_opt=importSuffix=.js \
  --ts_proto_opt=forceLong=bigint \
  --ts_proto_opt=env=node \
  --ts_proto_opt=useOptionals=messages \
  --ts_proto_opt=useDate=false \
  "$tmp/proto/gobgp.proto" "$tmp/proto/attribute.proto" "$tmp/proto/capability.proto" ||
  die "protoc failed (see the messages above)"

[ -f "$tmp/gobgp.ts" ] || die "protoc ran but produced no gobgp.ts in $tmp"

rm -rf "$out"
mv "$tmp" "$out"
trap - EXIT INT TERM
echo "gen-proto: wrote $(find "$out" -name '*.ts' | wc -l) files to bgp/generated/"
