#!/usr/bin/env bash
# shellcheck disable=SC2016  # single-quoted bash -c scripts get their args positionally
# tarfs (upstream's tar-tarfs, nydus-snapshotter's block-device mode), end to end:
#   nydus-image create --type tar-tarfs --blob-id ID -B boot layer.tar (the tar is the data blob)
#   -> check / unpack (blob dir holding the tar under ID) == tar -x
#   -> nydusd (localfs backend) mount == tar -x
#   -> export --block (one disk) -> the kernel's EROFS mounts it == tar -x
#   -> export --block --verity -> veritysetup verify (with the printed options) agrees;
#      one flipped data byte or a truncated tree fails it.
# Each oracle is independent of our writer: GNU tar, the kernel, veritysetup. Each kind
# of check is also fed a broken input once, to show it can fail.
# Two tars of the same tree: GNU tar (--format=gnu) and Python's tarfile (PAX).
set -uo pipefail
# shellcheck source-path=SCRIPTDIR source=lib/common.sh
source "$(dirname "$0")/lib/common.sh"
# shellcheck source-path=SCRIPTDIR source=lib/one_nydusd.sh
source "$(dirname "$0")/lib/one_nydusd.sh"

need_root_and_erofs
need_root_and_fuse
need_nydus_image
NYDUSD=${NYDUSD:-$NYDUS_BIN_DIR/nydusd}
[ -x "$NYDUSD" ] || die "nydusd not found at $NYDUSD"
command -v veritysetup >/dev/null || skip "veritysetup missing (Debian cryptsetup-bin; scripts/setup.sh installs it)"

WORK=$(mktemp -d "${NYDUS_TEST_TMP:-/var/tmp}/nydus-tarfs.XXXXXX") || die "mktemp"
LOG_DIR=$WORK/logs
mkdir -p "$LOG_DIR"
DAEMON_PID=
cleanup() {
  [ -n "$DAEMON_PID" ] && kill "$DAEMON_PID" 2>/dev/null
  umount_below "$WORK"
  if [ "${KEEP_WORK:-0}" = 1 ]; then echo "kept $WORK"; return; fi
  rm -rf "$WORK"
}
trap cleanup EXIT

# ---- the tree: real files and the awkward kinds ---------------------------------------
SRC=$WORK/src
mkdir -p "$SRC/etc" "$SRC/usr/bin" "$SRC/usr/lib/deep/er/still" "$SRC/var/empty"
for f in /bin/ls /bin/cat /etc/os-release /etc/services; do
  [ -e "$f" ] && cp -L "$f" "$SRC/usr/bin/$(basename "$f")"
done
head -c 3500000 /dev/urandom >"$SRC/usr/lib/big.bin"           # > 1 MiB: several chunks
head -c 1048576 /dev/urandom >"$SRC/usr/lib/exact-1MiB.bin"     # exactly one chunk
: >"$SRC/etc/empty"
printf 'x' >"$SRC/etc/one-byte"
printf '%0513d' 0 >"$SRC/etc/513-bytes"
ln -s ../usr/bin/cat "$SRC/etc/cat-link"
ln -s /nonexistent/target "$SRC/etc/dangling"
ln "$SRC/usr/lib/big.bin" "$SRC/usr/lib/big-hardlink.bin"
ln "$SRC/etc/one-byte" "$SRC/usr/lib/deep/er/still/one-byte-again"
mkfifo "$SRC/var/fifo"
chmod 4755 "$SRC/usr/bin/cat" 2>/dev/null
chmod 0700 "$SRC/var/empty"
chown 1234:5678 "$SRC/etc/services" 2>/dev/null
setfattr -n user.tarfs -v hello "$SRC/etc/one-byte" 2>/dev/null
touch -d '2020-02-02 02:02:02' "$SRC/etc/513-bytes"

