#!/usr/bin/env bash
# Boot a test guest under QEMU (TCG; KVM is not available here) and stream its
# serial console to stdout and, optionally, to a log file.
#
# Usage: tests/fscache/qemu/run_guest.sh --kernel BZIMAGE --initrd INITRD
#            [--disk RAW_IMG]... [--timeout SECONDS] [--log FILE] [--mem MB]
#            [--append "extra kernel args"]
#   --disk     raw image attached as virtio-blk; the first is /dev/vda, then vdb, ...
#   --timeout  wall-clock limit for the whole boot (default 300)
#   --mem      guest RAM in MiB (default 1024)
#   --append   appended to "console=ttyS0 panic=-1 quiet loglevel=4 rdinit=/init"
# Exit status: qemu's (0 after the guest powers off), 124 if the guest timed out,
# 3 if the guest kernel panicked (e.g. /init exited): qemu itself exits 0 then,
# because panic=-1 reboots and -no-reboot turns the reboot into an exit.
# Carriage returns and terminal escapes are stripped from the console output, so
# `grep '^RESULT x: OK$'` works.
set -euo pipefail

usage() { sed -n '2,/^set -euo/{/^#/s/^# \{0,1\}//p}' "$0" >&2; exit 2; }
die() { echo "run_guest: ERROR: $*" >&2; exit 2; }

KERNEL='' INITRD='' TIMEOUT=300 LOG='' MEM=1024 APPEND=''
DISKS=()
while [ $# -gt 0 ]; do
  case $1 in
    --kernel) KERNEL=${2:?}; shift 2 ;;
    --initrd) INITRD=${2:?}; shift 2 ;;
    --disk) DISKS+=("${2:?}"); shift 2 ;;
    --timeout) TIMEOUT=${2:?}; shift 2 ;;
    --log) LOG=${2:?}; shift 2 ;;
    --mem) MEM=${2:?}; shift 2 ;;
    --append) APPEND=${2?}; shift 2 ;;
    -h|--help) usage ;;
    *) echo "run_guest: unknown argument: $1" >&2; usage ;;
  esac
done
if [ -z "$KERNEL" ] || [ -z "$INITRD" ]; then usage; fi
[ -r "$KERNEL" ] || die "kernel not readable: $KERNEL"
[ -r "$INITRD" ] || die "initrd not readable: $INITRD"
case $TIMEOUT in ''|*[!0-9]*) die "--timeout must be whole seconds" ;; esac
for d in "${DISKS[@]}"; do [ -r "$d" ] || die "disk not readable: $d"; done

if ! command -v qemu-system-x86_64 >/dev/null; then
  [ "$(dpkg-query -W -f='${db:Status-Status}' qemu-system-x86 2>/dev/null)" = installed ] &&
    die "qemu-system-x86 is installed but qemu-system-x86_64 is not on PATH"
  [ "${SKIP_APT:-0}" = 1 ] && die "qemu-system-x86 missing (SKIP_APT=1)"
  sudo=()
  [ "$(id -u)" -eq 0 ] || sudo=(sudo)
  echo "run_guest: installing qemu-system-x86" >&2
  "${sudo[@]}" apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends qemu-system-x86 >&2
fi

# rdinit=/init is the default, spelled out so a missing /init fails clearly.
CMDLINE="console=ttyS0 panic=-1 quiet loglevel=4 rdinit=/init${APPEND:+ $APPEND}"
# -nic none: no default NIC, so no iPXE option ROM (slow under TCG); the guest
# kernel has no network driver anyway.
QEMU=(qemu-system-x86_64 -accel tcg -m "$MEM" -smp 2 -nographic -no-reboot -nic none
      -kernel "$KERNEL" -initrd "$INITRD" -append "$CMDLINE")
for d in "${DISKS[@]}"; do
  # A comma in a path would split the -drive option string; QEMU escapes it as ",,".
  QEMU+=(-drive "file=${d//,/,,},format=raw,if=virtio")
done

# Always keep a log: the panic check below needs one even without --log.
if [ -z "$LOG" ]; then
  LOG=$(mktemp "${TMPDIR:-/tmp}/run_guest.XXXXXX.log")
  trap 'rm -f "$LOG"' EXIT
fi
: > "$LOG"
start=$SECONDS
# stdin from /dev/null: -nographic would otherwise grab the terminal, and under
# timeout (its own process group) a tty read/tcsetattr stops qemu with SIGTTIN/TTOU.
# -k: qemu normally dies on SIGTERM, but never leave it behind.
set +e
# sed: drop CRs and the terminal escapes SeaBIOS writes (ESC c, ESC [2J, ...), which
# would otherwise sit in front of the guest's first line and break '^RESULT' greps.
timeout -k 10 "$TIMEOUT" "${QEMU[@]}" < /dev/null 2>&1 |
  sed -u -e 's/\r$//' -e 's/\x1b\[[0-9;?]*[A-Za-z]//g' -e 's/\x1b[c]//g' | tee "$LOG"
status=("${PIPESTATUS[@]}")
set -e
rc=${status[0]}
elapsed=$((SECONDS - start))

if [ "$rc" -eq 124 ] || { [ "$rc" -eq 137 ] && [ "$elapsed" -ge "$TIMEOUT" ]; }; then
  msg="run_guest: guest timed out after $TIMEOUT s"
  echo "$msg" >&2
  echo "$msg" >> "$LOG"
  exit 124
fi
if [ "$rc" -eq 0 ] && grep -q 'Kernel panic - not syncing' "$LOG"; then
  echo "run_guest: guest kernel panicked: $(grep -m1 'Kernel panic - not syncing' "$LOG")" >&2
  exit 3
fi
echo "run_guest: qemu exited with status $rc after $elapsed s" >&2
exit "$rc"
