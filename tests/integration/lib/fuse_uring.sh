# shellcheck shell=bash
# FUSE over io_uring checks for the FUSE integration scripts (source after common.sh).
# With NYDUSD_FUSE_URING=on (lib/with_fuse_uring.sh) a script proves its daemon served
# requests through the rings; otherwise the checks are not run.

uring_forced() { [ "${NYDUSD_FUSE_URING:-}" = on ]; }

# uring_check SOCK [MOUNTPOINT]: the daemon at SOCK served requests of the connection
# (of MOUNTPOINT, for a daemon with several) through io_uring: its fs metrics count them
# (fuse_uring_requests > 0) and, where the daemon has one connection, its info says
# fuse_transport "io_uring".
uring_check() {
  local sock=$1 id=${2:-} q="" n t
  [ -n "$id" ] && q="?id=$id"
  n=$(curl -sf --max-time 30 --unix-socket "$sock" "http://localhost/api/v1/metrics$q" |
    "$PY" -c 'import json,sys; j=json.load(sys.stdin); j=j[0] if isinstance(j,list) else j; print(j["fuse_uring_requests"])') ||
    { echo "no fuse_uring_requests in the metrics"; return 1; }
  t=$(curl -sf --max-time 30 --unix-socket "$sock" http://localhost/api/v1/daemon |
    "$PY" -c 'import json,sys; print(json.load(sys.stdin).get("fuse_transport", "-"))') || return 1
  echo "requests served through io_uring: $n; fuse_transport: $t"
  [ "$n" -gt 0 ] || return 1
  [ "$t" = io_uring ] || [ "$t" = - ]
}
