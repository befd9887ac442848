#!/usr/bin/env bash
# shellcheck disable=SC2016
# End-to-end `nydusd fanotify`: the kernel's EROFS mounts the bootstrap with one
# device= blob cache file per blob, and nydusd fills those sparse files on demand from
# fanotify pre-content events (no FUSE, no cachefiles). Checks: mounted tree == source
# (metadata from the kernel, data through our fills); reading one file fills about
# that file's bytes of the cache, not the whole blob; SIGTERM unmounts and exits 0;
# a restart on the same cache with the backend gone serves everything; with
# digest_validate a corrupted blob gives EIO for the affected file only (never wrong
# bytes) and other files still read; SIGTERM with a busy mount still exits, and
# unfilled data is not served as zeros afterwards; a warm restart leaves fully
# cached blobs unmarked (no events); `nydusd singleton` mounts and unmounts
# fs_type "fanotify" through the API with data from a real docker-registry,
# 16 concurrent readers match the source, a registry that goes away gives EIO
# (daemon still serving) and reads recover when it is back.
# Needs root, fanotify pre-content events (Linux 6.14+) and file-backed EROFS (else 77).
#
# Env: NYDUS_BIN_DIR, NYDUS_TEST_TMP (default /var/tmp; must not be tmpfs), KEEP_WORK=1, SMALL=1.
set -uo pipefail
# shellcheck source-path=SCRIPTDIR source=lib/common.sh
source "$(dirname "$0")/lib/common.sh"

need_root_and_erofs
need_nydus_image
NYDUSD=${NYDUSD:-$NYDUS_BIN_DIR/nydusd}
[ -x "$NYDUSD" ] || die "nydusd not found at $NYDUSD (build first; set NYDUS_BIN_DIR)"

WORK=$(mktemp -d "${NYDUS_TEST_TMP:-/var/tmp}/nydus-fan.XXXXXX") || die "mktemp"
LOG_DIR=$WORK/logs
mkdir -p "$LOG_DIR"
DAEMON_PID=
HOLD_PID=
cleanup() {
  [ -n "$HOLD_PID" ] && kill "$HOLD_PID" 2>/dev/null
  if [ -n "$DAEMON_PID" ] && kill -0 "$DAEMON_PID" 2>/dev/null; then
    kill -TERM "$DAEMON_PID" 2>/dev/null
    for _ in $(seq 50); do kill -0 "$DAEMON_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$DAEMON_PID" 2>/dev/null
  fi
  umount_below "$WORK"
  if [ "${KEEP_WORK:-0}" = 1 ]; then echo "kept $WORK"; return; fi
  rm -rf "$WORK"
}
trap cleanup EXIT

need_fanotify_erofs "$WORK"

# The source tree lives on a tmpfs: ext4 can't hold 50 x 1000-byte xattrs on one inode.
mkdir -p "$WORK/srcfs"
mount -t tmpfs -o size=2g,mode=0755 tmpfs "$WORK/srcfs" || die "cannot mount tmpfs for the source tree"
SRC=$WORK/srcfs/tree
TREE_OPTS=()
[ "${SMALL:-0}" = 1 ] && TREE_OPTS+=(--small)
step "make awkward tree" "$PY" "$LIB_DIR/make_tree.py" "${TREE_OPTS[@]}" "$SRC" || die "make_tree.py failed"
# Two big files to measure partial fills against.
head -c $((8 << 20)) /dev/urandom >"$SRC/big_one"
head -c $((8 << 20)) /dev/urandom >"$SRC/big_two"
touch -d @1700000000 "$SRC"
CMP_OPTS=(--mtime-ns --ignore-root-mtime)

# start_daemon NAME BOOT CONFIG MNT
start_daemon() {
  local name=$1 boot=$2 cfg=$3 mnt=$4 i
  mkdir -p "$mnt"
  "$NYDUSD" fanotify --bootstrap "$boot" --config "$cfg" --mountpoint "$mnt" --apisock "$WORK/$name.sock" \
    --log-level debug --thread-num 4 >"$LOG_DIR/$name.daemon.log" 2>&1 &
  DAEMON_PID=$!
  for i in $(seq 200); do
    if is_mounted "$mnt" && [ -S "$WORK/$name.sock" ]; then echo "mounted after $i polls (pid $DAEMON_PID)"; return 0; fi
    kill -0 "$DAEMON_PID" 2>/dev/null || { echo "nydusd exited early"; cat "$LOG_DIR/$name.daemon.log"; return 1; }
    sleep 0.1
  done
  echo "not mounted after 20s"; cat "$LOG_DIR/$name.daemon.log"; return 1
}

