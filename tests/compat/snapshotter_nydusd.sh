#!/usr/bin/env bash
# nydusd as nydus-snapshotter v0.15 starts and drives it. The command lines are
# the ones its pkg/daemon/command.BuildCommand makes (fields in DaemonCommand's
# order: subcommand, --fscache, --fscache-threads, --upgrade, --thread-num, --id,
# --config, --bootstrap, --mountpoint, --apisock, --log-level,
# --log-rotation-size, --supervisor, --log-file, --prefetch-files,
# --failover-policy), for a dedicated daemon (one image), a shared daemon (no
# bootstrap; images mounted at /<snapshot id> through POST /api/v1/mount with
# its MountRequest body) and fscache. Each answer it decodes goes through a
# strict mirror of its Go struct; trees are compared with the source.
#   - `nydusd --version` has a "Git Commit:" line (the snapshotter's regexp) naming
#     the checkout's HEAD (git is the oracle), the same as GET /api/v1/daemon;
#   - both daemons reach RUNNING; the images read back equal to their sources;
#   - shared: two images in one FUSE connection, one unmounted while the other
#     keeps serving; a bad mount request fails with an error body, nothing left;
#   - fscache: the snapshotter's command line parses; its BindBlob body (legacy
#     `config`, registry backend) registered with a nydusd whose cachefiles device is
#     the kernel emulator fills cache files the host's EROFS mounts == the source;
#   - parse errors exit 2 as clap does, --failover-policy none/flush parse.
set -uo pipefail
# shellcheck source-path=SCRIPTDIR source=../integration/lib/common.sh
source "$(dirname "$0")/../integration/lib/common.sh"

need_root_and_fuse
need_nydus_image
NYDUSD=${NYDUSD:-$NYDUS_BIN_DIR/nydusd}
[ -x "$NYDUSD" ] || die "nydusd not found at $NYDUSD"
COMPAT_LIB=$(cd "$(dirname "$0")/lib" && pwd)

WORK=$(mktemp -d "${NYDUS_TEST_TMP:-/var/tmp}/nydus-compat-snap.XXXXXX") || die "mktemp"
LOG_DIR=$WORK/logs
mkdir -p "$LOG_DIR"
PIDS=()
cleanup() {
  local p m
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null; done
  for p in "${PIDS[@]}"; do
    for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$p" 2>/dev/null
  done
  for m in "$WORK"/mnt-*; do [ -d "$m" ] && umount -l "$m" 2>/dev/null; done
  umount_below "$WORK"
  [ "${KEEP_WORK:-0}" = 1 ] && { echo "kept $WORK"; return; }
  rm -rf "$WORK"
}
trap cleanup EXIT

mkdir -p "$WORK/srcfs"
mount -t tmpfs -o size=1g,mode=0755 tmpfs "$WORK/srcfs" || die "tmpfs"
SRC1=$WORK/srcfs/one SRC2=$WORK/srcfs/two
step "make source trees" sh -c "'$PY' '$LIB_DIR/make_tree.py' --small '$SRC1' && '$PY' '$LIB_DIR/make_tree.py' --small --seed 7 '$SRC2'" ||
  die "make_tree.py failed"
CMP_OPTS=(--ignore-root-mtime --mtime-ns)

mkdir -p "$WORK/blobs" "$WORK/cache"
step "build image one" "$NYDUS_IMAGE" create -B "$WORK/one.boot" -D "$WORK/blobs" "$SRC1" || die "build"
step "build image two" "$NYDUS_IMAGE" create -B "$WORK/two.boot" -D "$WORK/blobs" "$SRC2" || die "build"

# The config the snapshotter writes for fusedev from its template (v1 shape).
CFG=$WORK/nydusd-config.json
cat >"$CFG" <<JSON
{"device":{"backend":{"type":"localfs","config":{"dir":"$WORK/blobs"}},
 "cache":{"type":"blobcache","compressed":false,"config":{"work_dir":"$WORK/cache"}}},
 "mode":"direct","digest_validate":false,"iostats_files":false,"enable_xattr":true,
 "fs_prefetch":{"enable":true,"threads_count":8,"merging_size":1048576,"prefetch_all":true}}
JSON

