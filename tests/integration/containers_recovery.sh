#!/usr/bin/env bash
# containerd-nydus-grpc recovering what a crash or a reboot takes away, under
# real containerd 1.6 + runc (Debian's) started by this script (own root,
# state, runc root and sockets; lib/containerd.sh), a Nydus image converted by
# our nydusify in a docker-registry on loopback. The snapshotter runs with
# --recover-policy failover throughout.
#   - `ctr run --user` (nydus-snapshotter #647): containerd resolves the user
#     by mounting the container's snapshot (Mounts) in a temporary mount and
#     reading /etc/passwd from it; `--user 1000` and `--user app` (an entry of
#     the image's /etc/passwd, uid 1234 gid 2345) give those ids in `id`.
#   - failover: a container reads a file in a loop; its nydusd gets kill -9:
#     the snapshotter's supervisor holds the /dev/fuse fd, a new nydusd
#     (--upgrade) takes the connection over at the same mount (same mount id),
#     the loop only waits and every read (the page cache dropped around the
#     kill) has the right sha256; `none` is not what runs here, see below.
#   - reboot (nydus #691): two containers exist (one ran and wrote to its
#     rootfs, one was only created); every task is killed, then shims,
#     containerd, the snapshotter and every nydusd get kill -9, every mount
#     below the test's directory is unmounted and containerd's state dir and
#     the runc root (tmpfs /run on a real host) are wiped. containerd and the
#     snapshotter start again on the same roots: `ctr task start` of both
#     containers works, reads the image's bytes and the first one's write; a
#     new `ctr run --user app` works too; afterwards removing everything
#     leaves no nydusd, mount or snapshot.
set -uo pipefail
# shellcheck source-path=SCRIPTDIR source=lib/common.sh
source "$(dirname "$0")/lib/common.sh"

# shellcheck source=lib/containers_test.sh
source "$LIB_DIR/containers_test.sh"
ct_test_preflight busybox go
[ -e /dev/fuse ] || skip_kernel "no /dev/fuse"

ct_test_workdir recovery
SNAP_FLAGS=(--recover-policy failover --log-level debug)
stop_pid() { ct_stop_pid "$@"; }

# ---- the image: busybox-static, a 3 MB random file, /etc/passwd with a user "app" --------
make_image() {
  umoci init --layout img && umoci new --image img:base && umoci unpack --image img:base b0 >/dev/null || return 1
  local r=b0/rootfs
  mkdir -p "$r/bin" "$r/data" "$r/etc" || return 1
  cp "$BUSYBOX" "$r/bin/busybox" && ln -s busybox "$r/bin/sh" && ln -s busybox "$r/bin/id" || return 1
  head -c 3000000 /dev/urandom >"$r/data/random.bin"
  echo "hello from the image" >"$r/data/hello.txt"
  printf 'root:x:0:0:root:/root:/bin/sh\napp:x:1234:2345:app:/:/bin/sh\n' >"$r/etc/passwd"
  printf 'root:x:0:\napp:x:2345:\n' >"$r/etc/group"
  printf '#!/bin/sh\nsha256sum /data/random.bin\ncat /data/hello.txt\n' >"$r/bin/show" && chmod 755 "$r/bin/show"
  umoci repack --image img:v1 b0
}
step "umoci: busybox-static image with /etc/passwd (app = 1234:2345)" make_image || die "cannot build the image"
SUM=$(sha256sum b0/rootfs/data/random.bin | cut -d' ' -f1)
step "docker-registry on loopback" start_registry "$WORK/registry" || die "no registry"
R=$REGISTRY_HOST
REF=$R/test/nydus:v1
step "skopeo + nydusify convert" sh -c "skopeo copy --dest-tls-verify=false oci:img:v1 docker://$R/test/plain:v1 &&
  '$NYDUSIFY' convert --source $R/test/plain:v1 --target $REF --source-insecure --target-insecure --work-dir '$WORK/convert'" ||
  die "convert failed"

start_all() { ct_start "${SNAP_FLAGS[@]}" || return 1; ct_wait_proxy; }
step "containerd-nydus-grpc --recover-policy failover + containerd 1.6" start_all || die "no snapshotter/containerd"
step "ctr-remote image rpull --snapshotter nydus" ctr-remote --address "$CT_CD_SOCK" image rpull --plain-http \
  --snapshotter nydus "$REF" || die "rpull failed"