step "GNU tar (--format=gnu) of the tree" tar --format=gnu --xattrs -cf "$WORK/gnu.tar" -C "$SRC" . ||
  die "cannot make the GNU tar"
step "Python tarfile (PAX) of the tree" "$PY" - "$SRC" "$WORK/py.tar" <<'EOF' || die "cannot make the Python tar"
import os, sys, tarfile
src, out = sys.argv[1], sys.argv[2]
with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as t:
    for root, dirs, files in os.walk(src):
        dirs.sort()
        for name in [root] + sorted(os.path.join(root, f) for f in files) + [os.path.join(root, d) for d in dirs if os.path.islink(os.path.join(root, d))]:
            rel = os.path.relpath(name, src)
            t.add(name, arcname="." if rel == "." else "./" + rel, recursive=False)
EOF

# untar TAR DIR: the oracle tree (GNU tar, owners and modes kept).
untar() { mkdir -p "$2" && tar --xattrs --xattrs-include='*' --same-owner -xpf "$1" -C "$2"; }

VERITY_RE='^dm-verity options: --no-superblock --format=1 -s "" --hash=sha256 --data-block-size=512 --hash-block-size=4096 --data-blocks ([0-9]+) --hash-offset ([0-9]+) ([0-9a-f]{64})$'

# verity_verify DISK OUT: veritysetup verify with the options the export printed (OUT),
# parsed with the pattern nydus-snapshotter scans (pkg/tarfs: fmt.Sscanf).
verity_verify() {
  local disk=$1 line
  line=$(grep '^dm-verity options:' "$2") || { echo "no dm-verity line in $2"; return 1; }
  [[ $line =~ $VERITY_RE ]] || { echo "line does not match the snapshotter's pattern: $line"; return 1; }
  veritysetup verify --no-superblock --format=1 -s "" --hash=sha256 --data-block-size=512 --hash-block-size=4096 \
    --data-blocks "${BASH_REMATCH[1]}" --hash-offset "${BASH_REMATCH[2]}" "$disk" "$disk" "${BASH_REMATCH[3]}"
}
export -f verity_verify
export VERITY_RE

# One nydusd at a time (lib/one_nydusd.sh), over a local blob dir with digest_validate.
start_nydusd() {  # start_nydusd BOOT BLOBS MNT
  write_config "$WORK/cfg.json" "$2" "$WORK/cache.$RANDOM" true
  NYDUSD_MNT=$3
  start_daemon "$1" "$WORK/cfg.json" "$3" "$WORK/api.sock"
}
stop_nydusd() {
  [ -n "$DAEMON_PID" ] || return 0
  stop_daemon "$NYDUSD_MNT"
}

for kind in gnu py; do
  T=$WORK/$kind
  TAR=$WORK/$kind.tar
  ID=$(sha256sum "$TAR" | cut -c1-64)
  mkdir -p "$T/blobs"
  cp "$TAR" "$T/blobs/$ID"
  untar "$TAR" "$T/oracle"

  step "[$kind] create --type tar-tarfs --blob-id" \
    "$NYDUS_IMAGE" create --type tar-tarfs --blob-id "$ID" -B "$T/boot" -D "$T/out" "$TAR" || continue
  # Upstream's layout facts, read from the bootstrap bytes: EROFS blkszbits 9 (offset
  # 1024+12), the ext superblock's TARFS_MODE flag (0x200 at 1024+128), blob features
  # CAP_TAR_TOC|TARFS and the blob id in the blob table.
  step "[$kind] bootstrap: 512-byte blocks, TARFS_MODE, blob TARFS, blob id" "$PY" - "$T/boot" "$ID" <<'EOF'
