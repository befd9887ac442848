#!/usr/bin/env bash
# Crash safety of the blob cache: kill -9 nydusd hundreds of times while readers make it
# fetch chunks, write them to <blob_id>.blob.data and mark them in <blob_id>.chunk_map,
# then check that the cache never claims bytes it does not hold:
#   - during the loop, every byte any reader gets equals the source;
#   - after every kill, every chunk marked ready in the chunk map on disk has exactly the
#     builder's bytes (its --blob-cache-dir layout) at its offset in blob.data;
#   - after the loop, a daemon on the same cache WITHOUT the backend serves only right
#     bytes (EIO for what is not cached), and with the backend back the whole tree equals
#     the source; after a clean shutdown every chunk is marked and verified on disk.
# Needs root and /dev/fuse (else exit 77).
#
# Env: NYDUS_BIN_DIR, NYDUS_TEST_TMP (default /var/tmp; not a tmpfs), KEEP_WORK=1,
#      CRASH_ITERATIONS (default 240, >= 200 kills), CRASH_SEED (loop seed; default random,
#      printed), CRASH_TREE_MIB (default 60).
set -uo pipefail
# shellcheck source-path=SCRIPTDIR source=lib/common.sh
source "$(dirname "$0")/lib/common.sh"

[ "$(id -u)" -eq 0 ] || skip "needs root (FUSE mounts)"
[ -c /dev/fuse ] || skip_kernel "no /dev/fuse"
need_nydus_image
NYDUSD=${NYDUSD:-$NYDUS_BIN_DIR/nydusd}
[ -x "$NYDUSD" ] || die "nydusd not found at $NYDUSD (build first; set NYDUS_BIN_DIR)"
CRASH=$LIB_DIR/cache_crash.py
ITERATIONS=${CRASH_ITERATIONS:-240}
SEED=${CRASH_SEED:-$((RANDOM * 32768 + RANDOM))}
TREE_MIB=${CRASH_TREE_MIB:-60}

WORK=$(mktemp -d "${NYDUS_TEST_TMP:-/var/tmp}/nydus-crash.XXXXXX") || die "mktemp"
LOG_DIR=$WORK/logs
mkdir -p "$LOG_DIR"
DAEMON_PID=
LOOP_PID_FILE=$WORK/loop-daemon.pid
cleanup() {
  local p
  for p in "$DAEMON_PID" "$(cat "$LOOP_PID_FILE" 2>/dev/null)"; do
    # Only our own daemons: the pid must still be an nydusd.
    if [ -n "$p" ] && [ "$(cat "/proc/$p/comm" 2>/dev/null)" = nydusd ]; then kill -KILL "$p" 2>/dev/null; fi
  done
  umount_below "$WORK"
  if [ "${KEEP_WORK:-0}" = 1 ]; then echo "kept $WORK"; return; fi
  rm -rf "$WORK"
}
trap cleanup EXIT

case $(stat -f -c %T "$WORK") in
  tmpfs|ramfs) echo "note: $WORK is on $(stat -f -c %T "$WORK"); the cache should be on a disk filesystem" ;;
esac
echo "work dir $WORK, $ITERATIONS iterations, loop seed $SEED (CRASH_SEED=$SEED to repeat the kill pattern)"

# start_daemon NAME MNT: start nydusd on the image in the background, wait for the mount.
start_daemon() {
  local name=$1 mnt=$2 i
  mkdir -p "$mnt"
  "$NYDUSD" --bootstrap "$IMG/boot" --config "$IMG/config.json" --mountpoint "$mnt" \
    --apisock "$WORK/$name.sock" --thread-num 4 >"$LOG_DIR/$name.daemon.log" 2>&1 &
  DAEMON_PID=$!
  for i in $(seq 200); do
    if is_mounted "$mnt"; then echo "mounted after $i polls (pid $DAEMON_PID)"; return 0; fi
    kill -0 "$DAEMON_PID" 2>/dev/null || { echo "nydusd exited early"; cat "$LOG_DIR/$name.daemon.log"; return 1; }
    sleep 0.1
  done
  echo "not mounted after 20s"; cat "$LOG_DIR/$name.daemon.log"; return 1
}

