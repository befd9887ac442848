#!/usr/bin/env bash
# with_fuse_uring.sh SCRIPT [ARGS...]: run a FUSE integration script with FUSE over
# io_uring forced on: the fuse module's enable_uring=Y (read by the kernel at each
# mount's INIT; the previous value is put back at the end) and NYDUSD_FUSE_URING=on
# (read by every nydusd the script starts). The scripts' uring_check steps
# (lib/fuse_uring.sh) then require requests served through the rings.
# ctest registers these variants as integration.<name>.io_uring (tests/CMakeLists.txt).
set -uo pipefail
PARAM=/sys/module/fuse/parameters/enable_uring
if [ ! -e "$PARAM" ]; then echo "SKIP (kernel): no FUSE over io_uring in this kernel ($PARAM)"; exit 77; fi
[ "$(id -u)" -eq 0 ] || { echo "SKIP: needs root to set $PARAM"; exit 77; }
PREV=$(cat "$PARAM")
restore() { echo "$PREV" >"$PARAM"; echo "enable_uring restored to $(cat "$PARAM")"; }
trap restore EXIT
echo Y >"$PARAM" || { echo "FAIL: cannot set $PARAM"; exit 1; }
export NYDUSD_FUSE_URING=on
bash "$@"
