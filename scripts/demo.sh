#!/usr/bin/env bash
# The main demo: set up + build, make a small sample tree, turn it into a RAFS v6 (Nydus)
# image with nydus-image, check and describe it, and - as root - mount it with the
# kernel's EROFS (bootstrap + the blob cache's .blob.data as extra device) and list it.
#   sudo bash scripts/demo.sh          (SKIP_SETUP=1 to skip deps + build)
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD_DIR=${BUILD_DIR:-$ROOT/build}
export BUILD_DIR
[ "${SKIP_SETUP:-0}" = 1 ] || bash "$ROOT/scripts/setup.sh"

NI=$BUILD_DIR/bin/nydus-image
LIB=$ROOT/tests/integration/lib
DEMO=$BUILD_DIR/demo
SRC=$DEMO/src
OUT=$DEMO/out
MNT=$DEMO/mnt

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
run() { printf '$ %s\n' "$*"; "$@"; }

cleanup() {
  if grep -qs " $MNT " /proc/self/mounts; then
    python3 "$LIB/erofs_mount.py" umount "$MNT" || umount -l "$MNT" || true
  fi
}
trap cleanup EXIT
cleanup
rm -rf "$DEMO"
mkdir -p "$SRC" "$OUT/blobs" "$OUT/cache" "$MNT"

say "sample source tree: $SRC"
mkdir -p "$SRC/etc" "$SRC/bin" "$SRC/data/empty"
printf 'hello from a nydus image\n' >"$SRC/hello.txt"
printf 'name=demo\nversion=1\n' >"$SRC/etc/app.conf"
printf '#!/bin/sh\necho hi\n' >"$SRC/bin/hi"
chmod 0755 "$SRC/bin/hi"
ln -s ../hello.txt "$SRC/etc/hello-link"
ln "$SRC/etc/app.conf" "$SRC/etc/app.conf.hardlink"
# a big-ish file: 6 MiB = several 1 MiB chunks, half random half zeros; plus a copy (dedup)
head -c $((3 << 20)) /dev/urandom >"$SRC/data/big.bin"
head -c $((3 << 20)) /dev/zero >>"$SRC/data/big.bin"
cp "$SRC/data/big.bin" "$SRC/data/big-copy.bin"
seq 1 200000 >"$SRC/data/numbers.txt"
setfattr -n user.demo -v "an xattr" "$SRC/hello.txt" 2>/dev/null ||
  python3 -c 'import os,sys; os.setxattr(sys.argv[1], "user.demo", b"an xattr")' "$SRC/hello.txt" ||
  echo "(this filesystem has no user xattrs)"
find "$SRC" -printf "%M %4n %u:%g %8s  %P %l\n" | sort -k6
du -sh --apparent-size "$SRC"

say "build the image"
run "$NI" create --fs-version 6 --compressor zstd --digester blake3 --chunk-size 0x100000 \
  -B "$OUT/image.boot" -D "$OUT/blobs" --blob-cache-dir "$OUT/cache" -J "$OUT/create.json" "$SRC"
run cat "$OUT/create.json"; echo
run ls -la "$OUT" "$OUT/blobs" "$OUT/cache"
mapfile -t BLOBS < <(python3 -c 'import json,sys; [print(b if isinstance(b,str) else b["blob_id"]) for b in json.load(open(sys.argv[1]))["blobs"]]' "$OUT/create.json")
echo "blobs: ${BLOBS[*]:-none}"

say "check it"
run "$NI" check -B "$OUT/image.boot" --blob-dir "$OUT/blobs"

say "what it holds"
# inspect/stat may not be implemented yet in this build: show, don't stop the demo
run "$NI" stat -B "$OUT/image.boot" </dev/null || echo "(stat failed, exit $?)"
run "$NI" inspect -B "$OUT/image.boot" --request stats </dev/null || echo "(inspect failed, exit $?)"
run "$NI" inspect -B "$OUT/image.boot" --request blobs </dev/null || echo "(inspect failed, exit $?)"
if command -v dump.erofs >/dev/null; then
  # erofs-utils' own dumper reads the bootstrap as an EROFS image (blobs as extra devices)
  DUMPDEV=()
  for b in "${BLOBS[@]}"; do DUMPDEV+=("--device=$OUT/cache/$b.blob.data"); done
  run dump.erofs -s "${DUMPDEV[@]}" "$OUT/image.boot" || echo "(dump.erofs failed)"
  run dump.erofs --path=/data/big.bin -e "${DUMPDEV[@]}" "$OUT/image.boot" || echo "(dump.erofs failed)"
fi

if [ "$(id -u)" -ne 0 ]; then
  say "not root: skipping the kernel mount (run with sudo to see it)"
  exit 0
fi
if ! grep -qw erofs /proc/filesystems; then
  modprobe erofs 2>/dev/null || true
fi
if ! grep -qw erofs /proc/filesystems; then
  say "kernel has no EROFS: skipping the mount"
  exit 0
fi

say "mount with the kernel's EROFS"
DEVARGS=()
for b in "${BLOBS[@]}"; do DEVARGS+=(--device "$OUT/cache/$b.blob.data"); done
run python3 "$LIB/erofs_mount.py" mount "$OUT/image.boot" "$MNT" "${DEVARGS[@]}"
grep " $MNT " /proc/self/mounts
run ls -laR "$MNT"
run cat "$MNT/hello.txt"
run getfattr -d "$MNT/hello.txt" 2>/dev/null || true
run cmp "$SRC/data/big.bin" "$MNT/data/big.bin" && echo "big.bin identical"
say "compare mounted tree with the source"
run python3 "$LIB/compare_trees.py" --ignore-root-mtime --mtime-ns "$SRC" "$MNT"
say "unmount"
run python3 "$LIB/erofs_mount.py" umount "$MNT"
say "done: image in $OUT"