# stop_daemon MNT: SIGTERM, expect exit status 0 and the mount gone.
stop_daemon() {
  local mnt=$1 rc=0 i
  kill -TERM "$DAEMON_PID" || return 1
  for i in $(seq 150); do kill -0 "$DAEMON_PID" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$DAEMON_PID" 2>/dev/null; then echo "nydusd still running 15s after SIGTERM"; return 1; fi
  wait "$DAEMON_PID"; rc=$?
  DAEMON_PID=
  echo "nydusd exit status $rc"
  [ "$rc" -eq 0 ] || return 1
  if is_mounted "$mnt"; then echo "$mnt still mounted"; return 1; fi
}

# allocated bytes of the cache data files in DIR
cache_bytes() { find "$1" -name '*.blob.data' -exec stat -c '%b %B' {} + | awk '{s+=$1*$2} END {print s+0}'; }
blob_chunks() {  # SOCK -> "ready total" summed over blobs
  curl -sf --unix-socket "$1" http://localhost/api/v1/metrics/blobcache |
    "$PY" -c 'import json,sys; d=json.load(sys.stdin)["blobs"]; print(sum(b["chunks_ready"] for b in d), sum(b["chunks_total"] for b in d))'
}

# ---- 1. build and mount ---------------------------------------------------------------
IMG=$WORK/img
mkdir -p "$IMG/blobs" "$IMG/cache"
step "nydus-image create" "$NYDUS_IMAGE" create -B "$IMG/boot" -D "$IMG/blobs" "$SRC" || die "cannot build the image"
write_config "$IMG/config.json" "$IMG/blobs" "$IMG/cache" false
MNT=$WORK/mnt
partial_fill() {
  local before after total size
  before=$(cache_bytes "$IMG/cache")
  cmp "$SRC/big_one" "$MNT/big_one" || return 1
  after=$(cache_bytes "$IMG/cache")
  total=$(find "$IMG/cache" -name '*.blob.data' -printf '%s\n' | awk '{s+=$1} END {print s}')
  size=$(stat -c %s "$SRC/big_one")
  echo "cache allocated: before=$before after=$after (file $size, blob files $total); chunks: $(blob_chunks "$WORK/first.sock")"
  # Grew by the file (its chunks), plus at most ~2 MiB of neighbouring chunks pulled in
  # by readahead; far below the blob.
  [ $((after - before)) -ge "$size" ] && [ $((after - before)) -le $((size + (2 << 20))) ] &&
    [ "$after" -lt $((total - (6 << 20))) ]
}
if step "fanotify: mount" start_daemon first "$IMG/boot" "$IMG/config.json" "$MNT"; then
  step "fanotify: mount is the kernel's erofs" bash -c '[ "$(findmnt -n -o FSTYPE --mountpoint "$1")" = erofs ]' _ "$MNT"
  fresh_empty() { local b; b=$(cache_bytes "$IMG/cache"); echo "allocated: $b"; [ "$b" -lt 65536 ]; }
  step "fanotify: fresh cache holds (almost) nothing" fresh_empty
  step "fanotify: reading one file fills about that file only" partial_fill
  step "fanotify: mounted tree == source" compare_trees "${CMP_OPTS[@]}" "$SRC" "$MNT"
  all_cached() { local c; read -ra c < <(blob_chunks "$WORK/first.sock"); echo "ready ${c[0]} of ${c[1]}"; [ "${c[0]}" -eq "${c[1]}" ]; }
  step "fanotify: every chunk read is cached" all_cached
  step "fanotify: no event denied" bash -c 'curl -sf --unix-socket "$1" http://localhost/api/v1/metrics | tee /dev/stderr | grep -q "\"denied\":0"' _ "$WORK/first.sock"
  step "fanotify: writes are refused" bash -c '! touch "$1/newfile" 2>/dev/null' _ "$MNT"
  step "fanotify: SIGTERM -> clean exit and unmount" stop_daemon "$MNT"
