#!/usr/bin/env bash
# shellcheck disable=SC2016
# End-to-end nydusd: awkward tree -> nydus-image create -> nydusd FUSE mount (localfs
# backend + blob cache) -> compare with the source; SIGTERM gives a clean exit and
# unmount; a restart on the same cache with the backend gone still serves what was
# read; a cache whose filesystem fills up still serves every read right; with
# digest_validate a corrupted blob gives EIO for the affected file only,
# and the daemon keeps serving the others; tar of a directory read in order gets its
# files pushed into the page cache ahead of it, byte-exact. Needs root and /dev/fuse
# (else exit 77).
#
# Env: NYDUS_BIN_DIR, NYDUS_TEST_TMP (default /var/tmp), KEEP_WORK=1, SMALL=1 (quick tree).
set -uo pipefail
# shellcheck source-path=SCRIPTDIR source=lib/common.sh
source "$(dirname "$0")/lib/common.sh"
# shellcheck source-path=SCRIPTDIR source=lib/fuse_uring.sh
source "$(dirname "$0")/lib/fuse_uring.sh"

[ "$(id -u)" -eq 0 ] || skip "needs root (FUSE mounts, tmpfs for the source tree)"
[ -c /dev/fuse ] || skip_kernel "no /dev/fuse"
need_nydus_image
NYDUSD=${NYDUSD:-$NYDUS_BIN_DIR/nydusd}
[ -x "$NYDUSD" ] || die "nydusd not found at $NYDUSD (build first; set NYDUS_BIN_DIR)"

WORK=$(mktemp -d "${NYDUS_TEST_TMP:-/var/tmp}/nydus-fuse.XXXXXX") || die "mktemp"
LOG_DIR=$WORK/logs
mkdir -p "$LOG_DIR"
DAEMON_PID=
cleanup() {
  if [ -n "$DAEMON_PID" ] && kill -0 "$DAEMON_PID" 2>/dev/null; then
    kill -TERM "$DAEMON_PID" 2>/dev/null
    for _ in $(seq 50); do kill -0 "$DAEMON_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$DAEMON_PID" 2>/dev/null
  fi
  local m
  for m in "$WORK"/mnt*; do
    [ -d "$m" ] && { fusermount3 -u "$m" 2>/dev/null || umount -l "$m" 2>/dev/null; }
  done
  umount_below "$WORK"
  if [ "${KEEP_WORK:-0}" = 1 ]; then echo "kept $WORK"; return; fi
  rm -rf "$WORK"
}
trap cleanup EXIT

# The source tree lives on a tmpfs: ext4 can't hold 50 x 1000-byte xattrs on one inode.
mkdir -p "$WORK/srcfs"
mount -t tmpfs -o size=2g,mode=0755 tmpfs "$WORK/srcfs" || die "cannot mount tmpfs for the source tree"
SRC=$WORK/srcfs/tree
TREE_OPTS=()
[ "${SMALL:-0}" = 1 ] && TREE_OPTS+=(--small)
step "make awkward tree" "$PY" "$LIB_DIR/make_tree.py" "${TREE_OPTS[@]}" "$SRC" || die "make_tree.py failed"
CMP_OPTS=(--ignore-root-mtime --mtime-ns)

# start_daemon NAME BOOT CONFIG MNT: start nydusd in the background, wait for the mount.
start_daemon() {
  local name=$1 boot=$2 cfg=$3 mnt=$4
  mkdir -p "$mnt"
  "$NYDUSD" --bootstrap "$boot" --config "$cfg" --mountpoint "$mnt" --apisock "$WORK/$name.sock" \
    --log-level debug --thread-num 4 >"$LOG_DIR/$name.daemon.log" 2>&1 &
  DAEMON_PID=$!
  local i
  for i in $(seq 200); do
    if is_mounted "$mnt"; then echo "mounted after $i polls (pid $DAEMON_PID)"; return 0; fi
    kill -0 "$DAEMON_PID" 2>/dev/null || { echo "nydusd exited early"; cat "$LOG_DIR/$name.daemon.log"; return 1; }
    sleep 0.1
  done
  echo "not mounted after 20s"; cat "$LOG_DIR/$name.daemon.log"; return 1
}

