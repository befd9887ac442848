# distro_rootfs_tar PACKAGES: print the path of a Debian bookworm minbase
# rootfs tarball with PACKAGES (comma-separated) installed, made by mmdebstrap
# from the package mirror once and cached outside the checkout
# (ROOTFS_CACHE, default /var/cache/nydus-cpp), keyed by the package list.
# Shared by the tests and bench/ that need real distribution files.
distro_rootfs_tar() {
  local packages=$1 cache=${ROOTFS_CACHE:-/var/cache/nydus-cpp} key tarball
  command -v mmdebstrap >/dev/null || { echo "mmdebstrap not installed (scripts/setup.sh)" >&2; return 1; }
  key=$(echo "bookworm minbase $packages" | sha256sum | cut -c1-16)
  tarball=$cache/rootfs-$key.tar
  if [ ! -s "$tarball" ]; then
    mkdir -p "$cache" || return 1
    echo "mmdebstrap: bookworm minbase + $packages -> $tarball" >&2
    mmdebstrap --variant=minbase --format=tar --include="$packages" bookworm "$tarball.tmp.$$" >&2 || {
      echo "mmdebstrap failed (it needs the Debian mirror)" >&2; rm -f "$tarball.tmp.$$"; return 1; }
    mv "$tarball.tmp.$$" "$tarball" || return 1
  fi
  echo "$tarball"
}