import struct, sys
b = open(sys.argv[1], "rb").read()
assert b[1024 + 12] == 9, f"blkszbits {b[1024 + 12]}"
flags, = struct.unpack_from("<Q", b, 1024 + 128)  # RafsV6SuperBlockExt.s_flags
assert flags & 0x200, f"ext flags {flags:#x}"
bt_off, = struct.unpack_from("<Q", b, 1024 + 128 + 8)  # s_blob_table_offset
blob_id = b[bt_off:bt_off + 64].rstrip(b"\0").decode()
assert blob_id == sys.argv[2], blob_id
features, = struct.unpack_from("<I", b, bt_off + 64 + 5 * 4)  # RafsV6Blob.features
print(f"blob features {features:#x}")
assert features & 0x40 and features & 0x4000_0000, f"{features:#x}"
EOF
  "$NYDUS_IMAGE" create --type tar-tarfs --blob-id "$ID" -B "$T/boot-again" "$TAR" >/dev/null 2>&1
  step "[$kind] create twice: same bootstrap bytes" cmp "$T/boot" "$T/boot-again"
  # No data blob is written: the tar is the blob.
  step "[$kind] no data blob written to -D" bash -c '! ls "$1"/* >/dev/null 2>&1' _ "$T/out"

  step "[$kind] check (blob = the tar)" "$NYDUS_IMAGE" check -B "$T/boot" -D "$T/blobs"
  step "[$kind] unpack == tar -x" bash -c '
    "$1" unpack -B "$2/boot" -D "$2/blobs" --output "$2/unpacked.tar" && mkdir -p "$2/unpacked" &&
    tar --xattrs --xattrs-include="*" --same-owner -xpf "$2/unpacked.tar" -C "$2/unpacked" &&
    "$3" "$4/compare_trees.py" --mtime-ns "$2/oracle" "$2/unpacked"' _ "$NYDUS_IMAGE" "$T" "$PY" "$LIB_DIR"

  if step "[$kind] nydusd mounts it (localfs backend, digest_validate)" start_nydusd "$T/boot" "$T/blobs" "$T/fuse"; then
    step "[$kind] nydusd tree == tar -x" compare_trees --mtime-ns "$T/oracle" "$T/fuse"
    step "[$kind] nydusd exits cleanly" stop_nydusd
  fi

  step "[$kind] export --block" "$NYDUS_IMAGE" export --block -B "$T/boot" --localfs-dir "$T/blobs" --output "$T/disk.img"
  mkdir -p "$T/kmnt"
  if step "[$kind] the kernel mounts the disk" erofs_mount "$T/disk.img" "$T/kmnt"; then
    step "[$kind] kernel tree == tar -x" compare_trees --mtime-ns "$T/oracle" "$T/kmnt"
    erofs_umount "$T/kmnt"
  fi

  step "[$kind] export --block --verity" bash -c '"$1" export --block -B "$2/boot" --localfs-dir "$2/blobs" \
    --output "$2/vdisk.img" --verity >"$2/verity.out" && cat "$2/verity.out"' _ "$NYDUS_IMAGE" "$T"
  step "[$kind] veritysetup verify agrees" verity_verify "$T/vdisk.img" "$T/verity.out"
  step "[$kind] the verity disk's data part == the plain disk" bash -c '
    n=$(stat -c %s "$1"); cmp -n "$n" "$1" "$2"' _ "$T/disk.img" "$T/vdisk.img"
  mkdir -p "$T/vmnt"
  if step "[$kind] the kernel mounts the verity disk" erofs_mount "$T/vdisk.img" "$T/vmnt"; then
    step "[$kind] verity disk tree == tar -x" compare_trees --mtime-ns "$T/oracle" "$T/vmnt"
    erofs_umount "$T/vmnt"
  fi
done

