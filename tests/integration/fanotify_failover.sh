#!/usr/bin/env bash
# `nydusd fanotify` failover, driven as the snapshotter drives it, with
# `nydusctl supervise` standing in for its supervisor, while 8 readers
# (lib/load_readers.py) read random ranges through the kernel's EROFS mount
# and compare every byte with the source (dropping pages now and then).
# Data comes through the registry backend from lib/slow_registry.py into one
# cache (the EROFS device files), so fills are in flight when a daemon dies.
#
# Why it matters: the fanotify group is what makes a reader of an unfilled
# range wait. If its last fd closes with the daemon, the kernel drops the
# marks and such reads return zeros through the still-mounted EROFS. Here the
# supervisor holds the group (PUT .../fuse/sendfd), so after a kill -9 readers
# wait; a new `nydusd fanotify --upgrade` takes the group over (PUT
# .../fuse/takeover, PUT .../daemon/start). The events the dead daemon had
# read but not answered are known to the kernel only by fd numbers of the
# dead process: the new daemon finishes them from the dead one's in-flight
# journal (fill, then allow), or they would hang forever.
#
# Each of KILLS rounds: hold every blob answer at the registry (a gate file),
# start a probe read of that round's file (a blob of its own, never read before), wait until the daemon's
# metrics show pending events that stay pending, kill -9, open the gate, start
# the new daemon; the probe must finish with the right bytes, and the new
# daemon must have finished at least one of the dead one's events from the
# journal. Passes when no read failed and no byte was wrong, the mount stayed
# the same, SIGTERM to the last daemon unmounts, and the cache files read
# directly do not block afterwards (its marks are gone though the supervisor
# still holds the group).
# Needs root, fanotify pre-content events (Linux 6.14+) and file-backed EROFS
# (else 77). Env: KILLS (4), NYDUS_BIN_DIR, NYDUS_TEST_TMP (not tmpfs), KEEP_WORK=1.
set -uo pipefail
# shellcheck source-path=SCRIPTDIR source=lib/common.sh
source "$(dirname "$0")/lib/common.sh"

need_root_and_erofs
need_nydus_image
NYDUSD=$NYDUS_BIN_DIR/nydusd
NYDUSCTL=$NYDUS_BIN_DIR/nydusctl
[ -x "$NYDUSD" ] && [ -x "$NYDUSCTL" ] || die "nydusd or nydusctl missing in $NYDUS_BIN_DIR (build first)"
KILLS=${KILLS:-4}

WORK=$(mktemp -d "${NYDUS_TEST_TMP:-/var/tmp}/nydus-fanfail.XXXXXX") || die "mktemp"
LOG_DIR=$WORK/logs
MNT=$WORK/mnt
mkdir -p "$LOG_DIR" "$MNT" "$WORK/blobs"
PIDS=()
cleanup() {
  local p
  rm -f "$WORK/registry.hold"
  for p in "${PIDS[@]}"; do kill -KILL "$p" 2>/dev/null; done
  umount -l "$MNT" 2>/dev/null
  umount_below "$WORK"
  if [ "${KEEP_WORK:-0}" = 1 ]; then echo "kept $WORK"; return; fi
  rm -rf "$WORK"
}
trap cleanup EXIT
need_fanotify_erofs "$WORK"

make_image() {  # readers' layer d0-d4, then one layer (one blob) per round's probe, p1..pKILLS
  "$PY" - "$WORK/src" "$KILLS" <<'PY' || return 1
import os, random, sys
rnd = random.Random(11)
def write(path, size):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(rnd.randbytes(size))
for i in range(100):
    write(os.path.join(sys.argv[1], "readers", f"d{i % 5}", f"f{i}"), int(2 ** rnd.uniform(12, 21)))
for k in range(1, int(sys.argv[2]) + 3):
    write(os.path.join(sys.argv[1], f"p{k}", f"p{k}", "probe"), rnd.randrange(256 << 10, 1 << 20))
PY
  local layers=("$WORK/readers.boot") k
  "$NYDUS_IMAGE" create -B "$WORK/readers.boot" -D "$WORK/blobs" --chunk-size 0x10000 "$WORK/src/readers" || return 1
  for k in $(seq $((KILLS + 2))); do
    # A blob of its own: the kernel's readahead of one device file never fills another.
    "$NYDUS_IMAGE" create -B "$WORK/p$k.boot" -D "$WORK/blobs" --chunk-size 0x10000 "$WORK/src/p$k" || return 1
    layers+=("$WORK/p$k.boot")
  done
  "$NYDUS_IMAGE" merge -B "$WORK/image.boot" "${layers[@]}"
}
step "an image: 100 files for the readers, $((KILLS + 2)) probe files, each in a blob of its own (64 KiB chunks)" make_image ||
  die "cannot build the image"

