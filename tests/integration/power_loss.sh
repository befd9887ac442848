#!/usr/bin/env bash
# Power loss under the blob cache: writes that were never synced must not come
# back as "cached" data. cache_crash_loop.sh kills nydusd, but the page cache
# survives a killed process, so it cannot tell whether chunk data reaches the
# disk before the chunk map's ready bit does. Here the cache lives on ext4 over
# a device-mapper flakey target inside a QEMU guest (the test kernel of
# tests/fscache/qemu, cached in /var/cache/nydus-cpp/kernel); a "power cut"
# switches the target to drop_writes, kills nydusd and unmounts, so every
# write not on the disk yet is lost. Three rounds (tests/fscache/qemu/guest_power_loss.sh):
#   synced_map           half the files read, the chunk map written back before
#                        the data (as the kernel may), then the cut
#   mid_read_eager       the cut while a slow reader fills the cache, with eager
#                        writeback (the kernel writes dirty pages in its own order)
#   mid_read_synced_map  the map written back while fills are still running, cut
# After each cut:
#   - on the host, every chunk whose bit the cut left set in the chunk map has
#     exactly the builder's bytes (its --blob-cache-dir layout) in the data file
#     (cache_crash.py chunkmap), and the synced-map rounds kept some bits (else
#     nothing was tested);
#   - in the guest, nydusd restarted on that cache serves every file equal to
#     the source (sha256), and a write made after the cut is gone.
# Env: NYDUS_BIN_DIR, NYDUSD (the daemon under test), KEEP_WORK=1,
#      POWER_LOSS_TREE_MIB (default 12), POWER_LOSS_GUEST_TIMEOUT (default 600 s).
set -uo pipefail
# shellcheck source-path=SCRIPTDIR source=lib/common.sh
source "$(dirname "$0")/lib/common.sh"

[ "$(id -u)" -eq 0 ] || skip "needs root (apt-get, kernel build cache in /var/cache)"
need_nydus_image
QEMU_DIR=$NYDUS_SOURCE_DIR/tests/fscache/qemu
NYDUSD=${NYDUSD:-$NYDUS_BIN_DIR/nydusd}
[ -x "$NYDUSD" ] || die "nydusd not found at $NYDUSD (build first; set NYDUS_BIN_DIR)"
DMSETUP=$(command -v dmsetup) || skip "dmsetup not installed (scripts/setup.sh installs it)"
command -v mkfs.ext4 >/dev/null || skip "mkfs.ext4 not installed (e2fsprogs)"
CRASH=$LIB_DIR/cache_crash.py
SLOT_MIB=64   # the guest's tape layout: round R at R * 64 MiB, map at +0, data at +1 MiB
ROUNDS=(synced_map mid_read_eager mid_read_synced_map)
MUST_KEEP_BITS=(synced_map mid_read_synced_map)

WORK=$(mktemp -d /var/tmp/nydus-power-loss.XXXXXX) || die "mktemp"
LOG_DIR=$WORK
cleanup() {
  if [ "${KEEP_WORK:-0}" = 1 ]; then echo "kept $WORK"; return; fi
  rm -rf "$WORK"
}
trap cleanup EXIT

KERNEL=$("$QEMU_DIR/build_kernel.sh" | tail -n1) || die "kernel build failed"
[ -s "$KERNEL" ] || die "no kernel image"
echo "kernel: $KERNEL"

SRC=$WORK/src
IMG=$WORK/root/images
EXP=$WORK/root/expected
mkdir -p "$IMG" "$EXP"
step "make tree (random content)" "$PY" "$CRASH" tree "$SRC" --mib "${POWER_LOSS_TREE_MIB:-12}" ||
  die "cannot make the source tree"
step "nydus-image create (zstd, 64 KiB chunks)" "$NYDUS_IMAGE" create --fs-version 6 --compressor zstd \
  --chunk-size 0x10000 -B "$IMG/boot" -D "$IMG/blobs" --blob-cache-dir "$WORK/ref" -J "$WORK/create.json" "$SRC" ||
  die "cannot build the image"
mapfile -t BLOBS < <(blob_ids "$WORK/create.json")
[ "${#BLOBS[@]}" -eq 1 ] || die "expected one blob, got ${#BLOBS[@]}"
BLOB_ID=${BLOBS[0]}
echo "$BLOB_ID" > "$EXP/blob_id"
(cd "$SRC" && find . -type f | sed 's|^\./||' | LC_ALL=C sort > "$EXP/files") || die "listing the tree"
(cd "$SRC" && tr '\n' '\0' < "$EXP/files" | xargs -0 sha256sum > "$EXP/sums") || die "hashing the tree"
echo "tree: $(wc -l < "$EXP/files") files, $(du -sm "$SRC" | cut -f1) MiB; blob $BLOB_ID"
write_config "$EXP/nydusd.json" /images/blobs @CACHE@

