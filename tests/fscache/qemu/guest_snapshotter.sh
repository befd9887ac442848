#!/bin/sh
# /init of the snapshotter-over-fscache guest (busybox sh, PID 1). Built into
# the initramfs by tests/integration/fscache_snapshotter_qemu.sh, which made:
#   /images/blobs/<id>     the image's data blob (a localfs backend)
#   /images/boot.tar       the bootstrap layer as containerd unpacks it (image/image.boot)
#   /expected/manifest     tree-manifest of the source tree
#   /etc/nydusd.json       the nydusd config template (localfs backend)
#   /etc/snapshotter.toml  config.toml with fs_driver = "fscache"
# containerd is too heavy for the TCG guest: snapshots-client sends the calls
# containerd sends for a Nydus image. The container's lowerdir (the EROFS the
# snapshotter mounted) is compared with the source, then the overlay Mounts
# returned is mounted as containerd would and a program of the image runs from it.
# Prints one "RESULT <scenario>: OK|FAIL ..." line per scenario, then powers off.
. /lib/guest_lib.sh
guest_setup
mkdir -p /run

R=/cache/snap
SOCK=/run/snap.sock
API=$R/socket/shared_daemon/api.sock
SC="snapshots-client $SOCK"
SNAP_PID=

log() { echo "guest: $*"; }

start_snapshotter() {  # start_snapshotter ARGS...: until its gRPC socket answers
  rm -f $SOCK
  containerd-nydus-grpc --root $R --address $SOCK --nydusd /bin/nydusd --nydusd-config /etc/nydusd.json \
    --log-level debug "$@" >> /tmp/snap.log 2>&1 &
  SNAP_PID=$!
  i=0
  while [ ! -S $SOCK ] && [ $i -lt 600 ]; do
    kill -0 $SNAP_PID 2>/dev/null || return 1
    usleep 100000
    i=$((i + 1))
  done
  [ -S $SOCK ]
}

stop_snapshotter() {
  kill $SNAP_PID
  wait $SNAP_PID 2>/dev/null
}

daemon_pids() {  # the pids of `nydusd singleton [--upgrade] --fscache` processes
  for p in /proc/[0-9]*; do
    { tr '\0' ' ' < $p/cmdline; } 2>/dev/null | grep -q '^/bin/nydusd singleton \(--upgrade \)\{0,1\}--fscache ' &&
      echo ${p#/proc/}
  done
}

# erofs_mount_id DIR: the mount id of an erofs mounted at DIR (empty: none).
erofs_mount_id() {
  awk -v d="$1" '$5 == d && $0 ~ / - erofs / { print $1 }' /proc/self/mountinfo
}

fail_out() {
  result "$1" FAIL "$2 | $(tail -5 /tmp/snap.log | tr '\n' ' ')"
  result done OK
  guest_poweroff
}

# 1. auto picks fscache on this kernel (/dev/cachefiles, erofs; no pre-content
#    fanotify before 6.14) and says why; one singleton daemon starts with it.
[ -c /dev/cachefiles ] || log "no /dev/cachefiles!"
start_snapshotter --fs-driver auto || fail_out auto_picks_fscache "snapshotter did not start"
if grep -q 'fs driver fscache (auto: .*fscache on-demand offered.*using fscache)' /tmp/snap.log &&
   [ "$(daemon_pids | wc -l)" -eq 1 ]; then
  result auto_picks_fscache OK
else
  result auto_picks_fscache FAIL "$(grep 'fs driver' /tmp/snap.log) daemons: $(daemon_pids | tr '\n' ' ')"
fi
DAEMON=$(daemon_pids)

# 2. The image as containerd unpacks it: the blob layer is skipped, the bootstrap
#    layer's tar goes into the bind mount Prepare returns, then Commit.
$SC prepare extract-b1 "" containerd.io/snapshot.ref=sha256:b1 containerd.io/snapshot/nydus-blob=true \
  > /tmp/b1.out 2> /tmp/b1.err
META_LABELS="containerd.io/snapshot.ref=sha256:m1 containerd.io/snapshot/nydus-bootstrap=true
  containerd.io/snapshot/cri.image-ref=localhost/lib/img:latest"
# shellcheck disable=SC2086
$SC prepare extract-m1 sha256:b1 $META_LABELS > /tmp/m1.out 2> /tmp/m1.err
# upper_dir FILE: where an extraction writes (a bind's source, or an overlay's upperdir).
upper_dir() {
  awk '$1 == "bind" { print $2 } $1 == "overlay" { n = split($3, o, ","); for (i = 1; i <= n; i++)
       if (o[i] ~ /^upperdir=/) print substr(o[i], 10) }' "$1"
}
SRC=$(upper_dir /tmp/m1.out)
ID=$(echo "$SRC" | sed -n 's|^'$R'/snapshots/\([0-9]*\)/fs$|\1|p')
# shellcheck disable=SC2086
if grep -q '^ERROR AlreadyExists' /tmp/b1.err && [ -n "$ID" ] && tar -C "$SRC" -xf /images/boot.tar &&
   $SC commit sha256:m1 extract-m1 $META_LABELS 2> /tmp/commit.err; then
  result bootstrap_layer OK
