#!/usr/bin/env bash
# shellcheck disable=SC2016
# OCI layers end to end: two layer tars made by GNU tar (the upper one gzipped,
# with OCI whiteouts) -> nydus-image create --type tar-rafs each -> merge ->
# kernel EROFS mount with one device per blob -> compared with the layers
# extracted in order with the whiteouts applied. Needs root and EROFS (else 77).
# Env: NYDUS_BIN_DIR, NYDUS_TEST_TMP (disk filesystem, default /var/tmp), KEEP_WORK=1.
set -uo pipefail
# shellcheck source-path=SCRIPTDIR source=lib/common.sh
source "$(dirname "$0")/lib/common.sh"

need_root_and_erofs
need_nydus_image

WORK=$(mktemp -d "${NYDUS_TEST_TMP:-/var/tmp}/nydus-tarmerge.XXXXXX") || die "mktemp"
LOG_DIR=$WORK/logs
mkdir -p "$LOG_DIR"
cleanup() {
  umount_below "$WORK"
  if [ "${KEEP_WORK:-0}" = 1 ]; then echo "kept $WORK"; return; fi
  rm -rf "$WORK"
}
trap cleanup EXIT

# Trees live on a tmpfs (big xattrs); images and blob caches on $WORK (the kernel
# cannot mount image files that live on tmpfs).
T=$WORK/trees
mkdir -p "$T"
mount -t tmpfs -o size=1g,mode=0755 tmpfs "$T" || die "cannot mount tmpfs for the trees"

make_layers() {
  "$PY" "$LIB_DIR/make_tree.py" --small "$T/lower" || return 1
  mkdir -p "$T/lower/wh" "$T/lower/gonedir/sub" "$T/lower/opq/d" "$T/upper/wh" "$T/upper/opq"
  echo x >"$T/lower/wh/x"; echo y >"$T/lower/wh/y"; ln "$T/lower/wh/y" "$T/lower/wh/y-link"
  echo z >"$T/lower/gonedir/sub/z"; echo old >"$T/lower/opq/old"; echo d >"$T/lower/opq/d/f"
  touch "$T/upper/wh/.wh.x" "$T/upper/.wh.gonedir" "$T/upper/.wh.not-there" "$T/upper/opq/.wh..wh..opq"
  head -c 3000000 /dev/urandom >"$T/upper/opq/new"
  echo "y, upper" >"$T/upper/wh/y"
  echo up >"$T/upper/wh/fresh"; ln "$T/upper/wh/fresh" "$T/upper/wh/fresh-link"
  setfattr -n user.layer -v upper "$T/upper/wh/fresh" 2>/dev/null || true
  ln -s ../opq/new "$T/upper/wh/sym"
  touch -d @1600000000 "$T/upper/wh" "$T/upper/opq" "$T/upper"
  local flags=(--format=posix --xattrs --xattrs-include='*' --numeric-owner)
  tar -C "$T/lower" "${flags[@]}" -cf "$WORK/lower.tar" . &&
    tar -C "$T/upper" "${flags[@]}" -czf "$WORK/upper.tar.gz" .
}

# The reference: extract the layers in order, applying the upper layer's
# whiteouts to what the lower one left, then drop the markers.
make_expected() {
  local x=(--xattrs --xattrs-include='*' --numeric-owner --same-owner --same-permissions)
  mkdir -p "$T/expected"
  tar -C "$T/expected" "${x[@]}" -xf "$WORK/lower.tar" || return 1
  "$PY" - "$T/upper" "$T/expected" <<'PYEOF' || return 1
import os, shutil, sys
upper, exp = sys.argv[1], sys.argv[2]
def rm(p):
    if os.path.isdir(p) and not os.path.islink(p): shutil.rmtree(p)
    elif os.path.lexists(p): os.unlink(p)
for d, dirs, files in os.walk(upper):
    tgt = os.path.join(exp, os.path.relpath(d, upper))
    if not os.path.isdir(tgt) or os.path.islink(tgt): continue
    if ".wh..wh..opq" in files:
        for n in os.listdir(tgt): rm(os.path.join(tgt, n))
    for n in files:
        if n.startswith(".wh.") and n != ".wh..wh..opq": rm(os.path.join(tgt, n[4:]))
PYEOF
  tar -C "$T/expected" "${x[@]}" -xzf "$WORK/upper.tar.gz" || return 1
  "$PY" - "$T/expected" <<'PYEOF'
import os, sys
for d, dirs, files in os.walk(sys.argv[1]):
    marks = [n for n in files if n.startswith(".wh.")]
    if not marks: continue
    st = os.stat(d)
    for n in marks: os.unlink(os.path.join(d, n))
    os.utime(d, ns=(st.st_atime_ns, st.st_mtime_ns))  # as the upper layer had it
PYEOF
}

step "make layer tars" make_layers || die "cannot make the layers"
step "expected merged tree" make_expected || die "cannot build the expected tree"

mkdir -p "$WORK/blobs" "$WORK/cache"
step "create lower (tar-rafs, from a file)" "$NYDUS_IMAGE" create --type tar-rafs -B "$WORK/lower.boot" \
  -D "$WORK/blobs" --blob-cache-dir "$WORK/cache" -J "$WORK/lower.json" "$WORK/lower.tar" || die "create lower"
step "create upper (targz-rafs, from stdin)" bash -c '"$1" create --type targz-rafs -B "$2/upper.boot" -D "$2/blobs" \
  --blob-cache-dir "$2/cache" -J "$2/upper.json" - <"$2/upper.tar.gz"' _ "$NYDUS_IMAGE" "$WORK" || die "create upper"
step "merge" "$NYDUS_IMAGE" merge -B "$WORK/merged.boot" -J "$WORK/merged.json" \
  "$WORK/lower.boot" "$WORK/upper.boot" || die "merge"
step "check merged (all chunks of both blobs)" "$NYDUS_IMAGE" check -B "$WORK/merged.boot" -D "$WORK/blobs"

mapfile -t IDS < <(blob_ids "$WORK/merged.json")
LOWER_ID=$(blob_ids "$WORK/lower.json")
UPPER_ID=$(blob_ids "$WORK/upper.json")
step "merged blob table = lower blob, upper blob" test "${IDS[*]}" = "$LOWER_ID $UPPER_ID"
DEVARGS=()
for id in "${IDS[@]}"; do DEVARGS+=(--device "$WORK/cache/$id.blob.data"); done
mkdir -p "$WORK/mnt"
if step "kernel mount of the merged bootstrap" erofs_mount "$WORK/merged.boot" "$WORK/mnt" "${DEVARGS[@]}"; then
  step "mounted == layers applied in order" compare_trees --ignore-root-attrs "$T/expected" "$WORK/mnt"
  step "no whiteout markers in the mount" bash -c '! find "$1" -name ".wh.*" | grep -q .' _ "$WORK/mnt"
  step "umount" erofs_umount "$WORK/mnt" || erofs_umount --lazy "$WORK/mnt"
fi
mkdir -p "$T/untar"
step "unpack merged" "$NYDUS_IMAGE" unpack -B "$WORK/merged.boot" -D "$WORK/blobs" --untar -o "$T/untar" &&
  step "unpacked == layers applied in order" compare_trees --ignore-root-attrs "$T/expected" "$T/untar"
summary
