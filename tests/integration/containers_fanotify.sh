#!/usr/bin/env bash
# containerd-nydus-grpc driving `nydusd fanotify` (the kernel's EROFS mounts the
# bootstrap over nydusd's blob cache files, filled on fanotify pre-content
# events), under real containerd 1.6 + runc (lib/containerd.sh), a Nydus image
# converted by our nydusify into a docker-registry on loopback.
#   - `--fs-driver auto` picks fanotify on this kernel (>= 6.14 with erofs: the
#     oracle is uname and /proc/filesystems, not our probe) and logs why;
#   - `ctr-remote image rpull` + `ctr run`: the nydusd serving the image runs as
#     `nydusd fanotify`, the container's overlay lowerdir is an erofs mount
#     (/proc/self/mountinfo), `nydusctl info` says `Driver: fanotify`, and the
#     sha256 of several files inside equals the source tree's;
#   - kill -9 of the nydusd under a container that reads not-yet-fetched
#     files one by one (default --recover-policy restart, which acts as
#     failover for fanotify): the supervisor held the group fd, a new nydusd
#     --upgrade takes it over, the EROFS mount is the same (mount id), every
#     read has the source's sha256 (no zeros from unfilled ranges) and none failed;
#   - the snapshotter restarted with --recover-policy none re-attaches the
#     daemon and its supervisor; a kill -9 of nydusd leaves it dead with the
#     mount in place (readers wait), the next `ctr run` takes it over;
#   - a reboot (daemon and mount gone): the next `ctr run` gets a fresh one;
#   - `ctr image rm` + the snapshots' removal: no nydusd, mount, socket or
#     supervisor left;
#   - `--fs-driver fanotify --daemon-mode shared` is refused at start (exit 2,
#     says why); `auto` + shared keeps fusedev and says why.
set -uo pipefail
# shellcheck source-path=SCRIPTDIR source=lib/common.sh
source "$(dirname "$0")/lib/common.sh"

# shellcheck source=lib/containers_test.sh
source "$LIB_DIR/containers_test.sh"
ct_test_preflight busybox
grep -qw erofs /proc/filesystems || modprobe erofs 2>/dev/null || true
grep -qw erofs /proc/filesystems || skip_kernel "no erofs"
IFS=. read -r KMAJ KMIN _ <<<"$(uname -r)"
[ "$KMAJ" -gt 6 ] || { [ "$KMAJ" -eq 6 ] && [ "${KMIN%%[!0-9]*}" -ge 14 ]; } ||
  skip_kernel "fanotify pre-content events need Linux >= 6.14 (this is $(uname -r))"

ct_test_workdir ct-fanotify
SNAP_FLAGS=(--fs-driver auto --log-level debug)

# ---- the image: busybox-static, a few files, 300 parts of 96 KiB (read one by one) ----
make_image() {
  local r=b0/rootfs i
  umoci init --layout img && umoci new --image img:base && umoci unpack --image img:base b0 >/dev/null || return 1
  mkdir -p "$r/bin" "$r/data/sub/deeper" "$r/data/parts" || return 1
  cp "$BUSYBOX" "$r/bin/busybox" && ln -s busybox "$r/bin/sh" || return 1
  head -c 3000000 /dev/urandom >"$r/data/random.bin"
  head -c 12345 /dev/urandom >"$r/data/sub/odd.bin"
  seq 1 200000 >"$r/data/sub/deeper/numbers.txt"
  echo "hello from the image" >"$r/data/hello.txt"
  for i in $(seq -w 0 299); do head -c 98304 /dev/urandom >"$r/data/parts/p$i"; done
  umoci repack --image img:v1 b0
}
step "umoci: busybox-static image with data files and 300 parts" make_image || die "cannot build the image"
# The oracle: the source tree's sums, as the container's sha256sum prints them.
(cd b0/rootfs && sha256sum data/random.bin data/sub/odd.bin data/sub/deeper/numbers.txt data/hello.txt bin/busybox |
  sed 's#  #  /#') >want_files.txt