# stop_daemon MNT: SIGTERM, expect exit status 0 and the mount gone.
stop_daemon() {
  local mnt=$1 rc=0 i
  kill -TERM "$DAEMON_PID" || return 1
  for i in $(seq 100); do kill -0 "$DAEMON_PID" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$DAEMON_PID" 2>/dev/null; then echo "nydusd still running 10s after SIGTERM"; return 1; fi
  wait "$DAEMON_PID"; rc=$?
  DAEMON_PID=
  echo "nydusd exit status $rc"
  [ "$rc" -eq 0 ] || return 1
  if is_mounted "$mnt"; then echo "$mnt still mounted"; return 1; fi
}

# ---- 1. build and mount ---------------------------------------------------------------
IMG=$WORK/img
mkdir -p "$IMG/blobs" "$IMG/cache"
step "nydus-image create" "$NYDUS_IMAGE" create -B "$IMG/boot" -D "$IMG/blobs" --blob-cache-dir "$IMG/kcache" \
  -J "$IMG/create.json" "$SRC" ||
  die "cannot build the image"
write_config "$IMG/config.json" "$IMG/blobs" "$IMG/cache" false
MNT=$WORK/mnt
if step "nydusd: mount" start_daemon first "$IMG/boot" "$IMG/config.json" "$MNT"; then
  # Cold cache: 16 readers at random offsets race on the same chunks.
  step "nydusd: 16 concurrent random readers == source (cold cache)" \
    "$PY" "$LIB_DIR/concurrent_read.py" --threads 16 --reads 300 "$SRC" "$MNT"
  step "nydusd: mounted tree == source" compare_trees "${CMP_OPTS[@]}" "$SRC" "$MNT"
  # The same image through the kernel's own EROFS: FUSE must show what it shows.
  kernel_vs_fuse() {
    local id devs=()
    while read -r id; do devs+=(--device "$IMG/kcache/$id.blob.data"); done < <(blob_ids "$IMG/create.json")
    mkdir -p "$WORK/kmnt"
    "$PY" "$LIB_DIR/erofs_mount.py" mount "$IMG/boot" "$WORK/kmnt" "${devs[@]}" || return 1
    compare_trees --mtime-ns "$WORK/kmnt" "$MNT"
    local rc=$?
    "$PY" "$LIB_DIR/erofs_mount.py" umount "$WORK/kmnt"
    return $rc
  }
  if grep -qw erofs /proc/filesystems; then
    step "nydusd: FUSE mount == kernel EROFS mount of the same image" kernel_vs_fuse
  fi
  step "nydusd: writes are refused" bash -c '! touch "$1/newfile" 2>/dev/null && ! echo x 2>/dev/null >>"$(find "$1" -maxdepth 1 -type f | head -n1)"' _ "$MNT"
  step "nydusd: API answers" bash -c 'curl -sf --unix-socket "$1" http://localhost/api/v1/daemon | grep -q RUNNING' _ "$WORK/first.sock"
  uring_forced && step "nydusd: requests went through FUSE over io_uring" uring_check "$WORK/first.sock"
  step "nydusd: SIGTERM -> clean exit and unmount" stop_daemon "$MNT"
fi

# ---- 2. restart on the same cache with the backend gone --------------------------------
mv "$IMG/blobs" "$IMG/blobs.gone"
if step "restart without backend: mount" start_daemon second "$IMG/boot" "$IMG/config.json" "$MNT"; then
  step "restart without backend: cached data == source" compare_trees "${CMP_OPTS[@]}" "$SRC" "$MNT"
  step "restart without backend: SIGTERM" stop_daemon "$MNT"
fi
mv "$IMG/blobs.gone" "$IMG/blobs"

