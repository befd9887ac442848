#!/usr/bin/env bash
# Install the Debian build/test dependencies (skipped when already installed) and build the
# project into ./build (or $BUILD_DIR) with CMake + Ninja.
#   SKIP_APT=1   don't touch apt at all      BUILD_TYPE=Release|RelWithDebInfo|Debug
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD_DIR=${BUILD_DIR:-$ROOT/build}
BUILD_TYPE=${BUILD_TYPE:-RelWithDebInfo}

PACKAGES=(
  cmake ninja-build g++ pkg-config ccache  # ccache: CMakeLists.txt (NYDUS_CCACHE)
  libfuse3-dev fuse3 libzstd-dev liblz4-dev zlib1g-dev libssl-dev nlohmann-json3-dev libcli11-dev
  libspdlog-dev libfmt-dev libgtest-dev libgmock-dev googletest libbenchmark-dev
  librust-blake3-dev libarchive-dev libcurl4-openssl-dev
  erofs-utils attr zstd lz4 python3 xxd time
  python3-prometheus-client  # containers.sh parses the snapshotter's metrics with it
  b3sum  # rafs_v5.sh: checks blake3 digests of upstream v5 images (Python has no blake3)
  gdb nodejs  # gdb: the crash-window test; node: s3rver (the S3 peer of the storage tests)
  fdisk  # sfdisk writes the GPT image of the localdisk backend test
  docker-registry apache2-utils umoci skopeo nginx-light  # nginx: a caching proxy in front of the registry (tests)
  # containerd-nydus-grpc: gRPC + protobuf (containerd's snapshots v1 .proto files from its Go
  # sources; gogo.proto from golang-github-gogo-protobuf-dev), SQLite metadata; its test runs
  # containerd 1.6 + runc, and ctr-remote (stargz-snapshotter) for `image rpull`
  libgrpc++-dev protobuf-compiler-grpc protobuf-compiler libprotobuf-dev libsqlite3-dev sqlite3
  libyaml-cpp-dev  # kubelet credential provider configs (YAML) read by the snapshotter
  golang-github-containerd-containerd-dev golang-github-gogo-protobuf-dev containerd runc stargz-snapshotter
  golang-go  # containers_recovery.sh builds `ctr run --user` from containerd's client sources (GOPATH mode)
  clang-16 libclang-rt-16-dev  # only for fuzz/ (libFuzzer); clang 14/15 cannot compile <expected>
  # fscache mode's real-kernel tests: a 6.12 kernel built from source (cached in
  # /var/cache/nydus-cpp/kernel), booted under QEMU with a busybox initramfs
  qemu-system-x86 busybox-static cpio linux-source-6.12 bc bison flex libelf-dev xz-utils make gcc
  cryptsetup-bin  # tarfs.sh: veritysetup verifies the dm-verity tree of export --block --verity
  dmsetup  # power_loss.sh: a dm-flakey device in that guest drops unsynced writes (a power cut)
  mmdebstrap  # zran_distro.sh (and bench/rootfs.sh): a real Debian rootfs from the package mirror, cached
)

missing_packages() {
  local p
  for p in "${PACKAGES[@]}"; do
    if [ "$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null)" != installed ]; then
      echo "$p"
    fi
  done
}

if [ "${SKIP_APT:-0}" != 1 ]; then
  if ! command -v dpkg-query >/dev/null; then
    echo "setup: not a Debian/Ubuntu system (no dpkg-query); install the equivalents of:" >&2
    echo "  ${PACKAGES[*]}" >&2
  else
    mapfile -t missing < <(missing_packages)
    if [ "${#missing[@]}" -eq 0 ]; then
      echo "setup: all ${#PACKAGES[@]} packages already installed"
    else
      echo "setup: installing ${missing[*]}"
      SUDO=()
      [ "$(id -u)" -eq 0 ] || SUDO=(sudo)
      "${SUDO[@]}" apt-get update
      DEBIAN_FRONTEND=noninteractive "${SUDO[@]}" apt-get install -y --no-install-recommends "${missing[@]}"
    fi
  fi
fi

# s3rver (an S3 emulator) for the remote storage tests, from the npm registry.
if [ "${SKIP_APT:-0}" != 1 ] && ! command -v s3rver >/dev/null; then
  # Debian's nodejs comes without npm (some builds of nodejs bring their own).
  command -v npm >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends npm || true
  if command -v npm >/dev/null; then
    echo "setup: installing s3rver (npm)"
    SUDO=()
    [ "$(id -u)" -eq 0 ] || SUDO=(sudo)
    "${SUDO[@]}" npm install -g --no-fund --no-audit s3rver || echo "setup: npm install s3rver failed; the s3rver tests will skip" >&2
  else
    echo "setup: npm not found; the s3rver tests will skip (install nodejs+npm, then: npm install -g s3rver)" >&2
  fi
fi

echo "setup: configuring $BUILD_DIR ($BUILD_TYPE)"
# In CI a warning is an error (the tree builds clean with g++ 12's -Wall -Wextra).
WERROR=OFF
[ "${CI:-}" = true ] && WERROR=ON
cmake -S "$ROOT" -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE="$BUILD_TYPE" -DNYDUS_WERROR="$WERROR"
echo "setup: building"
ninja -C "$BUILD_DIR"
echo "setup: done: $BUILD_DIR/bin/nydus-image"