nydusd_pids() { ct_pids nydusd "$CT_ROOT/"; }
run() { ct_ctr run --runc-root "$RUNC_ROOT" --snapshotter nydus "$@"; }

# ---- ctr run --user (containerd reads /etc/passwd through a temporary mount of Mounts) ----
# Debian's ctr 1.6 has no --user: ctr_user is `ctr run --user` written with
# containerd's client library (oci.WithUser), built from Debian's containerd sources.
CTR_USER=$WORK/ctr_user
build_ctr_user() {
  GO111MODULE=off GOPATH=/usr/share/gocode GOCACHE=${NYDUS_GOCACHE:-/var/tmp/nydus-gocache} GOFLAGS= \
    go build -o "$CTR_USER" "$LIB_DIR/ctr_user/main.go"
}
step "go build ctr_user (containerd 1.6 client: oci.WithUser)" build_ctr_user || die "cannot build ctr_user"
user_ids() {  # USER WANT: `id -u`:`id -g`:`id -un` in the container
  local out
  out=$("$CTR_USER" "$CT_CD_SOCK" nydus "$REF" "user$STEP_NO" "$1" /bin/sh -c 'echo $(id -u):$(id -g):$(id -un 2>/dev/null)' 2>&1)
  echo "--user $1: got '$out', want '$2'"
  [ "$out" = "$2" ]
}
step "ctr run --user 1000 (no passwd entry: uid 1000, gid 0)" user_ids 1000 '1000:0:1000'
step "ctr run --user app (resolved from the image's /etc/passwd: 1234:2345)" user_ids app '1234:2345:app'
step "ctr run --user app:app (group from the image's /etc/group)" user_ids app:app '1234:2345:app'

# ---- failover: kill -9 of the nydusd under a reading container ----------------------------
step "ctr run -d: a container reading a file in a loop" run -d "$REF" reader /bin/sh -c \
  "while :; do sha256sum /data/random.bin >>/data/sums.txt 2>>/data/errors.txt || echo fail >>/data/errors.txt; done"
mount_id_of() { awk -v d="$1" '$5 == d {print $1}' /proc/self/mountinfo; }
lower_of() { awk -v d="$CT_CD/state/io.containerd.runtime.v2.task/default/$1/rootfs" '$5 == d {print $NF}' /proc/self/mountinfo |
  tr ',' '\n' | sed -n 's/^lowerdir=//p'; }
failover() {
  local old mnt mid before after bad upper _ ok=0 done_before
  old=$(nydusd_pids); mnt=$(lower_of reader)
  # Shared mode: the images are directories of the one FUSE mount at <root>/mnt.
  is_mounted "$mnt" || mnt=$(dirname "$mnt")
  done_before=$(grep -c 'failover done' "$CT_LOGS/snapshotter.log")
  echo "nydusd $old, lowerdir $mnt"
  [ "$(echo "$old" | wc -w)" -eq 1 ] && [ -n "$mnt" ] || return 1
  tr '\0' ' ' <"/proc/$old/cmdline" | grep -Eq -- "--supervisor $CT_ROOT/supervisor/(nydusd-[0-9]+|shared_daemon).sock" ||
    { echo "nydusd has no --supervisor: $(tr '\0' ' ' <"/proc/$old/cmdline")"; return 1; }
  mid=$(mount_id_of "$mnt")
  upper=$(awk -v d="$CT_CD/state/io.containerd.runtime.v2.task/default/reader/rootfs" '$5 == d {print $NF}' /proc/self/mountinfo |
    tr ',' '\n' | sed -n 's/^upperdir=//p')
  for _ in $(seq 100); do [ -s "$upper/data/sums.txt" ] && break; sleep 0.1; done
  sync; echo 3 >/proc/sys/vm/drop_caches
  before=$(wc -l <"$upper/data/sums.txt")
  kill -KILL "$old"
  # Dropped pages: every read from now on goes to the FUSE connection, held by the supervisor.
  for _ in 1 2 3 4 5 6 7 8 9 10; do echo 3 >/proc/sys/vm/drop_caches; sleep 0.2; done
  for _ in $(seq 100); do [ -n "$(nydusd_pids)" ] && [ "$(nydusd_pids)" != "$old" ] && break; sleep 0.1; done
  echo "new nydusd: $(nydusd_pids)"
  [ -n "$(nydusd_pids)" ] && [ "$(nydusd_pids)" != "$old" ] || { echo "no new nydusd"; return 1; }
  tr '\0' ' ' <"/proc/$(nydusd_pids)/cmdline" | grep -q -- ' --upgrade ' || { echo "new nydusd without --upgrade"; ok=1; }
  [ "$(mount_id_of "$mnt")" = "$mid" ] || { echo "the FUSE mount changed: $mid -> $(mount_id_of "$mnt")"; ok=1; }
  for _ in $(seq 20); do echo 3 >/proc/sys/vm/drop_caches; sleep 0.2; done
  after=$(wc -l <"$upper/data/sums.txt")
  echo "reads: $before before the kill, $after now"
  [ "$after" -gt $((before + 3)) ] || { echo "the loop did not go on"; return 1; }
  bad=$(grep -cv "^$SUM " "$upper/data/sums.txt")
  echo "wrong sums: $bad; errors: $(wc -l <"$upper/data/errors.txt")"; head -5 "$upper/data/errors.txt"
  [ "$bad" -eq 0 ] && [ ! -s "$upper/data/errors.txt" ] || return 1
  [ "$(grep -c 'failover done' "$CT_LOGS/snapshotter.log")" -gt "$done_before" ] || { echo "no failover logged"; return 1; }
  grep 'failover done' "$CT_LOGS/snapshotter.log" | tail -1
  return $ok
}
step "kill -9 of its nydusd: a new one takes the FUSE connection over; the reader only waits, right bytes" failover
step "the container still reads through the new nydusd" timeout 60 sh -c \
  "ctr --address '$CT_CD_SOCK' task exec --exec-id e1 reader /bin/sh -c 'sha256sum /data/random.bin' | grep -q '^$SUM '"