else
  fail_out bootstrap_layer "$(cat /tmp/b1.err /tmp/m1.err /tmp/m1.out /tmp/commit.err | tr '\n' ' ')"
fi
FSID=$(printf "nydus-snapshot-%s" "$ID" | sha256sum | cut -d' ' -f1)
MNT=$R/mnt/$ID

# 3. The container's snapshot: its lowerdir is an EROFS the snapshotter mounted
#    with fsid = upstream's FscacheID, registered in the daemon.
$SC prepare c1 sha256:m1 > /tmp/c1.out 2> /tmp/c1.err || fail_out container_prepare "$(cat /tmp/c1.err)"
if grep -q "^overlay overlay .*lowerdir=$MNT\$" /tmp/c1.out && [ -n "$(erofs_mount_id $MNT)" ] &&
   grep -q " $MNT erofs .*fsid=$FSID" /proc/mounts &&
   nydusctl --sock $API --raw blob list --domain "$FSID" | grep -q "\"$FSID\""; then
  result container_prepare OK
else
  result container_prepare FAIL "$(cat /tmp/c1.out) | $(grep erofs /proc/mounts | tr '\n' ' ')"
fi
MOUNT_ID=$(erofs_mount_id $MNT)

# check_tree NAME DIR: the tree at DIR equals the source (bytes, modes, owners, times, xattrs, links).
check_tree() {
  if tree-manifest "$2" > /tmp/$1.manifest 2>/tmp/$1.err && cmp -s /expected/manifest /tmp/$1.manifest; then
    result "$1" OK
  else
    result "$1" FAIL "$(head -c 300 /tmp/$1.err) $(diff /expected/manifest /tmp/$1.manifest 2>&1 | head -5 | tr '\n' ' ')"
  fi
}
check_tree lower_matches_source $MNT

# 3b. The container's rootfs as containerd mounts it: the overlay Mounts returned
#     ("overlay overlay <options>"), over the EROFS above. Its tree is the source's
#     (a 0:0 character device hidden: overlayfs takes it for a whiteout),
#     a static busybox of the image runs from it (chroot) and hashes itself as the
#     host hashed it, and a write lands in the upper dir, not in the image.
ROOTFS=/tmp/rootfs
mkdir -p $ROOTFS
OPTS=$(awk '$1 == "overlay" { print $3 }' /tmp/c1.out)
UPPER=$(upper_dir /tmp/c1.out)
if [ -n "$OPTS" ] && [ -d "$UPPER" ] && mount -t overlay overlay -o "$OPTS" $ROOTFS; then
  result rootfs_mounted OK
else
  result rootfs_mounted FAIL "options '$OPTS' upper '$UPPER'"
fi
# The expected tree is the source's with its 0:0 character device (an overlay whiteout)
# listed but not there, as overlayfs shows a whiteout of the lowest layer.
tree-manifest $ROOTFS > /tmp/rootfs.manifest 2> /tmp/rootfs.err
if cmp -s /expected/rootfs.manifest /tmp/rootfs.manifest; then
  result rootfs_matches_source OK
