#!/usr/bin/env bash
# nydusd's HTTP API answers as upstream nydusd v2.4.4, checked against the Go
# structs nydus-snapshotter v0.15.15 (and upstream nydusctl) decode them into
# (lib/snapshotter_types.py, decoded strictly by lib/go_structs.py):
#   - every endpoint the snapshotter calls, on a FUSE daemon serving a small
#     image from a localfs backend; values are real (after reading files,
#     data_read and fop_hits[Read] > 0, the blob cache's underlying_files exist
#     in store_path, the backend counted reads);
#   - inflight lists a FUSE READ while it is blocked on a slow registry
#     backend, and answers 204 when idle;
#   - bad input gets upstream's status codes (unknown path 404, wrong method
#     400, malformed body 400, unknown counter 404) with an ErrorMessage body,
#     and the daemon keeps serving;
#   - an idle API connection stays open (the snapshotter's liveness monitor);
#   - upstream nydusctl's syntax works.
set -uo pipefail
# shellcheck source-path=SCRIPTDIR source=../integration/lib/common.sh
source "$(dirname "$0")/../integration/lib/common.sh"

need_root_and_fuse
need_nydus_image
NYDUSD=${NYDUSD:-$NYDUS_BIN_DIR/nydusd}
NYDUSCTL=${NYDUSCTL:-$NYDUS_BIN_DIR/nydusctl}
[ -x "$NYDUSD" ] || die "nydusd not found at $NYDUSD"
[ -x "$NYDUSCTL" ] || die "nydusctl not found at $NYDUSCTL"
command -v curl >/dev/null || die "curl missing (scripts/setup.sh installs it)"
COMPAT_LIB=$(cd "$(dirname "$0")/lib" && pwd)

WORK=$(mktemp -d "${NYDUS_TEST_TMP:-/var/tmp}/nydus-compat-api.XXXXXX") || die "mktemp"
LOG_DIR=$WORK/logs
mkdir -p "$LOG_DIR" "$WORK/mnt" "$WORK/mnt2" "$WORK/blobs" "$WORK/cache" "$WORK/cache2"
PIDS=()
cleanup() {
  local p
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null; done
  for p in "${PIDS[@]}"; do
    for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$p" 2>/dev/null
  done
  for m in "$WORK/mnt" "$WORK/mnt2"; do is_mounted "$m" && umount -l "$m" 2>/dev/null; done
  [ "${KEEP_WORK:-0}" = 1 ] && { echo "kept $WORK"; return; }
  rm -rf "$WORK"
}
trap cleanup EXIT

SOCK=$WORK/api.sock
# get PATH TYPE: GET, expect 200, decode as snapshotter_types.TYPE, print the body.
get() { curl -sS --unix-socket "$SOCK" -w '\n%{http_code}' "http://unix$1" >"$WORK/reply" || return 1
  local code; code=$(tail -n1 "$WORK/reply"); sed '$d' "$WORK/reply" >"$WORK/body"
  [ "$code" = 200 ] || { echo "GET $1: HTTP $code: $(cat "$WORK/body")"; return 1; }
  "$PY" "$COMPAT_LIB/decode.py" "$2" <"$WORK/body"; }
