#!/usr/bin/env bash
# shellcheck disable=SC2016  # single-quoted bash -c scripts get their args positionally
# Self-test of the integration-test helpers in tests/integration/lib (no nydus-image needed):
#  1. compare_trees.py --self-test (each kind of difference is detected, ignores work)
#  2. make_tree.py --small + `cp -a` copy compares equal
#  3. (root + EROFS only) the awkward tree through mkfs.erofs (erofs-utils) + kernel mount via
#     erofs_mount.py compares equal to the source. Known mkfs.erofs 1.5 limitation: it can't
#     take 255-byte names (fails with ENOENT), so those are removed from its copy first.
set -uo pipefail
# shellcheck source-path=SCRIPTDIR source=lib/common.sh
source "$(dirname "$0")/lib/common.sh"

WORK=$(mktemp -d "${NYDUS_TEST_TMP:-/var/tmp}/nydus-helpers.XXXXXX") || die "mktemp"
LOG_DIR=$WORK
cleanup() {
  umount_below "$WORK"
  [ "${KEEP_WORK:-0}" = 1 ] && { echo "kept $WORK"; return; }
  chmod -R u+rwx "$WORK" 2>/dev/null
  rm -rf "$WORK"
}
trap cleanup EXIT

step "compare_trees.py --self-test" compare_trees --self-test

# Root: build the tree on a tmpfs (ext4 can't hold 50 x 1000-byte xattrs on one inode).
mkdir -p "$WORK/src"
if [ "$(id -u)" -eq 0 ]; then
  mount -t tmpfs -o size=1g,mode=0755 tmpfs "$WORK/src" || die "mount tmpfs"
fi
step "make_tree.py --small" "$PY" "$LIB_DIR/make_tree.py" --small "$WORK/src/tree"
step "cp -a copy compares equal" bash -c '
  cp -a -- "$1/src/tree" "$1/src/copy" && "$2" "$3/compare_trees.py" --mtime-ns "$1/src/tree" "$1/src/copy"
' _ "$WORK" "$PY" "$LIB_DIR"
# a one-attribute change in the big tree must be caught
step "compare_trees detects a chmod in the awkward tree" bash -c '
  chmod 0600 "$1/src/copy/sizes/rand-1" && ! "$2" "$3/compare_trees.py" "$1/src/tree" "$1/src/copy"
' _ "$WORK" "$PY" "$LIB_DIR"

if [ "$(id -u)" -ne 0 ] || ! grep -qw erofs /proc/filesystems; then
  echo "NOTE: not root or no EROFS: skipping the mkfs.erofs + kernel mount part"
elif ! command -v mkfs.erofs >/dev/null; then
  echo "NOTE: mkfs.erofs not installed (erofs-utils): skipping the kernel mount part"
else
  # mkfs.erofs 1.5 can't handle 255-byte names: give it a copy without them.
  step "prepare mkfs.erofs input" bash -c '
    cp -a -- "$1/src/tree" "$1/src/mkfs-in" && "$2" -c "
import os, shutil, sys
for top, dirs, files in os.walk(sys.argv[1].encode()):
    for n in dirs + files:
        if len(n) >= 255:
            p = os.path.join(top, n)
            print(\"removing\", p)
            shutil.rmtree(p) if n in dirs else os.unlink(p)
" "$1/src/mkfs-in"
  ' _ "$WORK" "$PY"
  mkdir -p "$WORK/mnt"
  # The image must be on a disk filesystem (tmpfs has no read_folio: file-backed mount fails).
  if step "mkfs.erofs" mkfs.erofs --quiet -x 1 "$WORK/tree.erofs" "$WORK/src/mkfs-in" &&
     step "erofs_mount.py mount" erofs_mount "$WORK/tree.erofs" "$WORK/mnt"; then
    step "mkfs.erofs image == source (kernel mount)" compare_trees --mtime-ns "$WORK/src/mkfs-in" "$WORK/mnt"
    step "erofs_mount.py umount" erofs_umount "$WORK/mnt"
  fi
  step "erofs_mount.py reports a bad image" bash -c '
    out=$("$1" "$2/erofs_mount.py" mount /etc/hostname "$3" 2>&1); rc=$?
    echo "$out"; [ "$rc" -ne 0 ] && grep -q "errno 22" <<<"$out"
  ' _ "$PY" "$LIB_DIR" "$WORK/mnt"
fi

summary
