#!/usr/bin/env bash
# shellcheck disable=SC2016  # single-quoted bash -c scripts get their args positionally
# `nydus-image merge` of RAFS v5 layers (upstream merges v5 into v5; a mixed
# v5/v6 set is its InconsistentFilesystem error, exit 2). Three source dirs
# with OCI whiteouts, an opaque dir, hard links, symlinks, xattrs, devices,
# modes and owners -> create --fs-version 5 each -> merge -> judged by
# oracles that share no code with the merge:
#  - the kernel: overlayfs of the three dirs (whiteouts converted to its
#    char 0/0 / trusted.overlay.opaque form), and lib/v5_merge_oracle.py
#    apply (the dirs copied in order by OCI rules); both must agree first;
#  - nydusd mounts the merged bootstrap (FUSE, localfs, digest validation)
#    and the mount must equal them (types, modes, owners, ns mtimes, rdev,
#    xattrs, link targets, hard-link groups, content);
#  - lib/rafs_v5_oracle.py parses the merged bootstrap, recomputes every
#    inode digest and checks each chunk read from the mount against it;
#    lib/v5_merge_oracle.py chunks: every file keeps the chunk infos and blob
#    of the layer it came from, the blob table is the layers' entries in
#    first-use order; nydus-image check verifies every chunk.
# Also --parent-bootstrap, --chunk-dict, -J fs_version and the refusals.
# Env: NYDUS_BIN_DIR, NYDUS_TEST_TMP (disk filesystem, default /var/tmp), KEEP_WORK=1.
set -uo pipefail
# shellcheck source-path=SCRIPTDIR source=lib/common.sh
source "$(dirname "$0")/lib/common.sh"

need_nydus_image
need_root_and_fuse
NYDUSD=${NYDUSD:-$NYDUS_BIN_DIR/nydusd}
[ -x "$NYDUSD" ] || die "nydusd not found at $NYDUSD (build first; set NYDUS_BIN_DIR)"
command -v b3sum >/dev/null || skip "b3sum missing (scripts/setup.sh installs it): needed to check blake3 digests"
ORACLE=$LIB_DIR/rafs_v5_oracle.py
MORACLE=$LIB_DIR/v5_merge_oracle.py

WORK=$(mktemp -d "${NYDUS_TEST_TMP:-/var/tmp}/nydus-v5merge.XXXXXX") || die "mktemp"
# shellcheck source=lib/one_nydusd.sh
source "$LIB_DIR/one_nydusd.sh"
trap one_nydusd_cleanup EXIT
L1=$WORK/src/l1 L2=$WORK/src/l2 L3=$WORK/src/l3

make_layers() {
  mkdir -p "$L1"/a/b "$L1"/gone/sub "$L1"/opq/keep "$L1"/wh "$L1"/u "$L1"/d700 \
    "$L2"/wh "$L2"/opq "$L2"/t "$L2"/n "$L2"/a "$L3"/n "$L3"/a/b "$L3"/opq "$L3"/gone "$L3"/d700 || return 1
  # Lowest layer.
  echo hello >"$L1/a/hello" && ln "$L1/a/hello" "$L1/a/hello-hl"
  setfattr -n user.k -v v1 "$L1/a/hello" || return 1
  head -c 20000 /dev/urandom >"$L1/a/rand"
  echo deep >"$L1/a/b/deep"
  head -c 3000000 /dev/urandom >"$L1/big"
  echo f >"$L1/gone/sub/f"; echo old >"$L1/opq/old"; echo x >"$L1/opq/keep/x"
  echo x >"$L1/wh/x"; echo y >"$L1/wh/y"; ln "$L1/wh/y" "$L1/wh/y-link"
  ln -s a/hello "$L1/sym"; ln -s dangling "$L1/dsym"
  echo t >"$L1/t"; echo inner >"$L1/u/inner"
  echo s >"$L1/d700/s" && chown 1000:2000 "$L1/d700/s" && chmod 4755 "$L1/d700/s"
  chown 5:6 "$L1/d700" && chmod 0700 "$L1/d700"
  mkfifo "$L1/fifo" && mknod "$L1/chr" c 1 3 || return 1
  touch -d '2021-03-04 05:06:07.123456789' "$L1/a/rand"
  # Middle layer: whiteouts, an opaque dir, type changes, a new hard-link pair.
  touch "$L2/.wh.gone" "$L2/.wh.not-there" "$L2/wh/.wh.x" "$L2/opq/.wh..wh..opq"
  echo "y, upper" >"$L2/wh/y"
  head -c 200000 /dev/urandom >"$L2/opq/new"
  echo tf >"$L2/t/f"; echo "u is a file now" >"$L2/u"
  echo one >"$L2/n/one" && ln "$L2/n/one" "$L2/n/two"
  echo added >"$L2/a/added"
  chmod 0750 "$L2/a" && setfattr -n user.dir -v l2 "$L2/a" || return 1
  # Top layer: whiteouts of middle-layer names, a file replaced by a symlink,
  # an opaque subdir, a whited-out dir re-created, owners and xattrs changed.
  touch "$L3/n/.wh.one" "$L3/opq/.wh.new" "$L3/a/b/.wh..wh..opq"
  ln -s ../big "$L3/a/hello"
  echo l3 >"$L3/opq/l3file"; echo l3b >"$L3/a/b/l3"; echo fresh >"$L3/gone/fresh"
  echo "s, top" >"$L3/d700/s" && chown 3:4 "$L3/d700/s" && chmod 0640 "$L3/d700/s"
  chown 5:6 "$L3/d700" && chmod 0700 "$L3/d700"
  setfattr -n user.big -v "$(printf 'v%.0s' $(seq 1 300))" "$L3/gone/fresh" || return 1
  touch -d @1600000000 "$L1" "$L2" "$L3" "$L2/wh" "$L3/a"
}
step "three source layers" make_layers || die "cannot make the layers"