else
  result rootfs_matches_source FAIL "$(head -c 300 /tmp/rootfs.err) $(diff /expected/rootfs.manifest /tmp/rootfs.manifest 2>&1 | head -8 | tr '\n' ' ')"
fi
echo 3 > /proc/sys/vm/drop_caches
GOT=$(chroot $ROOTFS /cbin/busybox sha256sum /cbin/busybox 2>&1)
if [ "${GOT%% *}" = "$(cat /expected/busybox.sha256)" ]; then
  result program_runs_from_rootfs OK
else
  result program_runs_from_rootfs FAIL "chroot: $GOT"
fi
chroot $ROOTFS /cbin/busybox sh -c 'echo written-in-container > /written.txt' 2> /tmp/w.err
if [ "$(cat "$UPPER/written.txt" 2>/dev/null)" = written-in-container ] && [ ! -e "$MNT/written.txt" ] &&
   [ "$(cat $ROOTFS/written.txt)" = written-in-container ]; then
  result write_goes_to_upper OK
else
  result write_goes_to_upper FAIL "$(cat /tmp/w.err) upper: $(ls "$UPPER" | head -5 | tr '\n' ' ')"
fi
umount $ROOTFS
rm -f "$UPPER/written.txt"

# 4. nydusctl info names the driver of the shared daemon.
if nydusctl --sock $API info | grep -q '^Driver: *fscache (kernel EROFS)'; then
  result nydusctl_info_driver OK
else
  result nydusctl_info_driver FAIL "$(nydusctl --sock $API info 2>&1 | tr '\n' ' ')"
fi

# 5. Untrusted input: a bootstrap snapshot whose file is no RAFS bootstrap is a
#    clear gRPC error, nothing is registered or mounted for it.
# shellcheck disable=SC2086
$SC prepare extract-m2 sha256:b1 containerd.io/snapshot.ref=sha256:m2 containerd.io/snapshot/nydus-bootstrap=true \
  containerd.io/snapshot/cri.image-ref=localhost/lib/bad:latest > /tmp/m2.out 2>&1
SRC2=$(upper_dir /tmp/m2.out)
mkdir -p "$SRC2/image" && echo "not a bootstrap" > "$SRC2/image/image.boot"
$SC commit sha256:m2 extract-m2 containerd.io/snapshot.ref=sha256:m2 containerd.io/snapshot/nydus-bootstrap=true \
  containerd.io/snapshot/cri.image-ref=localhost/lib/bad:latest 2>> /tmp/m2.out
$SC prepare c2 sha256:m2 > /tmp/c2.out 2> /tmp/c2.err
if grep -q '^ERROR FailedPrecondition .*not a RAFS bootstrap' /tmp/c2.err &&
   [ "$(grep -c ' erofs ' /proc/mounts)" -eq 1 ]; then
  result bad_bootstrap_refused OK
else
  result bad_bootstrap_refused FAIL "$(cat /tmp/m2.out /tmp/c2.out /tmp/c2.err | tr '\n' ' ')"
fi
$SC remove sha256:m2 2> /dev/null

# 6. A snapshotter restart (config.toml fs_driver = "fscache") re-attaches to the
#    running daemon and its image: same daemon, same EROFS mount, still readable.
# A file held open across the restart: mount ids are reused, but a held file of a
# mount the new snapshotter replaced (detached) would no longer resolve under $MNT.
HELD=$(find $MNT -type f | head -n 1)
exec 7< "$HELD"
stop_snapshotter
start_snapshotter --config /etc/snapshotter.toml || fail_out restart_adopts "snapshotter did not restart"
$SC mounts c1 > /tmp/c1b.out 2> /tmp/c1b.err
echo 3 > /proc/sys/vm/drop_caches
if grep -q 'fs driver fscache (--fs-driver fscache' /tmp/snap.log && [ "$(daemon_pids)" = "$DAEMON" ] &&
   [ "$(erofs_mount_id $MNT)" = "$MOUNT_ID" ] && [ "$(readlink /proc/$$/fd/7)" = "$HELD" ] &&
   cmp -s /tmp/c1.out /tmp/c1b.out &&
   grep -q "re-attached to the running nydusd of snapshot $ID" /tmp/snap.log; then
  result restart_adopts OK