GATE=$WORK/registry.hold  # while it exists the registry holds every blob answer
"$PY" "$LIB_DIR/slow_registry.py" "$WORK/blobs" "$WORK/registry.port" 100 "$GATE" 2>"$LOG_DIR/registry.log" &
PIDS+=($!)
for _ in $(seq 50); do [ -s "$WORK/registry.port" ] && break; sleep 0.1; done
[ -s "$WORK/registry.port" ] || die "the slow registry did not start"
cat >"$WORK/config.json" <<JSON
{"device": {"backend": {"type": "registry", "config": {"scheme": "http", "host": "127.0.0.1:$(cat "$WORK/registry.port")", "repo": "test/image"}},
            "cache": {"type": "blobcache", "config": {"work_dir": "$WORK/cache"}}},
 "mode": "direct", "digest_validate": true, "amplify_io": 0,
 "fs_prefetch": {"enable": false}}
JSON

SUP=$WORK/supervisor.sock
"$NYDUSCTL" supervise --path "$SUP" >"$LOG_DIR/supervisor.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 50); do [ -S "$SUP" ] && break; sleep 0.1; done

GEN=0  # daemon generation; its socket is $WORK/d$GEN.sock
CUR_PID=
start_daemon() {  # start_daemon [--upgrade]: generation GEN+1 in the background
  GEN=$((GEN + 1))
  "$NYDUSD" fanotify --bootstrap "$WORK/image.boot" --config "$WORK/config.json" --mountpoint "$MNT" \
    --apisock "$WORK/d$GEN.sock" --supervisor "$SUP" --id fanfail --log-level "${LOG_LEVEL:-info}" --thread-num 8 "$@" \
    >"$LOG_DIR/daemon-$GEN.log" 2>&1 &
  NEW_PID=$!
  PIDS+=("$NEW_PID")
  for _ in $(seq 100); do [ -S "$WORK/d$GEN.sock" ] && return 0; sleep 0.05; done
  echo "daemon $GEN has no API socket"; return 1
}
ctl() { "$NYDUSCTL" --sock "$WORK/d$1.sock" "${@:2}"; }
mount_id() { awk -v d="$MNT" '$5 == d {print $1}' /proc/self/mountinfo; }
first_daemon() {
  start_daemon || return 1
  for _ in $(seq 100); do is_mounted "$MNT" && break; sleep 0.05; done
  is_mounted "$MNT" || return 1
  ctl "$GEN" sendfd && CUR_PID=$NEW_PID
}
step "first daemon mounts EROFS; its fanotify group goes to the supervisor" first_daemon || die "first daemon failed"
MOUNT_ID=$(mount_id)
[ "$(awk -v d="$MNT" '$5 == d {for (i = 7; $i != "-"; i++); print $(i + 1)}' /proc/self/mountinfo)" = erofs ] ||
  die "the mount at $MNT is not the kernel's EROFS"

DURATION=$((10 + 6 * (KILLS + 2)))
timeout $((DURATION + 120)) "$PY" "$LIB_DIR/load_readers.py" --pid "$$" --threads 8 --seconds "$DURATION" \
  "$MNT/d0=$WORK/src/readers/d0" "$MNT/d1=$WORK/src/readers/d1" "$MNT/d2=$WORK/src/readers/d2" \
  "$MNT/d3=$WORK/src/readers/d3" "$MNT/d4=$WORK/src/readers/d4" >"$LOG_DIR/readers.json" 2>"$LOG_DIR/readers.err" &
READERS=$!
sleep 2
[ -n "${DEBUG_STOP:-}" ] && { echo "$WORK"; sleep 1000; }