# Oracle 1: the dirs applied in order by OCI rules (Python). Oracle 2: the
# kernel's overlayfs of the dirs in its whiteout form. They must agree.
EXP=$WORK/expected
step "oracle: layers applied in order (Python)" "$PY" "$MORACLE" apply "$EXP" "$L1" "$L2" "$L3" ||
  die "cannot apply the layers"
for l in l1 l2 l3; do
  step "oracle: $l in overlayfs form" "$PY" "$MORACLE" overlay-dir "$WORK/src/$l" "$WORK/ovl/$l" ||
    die "cannot convert $l"
done
mkdir -p "$WORK/ovl/mnt"
step "oracle: overlayfs of the three layers" \
  mount -t overlay overlay -o "lowerdir=$WORK/ovl/l3:$WORK/ovl/l2:$WORK/ovl/l1" "$WORK/ovl/mnt" ||
  die "cannot mount overlayfs"
step "oracles agree: overlayfs == Python apply" compare_trees --mtime-ns "$WORK/ovl/mnt" "$EXP" ||
  die "the two oracles disagree"

# The layers, v5, into one blob dir.
B=$WORK/blobs
for l in l1 l2 l3; do
  step "create --fs-version 5 $l" "$NYDUS_IMAGE" create --fs-version 5 -B "$WORK/$l.boot" -D "$B" \
    -J "$WORK/$l.json" "$WORK/src/$l" || die "create $l"
done
step "merge the three v5 layers" "$NYDUS_IMAGE" merge -B "$WORK/merged.boot" -J "$WORK/merged.json" \
  "$WORK/l1.boot" "$WORK/l2.boot" "$WORK/l3.boot" || die "merge"
step "-J: fs_version 5, blob table = the layers' blobs" "$PY" - "$WORK" <<'PYEOF'
import json, sys
w = sys.argv[1]
m = json.load(open(f"{w}/merged.json"))
own = [json.load(open(f"{w}/{l}.json"))["blobs"][0] for l in ("l1", "l2", "l3")]
print(m["fs_version"], m["blobs"], own)
sys.exit(0 if m["fs_version"] == "5" and sorted(m["blobs"]) == sorted(own) else 1)
PYEOF
step "merged is RAFS v5; the v5 oracle recomputes every inode digest" "$PY" "$ORACLE" digests "$WORK/merged.boot"
step "merged keeps each file's chunk infos and blob; blob table = layers' entries in first-use order" \
  "$PY" "$MORACLE" chunks "$WORK/merged.boot" "$WORK/l1.boot" "$WORK/l2.boot" "$WORK/l3.boot"
step "nydus-image check verifies every chunk" "$NYDUS_IMAGE" check -B "$WORK/merged.boot" -D "$B"

