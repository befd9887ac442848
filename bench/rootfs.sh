#!/usr/bin/env bash
# Real-rootfs benchmark (not a test): a Debian rootfs with python3, numpy,
# pandas, scipy, perl, curl and git, made by mmdebstrap from Debian's package
# set (cached outside the checkout, keyed by the package list), served by
#   - the kernel's EROFS mounting the same image (bootstrap + blob data);
#   - our nydusd FUSE mount, blob cache warm and (per run) empty over a local
#     blob; with FUSE over io_uring as well when the kernel offers it;
#   - nydusd fanotify mode (kernel EROFS over our cache files), warm cache;
#   - squashfuse on a squashfs of the same tree;
#   - fuse-floor (bench/fuse_floor.cpp): the same tree answered from memory,
#     the least any FUSE daemon can cost, over libfuse's own loop and over
#     nydusd's /dev/fuse and io_uring channels.
# Workloads, page cache dropped before each: `find -printf '%s %m'` over every
# entry, `tar cf - . | cat` of everything, and a python start in a chroot that
# imports numpy and a few standard modules. RUNS (3) alternating rounds: in
# each round every workload runs once on every setup, one setup right after
# the other; the table shows medians and the ratio to kernel EROFS (the median
# of each round's own ratio, so that the machine's drift between rounds cancels),
# plus each daemon's peak RSS; a second table gives
# the readers' own CPU time (user + sys of find, of tar and cat, of python):
# what a workload costs in its own processes, kernel code included, before it
# waits for anything.
#
# TREE=generated serves bench/make_tree.py's tree instead (the one bench/read.sh
# uses: 2 x BIG_MB MB files and SMALL_FILES small files in 100 directories); it
# has no python, so only the stat walk and the tar run.
#
# Env: BUILD_DIR (./build), BENCH_TMP (/var/tmp), ROOTFS_CACHE
#      (/var/cache/nydus-cpp, the rootfs tarball), TREE (rootfs | generated),
#      SMALL_FILES (50000), BIG_MB (256), RUNS (3), KEEP=1, SETUPS (space-separated
#      subset of: erofs fuse fuse-nodra fuse-nospin fuse-cold fuse-cold-nodra fuse-uring
#      fuse-cold-uring fanotify squashfuse fuse-floor fuse-floor-channel fuse-floor-uring).
#      BENCH_TMP on a RAM-backed ext4 (not tmpfs: EROFS cannot mount files
#      there) takes the disk's noise out of the comparison.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD_DIR=${BUILD_DIR:-$ROOT/build}
BIN=$BUILD_DIR/bin
LIB=$ROOT/tests/integration/lib
RUNS=${RUNS:-3}
SETUPS=${SETUPS:-erofs fuse fuse-nospin fuse-cold fuse-uring fanotify squashfuse}
PACKAGES=python3,python3-numpy,python3-pandas,python3-scipy,python3-yaml,perl,curl,git
IMPORTS="import numpy, json, http.client, email.parser, argparse, logging, asyncio"
[ "$(id -u)" -eq 0 ] || { echo "bench/rootfs.sh needs root" >&2; exit 1; }
for t in mksquashfs squashfuse; do
  command -v $t >/dev/null || { echo "install mmdebstrap, squashfs-tools and squashfuse (apt-get)" >&2; exit 1; }
done

TREE=${TREE:-rootfs}
case $TREE in
  rootfs)
    # The rootfs tarball, made once per package list (tests/integration/lib/distro_rootfs.sh).
    . "$LIB/distro_rootfs.sh"
    TARBALL=$(distro_rootfs_tar "$PACKAGES") || exit 1
    WORKLOADS="stat tar python" ;;
  generated) WORKLOADS="stat tar" ;;
  *) echo "TREE is rootfs or generated, not $TREE" >&2; exit 1 ;;
esac

W=$(mktemp -d "${BENCH_TMP:-/var/tmp}/nydus-bench-rootfs.XXXXXX")
declare -A DPIDS=()
cleanup() {
  local p m
  for p in "${DPIDS[@]}"; do kill -TERM "$p" 2>/dev/null && wait "$p" 2>/dev/null; done
  for m in "$W"/mnt-*; do umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null; done
  [ "${KEEP:-0}" = 1 ] || rm -rf "$W"
}
trap cleanup EXIT

SRC=$W/src
mkdir -p "$SRC"
if [ "$TREE" = rootfs ]; then
  tar -C "$SRC" --numeric-owner -xf "$TARBALL"
else
  python3 "$ROOT/bench/make_tree.py" "$SRC" "${BIG_MB:-256}" "${SMALL_FILES:-50000}"
