#!/usr/bin/env bash
# Read benchmark (not a test): the same tree served by
#   - our nydusd FUSE mount: cold cache (local blob), warm cache (page cache
#     dropped), page-cache hot;
#   - the kernel's EROFS mounting the same image (bootstrap + <id>.blob.data),
#     and the `export --block` disk of it;
#   - nydusd fanotify mode (kernel EROFS over our lazily filled cache files);
#   - squashfuse on a squashfs of the same tree (Debian's squashfs-tools).
# Prints one markdown table: sequential MB/s over the large files, random 4 KiB
# reads/s, time to stat every entry, time to read every small file, and the
# daemon's peak RSS. Needs root (mounts, drop_caches).
#
# Env: BUILD_DIR (./build), BENCH_TMP (/var/tmp), SMALL_FILES (50000),
#      BIG_MB (256, per large file, 2 files), RANDOM_READS (4000), KEEP=1.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD_DIR=${BUILD_DIR:-$ROOT/build}
BIN=$BUILD_DIR/bin
LIB=$ROOT/tests/integration/lib
SMALL_FILES=${SMALL_FILES:-50000}
BIG_MB=${BIG_MB:-256}
RANDOM_READS=${RANDOM_READS:-4000}
[ "$(id -u)" -eq 0 ] || { echo "bench/read.sh needs root" >&2; exit 1; }
for t in mksquashfs squashfuse; do
  command -v $t >/dev/null || { echo "install squashfs-tools and squashfuse (apt-get)" >&2; exit 1; }
done

W=$(mktemp -d "${BENCH_TMP:-/var/tmp}/nydus-bench-read.XXXXXX")
DPID=
cleanup() {
  [ -n "$DPID" ] && kill -TERM "$DPID" 2>/dev/null && wait "$DPID" 2>/dev/null
  for m in "$W"/mnt-*; do umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null; done
  [ "${KEEP:-0}" = 1 ] || rm -rf "$W"
}
trap cleanup EXIT

echo "# building the source tree: 2 x ${BIG_MB} MB files + ${SMALL_FILES} small files" >&2
SRC=$W/src
mkdir -p "$SRC/big" "$SRC/small"
python3 "$ROOT/bench/make_tree.py" "$SRC" "$BIG_MB" "$SMALL_FILES"
sync

echo "# building images" >&2
"$BIN/nydus-image" create -B "$W/boot" -D "$W/blobs" --blob-cache-dir "$W/kcache" -J "$W/create.json" "$SRC" >/dev/null 2>&1 || {
  echo "nydus-image create failed" >&2; exit 1; }
BLOB=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["blobs"][0])' "$W/create.json")
mksquashfs "$SRC" "$W/tree.sqfs" -quiet -no-progress -comp zstd >/dev/null 2>&1 || {
  mksquashfs "$SRC" "$W/tree.sqfs" -quiet -no-progress >/dev/null 2>&1 || { echo "mksquashfs failed" >&2; exit 1; }; }

drop() { sync; echo 3 >/proc/sys/vm/drop_caches; }

