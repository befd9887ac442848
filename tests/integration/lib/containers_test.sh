# shellcheck shell=bash
# The common start of tests/integration/containers_*.sh: real containerd 1.6 +
# runc with our snapshotter (lib/containerd.sh). Source after lib/common.sh.

# ct_test_preflight [TOOL...]: skip unless we are root and containerd, ctr,
# ctr-remote, runc, docker-registry, umoci, skopeo and TOOL... are installed and
# the kernel has overlayfs; fail unless our binaries are built. With busybox
# among the tools it must be static (the images copy it in). Sets NYDUSIFY.
ct_test_preflight() {
  local t b
  [ "$(id -u)" -eq 0 ] || skip "needs root (containerd, mounts)"
  for t in containerd containerd-shim-runc-v2 ctr ctr-remote runc docker-registry umoci skopeo "$@"; do
    command -v "$t" >/dev/null || skip "$t not installed (scripts/setup.sh installs it)"
  done
  grep -qw overlay /proc/filesystems || modprobe overlay 2>/dev/null || true
  grep -qw overlay /proc/filesystems || skip_kernel "no overlayfs"
  NYDUSIFY=$NYDUS_BIN_DIR/nydusify
  for b in "$NYDUS_BIN_DIR/containerd-nydus-grpc" "$NYDUS_BIN_DIR/nydusd" "$NYDUS_BIN_DIR/nydusctl" "$NYDUSIFY"; do
    [ -x "$b" ] || die "$b not built"
  done
  if [[ " $* " == *" busybox "* ]]; then
    BUSYBOX=$(readlink -f "$(command -v busybox)")
    file -b "$BUSYBOX" 2>/dev/null | grep -q 'statically linked' ||
      [ "$(ldd "$BUSYBOX" 2>&1 | grep -c 'not a dynamic')" = 1 ] || skip "busybox is not static (install busybox-static)"
  fi
}

# ct_test_workdir NAME: WORK=/var/tmp/nydus-NAME.XXXXXX (a disk filesystem: EROFS
# cannot mount cache files on tmpfs, nor can fanotify mark them), LOG_DIR for the
# steps, copies of our binaries in $WORK/bin (other builds may relink build/bin
# while a test runs: an exec would fail then), lib/containerd.sh sourced with
# everything below WORK, RUNC_ROOT, REGISTRY_PID, the cleanup trap; cd WORK.
ct_test_workdir() {
  WORK=$(mktemp -d "/var/tmp/nydus-$1.XXXXXX") || die "mktemp"
  LOG_DIR=$WORK/steps
  mkdir -p "$LOG_DIR" "$WORK/bin"
  cp "$NYDUS_BIN_DIR/containerd-nydus-grpc" "$NYDUS_BIN_DIR/nydusd" "$NYDUS_BIN_DIR/nydusctl" "$WORK/bin/" ||
    die "cp binaries"
  CT_WORK=$WORK CT_BIN=$WORK/bin
  # shellcheck source=containerd.sh
  source "$LIB_DIR/containerd.sh"
  RUNC_ROOT=$WORK/runc  # runc's state (/run/containerd/runc on a host)
  REGISTRY_PID=''
  trap ct_test_cleanup EXIT
  cd "$WORK" || die "cd"
}

ct_test_cleanup() {
  ct_stop
  ct_stop_pid "$REGISTRY_PID"
  umount_below "$WORK"
  [ "${KEEP_WORK:-0}" = 1 ] && { echo "kept $WORK"; return; }
  rm -rf "$WORK"
}