fi
ENTRIES=$(find "$SRC" | wc -l)
MB=$(du -sm --apparent-size "$SRC" | cut -f1)
echo "# $TREE: $MB MB, $ENTRIES entries; building images" >&2
"$BIN/nydus-image" create -B "$W/boot" -D "$W/blobs" --blob-cache-dir "$W/kcache" -J "$W/create.json" "$SRC" \
  >/dev/null 2>&1 || { echo "nydus-image create failed" >&2; exit 1; }
BLOB=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["blobs"][0])' "$W/create.json")
mksquashfs "$SRC" "$W/tree.sqfs" -quiet -no-progress -comp zstd >/dev/null 2>&1 || {
  echo "mksquashfs failed" >&2; exit 1; }

drop() { sync; echo 3 >/proc/sys/vm/drop_caches; }
now() { date +%s.%N; }
mounted() { awk -v d="$1" '$5 == d {f=1} END {exit !f}' /proc/self/mountinfo; }

# await_mount NAME WHAT TRIES: wait up to TRIES x 50 ms for daemon DPIDS[NAME] (a WHAT)
# to mount mnt-NAME; if it does not, say so, stop it and fail.
await_mount() {
  local name=$1 what=$2 tries=$3
  for _ in $(seq "$tries"); do mounted "$W/mnt-$name" && return 0; sleep 0.05; done
  echo "$what ($name) did not mount: $(tail -n1 "$W/nydusd-$name.log")" >&2
  kill "${DPIDS[$name]}" 2>/dev/null; wait "${DPIDS[$name]}" 2>/dev/null; unset "DPIDS[$name]"
  return 1
}
# start_nydusd NAME CACHE_DIR [nydusd args...]: a daemon serving mnt-NAME.
start_nydusd() {
  local name=$1 cache=$2
  shift 2
  mkdir -p "$W/mnt-$name"
  cat >"$W/cfg-$name.json" <<JSON
{"device": {"backend": {"type": "localfs", "config": {"dir": "$W/blobs"}},
            "cache": {"type": "blobcache", "config": {"work_dir": "$cache"}}},
 "mode": "direct", "digest_validate": false, "enable_xattr": true}
JSON
  "$BIN/nydusd" "$@" --bootstrap "$W/boot" --config "$W/cfg-$name.json" --mountpoint "$W/mnt-$name" \
    --apisock "$W/$name.sock" --log-level warn >"$W/nydusd-$name.log" 2>&1 &
  DPIDS[$name]=$!
  await_mount "$name" nydusd 200
}
# start_floor NAME [fuse-floor flag]: fuse-floor serving the source tree at mnt-NAME
# (it reads the whole tree into memory first).
start_floor() {
  local name=$1
  shift
  mkdir -p "$W/mnt-$name"
  "$BIN/fuse-floor" "$@" "$SRC" "$W/mnt-$name" >"$W/nydusd-$name.log" 2>&1 &
  DPIDS[$name]=$!
  await_mount "$name" fuse-floor 1200
}
stop_nydusd() {
  local p=${DPIDS[$1]:-}
  [ -n "$p" ] || return 0
  awk '/VmHWM/ {print $2}' /proc/"$p"/status >>"$W/rss-$1"
  kill -TERM "$p"; wait "$p" 2>/dev/null; unset "DPIDS[$1]"
}
warm() { tar -C "$1" -cf - . | cat >/dev/null; }  # fill a blob cache (untimed)
URING_PARAM=/sys/module/fuse/parameters/enable_uring
# with_uring CMD...: run CMD with the fuse module offering FUSE over io_uring to
# new mounts (its default is off), then put the setting back; CMD's status, or
# 1 when the kernel has no such switch.
with_uring() {
  [ -w "$URING_PARAM" ] || return 1
  local was rc
  was=$(cat "$URING_PARAM")
  echo Y >"$URING_PARAM"
  "$@"
  rc=$?
  echo "$was" >"$URING_PARAM"
  return $rc
}

# The CPU time the hypervisor gave other guests while ours wanted it (steal,
# /proc/stat, USER_HZ ticks over all CPUs). On this VM it went from nothing
# to 7 s of CPU within one 3 s tar, which no median of 5 rounds hides.
steal() { awk 'NR == 1 {print $9}' /proc/stat; }
# run WORKLOAD MOUNT: page cache dropped, print the seconds it took, the
# CPU seconds (user + sys) of the workload's processes and the seconds of
# CPU stolen from the VM meanwhile.
run() {
  local t0 t1 cpu s0 s1
  drop
  s0=$(steal)
  t0=$(now)
  # `times` in the subshell: its own user and sys time, then its children's
  # (not through a pipe: that would be another subshell, without children).
  cpu=$(
    case $1 in
      stat) find "$2" -printf '%s %m\n' >/dev/null ;;
      tar) tar -C "$2" -cf - . | cat >/dev/null ;;
      python) chroot "$2" python3 -c "$IMPORTS" || echo "python failed in $2" >&2 ;;
    esac
    times
  )
  t1=$(now)
  s1=$(steal)
  python3 -c "
