#!/usr/bin/env bash
# Load: one `nydusd singleton` serving 3 mounts (1 MiB zstd, 64 KiB lz4_block
# and 256 KiB uncompressed chunks; digest_validate on), and 64 concurrent
# readers (lib/load_readers.py) reading random ranges and whole files for
# LOAD_SECONDS, every byte compared with the source tree; readers drop the
# files' pages from the kernel's page cache now and then, so the daemon keeps
# being asked. Passes with 0 errors, 0 wrong bytes, the daemon's RSS under
# 256 MiB throughout, its open files back to where they were once the readers
# stop and its FUSE workers' epoll instances within 3 mounts x 4 workers. Needs root and /dev/fuse (else exit 77).
# Env: LOAD_SECONDS (60; the issue's full run is 300), LOAD_THREADS (64),
#      NYDUS_BIN_DIR, NYDUS_TEST_TMP, KEEP_WORK=1.
set -uo pipefail
# shellcheck source-path=SCRIPTDIR source=lib/common.sh
source "$(dirname "$0")/lib/common.sh"
# shellcheck source-path=SCRIPTDIR source=lib/fuse_uring.sh
source "$(dirname "$0")/lib/fuse_uring.sh"

need_root_and_fuse
need_nydus_image
NYDUSD=$NYDUS_BIN_DIR/nydusd
[ -x "$NYDUSD" ] || die "nydusd not found in $NYDUS_BIN_DIR (build first)"
SECONDS_TO_RUN=${LOAD_SECONDS:-60}
THREADS=${LOAD_THREADS:-64}