# Measurements on a mounted tree; print "seq_MBps rand_per_s stat_s smallread_s".
measure() {
  local m=$1 mode=$2 t0 t1 seq rnd st sm
  [ "$mode" = drop ] && drop
  # "hot": what is timed is in the page cache already (read it once untimed).
  [ "$mode" = hot ] && cat "$m/big/file0" "$m/big/file1" >/dev/null
  t0=$(date +%s.%N)
  cat "$m/big/file0" "$m/big/file1" >/dev/null
  t1=$(date +%s.%N)
  seq=$(python3 -c "print(f'{2*$BIG_MB/($t1-$t0):.0f}')")
  [ "$mode" = drop ] && drop
  rnd=$(python3 - "$m/big/file0" "$m/big/file1" "$RANDOM_READS" <<'PY'
import os, random, sys, time
fds = [os.open(p, os.O_RDONLY) for p in sys.argv[1:3]]
n = int(sys.argv[3]); rng = random.Random(3)
sizes = [os.fstat(fd).st_size for fd in fds]
t = time.monotonic()
for _ in range(n):
    i = rng.randrange(2)
    os.pread(fds[i], 4096, rng.randrange(0, sizes[i] // 4096) * 4096)
print(f"{n / (time.monotonic() - t):.0f}")
PY
)
  [ "$mode" = drop ] && drop
  t0=$(date +%s.%N)
  find "$m" -printf '%s\n' >/dev/null
  t1=$(date +%s.%N)
  st=$(python3 -c "print(f'{$t1-$t0:.2f}')")
  [ "$mode" = drop ] && drop
  [ "$mode" = hot ] && tar -C "$m" -cf - small | cat >/dev/null
  t0=$(date +%s.%N)
  tar -C "$m" -cf - small | cat >/dev/null
  t1=$(date +%s.%N)
  sm=$(python3 -c "print(f'{$t1-$t0:.2f}')")
  echo "$seq $rnd $st $sm"
}

row() { printf '| %s | %s | %s | %s | %s | %s |\n' "$1" "$2" "$3" "$4" "$5" "$6"; }

echo "| setup | seq MB/s | random 4 KiB reads/s | stat all entries (s) | read all small files (s) | daemon peak RSS |"
echo "|---|---:|---:|---:|---:|---:|"

# Kernel EROFS, same image.
mkdir -p "$W/mnt-k"
python3 "$LIB/erofs_mount.py" mount "$W/boot" "$W/mnt-k" --device "$W/kcache/$BLOB.blob.data" >/dev/null
read -r a b c d < <(measure "$W/mnt-k" drop)
row "kernel EROFS (cold page cache)" "$a" "$b" "$c" "$d" "-"
read -r a b c d < <(measure "$W/mnt-k" hot)
row "kernel EROFS (page-cache hot)" "$a" "$b" "$c" "$d" "-"
umount "$W/mnt-k"

# squashfuse.
mkdir -p "$W/mnt-s"
squashfuse "$W/tree.sqfs" "$W/mnt-s"
SPID=$(pgrep -n squashfuse)
read -r a b c d < <(measure "$W/mnt-s" drop)
row "squashfuse (cold page cache)" "$a" "$b" "$c" "$d" "$(awk '/VmHWM/ {printf "%.0f MiB", $2/1024}' /proc/"$SPID"/status)"
umount "$W/mnt-s"

# nydusd FUSE: cold cache (fresh work dir), warm cache (page cache dropped), hot.
cat >"$W/cfg.json" <<JSON
{"device": {"backend": {"type": "localfs", "config": {"dir": "$W/blobs"}},
            "cache": {"type": "blobcache", "config": {"work_dir": "$W/cache"}}},
 "mode": "direct", "digest_validate": false, "enable_xattr": true}
JSON
start_nydusd() {
  mkdir -p "$W/mnt-n"
  "$BIN/nydusd" --bootstrap "$W/boot" --config "$W/cfg.json" --mountpoint "$W/mnt-n" --log-level warn "$@" \
    >"$W/nydusd.log" 2>&1 &
  DPID=$!
  for _ in $(seq 100); do awk -v d="$W/mnt-n" '$5 == d {f=1} END {exit !f}' /proc/self/mountinfo && return 0; sleep 0.1; done
  echo "nydusd did not mount" >&2; cat "$W/nydusd.log" >&2; exit 1
}
stop_nydusd() { kill -TERM "$DPID"; wait "$DPID"; DPID=; }
rss() { awk '/VmHWM/ {printf "%.0f MiB", $2/1024}' /proc/"$DPID"/status; }

# nydusd fanotify mode: the kernel's EROFS over our cache files, filled on
# pre-content events (Linux >= 6.14 with FAN_PRE_ACCESS).
start_fanotify() {
  mkdir -p "$W/mnt-f"
  "$BIN/nydusd" fanotify --bootstrap "$W/boot" --config "$W/cfg-f.json" --mountpoint "$W/mnt-f" --log-level warn \
    >"$W/nydusd-f.log" 2>&1 &
  DPID=$!
  for _ in $(seq 100); do awk -v d="$W/mnt-f" '$5 == d {f=1} END {exit !f}' /proc/self/mountinfo && return 0; sleep 0.1; done
  kill "$DPID" 2>/dev/null; wait "$DPID" 2>/dev/null; DPID=
  return 1
}
sed "s|$W/cache|$W/cache-f|" "$W/cfg.json" >"$W/cfg-f.json"
rm -rf "$W/cache-f"
if start_fanotify; then
  read -r a b c d < <(measure "$W/mnt-f" drop)
  row "nydusd fanotify, cold cache (local blob)" "$a" "$b" "$c" "$d" "$(rss)"
  stop_nydusd
  start_fanotify
  read -r a b c d < <(measure "$W/mnt-f" drop)
  row "nydusd fanotify, warm cache" "$a" "$b" "$c" "$d" "$(rss)"
  stop_nydusd
else
  echo "(fanotify mode unavailable on this kernel: $(tail -n1 "$W/nydusd-f.log"))" >&2
fi

# Plain kernel EROFS of the `export --block` disk (metadata + data in one file).
"$BIN/nydus-image" export --block -B "$W/boot" -D "$W/blobs" --output "$W/disk.img" >/dev/null 2>&1
mkdir -p "$W/mnt-d"
python3 "$LIB/erofs_mount.py" mount "$W/disk.img" "$W/mnt-d" >/dev/null
read -r a b c d < <(measure "$W/mnt-d" drop)
row "kernel EROFS, export --block disk (cold)" "$a" "$b" "$c" "$d" "-"
umount "$W/mnt-d"

# The classic rows: /dev/fuse read/write, whatever the kernel offers.
rm -rf "$W/cache"
start_nydusd --fuse-uring off
read -r a b c d < <(measure "$W/mnt-n" drop)
row "nydusd FUSE, cold blob cache (local blob)" "$a" "$b" "$c" "$d" "$(rss)"
stop_nydusd
start_nydusd --fuse-uring off
read -r a b c d < <(measure "$W/mnt-n" drop)
row "nydusd FUSE, warm blob cache" "$a" "$b" "$c" "$d" "$(rss)"
read -r a b c d < <(measure "$W/mnt-n" hot)
row "nydusd FUSE, page-cache hot" "$a" "$b" "$c" "$d" "$(rss)"
stop_nydusd

# FUSE over io_uring (Linux 6.14+): the fuse module's enable_uring must be Y when the
# kernel sends INIT; set for this mount only, then put back.
URING_PARAM=/sys/module/fuse/parameters/enable_uring
if [ -w "$URING_PARAM" ]; then
  PREV_URING=$(cat "$URING_PARAM")
  echo Y >"$URING_PARAM"
  start_nydusd --fuse-uring on
  read -r a b c d < <(measure "$W/mnt-n" drop)
  row "nydusd FUSE io_uring, warm blob cache" "$a" "$b" "$c" "$d" "$(rss)"
  stop_nydusd
  echo "$PREV_URING" >"$URING_PARAM"
else
  echo "(no FUSE over io_uring on this kernel: $URING_PARAM missing)" >&2
fi
echo
echo "tree: 2 x ${BIG_MB} MB + ${SMALL_FILES} small files; $(nproc) CPUs; $(uname -r)"
