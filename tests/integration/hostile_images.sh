#!/usr/bin/env bash
# The malicious-image suite. `hostile-image` (tests/tools/hostile_image.cpp)
# makes one hand-made image per attack from a good image of a small tree:
# directory loop, nid out of range, names overflowing their block, chunk
# indexes past the blob table and past the blob, a size near 2^64,
# overlapping chunks, an xattr count beyond the inode, a decompression bomb
# (a zstd frame of 256 MiB of zeros in a 64 KiB chunk) and a truncated
# bootstrap. For each:
#   - `nydus-image check` rejects it with the case's own message;
#   - one `nydusd singleton` mounts it through the API next to a good image:
#     either the mount is refused with a JSON error naming the problem, or a
#     walk of the mount (lstat, listdir, readlink, xattrs, full reads) fails
#     on the attacked path with EIO/EINVAL/ELOOP, within a time bound, and
#     every file that does read has the source's bytes;
#   - the good mount still equals its source, and the daemon is alive.
# At the end the daemon's peak RSS shows the bomb was never inflated.
# Needs root and /dev/fuse (else exit 77). Env: NYDUS_BIN_DIR, NYDUS_TEST_TMP, KEEP_WORK=1.
set -uo pipefail
# shellcheck source-path=SCRIPTDIR source=lib/common.sh
source "$(dirname "$0")/lib/common.sh"

need_root_and_fuse
need_nydus_image
NYDUSD=$NYDUS_BIN_DIR/nydusd
HOSTILE=$NYDUS_BIN_DIR/hostile-image
[ -x "$NYDUSD" ] && [ -x "$HOSTILE" ] || die "nydusd or hostile-image missing in $NYDUS_BIN_DIR (build first)"
command -v setfattr >/dev/null || skip "needs setfattr (attr)"

