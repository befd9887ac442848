#!/usr/bin/env bash
# shellcheck disable=SC2016  # single-quoted bash -c scripts get their args positionally
# End-to-end: awkward tree -> nydus-image create -> kernel EROFS mount / export --block /
# unpack, each compared with the source tree. Needs root and EROFS (else exit 77).
# A missing or misbehaving nydus-image is a FAILURE, never a skip.
#
# Env: NYDUS_BIN_DIR (nydus-image), NYDUS_TEST_TMP (work dir base, default /var/tmp: must
# be a disk filesystem, the kernel can't mount image files that live on tmpfs),
# KEEP_WORK=1 (keep the work dir), CONFIGS="none zstd ..." (subset), STEP_TIMEOUT.
set -uo pipefail
# shellcheck source-path=SCRIPTDIR source=lib/common.sh
source "$(dirname "$0")/lib/common.sh"

need_root_and_erofs
need_nydus_image

WORK=$(mktemp -d "${NYDUS_TEST_TMP:-/var/tmp}/nydus-kmount.XXXXXX") || die "mktemp"
LOG_DIR=$WORK/logs
mkdir -p "$LOG_DIR"
cleanup() {
  umount_below "$WORK"
  if [ "${KEEP_WORK:-0}" = 1 ]; then echo "kept $WORK"; return; fi
  rm -rf "$WORK"
}
trap cleanup EXIT
[ "$(stat -f -c %T "$WORK")" = tmpfs ] &&
  echo "WARNING: $WORK is on tmpfs: kernel mounts of image files there fail (ENOTBLK)"

# The source tree lives on a tmpfs: ext4 can't hold 50 x 1000-byte xattrs on one inode.
SRC=$WORK/src
mkdir -p "$SRC"
mount -t tmpfs -o size=2g,mode=0755 tmpfs "$SRC" || die "cannot mount tmpfs for the source tree"
SRC=$SRC/tree
step "make awkward tree" "$PY" "$LIB_DIR/make_tree.py" "$SRC" || die "make_tree.py failed"
NENTRIES=$(count_entries "$SRC")
echo "source: $SRC ($NENTRIES entries)"

# Comparison against the source, to the nanosecond (we keep the root's mtime;
# upstream forces it to 0).
CMP_OPTS=(--mtime-ns)
# Trees extracted by unpack need a filesystem that holds what the source holds
# (ext4 cannot take 50 x 1000-byte xattrs on one inode): the same tmpfs.
UNTAR_BASE=$WORK/src
# shellcheck disable=SC2206  # intentional word splitting of an env knob
[ -n "${COMPARE_EXTRA:-}" ] && CMP_OPTS+=($COMPARE_EXTRA)

# check_outputs DIR: JSON lists blobs; each blob file and its cache files exist.
check_outputs() {
  local d=$1 id n=0
  [ -s "$d/boot" ] || { echo "no bootstrap $d/boot"; return 1; }
  [ -s "$d/create.json" ] || { echo "no -J output $d/create.json"; return 1; }
  "$PY" -c 'import json,sys; d=json.load(open(sys.argv[1])); assert isinstance(d["blobs"], list), "blobs"; assert "bootstrap" in d, "bootstrap"; print(json.dumps(d)[:2000])' "$d/create.json" || return 1
  while read -r id; do
    n=$((n + 1))
    [[ $id =~ ^[0-9a-f]{64}$ ]] || { echo "bad blob id '$id'"; return 1; }
    [ -s "$d/blobs/$id" ] || { echo "missing blob file $d/blobs/$id"; return 1; }
    if [ -d "$d/cache" ]; then
      [ -s "$d/cache/$id.blob.data" ] || { echo "missing $d/cache/$id.blob.data"; return 1; }
      [ -s "$d/cache/$id.blob.meta" ] || { echo "missing $d/cache/$id.blob.meta"; return 1; }
    fi
  done < <(blob_ids "$d/create.json")
  [ "$n" -ge 1 ] || { echo "the tree has file data but the image lists no blob"; return 1; }
  ls -la "$d" "$d/blobs"
}

# mount_compare LABEL IMG MNT [DEVICE...]: mount, compare with source, unmount.
mount_compare() {
  local label=$1 img=$2 mnt=$3; shift 3
  local devargs=() dev
  for dev in "$@"; do devargs+=(--device "$dev"); done
  mkdir -p "$mnt"
  step "$label: kernel mount" erofs_mount "$img" "$mnt" "${devargs[@]}" || return 1
  step "$label: mounted tree == source" compare_trees "${CMP_OPTS[@]}" "$SRC" "$mnt"
  local rc=$?
  step "$label: umount" erofs_umount "$mnt" || erofs_umount --lazy "$mnt"
  return "$rc"
}

tar_sanity() {
  local tarfile=$1 n
  tar tvf "$tarfile" >"$tarfile.list" || { echo "tar tvf failed"; return 1; }
  n=$(wc -l <"$tarfile.list")
  head -n 20 "$tarfile.list"
  echo "tar lists $n entries, source has $NENTRIES"
  [ "$n" -ge "$NENTRIES" ] && [ "$n" -le $((NENTRIES + 1)) ]
}

