#!/usr/bin/env bash
# Build (or reuse) a minimal x86_64 Linux 6.12 bzImage with EROFS-over-fscache
# (cachefiles on-demand) and device-mapper flakey for the QEMU TCG guest tests.
#
# Usage: tests/fscache/qemu/build_kernel.sh
#   Prints the bzImage path as the last line of stdout; progress goes to stderr.
#   NYDUS_KERNEL_CACHE     cache root (default /var/cache/nydus-cpp/kernel)
#   NYDUS_KERNEL_FRAGMENT  config fragment (default: erofs-ondemand.config beside this script,
#                          a copy of ../shared/kernel/erofs-ondemand.config)
#   SKIP_APT=1             never call apt-get (fail if something is missing)
#
# Needs root (or sudo) only to install missing packages and to write the default
# cache dir. A cold build takes ~10 min on 2 busy cores; a cache hit returns at once.
set -euo pipefail

SELF=$(readlink -f "${BASH_SOURCE[0]}")
FRAGMENT=${NYDUS_KERNEL_FRAGMENT:-$(dirname "$SELF")/erofs-ondemand.config}
CACHE_ROOT=${NYDUS_KERNEL_CACHE:-/var/cache/nydus-cpp/kernel}
SRC_PKG=linux-source-6.12
SRC_TARBALL=/usr/src/linux-source-6.12.tar.xz
PACKAGES=("$SRC_PKG" bc bison flex libelf-dev libssl-dev cpio xz-utils make gcc)

# Options the guest needs beyond the shared fragment. Kept here (and hashed into
# the cache key) so the shared file stays untouched.
EXTRA_FRAGMENT=$(cat <<'FRAG'
# /proc/sys/vm/drop_caches: tests drop the page cache to force fresh on-demand READs.
CONFIG_PROC_SYSCTL=y
# /proc/sysrq-trigger ('w', 't'): dump blocked tasks when a guest test hangs.
CONFIG_MAGIC_SYSRQ=y
# madvise/posix_fadvise: glibc malloc and the daemon call them; ENOSYS otherwise.
CONFIG_ADVISE_SYSCALLS=y
# TCP on loopback: a registry backend served by busybox httpd inside the guest.
CONFIG_INET=y
# /dev/fuse: the benchmark runs FUSE mode beside fscache mode in the same guest.
CONFIG_FUSE_FS=y
# device-mapper's flakey target: power_loss.sh drops every write below the page
# cache (drop_writes) to simulate a power cut under the blob cache.
CONFIG_MD=y
CONFIG_BLK_DEV_DM=y
CONFIG_DM_FLAKEY=y
# overlayfs: the snapshotter test mounts a container's rootfs (an overlay whose lower dir is
# the image's EROFS over fscache) as containerd would, and runs a program from it.
CONFIG_OVERLAY_FS=y
FRAG
)

# Options whose absence makes the kernel useless for the tests: fail loudly.
REQUIRED=(
  CONFIG_EROFS_FS_ONDEMAND CONFIG_CACHEFILES_ONDEMAND CONFIG_EXT4_FS CONFIG_VIRTIO_BLK
  CONFIG_UNIX CONFIG_DEVTMPFS CONFIG_TMPFS CONFIG_BLK_DEV_INITRD CONFIG_RD_GZIP
  CONFIG_SERIAL_8250_CONSOLE CONFIG_BINFMT_ELF CONFIG_BINFMT_SCRIPT CONFIG_PROC_SYSCTL
  CONFIG_INET CONFIG_FUSE_FS CONFIG_BLK_DEV_DM CONFIG_DM_FLAKEY CONFIG_OVERLAY_FS
)

log() { echo "build_kernel: $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

pkg_installed() { [ "$(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null)" = installed ]; }

install_missing() {
  local p missing=()
  for p in "${PACKAGES[@]}"; do pkg_installed "$p" || missing+=("$p"); done
  [ "${#missing[@]}" -eq 0 ] && return 0
  [ "${SKIP_APT:-0}" = 1 ] && die "missing packages (SKIP_APT=1): ${missing[*]}"
  local sudo=()
  [ "$(id -u)" -eq 0 ] || sudo=(sudo)
  log "installing ${missing[*]}"
  "${sudo[@]}" apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
}

[ -r "$FRAGMENT" ] || die "config fragment not readable: $FRAGMENT"
command -v dpkg-query >/dev/null || die "needs a Debian system (dpkg-query, apt-get)"
install_missing
[ -r "$SRC_TARBALL" ] || die "$SRC_TARBALL missing although $SRC_PKG is installed"

# The key changes whenever the config or the kernel sources change, or the
# recipe below does (bump RECIPE then; comments and logging do not count).
RECIPE=1
SRC_VERSION=$(dpkg-query -W -f='${Version}' "$SRC_PKG")
KEY=$( { cat "$FRAGMENT"; printf '%s\n' "$EXTRA_FRAGMENT" "$SRC_PKG=$SRC_VERSION" "recipe=$RECIPE"; } \
       | sha256sum | cut -d' ' -f1)
OUT_DIR=$CACHE_ROOT/$KEY
OUT=$OUT_DIR/bzImage

if [ -s "$OUT" ]; then
  log "cache hit ($SRC_PKG $SRC_VERSION)"
  echo "$OUT"
  exit 0
fi

log "cache miss: building $SRC_PKG $SRC_VERSION (key ${KEY:0:12}); this takes a few minutes"
mkdir -p "$OUT_DIR"
# /var/tmp, not /tmp: the tree is ~1.5 GB once built and /tmp may be a small tmpfs.
WORK=$(mktemp -d /var/tmp/nydus-kernel.XXXXXX)
trap 'rm -rf "$WORK"' EXIT

start=$SECONDS
log "extracting $SRC_TARBALL"
tar -xf "$SRC_TARBALL" -C "$WORK"
KSRC=$WORK/linux-source-6.12
[ -d "$KSRC" ] || die "unexpected tarball layout (no linux-source-6.12/)"
printf '%s\n' "$EXTRA_FRAGMENT" > "$WORK/extra.config"

cd "$KSRC"
make -s ARCH=x86_64 tinyconfig >&2
# -m: merge only (no implicit alldefconfig); olddefconfig then resolves dependencies.
./scripts/kconfig/merge_config.sh -m .config "$FRAGMENT" "$WORK/extra.config" >&2
make -s ARCH=x86_64 olddefconfig >&2

# merge_config only warns when a symbol is dropped (e.g. an unmet dependency),
# so check the result ourselves.
for opt in "${REQUIRED[@]}"; do
  grep -qx "$opt=y" .config || die "$opt=y missing from the final .config (dependency dropped?)"
done
while IFS= read -r line; do
  case $line in CONFIG_*=*) grep -qxF "$line" .config || log "warning: '$line' did not survive olddefconfig" ;; esac
done < <(cat "$FRAGMENT" "$WORK/extra.config")

log "make -j$(nproc) bzImage"
make ARCH=x86_64 -j"$(nproc)" bzImage >&2
log "kernel built in $((SECONDS - start)) s"

# Write under a temp name then rename: a concurrent reader never sees a partial file.
cp arch/x86/boot/bzImage "$OUT_DIR/.bzImage.$$"
cp .config "$OUT_DIR/.config.$$"
mv -f "$OUT_DIR/.config.$$" "$OUT_DIR/config"
mv -f "$OUT_DIR/.bzImage.$$" "$OUT"
cd /
rm -rf "$WORK"
trap - EXIT
echo "$OUT"
