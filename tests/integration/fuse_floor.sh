#!/usr/bin/env bash
# bench/fuse_floor.cpp, the benchmark's FUSE floor (a daemon answering from memory), must
# serve its source tree exactly, or bench/rootfs.sh's floor rows measure a broken mount.
# For each transport (libfuse's loop, nydusd's /dev/fuse channel, nydusd's io_uring
# channel when the kernel has the switch): the mount == the source (compare_trees: types,
# modes, owners, sizes, mtimes, symlink targets, file bytes), a directory of 700 entries
# listed over several READDIRPLUS replies, a 3 MiB file read over several READs, and
# SIGTERM unmounts and ends the daemon. Needs root and /dev/fuse.
# Env: NYDUS_BIN_DIR, NYDUS_TEST_TMP, KEEP_WORK=1.
set -uo pipefail
# shellcheck source-path=SCRIPTDIR source=lib/common.sh
source "$(dirname "$0")/lib/common.sh"

need_root_and_fuse
FLOOR=$NYDUS_BIN_DIR/fuse-floor
[ -x "$FLOOR" ] || die "fuse-floor missing in $NYDUS_BIN_DIR (build first)"
PARAM=/sys/module/fuse/parameters/enable_uring

WORK=$(mktemp -d "${NYDUS_TEST_TMP:-/var/tmp}/nydus-floor.XXXXXX") || die "mktemp"
LOG_DIR=$WORK/logs
MNT=$WORK/mnt
mkdir -p "$LOG_DIR" "$MNT"
PREV=$( [ -e "$PARAM" ] && cat "$PARAM")
PID=
cleanup() {
  [ -n "$PID" ] && kill -KILL "$PID" 2>/dev/null
  umount -l "$MNT" 2>/dev/null
  [ -n "$PREV" ] && echo "$PREV" >"$PARAM"
  if [ "${KEEP_WORK:-0}" = 1 ]; then echo "kept $WORK"; return; fi
  rm -rf "$WORK"
}
trap cleanup EXIT

"$PY" - "$WORK/src" <<'PY' || die "making the source tree"
import os, random, sys
root = sys.argv[1]
rnd = random.Random(17)
os.makedirs(os.path.join(root, "a/b/c/d"))
os.makedirs(os.path.join(root, "empty"))
big = os.path.join(root, "many")
os.makedirs(big)
for i in range(700):  # ~100 KiB of READDIRPLUS entries: several replies
    with open(os.path.join(big, f"entry-with-a-longish-name-{i:04d}"), "wb") as f:
        f.write(rnd.randbytes(rnd.randrange(0, 300)))
for i in range(40):
    d = os.path.join(root, "a/b" if i % 2 else "a/b/c/d")
    with open(os.path.join(d, f"f{i}"), "wb") as f:
        f.write(rnd.randbytes(rnd.randrange(0, 70000)))
with open(os.path.join(root, "big.bin"), "wb") as f:
    f.write(rnd.randbytes(3 << 20))
os.symlink("a/b/c/d/f0", os.path.join(root, "rel-link"))
os.symlink("/etc/hostname", os.path.join(root, "abs-link"))
os.symlink("nowhere", os.path.join(root, "dangling"))
os.chmod(os.path.join(root, "a/b/f1"), 0o4755)
os.chmod(os.path.join(root, "a/b/f3"), 0o600)
os.chown(os.path.join(root, "a/b/f5"), 1234, 5678)
os.utime(os.path.join(root, "big.bin"), (1_000_000_000, 1_000_000_000))
PY

# mount_floor [flag]: start fuse-floor on $MNT and wait for the mount.
mount_floor() {
  "$FLOOR" "$@" "$WORK/src" "$MNT" >"$LOG_DIR/floor.log" 2>&1 &
  PID=$!
  local _
  for _ in $(seq 200); do is_mounted "$MNT" && return 0; sleep 0.05; done
  cat "$LOG_DIR/floor.log"
  return 1
}
same_tree() { compare_trees --no-hardlinks --no-xattr "$WORK/src" "$MNT"; }
# Five seconds for SIGTERM to end the daemon and its mount.
stops() {
  kill -TERM "$PID"
  local _
  for _ in $(seq 100); do
    if ! kill -0 "$PID" 2>/dev/null; then
      PID=
      ! is_mounted "$MNT" && return 0
      echo "daemon gone, mount still there"
      return 1
    fi
    sleep 0.05
  done
  echo "fuse-floor still running 5 s after SIGTERM"
  return 1
}
uring_used() { grep "FUSE transport: io_uring" "$LOG_DIR/floor.log"; }

for mode in libfuse --nydus-channel --nydus-uring; do
  flag=$mode
  [ "$mode" = libfuse ] && flag=
  if [ "$mode" = --nydus-uring ]; then
    [ -e "$PARAM" ] || { echo "no FUSE over io_uring in this kernel: $mode not run"; continue; }
    echo Y >"$PARAM"  # read at the mount's INIT only: put back right after
  fi
  step "$mode: mounts" mount_floor $flag
  mounted=$?
  [ -n "$PREV" ] && echo "$PREV" >"$PARAM"
  [ "$mounted" -eq 0 ] || continue
  [ "$mode" = --nydus-uring ] && step "$mode: requests go through the rings" uring_used
  step "$mode: tree == source" same_tree
  step "$mode: SIGTERM unmounts and ends it" stops
done
summary
