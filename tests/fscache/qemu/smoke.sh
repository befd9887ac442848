#!/usr/bin/env bash
# End-to-end self-test of the QEMU guest harness: kernel build/reuse, initramfs,
# ext4 cache disk, boot, RESULT lines, poweroff.
#
# Usage: tests/fscache/qemu/smoke.sh            (as root: it may apt-get install and
#                                                build the kernel into /var/cache)
#   SMOKE_TIMEOUT=SECONDS   guest time limit (default 180)
#   KEEP=1                  keep the work dir (initramfs, disk, console log)
# Exit status 0 when every expected RESULT line is OK.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../../.." && pwd)
EXPECTED=(cachefiles_dev cache_disk erofs_fsid_option dynamic_binary)

log() { echo "smoke: $*" >&2; }

WORK=$(mktemp -d "${TMPDIR:-/tmp}/nydus-qemu-smoke.XXXXXX")
if [ "${KEEP:-0}" = 1 ]; then log "keeping $WORK"; else trap 'rm -rf "$WORK"' EXIT; fi

t0=$SECONDS
KERNEL=$("$HERE/build_kernel.sh" | tail -n1)
log "kernel: $KERNEL ($((SECONDS - t0)) s)"

# Any dynamically linked host binary proves the ldd/interpreter copying works;
# prefer our own tool, which pulls in the biggest library set.
DYN=$REPO/build/bin/nydus-image
DYN_ARGS=--version
if [ ! -x "$DYN" ]; then DYN=/usr/bin/xxd DYN_ARGS=-v; fi
[ -x "$DYN" ] || { log "no dynamic binary to test with (need $REPO/build/bin/nydus-image or /usr/bin/xxd)"; exit 1; }

# No root needed: mkfs.ext4 formats a plain file.
truncate -s 64M "$WORK/cache.img"
mkfs.ext4 -q -F "$WORK/cache.img"

cat > "$WORK/init" <<INIT
#!/bin/sh
. /lib/guest_lib.sh
guest_setup

if [ -c /dev/cachefiles ]; then result cachefiles_dev OK
else result cachefiles_dev FAIL "no /dev/cachefiles char device"; fi

if grep -q '^/dev/vda /cache ext4 ' /proc/mounts; then result cache_disk OK
else result cache_disk FAIL "/dev/vda not mounted ext4 at /cache: \$(grep ' /cache ' /proc/mounts)"; fi

# No daemon has bound a cache, so the kernel must refuse the fscache-backed mount
# with ENOBUFS ("No buffer space available" in busybox's strerror text).
out=\$(mount -t erofs none -o fsid=x /mnt 2>&1) && rc=0 || rc=\$?
echo "erofs mount without daemon: rc=\$rc: \$out"
case \$rc:\$out in
  0:*) umount /mnt; result erofs_fsid_option FAIL "mount succeeded without a daemon" ;;
  *'No buffer space available'*) result erofs_fsid_option OK ;;
  *) result erofs_fsid_option FAIL "unexpected error: \$out" ;;
esac

out=\$(/bin/$(basename "$DYN") $DYN_ARGS 2>&1) && rc=0 || rc=\$?
if [ \$rc -eq 0 ]; then result dynamic_binary OK; echo "\$out"
else result dynamic_binary FAIL "rc=\$rc: \$out"; fi

echo "guest uptime at poweroff: \$(cut -d' ' -f1 /proc/uptime) s"
guest_poweroff
INIT

"$HERE/make_initramfs.sh" "$WORK/initramfs.cpio.gz" "$WORK/init" \
  "$HERE/guest_lib.sh:/lib/guest_lib.sh" "$DYN"

t1=$SECONDS
rc=0
"$HERE/run_guest.sh" --kernel "$KERNEL" --initrd "$WORK/initramfs.cpio.gz" \
  --disk "$WORK/cache.img" --timeout "${SMOKE_TIMEOUT:-180}" --log "$WORK/console.log" || rc=$?
boot=$((SECONDS - t1))

echo "----- smoke summary -----"
grep '^RESULT ' "$WORK/console.log" || true
fail=0
if [ "$rc" -ne 0 ]; then log "run_guest.sh exited with $rc"; fail=1; fi
if grep -q '^RESULT .*: FAIL' "$WORK/console.log"; then fail=1; fi
for name in "${EXPECTED[@]}"; do
  grep -q "^RESULT $name: " "$WORK/console.log" || { log "missing RESULT line: $name"; fail=1; }
done
echo "guest boot-to-poweroff: ${boot} s (wall clock)"
if [ "$fail" -ne 0 ]; then
  log "FAILED"
  if [ "${KEEP:-0}" != 1 ]; then  # the work dir is about to be deleted
    cp "$WORK/console.log" "${TMPDIR:-/tmp}/nydus-qemu-smoke.console.log"
    log "console log copied to ${TMPDIR:-/tmp}/nydus-qemu-smoke.console.log"
  fi
  exit 1
fi
echo "smoke: PASS"
