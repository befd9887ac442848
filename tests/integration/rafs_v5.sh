#!/usr/bin/env bash
# shellcheck disable=SC2016  # single-quoted bash -c scripts get their args positionally
# RAFS v5 images built by upstream nydus-image (tests/fixtures/upstream/v5: two
# bootstraps, sha256 and blake3, over one blob). For each:
#  - the independent Python reader (lib/rafs_v5_oracle.py) first proves it reads
#    the layout right: every inode digest upstream recorded recomputes;
#  - nydus-image check (chunk digests over the blob), inspect (v5 superblock), stat;
#  - nydusd mounts it over a localfs backend (digest validation on); the mount is
#    compared with upstream's `.result` (tree -J listing, link targets, md5 of
#    every file) and with the bootstrap as the oracle reads it (modes, owners,
#    sizes, mtimes, hard links, and each chunk of each file read back through
#    FUSE hashed with the fixture's algorithm);
#  - nydus-image unpack (directory and tar) equals the mount: diff -r, and the
#    tar's listing equals GNU tar's listing of the mount (types, modes, owners).
set -uo pipefail
# shellcheck source-path=SCRIPTDIR source=lib/common.sh
source "$(dirname "$0")/lib/common.sh"

V5=$NYDUS_FIXTURES_DIR/v5
RESULT=$V5/sha256-nocompress-repeatable.result  # one tree, both bootstraps
ORACLE=$LIB_DIR/rafs_v5_oracle.py
[ -f "$RESULT" ] || die "vendored fixtures missing in $V5 (tests/fixtures/upstream, or NYDUS_FIXTURES_DIR)"
need_nydus_image
need_root_and_fuse
NYDUSD=${NYDUSD:-$NYDUS_BIN_DIR/nydusd}
[ -x "$NYDUSD" ] || die "nydusd not found at $NYDUSD (build first; set NYDUS_BIN_DIR)"
command -v b3sum >/dev/null || skip "b3sum missing (scripts/setup.sh installs it): needed to check blake3 digests"

WORK=$(mktemp -d "${NYDUS_TEST_TMP:-/var/tmp}/nydus-v5.XXXXXX") || die "mktemp"
LOG_DIR=$WORK/logs
mkdir -p "$LOG_DIR"
# shellcheck source=lib/one_nydusd.sh
source "$LIB_DIR/one_nydusd.sh"
trap one_nydusd_cleanup EXIT

# inspect_is_v5 BOOT: the text and JSON forms show the v5 superblock as stored.
inspect_is_v5() {
  "$NYDUS_IMAGE" inspect "$1" -J "$2" || return 1
  "$PY" - "$2" <<'EOF'
import json, sys
d = json.load(open(sys.argv[1]))
v5 = d["v5_superblock"]
assert d["rafs_version"] == 5, d["rafs_version"]
assert v5["magic"] == "0x52414653" and v5["fs_version"] == "0x500" and v5["inode_table_entries"] == 54, v5
assert v5["blobs"][0]["blob_id"].startswith("7334a259") and v5["blobs"][0]["chunk_count"] == 23, v5["blobs"]
assert d["bootstrap_size"] == 18648, d["bootstrap_size"]
print("ok", v5["flags"], v5["flag_names"])
EOF
}

# stat_counts BOOT: `nydus-image stat` counts equal the upstream listing's
# (24 directories, 23 file names of which 2 are extra hard links, 7 symlinks).
stat_counts() {
  "$NYDUS_IMAGE" stat -B "$1" -J "$2" || return 1
  "$PY" - "$2" <<'EOF'
import json, sys
d = json.load(open(sys.argv[1]))
want = {"paths": 54, "directories": 24, "files": 21, "symlinks": 7, "hardlink_paths": 2, "bootstrap_size": 18648}
got = {k: d.get(k) for k in want}
print(got)
sys.exit(0 if got == want else 1)
EOF
}

# tar_listing TAR: "type+perms uid/gid path" per entry (hard links as regular
# files: which name tar stores as the link depends on walk order).
tar_listing() {
  tar -tv --numeric-owner -f "$1" | awk '{
      t = $1; sub(/^h/, "-", t); path = $6
      sub(/^\.\//, "", path); sub(/\/$/, "", path); if (path == "." || path == "") path = "/"
      print t, $2, path }' | sort
}

# unpack_tar_matches_mount BOOT MNT DIR
unpack_tar_matches_mount() {
  local boot=$1 mnt=$2 dir=$3
  "$NYDUS_IMAGE" unpack --bootstrap "$boot" -D "$V5" -o "$dir/unpack.tar" || return 1
  tar -C "$mnt" -cf "$dir/mount.tar" . || return 1
  tar_listing "$dir/unpack.tar" >"$dir/unpack.list"
  tar_listing "$dir/mount.tar" | grep -v ' /$' >"$dir/mount.list"
  grep -v ' /$' "$dir/unpack.list" >"$dir/unpack.list2"
  wc -l <"$dir/mount.list"
  diff "$dir/unpack.list2" "$dir/mount.list"
}