pending() {  # pre-content events the serving daemon has read and not answered
  curl -sf --unix-socket "$WORK/d$GEN.sock" http://localhost/api/v1/metrics | "$PY" -c 'import json, sys
f = json.load(sys.stdin)["fanotify"]
print(f["events"] - f["allowed_ready"] - f["filled"] - f["denied"] - f["self_events"] - f["malformed"] - f["overflows"])'
}
probe() {  # probe K: read round K's probe file whole through the mount and compare with the source
  "$PY" - "$MNT/p$1/probe" "$WORK/src/p$1/p$1/probe" <<'PY'
import os, sys
fd = os.open(sys.argv[1], os.O_RDONLY)
data = b""
while chunk := os.read(fd, 1 << 20):
    data += chunk
os.close(fd)
sys.exit(0 if data == open(sys.argv[2], "rb").read() else 3)
PY
}
FINISHED=0
PROBE_PID=
held_probe() {  # held_probe K: close the gate, start probe K (PROBE_PID), return once its events are held
  local a b
  touch "$GATE"
  probe "$1" & PROBE_PID=$!
  # Sync point, not a sleep: pending events that are still pending 0.2 s later
  # are held at the registry's gate.
  for _ in $(seq 100); do
    a=$(pending) && [ "${a:-0}" -gt 0 ] && sleep 0.2 && b=$(pending) && [ "${b:-0}" -gt 0 ] && {
      echo "probe of p$1/probe started; $b events held pending in daemon $GEN; kill -9 at $(date +%T.%3N)"
      return 0
    }
    kill -0 "$PROBE_PID" 2>/dev/null || break
    sleep 0.05
  done
  rm -f "$GATE"
  echo "no event was ever held pending (probe of p$1/probe)"
  return 1
}
failover_once() {
  local rel=p$1/probe probe_pid rc done_here
  held_probe "$1" || return 1
  probe_pid=$PROBE_PID
  kill -KILL "$CUR_PID"; wait "$CUR_PID" 2>/dev/null
  rm -f "$GATE"
  sleep 0.5  # readers pile up on the group the supervisor keeps alive
  kill -0 "$probe_pid" 2>/dev/null || { wait "$probe_pid"; echo "the probe ended (exit $?) with no daemon"; return 1; }
  start_daemon --upgrade || return 1
  ctl "$GEN" takeover && ctl "$GEN" start && ctl "$GEN" sendfd || { tail -5 "$LOG_DIR/daemon-$GEN.log"; return 1; }
  CUR_PID=$NEW_PID
  [ "$(mount_id)" = "$MOUNT_ID" ] || { echo "the mount changed"; return 1; }
  timeout 30 tail --pid="$probe_pid" -f /dev/null || { echo "the probe read of $rel never finished"; return 1; }
  wait "$probe_pid"; rc=$?
  echo "probe read of $rel: exit $rc (0 = right bytes)"
  done_here=$(sed -n 's/.*takeover: \([0-9]*\) pending events of the dead daemon filled and allowed.*/\1/p' \
    "$LOG_DIR/daemon-$GEN.log")
  echo "events of the dead daemon finished from its journal: ${done_here:-none}"
  FINISHED=$((FINISHED + ${done_here:-0}))
  [ "$rc" -eq 0 ]
}
for i in $(seq "$KILLS"); do
  step "failover $i: kill -9 with fills held, the new daemon takes the group over (readers running)" \
    failover_once "$i"