api() { curl -sS --unix-socket "$1" -X "$2" "http://unix$3" "${@:4}"; }
# decode SCHEMA: stdin JSON through the Go mirror named SCHEMA.
decode() { "$PY" "$COMPAT_LIB/decode.py" "$1"; }

# wait_running SOCK PID: the snapshotter polls GET /api/v1/daemon until RUNNING.
wait_running() {
  local i state
  for i in $(seq 100); do
    kill -0 "$2" 2>/dev/null || { echo "nydusd exited"; return 1; }
    state=$(api "$1" GET /api/v1/daemon 2>/dev/null | decode DaemonInfo 2>/dev/null |
      "$PY" -c 'import json,sys; print(json.load(sys.stdin)["state"])' 2>/dev/null)
    [ "$state" = RUNNING ] && { echo "RUNNING after $i polls"; return 0; }
    sleep 0.1
  done
  echo "never RUNNING (last state: ${state:-none})"; return 1
}

# ---- 1. version: the "Git Commit:" the snapshotter parses is this checkout's HEAD ----
check_version() {
  local out want got
  out=$("$NYDUSD" --version) || return 1
  printf '%s\n' "$out"
  got=$(printf '%s\n' "$out" | "$PY" -c 'import re,sys; m=re.search(r"Git Commit:\s*(.+)", sys.stdin.read()); print(m.group(1).strip() if m else "")')
  want=$(git -C "$NYDUS_SOURCE_DIR" rev-parse HEAD 2>/dev/null) || { echo "not a git checkout"; return 1; }
  echo "Git Commit: got '$got' want '$want'"
  [ "$got" = "$want" ] || return 1
  for k in "Version:" "Build Time:" "Profile:" "Rustc:"; do
    printf '%s\n' "$out" | grep -q "$k" || { echo "no '$k' line"; return 1; }
  done
  VERSION_COMMIT=$got
}
VERSION_COMMIT=
step "nydusd --version names HEAD" check_version

# ---- 2. dedicated fusedev daemon --------------------------------------------------------
MNT1=$WORK/mnt-dedicated SOCK1=$WORK/dedicated.sock
mkdir -p "$MNT1"
printf '/sizes\n\n  /dup  \n' >"$WORK/prefetch.list"
"$NYDUSD" fuse --thread-num 4 --config "$CFG" --bootstrap "$WORK/one.boot" --mountpoint "$MNT1" \
  --apisock "$SOCK1" --log-level info --log-rotation-size 100 --log-file "$LOG_DIR/dedicated" \
  --prefetch-files "$WORK/prefetch.list" --failover-policy resend >"$LOG_DIR/dedicated.out" 2>&1 &
PIDS+=($!)
DED_PID=$!
step "dedicated daemon RUNNING" wait_running "$SOCK1" "$DED_PID"
step "dedicated: --log-file gets .log" test -s "$LOG_DIR/dedicated.log"
step "dedicated: tree == source" compare_trees "$SRC1" "$MNT1" "${CMP_OPTS[@]}"
check_daemon_commit() {
  local got
  got=$(api "$1" GET /api/v1/daemon | decode DaemonInfo | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["version"]["git_commit"])')
  echo "daemon git_commit '$got', --version '$VERSION_COMMIT'"
  [ -n "$got" ] && [ "$got" = "$VERSION_COMMIT" ]
}
step "dedicated: GET /api/v1/daemon version.git_commit == --version" check_daemon_commit "$SOCK1"
stop_pid() {
  kill -TERM "$1" || return 1
  local i
  for i in $(seq 100); do kill -0 "$1" 2>/dev/null || break; sleep 0.1; done
  ! kill -0 "$1" 2>/dev/null && ! is_mounted "$2"
}
step "dedicated: SIGTERM unmounts" stop_pid "$DED_PID" "$MNT1"

# ---- 3. shared fusedev daemon: no --config/--bootstrap -----------------------------------
MNT2=$WORK/mnt-shared SOCK2=$WORK/shared.sock
mkdir -p "$MNT2"
"$NYDUSD" fuse --thread-num 4 --mountpoint "$MNT2" --apisock "$SOCK2" --log-level info \
  --log-rotation-size 100 --failover-policy resend >"$LOG_DIR/shared.out" 2>&1 &
