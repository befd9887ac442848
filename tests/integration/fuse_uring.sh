#!/usr/bin/env bash
# nydusd's FUSE over io_uring switch (--fuse-uring auto|on|off, NYDUSD_FUSE_URING) against
# the kernel's own switch, the fuse module parameter enable_uring (read at each mount's
# INIT). For each case the tree read through the mount must equal the source, and the
# daemon's own account must match what the kernel allowed:
#   enable_uring=N, auto: ONE log line says why (the kernel does not offer it), info says
#                         fuse_transport "classic", no request went through a ring;
#   enable_uring=Y, auto: fuse_transport "io_uring", fuse_uring_requests > 0;
#   enable_uring=Y, off:  classic, the log line says off by configuration;
#   enable_uring=Y, auto, with a supervisor: classic (the kernel cannot resend what a
#                         dead daemon held in ring entries), the log line says so;
#   enable_uring=Y, on, failover: kill -9 of an idle daemon whose connection runs on
#                         rings, a reader starts in the gap (its request waits on a ring
#                         queue with no entry), a new daemon adopts the connection: it
#                         registers entries, the waiting read finishes with the right
#                         bytes, and the new daemon serves through its rings; then a live
#                         upgrade of that idle daemon (takeover, exit, start) to a daemon in
#                         auto mode keeps serving on rings (the handed-over INIT says so).
# Not tested: handovers under load on rings lose requests (src/fuse/fuse_uring.h).
# enable_uring is put back to its previous value at the end. Needs root and /dev/fuse;
# skips (kernel) without the parameter (Linux < 6.14 or fuse without io_uring).
# Env: NYDUS_BIN_DIR, NYDUS_TEST_TMP, KEEP_WORK=1.
set -uo pipefail
# shellcheck source-path=SCRIPTDIR source=lib/common.sh
source "$(dirname "$0")/lib/common.sh"

need_root_and_fuse
need_nydus_image
PARAM=/sys/module/fuse/parameters/enable_uring
[ -e "$PARAM" ] || skip_kernel "no FUSE over io_uring in this kernel ($PARAM)"
NYDUSD=$NYDUS_BIN_DIR/nydusd
NYDUSCTL=$NYDUS_BIN_DIR/nydusctl
[ -x "$NYDUSD" ] && [ -x "$NYDUSCTL" ] || die "nydusd or nydusctl missing in $NYDUS_BIN_DIR (build first)"
unset NYDUSD_FUSE_URING  # each case sets the switch itself

WORK=$(mktemp -d "${NYDUS_TEST_TMP:-/var/tmp}/nydus-uring.XXXXXX") || die "mktemp"
LOG_DIR=$WORK/logs
mkdir -p "$LOG_DIR" "$WORK/mnt"
MNT=$WORK/mnt
PREV=$(cat "$PARAM")
PIDS=()
cleanup() {
  local p
  for p in "${PIDS[@]}"; do kill -KILL "$p" 2>/dev/null; done
  umount -l "$MNT" 2>/dev/null
  echo "$PREV" >"$PARAM"
  echo "enable_uring restored to $(cat "$PARAM")"
  if [ "${KEEP_WORK:-0}" = 1 ]; then echo "kept $WORK"; return; fi
  rm -rf "$WORK"
}
trap cleanup EXIT

make_image() {
  "$PY" - "$WORK/src" <<'PY' || return 1
import os, random, sys
rnd = random.Random(11)
for i in range(60):
    d = os.path.join(sys.argv[1], f"d{i % 4}")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, f"f{i}"), "wb") as f:
        f.write(rnd.randbytes(int(2 ** rnd.uniform(8, 21))))
    os.symlink(f"f{i}", os.path.join(d, f"l{i}"))
PY
  mkdir -p "$WORK/blobs"
  "$NYDUS_IMAGE" create -B "$WORK/image.boot" -D "$WORK/blobs" "$WORK/src"
}
step "an image of 60 files and 60 symlinks" make_image || die "cannot build the image"