WORK=$(mktemp -d "${NYDUS_TEST_TMP:-/var/tmp}/nydus-hostile.XXXXXX") || die "mktemp"
LOG_DIR=$WORK/logs
mkdir -p "$LOG_DIR"
DAEMON_PID=
cleanup() {
  [ -n "$DAEMON_PID" ] && kill -KILL "$DAEMON_PID" 2>/dev/null
  local m
  for m in "$WORK"/mnt/*; do [ -d "$m" ] && { fusermount3 -u "$m" 2>/dev/null || umount -l "$m" 2>/dev/null; }; done
  if [ "${KEEP_WORK:-0}" = 1 ]; then echo "kept $WORK"; return; fi
  rm -rf "$WORK"
}
trap cleanup EXIT

# ---- the good image -----------------------------------------------------------------------
SRC=$WORK/src
make_good() {
  mkdir -p "$SRC/dir/sub" "$WORK/good/blobs" &&
    echo hello >"$SRC/dir/file.txt" && echo inner >"$SRC/dir/sub/inner" &&
    # 4 chunks of 64 KiB: 24 KiB random + zeros, so each compresses to ~24 KiB
    for _ in 1 2 3 4; do head -c 24576 /dev/urandom; head -c 40960 /dev/zero; done >"$SRC/big.bin" &&
    echo x >"$SRC/xattrs.txt" && setfattr -n user.a -v 1 "$SRC/xattrs.txt" &&
    setfattr -n user.longer.name -v 0123456789 "$SRC/xattrs.txt" &&
    ln -s dir/file.txt "$SRC/link" &&
    "$NYDUS_IMAGE" create -B "$WORK/good/image.boot" -D "$WORK/good/blobs" --chunk-size 0x10000 \
      --compressor zstd "$SRC" &&
    "$NYDUS_IMAGE" check -B "$WORK/good/image.boot" -D "$WORK/good/blobs"
}
step "a good image of the tree (check passes)" make_good || die "cannot build the good image"
step "hostile-image makes the cases" bash -c '"$1" "$2/good/image.boot" "$2/good/blobs" "$2/cases" >"$2/cases.tsv"' \
  _ "$HOSTILE" "$WORK" || die "hostile-image failed"

# What `check` must say for each case (its own message, not just "invalid").
declare -A CHECK_SAYS=(
  [dir-loop]="directory loop"
  [nid-out-of-range]="nid beyond image end"
  [name-past-block]="nameoff"
  [dir-size-past-block]="nameoff"
  [chunk-blob-past-table]="blob index 126 out of range"
  [chunk-ci-past-blob]="ci index 65520 >= blob 0 chunk count"
  [size-near-2^64]="chunk indexes"
  [overlapping-chunks]="disagrees with its offset"
  [xattr-count-past-inode]="xattr area exceeds image"
  [decompression-bomb]="zstd: Destination buffer is too small"
  [truncated-bootstrap]="not a multiple of 4096"
)

# The cases made are exactly the ones above: none missing (an empty cases.tsv would
# otherwise pass every loop below), none without its expected message.
cases_complete() {
  local dir target name n=0 made=" "
  while IFS=$'\t' read -r dir target; do
    name=${dir#*-}
    n=$((n + 1)); made+="$name "
    [ -n "${CHECK_SAYS[$name]:-}" ] || { echo "case $name has no expected message in CHECK_SAYS"; return 1; }
  done <"$WORK/cases.tsv"
  for name in "${!CHECK_SAYS[@]}"; do
    [[ "$made" == *" $name "* ]] || { echo "case $name was not made"; return 1; }
  done
  echo "$n cases made, ${#CHECK_SAYS[@]} expected"
  [ "$n" -eq 11 ] && [ "${#CHECK_SAYS[@]}" -eq 11 ]
}
step "hostile-image made all 11 cases, each with its expected message" cases_complete

# ---- check rejects each -----------------------------------------------------------------------
check_rejects() {  # check_rejects CASE_DIR NAME
  local out rc
  [ -n "${CHECK_SAYS[$2]:-}" ] || { echo "no expected message for $2"; return 1; }
  out=$("$NYDUS_IMAGE" check -B "$1/image.boot" -D "$1/blobs" 2>&1); rc=$?
  echo "$out"
  [ "$rc" -ne 0 ] || { echo "check accepted it"; return 1; }
  grep -qF -- "${CHECK_SAYS[$2]}" <<<"$out" || { echo "check did not say: ${CHECK_SAYS[$2]}"; return 1; }
}
while IFS=$'\t' read -r dir target; do
  name=${dir#*-}
  step "check rejects $dir ($target)" check_rejects "$WORK/cases/$dir" "$name"
done <"$WORK/cases.tsv"

# ---- one daemon serves the good image and every hostile one --------------------------------------
SOCK=$WORK/api.sock
"$NYDUSD" singleton --apisock "$SOCK" --log-level info >"$LOG_DIR/daemon.log" 2>&1 &
DAEMON_PID=$!
for _ in $(seq 100); do [ -S "$SOCK" ] && break; sleep 0.1; done
api() { curl -s --max-time 30 --unix-socket "$SOCK" "$@"; }
mount_body() {  # mount_body IMAGE_DIR CACHE_DIR
  "$PY" -c 'import json,sys; d,c=sys.argv[1:]; print(json.dumps({"source": d+"/image.boot", "fs_type": "rafs",
    "config": json.dumps({"device": {"backend": {"type": "localfs", "config": {"dir": d+"/blobs"}},
      "cache": {"type": "blobcache", "config": {"work_dir": c}}}, "mode": "direct",
      "digest_validate": True, "enable_xattr": True})}))' "$1" "$2"
}
mkdir -p "$WORK/mnt/good"
good_mount() {
  api -sf -X POST "http://localhost/api/v1/mount?mountpoint=$WORK/mnt/good" -d "$(mount_body "$WORK/good" "$WORK/cache/good")" &&
    is_mounted "$WORK/mnt/good"
}
step "mount the good image" good_mount || die "cannot mount the good image"
good_still_good() {  # the good mount equals its source, the daemon is up and says RUNNING
  kill -0 "$DAEMON_PID" || { echo "daemon died"; return 1; }
  api -sf http://localhost/api/v1/daemon | grep -q '"RUNNING"' || { echo "daemon not RUNNING"; return 1; }
  compare_trees -q "$SRC" "$WORK/mnt/good"
}

# hostile_mount DIR TARGET: refused with a JSON error, or served with errors only on TARGET.
hostile_mount() {
  local dir=$1 target=${2#/} mnt=$WORK/mnt/$1 code body
  mkdir -p "$mnt"
  body=$(api -w '\n%{http_code}' -X POST "http://localhost/api/v1/mount?mountpoint=$mnt" \
    -d "$(mount_body "$WORK/cases/$dir" "$WORK/cache/$dir")")
  code=$(tail -n1 <<<"$body")
  echo "mount: HTTP $code $(head -n -1 <<<"$body")"
  if [ "$code" != 204 ]; then
    is_mounted "$mnt" && { echo "refused but mounted"; return 1; }
    head -n -1 <<<"$body" | "$PY" -c 'import json,sys; e=json.load(sys.stdin); assert e["message"], e' ||
      { echo "no JSON error message"; return 1; }
    return 0
  fi
  is_mounted "$mnt" || { echo "accepted but not mounted"; return 1; }
  timeout 60 "$PY" "$LIB_DIR/hostile_walk.py" "$mnt" "$SRC" >"$LOG_DIR/walk-$dir.json" ||
    { echo "walk did not finish"; return 1; }
  cat "$LOG_DIR/walk-$dir.json"
  "$PY" - "$LOG_DIR/walk-$dir.json" "$target" <<'PY'
import json, sys
w, target = json.load(open(sys.argv[1])), sys.argv[2]
assert not w["wrong"], f"wrong bytes in {w['wrong']}"
assert w["errors"], "no access failed"
for path, call, err in w["errors"]:
    assert err in ("EIO", "EINVAL", "ELOOP"), f"{path}: {call} gave {err}"
    assert target == "" or path == target or path.startswith(target + "/") or target.startswith(path + "/"), \
        f"{path} failed, not {target}"
PY
}
while IFS=$'\t' read -r dir target; do
  step "nydusd serves $dir: refused or EIO on $target only" hostile_mount "$dir" "$target"
  step "  ... the good mount is still right, the daemon RUNNING" good_still_good
done <"$WORK/cases.tsv"

umount_all() {
  local m
  for m in "$WORK"/mnt/*; do
    is_mounted "$m" || continue
    api -sf -X DELETE "http://localhost/api/v1/mount?mountpoint=$m" || { echo "umount $m refused"; return 1; }
    is_mounted "$m" && { echo "$m still mounted"; return 1; }
  done
  kill -0 "$DAEMON_PID"
}
step "every mount unmounts through the API; the daemon lives" umount_all
RSS_LIMIT_MB=${HOSTILE_RSS_LIMIT_MB:-128}  # more under ASan (its shadow memory)
peak_rss() {  # a 256 MiB bomb inflated once would show here
  local kb
  kb=$(awk '/^VmHWM/ {print $2}' "/proc/$DAEMON_PID/status")
  echo "nydusd peak RSS ${kb} kB"
  [ "$kb" -lt $((RSS_LIMIT_MB * 1024)) ]
}
step "the daemon's peak RSS stayed under $RSS_LIMIT_MB MiB" peak_rss
clean_exit() {
  local rc
  api -sf -X PUT http://localhost/api/v1/daemon/exit || return 1
  wait "$DAEMON_PID"; rc=$?
  DAEMON_PID=
  echo "exit status $rc"
  [ "$rc" -eq 0 ]
}
step "the daemon exits cleanly through the API" clean_exit

summary