PIDS+=($!)
SH_PID=$!
step "shared daemon RUNNING" wait_running "$SOCK2" "$SH_PID"
step "shared: empty before any mount" sh -c "[ -z \"\$(ls -A '$MNT2')\" ]"
# types.NewMountRequest(bootstrap, config): {"fs_type":"rafs","source":..., "config": <JSON text>}
mount_req() { "$PY" -c 'import json,sys; print(json.dumps({"fs_type":"rafs","source":sys.argv[1],"config":open(sys.argv[2]).read()}))' "$1" "$2"; }
shared_mount() {
  local code
  code=$(api "$SOCK2" POST "/api/v1/mount?mountpoint=/$1" -o "$WORK/resp" -w '%{http_code}' --data-binary "$(mount_req "$2" "$CFG")")
  echo "HTTP $code: $(cat "$WORK/resp")"
  [ "$code" = 204 ] || [ "$code" = 200 ]
}
step "shared: POST mount /snap-1" shared_mount snap-1 "$WORK/one.boot"
step "shared: POST mount /snap-2" shared_mount snap-2 "$WORK/two.boot"
ls_is() { local got; got=$(ls "$1" | tr '\n' ' '); echo "ls $1: '$got'"; [ "$got" = "$2" ]; }
step "shared: ls shows both" ls_is "$MNT2" "snap-1 snap-2 "
step "shared: /snap-1 == source one" compare_trees "$SRC1" "$MNT2/snap-1" "${CMP_OPTS[@]}"
step "shared: /snap-2 == source two" compare_trees "$SRC2" "$MNT2/snap-2" "${CMP_OPTS[@]}"
step "shared: backend_collection names both" sh -c "curl -sS --unix-socket '$SOCK2' http://unix/api/v1/daemon | '$PY' '$COMPAT_LIB/decode.py' DaemonInfo | '$PY' -c 'import json,sys; c=json.load(sys.stdin)[\"backend_collection\"]; print(sorted(c)); assert sorted(c)==[\"/snap-1\",\"/snap-2\"]'"
step "shared: metrics ?id=/snap-2 decodes" sh -c "curl -sSf --unix-socket '$SOCK2' 'http://unix/api/v1/metrics?id=/snap-2' | '$PY' '$COMPAT_LIB/decode.py' FsMetrics >/dev/null"
exec 7<"$MNT2/snap-2/sizes/rand-4097"  # an open file of the image that stays
step "shared: a mount over a used name is refused" sh -c "! curl -sSf --unix-socket '$SOCK2' -X POST 'http://unix/api/v1/mount?mountpoint=/snap-2' --data-binary '$(mount_req "$WORK/one.boot" "$CFG")' >/dev/null 2>&1"
step "shared: a missing bootstrap is refused with an error body" sh -c "curl -sS --unix-socket '$SOCK2' -X POST 'http://unix/api/v1/mount?mountpoint=/bad' --data-binary '$(mount_req "$WORK/none.boot" "$CFG")' | '$PY' '$COMPAT_LIB/decode.py' ErrorMessage && [ ! -e '$MNT2/bad' ]"
step "shared: DELETE /snap-1" sh -c "code=\$(curl -sS --unix-socket '$SOCK2' -X DELETE 'http://unix/api/v1/mount?mountpoint=/snap-1' -o /dev/null -w '%{http_code}'); [ \"\$code\" = 204 ]"
step "shared: /snap-1 gone, /snap-2 still serves" sh -c "[ ! -e '$MNT2/snap-1' ]" && step "shared: ls shows /snap-2 only" ls_is "$MNT2" "snap-2 "
step "shared: /snap-2 == source two after the unmount" compare_trees "$SRC2" "$MNT2/snap-2" "${CMP_OPTS[@]}"
step "shared: the open file still reads" sh -c "cmp - '$SRC2/sizes/rand-4097' <&7"
exec 7<&-
step "shared: remount /snap-1 serves image one again" shared_mount snap-1 "$WORK/one.boot"
step "shared: /snap-1 == source one after the remount" compare_trees "$SRC1" "$MNT2/snap-1" "${CMP_OPTS[@]}"
step "shared: SIGTERM unmounts" stop_pid "$SH_PID" "$MNT2"

