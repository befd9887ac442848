# shellcheck shell=bash
# Shared helpers for tests/integration/*.sh. Source it; it sets:
#   LIB_DIR NYDUS_SOURCE_DIR NYDUS_BIN_DIR NYDUS_IMAGE PY
# and provides step/skip/die/summary and mount tracking. Scripts must `set -uo pipefail`
# (not -e: steps record failures and the script goes on to the next independent step).

LIB_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
NYDUS_SOURCE_DIR=${NYDUS_SOURCE_DIR:-$(cd "$LIB_DIR/../../.." && pwd)}
NYDUS_BIN_DIR=${NYDUS_BIN_DIR:-$NYDUS_SOURCE_DIR/build/bin}
NYDUS_IMAGE=${NYDUS_IMAGE:-$NYDUS_BIN_DIR/nydus-image}
NYDUS_FIXTURES_DIR=${NYDUS_FIXTURES_DIR:-$NYDUS_SOURCE_DIR/tests/fixtures/upstream}
PY=${PYTHON:-python3}
STEP_TIMEOUT=${STEP_TIMEOUT:-900}

PASSES=0
FAILS=0
FAILED_STEPS=()
STEP_NO=0
LOG_DIR=${LOG_DIR:-}

# skip REASON: a prerequisite is missing. In CI (CI=true) that is a failure:
# scripts/setup.sh installs everything the suite uses, and CI runs as root.
skip() {
  if [ "${CI:-}" = true ]; then echo "FAIL: would skip in CI (setup installs this): $*" >&2; exit 1; fi
  echo "SKIP: $*"; exit 77
}
# skip_kernel REASON: the running kernel truly lacks a feature: a skip, even in CI.
skip_kernel() { echo "SKIP (kernel): $*"; exit 77; }
die() { echo "FAIL: $*" >&2; exit 1; }

# step NAME CMD...: run CMD (with a timeout unless it is a shell function), output to a per-step log; print PASS/FAIL.
# On failure the last 40 lines of the log are shown. Returns CMD's status.
step() {
  local name=$1; shift
  STEP_NO=$((STEP_NO + 1))
  local log start=$SECONDS rc=0
  log=${LOG_DIR:-/tmp}/step-$(printf %03d "$STEP_NO").log
  if [ "$(type -t "$1")" = function ]; then
    { echo "+ $*"; "$@"; } >"$log" 2>&1 || rc=$?
  else
    { echo "+ $*"; timeout --kill-after=10 "$STEP_TIMEOUT" "$@"; } >"$log" 2>&1 || rc=$?
  fi
  if [ "$rc" -eq 0 ]; then
    PASSES=$((PASSES + 1))
    printf 'PASS %s (%ss)\n' "$name" "$((SECONDS - start))"
  else
    FAILS=$((FAILS + 1))
    FAILED_STEPS+=("$name")
    printf 'FAIL %s (exit %s%s, %ss) log: %s\n' "$name" "$rc" \
      "$([ "$rc" -eq 124 ] && echo ", timed out after ${STEP_TIMEOUT}s")" "$((SECONDS - start))" "$log"
    tail -n 40 "$log" | sed 's/^/    | /'
  fi
  return "$rc"
}

# fail_step NAME MESSAGE: record a failure that isn't a command.
fail_step() {
  FAILS=$((FAILS + 1))
  FAILED_STEPS+=("$1")
  printf 'FAIL %s: %s\n' "$1" "$2"
}

# summary: print totals, return 0 only if nothing failed.
summary() {
  echo "----"
  echo "$PASSES steps passed, $FAILS failed"
  local s
  for s in "${FAILED_STEPS[@]}"; do echo "  failed: $s"; done
  [ "$FAILS" -eq 0 ]
}

# need_nydus_image: a missing binary is a failure, not a skip.
need_nydus_image() {
  [ -x "$NYDUS_IMAGE" ] || die "nydus-image not found at $NYDUS_IMAGE (build first; set NYDUS_BIN_DIR)"
}

need_root_and_erofs() {
  [ "$(id -u)" -eq 0 ] || skip "needs root (mount(2) of EROFS images)"
  if ! grep -qw erofs /proc/filesystems; then
    modprobe erofs 2>/dev/null || true
    grep -qw erofs /proc/filesystems || skip_kernel "kernel has no EROFS (not in /proc/filesystems)"
  fi
}

need_root_and_fuse() {
  [ "$(id -u)" -eq 0 ] || skip "needs root (FUSE mounts)"
  [ -c /dev/fuse ] || skip_kernel "no /dev/fuse"
}