# ---- each check broken once -----------------------------------------------------------
T=$WORK/gnu
ID=$(sha256sum "$WORK/gnu.tar" | cut -c1-64)
# One byte of big.bin's data inside the tar: find it by its contents (an oracle offset).
OFF=$("$PY" - "$WORK/gnu.tar" <<'EOF'
import sys, tarfile
with tarfile.open(sys.argv[1]) as t:
    for m in t.getmembers():
        # big.bin or its hard link, whichever the tar holds as the file
        if "usr/lib/big" in m.name and m.isfile():
            print(m.offset_data + 1234567)
EOF
)
flip() { # FILE OFFSET: xor one byte
  "$PY" -c 'import sys; f=open(sys.argv[1],"r+b"); o=int(sys.argv[2]); f.seek(o); b=f.read(1); f.seek(o); f.write(bytes([b[0]^0xff]))' "$1" "$2"
}
mkdir -p "$T/bad/blobs"
cp "$WORK/gnu.tar" "$T/bad/blobs/$ID"
flip "$T/bad/blobs/$ID" "$OFF"
step "broken: check finds a flipped byte in the tar" bash -c '! "$1" check -B "$2/boot" -D "$3"' _ "$NYDUS_IMAGE" "$T" "$T/bad/blobs"
step "broken: unpack refuses it too" bash -c '! "$1" unpack -B "$2/boot" -D "$3" --output "$2/bad/u.tar"' _ "$NYDUS_IMAGE" "$T" "$T/bad/blobs"
step "broken: a tree with one changed byte differs from tar -x" bash -c '
  cp -a "$1/oracle" "$1/bad/tree" && printf Z | dd of="$1/bad/tree/etc/513-bytes" bs=1 seek=7 conv=notrunc status=none &&
  ! "$2" "$3/compare_trees.py" "$1/oracle" "$1/bad/tree"' _ "$T" "$PY" "$LIB_DIR"

# The verity disk: the tar's copy starts at the blob's mapped block address; flip a byte
# of big.bin there (found by content, not by our layout: the disk holds the tar verbatim).
DOFF=$("$PY" - "$WORK/gnu.tar" "$T/vdisk.img" "$OFF" <<'EOF'
import sys
tar, disk, off = open(sys.argv[1], "rb").read(), open(sys.argv[2], "rb").read(), int(sys.argv[3])
base = disk.find(tar[:4096])
assert base > 0 and disk[base:base + len(tar)] == tar, "the disk does not hold the tar verbatim"
print(base + off)
EOF
)
step "the verity disk holds the tar verbatim" test -n "$DOFF"
cp "$T/vdisk.img" "$T/bad/flipped.img"
[ -n "$DOFF" ] && flip "$T/bad/flipped.img" "$DOFF"
step "broken: veritysetup verify fails on one flipped data byte" bash -c '! verity_verify "$1" "$2"' _ \
  "$T/bad/flipped.img" "$T/verity.out"
HOFF=$(sed -E -n "s/$VERITY_RE/\\2/p" "$T/verity.out")
cp "$T/vdisk.img" "$T/bad/truncated.img"
truncate -s $((HOFF + 2048)) "$T/bad/truncated.img"
step "broken: veritysetup verify refuses a truncated tree" bash -c '! verity_verify "$1" "$2"' _ \
  "$T/bad/truncated.img" "$T/verity.out"
cp "$T/vdisk.img" "$T/bad/tree-flipped.img"
flip "$T/bad/tree-flipped.img" $((HOFF + 100))
step "broken: veritysetup verify fails on a flipped hash-tree byte" bash -c '! verity_verify "$1" "$2"' _ \
  "$T/bad/tree-flipped.img" "$T/verity.out"
step "broken: a gzip tar is refused by tar-tarfs" bash -c '
  gzip -c "$1" >"$2/bad/layer.tar.gz" && ! "$3" create --type tar-tarfs --blob-id x -B "$2/bad/gz.boot" "$2/bad/layer.tar.gz"' \
  _ "$WORK/gnu.tar" "$T" "$NYDUS_IMAGE"