# ---- 3b. shared daemon failover, as the snapshotter's --recover-policy failover does it ----
# The failover daemon starts while nobody answers the connection. It must not
# stat its mountpoint then: the shared root's attributes last 1 s, and such a
# stat waits for a GETATTR for good (containers_recovery.sh hung there now
# and then while nydusd resolved its whole mountpoint path at start).
NYDUSCTL=${NYDUSCTL:-$NYDUS_BIN_DIR/nydusctl}
MNT4=$WORK/mnt-shared-fo SUP4=$WORK/shared-fo-supervisor.sock
mkdir -p "$MNT4"
"$NYDUSCTL" supervise --path "$SUP4" >"$LOG_DIR/shared-fo-supervisor.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 50); do [ -S "$SUP4" ] && break; sleep 0.1; done
fo_daemon() {  # fo_daemon N [args...]: shared daemon N on MNT4, its API at shared-fo-N.sock
  "$NYDUSD" fuse --thread-num 4 --mountpoint "$MNT4" --apisock "$WORK/shared-fo-$1.sock" --supervisor "$SUP4" \
    --id shared_daemon --log-level info --failover-policy resend "${@:2}" >"$LOG_DIR/shared-fo-$1.out" 2>&1 &
  PIDS+=($!)
  FO_PID=$!
}
fo_first() {
  fo_daemon 1 && wait_running "$WORK/shared-fo-1.sock" "$FO_PID" || return 1
  FO1=$FO_PID
  local code
  code=$(api "$WORK/shared-fo-1.sock" POST "/api/v1/mount?mountpoint=/snap-1" -o "$WORK/resp" -w '%{http_code}' \
    --data-binary "$(mount_req "$WORK/one.boot" "$CFG")")
  [ "$code" = 204 ] || [ "$code" = 200 ] || { echo "mount: HTTP $code $(cat "$WORK/resp")"; return 1; }
  "$NYDUSCTL" --sock "$WORK/shared-fo-1.sock" sendfd
}
step "shared failover: a daemon with /snap-1, its fd and state at the supervisor" fo_first
step "shared failover: /snap-1 == source one" compare_trees "$SRC1" "$MNT4/snap-1" "${CMP_OPTS[@]}"
fo_kill() {
  kill -KILL "$FO1"; wait "$FO1" 2>/dev/null
  sleep 1.5  # the root's attributes expire: a stat of MNT4 would now wait for a GETATTR
  fo_daemon 2 --upgrade
  local i
  for i in $(seq 50); do [ -S "$WORK/shared-fo-2.sock" ] && break; sleep 0.1; done
  [ -S "$WORK/shared-fo-2.sock" ] || { echo "the failover daemon has no API socket after 5 s:"; tail -3 "$LOG_DIR/shared-fo-2.out"; return 1; }
  "$NYDUSCTL" --sock "$WORK/shared-fo-2.sock" takeover && "$NYDUSCTL" --sock "$WORK/shared-fo-2.sock" start &&
    wait_running "$WORK/shared-fo-2.sock" "$FO_PID"
}
step "shared failover: kill -9, 1.5 s, the --upgrade daemon takes the connection over" fo_kill
step "shared failover: /snap-1 == source one through the new daemon" compare_trees "$SRC1" "$MNT4/snap-1" "${CMP_OPTS[@]}"
step "shared failover: SIGTERM unmounts" stop_pid "$FO_PID" "$MNT4"

# ---- 4. fscache command line parses (no /dev/cachefiles here: it must fail on the device) ----
fscache_cmdline() {
  local rc
  mkdir -p "$WORK/fscache"
  timeout 10 "$NYDUSD" singleton --fscache "$WORK/fscache" --fscache-threads 4 --log-level info \
    --apisock "$WORK/fscache.sock" --log-rotation-size 100 >"$LOG_DIR/fscache.out" 2>&1
  rc=$?
  cat "$LOG_DIR/fscache.out"
  if [ -c /dev/cachefiles ]; then [ "$rc" -eq 124 ]; return; fi
  # Not a parse error (2): it got as far as opening the device.
  [ "$rc" -ne 2 ] && [ "$rc" -ne 124 ] && grep -qi cachefiles "$LOG_DIR/fscache.out"
}
step "fscache: the snapshotter's command line gets past parsing" fscache_cmdline