import os, re, sys
u, s = (int(m) * 60 + float(x) for m, x in re.findall(r'(\d+)m([\d.]+)s', sys.argv[1])[-2:])
print(f'{$t1 - $t0:.3f} {u + s:.3f} {($s1 - $s0) / os.sysconf(\"SC_CLK_TCK\"):.2f}')" "$cpu"
}
record() { echo "$1 $2 $r $3" >>"$W/times"; }  # record SETUP WORKLOAD "SECONDS CPU_SECONDS STEAL_SECONDS" (in round $r)

# Long-lived mounts, set up once; "fuse-cold*" get a fresh daemon and cache per workload.
for s in $SETUPS; do
  case $s in
    erofs)
      mkdir -p "$W/mnt-erofs"
      python3 "$LIB/erofs_mount.py" mount "$W/boot" "$W/mnt-erofs" --device "$W/kcache/$BLOB.blob.data" >/dev/null ||
        { echo "kernel EROFS mount failed (BENCH_TMP on tmpfs? use a RAM-backed ext4)" >&2; exit 1; } ;;
    fuse) start_nydusd fuse "$W/cache-fuse" --fuse-uring off && warm "$W/mnt-fuse" ;;
    fuse-nodra)  # no read-ahead across a directory's files (dir_read_ahead.h)
      NYDUS_DIR_READ_AHEAD=0 start_nydusd fuse-nodra "$W/cache-fuse-nodra" --fuse-uring off && warm "$W/mnt-fuse-nodra" ;;
    fuse-nospin)  # workers sleep as soon as no request waits (before the poll in fuse_channel.cpp)
      NYDUS_FUSE_SPIN_US=0 start_nydusd fuse-nospin "$W/cache-fuse-nospin" --fuse-uring off && warm "$W/mnt-fuse-nospin" ;;
    fuse-uring)
      if [ -w "$URING_PARAM" ]; then
        with_uring start_nydusd fuse-uring "$W/cache-fuse-uring" --fuse-uring on && warm "$W/mnt-fuse-uring" &&
          TRANSPORT=$("$BIN/nydusctl" --sock "$W/fuse-uring.sock" info 2>/dev/null | awk '/FUSE:/ {print $2}')
      else
        echo "(no FUSE io_uring in this kernel)" >&2
      fi ;;
    fanotify) start_nydusd fanotify "$W/cache-fanotify" fanotify && warm "$W/mnt-fanotify" ;;
    fuse-floor) start_floor fuse-floor ;;
    fuse-floor-channel) start_floor fuse-floor-channel --nydus-channel ;;
    fuse-floor-uring) [ -w "$URING_PARAM" ] && with_uring start_floor fuse-floor-uring --nydus-uring ;;
    squashfuse)
      mkdir -p "$W/mnt-squashfuse"
      squashfuse "$W/tree.sqfs" "$W/mnt-squashfuse" && DPIDS[squashfuse]=$(pgrep -n squashfuse) ;;
  esac
done

for r in $(seq "$RUNS"); do
  echo "# round $r of $RUNS" >&2
  for w in $WORKLOADS; do
    for s in $SETUPS; do
      if [ "$s" = fuse-cold ] || [ "$s" = fuse-cold-nodra ] || [ "$s" = fuse-cold-uring ]; then
        rm -rf "$W/cache-cold"
        if [ "$s" = fuse-cold-nodra ]; then
          NYDUS_DIR_READ_AHEAD=0 start_nydusd "$s" "$W/cache-cold" --fuse-uring off || continue
        elif [ "$s" = fuse-cold-uring ]; then
          with_uring start_nydusd "$s" "$W/cache-cold" --fuse-uring on || continue
        else
          start_nydusd "$s" "$W/cache-cold" --fuse-uring off || continue
        fi
        record "$s" "$w" "$(run "$w" "$W/mnt-$s")"
        stop_nydusd "$s"
      elif mounted "$W/mnt-$s"; then
        record "$s" "$w" "$(run "$w" "$W/mnt-$s")"
      fi
    done
  done
done
for s in fuse fuse-nodra fuse-nospin fuse-uring fanotify fuse-floor fuse-floor-channel fuse-floor-uring; do
  stop_nydusd "$s"
done
[ -n "${DPIDS[squashfuse]:-}" ] && awk '/VmHWM/ {print $2}' /proc/"${DPIDS[squashfuse]}"/status >"$W/rss-squashfuse"