# mount_and_compare NAME BOOT: nydusd mounts BOOT; == both oracles, == the bootstrap.
# A v5 root records mtime 0 (upstream's v5 writer, for repeatable builds), so
# the root's mtime is the one thing not compared.
mount_and_compare() {
  local name=$1 boot=$2 D=$WORK/$1
  mkdir -p "$D"
  write_config "$D/config.json" "$B" "$D/cache" true
  step "$name: nydusd mounts it (digest_validate)" start_daemon "$boot" "$D/config.json" "$D/mnt" "$D/api.sock" ||
    return
  step "$name: mount == overlayfs of the layers" compare_trees --mtime-ns --ignore-root-mtime "$WORK/ovl/mnt" "$D/mnt"
  step "$name: mount == layers applied in order" compare_trees --mtime-ns --ignore-root-mtime "$EXP" "$D/mnt"
  step "$name: no whiteout markers in the mount" bash -c '! find "$1" -name ".wh.*" | grep -q .' _ "$D/mnt"
  step "$name: mount == bootstrap (v5 oracle: chunk digests of bytes read)" "$PY" "$ORACLE" mount "$boot" "$D/mnt"
  step "$name: nydusd stops cleanly" stop_daemon "$D/mnt"
}
mount_and_compare merged "$WORK/merged.boot"

# --parent-bootstrap: l1+l2 merged, then l3 over that parent.
step "merge l1 l2" "$NYDUS_IMAGE" merge -B "$WORK/m12.boot" "$WORK/l1.boot" "$WORK/l2.boot"
step "merge --parent-bootstrap m12 l3" "$NYDUS_IMAGE" merge --parent-bootstrap "$WORK/m12.boot" \
  -B "$WORK/parent.boot" -J "$WORK/parent.json" "$WORK/l3.boot"
step "parent: v5 digests" "$PY" "$ORACLE" digests "$WORK/parent.boot"
step "parent: chunk infos of the parent / l3" "$PY" "$MORACLE" chunks "$WORK/parent.boot" "$WORK/m12.boot" "$WORK/l3.boot"
step "parent: nydus-image check" "$NYDUS_IMAGE" check -B "$WORK/parent.boot" -D "$B"
mount_and_compare parent "$WORK/parent.boot"

# --chunk-dict: a layer built against a v5 dictionary references its blob.
DICT=$WORK/src/dict L4=$WORK/src/l4
mkdir -p "$DICT" "$L4"
head -c 300000 /dev/urandom >"$DICT/shared" && cp -p "$DICT/shared" "$L4/shared-copy" && echo own >"$L4/own"
step "create the v5 chunk dict" "$NYDUS_IMAGE" create --fs-version 5 -B "$WORK/dict.boot" -D "$B" "$DICT"
step "create l4 --chunk-dict" "$NYDUS_IMAGE" create --fs-version 5 --chunk-dict "bootstrap=$WORK/dict.boot" \
  -B "$WORK/l4.boot" -D "$B" "$L4"
refused() {  # refused CODE MESSAGE merge-args...: exit CODE, MESSAGE on stderr, no output
  local code=$1 msg=$2 rc
  shift 2
  rm -f "$WORK/refused.boot"
  "$NYDUS_IMAGE" merge -B "$WORK/refused.boot" "$@" 2>"$WORK/refused.log"; rc=$?
  cat "$WORK/refused.log"
  [ "$rc" = "$code" ] || { echo "exit $rc, expected $code"; return 1; }
  grep -qi -- "$msg" "$WORK/refused.log" && [ ! -e "$WORK/refused.boot" ]
}
step "l4 without --chunk-dict: two data blobs refused (exit 1)" \
  refused 1 "multiple associated data blobs" "$WORK/l1.boot" "$WORK/l4.boot"
step "merge l1 l4 --chunk-dict" "$NYDUS_IMAGE" merge --chunk-dict "bootstrap=$WORK/dict.boot" \
  -B "$WORK/dictm.boot" -J "$WORK/dictm.json" "$WORK/l1.boot" "$WORK/l4.boot"