# ---- 2b. the cache's filesystem fills up ---------------------------------------------------
# A 1 MiB tmpfs for the cache: the first chunks fill it (ENOSPC), and every read after
# that is served from bytes fetched and not kept (as upstream serves a chunk it fails to
# persist), never an EIO.
FULL=$WORK/fullcache
mkdir -p "$FULL"
if mount -t tmpfs -o size=1m,mode=0755 tmpfs "$FULL"; then
  write_config "$IMG/config-full.json" "$IMG/blobs" "$FULL" false
  cache_filled() {
    local avail
    avail=$(df --output=avail -k "$FULL" | tail -n1 | tr -d ' ')
    echo "cache filesystem: ${avail} KiB left; image data $(du -sk "$SRC" | cut -f1) KiB"
    [ "$avail" -lt 256 ]
  }
  if step "full cache: mount" start_daemon full "$IMG/boot" "$IMG/config-full.json" "$MNT"; then
    # Readers racing on the same chunks: one waiting for a peer whose store failed
    # gets the bytes too, not an EIO.
    step "full cache: 16 concurrent random readers == source" \
      "$PY" "$LIB_DIR/concurrent_read.py" --threads 16 --reads 300 "$SRC" "$MNT"
    step "full cache: mounted tree == source" compare_trees "${CMP_OPTS[@]}" "$SRC" "$MNT"
    step "full cache: its filesystem did fill up" cache_filled
    step "full cache: again, all reads still right" compare_trees "${CMP_OPTS[@]}" "$SRC" "$MNT"
    step "full cache: SIGTERM" stop_daemon "$MNT"
  fi
  umount "$FULL"
else
  step "full cache: mount a 1 MiB tmpfs" false
fi

# ---- 3. digest validation over a corrupted blob -----------------------------------------
# A tiny uncompressed image: the first stored bytes of the blob belong to a_victim
# (files are chunked in walk order), so flipping one of them breaks only its digest.
V=$WORK/val
mkdir -p "$V/src" "$V/blobs" "$V/cache"
head -c 1048576 /dev/urandom >"$V/src/a_victim"
head -c 300000 /dev/urandom >"$V/src/b_other"
echo "small file" >"$V/src/c_small"
step "validate: create (uncompressed)" "$NYDUS_IMAGE" create -c none -B "$V/boot" -D "$V/blobs" "$V/src" ||
  die "cannot build the validation image"
corrupt_blob() {
  local f
  f=$(find "$V/blobs" -type f | head -n1)
  [ -n "$f" ] || return 1
  printf '\xff\x00\xff\x00' | dd of="$f" bs=1 seek=100 conv=notrunc status=none
  cmp -s <(head -c 200 "$f") <(head -c 200 "$V/src/a_victim") && { echo "corruption didn't change a_victim's bytes"; return 1; }
  return 0
}
step "validate: corrupt blob copy" corrupt_blob
write_config "$V/config.json" "$V/blobs" "$V/cache" true
VMNT=$WORK/mnt-val
if step "validate: mount" start_daemon val "$V/boot" "$V/config.json" "$VMNT"; then
  step "validate: reading the corrupted file fails" bash -c '! cat "$1/a_victim" >/dev/null 2>"$2"; grep -i "input/output error" "$2"' _ "$VMNT" "$LOG_DIR/victim.err"
  step "validate: daemon still running" kill -0 "$DAEMON_PID"
  step "validate: other files still served intact" bash -c 'cmp "$1/b_other" "$2/b_other" && cmp "$1/c_small" "$2/c_small"' _ "$V/src" "$VMNT"
  step "validate: corrupted file fails again (never cached)" bash -c '! cat "$1/a_victim" >/dev/null' _ "$VMNT"
  step "validate: SIGTERM" stop_daemon "$VMNT"
fi

# ---- 4. prefetch_all fills a fresh cache in the background ------------------------------
P=$WORK/pf
mkdir -p "$P/cache"
sed -e "s|\"work_dir\": \"[^\"]*\"|\"work_dir\": \"$P/cache\"|" \
    -e 's|"fs_prefetch": {"enable": false}|"fs_prefetch": {"enable": true, "threads_count": 4, "merging_size": 1048576, "prefetch_all": true}|' \
    "$IMG/config.json" >"$P/config.json"