# stop_daemon MNT: SIGTERM (a clean exit persists the chunk map), expect status 0 and no mount.
stop_daemon() {
  local mnt=$1 rc i
  kill -TERM "$DAEMON_PID" || return 1
  for i in $(seq 100); do kill -0 "$DAEMON_PID" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$DAEMON_PID" 2>/dev/null; then echo "nydusd still running 10s after SIGTERM"; return 1; fi
  wait "$DAEMON_PID"; rc=$?
  DAEMON_PID=
  echo "nydusd exit status $rc"
  [ "$rc" -eq 0 ] || return 1
  if is_mounted "$mnt"; then echo "$mnt still mounted"; return 1; fi
}

# jget FILE KEY: one field of a JSON object file ("?" if missing).
jget() { "$PY" -c 'import json,sys; print(json.load(open(sys.argv[1])).get(sys.argv[2], "?"))' "$1" "$2" 2>/dev/null || echo "?"; }

# ---- 1. source tree and image ------------------------------------------------------------
SRC=$WORK/src
IMG=$WORK/img
mkdir -p "$IMG"
step "make tree (~${TREE_MIB} MiB, deterministic random content)" "$PY" "$CRASH" tree "$SRC" --mib "$TREE_MIB" ||
  die "cannot make the source tree"
step "nydus-image create (zstd, 64 KiB chunks)" "$NYDUS_IMAGE" create --fs-version 6 --compressor zstd \
  --chunk-size 0x10000 -B "$IMG/boot" -D "$IMG/blobs" --blob-cache-dir "$IMG/ref" -J "$IMG/create.json" "$SRC" ||
  die "cannot build the image"
mapfile -t BLOBS < <(blob_ids "$IMG/create.json")
[ "${#BLOBS[@]}" -eq 1 ] || die "expected one blob, got ${#BLOBS[@]}"
BLOB_ID=${BLOBS[0]}
CACHE=$WORK/cache
write_config "$IMG/config.json" "$IMG/blobs" "$CACHE"
echo "blob $BLOB_ID: $(jget "$IMG/create.json" stats | tr -d "{}'")"

# ---- 2. the crash loop ---------------------------------------------------------------------
step "crash loop: $ITERATIONS x (nydusd + random readers, kill -9 after a random delay), chunk map checked after every kill" \
  "$PY" "$CRASH" loop --nydusd "$NYDUSD" --boot "$IMG/boot" --config "$IMG/config.json" --mnt "$WORK/mnt-loop" \
  --sock "$WORK/loop.sock" --src "$SRC" --work-dir "$CACHE" --ref-dir "$IMG/ref" --blob-id "$BLOB_ID" \
  --log-dir "$LOG_DIR" --iterations "$ITERATIONS" --seed "$SEED" --json "$WORK/loop.json" --pid-file "$LOOP_PID_FILE"
[ -f "$WORK/loop.json" ] || die "the crash loop wrote no results"
LOOP_LOG=$(printf '%s/step-%03d.log' "$LOG_DIR" "$STEP_NO")

step "chunk map after the loop: every ready chunk's bytes on disk == the builder's layout" \
  "$PY" "$CRASH" chunkmap "$CACHE" "$IMG/ref" "$BLOB_ID" --json "$WORK/map-after-loop.json"
TMP_LEFT=$(find "$CACHE" -name '*.tmp.*' | wc -l)

# ---- 3. restart on the crashed cache without the backend -------------------------------------
mv "$IMG/blobs" "$IMG/blobs.gone"
MNT=$WORK/mnt
if step "no backend: nydusd starts on the crashed cache" start_daemon nobackend "$MNT"; then
  ready_matches_map() {
    local api disk
    api=$(curl -sf --unix-socket "$WORK/nobackend.sock" http://localhost/api/v1/metrics/blobcache |
      "$PY" -c 'import json,sys; print(sum(b["chunks_ready"] for b in json.load(sys.stdin)["blobs"]))') || return 1
    disk=$(jget "$WORK/map-after-loop.json" ready)
    echo "daemon reports $api chunks ready, the chunk map on disk has $disk"
    [ "$api" = "$disk" ]
  }
  step "no backend: daemon's ready chunks == chunk map on disk" ready_matches_map
  step "no backend: every block read == source (EIO only where not cached)" \
    "$PY" "$CRASH" read-all "$SRC" "$MNT" --json "$WORK/nobackend.json"
  step "no backend: daemon still alive after the EIOs" kill -0 "$DAEMON_PID"
  step "no backend: SIGTERM" stop_daemon "$MNT"
fi
mv "$IMG/blobs.gone" "$IMG/blobs"