# The supervisors die with the snapshotter: the restarted one re-attaches to
# the nydusd and has it hand its fd over again, so a later death still fails over.
restart_snapshotter() {  # FLAGS...: kill -9 and start again with FLAGS
  local pid=$CT_SNAP_PID
  kill -KILL "$pid"; wait "$pid" 2>/dev/null
  ct_start_snapshotter "$@" || return 1
  ct_wait_proxy
}
readopt() {
  local before
  before=$(nydusd_pids)
  restart_snapshotter "${SNAP_FLAGS[@]}" || return 1
  [ "$(nydusd_pids)" = "$before" ] || { echo "nydusd changed: $before -> $(nydusd_pids)"; return 1; }
  grep -c 're-attached to the running nydusd' "$CT_LOGS/snapshotter.log"
  [ -S "$CT_ROOT/supervisor/nydusd-$(basename "$(lower_of reader)").sock" ]
}
step "kill -9 + restart of the snapshotter: same nydusd re-attached, its supervisor socket back" readopt
step "kill -9 of the re-attached nydusd: failed over too, the reader only waits, right bytes" failover

# ---- --recover-policy restart and none (upstream's semantics) ----------------------------
# restart: the same command line again on a cleaned mountpoint; a container
# already running keeps the dead FUSE connection (ENOTCONN), a new one works.
policy_restart() {
  local old _
  restart_snapshotter --recover-policy restart --log-level debug || return 1
  old=$(nydusd_pids)
  kill -KILL "$old"
  for _ in $(seq 100); do [ -n "$(nydusd_pids)" ] && [ "$(nydusd_pids)" != "$old" ] && break; sleep 0.1; done
  echo "nydusd $old -> $(nydusd_pids): $(tr '\0' ' ' <"/proc/$(nydusd_pids)/cmdline")"
  [ -n "$(nydusd_pids)" ] && [ "$(nydusd_pids)" != "$old" ] || return 1
  tr '\0' ' ' <"/proc/$(nydusd_pids)/cmdline" | grep -vq -- ' --upgrade ' || return 1
  grep -q 'restarted, pid' "$CT_LOGS/snapshotter.log" || return 1
  [ "$(run --rm "$REF" "new$STEP_NO" /bin/sh -c 'sha256sum /data/random.bin')" = "$SUM  /data/random.bin" ]
}
step "--recover-policy restart: kill -9 of nydusd: restarted (no takeover); a new container reads right" policy_restart
# none: nothing happens at the death; the next Prepare/Mounts needing it starts it.
policy_none() {
  local old _
  # The reader's task goes (restart left it on a dead connection); its container keeps the snapshot active.
  ct_ctr task kill -s KILL reader; sleep 0.5; ct_ctr task rm -f reader >/dev/null
  restart_snapshotter --recover-policy none --log-level debug || return 1
  old=$(nydusd_pids)
  [ -n "$old" ] || { echo "no nydusd"; return 1; }
  kill -KILL "$old"
  sleep 2
  echo "nydusd after 2 s: '$(nydusd_pids)'"
  [ -z "$(nydusd_pids)" ] || return 1
  grep -q 'recover policy none: left so' "$CT_LOGS/snapshotter.log" || return 1
  [ "$(run --rm "$REF" "new$STEP_NO" /bin/sh -c 'sha256sum /data/random.bin')" = "$SUM  /data/random.bin" ] || return 1
  restart_snapshotter "${SNAP_FLAGS[@]}"
}
step "--recover-policy none: a dead nydusd stays dead; the next container's Prepare starts one" policy_none