step "chunk dict: blob table holds l1, l4 and the dict blob" "$PY" - "$WORK" <<'PYEOF'
import json, sys
m = json.load(open(f"{sys.argv[1]}/dictm.json"))
print(m["blobs"])
sys.exit(0 if len(m["blobs"]) == 3 and m["fs_version"] == "5" else 1)
PYEOF
step "chunk dict: v5 digests" "$PY" "$ORACLE" digests "$WORK/dictm.boot"
step "chunk dict: chunk infos kept" "$PY" "$MORACLE" chunks "$WORK/dictm.boot" "$WORK/l1.boot" "$WORK/l4.boot"
step "chunk dict: nydus-image check" "$NYDUS_IMAGE" check -B "$WORK/dictm.boot" -D "$B"
D=$WORK/dictmount
mkdir -p "$D" "$WORK/expected-dict"
write_config "$D/config.json" "$B" "$D/cache" true
step "chunk dict: oracle (l1, l4 applied)" "$PY" "$MORACLE" apply "$WORK/expected-dict" "$L1" "$L4"
if step "chunk dict: nydusd mounts it" start_daemon "$WORK/dictm.boot" "$D/config.json" "$D/mnt" "$D/api.sock"; then
  step "chunk dict: mount == l1, l4 applied" compare_trees --mtime-ns --ignore-root-mtime "$WORK/expected-dict" "$D/mnt"
  step "chunk dict: mount == bootstrap" "$PY" "$ORACLE" mount "$WORK/dictm.boot" "$D/mnt"
  step "chunk dict: nydusd stops cleanly" stop_daemon "$D/mnt"
fi

# Refusals, with upstream's exit codes (InconsistentFilesystem: 2).
step "v6 layer: create" "$NYDUS_IMAGE" create -B "$WORK/l2v6.boot" -D "$WORK/blobs6" "$L2"
step "v5 then v6 refused (exit 2)" refused 2 "inconsistent RAFS version" "$WORK/l1.boot" "$WORK/l2v6.boot"
step "v6 then v5 refused (exit 2)" refused 2 "inconsistent RAFS version" "$WORK/l2v6.boot" "$WORK/l1.boot"
step "v6 parent under v5 layers refused (exit 2)" refused 2 "inconsistent RAFS version" \
  --parent-bootstrap "$WORK/l2v6.boot" "$WORK/l1.boot"
step "v5 layer, chunk size 0x1000: create" "$NYDUS_IMAGE" create --fs-version 5 -S 0x1000 -B "$WORK/l2s.boot" -D "$B" "$L2"
step "chunk sizes differ: refused (exit 2)" refused 2 "chunk_size" "$WORK/l1.boot" "$WORK/l2s.boot"
step "v5 layer, sha256: create" "$NYDUS_IMAGE" create --fs-version 5 -d sha256 -B "$WORK/l2d.boot" -D "$B" "$L2"
step "v5 digesters differ: refused (exit 2)" refused 2 "digest algorithm" "$WORK/l1.boot" "$WORK/l2d.boot"
step "v5 layer, lz4: create" "$NYDUS_IMAGE" create --fs-version 5 -c lz4_block -B "$WORK/l2c.boot" -D "$B" "$L2"
step "v5 compressors differ: refused" refused 1 "one compressor" "$WORK/l1.boot" "$WORK/l2c.boot"
step "v5 layers, -R (no explicit owners): create" bash -c '"$1" create --fs-version 5 -R -B "$2/l1r.boot" -D "$3" "$4" &&
  "$1" create --fs-version 5 -R -B "$2/l2r.boot" -D "$3" "$5"' _ "$NYDUS_IMAGE" "$WORK" "$B" "$L1" "$L2"
step "explicit owners differ: refused (exit 2)" refused 2 "explicit_uidgid" "$WORK/l1.boot" "$WORK/l2r.boot"
step "-R layers merge; the merged superblock keeps EXPLICIT_UID_GID off" bash -c '"$1" merge -B "$2/mr.boot" "$2/l1r.boot" "$2/l2r.boot" &&
  "$3" -c "import struct, sys; f = struct.unpack_from(\"<Q\", open(sys.argv[1], \"rb\").read(), 16)[0]; print(hex(f)); sys.exit(f & 0x10)" "$2/mr.boot"' \
  _ "$NYDUS_IMAGE" "$WORK" "$PY"
cp "$WORK/l1.boot" "$WORK/trunc.boot" && truncate -s 9000 "$WORK/trunc.boot"
step "truncated v5 layer: refused" refused 1 "" "$WORK/trunc.boot" "$WORK/l2.boot"

umount "$WORK/ovl/mnt"
summary