# ---- 4b. fscache: the snapshotter's BindBlob body, against the cachefiles emulator ----------
# The body is the snapshotter's own (fixtures/snapshotter-configs/fscache-bindblob.json:
# registry backend, legacy `config` form, id = domain_id = sha256("nydus-snapshot-12")),
# pointed at a local docker-registry holding image one's blob; the filled cache files are
# then mounted by the host's EROFS (as the kernel would) and compared with the source.
fscache_bindblob() {
  local d=$WORK/fscache-bind blob
  mkdir -p "$d/registry" "$d/mnt"
  start_registry "$d/registry" || return 1
  PIDS+=("$REGISTRY_PID")
  for blob in "$WORK"/blobs/*; do push_blob "$REGISTRY_HOST" dragonflyoss/image-service/nginx "$blob" || return 1; done
  "$PY" - "$COMPAT_LIB/../fixtures/snapshotter-configs/fscache-bindblob.json" "$d/entry.json" "$REGISTRY_HOST" \
    "$d/work" "$WORK/one.boot" <<'PY' || return 1
import json, sys
e = json.load(open(sys.argv[1]))
c = e["config"]
assert c["backend_config"]["host"] == "ghcr.io" and c["cache_type"] == "fscache"
c["backend_config"]["host"] = sys.argv[3]
c["backend_config"]["scheme"] = "http"          # the snapshotter's insecure registry setting
del c["backend_config"]["auth"]                 # this registry asks for none
c["cache_config"]["work_dir"] = sys.argv[4]
c["metadata_path"] = sys.argv[5]
json.dump(e, open(sys.argv[2], "w"))
PY
  "$NYDUS_BIN_DIR/fscache-emu-fill" --nydusd "$NYDUSD" --entry "$d/entry.json" --store "$d/store" \
    --threads 4 >"$d/objects" || return 1
  local boot devs=()
  boot=$(awk '$1 == "bootstrap" {print $2}' "$d/objects")
  while read -r kind path; do [ "$kind" = blob ] && devs+=(--device "$path"); done <"$d/objects"
  erofs_mount "$boot" "$d/mnt" "${devs[@]}" || return 1
  compare_trees "${CMP_OPTS[@]}" "$SRC1" "$d/mnt"
  local rc=$?
  erofs_umount "$d/mnt" >/dev/null 2>&1
  return $rc
}
step "fscache: the snapshotter's BindBlob body serves image one through the registry" fscache_bindblob

# ---- 5. flags: parse errors as clap (exit 2), policies, localfs-dir ---------------------
step "unknown flag exits 2" sh -c "'$NYDUSD' fuse --no-such-flag >/dev/null 2>&1; [ \$? -eq 2 ]"
step "--failover-policy bogus exits 2" sh -c "'$NYDUSD' fuse --mountpoint /x --failover-policy bogus >/dev/null 2>&1; [ \$? -eq 2 ]"
MNT3=$WORK/mnt-localfs
mkdir -p "$MNT3"
# -D/--localfs-dir: blobs and cache files in one directory; -m puts the image below /
cp -r "$WORK/blobs" "$WORK/localfs"
"$NYDUSD" --bootstrap "$WORK/two.boot" --localfs-dir "$WORK/localfs" --mountpoint "$MNT3" -m /sub \
  --apisock "$WORK/localfs.sock" --failover-policy none --rlimit-nofile 0 >"$LOG_DIR/localfs.out" 2>&1 &
PIDS+=($!)
LF_PID=$!
step "localfs-dir daemon RUNNING" wait_running "$WORK/localfs.sock" "$LF_PID"
# upstream's --localfs-dir config leaves enable_xattr off (its default): no xattrs
step "localfs-dir: image at -m /sub == source two (no xattrs)" compare_trees "$SRC2" "$MNT3/sub" "${CMP_OPTS[@]}" --no-xattr
step "localfs-dir: SIGTERM unmounts" stop_pid "$LF_PID" "$MNT3"

summary
