#!/usr/bin/env bash
# FUSE live upgrade and failover, driven as nydus-snapshotter drives them,
# with `nydusctl supervise` standing in for its supervisor, while 8 readers
# (lib/load_readers.py) keep reading random ranges through the mount and
# compare every byte with the source (dropping pages now and then so the
# reads reach whichever daemon is serving). Data comes through the registry
# backend from lib/slow_registry.py (200 ms per blob request) into a fresh
# cache per daemon, so requests are in flight when a daemon goes:
#   upgrade  (UPGRADES times): start a new nydusd with --upgrade, PUT
#            .../fuse/takeover on it, PUT .../daemon/exit on the old one (it
#            answers what it holds and leaves the mount), PUT .../daemon/start,
#            PUT .../fuse/sendfd so the supervisor holds the new daemon's state;
#   failover (KILLS times): start a probe read of a file dropped from the page
#            cache, kill -9 the serving daemon while the probe's request waits
#            on the registry, start a new one with --upgrade
#            --failover-policy resend, takeover, start, sendfd; the probe must
#            finish with the right bytes, and the new daemon must count the
#            kernel's resent requests (fuse_resent_requests > 0). The registry
#            holds blob answers meanwhile (a gate file), and the kill waits until
#            /api/v1/metrics/inflight shows the probe's request held there. The
#            readers read d0-d4 only, so the probe's chunks (d5) are not cached.
# Passes when no read failed and no byte was wrong, the mount stayed the same
# mount throughout, and SIGTERM to the last daemon unmounts it.
# Needs root and /dev/fuse (else exit 77). Env: UPGRADES (5), KILLS (5),
# NYDUS_BIN_DIR, NYDUS_TEST_TMP, KEEP_WORK=1.
set -uo pipefail
# shellcheck source-path=SCRIPTDIR source=lib/common.sh
source "$(dirname "$0")/lib/common.sh"
# shellcheck source-path=SCRIPTDIR source=lib/fuse_uring.sh
source "$(dirname "$0")/lib/fuse_uring.sh"

need_root_and_fuse
need_nydus_image
NYDUSD=$NYDUS_BIN_DIR/nydusd
NYDUSCTL=$NYDUS_BIN_DIR/nydusctl
[ -x "$NYDUSD" ] && [ -x "$NYDUSCTL" ] || die "nydusd or nydusctl missing in $NYDUS_BIN_DIR (build first)"
UPGRADES=${UPGRADES:-5}
KILLS=${KILLS:-5}

WORK=$(mktemp -d "${NYDUS_TEST_TMP:-/var/tmp}/nydus-upgrade.XXXXXX") || die "mktemp"
LOG_DIR=$WORK/logs
mkdir -p "$LOG_DIR" "$WORK/mnt" "$WORK/blobs"
MNT=$WORK/mnt
PIDS=()
cleanup() {
  local p
  for p in "${PIDS[@]}"; do kill -KILL "$p" 2>/dev/null; done
  fusermount3 -u "$MNT" 2>/dev/null || umount -l "$MNT" 2>/dev/null
  if [ "${KEEP_WORK:-0}" = 1 ]; then echo "kept $WORK"; return; fi
  rm -rf "$WORK"
}
trap cleanup EXIT

make_image() {
  "$PY" - "$WORK/src" <<'PY' || return 1
import os, random, sys
rnd = random.Random(7)
for i in range(100):
    d = os.path.join(sys.argv[1], f"d{i % 6}")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, f"f{i}"), "wb") as f:
        f.write(rnd.randbytes(int(2 ** rnd.uniform(10, 21))))
PY
  "$NYDUS_IMAGE" create -B "$WORK/image.boot" -D "$WORK/blobs" --chunk-size 0x10000 "$WORK/src"
}
step "an image of 100 files (64 KiB chunks)" make_image || die "cannot build the image"

GATE=$WORK/registry.hold  # while it exists the registry holds every blob answer
"$PY" "$LIB_DIR/slow_registry.py" "$WORK/blobs" "$WORK/registry.port" 200 "$GATE" 2>"$LOG_DIR/registry.log" &
PIDS+=($!)
for _ in $(seq 50); do [ -s "$WORK/registry.port" ] && break; sleep 0.1; done
[ -s "$WORK/registry.port" ] || die "the slow registry did not start"
REGISTRY=127.0.0.1:$(cat "$WORK/registry.port")
config_for() {  # config_for GEN: the registry backend, a cache of that daemon's own
  cat >"$WORK/config-$1.json" <<JSON
{"device": {"backend": {"type": "registry", "config": {"scheme": "http", "host": "$REGISTRY", "repo": "test/image"}},
            "cache": {"type": "blobcache", "config": {"work_dir": "$WORK/cache-$1"}}},
 "mode": "direct", "digest_validate": true}
JSON
}

