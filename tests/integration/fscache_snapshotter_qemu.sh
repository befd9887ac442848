#!/usr/bin/env bash
# containerd-nydus-grpc with --fs-driver fscache on a real kernel: boots the
# Linux 6.12 guest of fscache_qemu.sh (QEMU TCG, EROFS over cachefiles
# on-demand, overlayfs; no containerd) and inside it runs
# tests/fscache/qemu/guest_snapshotter.sh: snapshots-client sends what
# containerd sends for a Nydus image (Prepare of the blob layer -> skipped,
# Prepare/extract/Commit of the bootstrap layer, Prepare of a container), and
# the guest checks with the kernel as oracle (/proc/mounts, mountinfo, the
# daemon's blob list) that `auto` picked fscache, one `nydusd singleton
# --fscache` runs, the image is registered under upstream's FscacheID and
# mounted as EROFS at the overlay's lowerdir, whose tree equals the source
# (tree-manifest); the container's rootfs mounted as containerd mounts it (the
# overlay Mounts returned): its tree equals the source, a static busybox of the
# image runs from it (chroot) and hashes itself right, a write lands in the
# upper dir and not in the image; nydusctl info names the driver; a non-RAFS bootstrap is a
# FailedPrecondition; a snapshotter restart (config.toml fs_driver = "fscache")
# re-attaches to the same daemon and mount; a "reboot" (daemon killed, mount
# gone) re-registers and re-mounts at the next Mounts; with --recover-policy
# failover a SIGKILLed daemon is taken over (supervisor, --upgrade) under the
# same EROFS mount; Remove unmounts and unregisters. One RESULT line per scenario; any FAIL, missing line or timeout fails.
#   KEEP_WORK=1  keep the work dir (console log, initramfs)
set -uo pipefail
. "$(dirname "$0")/lib/common.sh"

[ "$(id -u)" -eq 0 ] || skip "needs root (kernel build cache in /var/cache, tmpfs)"
need_nydus_image
QEMU_DIR=$NYDUS_SOURCE_DIR/tests/fscache/qemu
for b in nydusd nydusctl tree-manifest containerd-nydus-grpc snapshots-client; do
  [ -x "$NYDUS_BIN_DIR/$b" ] || die "$b not found in $NYDUS_BIN_DIR (build first)"
done

WORK=$(mktemp -d /var/tmp/nydus-fscache-snap-qemu.XXXXXX)
LOG_DIR=$WORK
cleanup() {
  umount "$WORK/srcfs" 2>/dev/null
  if [ "${KEEP_WORK:-0}" = 1 ]; then echo "kept $WORK"; return; fi
  rm -rf "$WORK"
}
trap cleanup EXIT

KERNEL=$("$QEMU_DIR/build_kernel.sh" | tail -n1) || die "kernel build failed"
[ -s "$KERNEL" ] || die "no kernel image"
echo "kernel: $KERNEL"

mkdir -p "$WORK/srcfs" "$WORK/root/images/blobs" "$WORK/root/expected" "$WORK/root/etc" "$WORK/layer/image"
mount -t tmpfs -o size=256m,mode=0755 tmpfs "$WORK/srcfs" || die "cannot mount tmpfs"
SRC=$WORK/srcfs/tree
step "make awkward tree" "$PY" "$LIB_DIR/make_tree.py" --small "$SRC" || die "make_tree.py failed"
# A program of the image the guest runs from the container's rootfs (chroot), and its digest.
mkdir -p "$SRC/cbin" && cp "$(readlink -f /bin/busybox)" "$SRC/cbin/busybox" || die "no busybox"
file -b "$SRC/cbin/busybox" | grep -q 'statically linked' || die "/bin/busybox is not static (busybox-static)"
sha256sum "$SRC/cbin/busybox" | cut -d' ' -f1 > "$WORK/root/expected/busybox.sha256"
IMG=$WORK/root/images
step "nydus-image create" "$NYDUS_IMAGE" create --fs-version 6 --compressor zstd -B "$WORK/layer/image/image.boot" \
  -D "$IMG/blobs" "$SRC" || die "create failed"
