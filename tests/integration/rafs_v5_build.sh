#!/usr/bin/env bash
# shellcheck disable=SC2016  # single-quoted bash -c scripts get their args positionally
# RAFS v5 images built here (`nydus-image create --fs-version 5`), judged by
# oracles that share no code with our writer or reader:
#  - upstream's own v5 fixtures: their unpacked trees rebuilt with the
#    fixtures' algorithms must give the fixture's blob byte for byte (same id)
#    and the fixture's inode records index by index (lib/rafs_v5_build_check.py
#    upstream; the few fields the fixtures' older builder wrote differently
#    from v2.4.4 are listed there);
#  - the source tree: lib/rafs_v5_build_check.py source re-derives upstream
#    2.4.4's layout rules (indexes, ino/nlink/parent, sizes, blocks, order of
#    tables and inodes, packed or --aligned-chunk offsets) from the directory,
#    hashes each chunk's source bytes and decodes each stored chunk from the
#    blob; lib/rafs_v5_oracle.py recomputes every inode digest;
#  - nydusd mounts the image and the mount equals the source tree
#    (compare_trees.py: types, modes, owners, ns mtimes, rdev, xattrs, hard
#    links, content), and nydus-image check verifies every chunk.
set -uo pipefail
# shellcheck source-path=SCRIPTDIR source=lib/common.sh
source "$(dirname "$0")/lib/common.sh"

V5=$NYDUS_FIXTURES_DIR/v5
ORACLE=$LIB_DIR/rafs_v5_oracle.py
CHECK=$LIB_DIR/rafs_v5_build_check.py
[ -d "$V5" ] || die "vendored fixtures missing in $V5 (tests/fixtures/upstream, or NYDUS_FIXTURES_DIR)"
need_nydus_image
need_root_and_fuse
NYDUSD=${NYDUSD:-$NYDUS_BIN_DIR/nydusd}
[ -x "$NYDUSD" ] || die "nydusd not found at $NYDUSD (build first; set NYDUS_BIN_DIR)"
command -v b3sum >/dev/null || skip "b3sum missing (scripts/setup.sh installs it): needed to check blake3 digests"
command -v zstd >/dev/null || skip "zstd missing: needed to decode stored chunks independently"

WORK=$(mktemp -d "${NYDUS_TEST_TMP:-/var/tmp}/nydus-v5b.XXXXXX") || die "mktemp"
# shellcheck source=lib/one_nydusd.sh
source "$LIB_DIR/one_nydusd.sh"
trap one_nydusd_cleanup EXIT