SUP=$WORK/supervisor.sock
"$NYDUSCTL" supervise --path "$SUP" >"$LOG_DIR/supervisor.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 50); do [ -S "$SUP" ] && break; sleep 0.1; done

GEN=0       # daemon generation; its socket is $WORK/d$GEN.sock
CUR_PID=
start_daemon() {  # start_daemon [--upgrade ...]: generation GEN+1 in the background
  GEN=$((GEN + 1))
  config_for "$GEN"
  "$NYDUSD" --bootstrap "$WORK/image.boot" --config "$WORK/config-$GEN.json" --mountpoint "$MNT" \
    --apisock "$WORK/d$GEN.sock" --supervisor "$SUP" --id upgrade-test --log-level info \
    --thread-num 16 "$@" \
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
  ls "$MNT" >/dev/null && ctl "$GEN" sendfd && CUR_PID=$NEW_PID
}
step "first daemon mounts; its fd goes to the supervisor" first_daemon || die "first daemon failed"
MOUNT_ID=$(mount_id)

DURATION=$((8 + 3 * (UPGRADES + KILLS)))
timeout $((DURATION + 120)) "$PY" "$LIB_DIR/load_readers.py" --pid "$$" --threads 8 --seconds "$DURATION" \
  "$MNT/d0=$WORK/src/d0" "$MNT/d1=$WORK/src/d1" "$MNT/d2=$WORK/src/d2" "$MNT/d3=$WORK/src/d3" \
  "$MNT/d4=$WORK/src/d4" >"$LOG_DIR/readers.json" 2>"$LOG_DIR/readers.err" &
READERS=$!
sleep 2

