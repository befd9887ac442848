#!/usr/bin/env bash
# ZRAN images (issue 15): `nydus-image create --type targz-ref` over a real
# gzip layer (Debian's /usr/lib/python3 and /usr/lib/python3.11, ~100 MB of
# tar, plus a tree of odd owners, modes, links, a FIFO and xattrs), and nydusd
# reading it over localfs where the data blob IS the original .tar.gz:
#  - the build copies no data: besides the bootstrap, only a meta blob of a
#    few percent of the layer, and the blob id is the layer's sha256;
#  - a cold read of one small file fetches < 2 MB from the backend (counted by
#    /api/v1/metrics/backend, meta blob included);
#  - the mount equals GNU tar's extraction (`tar -x --numeric-owner --xattrs`):
#    diff -r, and a find listing of type, mode, owner, size, link count,
#    mtime and link target of every entry, hard links sharing an inode, xattrs;
#  - bad input: a blob table whose layer size is smaller than the inflate
#    contexts reach is refused at mount with a clear error, and a
#    truncated layer makes the files in its lost tail EIO while the rest reads.
set -uo pipefail
# shellcheck source-path=SCRIPTDIR source=lib/common.sh
source "$(dirname "$0")/lib/common.sh"

need_nydus_image
need_root_and_fuse
NYDUSD=${NYDUSD:-$NYDUS_BIN_DIR/nydusd}
[ -x "$NYDUSD" ] || die "nydusd not found at $NYDUSD (build first; set NYDUS_BIN_DIR)"
command -v setfattr >/dev/null || skip "setfattr missing (scripts/setup.sh installs attr)"
[ -d /usr/lib/python3 ] || skip "/usr/lib/python3 missing (scripts/setup.sh installs python3)"

WORK=$(mktemp -d "${NYDUS_TEST_TMP:-/var/tmp}/nydus-zran.XXXXXX") || die "mktemp"
LOG_DIR=$WORK/logs
mkdir -p "$LOG_DIR"
# shellcheck source=lib/one_nydusd.sh
source "$LIB_DIR/one_nydusd.sh"
trap one_nydusd_cleanup EXIT


# ---- the layer -----------------------------------------------------------------
S=$WORK/synth/odd
make_layer() {
  mkdir -p "$S/dir" "$S/private"
  head -c 3000000 /dev/urandom >"$S/random.bin"
  printf 'hello zran\n' >"$S/hello"
  : >"$S/empty"
  ln "$S/hello" "$S/dir/hello-hardlink"
  ln -s ../hello "$S/dir/rel-link"
  ln -s /etc/passwd "$S/abs-link"
  mkfifo "$S/fifo"
  chmod 4755 "$S/random.bin"; chmod 0600 "$S/hello"; chmod 0700 "$S/private"; chmod 1777 "$S/dir"
  chown 1234:5678 "$S/hello" "$S/private"; chown -h 4321:8765 "$S/abs-link"
  setfattr -n user.zran -v "checkpoint" "$S/empty" || return 1
  touch -d '2001-02-03 04:05:06' "$S/random.bin"
  # usr and usr/lib as entries of their own: the tree then has no implicit
  # directories (tar -x would stamp those with the time of extraction).
  tar -C / --numeric-owner --xattrs -cf - --no-recursion usr usr/lib --recursion usr/lib/python3 usr/lib/python3.11 \
    -C "$WORK/synth" odd |
    gzip -6 >"$WORK/layer.tar.gz" || return 1
  ls -l "$WORK/layer.tar.gz"
  local raw; raw=$(gzip -dc "$WORK/layer.tar.gz" | wc -c)
  echo "uncompressed tar: $raw bytes"
  [ "$raw" -ge $((50 * 1024 * 1024)) ] || { echo "layer smaller than 50 MB"; return 1; }
}
step "make a ~100 MB gzip layer (python3 + odd entries)" make_layer || { summary; exit 1; }