# ---- 4. backend back: the whole tree ----------------------------------------------------------
if step "with backend: nydusd starts" start_daemon final "$MNT"; then
  step "with backend: every block of every file == source, no failed read" \
    "$PY" "$CRASH" read-all "$SRC" "$MNT" --expect-complete --json "$WORK/final.json"
  step "with backend: tree == source (compare_trees)" compare_trees -q --ignore-root-mtime "$SRC" "$MNT"
  step "with backend: SIGTERM" stop_daemon "$MNT"
  step "after a clean shutdown: all chunks marked ready and verified on disk" \
    "$PY" "$CRASH" chunkmap "$CACHE" "$IMG/ref" "$BLOB_ID" --expect-all --json "$WORK/map-final.json"
fi

# ---- 5. the crash window when a data file is recreated (deterministic, under gdb) ---------------
# A data file of the wrong size (here: deleted) is recreated empty; if the old
# chunk map outlived that, its bits would claim holes (reads of zeros). Stop
# the daemon right after the data file was recreated and kill it there.
if command -v gdb >/dev/null; then
  rm -f "$CACHE/$BLOB_ID.blob.data"
  step "recreate window: kill -9 right after the data file was recreated" \
    timeout 120 gdb -q -batch -ex 'break nydus::storage::ChunkMap::open' -ex run -ex kill \
    --args "$NYDUSD" --bootstrap "$IMG/boot" --config "$IMG/config.json" --mountpoint "$MNT"
  fusermount3 -u -z "$MNT" 2>/dev/null
  step "recreate window: the chunk map claims nothing that is not on disk" \
    "$PY" "$CRASH" chunkmap "$CACHE" "$IMG/ref" "$BLOB_ID" --json "$WORK/map-window.json"
elif [ "${CI:-}" = true ]; then
  fail_step "recreate window" "gdb not installed (scripts/setup.sh installs it)"
else
  echo "gdb not installed: the recreate-window step is skipped"
fi

# ---- figures -----------------------------------------------------------------------------------
L=$WORK/loop.json
echo "---- figures"
echo "kills (kill -9):                   $(jget "$L" kills) (during start-up $(jget "$L" kills_early), 5-150 ms after the readers started $(jget "$L" kills_short), 1-2 s in around the map persist $(jget "$L" kills_persist): after it $(jget "$L" persist_kills_map_grew), before/inside it $(jget "$L" persist_kills_map_unchanged)); $(jget "$L" kills_with_reads_in_flight) with reads in flight; cache wiped $(jget "$L" cache_wipes) times"
echo "chunks ready at kill (avg of $(jget "$L" chunks_total)):   in memory $(jget "$L" avg_ready_mem_at_kill), persisted in the map $(jget "$L" avg_ready_disk_after_kill) (max $(jget "$L" max_ready_disk); kills with a complete map: $(jget "$L" full_cache_kills))"
echo "reads checked during the loop:     $(jget "$L" reads_checked) full + $(jget "$L" partial_reads_checked) short ($(jget "$L" bytes_checked) bytes); $(jget "$L" errors_after_kill) failed after the kill (expected), $(jget "$L" unexpected_errors) failed while the daemon was alive"
echo "wrong bytes during the loop:       $(jget "$L" wrong_bytes)"
echo "chunk-map entries verified on disk: $(jget "$L" chunks_verified_on_disk) over all kills, $(jget "$WORK/map-after-loop.json" verified) after the loop, $(jget "$WORK/map-final.json" verified) after the clean shutdown; lies: $(jget "$L" chunk_map_lies) / $(jget "$WORK/map-after-loop.json" lies) / $(jget "$WORK/map-final.json" lies)"
N=$WORK/nobackend.json
echo "no backend after the loop:         $(jget "$N" files_complete) of $(jget "$N" files) files read whole from the cache, $(jget "$N" files_with_eio) with EIO; $(jget "$N" blocks_ok) blocks checked, $(jget "$N" blocks_eio) EIO, wrong bytes $(jget "$N" wrong_bytes)"
F=$WORK/final.json
echo "with backend after the loop:       $(jget "$F" blocks_ok) blocks checked, failed reads $(jget "$F" blocks_eio) EIO + $(jget "$F" other_errors) other (must be 0), wrong bytes $(jget "$F" wrong_bytes)"
echo "leftover *.tmp.* files in the cache dir after the loop: $TMP_LEFT"
echo "loop time $(jget "$L" seconds) s, total $SECONDS s; per-iteration lines: $LOOP_LOG$([ "${KEEP_WORK:-0}" = 1 ] || echo ' (KEEP_WORK=1 keeps it)')"

summary