# run_config NAME CREATE-ARGS...: the full round trip for one set of builder options.
run_config() {
  local name=$1; shift
  local d=$WORK/$name ids=() devs=() id
  mkdir -p "$d/blobs" "$d/cache"
  echo "=== $name: create $*"
  step "$name: create" "$NYDUS_IMAGE" create -B "$d/boot" -D "$d/blobs" --blob-cache-dir "$d/cache" \
    -J "$d/create.json" --fs-version 6 "$@" "$SRC" || return 1
  step "$name: outputs (json, blob, cache files)" check_outputs "$d" || return 1
  mapfile -t ids < <(blob_ids "$d/create.json")
  for id in "${ids[@]}"; do devs+=("$d/cache/$id.blob.data"); done
  step "$name: check" "$NYDUS_IMAGE" check -B "$d/boot" --blob-dir "$d/blobs"

  mount_compare "$name bootstrap+blob.data" "$d/boot" "$d/mnt" "${devs[@]}"

  if step "$name: export --block" "$NYDUS_IMAGE" export --block -B "$d/boot" --blob-dir "$d/blobs" \
       --output "$d/disk.img"; then
    mount_compare "$name export --block disk" "$d/disk.img" "$d/mnt-disk"
  fi

  if step "$name: unpack --untar" "$NYDUS_IMAGE" unpack -B "$d/boot" --blob-dir "$d/blobs" \
       --output "$UNTAR_BASE/untar" --untar; then
    step "$name: unpacked dir == source" compare_trees "${CMP_OPTS[@]}" "$SRC" "$UNTAR_BASE/untar"
  fi

  if step "$name: unpack to tar" "$NYDUS_IMAGE" unpack -B "$d/boot" --blob-dir "$d/blobs" \
       --output "$d/image.tar"; then
    step "$name: tar tvf sanity" tar_sanity "$d/image.tar"
    if [ "$name" = none ]; then
      # GNU tar extracts our tar stream: does it carry xattrs, owners, devices, hardlinks?
      # GNU tar 1.34 extracts the one non-ASCII xattr name percent-encoded
      # (libarchive's own extraction keeps it; see the untar step above).
      mkdir -p "$UNTAR_BASE/gnutar"
      step "$name: GNU tar extracts our tar" tar -x -f "$d/image.tar" -C "$UNTAR_BASE/gnutar" --xattrs \
        --xattrs-include='*' --numeric-owner --same-owner --same-permissions &&
        step "$name: GNU-tar-extracted == source" compare_trees --ignore-root-attrs --ignore-xattr user.utf8- \
          "$SRC" "$UNTAR_BASE/gnutar"
    fi
  fi
  rm -rf "$UNTAR_BASE/untar" "$UNTAR_BASE/gnutar" "$d/image.tar" "$d/disk.img"  # keep disk usage down
}

CONFIGS=${CONFIGS:-"none lz4_block zstd zstd-sha256 lz4-chunk4k"}
for c in $CONFIGS; do
  case $c in
    none) run_config none --compressor none ;;
    lz4_block) run_config lz4_block --compressor lz4_block ;;
    zstd) run_config zstd --compressor zstd ;;
    zstd-sha256) run_config zstd-sha256 --compressor zstd --digester sha256 ;;
    lz4-chunk4k) run_config lz4-chunk4k --compressor lz4_block --chunk-size 0x1000 ;;
    *) die "unknown config $c" ;;
  esac
done

# Repeatable builds: same tree, different output dirs -> byte-identical bootstrap and blobs.
echo "=== repeatable"
R=$WORK/repeatable
mkdir -p "$R/1/blobs" "$R/2/blobs"
if step "repeatable: create #1" "$NYDUS_IMAGE" create --repeatable -B "$R/1/boot" -D "$R/1/blobs" \
     -J "$R/1/create.json" --fs-version 6 --compressor zstd "$SRC" &&
   step "repeatable: create #2" "$NYDUS_IMAGE" create --repeatable -B "$R/2/boot" -D "$R/2/blobs" \
     -J "$R/2/create.json" --fs-version 6 --compressor zstd "$SRC"; then
  step "repeatable: bootstraps identical" cmp "$R/1/boot" "$R/2/boot"
  step "repeatable: blob dirs identical" bash -c '
    set -e
    a=$(cd "$1" && ls); b=$(cd "$2" && ls)
    echo "blobs #1: $a"; echo "blobs #2: $b"
    [ -n "$a" ] && [ "$a" = "$b" ]
    for f in $a; do cmp "$1/$f" "$2/$f"; done
  ' _ "$R/1/blobs" "$R/2/blobs"
fi
rm -rf "$R"

# Inlined meta + blob ToC.
echo "=== inline-meta"
I=$WORK/inline
mkdir -p "$I/blobs"
if step "inline-meta: create --blob-inline-meta --features blob-toc" "$NYDUS_IMAGE" create \
     --blob-inline-meta --features blob-toc -B "$I/boot" -D "$I/blobs" -J "$I/create.json" \
     --fs-version 6 --compressor zstd "$SRC"; then
  step "inline-meta: bootstrap written" test -s "$I/boot"
  step "inline-meta: check" "$NYDUS_IMAGE" check -B "$I/boot" --blob-dir "$I/blobs"
  step "inline-meta: unpack --untar" "$NYDUS_IMAGE" unpack -B "$I/boot" --blob-dir "$I/blobs" \
    --output "$UNTAR_BASE/untar" --untar &&
    step "inline-meta: unpacked dir == source" compare_trees "${CMP_OPTS[@]}" "$SRC" "$UNTAR_BASE/untar"
  rm -rf "$UNTAR_BASE/untar"
fi
rm -rf "$I"

summary