LAYER_ID=$(sha256sum "$WORK/layer.tar.gz" | cut -c1-64)
D=$WORK/img
mkdir -p "$D/blobs" "$D/cache"
build() {
  "$NYDUS_IMAGE" create --type targz-ref -B "$D/boot" -D "$D/blobs" -J "$D/out.json" "$WORK/layer.tar.gz" || return 1
  local id; id=$(blob_ids "$D/out.json")
  [ "$id" = "$LAYER_ID" ] || { echo "blob id $id, layer sha256 $LAYER_ID"; return 1; }
  # No data copied: -D holds only the meta blob (ci array, contexts, windows).
  local n meta size layer_size
  n=$(find "$D/blobs" -type f | wc -l); meta=$(find "$D/blobs" -type f)
  [ "$n" -eq 1 ] || { echo "$n files in the blob dir"; return 1; }
  size=$(stat -c %s "$meta"); layer_size=$(stat -c %s "$WORK/layer.tar.gz")
  echo "meta blob $(basename "$meta"): $size bytes for a $layer_size-byte layer"
  [ "$size" -lt $((layer_size / 20)) ] || { echo "meta blob too large"; return 1; }
  [ "$(basename "$meta")" = "$(sha256sum "$meta" | cut -c1-64)" ] || { echo "meta blob not named by its sha256"; return 1; }
  cp "$WORK/layer.tar.gz" "$D/blobs/$LAYER_ID"  # the registry blob, unchanged
}
step "create --type targz-ref: bootstrap + meta blob, no data copied" build || { summary; exit 1; }

REF=$WORK/ref
mkdir -p "$REF"
step "reference: tar -x --numeric-owner --xattrs" tar -C "$REF" --numeric-owner --xattrs --xattrs-include='*' -xzf "$WORK/layer.tar.gz"

write_config "$D/config.json" "$D/blobs" "$D/cache" true
SMALL=usr/lib/python3.11/json/__init__.py

# listing DIR: one line per entry, what stat shows (directory sizes and link
# counts are filesystem-specific and left out).
listing() {
  (cd "$1" && find . -mindepth 1 \( -type d -printf '%p %y %m %U %G %T@\n' \) -o \
     \( ! -type d -printf '%p %y %m %U %G %s %n %T@ %l\n' \) | LC_ALL=C sort)
}

check_mount() {
  local mnt=$D/mnt sock=$D/api.sock before after
  before=$(backend_metric "$sock" read_amount_total) || return 1
  cmp "$mnt/$SMALL" "$REF/$SMALL" || return 1
  after=$(backend_metric "$sock" read_amount_total) || return 1
  echo "backend bytes: $before before, $after after reading $SMALL ($(stat -c %s "$REF/$SMALL") bytes)"
  [ "$after" -lt $((2 * 1024 * 1024)) ] || { echo "one small file cost $after backend bytes"; return 1; }
}
check_tree() {
  local mnt=$D/mnt
  diff -r --no-dereference -x fifo "$REF" "$mnt" || return 1  # diff cannot compare FIFOs; the listing does
  listing "$REF" >"$WORK/ref.list"; listing "$mnt" >"$WORK/mnt.list"
  wc -l <"$WORK/ref.list"
  diff "$WORK/ref.list" "$WORK/mnt.list" || return 1
  [ "$(stat -c %i "$mnt/odd/hello")" = "$(stat -c %i "$mnt/odd/dir/hello-hardlink")" ] || { echo "hard link split"; return 1; }
  [ "$(getfattr --only-values -n user.zran "$mnt/odd/empty")" = checkpoint ] || { echo "xattr lost"; return 1; }
  [ -p "$mnt/odd/fifo" ] || { echo "fifo lost"; return 1; }
}
if step "nydusd mounts it (localfs: the layer is the blob, digest_validate)" start_daemon "$D/boot" "$D/config.json" "$D/mnt" "$D/api.sock"; then
  step "one small file read cold fetches < 2 MB" check_mount
  step "mount == tar -x: diff -r, stat listing, hard link, xattr, fifo" check_tree
  step "nydusd stops cleanly" stop_daemon "$D/mnt"
fi