fi

# ---- 2. restart on the same cache with the backend gone --------------------------------
mv "$IMG/blobs" "$IMG/blobs.gone"
if step "restart without backend: mount" start_daemon second "$IMG/boot" "$IMG/config.json" "$MNT"; then
  # Fully cached blobs are not marked: reads go to the kernel alone (no events).
  step "restart without backend: warm blob left unmarked" grep -q "fully cached: not marked" "$LOG_DIR/second.daemon.log"
  step "restart without backend: cached data == source" compare_trees "${CMP_OPTS[@]}" "$SRC" "$MNT"
  step "restart without backend: no events raised" bash -c 'curl -sf --unix-socket "$1" http://localhost/api/v1/metrics | tee /dev/stderr | grep -q "\"events\":0"' _ "$WORK/second.sock"
  step "restart without backend: SIGTERM" stop_daemon "$MNT"
fi
mv "$IMG/blobs.gone" "$IMG/blobs"

# ---- 3. digest validation over a corrupted blob -----------------------------------------
# Uncompressed image: the first stored bytes of the blob belong to a_victim (files are
# chunked in walk order), so flipping one of them breaks only its digest.
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
  step "validate: reading the corrupted file fails with EIO" bash -c '! cat "$1/a_victim" >/dev/null 2>"$2"; cat "$2"; grep -i "input/output error" "$2"' _ "$VMNT" "$LOG_DIR/victim.err"
  step "validate: no byte of it is served (first and a later block fail)" bash -c '! head -c 4096 "$1/a_victim" >/dev/null && ! dd if="$1/a_victim" of=/dev/null bs=4096 count=1 skip=100' _ "$VMNT"
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
wait_prefetched() {
  local i c
  for i in $(seq 300); do
    read -ra c < <(blob_chunks "$WORK/pf.sock")
    if [ "${#c[@]}" -eq 2 ] && [ "${c[0]}" -eq "${c[1]}" ]; then echo "all ${c[1]} chunks ready after $i polls"; return 0; fi
    sleep 0.1
  done
  echo "chunks: ${c[*]}"; return 1
}
if step "prefetch: mount" start_daemon pf "$IMG/boot" "$P/config.json" "$MNT"; then
  step "prefetch: whole image cached without reading it" wait_prefetched
  step "prefetch: prefetched data == source" compare_trees "${CMP_OPTS[@]}" "$SRC" "$MNT"
  step "prefetch: reads were answered from the cache" bash -c 'curl -sf --unix-socket "$1" http://localhost/api/v1/metrics | tee /dev/stderr | "$2" -c "import json,sys; f=json.load(sys.stdin)[\"fanotify\"]; sys.exit(0 if f[\"filled\"]==0 and f[\"denied\"]==0 else 1)"' _ "$WORK/pf.sock" "$PY"
  step "prefetch: SIGTERM" stop_daemon "$MNT"
fi

# ---- 5. SIGTERM with a busy mount: exits, and unfilled data never reads as zeros --------
B=$WORK/busy
mkdir -p "$B/cache"
write_config "$B/config.json" "$IMG/blobs" "$B/cache" false
busy_stop() {
  ( cd "$MNT" && exec sleep 60 ) & HOLD_PID=$!
  exec 7<"$MNT/big_two"
  sleep 0.2
  stop_daemon "$MNT"; local rc=$?
  # The mount was detached; big_two was never read, so its bytes are not in the cache.
  if dd if=/proc/self/fd/7 bs=1M count=1 status=none 2>"$LOG_DIR/busy.err" | cmp -s - <(head -c 1048576 /dev/zero); then
    echo "an unfilled range read back as zeros after shutdown"; rc=1
  else
    echo "read after shutdown: $(cat "$LOG_DIR/busy.err")"
  fi
  exec 7<&-
  kill "$HOLD_PID" 2>/dev/null; wait "$HOLD_PID" 2>/dev/null; HOLD_PID=
  return "$rc"
}
if step "busy: mount" start_daemon busy "$IMG/boot" "$B/config.json" "$MNT"; then
  step "busy: SIGTERM with an open file and a cwd inside" busy_stop
