#!/usr/bin/env bash
# fscache mode, host check: the real nydusd fills cache files for the
# cachefiles emulator (tests/fscache/kernel_emulator.h) — every object read
# in random pieces from several threads, as the kernel would ask — and the
# host's own EROFS then mounts the filled files (bootstrap object, device= the
# blob objects) and must show exactly the source tree. Runs per compressor and
# per kernel profile (msg_id reuse and looser completion of 5.19).
set -uo pipefail
. "$(dirname "$0")/lib/common.sh"

need_nydus_image
need_root_and_erofs
FILL=$NYDUS_BIN_DIR/fscache-emu-fill
[ -x "$FILL" ] || die "fscache-emu-fill not found in $NYDUS_BIN_DIR (build first)"

# Not /tmp: file-backed EROFS cannot mount files on tmpfs.
WORK=$(mktemp -d /var/tmp/nydus-fscache-emu.XXXXXX)
LOG_DIR=$WORK
cleanup() {
  for m in "$WORK"/mnt-*; do [ -d "$m" ] && erofs_umount "$m" >/dev/null 2>&1; done
  umount "$WORK/srcfs" 2>/dev/null
  [ "${KEEP_WORK:-0}" = 1 ] && { echo "kept $WORK"; return; }
  rm -rf "$WORK"
}
trap cleanup EXIT

mkdir -p "$WORK/srcfs"
mount -t tmpfs -o size=1g,mode=0755 tmpfs "$WORK/srcfs" || die "cannot mount tmpfs for the source tree"
SRC=$WORK/srcfs/tree
step "make awkward tree" "$PY" "$LIB_DIR/make_tree.py" --small "$SRC" || die "make_tree.py failed"
CMP_OPTS=(--ignore-root-mtime --mtime-ns)

run_case() {  # run_case COMPRESSOR PROFILE
  local c=$1 p=$2 d=$WORK/$1-$2
  mkdir -p "$d/blobs" "$WORK/mnt-$c-$p"
  step "$c: nydus-image create" "$NYDUS_IMAGE" create --compressor "$c" --chunk-size 0x10000 \
    -B "$d/boot" -D "$d/blobs" "$SRC" || return
  step "$c/$p: nydusd fills cache files via the emulator" \
    sh -c "'$FILL' --nydusd '$NYDUS_BIN_DIR/nydusd' --bootstrap '$d/boot' --blob-dir '$d/blobs' \
           --store '$d/store' --profile '$p' --threads 4 > '$d/objects'" || return
  local boot devs=()
  boot=$(awk '$1 == "bootstrap" {print $2}' "$d/objects")
  while read -r kind path; do [ "$kind" = blob ] && devs+=(--device "$path"); done < "$d/objects"
  step "$c/$p: kernel EROFS mounts the filled cache files" erofs_mount "$boot" "$WORK/mnt-$c-$p" "${devs[@]}" || return
  step "$c/$p: mounted cache files == source" compare_trees "${CMP_OPTS[@]}" "$SRC" "$WORK/mnt-$c-$p"
  erofs_umount "$WORK/mnt-$c-$p" >/dev/null 2>&1
}

run_case zstd 6.12
run_case lz4_block 5.19
run_case none 6.8
summary