python3 - "$W" "$SETUPS" <<'PY'
import os, statistics, sys
w, setups = sys.argv[1], sys.argv[2].split()
times, cpus, steals = {}, {}, {}  # (setup, workload) -> {round: seconds}
for line in open(os.path.join(w, "times")):
    s, wl, r, t, cpu, stolen = line.split()
    times.setdefault((s, wl), {})[r] = float(t)
    cpus.setdefault((s, wl), {})[r] = float(cpu)
    steals.setdefault((s, wl), {})[r] = float(stolen)
names = {"erofs": "kernel EROFS", "fuse": "nydusd FUSE, warm blob cache",
         "fuse-nospin": "nydusd FUSE, warm blob cache, no polling (NYDUS_FUSE_SPIN_US=0)",
         "fuse-nodra": "nydusd FUSE, warm blob cache, no read-ahead across files (NYDUS_DIR_READ_AHEAD=0)",
         "fuse-cold": "nydusd FUSE, empty blob cache (local blob)",
         "fuse-cold-nodra": "nydusd FUSE, empty blob cache, no read-ahead across files",
         "fuse-uring": "nydusd FUSE io_uring, warm blob cache",
         "fuse-cold-uring": "nydusd FUSE io_uring, empty blob cache (local blob)",
         "fanotify": "nydusd fanotify, warm cache", "squashfuse": "squashfuse",
         "fuse-floor": "fuse-floor: answers from memory, libfuse's loop",
         "fuse-floor-channel": "fuse-floor: answers from memory, nydusd's /dev/fuse channel",
         "fuse-floor-uring": "fuse-floor: answers from memory, nydusd's io_uring channel"}
def med(s, wl, table=times):
    v = table.get((s, wl))
    return statistics.median(v.values()) if v else None
def ratio(s, wl, table=times):
    # The median over rounds of this round's figure / kernel EROFS's wall time
    # in the same round: runs minutes apart on a VM whose speed drifts by
    # +-30 % are never compared with each other.
    v, k = table.get((s, wl), {}), times.get(("erofs", wl), {})
    pairs = [v[r] / k[r] for r in v if k.get(r)]
    return statistics.median(pairs) if pairs else None
def rss(s):
    try:
        v = [int(x) for x in open(os.path.join(w, f"rss-{s}")).read().split()]
        return f"{max(v) / 1024:.0f} MiB"
    except OSError:
        return "-"
def table(header, source, last=lambda s: ""):
    # One row per setup: each workload's median from `source`, and its ratio
    # to kernel EROFS's wall time (ratio()).
    print(header)
    print("|---" + "|---:" * (header.count("|") - 2) + "|")
    for s in setups:
        if not any(k[0] == s for k in source):
            continue
        cells = []
        for wl in ("stat", "tar", "python"):
            m, x = med(s, wl, source), ratio(s, wl, source)
            cells += [f"{m:.2f}" if m is not None else "-", f"{x:.2f}" if x is not None else "-"]
        print(f"| {names.get(s, s)} | " + " | ".join(cells) + " |" + last(s))
table("| setup | stat walk (s) | × EROFS | tar all (s) | × EROFS | python imports (s) | × EROFS | peak RSS |",
      times, lambda s: f" {rss(s)} |")
print()
print("Readers' own CPU (user + sys of the workload's processes; medians, seconds; × EROFS's wall time):")
print()
table("| setup | stat walk | × EROFS wall | tar all | × EROFS wall | python imports | × EROFS wall |", cpus)
print()
print("CPU time the hypervisor took from this VM during the runs (steal, seconds over all CPUs; median / max of the rounds):")
print()
print("| setup | stat walk | tar all | python imports |")
print("|---|---:|---:|---:|")
for s in setups:
    if any(k[0] == s for k in steals):
        cells = []
        for wl in ("stat", "tar", "python"):
            v = list(steals.get((s, wl), {}).values())
            cells.append(f"{statistics.median(v):.2f} / {max(v):.2f}" if v else "-")
        print(f"| {names.get(s, s)} | " + " | ".join(cells) + " |")
PY
echo
echo "FUSE io_uring row: transport ${TRANSPORT:-not run} (nydusctl info);"
if [ "$TREE" = rootfs ]; then
  WHAT="rootfs: $MB MB, $ENTRIES entries (bookworm minbase + $PACKAGES)"
else
  WHAT="generated tree (bench/make_tree.py): $MB MB, $ENTRIES entries"
fi
echo "$WHAT; medians of $RUNS alternating rounds (ratios: median of the rounds' own);" \
  "$(nproc) CPUs; $(uname -r); load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