fi

# ---- 6. singleton mode: mount/umount through the API, data from a real registry -------
R=$WORK/registry
if step "registry: start docker-registry" start_registry "$R"; then
  step "registry: push the blob" push_blob "$REGISTRY_HOST" lib/img "$(ls -d "$IMG"/blobs/* | head -n1)"
  mkdir -p "$R/cache"
  cat >"$R/config.json" <<JSON
{"device": {"backend": {"type": "registry", "config": {"scheme": "http", "host": "$REGISTRY_HOST", "repo": "lib/img"}},
            "cache": {"type": "blobcache", "config": {"work_dir": "$R/cache"}}},
 "mode": "direct", "enable_xattr": true}
JSON
  "$NYDUSD" singleton --apisock "$WORK/single.sock" --log-level debug >"$LOG_DIR/single.daemon.log" 2>&1 &
  DAEMON_PID=$!
  for i in $(seq 100); do [ -S "$WORK/single.sock" ] && break; sleep 0.1; done
  CTL=("$NYDUS_BIN_DIR/nydusctl" --sock "$WORK/single.sock")
  if step "singleton: mount --type fanotify through the API" \
       "${CTL[@]}" mount --type fanotify --source "$IMG/boot" --mountpoint "$MNT" --config "$R/config.json"; then
    step "singleton: it is the kernel's erofs" bash -c '[ "$(findmnt -n -o FSTYPE --mountpoint "$1")" = erofs ]' _ "$MNT"
    step "singleton: 16 concurrent readers, random ranges == source" \
      "$PY" "$LIB_DIR/concurrent_read.py" --threads 16 --reads 200 "$SRC" "$MNT"
    step "singleton: mounted tree (from the registry) == source" compare_trees "${CMP_OPTS[@]}" "$SRC" "$MNT"
    step "singleton: metrics name the mount" bash -c '"$@" --raw info | grep -q "\"fs_type\":\"fanotify\""' _ "${CTL[@]}"
    step "singleton: umount through the API" "${CTL[@]}" umount "$MNT"
    step "singleton: the mount is gone, the daemon lives" bash -c '! findmnt --mountpoint "$1" >/dev/null && kill -0 "$2"' _ "$MNT" "$DAEMON_PID"
  fi
  # The backend fails: reads get EIO (never zeros), the daemon keeps serving,
  # and once the registry is back the same files read correctly.
  rm -rf "$R/cache"
  mkdir -p "$R/cache"
  if step "backend down: mount on a fresh cache" \
       "${CTL[@]}" mount --type fanotify --source "$IMG/boot" --mountpoint "$MNT" --config "$R/config.json"; then
    kill "$REGISTRY_PID" 2>/dev/null; wait "$REGISTRY_PID" 2>/dev/null
    step "backend down: reading a file fails with EIO" bash -c '! cat "$1/big_one" >/dev/null 2>"$2"; cat "$2"; grep -qi "input/output error" "$2"' _ "$MNT" "$LOG_DIR/down.err"
    step "backend down: the daemon still serves its API" "${CTL[@]}" info
    step "backend back: registry restarted on the same port" bash -c 'docker-registry serve "$1/config.yml" >>"$1/registry.log" 2>&1 & echo $! >"$1/pid"; for i in $(seq 100); do curl -sf "http://$2/v2/" >/dev/null && exit 0; sleep 0.1; done; exit 1' _ "$R" "$REGISTRY_HOST"
    REGISTRY_PID=$(cat "$R/pid" 2>/dev/null)
    step "backend back: the same file reads correctly" cmp "$SRC/big_one" "$MNT/big_one"
    step "backend back: umount" "${CTL[@]}" umount "$MNT"
  fi
  step "singleton: SIGTERM" stop_daemon "$MNT"
  kill "$REGISTRY_PID" 2>/dev/null; wait "$REGISTRY_PID" 2>/dev/null
fi

summary
