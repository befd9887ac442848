#!/usr/bin/env bash
# fscache benchmark (not a test), two parts on the same build:
#  1. on the host, the request path against the emulated kernel
#     (build/bin/fscache-emu-bench): READs/s and MB/s filled into cache objects,
#     cold (fetch + decompress) and warm (BlobCache hit), next to raw zstd
#     decompression of the same chunks;
#  2. in a Linux 6.12 guest (QEMU TCG, tests/integration/fscache_qemu.sh), one
#     image read through fscache mode, FUSE mode and a native EROFS disk of it
#     (`nydus-image export --block` on virtio): cold, warm (page cache
#     dropped, data in that mode's cache) and a stat walk. TCG makes every
#     figure slow in absolute terms; compare the rows with each other.
# Needs root (QEMU test: tmpfs, kernel build cache).
# Env: BUILD_DIR (./build), BIG_MB (48, per large file, 2 files), SMALL_FILES (4000),
#      EMU_MB (256), BENCH_TMP (/var/tmp).
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD_DIR=${BUILD_DIR:-$ROOT/build}
BIG_MB=${BIG_MB:-48}
SMALL_FILES=${SMALL_FILES:-4000}
[ "$(id -u)" -eq 0 ] || { echo "bench/fscache.sh needs root" >&2; exit 1; }

echo "## Host: the fscache request path on the emulated kernel"
echo
"$BUILD_DIR/bin/fscache-emu-bench" --mb "${EMU_MB:-256}" --dir "${BENCH_TMP:-/var/tmp}" 2>/dev/null || exit 1
echo

W=$(mktemp -d "${BENCH_TMP:-/var/tmp}/nydus-bench-fscache.XXXXXX")
trap 'rm -rf "$W"' EXIT
SRC=$W/src
mkdir -p "$SRC/big" "$SRC/small"
python3 "$ROOT/bench/make_tree.py" "$SRC" "$BIG_MB" "$SMALL_FILES"
BIG_BYTES=$(du -sb "$SRC/big" | cut -f1)
SMALL_BYTES=$(du -sb --apparent-size "$SRC/small" | cut -f1)

echo "## Guest (Linux 6.12, QEMU TCG, 2 vCPUs): fscache vs FUSE vs native EROFS"
echo
FSCACHE_TREE=$SRC FSCACHE_BENCH="big big;small small" BENCH_OUT=$W/bench.txt \
  NYDUS_BIN_DIR=$BUILD_DIR/bin bash "$ROOT/tests/integration/fscache_qemu.sh" > "$W/run.log" 2>&1 ||
  { tail -n 30 "$W/run.log"; echo "the guest run failed" >&2; exit 1; }
echo "Tree: 2 files of ${BIG_MB} MB (half random, half text) and ${SMALL_FILES} files of 0-16 KiB in 100 dirs."
echo "Seconds (MB/s); \"vs disk\" = native EROFS time / this mode's time."
echo
python3 - "$W/bench.txt" "$BIG_BYTES" "$SMALL_BYTES" <<'PY'
import sys
rows = {}
for line in open(sys.argv[1]):
    _, mode, phase, secs = line.split()
    rows.setdefault(mode, {})[phase] = float(secs)
size = {"big": int(sys.argv[2]), "small": int(sys.argv[3])}
phases = ["cold_big", "warm_big", "cold_small", "warm_small", "stat_walk"]
print("| mode | " + " | ".join(phases) + " |")
print("|---|" + "---:|" * len(phases))
disk = rows.get("erofs_disk", {})
for mode in ("fscache", "fuse", "erofs_disk"):
    if mode not in rows:
        continue
    cells = []
    for p in phases:
        s = rows[mode].get(p)
        if s is None:
            cells.append("-")
            continue
        kind = p.split("_")[-1]
        txt = f"{s:.2f}"
        if kind in size and s > 0:
            txt += f" ({size[kind] / 1e6 / s:.0f})"
        if mode != "erofs_disk" and disk.get(p) and s > 0:
            txt += f", {disk[p] / s:.0%} vs disk"
        cells.append(txt)
    print(f"| {mode} | " + " | ".join(cells) + " |")
PY
