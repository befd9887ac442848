#!/usr/bin/env bash
# shellcheck disable=SC2016  # single-quoted bash -c scripts get their args positionally
# nydus-image against images built by upstream Nydus (fixtures from dragonflyoss/nydus):
#  - rafs-v6-2.2.boot + blob be7d77ee… (blob dir = fixtures v6/)
#  - 2fa78cad-inlined-image.boot.DERIVED + blob 2fa78cad… made available as d788a0ea…
# For each: check (validates chunk digests), unpack --untar and unpack to a tar; the unpacked
# files must match the metadata listed in the fixture's *.inspect.txt (size, mode, uid, gid,
# mtime with ns). (Python has no blake3, so content is covered by `check`'s digest validation.)
# As root with EROFS: the fixture bootstraps are also mounted by the kernel, using a
# blob.data device assembled here from the chunk table (zstd -d of each chunk) — this part
# does not depend on nydus-image; the mounted files must equal the unpacked ones.
set -uo pipefail
# shellcheck source-path=SCRIPTDIR source=lib/common.sh
source "$(dirname "$0")/lib/common.sh"

V6=$NYDUS_FIXTURES_DIR/v6
[ -f "$V6/rafs-v6-2.2.boot" ] || die "vendored fixtures missing in $V6 (tests/fixtures/upstream, or NYDUS_FIXTURES_DIR)"
need_nydus_image

WORK=$(mktemp -d "${NYDUS_TEST_TMP:-/var/tmp}/nydus-fixtures.XXXXXX") || die "mktemp"
LOG_DIR=$WORK/logs
mkdir -p "$LOG_DIR"
cleanup() {
  umount_below "$WORK"
  if [ "${KEEP_WORK:-0}" = 1 ]; then echo "kept $WORK"; return; fi
  rm -rf "$WORK"
}
trap cleanup EXIT

# expect_inspect DIR INSPECT.txt: every inode line of the inspect dump matches DIR.
expect_inspect() {
  "$PY" - "$1" "$2" <<'EOF'
import os, re, stat, sys
root, dump = sys.argv[1], sys.argv[2]
pat = re.compile(r"^(/\S*): nid \d+ (\w+) .* mode ([0-7]+) size (\d+) .* uid (\d+) gid (\d+) "
                 r"mtime (\d+)\.(\d+)")
bad = n = 0
for line in open(dump):
    m = pat.match(line)
    if not m:
        continue
    path, kind, mode, size, uid, gid, sec, nsec = m.groups()
    n += 1
    p = os.path.join(root, path.lstrip("/"))
    try:
        st = os.lstat(p)
    except OSError as e:
        print(f"{path}: {e}"); bad += 1; continue
    want = {"perm": int(mode, 8), "uid": int(uid), "gid": int(gid)}
    got = {"perm": stat.S_IMODE(st.st_mode), "uid": st.st_uid, "gid": st.st_gid}
    if kind == "reg":
        want["size"], got["size"] = int(size), st.st_size
        want["type"], got["type"] = "reg", "reg" if stat.S_ISREG(st.st_mode) else "other"
    if kind == "dir":
        want["type"], got["type"] = "dir", "dir" if stat.S_ISDIR(st.st_mode) else "other"
    if path != "/":
        want["mtime_ns"] = int(sec) * 10**9 + int(nsec)
        got["mtime_ns"] = st.st_mtime_ns
    for k in want:
        if want[k] != got[k]:
            print(f"{path}: {k} expected {want[k]} got {got[k]}"); bad += 1
    print(f"{path}: {'ok' if not bad else 'checked'} {got}")
print(f"{n} inodes from {os.path.basename(dump)}, {bad} mismatches")
sys.exit(1 if bad or n == 0 else 0)
EOF
}

# make_blob_data BLOB INSPECT.txt OUT: uncompressed blob layout from the chunk table lines.
make_blob_data() {
  "$PY" - "$1" "$2" "$3" <<'EOF'
import ast, os, re, subprocess, sys
blob, dump, out = sys.argv[1:4]
data = open(blob, "rb").read()
chunks = [ast.literal_eval(m.group(1)) for m in
          (re.match(r"^\s+(\{'digest'.*\})\s*$", l) for l in open(dump)) if m]
blocks = int(re.search(r"devslot\[0\] tag \w+ blocks (\d+)", open(dump).read()).group(1))
fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
os.ftruncate(fd, blocks * 4096)
for c in chunks:
    raw = data[c["coff"]:c["coff"] + c["csize"]]
    if c["flags"] & 1:  # compressed (zstd in these fixtures)
        raw = subprocess.run(["zstd", "-d", "-c", "-q"], input=raw, capture_output=True,
                             check=True).stdout
    assert len(raw) == c["usize"], (c, len(raw))
    os.pwrite(fd, raw, c["uoff"])
os.close(fd)
print(f"{len(chunks)} chunks -> {out} ({blocks} blocks)")
EOF
}