# need_fanotify_erofs DIR: fanotify pre-content events (Linux 6.14+) and
# file-backed EROFS mounts work on DIR's filesystem, else exit 77 (the kernel
# lacks them). Needs need_nydus_image; leaves DIR/probe* behind.
need_fanotify_erofs() {
  local dir=$1 PROBE_DEV
  "$PY" - "$dir" <<'PYEOF' || skip_kernel "fanotify pre-content events unavailable (needs Linux 6.14+): $(cat "$dir/probe.err" 2>/dev/null)"
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
err = open(os.path.join(sys.argv[1], "probe.err"), "w")
fd = libc.fanotify_init(0x8 | 0x1, os.O_RDWR)  # FAN_CLASS_PRE_CONTENT | FAN_CLOEXEC
if fd < 0:
    err.write("fanotify_init: " + os.strerror(ctypes.get_errno())); sys.exit(1)
p = os.path.join(sys.argv[1], "probe.file"); open(p, "w").close()
libc.fanotify_mark.argtypes = [ctypes.c_int, ctypes.c_uint, ctypes.c_uint64, ctypes.c_int, ctypes.c_char_p]
if libc.fanotify_mark(fd, 1, 0x00100000, -100, p.encode()) != 0:  # FAN_MARK_ADD, FAN_PRE_ACCESS, AT_FDCWD
    err.write("fanotify_mark(FAN_PRE_ACCESS): " + os.strerror(ctypes.get_errno())); sys.exit(1)
PYEOF
  mkdir -p "$dir/probe/src" "$dir/probe/cache" "$dir/probe/mnt"
  echo probe >"$dir/probe/src/f"
  "$NYDUS_IMAGE" create -B "$dir/probe/boot" -D "$dir/probe" --blob-cache-dir "$dir/probe/cache" "$dir/probe/src" \
    >/dev/null 2>&1 || die "nydus-image create (probe) failed"
  PROBE_DEV=$(find "$dir/probe/cache" -name '*.blob.data' | head -n1)
  erofs_mount "$dir/probe/boot" "$dir/probe/mnt" --device "$PROBE_DEV" >"$dir/probe.log" 2>&1 ||
    skip_kernel "file-backed EROFS mounts unavailable: $(tail -n1 "$dir/probe.log")"
  erofs_umount "$dir/probe/mnt" >/dev/null 2>&1
}

erofs_mount() { "$PY" "$LIB_DIR/erofs_mount.py" mount "$@"; }
erofs_umount() { "$PY" "$LIB_DIR/erofs_mount.py" umount "$@"; }
compare_trees() { "$PY" "$LIB_DIR/compare_trees.py" "$@"; }
# backend_metric SOCK FIELD: one field (read_count, read_amount_total, ...) of nydusd's
# GET /api/v1/metrics/backend on API socket SOCK.
backend_metric() {
  curl -sf --unix-socket "$1" http://localhost/api/v1/metrics/backend |
    "$PY" -c 'import json,sys; print(json.load(sys.stdin)[sys.argv[1]])' "$2"
}

# umount_below DIR: unmount everything mounted at or below DIR (deepest first, lazily).
umount_below() {
  local dir=$1 m
  [ -n "$dir" ] || return 0
  while read -r m; do
    [ -n "$m" ] && umount -l "$m" 2>/dev/null
  done < <(awk -v d="$dir" '$2 == d || index($2, d "/") == 1 {print $2}' /proc/self/mounts | sort -r)
}

# flip_byte FILE OFFSET: invert one byte in place (corruption tests).
flip_byte() {
  "$PY" -c 'import sys; f = open(sys.argv[1], "r+b"); o = int(sys.argv[2]); f.seek(o); b = f.read(1); f.seek(o); f.write(bytes([b[0] ^ 0xff]))' \
    "$1" "$2"
}

# dict_blob_table OUT_JSON DICT_JSON BOOT LAYER_ID MIN: a ref build against a chunk
# dictionary took at least MIN chunks from it (create -J's stats), and BOOT's blob
# table (inspect) is the layer's blob, then the dictionary's.
dict_blob_table() {
  "$NYDUS_IMAGE" inspect -B "$3" -R blobs -J "$3.blobs.json" >/dev/null || return 1
  "$PY" - "$1" "$2" "$3.blobs.json" "$4" "$5" <<'EOF'
import json, sys
out, dictj, blobs = (json.load(open(p)) for p in sys.argv[1:4])
st = out["stats"]
print(f"{st['chunks']} chunks, {st['chunks_stored']} from the layer, {st['chunks_from_dict']} from the dictionary")
assert st["chunks_from_dict"] >= int(sys.argv[5]), f"fewer than {sys.argv[5]} chunks from the dictionary"
ids = [b["blob_id"] for b in blobs["blobs"]]
want = [sys.argv[4]] + [b if isinstance(b, str) else b.get("blob_id") for b in dictj["blobs"]]
assert ids == want, f"blob table {ids}, want {want}"
EOF
}

