#!/usr/bin/env bash
# The main job, shown: a container started lazily from a registry.
#   1. set up and build (SKIP_SETUP=1 skips it);
#   2. an OCI image of real files (busybox + Debian's python3 with its standard
#      library, ~60 MB) pushed to a docker-registry on loopback;
#   3. nydusify converts it to a Nydus image in the same registry;
#   4. our containerd-nydus-grpc under a private containerd runs a python3
#      container from it: only the bootstrap is pulled, nydusd fetches the
#      chunks the container reads, and the demo prints how many bytes that was.
# Where containers cannot run (not root, no containerd, no FUSE) it says why
# and mounts the image with nydusd alone, lazily, from a local blob.
#   sudo bash scripts/demo.sh
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD_DIR=${BUILD_DIR:-$ROOT/build}
export BUILD_DIR
[ "${SKIP_SETUP:-0}" = 1 ] || bash "$ROOT/scripts/setup.sh"

BIN=$BUILD_DIR/bin
DEMO=$BUILD_DIR/demo
PY=/usr/bin/python3
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
run() { printf '$ %s\n' "$*"; "$@"; }
mib() { awk -v b="$1" 'BEGIN {printf "%.1f MiB", b / 1048576}'; }
WORKLOAD='import json, email.parser, http.client, argparse; print("python", __import__("sys").version.split()[0], "imported json, email, http.client, argparse")'

CT_WORK=$DEMO/containers CT_BIN=$BIN
# shellcheck source=../tests/integration/lib/containerd.sh
source "$ROOT/tests/integration/lib/containerd.sh"
REGISTRY_PID='' FUSE_MNT=$DEMO/mnt NYDUSD_PID=''
cleanup() {
  # Under set -e a failing last command here would become the script's exit
  # status: a nydusd that is sent SIGTERM unmounts itself, and may do so between
  # the check and our umount (CI saw exit 32, "not mounted").
  ct_stop
  [ -z "$NYDUSD_PID" ] || kill "$NYDUSD_PID" 2>/dev/null || true
  ! grep -qs " $FUSE_MNT " /proc/self/mounts || umount -l "$FUSE_MNT" 2>/dev/null || true
  [ -z "$REGISTRY_PID" ] || kill "$REGISTRY_PID" 2>/dev/null || true
  return 0
}
trap cleanup EXIT
rm -rf "$DEMO"
mkdir -p "$DEMO"
cd "$DEMO"

say "an image of real files: busybox + python3 and its standard library"
ROOTFS=$DEMO/rootfs
mkdir -p "$ROOTFS/bin" "$ROOTFS/usr/bin" "$ROOTFS/usr/lib" "$ROOTFS/tmp"
cp "$(readlink -f /bin/busybox)" "$ROOTFS/bin/busybox"
ln -s busybox "$ROOTFS/bin/sh"
cp "$(readlink -f $PY)" "$ROOTFS/usr/bin/python3"
tar -C /usr/lib --exclude='test' --exclude='idlelib' -cf - python3.11 | tar -C "$ROOTFS/usr/lib" -xf -
# python3 and its extension modules need these shared libraries.
for lib in $( (ldd $PY; find /usr/lib/python3.11/lib-dynload -name '*.so' -exec ldd {} \;) 2>/dev/null |
  awk '/=> \// {print $3} /^\t\/lib/ {print $1}' | sort -u); do
  mkdir -p "$ROOTFS$(dirname "$lib")"
  cp -L "$lib" "$ROOTFS$lib"
done
mkdir -p "$ROOTFS/etc"
echo "root:x:0:0:root:/root:/bin/sh" >"$ROOTFS/etc/passwd"
IMAGE_BYTES=$(du -sb "$ROOTFS" | cut -f1)
echo "$(find "$ROOTFS" | wc -l) entries, $(mib "$IMAGE_BYTES") unpacked"

WHY=$(ct_missing)
[ -n "${DEMO_FALLBACK:-}" ] && WHY="DEMO_FALLBACK is set"
for t in docker-registry umoci skopeo; do
  [ -z "$WHY" ] && ! command -v $t >/dev/null && WHY="$t is not installed (scripts/setup.sh installs it)"
done