# run_fixture NAME BOOT BLOBDIR BLOBFILE INSPECT (the bootstrap's dump, also has the chunk table)
run_fixture() {
  local name=$1 boot=$2 blobdir=$3 blobfile=$4 inspect=$5
  local d=$WORK/$name
  mkdir -p "$d"
  echo "=== $name"
  step "$name: check" "$NYDUS_IMAGE" check -B "$boot" --blob-dir "$blobdir"
  step "$name: check -J" "$NYDUS_IMAGE" check -B "$boot" --blob-dir "$blobdir" -J "$d/check.json" &&
    step "$name: check -J output is JSON" "$PY" -m json.tool "$d/check.json"
  step "$name: stat" "$NYDUS_IMAGE" stat -B "$boot"
  if step "$name: unpack --untar (--blob-dir)" "$NYDUS_IMAGE" unpack -B "$boot" --blob-dir "$blobdir" \
       --output "$d/untar" --untar; then
    step "$name: unpacked files match inspect dump" expect_inspect "$d/untar" "$inspect"
  fi
  if step "$name: unpack --untar (--blob FILE)" "$NYDUS_IMAGE" unpack -B "$boot" --blob "$blobfile" \
       --output "$d/untar-blob" --untar; then
    step "$name: unpacked (--blob) files match inspect dump" expect_inspect "$d/untar-blob" "$inspect"
  fi
  if step "$name: unpack to tar" "$NYDUS_IMAGE" unpack -B "$boot" --blob-dir "$blobdir" \
       --output "$d/image.tar"; then
    step "$name: tar tvf" tar tvf "$d/image.tar"
    mkdir -p "$d/tar-x"
    step "$name: tar extracts, files match inspect dump" bash -c '
      tar -x -f "$1" -C "$2" --numeric-owner --same-owner --same-permissions && "$3" "$2" "$4"
    ' _ "$d/image.tar" "$d/tar-x" expect_inspect "$inspect"
  fi

  # Kernel mount with a blob.data assembled independently of nydus-image.
  if [ "$(id -u)" -ne 0 ] || ! grep -qw erofs /proc/filesystems; then
    echo "NOTE: $name: not root or no EROFS: kernel mount skipped"
    return 0
  fi
  if ! command -v zstd >/dev/null; then
    echo "NOTE: $name: zstd CLI missing: kernel mount skipped"
    return 0
  fi
  mkdir -p "$d/mnt"
  if step "$name: assemble blob.data from chunk table" make_blob_data "$blobfile" "$inspect" "$d/blob.data" &&
     step "$name: kernel mount (device=blob.data)" erofs_mount "$boot" "$d/mnt" --device "$d/blob.data"; then
    step "$name: kernel-mounted files match inspect dump" expect_inspect "$d/mnt" "$inspect"
    if [ -d "$d/untar" ]; then
      step "$name: kernel mount == unpack --untar" compare_trees --ignore-root-attrs "$d/mnt" "$d/untar"
    fi
    step "$name: umount" erofs_umount "$d/mnt"
  fi
}

# expect_inspect is called through `bash -c` above: export it.
export -f expect_inspect
export PY

run_fixture rafs-v6-2.2 "$V6/rafs-v6-2.2.boot" "$V6" \
  "$V6/be7d77eeb719f70884758d1aa800ed0fb09d701aaec469964e9d54325f0d5fef" "$V6/rafs-v6-2.2.boot.inspect.txt"

# The inlined bootstrap names its blob d788a0ea…, but the blob file is 2fa78cad… (sha256).
INL=$WORK/inlined-blobs
mkdir -p "$INL"
ln -s "$V6/2fa78cad554b75ac91a4a125ed148d0ddeb25efa4aaa8bd80e5dc292690a4dca" \
  "$INL/d788a0eac4ff9779bc2eae3842117a918d847d90fddbea1503f7c5296a4a7de3"
run_fixture inlined "$V6/2fa78cad-inlined-image.boot.DERIVED" "$INL" \
  "$INL/d788a0eac4ff9779bc2eae3842117a918d847d90fddbea1503f7c5296a4a7de3" \
  "$V6/2fa78cad-inlined-image.boot.inspect.txt"

summary