else
  result restart_adopts FAIL "daemons '$(daemon_pids | tr '\n' ' ')' was '$DAEMON'; mount $(erofs_mount_id $MNT) was $MOUNT_ID; held $(readlink /proc/$$/fd/7) was $HELD; $(cat /tmp/c1b.err)"
fi
exec 7<&-
check_tree after_restart $MNT

# 7. A reboot: the snapshotter, the daemon and the EROFS mount are gone. The
#    new snapshotter starts a new daemon; Mounts registers and mounts the image again.
stop_snapshotter
kill -9 $DAEMON
umount $MNT
start_snapshotter --config /etc/snapshotter.toml --recover-policy failover ||
  fail_out reboot_remounts "snapshotter did not start after the reboot"
$SC mounts c1 > /tmp/c1c.out 2> /tmp/c1c.err
NEW=$(daemon_pids)
if [ -n "$NEW" ] && [ "$NEW" != "$DAEMON" ] && [ -n "$(erofs_mount_id $MNT)" ] && cmp -s /tmp/c1.out /tmp/c1c.out; then
  result reboot_remounts OK
else
  result reboot_remounts FAIL "daemon '$NEW'; mount '$(erofs_mount_id $MNT)'; $(cat /tmp/c1c.out /tmp/c1c.err | tr '\n' ' ')"
fi
check_tree after_reboot $MNT

# 8. --recover-policy failover: the daemon is SIGKILLed under a held file; the
#    snapshotter's monitor starts `nydusd singleton --upgrade`, which takes
#    /dev/cachefiles over from the supervisor: same EROFS mount, still readable.
HELD=$(find $MNT -type f | head -n 1)
exec 7< "$HELD"
kill -9 $NEW
i=0
while { [ -z "$(daemon_pids)" ] || [ "$(daemon_pids)" = "$NEW" ]; } && [ $i -lt 300 ]; do usleep 100000; i=$((i + 1)); done
i=0
while ! grep -q 'shared_daemon: failover done' /tmp/snap.log && [ $i -lt 300 ]; do usleep 100000; i=$((i + 1)); done
FAILED_OVER=$(daemon_pids)
echo 3 > /proc/sys/vm/drop_caches
if grep -q 'shared_daemon: failover done' /tmp/snap.log && [ -n "$FAILED_OVER" ] && [ "$FAILED_OVER" != "$NEW" ] &&
   [ "$(readlink /proc/$$/fd/7)" = "$HELD" ] && cat "$HELD" > /dev/null &&
   $SC mounts c1 > /tmp/c1d.out 2> /tmp/c1d.err && cmp -s /tmp/c1.out /tmp/c1d.out; then
  result failover_keeps_mount OK
else
  result failover_keeps_mount FAIL "daemon '$FAILED_OVER' was '$NEW'; held $(readlink /proc/$$/fd/7); $(grep -i 'failover\|shared nydusd' /tmp/snap.log | tail -3 | tr '\n' ' ')"
fi
exec 7<&-
check_tree after_failover $MNT
NEW=$FAILED_OVER

# 9. Remove (the container's, then the image's snapshot): the EROFS is unmounted
#    and the registration gone; the daemon keeps running, as upstream's.
$SC remove c1 2> /tmp/rm.err
$SC remove sha256:m1 2>> /tmp/rm.err
if [ -z "$(erofs_mount_id $MNT)" ] && ! grep -q ' erofs ' /proc/mounts && [ ! -e $MNT ] &&
   [ "$(nydusctl --sock $API --raw blob list --domain "$FSID")" = "[]" ] && [ "$(daemon_pids)" = "$NEW" ]; then
  result remove_unmounts_and_unregisters OK
else
  result remove_unmounts_and_unregisters FAIL "$(cat /tmp/rm.err) mounts: $(grep erofs /proc/mounts | tr '\n' ' ') list: $(nydusctl --sock $API --raw blob list --domain "$FSID" 2>&1)"
fi

stop_snapshotter
echo "---- snapshotter log (tail) ----"
tail -n 30 /tmp/snap.log
result done OK
guest_poweroff