# The bootstrap layer as a Nydus image carries it: image/image.boot in a tar.
tar -C "$WORK/layer" -cf "$IMG/boot.tar" image || die "tar of the bootstrap layer failed"
step "source manifest" sh -c "'$NYDUS_BIN_DIR/tree-manifest' '$SRC' > '$WORK/root/expected/manifest'" ||
  die "tree-manifest of the source failed"
# The container's rootfs (an overlay over the image) as the kernel shows it: a 0:0 character
# device is an overlay whiteout, listed in a lower-only directory but not there to lstat.
sed -E 's/^([^ ]+) c .* rdev=0:0( .*)?$/\1 LSTAT-ERROR/' "$WORK/root/expected/manifest" >"$WORK/root/expected/rootfs.manifest"
grep -q 'LSTAT-ERROR' "$WORK/root/expected/rootfs.manifest" || die "the tree has no 0:0 device (make_tree.py changed?)"
cat > "$WORK/root/etc/nydusd.json" <<'JSON'
{"device": {"backend": {"type": "localfs", "config": {"dir": "/images/blobs"}},
            "cache": {"type": "fscache"}},
 "mode": "direct", "digest_validate": false, "enable_xattr": true,
 "fs_prefetch": {"enable": false, "threads_count": 2, "merging_size": 1048576}}
JSON
printf '[daemon]\nfs_driver = "fscache"\n' > "$WORK/root/etc/snapshotter.toml"

TREE_MB=$(( $(du -sm "$SRC" | cut -f1) + 1 ))
truncate -s $((512 + 4 * TREE_MB))M "$WORK/cache.img"
mkfs.ext4 -q -F "$WORK/cache.img" || die "mkfs.ext4 failed"

step "initramfs" "$QEMU_DIR/make_initramfs.sh" "$WORK/initramfs.cpio.gz" "$QEMU_DIR/guest_snapshotter.sh" \
  "$QEMU_DIR/guest_lib.sh:/lib/guest_lib.sh" "$NYDUS_BIN_DIR/nydusd" "$NYDUS_BIN_DIR/nydusctl" \
  "$NYDUS_BIN_DIR/tree-manifest" "$NYDUS_BIN_DIR/containerd-nydus-grpc" "$NYDUS_BIN_DIR/snapshots-client" \
  "$WORK/root/images:/images" "$WORK/root/expected:/expected" "$WORK/root/etc/nydusd.json:/etc/nydusd.json" \
  "$WORK/root/etc/snapshotter.toml:/etc/snapshotter.toml" || die "initramfs failed"

t0=$SECONDS
rc=0
"$QEMU_DIR/run_guest.sh" --kernel "$KERNEL" --initrd "$WORK/initramfs.cpio.gz" --disk "$WORK/cache.img" \
  --mem $((1536 + 3 * TREE_MB)) \
  --timeout "${FSCACHE_GUEST_TIMEOUT:-900}" --log "$WORK/console.log" > /dev/null || rc=$?
echo "guest ran $((SECONDS - t0)) s (exit $rc)"
grep -E '^RESULT ' "$WORK/console.log"

EXPECTED=(auto_picks_fscache bootstrap_layer container_prepare lower_matches_source rootfs_mounted
          rootfs_matches_source program_runs_from_rootfs write_goes_to_upper nydusctl_info_driver
          bad_bootstrap_refused restart_adopts after_restart reboot_remounts after_reboot
          failover_keeps_mount after_failover remove_unmounts_and_unregisters done)
[ "$rc" -eq 0 ] || fail_step "guest" "run_guest.sh exited with $rc (124: timeout, 3: kernel panic)"
while read -r line; do
  fail_step "${line#RESULT }" "in the guest"
done < <(grep '^RESULT .*: FAIL' "$WORK/console.log")
for name in "${EXPECTED[@]}"; do
  if grep -q "^RESULT $name: OK" "$WORK/console.log"; then PASSES=$((PASSES + 1))
  elif ! grep -q "^RESULT $name: " "$WORK/console.log"; then fail_step "$name" "no RESULT line"; fi
done
if [ "$FAILS" -gt 0 ]; then
  echo "---- console (last 60 lines) ----"
  tail -n 60 "$WORK/console.log"
  cp "$WORK/console.log" /var/tmp/nydus-fscache-snap-qemu.console.log &&
    echo "console log: /var/tmp/nydus-fscache-snap-qemu.console.log"
fi
summary