# The snapshotter feeds the tar through a FIFO while it saves it (pkg/tarfs).
step "create from a FIFO (as nydus-snapshotter), then check and unpack == tar -x" bash -c '
  mkfifo "$1/fifo" && { cat "$2" >"$1/fifo" & } &&
  "$3" create --type tar-tarfs --blob-id "$4" -B "$1/boot-fifo" -D "$1/out" "$1/fifo" &&
  "$3" check -B "$1/boot-fifo" -D "$1/blobs" && "$3" unpack -B "$1/boot-fifo" -D "$1/blobs" --output "$1/fifo.tar" &&
  mkdir -p "$1/fifo-tree" && tar --xattrs --xattrs-include="*" --same-owner -xpf "$1/fifo.tar" -C "$1/fifo-tree" &&
  "$5" "$6/compare_trees.py" --mtime-ns "$1/oracle" "$1/fifo-tree"' \
  _ "$T" "$WORK/gnu.tar" "$NYDUS_IMAGE" "$ID" "$PY" "$LIB_DIR"

# ---- the snapshotter's whole-image mode: merge of per-layer tarfs bootstraps -----------
# Layer 2 replaces a file, deletes one by a whiteout and adds a directory; the oracle
# is GNU tar's extraction of both layers with the whiteouts applied by hand.
M=$WORK/merge
mkdir -p "$M/l1/a" "$M/l2/a" "$M/l2/b" "$M/blobs" "$M/oracle"
echo one >"$M/l1/a/f1"; echo keep >"$M/l1/a/keep"; head -c 2000000 /dev/urandom >"$M/l1/a/big"
echo replaced >"$M/l2/a/keep"; : >"$M/l2/a/.wh.f1"; echo two >"$M/l2/b/f2"
MERGE_IDS=()
for i in 1 2; do
  tar --format=gnu -cf "$M/t$i.tar" -C "$M/l$i" .
  id=$(sha256sum "$M/t$i.tar" | cut -c1-64); MERGE_IDS+=("$id")
  cp "$M/t$i.tar" "$M/blobs/$id"
  tar -xf "$M/t$i.tar" -C "$M/oracle"
  "$NYDUS_IMAGE" create --type tar-tarfs --blob-id "$id" -B "$M/l$i.boot" -D "$M/blobs" "$M/t$i.tar" >/dev/null 2>&1
done
rm -f "$M/oracle/a/f1" "$M/oracle/a/.wh.f1"
# The removals stamped the oracle's /a with "now"; the merged /a is layer 2's entry
# (its mtime as tar recorded it), which differed by a second when the clock ticked
# in between (a CI failure).
touch -r "$M/l2/a" "$M/oracle/a"
step "merge two tarfs layers" "$NYDUS_IMAGE" merge --bootstrap "$M/merged.boot" "$M/l1.boot" "$M/l2.boot"
step "merged: check" "$NYDUS_IMAGE" check -B "$M/merged.boot" -D "$M/blobs"
step "merged: export --block --verity" bash -c '"$1" export --block --localfs-dir "$2/blobs" -B "$2/merged.boot" \
  --output "$2/disk.img" --verity >"$2/verity.out"' _ "$NYDUS_IMAGE" "$M"
step "merged: veritysetup verify agrees" verity_verify "$M/disk.img" "$M/verity.out"
mkdir -p "$M/kmnt"
if step "merged: the kernel mounts the disk" erofs_mount "$M/disk.img" "$M/kmnt"; then
  step "merged: kernel tree == both layers applied" compare_trees "$M/oracle" "$M/kmnt"
  erofs_umount "$M/kmnt"
fi
step "merged: a TARFS and a plain RAFS layer do not merge" bash -c '
  mkdir -p "$2/plain" && "$1" create --type tar-rafs -B "$2/plain.boot" -D "$2/plain" "$2/t2.tar" >/dev/null &&
  ! "$1" merge --bootstrap "$2/mixed.boot" "$2/l1.boot" "$2/plain.boot"' _ "$NYDUS_IMAGE" "$M"

summary
