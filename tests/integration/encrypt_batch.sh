#!/usr/bin/env bash
# shellcheck disable=SC2016  # single-quoted bash -c scripts get their args positionally
# Encrypted (--encrypt, AES-128-XTS) and batch (--batch-size) blobs, end to end:
#   nydus-image create with each option (and both, and raw/zstd, and blob-toc)
#   -> an independent decoder written from upstream's sources (lib/crypt_batch_oracle.py:
#      Python `cryptography` + the zstd CLI) decodes every chunk and matches the
#      bootstrap's sha256 chunk digests
#   -> check, unpack == the source tree (tar), nydusd (localfs) mount == the source tree
#   -> one flipped ciphertext byte: those files fail with EIO, every other file reads
#      the source's bytes (never wrong bytes); a flipped key byte in the bootstrap:
#      check fails and the oracle fails too (so it can fail).
set -uo pipefail
# shellcheck source-path=SCRIPTDIR source=lib/common.sh
source "$(dirname "$0")/lib/common.sh"
# shellcheck source-path=SCRIPTDIR source=lib/one_nydusd.sh
source "$(dirname "$0")/lib/one_nydusd.sh"

need_root_and_fuse
need_nydus_image
NYDUSD=${NYDUSD:-$NYDUS_BIN_DIR/nydusd}
[ -x "$NYDUSD" ] || die "nydusd not found at $NYDUSD"
ORACLE="$PY $LIB_DIR/crypt_batch_oracle.py"

WORK=$(mktemp -d "${NYDUS_TEST_TMP:-/var/tmp}/nydus-encbatch.XXXXXX") || die "mktemp"
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

# ---- the tree: many small files (batched), tiny ones (< 16 bytes: XTS padding),
# multi-chunk files, a symlink, an empty file --------------------------------------------
SRC=$WORK/src
mkdir -p "$SRC/small" "$SRC/bin"
for i in $(seq 1 60); do head -c $((i * 131)) /dev/urandom >"$SRC/small/r$i"; done
for i in $(seq 1 20); do seq 1 $((i * 40)) >"$SRC/small/t$i"; done
printf 'abcde' >"$SRC/five"
printf '0123456789abcdef' >"$SRC/sixteen"
: >"$SRC/empty"
for f in /bin/ls /bin/cat; do cp -L "$f" "$SRC/bin/"; done
seq 1 400000 >"$SRC/big.txt"
head -c 3500000 /dev/urandom >"$SRC/big.bin"
ln -s big.txt "$SRC/link"

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

# Every regular file under $2 either fails to read with EIO or equals $1's; at least
# one fails (the tampered one).
eio_or_exact() {
  "$PY" - "$1" "$2" <<'PY'
import errno, os, sys
src, mnt = sys.argv[1], sys.argv[2]
bad = good = 0
for root, _, files in os.walk(src):
    for f in files:
        s = os.path.join(root, f)
        if os.path.islink(s):
            continue
        m = os.path.join(mnt, os.path.relpath(s, src))
        try:
            data = open(m, "rb").read()
        except OSError as e:
            if e.errno != errno.EIO:
                print(f"{m}: {e} (want EIO)"); sys.exit(1)
            bad += 1
            continue
        if data != open(s, "rb").read():
            print(f"{m}: WRONG BYTES"); sys.exit(1)
        good += 1
print(f"{bad} files EIO, {good} exact")
sys.exit(0 if bad > 0 and good > 0 else 1)
PY
}
# Flip one byte of the first stored chunk (offset 0x10) of the blob in $1.
flip_blob_byte() {
  local blob
  blob=$(find "$1" -type f -name '????????????????????????????????????????????????????????????????' | head -1)
  "$PY" -c 'import sys; p=sys.argv[1]; b=bytearray(open(p,"rb").read()); b[0x10]^=0x5a; open(p,"wb").write(b)' "$blob"
}
# Flip one byte of blob 0's key (blob table entry + 168) in the bootstrap $1.
flip_key_byte() {
  "$PY" -c '
import struct, sys
p = sys.argv[1]; b = bytearray(open(p, "rb").read())
bt = struct.unpack_from("<Q", b, 1152 + 8)[0]
b[bt + 168] ^= 1
open(p, "wb").write(b)' "$1"
}