upgrade_once() {
  local old=$GEN old_pid=$CUR_PID
  start_daemon --upgrade || return 1
  ctl "$GEN" takeover || return 1
  echo "exit of daemon $old at $(date +%T.%3N)"
  curl -sf -X PUT --unix-socket "$WORK/d$old.sock" http://localhost/api/v1/daemon/exit || return 1
  wait "$old_pid"; echo "old daemon $old exited with $?"
  ctl "$GEN" start && ctl "$GEN" sendfd || return 1
  CUR_PID=$NEW_PID
  [ "$(mount_id)" = "$MOUNT_ID" ] || { echo "the mount changed"; return 1; }
  sleep 1
  if uring_forced; then uring_check "$WORK/d$GEN.sock" || return 1; fi
}
probe() {  # probe REL: drop REL's pages, read it whole through the mount, compare
  "$PY" - "$MNT/$1" "$WORK/src/$1" "$WORK/probe.ready" <<'PY'
import os, sys
fd = os.open(sys.argv[1], os.O_RDONLY)
os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
open(sys.argv[3], "w").close()
data = b""
while chunk := os.read(fd, 1 << 20):
    data += chunk
os.close(fd)
sys.exit(0 if data == open(sys.argv[2], "rb").read() else 3)
PY
}
in_flight() {  # in_flight INO: print the uniques of the serving daemon's FUSE requests on inode INO
  curl -sf --unix-socket "$WORK/d$GEN.sock" http://localhost/api/v1/metrics/inflight |
    "$PY" -c 'import json, sys
t = sys.stdin.read().strip()
print(" ".join(str(op["unique"]) for op in (json.loads(t) if t else None) or [] if op["inode"] == int(sys.argv[1])))' "$1"
}
held() {  # held INO: a request on INO is in flight and still the same one 0.2 s later (the gate holds it)
  local a b u
  a=$(in_flight "$1"); [ -n "$a" ] || return 1
  sleep 0.2
  b=$(in_flight "$1")
  for u in $a; do [[ " $b " == *" $u "* ]] && return 0; done
  return 1
}
resent_count() {  # requests the kernel resent to the serving daemon (ours, beside upstream's fop counters)
  curl -sf --unix-socket "$WORK/d$GEN.sock" http://localhost/api/v1/metrics |
    "$PY" -c 'import json, sys; print(json.load(sys.stdin)["fuse_resent_requests"])'
}
failover_once() {
  local rel probe_pid rc ino caught=0 try
  # Sync points, not sleeps: the registry holds every blob answer (the gate), and the
  # kill comes only once the daemon's inflight list shows the probe's request held
  # there. The readers stay out of d5, so the serving daemon (a fresh cache each) has
  # not fetched the probe's chunks; a probe served anyway from cache is retried.
  # 16 FUSE threads: the 8 readers held at the gate leave the probe a thread.
  touch "$GATE"
  for try in 1 2 3 4 5 6 7 8; do
    rel=$(cd "$WORK/src" && find ./d5 -type f -size +128k | shuf -n1)
    ino=$(stat -c %i "$MNT/$rel") || { rm -f "$GATE"; return 1; }
    rm -f "$WORK/probe.ready"
    probe "$rel" & probe_pid=$!
    for _ in $(seq 200); do
      [ -e "$WORK/probe.ready" ] && held "$ino" && { caught=1; break; }
      kill -0 "$probe_pid" 2>/dev/null || break
      sleep 0.01
    done
    [ "$caught" = 1 ] && break
    kill "$probe_pid" 2>/dev/null
    wait "$probe_pid"; echo "try $try: the probe of $rel was not held in flight (exit $?)"
  done
  if [ "$caught" != 1 ]; then rm -f "$GATE"; echo "no probe read was ever held in flight"; return 1; fi
  echo "probe read of $rel (inode $ino) is held in flight in daemon $GEN"
  echo "kill -9 of daemon $GEN at $(date +%T.%3N)"
  kill -KILL "$CUR_PID"; wait "$CUR_PID" 2>/dev/null
  rm -f "$GATE"
  sleep 0.3  # readers pile up on the orphaned connection
  start_daemon --upgrade --failover-policy resend || return 1
  ctl "$GEN" takeover && ctl "$GEN" start && ctl "$GEN" sendfd || return 1
  CUR_PID=$NEW_PID
  [ "$(mount_id)" = "$MOUNT_ID" ] || { echo "the mount changed"; return 1; }
  timeout 30 tail --pid="$probe_pid" -f /dev/null || { echo "the probe read of $rel never finished"; return 1; }
  wait "$probe_pid"; rc=$?
  echo "probe read of $rel: exit $rc"
  [ "$rc" -eq 0 ] || return 1
  # The probe's request was in the dead daemon: with --failover-policy resend the kernel
  # must have sent it (at least it) again to the new one.
  LAST_RESENT=$(resent_count) || { echo "no fuse_resent_requests in /api/v1/metrics"; return 1; }
  echo "requests resent to daemon $GEN: $LAST_RESENT"
  [ "$LAST_RESENT" -gt 0 ] || { echo "the probe was in flight at the kill, yet nothing was resent"; return 1; }
}
for i in $(seq "$UPGRADES"); do step "upgrade $i: takeover, exit, start (readers running)" upgrade_once; done
RESENT=0
for i in $(seq "$KILLS"); do
  LAST_RESENT=0
  step "failover $i: kill -9 with the probe in flight, the new daemon gets it resent (readers running)" failover_once
  RESENT=$((RESENT + LAST_RESENT))
done

readers_clean() {
  wait "$READERS" || { cat "$LOG_DIR/readers.err"; return 1; }
  "$PY" - "$LOG_DIR/readers.json" "$UPGRADES" "$KILLS" "$RESENT" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
print(f"upgrades {sys.argv[2]}, kills {sys.argv[3]}: {r['reads']} reads checked ({r['bytes'] / 1e6:.0f} MB), "
      f"failed reads {r['errors']}, wrong bytes in {r['mismatches']} reads; requests resent by the kernel {sys.argv[4]}")
assert r["reads"] > 0, "nothing was read"
assert r["errors"] == 0 and r["mismatches"] == 0, r["first_errors"]
PY
}
step "the readers saw no failed read and no wrong byte" readers_clean
last_stop() {
  kill -TERM "$CUR_PID"; wait "$CUR_PID"
  is_mounted "$MNT" && { echo "still mounted after SIGTERM"; return 1; }
  return 0
}
step "SIGTERM to the last daemon unmounts" last_stop

summary