# refuses NAME OFFSET FORMAT VALUE WORDS: the fixture with one field patched
# (offsets from its hexdump: /hardlink-test's inode at 0x21e8, child_index
# +92; VERSION's name at 0x2ad0+128, name_size +100; its chunk info at 0x2b58,
# blob_index +32) is refused by check and by nydusd with an error naming the
# problem, and nydusd exits without mounting (no crash, no hang).
refuses() {
  local name=$1 off=$2 fmt=$3 val=$4 words=$5 d=$WORK/hostile-$1 rc
  mkdir -p "$d/mnt"
  "$PY" - "$V5/sha256-nocompress-repeatable" "$d/boot" "$off" "$fmt" "$val" <<'EOF2' || return 1
import struct, sys
b = bytearray(open(sys.argv[1], "rb").read())
struct.pack_into(sys.argv[4], b, int(sys.argv[3], 0), int(sys.argv[5], 0))
open(sys.argv[2], "wb").write(b)
EOF2
  "$NYDUS_IMAGE" check -B "$d/boot" >"$d/check.log" 2>&1; rc=$?
  cat "$d/check.log"
  if [ "$rc" -eq 0 ] || ! grep -q -- "$words" "$d/check.log"; then
    echo "check: exit $rc, wanted an error with '$words'"; return 1
  fi
  write_config "$d/config.json" "$V5" "$d/cache" true
  timeout 20 "$NYDUSD" --bootstrap "$d/boot" --config "$d/config.json" --mountpoint "$d/mnt" \
    --apisock "$d/api.sock" >"$d/daemon.log" 2>&1; rc=$?
  tail -n 3 "$d/daemon.log"
  # A refusal, not success, a hang (124) or a signal (>= 128).
  if [ "$rc" -eq 0 ] || [ "$rc" -eq 124 ] || [ "$rc" -ge 128 ]; then echo "nydusd exit status $rc"; return 1; fi
  grep -q -- "$words" "$d/daemon.log" || { echo "nydusd log lacks '$words'"; return 1; }
  ! is_mounted "$d/mnt"
}

step "hostile v5: child index naming an ancestor (cycle)" refuses cycle 0x2244 "<I" 1 "already in the tree"
step "hostile v5: child range outside the inode table" refuses range 0x2244 "<I" 60 "outside the inode table"
step "hostile v5: 300-byte name" refuses longname 0x2b34 "<H" 300 "name size"
step "hostile v5: chunk naming blob 9 of 1" refuses blob 0x2b78 "<I" 9 "blob index 9"

for fx in sha256-nocompress-repeatable blake3-lz4_block-non_repeatable; do
  BOOT=$V5/$fx
  D=$WORK/$fx
  mkdir -p "$D"
  step "$fx: oracle recomputes every upstream inode digest" "$PY" "$ORACLE" digests "$BOOT"
  step "$fx: nydus-image check verifies every chunk of the blob" "$NYDUS_IMAGE" check -B "$BOOT" -D "$V5"
  step "$fx: nydus-image inspect shows the v5 superblock" inspect_is_v5 "$BOOT" "$D/inspect.json"
  step "$fx: nydus-image stat counts" stat_counts "$BOOT" "$D/stat.json"
  write_config "$D/config.json" "$V5" "$D/cache" true
  if step "$fx: nydusd mounts it (localfs, digest_validate)" start_daemon "$BOOT" "$D/config.json" "$D/mnt" "$D/api.sock"; then
    step "$fx: mount == upstream .result (tree, link targets, md5 of every file)" \
      "$PY" "$ORACLE" result "$D/mnt" "$RESULT"
    step "$fx: mount == bootstrap (modes, owners, sizes, mtimes, hard links, chunk digests of bytes read)" \
      "$PY" "$ORACLE" mount "$BOOT" "$D/mnt"
    step "$fx: unpack --untar" "$NYDUS_IMAGE" unpack --bootstrap "$BOOT" -D "$V5" --untar -o "$D/unpacked"
    step "$fx: unpacked tree == mount (diff -r)" diff -r --no-dereference "$D/unpacked" "$D/mnt"
    step "$fx: unpack tar listing == GNU tar of the mount (types, modes, owners)" \
      unpack_tar_matches_mount "$BOOT" "$D/mnt" "$D"
    step "$fx: nydusd stops cleanly" stop_daemon "$D/mnt"
  fi
done