# 1. Upstream's fixtures rebuilt from their own unpacked trees.
for fx in sha256-nocompress-repeatable:sha256 blake3-lz4_block-non_repeatable:blake3; do
  name=${fx%%:*} dg=${fx##*:} D=$WORK/rebuild-${fx%%:*}
  mkdir -p "$D"
  step "$name: unpack the fixture's tree" "$NYDUS_IMAGE" unpack --bootstrap "$V5/$name" -D "$V5" --untar -o "$D/src"
  # The fixtures store raw chunks (flags: compressor none), no explicit owners.
  step "$name: create --fs-version 5 -R -c none -d $dg" "$NYDUS_IMAGE" create --fs-version 5 -R -c none -d "$dg" \
    -B "$D/boot" -D "$D/blobs" "$D/src"
  step "$name: our blob == upstream's blob, byte for byte" \
    cmp "$D/blobs/$(ls "$D/blobs")" "$V5/7334a2594e133cf8ae364189c2276b090fc490c627bcc3fb1077f0419a538e00"
  step "$name: our bootstrap == upstream's, inode by inode" "$PY" "$CHECK" upstream "$D/boot" "$V5/$name"
done

# 2. A tree with what the fixtures lack, in three build variants.
make_source() {
  local s=$1
  mkdir -p "$s/a/b/c" "$s/d" "$s/emptydir" || return 1
  echo hello >"$s/a/hello"
  head -c 20000 /dev/urandom >"$s/a/rand"
  cp "$s/a/rand" "$s/a/b/c/rand-copy"
  "$PY" -c "print('x' * 50000)" >"$s/d/rep"
  head -c 3000000 /dev/urandom >"$s/d/big"
  ln "$s/a/hello" "$s/d/hello-link"
  ln "$s/a/hello" "$s/a/b/hello-link2"
  ln -s ../a/hello "$s/d/sym"
  ln -s dangling "$s/d/dangling"
  mkfifo "$s/d/fifo"
  mknod "$s/d/chr" c 1 3 && mknod "$s/d/blk" b 7 0 || return 1
  "$PY" -c "import socket, sys; socket.socket(socket.AF_UNIX).bind(sys.argv[1])" "$s/d/sock" || return 1
  touch "$s/empty" "$s/d/Zupper" "$s/d/_under"
  setfattr -n user.k -v value "$s/a/hello" && setfattr -n trusted.t -v 1 "$s/d/rep" &&
    setfattr -n user.big -v "$(printf 'v%.0s' $(seq 1 300))" "$s/a" || return 1
  chown 1000:2000 "$s/d/rep" && chmod 4755 "$s/d/rep" && chown -h 7:8 "$s/d/sym"
  touch -d '2021-03-04 05:06:07.123456789' "$s/a/rand"
}
S=$WORK/src
step "source tree" make_source "$S" || die "cannot make the source tree"

# name | create flags | check flags
VARIANTS=(
  "zstd-4k|-S 0x1000 -c zstd|"
  "none-sha256-aligned-repeatable|-c none -d sha256 --aligned-chunk -R|--repeatable --aligned"
  "zstd-1m-aligned|-c zstd --aligned-chunk|--aligned"
)
for v in "${VARIANTS[@]}"; do
  IFS='|' read -r name cflags kflags <<<"$v"
  D=$WORK/$name
  mkdir -p "$D"
  # shellcheck disable=SC2086  # flag lists split on purpose
  step "$name: create --fs-version 5 $cflags" "$NYDUS_IMAGE" create --fs-version 5 $cflags -B "$D/boot" -D "$D/blobs" "$S" ||
    continue
  step "$name: oracle recomputes every inode digest" "$PY" "$ORACLE" digests "$D/boot"
  # shellcheck disable=SC2086
  step "$name: image == source tree and upstream's v5 layout rules" "$PY" "$CHECK" source "$D/boot" "$D/blobs" "$S" $kflags
  step "$name: nydus-image check verifies every chunk" "$NYDUS_IMAGE" check -B "$D/boot" -D "$D/blobs"
  write_config "$D/config.json" "$D/blobs" "$D/cache" true
  if step "$name: nydusd mounts it (digest_validate)" start_daemon "$D/boot" "$D/config.json" "$D/mnt" "$D/api.sock"; then
    if [[ $kflags == *--repeatable* ]]; then
      step "$name: mount == source tree (owners 0:0 with -R)" \
        compare_trees --mtime-ns --ignore-root-mtime --no-owner "$S" "$D/mnt"
    else
      step "$name: mount == source tree (types, modes, owners, ns mtimes, rdev, xattrs, hard links, content)" \
        compare_trees --mtime-ns --ignore-root-mtime "$S" "$D/mnt"
    fi
    step "$name: mount == bootstrap (chunk digests of bytes read)" "$PY" "$ORACLE" mount "$D/boot" "$D/mnt"
    step "$name: nydusd stops cleanly" stop_daemon "$D/mnt"
  fi
done

# 3. What upstream refuses with v5, refused.
refused() {
  if "$NYDUS_IMAGE" create --fs-version 5 "$@" -B "$WORK/refused.boot" -D "$WORK/refused" "$S" 2>"$WORK/refused.log"; then
    echo "accepted: $*"; return 1
  fi
  cat "$WORK/refused.log"
  [ ! -e "$WORK/refused.boot" ]
}
step "v5 + --features blob-toc refused" refused --features blob-toc
step "v5 + --type targz-ref refused" refused --type targz-ref

summary
