# shellcheck shell=bash
# One nydusd at a time for a test script that mounts images one by one.
# Source after lib/common.sh with NYDUSD and WORK set; then `trap one_nydusd_cleanup EXIT`.
#   start_daemon BOOT CONFIG MNT SOCK   start it, wait for MNT to be mounted (log: MNT.daemon.log)
#   stop_daemon MNT                     SIGTERM; exit status 0 and MNT unmounted, or fail
DAEMON_PID=

one_nydusd_cleanup() {
  if [ -n "$DAEMON_PID" ] && kill -0 "$DAEMON_PID" 2>/dev/null; then
    kill -TERM "$DAEMON_PID" 2>/dev/null
    for _ in $(seq 50); do kill -0 "$DAEMON_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$DAEMON_PID" 2>/dev/null
  fi
  local m
  for m in "$WORK"/*/mnt; do
    [ -d "$m" ] && { fusermount3 -u "$m" 2>/dev/null || umount -l "$m" 2>/dev/null; }
  done
  umount_below "$WORK"
  if [ "${KEEP_WORK:-0}" = 1 ]; then echo "kept $WORK"; return; fi
  rm -rf "$WORK"
}

start_daemon() {
  local boot=$1 cfg=$2 mnt=$3 sock=$4 i
  mkdir -p "$mnt"
  "$NYDUSD" --bootstrap "$boot" --config "$cfg" --mountpoint "$mnt" --apisock "$sock" \
    --log-level info --thread-num 2 >"$mnt.daemon.log" 2>&1 &
  DAEMON_PID=$!
  for i in $(seq 200); do
    if is_mounted "$mnt"; then echo "mounted after $i polls (pid $DAEMON_PID)"; return 0; fi
    kill -0 "$DAEMON_PID" 2>/dev/null || { echo "nydusd exited early"; cat "$mnt.daemon.log"; return 1; }
    sleep 0.1
  done
  echo "not mounted after 20s"; cat "$mnt.daemon.log"; return 1
}

stop_daemon() {
  local mnt=$1 rc i
  kill -TERM "$DAEMON_PID" || return 1
  for i in $(seq 100); do kill -0 "$DAEMON_PID" 2>/dev/null || break; sleep 0.1; done
  wait "$DAEMON_PID"; rc=$?
  DAEMON_PID=
  [ "$rc" -eq 0 ] || { echo "nydusd exit status $rc"; return 1; }
  ! is_mounted "$mnt" || { echo "$mnt still mounted"; return 1; }
}