# A v5 image written here (lib/make_rafs_v5.py, upstream's layout) of a tree with
# what the upstream fixtures lack: xattrs, devices, a fifo, a socket, setuid,
# owners, ns mtimes, hard links across directories, 4 KiB chunks (multi-chunk
# files, deduplicated), zstd-compressed chunks, a prefetch table. The source tree
# is the oracle: the mount must equal it (compare_trees.py).
make_source() {
  local s=$1
  mkdir -p "$s/a/b/c" "$s/d" || return 1
  echo hello >"$s/a/hello"
  head -c 20000 /dev/urandom >"$s/a/rand"
  cp "$s/a/rand" "$s/a/b/c/rand-copy"
  "$PY" -c "print('x' * 50000)" >"$s/d/rep"
  ln "$s/a/hello" "$s/d/hello-link"
  ln -s ../a/hello "$s/d/sym"
  mkfifo "$s/d/fifo"
  mknod "$s/d/chr" c 1 3 && mknod "$s/d/blk" b 7 0 || return 1
  "$PY" -c "import socket, sys; socket.socket(socket.AF_UNIX).bind(sys.argv[1])" "$s/d/sock" || return 1
  touch "$s/empty"
  setfattr -n user.k -v value "$s/a/hello" && setfattr -n trusted.t -v 1 "$s/d/rep" &&
    setfattr -n user.big -v "$(printf 'v%.0s' $(seq 1 300))" "$s/a" || return 1
  chown 1000:2000 "$s/d/rep" && chmod 4755 "$s/d/rep"
  touch -d '2021-03-04 05:06:07.123456789' "$s/a/rand"
}
H=$WORK/handmade
mkdir -p "$H"
step "handmade v5: source tree" make_source "$H/src" || die "cannot make the source tree"
step "handmade v5: write the image" "$PY" "$LIB_DIR/make_rafs_v5.py" "$H/src" "$H/boot" "$H/blobs" \
  --prefetch /a/hello --prefetch /d
step "handmade v5: oracle recomputes every inode digest" "$PY" "$ORACLE" digests "$H/boot"
step "handmade v5: nydus-image check verifies every chunk (zstd)" "$NYDUS_IMAGE" check -B "$H/boot" -D "$H/blobs"
step "handmade v5: prefetch table read (inspect -R prefetch)" \
  bash -c '"$1" inspect -R prefetch "$2" | tee /dev/stderr | grep -q "\"/a/hello\",\"/d/hello-link\"\].*\"/d\""' _ \
  "$NYDUS_IMAGE" "$H/boot"
write_config "$H/config.json" "$H/blobs" "$H/cache" true
if step "handmade v5: nydusd mounts it" start_daemon "$H/boot" "$H/config.json" "$H/mnt" "$H/api.sock"; then
  step "handmade v5: mount == source tree (types, modes, owners, ns mtimes, rdev, xattrs, hard links, content)" \
    compare_trees --mtime-ns --ignore-root-mtime "$H/src" "$H/mnt"
  step "handmade v5: mount == bootstrap (chunk digests of bytes read)" "$PY" "$ORACLE" mount "$H/boot" "$H/mnt"
  step "handmade v5: unpack --untar == source tree (but the socket: tar has none)" bash -c \
    '"$1" unpack --bootstrap "$2" -D "$3" --untar -o "$4" && "$5" "$6" --mtime-ns --ignore-root-mtime --exclude d/sock "$7" "$4"' _ \
    "$NYDUS_IMAGE" "$H/boot" "$H/blobs" "$H/unpacked" "$PY" "$LIB_DIR/compare_trees.py" "$H/src"
  step "handmade v5: nydusd stops cleanly" stop_daemon "$H/mnt"
fi

# Scale and an unreferenced blob: 10k empty files in 500 directories (the blob
# table names one blob that no file uses).
E=$WORK/empty
step "10k empty files: source tree" "$PY" -c '
import os, sys
for d in range(500):
    os.makedirs(f"{sys.argv[1]}/d{d:03}")
    for f in range(20):
        open(f"{sys.argv[1]}/d{d:03}/f{f:02}", "w").close()' "$E/src"
step "10k empty files: write the image" "$PY" "$LIB_DIR/make_rafs_v5.py" "$E/src" "$E/boot" "$E/blobs"
write_config "$E/config.json" "$E/blobs" "$E/cache" true
if step "10k empty files: nydusd mounts it" start_daemon "$E/boot" "$E/config.json" "$E/mnt" "$E/api.sock"; then
  step "10k empty files: mount == source tree" compare_trees --mtime-ns --ignore-root-mtime "$E/src" "$E/mnt"
  step "10k empty files: nydusd stops cleanly" stop_daemon "$E/mnt"
fi

# `mode: cached` (upstream's other v5 metadata mode) serves the same tree and bytes.
D=$WORK/cached
mkdir -p "$D"
write_config "$D/config.json" "$V5" "$D/cache" false
sed -i 's/"mode": "direct"/"mode": "cached"/' "$D/config.json"
if step "mode cached: config says so" grep -q '"mode": "cached"' "$D/config.json" &&
  step "mode cached: nydusd mounts" start_daemon "$V5/sha256-nocompress-repeatable" "$D/config.json" "$D/mnt" "$D/api.sock"; then
  step "mode cached: mount == upstream .result" "$PY" "$ORACLE" result "$D/mnt" "$RESULT"
  step "mode cached: nydusd stops cleanly" stop_daemon "$D/mnt"
fi

summary
