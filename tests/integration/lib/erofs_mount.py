#!/usr/bin/env python3
"""Mount/unmount EROFS images with mount(2)/umount2(2) directly (python3 stdlib only).

    erofs_mount.py mount IMG MNT [--device PATH ...] [--option OPT ...]
    erofs_mount.py umount MNT [--lazy]
    erofs_mount.py check            # exit 0 if the kernel has EROFS, else 1 (with reason)

The kernel (>= 6.12 with EROFS_FS_BACKED_BY_FILE) mounts an image *file* directly; no loop
device is involved (util-linux mount(8) would set one up). Extra devices (RAFS v6 data
blobs, i.e. the blob cache's <blob_id>.blob.data) are passed as "device=PATH" options in
blob-table order. The mount is always read-only (MS_RDONLY).
"""

import argparse
import ctypes
import ctypes.util
import errno
import os
import subprocess
import sys

MS_RDONLY = 1
MNT_DETACH = 2

MOUNT_HINTS = {
    errno.EPERM: "mounting needs root (CAP_SYS_ADMIN)",
    errno.ENODEV: "the kernel has no 'erofs' filesystem (modprobe erofs?)",
    errno.ENOTBLK: "the image file can't back a mount: it must live on a filesystem with "
                   "read_folio (ext4/xfs/btrfs; NOT tmpfs), and the kernel needs "
                   "EROFS_FS_BACKED_BY_FILE",
    errno.EINVAL: "bad superblock / unsupported feature / wrong device= list (see dmesg)",
    errno.EFSCORRUPTED if hasattr(errno, "EFSCORRUPTED") else 117: "corrupted image (see dmesg)",
    errno.ENOENT: "image, mount point or a device= path does not exist",
    errno.EBUSY: "mount point busy or already mounted",
    errno.EOPNOTSUPP: "unsupported EROFS feature (see dmesg)",
}
UMOUNT_HINTS = {
    errno.EINVAL: "not a mount point (not mounted?)",
    errno.EBUSY: "still in use (a process has its cwd or a file open below it); try --lazy",
    errno.EPERM: "unmounting needs root",
}


def libc():
    lib = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    lib.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong,
                          ctypes.c_char_p]
    lib.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
    return lib


def erofs_kernel_log():
    """erofs-related kernel log lines, if readable (best effort; [] otherwise)."""
    try:
        out = subprocess.run(["dmesg"], capture_output=True, text=True, timeout=5).stdout
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [line for line in out.splitlines() if "erofs" in line.lower()]


def fail(call, err, hints, log_before=None):
    name = errno.errorcode.get(err, "?")
    msg = f"erofs_mount: {call} failed: errno {err} ({name}): {os.strerror(err)}"
    if err in hints:
        msg += f"\n  hint: {hints[err]}"
    log = []
    if log_before is not None:
        log = erofs_kernel_log()
        log = log[len(log_before):] if log[:len(log_before)] == log_before else log[-5:]
    if log:
        msg += "\n  kernel log:\n    " + "\n    ".join(log)
    print(msg, file=sys.stderr)
    return 1


def have_erofs():
    try:
        with open("/proc/filesystems") as f:
            return any(line.split()[-1] == "erofs" for line in f if line.strip())
    except OSError:
        return False


def do_mount(img, mnt, devices, options):
    for path, what in [(img, "image"), (mnt, "mount point")] + [(d, "device") for d in devices]:
        if not os.path.exists(path):
            print(f"erofs_mount: {what} {path!r} does not exist", file=sys.stderr)
            return 1
    if not os.path.isdir(mnt):
        print(f"erofs_mount: mount point {mnt!r} is not a directory", file=sys.stderr)
        return 1
    opts = [f"device={os.path.abspath(d)}" for d in devices] + list(options)
    for d in devices:
        if "," in d:
            print(f"erofs_mount: device path {d!r} contains a comma", file=sys.stderr)
            return 1
    data = ",".join(opts)
    log_before = erofs_kernel_log()
    src = os.path.abspath(img)
    rc = libc().mount(src.encode(), os.path.abspath(mnt).encode(), b"erofs", MS_RDONLY,
                      data.encode() if data else None)
    if rc != 0:
        return fail(f"mount({src!r}, {mnt!r}, 'erofs', MS_RDONLY, {data!r})", ctypes.get_errno(),
                    MOUNT_HINTS, log_before)
    return 0


def do_umount(mnt, lazy):
    rc = libc().umount2(os.path.abspath(mnt).encode(), MNT_DETACH if lazy else 0)
    if rc != 0:
        return fail(f"umount2({mnt!r}{', MNT_DETACH' if lazy else ''})", ctypes.get_errno(),
                    UMOUNT_HINTS)
    return 0


def main():
    ap = argparse.ArgumentParser(description="mount/umount EROFS images via mount(2)")
    sub = ap.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("mount", help="mount IMG on MNT read-only")
    m.add_argument("img")
    m.add_argument("mnt")
    m.add_argument("--device", action="append", default=[], metavar="PATH",
                   help="extra device (blob), in blob-table order; repeatable")
    m.add_argument("--option", action="append", default=[], metavar="OPT",
                   help="extra mount option string, e.g. 'user_xattr'; repeatable")
    u = sub.add_parser("umount", help="unmount MNT")
    u.add_argument("mnt")
    u.add_argument("--lazy", action="store_true", help="MNT_DETACH")
    sub.add_parser("check", help="exit 0 if the running kernel lists erofs in /proc/filesystems")
    args = ap.parse_args()
    if args.cmd == "mount":
        return do_mount(args.img, args.mnt, args.device, args.option)
    if args.cmd == "umount":
        return do_umount(args.mnt, args.lazy)
    if have_erofs():
        return 0
    print("erofs_mount: 'erofs' not in /proc/filesystems", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