N=0
for opts in "--encrypt" "--batch-size 0x10000" "--encrypt --batch-size 0x10000" "--encrypt -c none" \
            "--encrypt --batch-size 0x4000 -c none" "--encrypt --batch-size 0x20000 --features blob-toc"; do
  N=$((N + 1))
  T=$WORK/c$N
  mkdir -p "$T/blobs"
  # shellcheck disable=SC2086  # $opts is a list of flags
  step "[$opts] create" "$NYDUS_IMAGE" create -d sha256 $opts -B "$T/boot" -D "$T/blobs" "$SRC" || continue
  step "[$opts] upstream-derived decoder: every chunk's sha256 matches" $ORACLE "$T/boot" "$T/blobs"
  step "[$opts] check" "$NYDUS_IMAGE" check -B "$T/boot" -D "$T/blobs"
  step "[$opts] unpack == source" bash -c '"$1" unpack -B "$2/boot" -D "$2/blobs" --output "$2/un.tar" &&
    mkdir -p "$2/un" && tar -xf "$2/un.tar" -C "$2/un" 2>/dev/null && diff -r --no-dereference "$3" "$2/un"' \
    _ "$NYDUS_IMAGE" "$T" "$SRC"
  if step "[$opts] nydusd mounts it (localfs, digest_validate)" start_nydusd "$T/boot" "$T/blobs" "$T/mnt"; then
    step "[$opts] nydusd tree == source" compare_trees "$SRC" "$T/mnt"
    step "[$opts] nydusd exits cleanly" stop_nydusd
  fi

  # Broken once: a tampered ciphertext/batch byte, then a wrong key.
  cp -a "$T" "$T.bad"
  flip_blob_byte "$T.bad/blobs"
  step "[$opts] tampered blob: check fails" bash -c '! "$1" check -B "$2/boot" -D "$2/blobs" >/dev/null 2>&1' \
    _ "$NYDUS_IMAGE" "$T.bad"
  if step "[$opts] tampered blob: nydusd mounts" start_nydusd "$T.bad/boot" "$T.bad/blobs" "$T.bad/mnt"; then
    step "[$opts] tampered blob: EIO for the hit files, exact bytes for the rest" eio_or_exact "$SRC" "$T.bad/mnt"
    stop_nydusd
  fi
  case $opts in
    *--encrypt*)
      cp -a "$T" "$T.key"
      flip_key_byte "$T.key/boot"
      step "[$opts] wrong key: check fails" bash -c '! "$1" check -B "$2/boot" -D "$2/blobs" >/dev/null 2>&1' \
        _ "$NYDUS_IMAGE" "$T.key"
      step "[$opts] wrong key: the oracle fails too" bash -c '! $1 "$2/boot" "$2/blobs" >/dev/null 2>&1' \
        _ "$ORACLE" "$T.key"
      ;;
  esac
done

# merge keeps each layer's cipher and batch table: an encrypted+batch layer under a
# plain batch layer.
M=$WORK/merge
mkdir -p "$M/blobs" "$M/src2"
echo layer2 >"$M/src2/new"
head -c 300 /dev/urandom >"$M/src2/small"
step "merge: build an encrypted+batch layer and a batch layer" bash -c \
  '"$1" create -d sha256 --encrypt --batch-size 0x10000 -B "$2/l1" -D "$2/blobs" "$3" &&
   "$1" create -d sha256 --batch-size 0x10000 -B "$2/l2" -D "$2/blobs" "$2/src2"' _ "$NYDUS_IMAGE" "$M" "$SRC"
step "merge the two layers" "$NYDUS_IMAGE" merge -B "$M/merged" "$M/l1" "$M/l2"
step "merged: upstream-derived decoder verifies every chunk" $ORACLE "$M/merged" "$M/blobs"
step "merged: check" "$NYDUS_IMAGE" check -B "$M/merged" -D "$M/blobs"

# Upstream's option checks.
step "--batch-size not a power of two is refused" bash -c '! "$1" create --batch-size 0x3000 -B "$2/x.boot" -D "$2/x" "$3" 2>/dev/null' \
  _ "$NYDUS_IMAGE" "$WORK" "$SRC"
step "--batch-size above the chunk size is refused" bash -c '! "$1" create --batch-size 0x200000 -B "$2/x.boot" -D "$2/x" "$3" 2>/dev/null' \
  _ "$NYDUS_IMAGE" "$WORK" "$SRC"
step "--encrypt with --fs-version 5 is refused" bash -c '! "$1" create --encrypt --fs-version 5 -B "$2/x.boot" -D "$2/x" "$3" 2>/dev/null' \
  _ "$NYDUS_IMAGE" "$WORK" "$SRC"

summary