WORK=$(mktemp -d "${NYDUS_TEST_TMP:-/var/tmp}/nydus-load.XXXXXX") || die "mktemp"
LOG_DIR=$WORK/logs
mkdir -p "$LOG_DIR"
DAEMON_PID=
cleanup() {
  [ -n "$DAEMON_PID" ] && kill -KILL "$DAEMON_PID" 2>/dev/null && wait "$DAEMON_PID" 2>/dev/null
  local m
  for m in "$WORK"/mnt/*; do [ -d "$m" ] && { fusermount3 -u "$m" 2>/dev/null || umount -l "$m" 2>/dev/null; }; done
  if [ "${KEEP_WORK:-0}" = 1 ]; then echo "kept $WORK"; return; fi
  rm -rf "$WORK"
}
trap cleanup EXIT

# Three trees of ~150 files, 0 B to 4 MiB, half compressible text, half random.
make_trees() {
  "$PY" - "$WORK/src" <<'PY'
import os, random, sys
for t in range(3):
    rnd = random.Random(t)
    for i in range(150):
        d = os.path.join(sys.argv[1], str(t), f"d{i % 7}", f"e{i % 3}")
        os.makedirs(d, exist_ok=True)
        size = int(2 ** rnd.uniform(0, 22)) if i % 10 else 0
        if i % 2:
            data = rnd.randbytes(size)
        else:
            words = [rnd.choice(("nydus", "chunk", "blob", "erofs", "rafs", "cache")) for _ in range(64)]
            text = (" ".join(words) + "\n").encode()
            data = (text * (size // len(text) + 1))[:size]
        with open(os.path.join(d, f"f{i}.bin"), "wb") as f:
            f.write(data)
PY
}
step "three source trees" make_trees || die "cannot make the trees"

IMAGES=("0 0x100000 zstd" "1 0x10000 lz4_block" "2 0x40000 none")
build_images() {
  local spec n cs comp
  for spec in "${IMAGES[@]}"; do
    read -r n cs comp <<<"$spec"
    mkdir -p "$WORK/img$n/blobs"
    "$NYDUS_IMAGE" create -B "$WORK/img$n/image.boot" -D "$WORK/img$n/blobs" --chunk-size "$cs" \
      --compressor "$comp" "$WORK/src/$n" || return 1
  done
}
step "three images (1 MiB zstd, 64 KiB lz4_block, 256 KiB none)" build_images || die "cannot build the images"

SOCK=$WORK/api.sock
"$NYDUSD" singleton --apisock "$SOCK" --log-level warn >"$LOG_DIR/daemon.log" 2>&1 &
DAEMON_PID=$!
for _ in $(seq 100); do [ -S "$SOCK" ] && break; sleep 0.1; done
api() { curl -s --max-time 30 --unix-socket "$SOCK" "$@"; }
mount_all() {
  local n body
  for n in 0 1 2; do
    mkdir -p "$WORK/mnt/$n"
    body=$("$PY" -c 'import json,sys; d,c=sys.argv[1:]; print(json.dumps({"source": d+"/image.boot", "fs_type": "rafs",
      "config": json.dumps({"device": {"backend": {"type": "localfs", "config": {"dir": d+"/blobs"}},
        "cache": {"type": "blobcache", "config": {"work_dir": c}}}, "mode": "direct", "digest_validate": True})}))' \
      "$WORK/img$n" "$WORK/cache/$n")
    api -sf -X POST "http://localhost/api/v1/mount?mountpoint=$WORK/mnt/$n" -d "$body" || return 1
    is_mounted "$WORK/mnt/$n" || return 1
  done
}
step "mount the three images in one daemon" mount_all || die "cannot mount"

# Open files (anything but the FUSE workers' epoll instances) and those epoll instances apart:
# each libfuse worker keeps one (src/fuse/fuse_channel.cpp, wait_readable) while it lives, and
# workers stay up to --thread-num (4 by default) per mount, so their count may grow with the load
# to 3 x 4, never past it. Open files must come back to where they were.
fd_list() { for f in /proc/"$DAEMON_PID"/fd/*; do readlink "$f"; done | sort; }
file_fds() { fd_list | grep -vc '^anon_inode:\[eventpoll\]$'; }
epoll_fds() { fd_list | grep -c '^anon_inode:\[eventpoll\]$'; }
# The baseline is taken once every mount has served a read: a blob's cache files (data, chunk
# map) are opened on its first read, and that is no leak.
first_reads() {
  local n f
  for n in 0 1 2; do
    f=$(find "$WORK/mnt/$n" -type f -size +0 | head -n 1)
    [ -n "$f" ] && head -c 1 "$f" >/dev/null || return 1
  done
}
step "one read on each mount (the blob caches open their files)" first_reads
sleep 1
FILES_BEFORE=$(file_fds)
fd_list >"$LOG_DIR/fds-before.txt"
run_load() {
  "$PY" "$LIB_DIR/load_readers.py" --pid "$DAEMON_PID" --threads "$THREADS" --seconds "$SECONDS_TO_RUN" \
    "$WORK/mnt/0=$WORK/src/0" "$WORK/mnt/1=$WORK/src/1" "$WORK/mnt/2=$WORK/src/2" >"$LOG_DIR/load.json" || return 1
  cat "$LOG_DIR/load.json"
  "$PY" - "$LOG_DIR/load.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
print(f"{r['threads']} readers, {r['seconds']:.0f} s: {r['reads']} reads, {r['bytes'] / 1e6:.0f} MB, "
      f"errors {r['errors']}, wrong {r['mismatches']}, RSS {r['rss_kb']['min']}-{r['rss_kb']['max']} kB, "
      f"fds {r['fds']['first']}..{r['fds']['max']}")
assert r["reads"] > 0, "nothing was read"
assert r["errors"] == 0 and r["mismatches"] == 0, r["first_errors"]
assert r["rss_kb"]["min"] > 0, "the daemon went away during the run"
assert r["rss_kb"]["max"] < 256 * 1024, "RSS over 256 MiB"
PY
}
step "$THREADS readers over 3 mounts for ${SECONDS_TO_RUN}s: every byte right, RSS bounded" run_load
fds_back() {
  local after epolls
  sleep 1  # the kernel sends RELEASE for the last closes asynchronously
  after=$(file_fds)
  epolls=$(epoll_fds)
  echo "daemon open files: $FILES_BEFORE before the load, $after after; worker epoll instances: $epolls (at most 12)"
  fd_list >"$LOG_DIR/fds-after.txt"
  [ "$after" -le $((FILES_BEFORE + 2)) ] && [ "$epolls" -le 12 ] ||
    { diff "$LOG_DIR/fds-before.txt" "$LOG_DIR/fds-after.txt"; return 1; }
}
step "the daemon's open files are back to where they were; worker epolls within 3 mounts x 4 workers" fds_back
served() {  # the page-cache drops made the daemon answer, not only the kernel's cache
  local m reads=0 bytes=0 errs=0 r
  for m in "$WORK"/mnt/*; do
    r=$(api -sf "http://localhost/api/v1/metrics?id=$m" | "$PY" -c 'import json,sys
j=json.load(sys.stdin); j=j[0] if isinstance(j,list) else j
print(j["fop_hits"][4], j["data_read"], j["fop_errors"][4])  # 4: Read in the StatsFop order of upstream') || return 1
    read -r a b c <<<"$r"
    reads=$((reads + a)); bytes=$((bytes + b)); errs=$((errs + c))
  done
  echo "the daemon answered $reads FUSE reads, $((bytes / 1000000)) MB, $errs read errors"
  [ "$reads" -gt 1000 ] && [ "$errs" -eq 0 ]
}
step "the daemon answered thousands of the reads itself, without an error" served
uring_all() { local m; for m in "$WORK"/mnt/*; do uring_check "$SOCK" "$m" || return 1; done; }
uring_forced && step "every mount's requests went through FUSE over io_uring" uring_all
finish() {
  local m rc
  for m in "$WORK"/mnt/*; do api -sf -X DELETE "http://localhost/api/v1/mount?mountpoint=$m" || return 1; done
  api -sf -X PUT http://localhost/api/v1/daemon/exit || return 1
  wait "$DAEMON_PID"; rc=$?
  DAEMON_PID=
  [ "$rc" -eq 0 ]
}
step "unmount all and exit cleanly" finish

summary
