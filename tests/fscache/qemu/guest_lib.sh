# shellcheck shell=sh
# Helpers for /init scripts inside the QEMU test guest (busybox sh, PID 1).
#
# Usage (in the init script):   . /lib/guest_lib.sh
#   guest_setup                  mount /proc /sys /dev /tmp; /dev/vda (ext4) at /cache
#   result NAME OK|FAIL [detail] print "RESULT NAME: OK" / "RESULT NAME: FAIL detail"
#   guest_poweroff               sync and power off at once (never returns)
# Put it in the initramfs with the make_initramfs.sh EXTRA
#   tests/fscache/qemu/guest_lib.sh:/lib/guest_lib.sh
# The host greps the console for RESULT lines; an init that exits instead of
# powering off panics the kernel (run_guest.sh then exits 3).

export PATH=/bin:/sbin:/usr/bin:/usr/sbin
export HOME=/root

guest_setup() {
  # The kernel mounts nothing for an initramfs root (DEVTMPFS_MOUNT only applies
  # to a disk root), so PID 1 does it all.
  mount -t proc proc /proc
  mount -t sysfs sysfs /sys
  mount -t devtmpfs dev /dev
  mount -t tmpfs -o mode=1777 tmp /tmp
  if [ -b /dev/vda ]; then
    mount -t ext4 /dev/vda /cache || echo "guest_setup: mounting /dev/vda on /cache failed" >&2
  fi
}

# One printf per line: a single write() keeps kernel messages from splitting it.
result() {
  _name=$1 _status=${2:-}
  # A failing 'shift 2' is a special-builtin error, which would kill PID 1.
  if [ $# -ge 2 ]; then shift 2; else shift $#; fi
  # Each on a line of its own: the console may still hold a partial line
  # (SeaBIOS's "Booting from ROM.." has no newline), and the host reads ^RESULT.
  case $_status in
    OK) printf '\nRESULT %s: OK\n' "$_name" ;;
    FAIL) printf '\nRESULT %s: FAIL%s\n' "$_name" "${*:+ $*}" ;;
    *) printf '\nRESULT %s: FAIL bad result status "%s" %s\n' "$_name" "$_status" "$*" ;;
  esac
}

guest_poweroff() {
  sync
  poweroff -f
  # Only reached if ACPI poweroff is unavailable: exiting PID 1 panics, and
  # panic=-1 with qemu -no-reboot still ends the VM.
  exit 1
}