if [ -z "$WHY" ]; then
  say "the OCI image, pushed to a docker-registry on loopback"
  run umoci init --layout oci
  run umoci new --image oci:app
  umoci unpack --image oci:app bundle >/dev/null
  rm -rf bundle/rootfs && mv "$ROOTFS" bundle/rootfs
  run umoci repack --image oci:app bundle
  # shellcheck source=../tests/integration/lib/common.sh
  PY=$PY source "$ROOT/tests/integration/lib/common.sh"
  start_registry "$DEMO/registry" >/dev/null
  R=$REGISTRY_HOST
  run skopeo copy -q --dest-tls-verify=false oci:oci:app "docker://$R/demo/python:oci"

  say "nydusify: OCI image -> Nydus image (same registry)"
  run "$BIN/nydusify" convert --source "$R/demo/python:oci" --target "$R/demo/python:nydus" \
    --source-insecure --target-insecure --work-dir "$DEMO/convert" >"$DEMO/nydusify.log" 2>&1
  BLOB_BYTES=$(curl -sf -H 'Accept: application/vnd.oci.image.manifest.v1+json' \
    "http://$R/v2/demo/python/manifests/nydus" | $PY -c '
import json, sys
m = json.load(sys.stdin)
print(sum(l["size"] for l in m["layers"] if "containerd.io/snapshot/nydus-blob" in l.get("annotations", {})))')
  echo "Nydus data blob(s) in the registry: $(mib "$BLOB_BYTES")"

  say "containerd + our snapshotter (containerd-nydus-grpc), private root $CT_WORK"
  ct_start --log-level info
  run ctr --address "$CT_CD_SOCK" plugins ls | grep -E 'snapshotter.*nydus' || true

  say "pull: only the bootstrap layer is downloaded (the data blob stays in the registry)"
  T0=$(date +%s.%N)
  run ctr-remote --address "$CT_CD_SOCK" image rpull --plain-http --snapshotter nydus "$R/demo/python:nydus"
  say "run: python3 in a container whose rootfs is served lazily by nydusd"
  run ctr --address "$CT_CD_SOCK" run -d --snapshotter nydus "$R/demo/python:nydus" demo \
    /bin/sh -c "/usr/bin/python3 -c '$WORKLOAD' >/tmp/out 2>&1; exec /bin/busybox sleep 600"
  for _ in $(seq 300); do
    OUT=$(ct_ctr task exec --exec-id cat demo /bin/busybox cat /tmp/out 2>/dev/null) && [ -n "$OUT" ] && break
    sleep 0.1
  done
  T1=$(date +%s.%N)
  echo "container printed: ${OUT:-nothing}"
  echo "pull + start + imports: $(awk -v a="$T0" -v b="$T1" 'BEGIN {printf "%.2f s", b - a}')"
  SOCK=$(for p in $(ct_pids nydusd "$CT_ROOT/"); do tr '\0' '\n' <"/proc/$p/cmdline" | grep -A1 -x -- --apisock | tail -1; done | head -1)
  FETCHED=$(curl -sf --unix-socket "$SOCK" http://unix/api/v1/metrics/blobcache |
    $PY -c 'import json, sys; print(sum(b["backend_bytes"] for b in json.load(sys.stdin).get("blobs", [])))')
  READ=$(curl -sf --unix-socket "$SOCK" http://unix/api/v1/metrics | $PY -c 'import json, sys; print(json.load(sys.stdin)["data_read"])')
  say "fetched from the registry by nydusd: $(mib "$FETCHED") of $(mib "$BLOB_BYTES") ($(awk -v a="$FETCHED" -v b="$BLOB_BYTES" 'BEGIN {printf "%.1f%%", 100 * a / b}'))"
  echo "(the container read $(mib "$READ") of files, $(mib "$IMAGE_BYTES") unpacked; nydusd fetches whole chunks, compressed)"
  [ -n "${OUT:-}" ] || { echo "the container printed nothing; logs in $CT_LOGS"; exit 1; }
  exit 0
fi

say "containers cannot run here: $WHY"
say "instead: the same image mounted lazily by nydusd alone (FUSE), from a local blob"
mkdir -p "$DEMO/image/blobs" "$DEMO/cache" "$FUSE_MNT"
run "$BIN/nydus-image" create --fs-version 6 --compressor zstd -B "$DEMO/image/image.boot" \
  -D "$DEMO/image/blobs" "$ROOTFS" >/dev/null
BLOB_BYTES=$(du -sb "$DEMO/image/blobs" | cut -f1)
if [ ! -e /dev/fuse ]; then
  run "$BIN/nydus-image" check -B "$DEMO/image/image.boot" --blob-dir "$DEMO/image/blobs"
  say "no /dev/fuse either: built and checked the image, nothing to mount"
  exit 0
fi
cat >"$DEMO/nydusd.json" <<JSON
{"device": {"backend": {"type": "localfs", "config": {"dir": "$DEMO/image/blobs"}},
            "cache": {"type": "blobcache", "config": {"work_dir": "$DEMO/cache"}}},
 "mode": "direct", "fs_prefetch": {"enable": false}}
JSON
"$BIN/nydusd" --config "$DEMO/nydusd.json" --bootstrap "$DEMO/image/image.boot" --mountpoint "$FUSE_MNT" \
  --apisock "$DEMO/api.sock" --log-level warn &
NYDUSD_PID=$!
for _ in $(seq 100); do grep -qs " $FUSE_MNT " /proc/self/mounts && break; sleep 0.1; done
run ls "$FUSE_MNT" "$FUSE_MNT/usr/lib/python3.11" | head -20
run head -c 300 "$FUSE_MNT/usr/lib/python3.11/json/__init__.py"; echo
FETCHED=$(curl -sf --unix-socket "$DEMO/api.sock" http://unix/api/v1/metrics/blobcache |
  $PY -c 'import json, sys; print(sum(b["backend_bytes"] for b in json.load(sys.stdin).get("blobs", [])))')
say "read from the blob so far: $(mib "$FETCHED") of $(mib "$BLOB_BYTES")"
[ "$FETCHED" -gt 0 ] && [ "$FETCHED" -lt "$BLOB_BYTES" ]