(cd b0/rootfs && sha256sum data/parts/* | sed 's#  #  /#') >want_parts.txt
step "docker-registry on loopback" start_registry "$WORK/registry" || die "no registry"
REF=$REGISTRY_HOST/test/nydus:v1
step "skopeo + nydusify convert" sh -c "skopeo copy --dest-tls-verify=false oci:img:v1 docker://$REGISTRY_HOST/test/plain:v1 &&
  '$NYDUSIFY' convert --source $REGISTRY_HOST/test/plain:v1 --target $REF --source-insecure --target-insecure --work-dir '$WORK/convert'" ||
  die "convert failed"

# containerd dials a proxy it found absent with gRPC's backoff: a Prepare is what reaches us.
start_all() { ct_start "${SNAP_FLAGS[@]}" || return 1; ct_wait_proxy; }
step "containerd-nydus-grpc --fs-driver auto + containerd 1.6" start_all || die "no snapshotter/containerd"
chose_fanotify() {
  grep 'fs driver' "$CT_LOGS/snapshotter.log"
  grep -q 'fs driver fanotify (auto: fanotify pre-content offered (fanotify_init(FAN_CLASS_PRE_CONTENT) works; a FAN_PRE_ACCESS mark in .* works; erofs in /proc/filesystems)' \
    "$CT_LOGS/snapshotter.log" && grep -q 'fs-driver auto -> fanotify' "$CT_LOGS/snapshotter.log"
}
step "auto chose fanotify on this kernel, and logged each reason" chose_fanotify
step "ctr-remote image rpull --snapshotter nydus" ctr-remote --address "$CT_CD_SOCK" image rpull --plain-http \
  --snapshotter nydus "$REF" || die "rpull failed"
nydusd_pids() { ct_pids nydusd "$CT_ROOT/"; }
run() { ct_ctr run --runc-root "$RUNC_ROOT" --snapshotter nydus "$@"; }
rootfs_opt() {  # CONTAINER OPTION: an option of its rootfs overlay mount
  awk -v d="$CT_CD/state/io.containerd.runtime.v2.task/default/$1/rootfs" '$5 == d {print $NF}' /proc/self/mountinfo |
    tr ',' '\n' | sed -n "s/^$2=//p"
}
fstype_at() { awk -v d="$1" '$5 == d { for (i = 6; i <= NF; i++) if ($i == "-") { print $(i + 1); exit } }' /proc/self/mountinfo; }
mount_id_of() { awk -v d="$1" '$5 == d {print $1}' /proc/self/mountinfo; }

# ---- a container's bytes are the source's ---------------------------------------------------
files_right() {
  run --rm "$REF" "sums$STEP_NO" /bin/sh -c \
    'sha256sum /data/random.bin /data/sub/odd.bin /data/sub/deeper/numbers.txt /data/hello.txt /bin/busybox' >got_files.txt || return 1
  diff want_files.txt got_files.txt && echo "$(wc -l <got_files.txt) files equal the source tree"
}
step "ctr run: sha256 of 5 files inside equals the source tree's" files_right

# ---- the daemon and the mount are the fanotify path ------------------------------------------
step "ctr run -d: a container reading the 300 parts one by one (slowly)" run -d "$REF" reader /bin/sh -c \
  'sleep 2; for f in /data/parts/*; do sha256sum $f >>/sums.txt 2>>/errors.txt || echo "fail $f" >>/errors.txt; sleep 0.04; done; echo finished >>/sums.done; exec sleep 1000'
LOWER=''
fanotify_path() {
  local p lower
  p=$(nydusd_pids)
  lower=$(rootfs_opt reader lowerdir)
  LOWER=${lower%%:*}
  echo "nydusd $p: $(tr '\0' ' ' <"/proc/$p/cmdline")"
  echo "lowerdir $LOWER: $(fstype_at "$LOWER")"
  [ "$(echo "$p" | wc -w)" -eq 1 ] || return 1
  [ "$(tr '\0' '\n' <"/proc/$p/cmdline" | sed -n 2p)" = fanotify ] || { echo "not nydusd fanotify"; return 1; }
  [ "$LOWER" = "$CT_ROOT/mnt/$(basename "$LOWER")" ] && [ "$(fstype_at "$LOWER")" = erofs ]
}
step "the image's nydusd is \`nydusd fanotify\`; the rootfs lowerdir is its erofs mount" fanotify_path
nydusctl_driver() {
  local out
  out=$("$CT_BIN/nydusctl" --sock "$CT_ROOT/socket/nydusd-$(basename "$LOWER")/api.sock" info) || return 1
  echo "$out"
  echo "$out" | grep -qx 'Driver:     fanotify (kernel EROFS)'
}
step "nydusctl info: Driver: fanotify (kernel EROFS)" nydusctl_driver

# ---- kill -9 of the nydusd while the container reads unfetched parts -------------------------
upper_file() { echo "$(rootfs_opt reader upperdir)/$1"; }
takeover() {
  local old mid new _ n bad
  old=$(nydusd_pids); mid=$(mount_id_of "$LOWER")
  tr '\0' ' ' <"/proc/$old/cmdline" | grep -q -- "--supervisor $CT_ROOT/supervisor/nydusd-$(basename "$LOWER").sock" ||
    { echo "nydusd has no --supervisor"; return 1; }
  for _ in $(seq 200); do [ "$(cat "$(upper_file sums.txt)" 2>/dev/null | wc -l)" -ge 40 ] && break; sleep 0.1; done
  n=$(wc -l <"$(upper_file sums.txt)")
  echo "kill -9 of nydusd $old after $n parts read"
  [ "$n" -lt 250 ] || { echo "the reader was too fast: nothing left unfetched"; return 1; }
  kill -KILL "$old"
  for _ in $(seq 150); do new=$(nydusd_pids); [ -n "$new" ] && [ "$new" != "$old" ] && break; sleep 0.1; done
  echo "new nydusd: $new: $(tr '\0' ' ' <"/proc/$new/cmdline" 2>/dev/null)"
  [ -n "$new" ] && [ "$new" != "$old" ] || { echo "no new nydusd"; return 1; }
  tr '\0' ' ' <"/proc/$new/cmdline" | grep -q -- '^[^ ]* fanotify --upgrade ' || { echo "new nydusd is not fanotify --upgrade"; return 1; }
  [ "$(mount_id_of "$LOWER")" = "$mid" ] || { echo "the EROFS mount changed: $mid -> $(mount_id_of "$LOWER")"; return 1; }
  for _ in $(seq 300); do [ -s "$(upper_file sums.done)" ] && break; sleep 0.1; done
  [ -s "$(upper_file sums.done)" ] || { echo "the reader did not finish"; return 1; }
  bad=$(diff want_parts.txt "$(upper_file sums.txt)" | grep -c '^[<>]')
  echo "parts read: $(wc -l <"$(upper_file sums.txt)"), differing lines: $bad, errors: $(wc -l <"$(upper_file errors.txt)")"
  diff want_parts.txt "$(upper_file sums.txt)" | head -5; head -5 "$(upper_file errors.txt)"
  [ "$bad" -eq 0 ] && [ ! -s "$(upper_file errors.txt)" ] || return 1
  grep -q 'recover policy restart acts as failover for a fanotify daemon' "$CT_LOGS/snapshotter.log" || { echo "no 'acts as failover' log"; return 1; }
  grep 'failover done' "$CT_LOGS/snapshotter.log" | tail -1 | grep 'fanotify group'
}
step "kill -9 of nydusd mid-read: taken over (--upgrade, same erofs mount); all 300 parts right, 0 errors" takeover
step "a new container reads right through the new nydusd" files_right

# ---- the snapshotter restarted; --recover-policy none; a reboot --------------------------------
restart_snapshotter() {  # FLAGS...: kill -9 and start again with FLAGS
  kill -KILL "$CT_SNAP_PID"; wait "$CT_SNAP_PID" 2>/dev/null
  ct_start_snapshotter "$@" || return 1
  ct_wait_proxy
}
# none: the supervisor keeps the group (readers wait); the next Prepare takes it over.
policy_none() {
  local old mid new _
  old=$(nydusd_pids); mid=$(mount_id_of "$LOWER")
  restart_snapshotter "${SNAP_FLAGS[@]}" --recover-policy none || return 1
  [ "$(nydusd_pids)" = "$old" ] || { echo "nydusd changed at the restart: $old -> $(nydusd_pids)"; return 1; }
  [ -S "$CT_ROOT/supervisor/nydusd-$(basename "$LOWER").sock" ] || { echo "no supervisor socket after the restart"; return 1; }
  for _ in $(seq 50); do grep -q 'its supervisor holds the fanotify group fd' "$CT_LOGS/snapshotter.log" && break; sleep 0.1; done
  kill -KILL "$old"
  sleep 2
  echo "nydusd 2 s after kill -9 of $old: '$(nydusd_pids)'"
  [ -z "$(nydusd_pids)" ] || return 1
  grep 'recover policy none: left so' "$CT_LOGS/snapshotter.log" | tail -1 | grep -q 'fanotify group' || { echo "no 'left so' log"; return 1; }
  [ "$(mount_id_of "$LOWER")" = "$mid" ] || { echo "the EROFS mount changed: $mid -> $(mount_id_of "$LOWER")"; return 1; }
  files_right || return 1
  new=$(nydusd_pids)
  echo "nydusd after the Prepare: $new: $(tr '\0' ' ' <"/proc/$new/cmdline" 2>/dev/null)"
  tr '\0' ' ' <"/proc/$new/cmdline" | grep -q -- '^[^ ]* fanotify --upgrade ' || { echo "not taken over"; return 1; }
  [ "$(mount_id_of "$LOWER")" = "$mid" ] || { echo "the EROFS mount changed: $mid -> $(mount_id_of "$LOWER")"; return 1; }
}
step "snapshotter restarted with --recover-policy none: re-attached (supervisor back); kill -9 of nydusd: left dead, the mount kept; the next ctr run takes it over" policy_none
# A reboot: no daemon, no mount; the next container gets a fresh nydusd fanotify.
reboot() {
  local c p new
  for c in $(ct_ctr task ls -q); do ct_ctr task kill -s KILL "$c"; done
  sleep 0.5
  for c in $(ct_ctr task ls -q); do ct_ctr task rm -f "$c" >/dev/null; done
  for p in "$CT_SNAP_PID" $(nydusd_pids); do kill -KILL "$p"; done
  wait "$CT_SNAP_PID" 2>/dev/null
  umount_below "$CT_ROOT"
  [ -z "$(awk -v d="$CT_ROOT" 'index($5, d) == 1' /proc/self/mountinfo)" ] || { echo "mounts left"; return 1; }
  ct_start_snapshotter "${SNAP_FLAGS[@]}" || return 1
  ct_wait_proxy || return 1
  files_right || return 1
  new=$(nydusd_pids)
  echo "nydusd: $new: $(tr '\0' ' ' <"/proc/$new/cmdline" 2>/dev/null); $LOWER: $(fstype_at "$LOWER")"
  [ "$(echo "$new" | wc -w)" -eq 1 ] && [ "$(tr '\0' '\n' <"/proc/$new/cmdline" | sed -n 2p)" = fanotify ] &&
    ! tr '\0' ' ' <"/proc/$new/cmdline" | grep -q -- ' --upgrade ' && [ "$(fstype_at "$LOWER")" = erofs ]
}
step "reboot (kill -9 of snapshotter and nydusd, mounts gone): the next ctr run gets a fresh nydusd fanotify, right bytes" reboot

# ---- teardown: the last snapshot of the image goes ------------------------------------------
remove_all() {
  local c _
  for c in $(ct_ctr task ls -q); do ct_ctr task kill -s KILL "$c"; done
  sleep 0.5
  for c in $(ct_ctr task ls -q); do ct_ctr task rm -f "$c"; done
  for c in $(ct_ctr containers ls -q); do ct_ctr containers rm "$c" || return 1; done
  ct_ctr image rm --sync "$REF" || return 1
  for _ in $(seq 50); do [ -z "$(nydusd_pids)" ] && [ -z "$(ls "$CT_ROOT/snapshots")" ] && break; sleep 0.2; done
  echo "nydusd: '$(nydusd_pids)'; snapshots: '$(ct_ctr snapshots --snapshotter nydus ls | tail -n +2)'"
  echo "dirs: mnt '$(ls "$CT_ROOT/mnt" 2>/dev/null)' socket '$(ls "$CT_ROOT/socket" 2>/dev/null)' supervisor '$(ls "$CT_ROOT/supervisor" 2>/dev/null)'"
  echo "mounts below the root: $(awk -v d="$CT_ROOT" 'index($5, d) == 1' /proc/self/mountinfo)"
  [ -z "$(nydusd_pids)" ] && [ -z "$(ct_ctr snapshots --snapshotter nydus ls | tail -n +2)" ] &&
    [ -z "$(ls "$CT_ROOT/mnt" 2>/dev/null)" ] && [ -z "$(ls "$CT_ROOT/socket" 2>/dev/null)" ] &&
    [ -z "$(ls "$CT_ROOT/supervisor" 2>/dev/null)" ] &&
    [ -z "$(awk -v d="$CT_ROOT" 'index($5, d) == 1' /proc/self/mountinfo)" ]
}
step "ctr image rm + snapshots removed: no nydusd, mount, socket or supervisor left" remove_all

# ---- shared mode ------------------------------------------------------------------------------
refused_shared() {
  local out rc
  out=$("$CT_BIN/containerd-nydus-grpc" --root "$WORK/shared-root" --address "$WORK/shared.sock" --nydusd "$CT_BIN/nydusd" \
    --fs-driver fanotify --daemon-mode shared 2>&1); rc=$?
  echo "exit $rc: $out"
  [ "$rc" -eq 2 ] && echo "$out" | grep -q -- '--fs-driver fanotify with --daemon-mode shared: not possible' &&
    [ ! -S "$WORK/shared.sock" ]
}
step "--fs-driver fanotify --daemon-mode shared: refused at start, says why" refused_shared
auto_shared() {
  local pid _ ok=1
  "$CT_BIN/containerd-nydus-grpc" --root "$WORK/shared-root" --address "$WORK/shared.sock" --nydusd "$CT_BIN/nydusd" \
    --fs-driver auto --daemon-mode shared >"$WORK/shared.log" 2>&1 &
  pid=$!
  for _ in $(seq 100); do [ -S "$WORK/shared.sock" ] && break; sleep 0.1; done
  grep 'fs driver' "$WORK/shared.log"
  grep -q 'fs driver fusedev (auto: fanotify pre-content offered .*--daemon-mode shared (fanotify serves one image per daemon, there is no shared one); using fusedev)' \
    "$WORK/shared.log" && ok=0
  ct_stop_pid "$pid"
  for p in $(ct_pids nydusd "$WORK/shared-root/"); do ct_stop_pid "$p"; done
  return $ok
}
step "--fs-driver auto --daemon-mode shared: keeps fusedev and logs why" auto_shared
step "the snapshotter logged no internal error" sh -c "! grep -E ' (error|critical) ' '$CT_LOGS/snapshotter.log'"

summary