N=0  # daemon number: socket $WORK/d$N.sock, log $LOG_DIR/d$N.log, cache $WORK/cache-$N
DPID=
start() {  # start ARGS...: daemon N+1 on $MNT with a fresh cache; waits for the API socket
  N=$((N + 1))
  write_config "$WORK/config-$N.json" "$WORK/blobs" "$WORK/cache-$N"
  "$NYDUSD" --bootstrap "$WORK/image.boot" --config "$WORK/config-$N.json" --mountpoint "$MNT" \
    --apisock "$WORK/d$N.sock" --log-level "${LOG_LEVEL:-info}" --thread-num 4 "$@" >"$LOG_DIR/d$N.log" 2>&1 &
  DPID=$!
  PIDS+=("$DPID")
  for _ in $(seq 100); do [ -S "$WORK/d$N.sock" ] && return 0; sleep 0.05; done
  echo "daemon $N has no API socket"; cat "$LOG_DIR/d$N.log"; return 1
}
wait_mounted() { for _ in $(seq 100); do is_mounted "$MNT" && return 0; sleep 0.05; done; return 1; }
stop() {  # SIGTERM the current daemon: exit 0 and the mount gone
  kill -TERM "$DPID"; wait "$DPID"; local rc=$?
  is_mounted "$MNT" && { echo "still mounted"; return 1; }
  [ "$rc" -eq 0 ] || { echo "exit $rc"; return 1; }
}
same_tree() { diff -r --no-dereference "$WORK/src" "$MNT" && echo "tree == source"; }
transport() {  # transport N: fuse_transport and fuse_uring_requests of daemon N
  local t r
  t=$(curl -sf --unix-socket "$WORK/d$1.sock" http://localhost/api/v1/daemon |
    "$PY" -c 'import json,sys; print(json.load(sys.stdin).get("fuse_transport", "-"))') || return 1
  r=$(curl -sf --unix-socket "$WORK/d$1.sock" http://localhost/api/v1/metrics |
    "$PY" -c 'import json,sys; print(json.load(sys.stdin)["fuse_uring_requests"])') || return 1
  echo "$t $r"
}
# expect_classic N WHY: the log of daemon N has exactly one transport line, naming WHY;
# requests came through /dev/fuse only
expect_classic() {
  local lines t r
  lines=$(grep -c "FUSE transport:" "$LOG_DIR/d$1.log")
  grep "FUSE transport:" "$LOG_DIR/d$1.log"
  [ "$lines" -eq 1 ] || { echo "$lines transport lines, expected one"; return 1; }
  grep "FUSE transport:" "$LOG_DIR/d$1.log" | grep -q "read/write.*$2" || { echo "the line does not say: $2"; return 1; }
  read -r t r <<<"$(transport "$1")"
  echo "fuse_transport $t, requests through rings $r"
  [ "$t" = classic ] && [ "$r" = 0 ]
}
expect_uring() {
  local t r
  grep "FUSE transport:" "$LOG_DIR/d$1.log"
  read -r t r <<<"$(transport "$1")"
  echo "fuse_transport $t, requests through rings $r"
  [ "$t" = io_uring ] && [ "$r" -gt 0 ]
}
case_run() {  # case_run NAME PARAM EXPECT(classic WHY | uring) -- nydusd ARGS...
  local name=$1 param=$2 expect=$3 why=$4; shift 5
  echo "$param" >"$PARAM" || { fail_step "$name" "cannot set $PARAM"; return; }
  if step "$name: mount" start "$@" && step "$name: mounted" wait_mounted; then
    step "$name: tree == source" same_tree
    if [ "$expect" = classic ]; then
      step "$name: classic /dev/fuse, one log line: $why" expect_classic "$N" "$why"
    else
      step "$name: served through io_uring" expect_uring "$N"
    fi
    step "$name: SIGTERM unmounts" stop
  fi
}
case_run "enable_uring=N, auto" N classic "does not offer" --
case_run "enable_uring=Y, auto" Y uring "" --
case_run "enable_uring=Y, --fuse-uring off" Y classic "off by configuration" -- --fuse-uring off
SUP=$WORK/supervisor.sock
"$NYDUSCTL" supervise --path "$SUP" >"$LOG_DIR/supervisor.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 50); do [ -S "$SUP" ] && break; sleep 0.1; done
case_run "enable_uring=Y, auto, with a supervisor" Y classic "supervisor for failover" -- --supervisor "$SUP" --id t

# ---- failover of a connection that runs on rings -------------------------------------
echo Y >"$PARAM"
ctl() { "$NYDUSCTL" --sock "$WORK/d$1.sock" "${@:2}"; }
first() {
  start --supervisor "$SUP" --id t --fuse-uring on && wait_mounted || return 1
  same_tree >/dev/null && expect_uring "$N" && ctl "$N" sendfd
}
failover() {
  local dead=$DPID rel reader rc
  kill -KILL "$dead"; wait "$dead" 2>/dev/null
  sync; echo 3 >/proc/sys/vm/drop_caches  # the reader's pages must come from a daemon
  rel=d1/f1
  # Its request arrives while no daemon has an entry on the rings: it waits there.
  "$PY" -c 'import sys; sys.exit(0 if open(sys.argv[1],"rb").read() == open(sys.argv[2],"rb").read() else 3)' \
    "$MNT/$rel" "$WORK/src/$rel" & reader=$!
  sleep 0.5
  kill -0 "$reader" 2>/dev/null && echo "the read of $rel waits in the gap" || echo "the read of $rel did not wait"
  start --upgrade --supervisor "$SUP" --id t --fuse-uring on || return 1
  ctl "$N" takeover && ctl "$N" start || return 1
  timeout 20 tail --pid="$reader" -f /dev/null || { echo "the read of $rel never finished"; kill "$reader"; return 1; }
  wait "$reader"; rc=$?
  echo "read of $rel: exit $rc"
  [ "$rc" -eq 0 ]
}
if step "failover: first daemon on rings, fd to the supervisor" first; then
  step "failover: kill -9, a read waits, the new daemon adopts and answers it" failover
  step "failover: tree == source through the new daemon" same_tree
  step "failover: the new daemon serves through its own ring entries" expect_uring "$N"
  upgrade() {  # the snapshotter's live upgrade of an idle daemon on rings: takeover, exit, start
    local old=$N old_pid=$DPID
    ctl "$N" sendfd || return 1
    # auto, with a supervisor: on /dev/fuse for a new connection, but this one runs on
    # rings (its INIT, handed over, says so): not registering would leave every request waiting.
    start --upgrade --supervisor "$SUP" --id t || return 1
    ctl "$N" takeover || return 1
    curl -sf -X PUT --unix-socket "$WORK/d$old.sock" http://localhost/api/v1/daemon/exit || return 1
    wait "$old_pid"; echo "old daemon exited with $?"
    ctl "$N" start && ctl "$N" sendfd || return 1
    sync; echo 3 >/proc/sys/vm/drop_caches
    timeout 60 diff -r --no-dereference "$WORK/src" "$MNT" && echo "tree == source"
  }
  step "upgrade: an idle daemon on rings hands over; tree == source through the new one" upgrade
  step "upgrade: the new daemon serves through its own ring entries" expect_uring "$N"
  step "upgrade: SIGTERM unmounts" stop
fi

summary
