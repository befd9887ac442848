#!/usr/bin/env bash
# The README's first command, scripts/demo.sh, with the built binaries: the
# container path (a python3 container started lazily through containerd and our
# snapshotter must print its imports) and the fallback without containers (a
# nydusd-only lazy mount must read part of the blob, not all of it).
set -uo pipefail
# shellcheck source-path=SCRIPTDIR source=lib/common.sh
source "$(dirname "$0")/lib/common.sh"
[ "$(id -u)" -eq 0 ] || skip "needs root (containerd, mounts)"
[ -e /dev/fuse ] || skip_kernel "no /dev/fuse"
WORK=$(mktemp -d /var/tmp/nydus-demo.XXXXXX) || die "mktemp"
trap 'umount_below "$WORK"; rm -rf "$WORK"' EXIT
ln -s "$NYDUS_BIN_DIR" "$WORK/bin"
demo() { SKIP_SETUP=1 BUILD_DIR=$WORK bash "$NYDUS_SOURCE_DIR/scripts/demo.sh" >"$WORK/demo.log" 2>&1; local rc=$?; tail -n 12 "$WORK/demo.log"; return $rc; }
container_path() { demo && grep -q '^container printed: python 3\.[0-9.]* imported json, email, http.client, argparse$' "$WORK/demo.log"; }
step "demo: a python3 container started lazily through our snapshotter" container_path
fallback_path() { DEMO_FALLBACK=1 demo && grep -q 'read from the blob so far' "$WORK/demo.log"; }
step "demo without containers: the nydusd-only lazy mount" fallback_path
summary