# blob_ids JSON: print the blob ids listed in `nydus-image create -J` output, one a line.
blob_ids() {
  "$PY" - "$1" <<'EOF'
import json, sys
doc = json.load(open(sys.argv[1]))
for b in doc["blobs"]:
    print(b if isinstance(b, str) else (b.get("blob_id") or b.get("id")))
EOF
}

# count_entries DIR: number of entries below DIR (not counting DIR), newline-safe.
count_entries() {
  "$PY" -c 'import os,sys; print(sum(len(d)+len(f) for _,d,f in os.walk(sys.argv[1])))' "$1"
}

# start_registry DIR: Debian's docker-registry (OCI distribution) on a free
# loopback port, anonymous, storage in DIR. Sets REGISTRY_HOST and REGISTRY_PID.
# With NYDUS_REGISTRY_ACCESS_LOG=1 its access log (Apache combined: status and bytes
# sent per request) goes to $dir/registry.log.
# NYDUS_REGISTRY_HTPASSWD=FILE: Basic auth against that htpasswd file (bcrypt);
# NYDUS_REGISTRY_PORT: that port instead of a free one (a restart at the same
# address); NYDUS_REGISTRY_LOG_LEVEL: its app log level (info logs each
# request with auth.user.name); the log is appended to across restarts.
start_registry() {
  local dir=$1 port
  command -v docker-registry >/dev/null || { echo "docker-registry not installed"; return 1; }
  port=${NYDUS_REGISTRY_PORT:-$("$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}
  REGISTRY_HOST=127.0.0.1:$port
  mkdir -p "$dir/data"
  cat >"$dir/config.yml" <<YML
version: 0.1
log:
  level: ${NYDUS_REGISTRY_LOG_LEVEL:-error}
  accesslog:
    disabled: $([ "${NYDUS_REGISTRY_ACCESS_LOG:-0}" = 1 ] && echo false || echo true)
storage:
  filesystem:
    rootdirectory: $dir/data
http:
  addr: $REGISTRY_HOST
YML
  [ -n "${NYDUS_REGISTRY_HTPASSWD:-}" ] && cat >>"$dir/config.yml" <<YML
auth:
  htpasswd:
    realm: nydus-test
    path: $NYDUS_REGISTRY_HTPASSWD
YML
  docker-registry serve "$dir/config.yml" >>"$dir/registry.log" 2>&1 &
  REGISTRY_PID=$!
  local i
  for i in $(seq 100); do
    # Up: /v2/ answers (401 when it wants credentials).
    curl -s -o /dev/null -w '%{http_code}' "http://$REGISTRY_HOST/v2/" 2>/dev/null | grep -qE '^(200|401)$' && return 0
    sleep 0.1
  done
  echo "docker-registry did not come up"; cat "$dir/registry.log"; return 1
}

# push_blob HOST REPO FILE: upload FILE as blob sha256:<its digest> (monolithic upload).
push_blob() {
  local host=$1 repo=$2 file=$3 digest loc
  digest=sha256:$(sha256sum "$file" | cut -d' ' -f1)
  loc=$(curl -sf -X POST -D - -o /dev/null "http://$host/v2/$repo/blobs/uploads/" |
        tr -d '\r' | awk 'tolower($1) == "location:" {print $2}')
  [ -n "$loc" ] || { echo "upload start failed"; return 1; }
  case $loc in http*) ;; *) loc="http://$host$loc" ;; esac
  case $loc in *\?*) loc="$loc&digest=$digest" ;; *) loc="$loc?digest=$digest" ;; esac
  curl -sf -X PUT -H 'Content-Type: application/octet-stream' --data-binary "@$file" "$loc" >/dev/null ||
    { echo "upload of $file failed"; return 1; }
  curl -sf -I "http://$host/v2/$repo/blobs/$digest" >/dev/null
}

is_mounted() { awk -v d="$1" '$5 == d {f=1} END {exit !f}' /proc/self/mountinfo; }

# write_config FILE BLOBDIR WORKDIR [DIGEST_VALIDATE]: a nydusd config for a
# local blob dir and a blob cache (FUSE and fanotify modes read the same).
write_config() {
  cat >"$1" <<JSON
{
  "device": {
    "backend": {"type": "localfs", "config": {"dir": "$2"}},
    "cache": {"type": "blobcache", "config": {"work_dir": "$3"}}
  },
  "mode": "direct",
  "digest_validate": ${4:-false},
  "iostats_files": true,
  "enable_xattr": true,
  "amplify_io": 1048576,
  "fs_prefetch": {"enable": false}
}
JSON
}