truncate -s 256M "$WORK/disk.img"
mkfs.ext4 -q -F "$WORK/disk.img" || die "mkfs.ext4 failed"
truncate -s $(( ${#ROUNDS[@]} * SLOT_MIB ))M "$WORK/tape.img"

step "initramfs" "$QEMU_DIR/make_initramfs.sh" "$WORK/initramfs.cpio.gz" "$QEMU_DIR/guest_power_loss.sh" \
  "$QEMU_DIR/guest_lib.sh:/lib/guest_lib.sh" "$NYDUSD:/bin/nydusd" "$DMSETUP:/bin/dmsetup" \
  "$IMG:/images" "$EXP:/expected" || die "initramfs failed"

t0=$SECONDS
rc=0
"$QEMU_DIR/run_guest.sh" --kernel "$KERNEL" --initrd "$WORK/initramfs.cpio.gz" \
  --disk "$WORK/disk.img" --disk "$WORK/tape.img" --mem 1024 \
  --timeout "${POWER_LOSS_GUEST_TIMEOUT:-600}" --log "$WORK/console.log" > /dev/null || rc=$?
echo "guest ran $((SECONDS - t0)) s (exit $rc)"
grep -E '^(RESULT|TAPE|guest:) ' "$WORK/console.log"
[ "$rc" -eq 0 ] || fail_step "guest" "run_guest.sh exited with $rc (124: timeout, 3: kernel panic)"

# The guest's verdicts.
while read -r line; do fail_step "${line#RESULT }" "in the guest"; done < <(grep '^RESULT .*: FAIL' "$WORK/console.log")
EXPECTED=(flakey_device "done")
for r in "${ROUNDS[@]}"; do EXPECTED+=("${r}_cut" "${r}_restart"); done
EXPECTED+=(mid_read_eager_mid_fill mid_read_synced_map_mid_fill)  # the reader was still running at the cut
for name in "${EXPECTED[@]}"; do
  if grep -q "^RESULT $name: OK" "$WORK/console.log"; then PASSES=$((PASSES + 1))
  elif ! grep -q "^RESULT $name: " "$WORK/console.log"; then fail_step "$name" "no RESULT line"; fi
done

# The cache files as each cut left them: every ready bit backed by the right bytes.
# tape_cut R NAME MAP_SIZE DATA_SIZE: extract round R's files and check them.
tape_cut() {
  local r=$1 name=$2 msize=$3 dsize=$4 dir=$WORK/cut-$1 ready
  mkdir -p "$dir"
  if [ "$msize" -ge 0 ]; then
    dd if="$WORK/tape.img" of="$dir/$BLOB_ID.chunk_map" bs=1M iflag=skip_bytes,count_bytes \
      skip=$((r * SLOT_MIB * 1048576)) count="$msize" status=none || return 1
  fi
  if [ "$dsize" -ge 0 ]; then
    dd if="$WORK/tape.img" of="$dir/$BLOB_ID.blob.data" bs=1M iflag=skip_bytes,count_bytes \
      skip=$(((r * SLOT_MIB + 1) * 1048576)) count="$dsize" status=none || return 1
  fi
  "$PY" "$CRASH" chunkmap "$dir" "$WORK/ref" "$BLOB_ID" --json "$dir/map.json" || return 1
  ready=$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["ready"])' "$dir/map.json") || return 1
  case " ${MUST_KEEP_BITS[*]} " in
    *" $name "*) if [ "$ready" -eq 0 ]; then echo "no ready bit survived the cut: this round tested nothing"; return 1; fi ;;
  esac
}
for r in "${!ROUNDS[@]}"; do
  name=${ROUNDS[$r]}
  read -r _ _ got msize dsize < <(grep "^TAPE $r " "$WORK/console.log") || true
  if [ "${got:-}" != "$name" ]; then fail_step "${name}_on_disk" "no TAPE line for round $r"; continue; fi
  step "${name}: after the cut, every chunk marked ready has the source's bytes on disk" tape_cut "$r" "$name" "$msize" "$dsize"
  grep -h '^chunk map:' "$LOG_DIR"/step-*.log 2>/dev/null | tail -n1 | sed 's/^/    /'
  unset got msize dsize
done

if [ "$FAILS" -gt 0 ]; then
  echo "---- console (last 40 lines) ----"
  tail -n 40 "$WORK/console.log"
  cp "$WORK/console.log" /var/tmp/nydus-power-loss.console.log && echo "console log: /var/tmp/nydus-power-loss.console.log"
fi
echo "total $SECONDS s"
summary
