#!/usr/bin/env bash
# Image build benchmark (not a test): our `nydus-image create` (none / lz4_block / zstd)
# against erofs-utils' mkfs.erofs (uncompressed / -zlz4) on the same source tree.
#   bash bench/build.sh [SOURCE_DIR]
# Without SOURCE_DIR, a ~400 MB tree (LIMIT_MB) is copied from /usr/share and
# /usr/lib/x86_64-linux-gnu into a temp dir. The tree is read once before the runs so every
# tool sees a warm page cache. Each run is timed by /usr/bin/time -v (wall time, peak RSS).
# Prints a markdown table. Env: BUILD_DIR, LIMIT_MB, BENCH_TMP (default /var/tmp), KEEP=1.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD_DIR=${BUILD_DIR:-$ROOT/build}
NI=${NYDUS_IMAGE:-$BUILD_DIR/bin/nydus-image}
LIMIT_MB=${LIMIT_MB:-400}
TIME=/usr/bin/time

[ -x "$NI" ] || { echo "bench: $NI not found (run scripts/setup.sh)" >&2; exit 1; }
[ -x "$TIME" ] || { echo "bench: $TIME missing (apt-get install time)" >&2; exit 1; }

WORK=$(mktemp -d "${BENCH_TMP:-/var/tmp}/nydus-bench.XXXXXX")
cleanup() { if [ "${KEEP:-0}" = 1 ]; then echo "kept $WORK" >&2; else rm -rf "$WORK"; fi; }
trap cleanup EXIT

if [ $# -ge 1 ]; then
  SRC=$(cd "$1" && pwd)
else
  SRC=$WORK/src
  echo "bench: copying up to ${LIMIT_MB} MB of /usr/share + /usr/lib/x86_64-linux-gnu to $SRC" >&2
  python3 - "$SRC" "$LIMIT_MB" /usr/share /usr/lib/x86_64-linux-gnu <<'PY'
import os, shutil, stat, sys
dst, limit = sys.argv[1], int(sys.argv[2]) << 20
total = 0
for top in sys.argv[3:]:
    for dirpath, dirs, files in os.walk(top):
        dirs.sort(); files.sort()
        rel = os.path.relpath(dirpath, "/")
        os.makedirs(os.path.join(dst, rel), exist_ok=True)
        for name in files:
            if total >= limit:
                break
            s, d = os.path.join(dirpath, name), os.path.join(dst, rel, name)
            try:
                st = os.lstat(s)
                if stat.S_ISLNK(st.st_mode):
                    os.symlink(os.readlink(s), d)
                elif stat.S_ISREG(st.st_mode):
                    shutil.copy2(s, d)
                    total += st.st_size
            except OSError:
                pass
        if total >= limit:
            break
print(f"copied {total >> 20} MB", file=sys.stderr)
PY
fi

# Warm the page cache and measure the source.
find "$SRC" -type f -print0 | xargs -0 -r cat >/dev/null 2>&1 || true
read -r SRC_BYTES SRC_FILES < <(python3 - "$SRC" <<'PY'
import os, stat, sys
b = n = 0
for dp, ds, fs in os.walk(sys.argv[1]):
    for f in fs:
        st = os.lstat(os.path.join(dp, f))
        if stat.S_ISREG(st.st_mode):
            b += st.st_size; n += 1
print(b, n)
PY
)

ROWS=$WORK/rows
: >"$ROWS"
# bench_run TOOL MODE OUTPUT_PATH... -- CMD...: time CMD, record a row (output size = sum of
# the sizes of the files under OUTPUT_PATHs).
bench_run() {
  local tool=$1 mode=$2; shift 2
  local outs=()
  while [ "$1" != -- ]; do outs+=("$1"); shift; done
  shift
  local tf=$WORK/time.$tool.$mode rc=0
  echo "bench: $tool $mode: $*" >&2
  "$TIME" -v -o "$tf" "$@" >"$WORK/log.$tool.$mode" 2>&1 || rc=$?
  python3 - "$tf" "$tool" "$mode" "$SRC_BYTES" "$rc" "${outs[@]}" >>"$ROWS" <<'PY'
import os, re, sys
tf, tool, mode, src_bytes, rc, outs = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), sys.argv[6:]
text = open(tf).read()
wall = re.search(r"Elapsed \(wall clock\) time.*: (\S+)", text).group(1)
secs = 0.0
for part in wall.split(":"):
    secs = secs * 60 + float(part)
rss_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", text).group(1))
size = 0
for o in outs:
    if os.path.isfile(o):
        size += os.path.getsize(o)
    for dp, ds, fs in os.walk(o):
        size += sum(os.path.getsize(os.path.join(dp, f)) for f in fs)
mbps = src_bytes / 1e6 / secs if secs > 0 else float("inf")
status = "" if rc == 0 else f" (FAILED, exit {rc})"
print(f"| {tool} | {mode}{status} | {secs:.2f} | {mbps:.1f} | {size / 1e6:.1f} | {rss_kb / 1024:.1f} |")
PY
  [ "$rc" -eq 0 ] || { echo "bench: $tool $mode failed, see below" >&2; tail -n 20 "$WORK/log.$tool.$mode" >&2; }
}

for c in none lz4_block zstd; do
  o=$WORK/out-nydus-$c
  mkdir -p "$o/blobs"
  bench_run nydus-image "$c" "$o" -- "$NI" create --fs-version 6 --compressor "$c" \
    -B "$o/image.boot" -D "$o/blobs" "$SRC"
  rm -rf "$o"
done
if command -v mkfs.erofs >/dev/null; then
  bench_run mkfs.erofs uncompressed "$WORK/erofs.img" -- mkfs.erofs --quiet "$WORK/erofs.img" "$SRC"
  rm -f "$WORK/erofs.img"
  # nydus-image fsyncs its blob and bootstrap before exiting (a blob named by
  # its hash must never be torn); this row makes mkfs.erofs' output durable too.
  bench_run mkfs.erofs "uncompressed + fsync" "$WORK/erofs.img" -- \
    bash -c 'mkfs.erofs --quiet "$1" "$2" && sync "$1"' _ "$WORK/erofs.img" "$SRC"
  rm -f "$WORK/erofs.img"
  bench_run mkfs.erofs "-zlz4" "$WORK/erofs-lz4.img" -- mkfs.erofs --quiet -zlz4 "$WORK/erofs-lz4.img" "$SRC"
  rm -f "$WORK/erofs-lz4.img"
else
  echo "bench: mkfs.erofs not installed (erofs-utils): skipped" >&2
fi

echo
echo "Source: $SRC — $((SRC_BYTES / 1000000)) MB in $SRC_FILES files; $(nproc) CPUs; warm page cache."
echo
echo "| tool | mode | seconds | MB/s | output MB | peak RSS MB |"
echo "|---|---|---:|---:|---:|---:|"
cat "$ROWS"