# ---- reboot: every mount and daemon gone, containerd and the snapshotter restarted ---------
C2=created-$$  # runs on runc's default root (`ctr containers create` has no --runc-root): a unique id
make_containers() {
  local _
  run -d "$REF" ran /bin/sh -c 'echo written-before-reboot >/data/marker; exec sleep 1000' || return 1
  ct_ctr containers create --snapshotter nydus "$REF" "$C2" /bin/show || return 1
  for _ in $(seq 50); do ct_ctr task exec --exec-id "m$_" ran /bin/sh -c 'cat /data/marker' 2>/dev/null | grep -q written && return 0; sleep 0.1; done
  return 1
}
step "containers before the reboot: 'ran' (wrote /data/marker, runs), '$C2' (created, never started)" make_containers
below_work() { awk -v d="$WORK" '$2 == d || index($2, d "/") == 1 {print $2}' /proc/self/mounts; }
reboot() {
  local c p _
  for c in $(ct_ctr task ls -q); do ct_ctr task kill -s KILL "$c"; done
  for _ in $(seq 50); do [ -z "$(ct_ctr task ls | awk 'NR > 1 && $3 != "STOPPED"')" ] && break; sleep 0.1; done
  # The power goes: nothing gets to clean up.
  for p in $(ct_pids containerd-shim "$CT_CD_SOCK") "$CT_CD_PID" "$CT_SNAP_PID" $(nydusd_pids); do kill -KILL "$p"; done
  wait "$CT_CD_PID" "$CT_SNAP_PID" 2>/dev/null
  CT_CD_PID='' CT_SNAP_PID=''
  for _ in $(seq 50); do [ -z "$(nydusd_pids)" ] && break; sleep 0.1; done
  echo "mounts before unmounting:"; below_work
  umount_below "$WORK"
  # /run is a tmpfs: containerd's state and runc's root are gone after a reboot.
  rm -rf "$CT_CD/state" "$RUNC_ROOT" "/run/containerd/runc/default/$C2"
  mv "$CT_LOGS/snapshotter.log" "$CT_LOGS/snapshotter.before-reboot.log"
  mv "$CT_LOGS/containerd.log" "$CT_LOGS/containerd.before-reboot.log"
  echo "left: nydusd '$(nydusd_pids)', mounts '$(below_work)'"
  [ -z "$(nydusd_pids)" ] && [ -z "$(below_work)" ]
}
step "reboot: tasks killed; kill -9 of shims, containerd, snapshotter, nydusd; every mount gone; /run wiped" reboot
step "containerd and the snapshotter start again on the same roots" start_all
check_no_daemon_yet() {  # lazy: a daemon is started by the Mounts of a task start, not at boot
  echo "nydusd: '$(nydusd_pids)'; mnt: $(ls "$CT_ROOT/mnt" 2>/dev/null); socket: $(ls "$CT_ROOT/socket" 2>/dev/null)"
  [ -z "$(nydusd_pids)" ] && [ -z "$(ls "$CT_ROOT/socket" 2>/dev/null)" ]
}
step "no daemon started before a container needs one; the dead daemons' sockets cleaned up" check_no_daemon_yet
restart_ran() {
  local out
  ct_ctr task start -d ran || return 1
  out=$(ct_ctr task exec --exec-id a1 ran /bin/sh -c 'cat /data/marker; sha256sum /data/random.bin') || return 1
  echo "$out"
  [ "$out" = "written-before-reboot
$SUM  /data/random.bin" ]
}
step "ctr task start of 'ran': its write survived, the image's bytes right" restart_ran
start_created() {
  local out
  out=$(ct_ctr task start "$C2") || return 1
  echo "$out"
  [ "$out" = "$SUM  /data/random.bin
hello from the image" ]
}
step "ctr task start of '$C2' (created before the reboot): right output" start_created
step "ctr run --user app after the reboot" user_ids app '1234:2345:app'
check_one_daemon() {  # the two containers share their image's one nydusd, mounted below the root
  local p
  p=$(nydusd_pids); echo "nydusd: $p"
  [ "$(echo "$p" | wc -w)" -eq 1 ] && is_mounted "$(lower_of ran)"
}
step "one nydusd serves the image again, the rootfs' lowerdir is its mount" check_one_daemon
remove_all() {
  local c _
  for c in $(ct_ctr task ls -q); do ct_ctr task kill -s KILL "$c"; done
  sleep 0.5
  for c in $(ct_ctr task ls -q); do ct_ctr task rm -f "$c"; done
  for c in $(ct_ctr containers ls -q); do ct_ctr containers rm "$c" || return 1; done
  ct_ctr image rm --sync "$REF" || return 1
  for _ in $(seq 50); do [ -z "$(nydusd_pids)" ] && [ -z "$(ls "$CT_ROOT/snapshots")" ] && break; sleep 0.2; done
  echo "nydusd: '$(nydusd_pids)'; snapshots: '$(ct_ctr snapshots --snapshotter nydus ls | tail -n +2)'"
  echo "dirs: snapshots '$(ls "$CT_ROOT/snapshots")' mnt '$(ls "$CT_ROOT/mnt" 2>/dev/null)' socket '$(ls "$CT_ROOT/socket" 2>/dev/null)' supervisor '$(ls "$CT_ROOT/supervisor" 2>/dev/null)'"
  echo "mounts below the root: $(awk -v d="$CT_ROOT" 'index($5, d) == 1' /proc/self/mountinfo)"
  [ -z "$(nydusd_pids)" ] && [ -z "$(ct_ctr snapshots --snapshotter nydus ls | tail -n +2)" ] &&
    [ -z "$(ls "$CT_ROOT/snapshots")" ] && [ -z "$(ls "$CT_ROOT/mnt" 2>/dev/null)" ] &&
    [ -z "$(ls "$CT_ROOT/socket" 2>/dev/null)" ] && [ -z "$(ls "$CT_ROOT/supervisor" 2>/dev/null)" ] &&
    [ -z "$(awk -v d="$CT_ROOT" 'index($5, d) == 1' /proc/self/mountinfo)" ]
}
step "everything removed: no nydusd, snapshot, mount, socket or supervisor left" remove_all
# ---- the shared daemon (--daemon-mode shared) fails over too ------------------------------
shared_mode() {
  restart_snapshotter --daemon-mode shared "${SNAP_FLAGS[@]}" || return 1
  ctr-remote --address "$CT_CD_SOCK" image rpull --plain-http --snapshotter nydus "$REF" >/dev/null || return 1
  ct_ctr task rm -f reader >/dev/null 2>&1; ct_ctr containers rm reader >/dev/null 2>&1
  run -d "$REF" reader /bin/sh -c \
    "while :; do sha256sum /data/random.bin >>/data/sums.txt 2>>/data/errors.txt || echo fail >>/data/errors.txt; done" || return 1
  echo "shared nydusd: $(tr '\0' ' ' <"/proc/$(nydusd_pids)/cmdline")"
  [ "$(echo "$(nydusd_pids)" | wc -w)" -eq 1 ] && [ "$(lower_of reader)" = "$CT_ROOT/mnt/$(basename "$(lower_of reader)")" ]
}
step "--daemon-mode shared --recover-policy failover: a reader on an image of the shared nydusd" shared_mode
step "kill -9 of the shared nydusd: taken over with its image, the reader only waits, right bytes" failover
step "the snapshotter logged no internal error" sh -c "! cat '$CT_LOGS'/snapshotter*.log | grep -E ' (error|critical) '"

summary