# wait_prefetched SOCK: every blob cache reports all chunks ready.
wait_prefetched() {
  local i
  for i in $(seq 300); do
    if curl -sf --unix-socket "$1" http://localhost/api/v1/metrics/blobcache |
      "$PY" -c 'import json,sys; d=json.load(sys.stdin)["blobs"]; sys.exit(0 if d and all(b["chunks_ready"]==b["chunks_total"] for b in d) else 1)'; then
      echo "all chunks ready after $i polls"; return 0
    fi
    sleep 0.1
  done
  curl -s --unix-socket "$1" http://localhost/api/v1/metrics/blobcache; echo
  return 1
}
if step "prefetch: mount" start_daemon pf "$IMG/boot" "$P/config.json" "$MNT"; then
  step "prefetch: whole image cached without reading it" wait_prefetched "$WORK/pf.sock"
  step "prefetch: SIGTERM" stop_daemon "$MNT"
  mv "$IMG/blobs" "$IMG/blobs.gone"
  if step "prefetch: restart without backend" start_daemon pf2 "$IMG/boot" "$P/config.json" "$MNT"; then
    step "prefetch: prefetched data == source" compare_trees "${CMP_OPTS[@]}" "$SRC" "$MNT"
    step "prefetch: SIGTERM after restart" stop_daemon "$MNT"
  fi
  mv "$IMG/blobs.gone" "$IMG/blobs"
fi

# ---- 5. SIGTERM while the mount is busy (open file, cwd inside) still exits ------------------
busy_stop() {
  local f
  f=$(find "$MNT" -type f -size +0 | head -n1)
  ( cd "$MNT" && exec sleep 60 ) & local holder=$!
  exec 7<"$f"
  sleep 0.2
  stop_daemon "$MNT"; local rc=$?
  exec 7<&-
  kill "$holder" 2>/dev/null; wait "$holder" 2>/dev/null
  return "$rc"
}
if step "busy: mount" start_daemon busy "$IMG/boot" "$IMG/config.json" "$MNT"; then
  step "busy: SIGTERM with an open file and a cwd inside" busy_stop
fi

# ---- 6. singleton: mount and umount through the API ------------------------------------------
singleton_api() {
  local sock=$WORK/single.sock body i
  "$NYDUSD" singleton --apisock "$sock" >"$LOG_DIR/single.daemon.log" 2>&1 &
  DAEMON_PID=$!
  for i in $(seq 100); do [ -S "$sock" ] && break; sleep 0.1; done
  body=$("$PY" -c 'import json,sys; print(json.dumps({"source": sys.argv[1], "fs_type": "rafs", "config": open(sys.argv[2]).read()}))' "$IMG/boot" "$IMG/config.json")
  mkdir -p "$MNT"
  curl -sf -X POST --unix-socket "$sock" "http://localhost/api/v1/mount?mountpoint=$MNT" -d "$body" || { echo "mount request failed"; return 1; }
  is_mounted "$MNT" || { echo "not mounted after the API call"; return 1; }
  compare_trees -q "${CMP_OPTS[@]}" "$SRC" "$MNT" || return 1
  curl -sf -X DELETE --unix-socket "$sock" "http://localhost/api/v1/mount?mountpoint=$MNT" || { echo "umount request failed"; return 1; }
  is_mounted "$MNT" && { echo "still mounted after umount"; return 1; }
  kill -0 "$DAEMON_PID" || { echo "daemon died"; return 1; }
  curl -sf -X PUT --unix-socket "$sock" "http://localhost/api/v1/daemon/exit" || { echo "exit request failed"; return 1; }
  for i in $(seq 100); do kill -0 "$DAEMON_PID" 2>/dev/null || break; sleep 0.1; done
  wait "$DAEMON_PID"; i=$?
  DAEMON_PID=
  echo "singleton exit status $i"
  [ "$i" -eq 0 ]
}
# A failed singleton step must not leave its daemon serving $MNT for the steps after it.
singleton_or_kill() {
  singleton_api && return 0
  [ -n "$DAEMON_PID" ] && kill -KILL "$DAEMON_PID" 2>/dev/null
  umount -l "$MNT" 2>/dev/null
  DAEMON_PID=
  return 1
}
step "singleton: mount, compare, umount and exit via the API" singleton_or_kill