# status METHOD PATH [BODY]: print the HTTP status; the body lands in $WORK/body.
status() { local s=${4:-$SOCK}
  if [ $# -ge 3 ]; then curl -sS --unix-socket "$s" -X "$1" -o "$WORK/body" -w '%{http_code}' "http://unix$2" --data-binary "$3"
  else curl -sS --unix-socket "$s" -X "$1" -o "$WORK/body" -w '%{http_code}' "http://unix$2"; fi; }
# expect CODE [TYPE] METHOD PATH [BODY]: the status is CODE and the body decodes as TYPE (ErrorMessage for errors).
expect() { local want=$1 type=$2; shift 2; local got; got=$(status "$@") || return 1
  [ "$got" = "$want" ] || { echo "$1 $2: HTTP $got, want $want: $(cat "$WORK/body")"; return 1; }
  [ -z "$type" ] || "$PY" "$COMPAT_LIB/decode.py" "$type" <"$WORK/body" >/dev/null; }
py() { "$PY" -c "$1"; }
wait_running() {
  for _ in $(seq 100); do
    curl -sS --unix-socket "$1" http://unix/api/v1/daemon 2>/dev/null | grep -q '"RUNNING"' && return 0
    sleep 0.1
  done
  echo "not RUNNING"; return 1
}

step "make source tree" "$PY" "$LIB_DIR/make_tree.py" --small "$WORK/src" || die "make_tree.py"
step "build image" "$NYDUS_IMAGE" create -B "$WORK/image.boot" -D "$WORK/blobs" "$WORK/src" || die "build"
write_config "$WORK/config.json" "$WORK/blobs" "$WORK/cache"

"$NYDUSD" --bootstrap "$WORK/image.boot" --config "$WORK/config.json" --mountpoint "$WORK/mnt" \
  --apisock "$SOCK" --id compat-daemon --log-level info >"$LOG_DIR/nydusd.log" 2>&1 &
PIDS+=($!)
step "daemon RUNNING" wait_running "$SOCK" || die "nydusd did not start"

# --- daemon info ------------------------------------------------------------------------
step "GET /api/v1/daemon decodes as types.DaemonInfo" get /api/v1/daemon DaemonInfo
step "GET /api/v1/daemon: upstream's full DaemonInfo, backend_collection entries" sh -c \
  "curl -sS --unix-socket '$SOCK' http://unix/api/v1/daemon | '$PY' '$COMPAT_LIB/decode.py' DaemonInfoFull |
   '$PY' -c 'import json,sys; d=json.load(sys.stdin); assert d[\"id\"]==\"compat-daemon\", d; assert d[\"version\"][\"git_commit\"] not in (\"\",), d
c=d[\"backend_collection\"]; assert len(c)==1, c; e=list(c.values())[0]; assert e[\"backend_type\"]==\"Rafs\" and e[\"config\"][\"backend\"][\"type\"]==\"localfs\", e'"
step "GET /api/v2/daemon leaves backend_collection out" sh -c \
  "curl -sS --unix-socket '$SOCK' http://unix/api/v2/daemon | '$PY' '$COMPAT_LIB/decode.py' DaemonInfo |
   '$PY' -c 'import json,sys; d=json.load(sys.stdin); assert d.get(\"backend_collection\") is None, d'"

# --- metrics with real values ---------------------------------------------------------------
step "read every file through the mount" sh -c "find '$WORK/mnt' -type f -exec cat {} + >/dev/null"
step "metrics: FsMetrics with data_read > 0 and fop_hits[Read] > 0" sh -c \
  "curl -sS --unix-socket '$SOCK' http://unix/api/v1/metrics | '$PY' '$COMPAT_LIB/decode.py' FsMetrics |
   '$PY' -c 'import json,sys; m=json.load(sys.stdin); print(m)
assert all(len(m[k])==15 for k in (\"fop_hits\",\"fop_errors\",\"fop_cumulative_latency_total\")), m
assert len(m[\"block_count_read\"])==8 and len(m[\"read_latency_dist\"])==8, m
READ, READDIRPLUS = 4, 11   # upstream StatsFop order
assert m[\"data_read\"] > 0 and m[\"fop_hits\"][READ] > 0 and m[\"fop_hits\"][READDIRPLUS] > 0, m
assert sum(m[\"block_count_read\"]) >= m[\"fop_hits\"][READ] and sum(m[\"read_latency_dist\"]) > 0, m'"
step "metrics ?id=/ (the snapshotter's dedicated-daemon id) decodes" get "/api/v1/metrics?id=/" FsMetrics
step "blobcache: ONE CacheMetrics object, underlying_files exist in store_path" sh -c \
  "curl -sS --unix-socket '$SOCK' http://unix/api/v1/metrics/blobcache | '$PY' '$COMPAT_LIB/decode.py' CacheMetrics |
   '$PY' -c 'import json,sys,os; m=json.load(sys.stdin); print({k:v for k,v in m.items() if k!=\"blobs\"})
assert m[\"underlying_files\"], m
for f in m[\"underlying_files\"]: assert os.path.isfile(os.path.join(m[\"store_path\"], f)), f
assert os.path.samefile(m[\"store_path\"], \"$WORK/cache\"), m[\"store_path\"]
assert m[\"entries_count\"] > 0 and m[\"total\"] > 0, m'"
step "blobcache ?id=/ decodes" get "/api/v1/metrics/blobcache?id=/" CacheMetrics
step "backend: BackendMetrics with reads counted and the dist arrays" sh -c \
  "curl -sS --unix-socket '$SOCK' http://unix/api/v1/metrics/backend | '$PY' '$COMPAT_LIB/decode.py' BackendMetrics |
   '$PY' -c 'import json,sys; m=json.load(sys.stdin); print(m)
assert m[\"backend_type\"]==\"localfs\" and m[\"read_count\"] > 0 and m[\"read_amount_total\"] > 0, m
assert len(m[\"read_cumulative_latency_millis_dist\"])==8 and len(m[\"read_count_block_size_dist\"])==8, m
assert len(m[\"read_latency_sizes_dist\"])==8 and all(len(r)==8 for r in m[\"read_latency_sizes_dist\"]), m
assert sum(m[\"read_count_block_size_dist\"])==m[\"read_count\"], m'"
step "files (iostats_files): per-inode InodeIoStats with reads" sh -c \
  "curl -sS --unix-socket '$SOCK' http://unix/api/v1/metrics/files | '$PY' '$COMPAT_LIB/decode.py' FilesMetrics |
   '$PY' -c 'import json,sys; m=json.load(sys.stdin); assert any(v[\"data_read\"]>0 and v[\"fop_hits\"][4]>0 for v in m.values()), m'"
step "files?latest=true decodes as []uint64" get "/api/v1/metrics/files?latest=true" LatestReadFiles
step "pattern decodes as []AccessPattern" get /api/v1/metrics/pattern AccessPatterns
step "inflight: 204 when nothing is in progress" expect 204 "" GET /api/v1/metrics/inflight
step "events: ErrorHolder" get /api/v1/daemon/events ErrorHolder
step "daemon/backend?mountpoint=/ answers 200" expect 200 "" GET "/api/v1/daemon/backend?mountpoint=/"
step "daemon/backend without mountpoint: 400" expect 400 ErrorMessage GET /api/v1/daemon/backend

# --- runtime configuration ---------------------------------------------------------------
step "PUT /api/v1/config registry_auth: 204" expect 204 "" PUT "/api/v1/config?id=/" '{"registry_auth":"dXNlcjpwYXNz"}'
step "GET /api/v1/config?id=/ returns it" sh -c \
  "curl -sS --unix-socket '$SOCK' 'http://unix/api/v1/config?id=/' | '$PY' '$COMPAT_LIB/decode.py' RuntimeConfig |
   '$PY' -c 'import json,sys; assert json.load(sys.stdin)[\"registry_auth\"]==\"dXNlcjpwYXNz\"'"
step "PUT /api/v1/config unknown key: 500 as upstream" expect 500 ErrorMessage PUT /api/v1/config '{"no_such_key":"x"}'
step "PUT /api/v1/daemon log_level debug: 204" expect 204 "" PUT /api/v1/daemon '{"log_level":"debug"}'
step "PUT /api/v2/daemon log_level info: 204" expect 204 "" PUT /api/v2/daemon '{"log_level":"info"}'
step "PUT /api/v1/daemon bad level: 500 as upstream" expect 500 ErrorMessage PUT /api/v1/daemon '{"log_level":"loud"}'

# --- bad input ------------------------------------------------------------------------------
step "malformed JSON body (daemon): 400" expect 400 ErrorMessage PUT /api/v1/daemon '{"log_level":'
step "malformed JSON body (config): 400" expect 400 ErrorMessage PUT /api/v1/config '[1,'
step "malformed JSON body (mount): 400" expect 400 ErrorMessage POST "/api/v1/mount?mountpoint=/x" 'not json'
step "unknown path: 404" expect 404 ErrorMessage GET /api/v1/nothing-here
step "wrong method: 400 (upstream's BadRequest)" expect 400 ErrorMessage DELETE /api/v1/daemon
step "wrong method on metrics: 400" expect 400 ErrorMessage POST /api/v1/metrics '{}'
step "unknown metrics id: 404 (no counter)" expect 404 ErrorMessage GET "/api/v1/metrics?id=/no-such-fs"
step "unknown blobcache id: 404" expect 404 ErrorMessage GET "/api/v1/metrics/blobcache?id=/no-such-fs"
step "still serving after bad input" get /api/v1/daemon DaemonInfo

# --- an idle connection is never hung up -------------------------------------------------------
idle_conn() {
  "$PY" - "$SOCK" <<'PYEOF'
import select, socket, sys, time
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])
s.sendall(b"GET /api/v1/daemon HTTP/1.1\r\nHost: x\r\n\r\n"); time.sleep(0.3); s.recv(65536)
t0 = time.time()
while time.time() - t0 < 15:          # longer than the old 10 s request timeout
    r, _, _ = select.select([s], [], [], 0.5)
    if r:
        d = s.recv(1, socket.MSG_PEEK)
        sys.exit(f"connection {'hung up' if not d else 'got bytes'} after {time.time() - t0:.1f}s idle")
s.sendall(b"GET /api/v1/daemon HTTP/1.1\r\nHost: x\r\n\r\n"); time.sleep(0.3)
assert s.recv(65536).startswith(b"HTTP/1.1 200"), "no answer after the idle time"
print("open and serving after 15 s idle")
PYEOF
}
step "an idle keep-alive connection stays open 15 s and still serves" idle_conn

# --- nydusctl, upstream's syntax ------------------------------------------------------------------
step "nydusctl info" "$NYDUSCTL" -S "$SOCK" info
step "nydusctl info names the FUSE path: Driver: fusedev" sh -c "'$NYDUSCTL' -S '$SOCK' info | grep -x 'Driver:     fusedev'"
step "nydusctl metrics backend" sh -c "'$NYDUSCTL' -S '$SOCK' metrics backend --raw | '$PY' '$COMPAT_LIB/decode.py' BackendMetrics >/dev/null"
step "nydusctl metrics cache" sh -c "'$NYDUSCTL' -S '$SOCK' --raw metrics cache | '$PY' '$COMPAT_LIB/decode.py' CacheMetrics >/dev/null"
step "nydusctl metrics fsstats -I (prints again)" sh -c \
  "timeout 2.5 '$NYDUSCTL' -S '$SOCK' -r metrics fsstats -I 1 >'$WORK/fsstats.out'; [ \$(grep -c data_read '$WORK/fsstats.out') -ge 2 ]"
step "nydusctl set log-level info" "$NYDUSCTL" -S "$SOCK" set log-level info

# --- inflight while a read is blocked on a slow backend ---------------------------------------------
mkdir -p "$WORK/regblobs"
for f in "$WORK"/blobs/*; do ln -s "$f" "$WORK/regblobs/$(basename "$f")"; done
"$PY" "$LIB_DIR/slow_registry.py" "$WORK/regblobs" "$WORK/registry.port" 4000 2>"$LOG_DIR/registry.log" &
PIDS+=($!)
for _ in $(seq 50); do [ -s "$WORK/registry.port" ] && break; sleep 0.1; done
cat >"$WORK/config2.json" <<JSON
{"device":{"backend":{"type":"registry","config":{"scheme":"http","host":"127.0.0.1:$(cat "$WORK/registry.port")","repo":"compat/api","timeout":30}},
 "cache":{"type":"blobcache","config":{"work_dir":"$WORK/cache2"}}},
 "mode":"direct","digest_validate":false,"enable_xattr":true,"fs_prefetch":{"enable":false}}
JSON
SOCK2=$WORK/api2.sock
"$NYDUSD" --bootstrap "$WORK/image.boot" --config "$WORK/config2.json" --mountpoint "$WORK/mnt2" \
  --apisock "$SOCK2" --log-level info >"$LOG_DIR/nydusd2.log" 2>&1 &
PIDS+=($!)
step "slow-backend daemon RUNNING" wait_running "$SOCK2"
inflight_read() {
  local f; f=$(cd "$WORK/src" && find . -type f -size +1k | head -n1)
  cat "$WORK/mnt2/$f" >/dev/null &
  local reader=$! got=""
  for _ in $(seq 30); do
    got=$(curl -sS --unix-socket "$SOCK2" -w '%{http_code}' -o "$WORK/inflight" http://unix/api/v1/metrics/inflight)
    [ "$got" = 200 ] && break
    sleep 0.1
  done
  [ "$got" = 200 ] || { echo "inflight never showed the blocked read (last HTTP $got)"; return 1; }
  "$PY" "$COMPAT_LIB/decode.py" InflightMetrics <"$WORK/inflight" |
    "$PY" -c 'import json,sys,time; ops=json.load(sys.stdin); print(ops)
assert any(o["opcode"] == 15 and o["inode"] > 0 and abs(o["timestamp_secs"] - time.time()) < 60 for o in ops), ops'
  local rc=$?
  wait "$reader"
  return $rc
}
step "inflight shows a FUSE READ blocked on the backend" inflight_read
step "PUT /api/v1/config registry_auth on a registry daemon: 204" expect 204 "" PUT "/api/v1/config?id=/" '{"registry_auth":"dXNlcjpwYXNz"}' "$SOCK2"

summary