# ---- --blob-inline-meta --features blob-toc (what the converter's packRef runs) ------
# One meta blob then carries blob.meta, blob.digest, image.boot and the ToC
# (upstream builder/src/core/blob.rs, lib.rs); checked by walking its reverse-
# tar headers and ToC here, every digest recomputed, the bootstrap inside
# unpacked with the zstd tool. nydusd reads it twice: given the bootstrap
# under the meta blob's name (upstream takes the meta blob id from it), and
# after `nydus-image merge --blob-digests/--blob-sizes/--blob-toc-digests`
# as the converter calls it (the merged blob table then names the meta blob).
I=$WORK/inline
mkdir -p "$I/blobs" "$I/cache" "$I/cache2" "$I/x"
build_inline() {
  "$NYDUS_IMAGE" create --type targz-ref --blob-inline-meta --features blob-toc \
    --blob "$I/meta.blob" -B "$I/boot" "$WORK/layer.tar.gz" || return 1
  "$PY" - "$I/meta.blob" "$I/boot" "$LAYER_ID" "$I/x" <<'EOF' || return 1
import hashlib, struct, subprocess, sys
meta = open(sys.argv[1], "rb").read(); boot = open(sys.argv[2], "rb").read(); layer_id = sys.argv[3]
def tar_size(h):
    return int(h[124:136].rstrip(b"\0 ").decode() or "0", 8)
# Sections from the end: each ends with a 512-byte ustar header naming it.
pos, secs = len(meta), []
while pos > 0:
    h = meta[pos - 512:pos]
    assert h[257:262] == b"ustar", f"no tar header ending at {pos}"
    size = tar_size(h); start = pos - 512 - size
    assert start >= 0
    secs.append((h[:100].rstrip(b"\0").decode(), start, size)); pos = start
secs.reverse()
names = [s[0] for s in secs]
assert names == ["blob.meta", "blob.digest", "image.boot", "rafs.blob.toc"], names
toc_name, toc_off, toc_size = secs[-1]
toc = meta[toc_off:toc_off + toc_size]
toc_digest = hashlib.sha256(meta[toc_off:]).hexdigest()
assert toc_size % 128 == 0
entries = {}
for i in range(toc_size // 128):
    flags, _, name, dig, off, csize, usize = struct.unpack_from("<II16s32sQQQ", toc, i * 128)
    name = name.rstrip(b"\0").decode()
    stored = meta[off:off + csize]
    assert len(stored) == csize, name
    data = subprocess.run(["zstd", "-dc"], input=stored, capture_output=True, check=True).stdout if flags == 2 else stored
    assert flags in (1, 2), (name, flags)
    assert len(data) == usize, (name, len(data), usize)
    # sha256 of the uncompressed bytes (for blob.meta: the whole ci buffer)
    assert hashlib.sha256(data).digest() == dig, f"{name}: digest"
    entries[name] = (off, csize, data)
assert list(entries) == ["blob.meta", "blob.meta.header", "blob.digest", "image.boot"], list(entries)
# Each ToC entry lies exactly in its tar section (the header inside blob.meta's).
_, m_off, m_size = secs[0]
assert entries["blob.meta"][0] == 0 and entries["blob.meta"][1] + 4096 == m_size
assert entries["blob.meta.header"][0] == entries["blob.meta"][1]
for n in ("blob.digest", "image.boot"):
    s = [x for x in secs if x[0] == n][0]
    assert entries[n][:2] == (s[1], s[2]), n
hdr = entries["blob.meta.header"][2]
magic, feat = struct.unpack_from("<II", hdr, 0)
assert magic == 0xB10BB10B and struct.unpack_from("<I", hdr, 4092)[0] == 0xB10BB10B
want = 0x1 | 0x2 | 0x4 | 0x8 | 0x10 | 0x20 | 0x1000_0000 | 0x2000_0000 | 0x4000_0000
assert feat == want, hex(feat)
# The bootstrap inside is the -B bootstrap, byte for byte.
assert entries["image.boot"][2] == boot, "image.boot differs from the -B bootstrap"
# Its blob table: the layer's id, features as the header, no meta digest/size
# (a blob cannot hold its own digest), no ToC digest (written after it).
table = struct.unpack_from("<Q", boot, 1152 + 8)[0]
e = boot[table:table + 256]
assert e[:64].decode() == layer_id
assert struct.unpack_from("<I", e, 84)[0] == want
# RafsV6Blob: blob_toc_size u32 at 104, blob_toc_digest at 136, blob_meta_digest
# at 168, blob_meta_size u64 at 200.
assert e[168:200] == bytes(32) and struct.unpack_from("<Q", e, 200)[0] == 0, "meta digest/size not zero"
assert struct.unpack_from("<I", e, 104)[0] == 0 and e[136:168] == bytes(32), "ToC fields not zero"
# blob.digest: one sha256 per chunk, as the ci array counts them.
assert len(entries["blob.digest"][2]) == 32 * struct.unpack_from("<I", e, 72)[0]
meta_id = hashlib.sha256(meta).hexdigest()
open(sys.argv[4] + "/meta_id", "w").write(meta_id)
open(sys.argv[4] + "/toc_digest", "w").write(toc_digest)
open(sys.argv[4] + "/" + layer_id, "wb").write(entries["image.boot"][2])
print(f"meta blob {meta_id}: {len(meta)} bytes, sections {secs}")
EOF
  local id; id=$(cat "$I/x/meta_id")
  mv "$I/meta.blob" "$I/blobs/$id"
  cp "$WORK/layer.tar.gz" "$I/blobs/$LAYER_ID"
  cp "$I/boot" "$I/$id"
}
tree_equals_ref() { # MNT
  diff -r --no-dereference -x fifo "$REF" "$1" || return 1
  listing "$REF" >"$WORK/ref.list"; listing "$1" >"$WORK/inline.list"
  diff "$WORK/ref.list" "$WORK/inline.list"
}
merge_inline() {
  local id; id=$(cat "$I/x/meta_id")
  "$NYDUS_IMAGE" merge --bootstrap "$I/merged" --blob-digests "$id" \
    --blob-sizes "$(stat -c %s "$I/blobs/$id")" --blob-toc-digests "$(cat "$I/x/toc_digest")" \
    "$I/x/$LAYER_ID" || return 1
  "$PY" - "$I/merged" "$LAYER_ID" "$id" "$(stat -c %s "$I/blobs/$id")" <<'EOF'
import struct, sys
b = open(sys.argv[1], "rb").read()
table = struct.unpack_from("<Q", b, 1152 + 8)[0]
e = b[table:table + 256]
assert e[:64].decode() == sys.argv[2], e[:64]
assert e[168:200].hex() == sys.argv[3], "blob_meta_digest " + e[168:200].hex()
assert struct.unpack_from("<Q", e, 200)[0] == int(sys.argv[4]), "blob_meta_size"
assert struct.unpack_from("<I", e, 84)[0] & 0x2 == 0, "INLINED_FS_META kept"
EOF
}
if step "inline meta: create --blob-inline-meta --features blob-toc, layout, ToC digests, bootstrap inside" build_inline; then
  write_config "$I/config.json" "$I/blobs" "$I/cache" true
  if step "inline meta: nydusd mounts the bootstrap named by the meta blob" \
       start_daemon "$I/$(cat "$I/x/meta_id")" "$I/config.json" "$I/mnt" "$I/api.sock"; then
    step "inline meta: mount == tar -x" tree_equals_ref "$I/mnt"
    step "inline meta: nydusd stops cleanly" stop_daemon "$I/mnt"
  fi
  write_config "$I/config2.json" "$I/blobs" "$I/cache2" true
  if step "inline meta: merge as the converter does (meta digest/size/ToC in the blob table)" merge_inline &&
     step "inline meta: nydusd mounts the merged bootstrap" \
       start_daemon "$I/merged" "$I/config2.json" "$I/mnt2" "$I/api2.sock"; then
    step "inline meta, merged: mount == tar -x" tree_equals_ref "$I/mnt2"
    step "inline meta, merged: nydusd stops cleanly" stop_daemon "$I/mnt2"
  fi
fi

# ---- nydus-image check / unpack of ZRAN images ------------------------------------
# check reads every chunk from the layer through its context and compares its
# sha256; unpack's tar, extracted by GNU tar, equals the reference; a layer
# with one flipped byte in the middle is caught by check.
check_all() { # BOOT BLOBDIR
  "$NYDUS_IMAGE" check -B "$1" --blob-dir "$2" >"$WORK/check.out" 2>&1 || { cat "$WORK/check.out"; return 1; }
  cat "$WORK/check.out"
  local n; n=$(sed -n 's/.*chunks verified \([0-9]*\).*/\1/p' "$WORK/check.out")
  [ "${n:-0}" -gt 1000 ] || { echo "only ${n:-0} chunks verified"; return 1; }
}
unpack_equals_ref() {
  rm -rf "$WORK/un" && mkdir -p "$WORK/un" || return 1
  "$NYDUS_IMAGE" unpack -B "$D/boot" --blob-dir "$D/blobs" --output "$WORK/un.tar" || return 1
  tar -C "$WORK/un" --numeric-owner --xattrs --xattrs-include='*' -xf "$WORK/un.tar" 2>/dev/null || return 1
  diff -r --no-dereference -x fifo "$REF" "$WORK/un"
}
flipped_layer_fails() {
  local C=$WORK/flipped rc
  mkdir -p "$C" && cp "$D/blobs/"* "$C/" || return 1
  flip_byte "$C/$LAYER_ID" $(( $(stat -c %s "$C/$LAYER_ID") / 2 )) || return 1
  "$NYDUS_IMAGE" check -B "$D/boot" --blob-dir "$C" >"$WORK/flipped.out" 2>&1; rc=$?
  grep -E 'INVALID|error' "$WORK/flipped.out" | head -3
  [ "$rc" -eq 1 ] && grep -q INVALID "$WORK/flipped.out"
}
step "nydus-image check: every chunk inflated from the layer matches its sha256" check_all "$D/boot" "$D/blobs"
step "nydus-image unpack of the ZRAN image, extracted by tar == tar -x of the layer" unpack_equals_ref
step "nydus-image check: one flipped byte in the layer makes it INVALID" flipped_layer_fails
[ -s "$I/x/meta_id" ] &&
  step "nydus-image check of the inline-meta image (bootstrap named by its meta blob)" check_all "$I/$(cat "$I/x/meta_id")" "$I/blobs"

# ---- --chunk-dict: chunks a dictionary image holds are read from its blob -------------
# The dictionary is a plain RAFS image (sha256 chunk digests, as a ref layer's) of two
# of the layer's directories. Their chunks then point into the dictionary's blob, the
# rest into the gzip layer; nydusd reads both (localfs). A dictionary byte flipped makes
# those files, and only those, fail to read.
CD=$WORK/dict
dict_build() {
  mkdir -p "$CD/src" "$CD/blobs" "$CD/cache" || return 1
  cp -a "$REF/usr/lib/python3.11/json" "$REF/usr/lib/python3.11/email" "$CD/src/" || return 1
  "$NYDUS_IMAGE" create --digester sha256 -B "$CD/dict.boot" -D "$CD/blobs" -J "$CD/dict.json" "$CD/src" >/dev/null || return 1
  "$NYDUS_IMAGE" create --type targz-ref --chunk-dict "bootstrap=$CD/dict.boot" -B "$CD/boot" -D "$CD/blobs" \
    -J "$CD/out.json" "$WORK/layer.tar.gz" || return 1
  cp "$WORK/layer.tar.gz" "$CD/blobs/$LAYER_ID"
  # every non-empty file of the dictionary: at least one chunk each
  local files; files=$(find "$CD/src" -type f -size +0 | wc -l)
  dict_blob_table "$CD/out.json" "$CD/dict.json" "$CD/boot" "$LAYER_ID" "$files"
}
dict_flipped_fails() {
  local id; id=$(blob_ids "$CD/dict.json")
  flip_byte "$CD/blobs/$id" 100 || return 1
  rm -rf "$CD/cache" && mkdir -p "$CD/cache"
  start_daemon "$CD/boot" "$CD/config.json" "$CD/mnt2" "$CD/api2.sock" || return 1
  local bad=0 f
  for f in $(cd "$CD/src" && find . -type f -size +0 | sed 's|^\./||'); do
    cat "$CD/mnt2/usr/lib/python3.11/$f" >/dev/null 2>&1 || bad=$((bad + 1))
  done
  cmp "$CD/mnt2/$SMALL_OTHER" "$REF/$SMALL_OTHER" || { stop_daemon "$CD/mnt2"; return 1; }
  stop_daemon "$CD/mnt2"
  echo "$bad dictionary files fail to read; $SMALL_OTHER (from the layer) reads right"
  [ "$bad" -ge 1 ]
}
SMALL_OTHER=usr/lib/python3.11/os.py
if step "--chunk-dict: targz-ref against a sha256 RAFS dictionary of two directories" dict_build; then
  write_config "$CD/config.json" "$CD/blobs" "$CD/cache" true
  if step "--chunk-dict: nydusd mounts it (layer + dictionary blob)" start_daemon "$CD/boot" "$CD/config.json" "$CD/mnt" "$CD/api.sock"; then
    step "--chunk-dict: mount == tar -x" tree_equals_ref "$CD/mnt"
    step "--chunk-dict: nydusd stops cleanly" stop_daemon "$CD/mnt"
  fi
  step "--chunk-dict: nydus-image check verifies both blobs' chunks" check_all "$CD/boot" "$CD/blobs"
  step "--chunk-dict: a flipped dictionary byte fails its files, not the layer's" dict_flipped_fails
fi

# ---- bad input: inline-meta images ------------------------------------------------
# A ToC whose image.boot entry lies (offset or size past the file): merge
# reports it, no crash. A bootstrap under a 64-hex name that is not its meta
# blob: nydusd refuses to mount, naming the missing object.
lying_toc() { # FIELD_OFFSET VALUE
  local id f rc
  id=$(cat "$I/x/meta_id"); f=$WORK/lying/$id; mkdir -p "$WORK/lying"
  rm -f "$WORK/lying/merged"
  "$PY" - "$I/blobs/$id" "$f" "$1" "$2" <<'EOF' || return 1
import struct, sys
b = bytearray(open(sys.argv[1], "rb").read())
size = int(b[-512 + 124:-512 + 136].rstrip(b"\0 ").decode(), 8)
toc = len(b) - 512 - size
hit = 0
for i in range(size // 128):
    if b[toc + i * 128 + 8:toc + i * 128 + 24].rstrip(b"\0") == b"image.boot":
        struct.pack_into("<Q", b, toc + i * 128 + int(sys.argv[3]), int(sys.argv[4])); hit += 1
assert hit == 1
open(sys.argv[2], "wb").write(b)
EOF
  "$NYDUS_IMAGE" merge --bootstrap "$WORK/lying/merged" "$f" >"$WORK/lying/out" 2>&1; rc=$?
  echo "merge exit status $rc"; cat "$WORK/lying/out"
  [ "$rc" -ne 0 ] && [ "$rc" -lt 128 ] && [ ! -e "$WORK/lying/merged" ]
}
wrong_name() {
  local name=0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef rc
  mkdir -p "$WORK/wrong/mnt" "$WORK/wrong/cache"
  cp "$I/boot" "$WORK/wrong/$name"
  write_config "$WORK/wrong/config.json" "$I/blobs" "$WORK/wrong/cache" true
  timeout 30 "$NYDUSD" --bootstrap "$WORK/wrong/$name" --config "$WORK/wrong/config.json" --mountpoint "$WORK/wrong/mnt" \
    --apisock "$WORK/wrong/api.sock" >"$WORK/wrong/log" 2>&1; rc=$?
  echo "nydusd exit status $rc"; tail -2 "$WORK/wrong/log"
  [ "$rc" -ne 0 ] && [ "$rc" -ne 124 ] && [ "$rc" -lt 128 ] && ! is_mounted "$WORK/wrong/mnt" &&
    grep -q "$name" "$WORK/wrong/log"
}
if [ -s "$I/x/meta_id" ]; then
  step "inline meta, bad ToC: image.boot offset past the end, merge refuses" lying_toc 56 $((1 << 62))
  step "inline meta, bad ToC: image.boot size past the end, merge refuses" lying_toc 64 $((1 << 40))
  step "inline meta: bootstrap under another 64-hex name, nydusd refuses to mount" wrong_name
fi

# ---- bad input -------------------------------------------------------------------
# A blob table claiming a layer shorter than the checkpoints reach.
B=$WORK/bad-size
mkdir -p "$B/cache"
shrink_table() {
  "$PY" - "$D/boot" "$B/boot" <<'EOF' || return 1
import struct, sys
b = bytearray(open(sys.argv[1], "rb").read())
table = struct.unpack_from("<Q", b, 1152 + 8)[0]
# RafsV6Blob: blob_id[64], blob_index, chunk_size, chunk_count, compression_algo,
# digest_algo, features (6 x u32), then compressed_size (u64) at +88.
size = struct.unpack_from("<Q", b, table + 88)[0]
struct.pack_into("<Q", b, table + 88, size // 2)
open(sys.argv[2], "wb").write(b)
EOF
  write_config "$B/config.json" "$D/blobs" "$B/cache" true
}
# nydusd loads the blob meta at mount: it must refuse, not mount, and say why.
bad_size_refused() {
  local rc
  mkdir -p "$B/mnt"
  timeout 30 "$NYDUSD" --bootstrap "$B/boot" --config "$B/config.json" --mountpoint "$B/mnt" \
    --apisock "$B/api.sock" --log-level info >"$B/daemon.log" 2>&1; rc=$?
  echo "nydusd exit status $rc"
  if [ "$rc" -eq 0 ] || [ "$rc" -eq 124 ] || [ "$rc" -ge 128 ]; then return 1; fi
  ! is_mounted "$B/mnt" || { echo "mounted anyway"; return 1; }
  grep 'outside the' "$B/daemon.log" || { echo "daemon log lacks the reason"; tail "$B/daemon.log"; return 1; }
}
step "bad table: layer size halved (bootstrap edited)" shrink_table &&
  step "bad table: nydusd refuses to mount, naming the context outside the layer" bad_size_refused

# A layer that lost its tail on the backend: files whose bytes lie in the tail
# are EIO, files before it still read right.
T=$WORK/truncated
mkdir -p "$T/blobs" "$T/cache"
truncate_layer() {
  cp "$D/blobs/"* "$T/blobs/" || return 1
  truncate -s -1500000 "$T/blobs/$LAYER_ID"   # the tail holds odd/random.bin (last in the tar)
  write_config "$T/config.json" "$T/blobs" "$T/cache" true
}
truncated_reads() {
  local rc
  cat "$T/mnt/odd/random.bin" >/dev/null 2>"$WORK/trunc.err"; rc=$?
  [ "$rc" -ne 0 ] || { echo "read of the lost tail succeeded"; return 1; }
  grep -q 'Input/output error' "$WORK/trunc.err" || { cat "$WORK/trunc.err"; return 1; }
  cmp "$T/mnt/$SMALL" "$REF/$SMALL" || { echo "a file before the tail no longer reads"; return 1; }
}
if step "truncated layer: copy and cut 1.5 MB off the end" truncate_layer &&
   step "truncated layer: nydusd mounts" start_daemon "$D/boot" "$T/config.json" "$T/mnt" "$T/api.sock"; then
  step "truncated layer: the tail's file is EIO, the rest reads" truncated_reads
  step "truncated layer: nydusd stops cleanly" stop_daemon "$T/mnt"
fi

summary