done
# A daemon killed in the middle of its own takeover: while it fills the dead
# one's journaled events (held at the gate here), its placeholders hold every
# low number, so the events it reads meanwhile get numbers at or above the
# placeholder limit, and they are journaled there. The next daemon's own
# events get numbers from that limit up too: unless it keeps those journaled
# numbers free until it has answered them, its first answer to an event of
# its own goes to the older orphan of the same number (allowed unfilled: the
# reader sees zeros).
journal_high() {  # journal_high LIMIT: pending journal slots numbered LIMIT or above
  "$PY" - "$WORK/cache" "$1" <<'PY'
import glob, struct, sys
limit = int(sys.argv[2])
with open(glob.glob(sys.argv[1] + "/fanotify-*.inflight")[0], "rb") as f:
    f.seek(64 + limit * 24)
    tail = f.read()
print(sum(1 for s in struct.iter_unpack("<QQII", tail[:len(tail) // 24 * 24]) if s[3] == 1))
PY
}
failover_mid_takeover() {  # failover_mid_takeover K: probe files K (held at the kill) and K+1 (read mid-takeover)
  local k=$1 probe_pid late_pid tk limit= high=0 rc late_rc
  held_probe "$k" || return 1
  probe_pid=$PROBE_PID
  kill -KILL "$CUR_PID"; wait "$CUR_PID" 2>/dev/null
  start_daemon --upgrade || { rm -f "$GATE"; return 1; }
  ctl "$GEN" takeover >/dev/null 2>&1 & tk=$!  # blocks: its fill of the journaled event waits at the gate
  for _ in $(seq 100); do
    limit=$(sed -n 's/.*takeover: [0-9]* placeholders below \([0-9]*\).*/\1/p' "$LOG_DIR/daemon-$GEN.log")
    [ -n "$limit" ] && break
    sleep 0.05
  done
  probe $((k + 1)) & late_pid=$!  # read while the placeholders are held
  for _ in $(seq 100); do
    [ -n "$limit" ] && high=$(journal_high "$limit") && [ "${high:-0}" -gt 0 ] && break
    sleep 0.05
  done
  echo "daemon $GEN, mid-takeover: ${high:-0} of its own events journaled at or above its placeholder limit ${limit:-?}"
  kill -KILL "$NEW_PID"; wait "$NEW_PID" 2>/dev/null; wait "$tk" 2>/dev/null
  rm -f "$GATE"
  [ "${high:-0}" -gt 0 ] || { echo "no event was journaled during the takeover"; return 1; }
  sleep 0.5
  start_daemon --upgrade || return 1
  ctl "$GEN" takeover && ctl "$GEN" start && ctl "$GEN" sendfd || { tail -5 "$LOG_DIR/daemon-$GEN.log"; return 1; }
  CUR_PID=$NEW_PID
  [ "$(mount_id)" = "$MOUNT_ID" ] || { echo "the mount changed"; return 1; }
  timeout 30 tail --pid="$probe_pid" -f /dev/null && timeout 30 tail --pid="$late_pid" -f /dev/null ||
    { echo "a probe read never finished"; return 1; }
  wait "$probe_pid"; rc=$?
  wait "$late_pid"; late_rc=$?
  echo "probe reads: exit $rc (held at the kill), $late_rc (read mid-takeover); 0 = right bytes"
  [ "$rc" -eq 0 ] && [ "$late_rc" -eq 0 ]
}
step "failover $((KILLS + 1)): kill -9 of a daemon in the middle of its takeover, then one more takeover" \
  failover_mid_takeover $((KILLS + 1))

journal_used() {
  echo "events finished from the journals: $FINISHED"
  [ "$FINISHED" -gt 0 ]
}
step "the dead daemons' pending events were finished from their journals" journal_used

readers_clean() {
  wait "$READERS" || { cat "$LOG_DIR/readers.err"; return 1; }
  "$PY" - "$LOG_DIR/readers.json" "$KILLS" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
print(f"kills {sys.argv[2]}: {r['reads']} reads checked ({r['bytes'] / 1e6:.0f} MB), "
      f"failed reads {r['errors']}, wrong bytes in {r['mismatches']} reads")
assert r["reads"] > 0, "nothing was read"
assert r["errors"] == 0 and r["mismatches"] == 0, r["first_errors"]
PY
}
step "the readers saw no failed read and no wrong byte" readers_clean

last_stop() {
  kill -TERM "$CUR_PID"; wait "$CUR_PID" || { echo "exit status $?"; return 1; }
  is_mounted "$MNT" && { echo "still mounted after SIGTERM"; return 1; }
  ls "$WORK/cache"/fanotify-*.inflight 2>/dev/null && { echo "the journal was left behind"; return 1; }
  # The supervisor still holds the group: had its marks stayed, these reads
  # of never-filled ranges would wait forever.
  local f
  for f in "$WORK/cache"/*.blob.data; do
    timeout 10 cat "$f" >/dev/null || { echo "reading $f directly blocked or failed"; return 1; }
  done
}
step "SIGTERM to the last daemon unmounts; its marks are gone with it" last_stop

summary