# ---- 7. read-ahead across a directory's files ---------------------------------------------
# A reader going through a directory in listing order (tar) gets the next files pushed into
# the page cache (FUSE_NOTIFY_STORE, src/fuse/dir_read_ahead.h): the bytes tar copies must be
# the source's, and most files must come without a READ. With NYDUS_DIR_READ_AHEAD=0 every
# file is a READ (the counters mean what this checks).
D=$WORK/dra
mkdir -p "$D/src/sub" "$D/blobs" "$D/cache" "$D/out"
"$PY" - "$D/src" <<'PY' || die "cannot make the read-ahead tree"
import os, random, sys
r = random.Random(7)
root = sys.argv[1]
for i in range(400):  # distinct bytes in every file: a file pushed as another shows
    with open(os.path.join(root, f"f{i:04d}"), "wb") as f:
        f.write(r.randbytes(r.randint(1, 20000)))
    if i % 50 == 0:
        os.makedirs(os.path.join(root, f"d{i:04d}"))
        with open(os.path.join(root, f"d{i:04d}", "inner"), "wb") as f:
            f.write(r.randbytes(5000))
with open(os.path.join(root, "sub", "big"), "wb") as f:
    f.write(r.randbytes(3 << 20))
os.symlink("f0001", os.path.join(root, "link"))
PY
step "read-ahead: create" "$NYDUS_IMAGE" create -B "$D/boot" -D "$D/blobs" "$D/src" || die "cannot build the read-ahead image"
write_config "$D/config.json" "$D/blobs" "$D/cache" false
# fop SOCK NAME: a FUSE op counter (upstream's fop_hits order) or one of ours.
fop() {
  curl -sf --unix-socket "$1" http://localhost/api/v1/metrics | "$PY" -c '
import json, sys
j, name = json.load(sys.stdin), sys.argv[1]
ops = "getattr readlink open release read statfs getxattr listxattr opendir lookup readdir readdirplus".split()
print(j["fop_hits"][ops.index(name)] if name in ops else j[name])' "$2"
}
# tar_pass MNT SOCK WANT: tar of the mount == the source; prints the READs and pushes.
tar_pass() {
  local mnt=$1 sock=$2 want=$3 reads pushed
  rm -rf "$D/out"; mkdir -p "$D/out"
  tar -C "$mnt" -cf - . | tar -C "$D/out" -xf - || return 1
  diff -r "$D/src" "$D/out" || { echo "tar of the mount differs from the source"; return 1; }
  reads=$(fop "$sock" read) && pushed=$(fop "$sock" fuse_pushed_files) || return 1
  echo "READs: $reads, files pushed: $pushed (402 files)"
  case $want in
    on) [ "$pushed" -ge 300 ] && [ "$reads" -le 120 ] ;;
    off) [ "$pushed" -eq 0 ] && [ "$reads" -ge 402 ] ;;
  esac
}
DMNT=$WORK/mnt-dra
if step "read-ahead: mount" start_daemon dra "$D/boot" "$D/config.json" "$DMNT"; then
  step "read-ahead: tar == source, most files pushed, few READs" tar_pass "$DMNT" "$WORK/dra.sock" on
  step "read-ahead: SIGTERM" stop_daemon "$DMNT"
fi
rm -rf "$D/cache"; mkdir -p "$D/cache"
export NYDUS_DIR_READ_AHEAD=0
if step "read-ahead off: mount" start_daemon dra-off "$D/boot" "$D/config.json" "$DMNT"; then
  step "read-ahead off: tar == source, a READ per file" tar_pass "$DMNT" "$WORK/dra-off.sock" off
  step "read-ahead off: SIGTERM" stop_daemon "$DMNT"
fi
unset NYDUS_DIR_READ_AHEAD

summary
