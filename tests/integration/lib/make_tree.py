#!/usr/bin/env python3
"""Create an awkward source tree for image round-trip tests (python3 stdlib only).

    make_tree.py DEST [--chunk-size N] [--sparse-size N] [--small] [--with-socket]
                      [--no-invalid-utf8] [--strict] [--seed N]

DEST must not exist or be an empty directory. Contents are deterministic for a given
seed (except things the kernel decides, like inode numbers and ctime).

What it makes (all relative to DEST):
  sizes/        regular files of 0, 1, 4095, 4096, 4097, chunk-1, chunk, chunk+1,
                2*chunk+1 bytes (random = incompressible) plus compressible text files
  sparse/       a sparse file of --sparse-size bytes (default 100 MiB + 12345) with a few
                data regions, rest holes; plus an all-hole file
  dup/          identical files (whole-file dedup) and files sharing only some chunks
  hardlinks/    a group of 3 links (one of them in another directory) + a pair
  symlinks/     relative, absolute, to a directory, dangling, 4095-byte target
  bigdir/       3000 entries
  names/        255-byte names (ASCII and UTF-8), spaces, newline, tab, UTF-8, leading
                dash, non-UTF-8 bytes (unless --no-invalid-utf8)
  deep/         a 60-level-deep path
  modes/        setuid, setgid, sticky, 000, 777, 4777... files and dirs
  owners/       uids/gids 0, 1, 65534, 65535, 65536, 100000, 2^31 (needs root)
  times/        mtimes 0, 2^31+10 (past 2038), year 2100, with nanoseconds
  xattrs/       user./trusted./security. xattrs, one inode with 50 xattrs of 1000 bytes,
                empty values, binary values, xattrs on dirs/symlinks(trusted)/devices
  special/      char + block devices (incl. large major/minor), fifos, optional socket
  empty-dir/    an empty directory

Anything the running user/filesystem can't do (mknod/chown/trusted.* without root, big
xattrs on ext4) is skipped with a warning on stderr; --strict turns skips into failure.
Prints a one-line summary at the end.
"""

import argparse
import errno
import os
import random
import socket
import stat
import sys

MiB = 1 << 20

warnings = []
counts = {"files": 0, "dirs": 0, "symlinks": 0, "special": 0, "xattrs": 0}


def warn(msg):
    warnings.append(msg)
    print(f"make_tree: warning: {msg}", file=sys.stderr)


def try_op(what, fn, *args, **kw):
    """Run a privileged/filesystem-dependent operation; warn instead of failing."""
    try:
        fn(*args, **kw)
        return True
    except OSError as e:
        warn(f"{what}: {os.strerror(e.errno)} ({errno.errorcode.get(e.errno, e.errno)})")
        return False


class Maker:
    def __init__(self, root, rng):
        self.root = root
        self.rng = rng
        self.dir_times = []  # (path, ns) applied deepest-first at the end

    def p(self, rel):
        return os.path.join(self.root, rel)

    def data(self, n):
        return self.rng.randbytes(n)

    def mkdir(self, rel, mode=0o755):
        path = self.p(rel)
        os.mkdir(path)
        os.chmod(path, mode)
        counts["dirs"] += 1
        return path

    def file(self, rel, content=b"", mode=0o644):
        path = self.p(rel)
        with open(path, "wb") as f:
            f.write(content)
        os.chmod(path, mode)
        counts["files"] += 1
        return path

    def symlink(self, target, rel):
        os.symlink(target, self.p(rel))
        counts["symlinks"] += 1
        return self.p(rel)

    def xattr(self, path, name, value):
        if try_op(f"setxattr {name} ({len(value)} bytes) on {os.path.relpath(path, self.root)!r}",
                  os.setxattr, path, name, value, follow_symlinks=False):
            counts["xattrs"] += 1


def build(m, args):
    chunk = args.chunk_size
    rng = m.rng

    # --- sizes --------------------------------------------------------------------------
    m.mkdir("sizes")
    sizes = [0, 1, 4095, 4096, 4097, chunk - 1, chunk, chunk + 1]
    if not args.small:
        sizes.append(2 * chunk + 1)
    for n in sorted(set(sizes)):
        m.file(f"sizes/rand-{n}", m.data(n))
    text = b"".join(b"line %06d: the quick brown fox jumps over the lazy dog\n" % i
                    for i in range(40000 if not args.small else 2000))
    m.file("sizes/text-compressible", text)
    m.file("sizes/zeros-chunk+7", bytes(chunk + 7))
    m.file("sizes/mixed-half-zero", bytes(chunk // 2) + m.data(chunk // 2 + 100))

    # --- sparse -------------------------------------------------------------------------
    m.mkdir("sparse")
    path = m.file("sparse/big-sparse")
    size = args.sparse_size
    regions = [(0, 4096 + 3), (33 * MiB + 17, 70000), (size // 2 + 4096, chunk + 5),
               (size - 5000, 5000)]
    with open(path, "r+b") as f:
        f.truncate(size)
        for off, n in regions:
            if off + n <= size:
                os.pwrite(f.fileno(), m.data(n), off)
    path = m.file("sparse/all-hole")
    os.truncate(path, 3 * chunk + 1)

    # --- duplicates ---------------------------------------------------------------------
    m.mkdir("dup")
    m.mkdir("dup/sub")
    blob = m.data(chunk + chunk // 2)
    for rel in ("dup/a", "dup/b", "dup/sub/c"):
        m.file(rel, blob)
    small = m.data(3000)
    m.file("dup/small-1", small)
    m.file("dup/small-2", small)
    first_chunk = blob[:chunk]
    m.file("dup/shares-first-chunk", first_chunk + m.data(1234))
    m.file("dup/empty-1", b"")
    m.file("dup/empty-2", b"")

    # --- hardlinks ----------------------------------------------------------------------
    m.mkdir("hardlinks")
    m.mkdir("hardlinks/other")
    h = m.file("hardlinks/h1", m.data(10000), mode=0o640)
    m.xattr(h, "user.on-hardlink", b"shared by all three names")
    os.link(h, m.p("hardlinks/h2"))
    os.link(h, m.p("hardlinks/other/h3"))
    e = m.file("hardlinks/empty-a", b"")
    os.link(e, m.p("hardlinks/empty-b"))
    s = m.symlink("h1", "hardlinks/sym")
    try_op("hardlink to symlink", os.link, s, m.p("hardlinks/sym-link2"), follow_symlinks=False)

    # --- symlinks -----------------------------------------------------------------------
    m.mkdir("symlinks")
    m.symlink("../sizes/rand-1", "symlinks/relative")
    m.symlink("/etc/hostname", "symlinks/absolute")
    m.symlink("../dup", "symlinks/to-dir")
    m.symlink("does/not/exist", "symlinks/dangling")
    m.symlink("/nonexistent-" + "x" * 30, "symlinks/dangling-absolute")
    m.symlink(".", "symlinks/self-dot")
    m.symlink("loop-b", "symlinks/loop-a")
    m.symlink("loop-a", "symlinks/loop-b")
    long_target = "/".join(["y" * 254] * 16)  # 16*254 + 15 = 4079
    long_target = (long_target + "/" + "z" * 4095)[:4095]
    assert len(long_target) == 4095
    m.symlink(long_target, "symlinks/target-4095")
    m.symlink("ünïcödé-target ✓", "symlinks/utf8-target")
    m.symlink("a" * 60, "symlinks/target-60")  # fits in erofs inline tail

    # --- big directory ------------------------------------------------------------------
    m.mkdir("bigdir")
    nbig = 3000 if not args.small else 300
    for i in range(nbig):
        kind = i % 10
        if kind == 0:
            m.symlink(f"entry-{i - 1:05d}", f"bigdir/link-{i:05d}")
        elif kind == 1:
            m.mkdir(f"bigdir/dir-{i:05d}")
        else:
            m.file(f"bigdir/entry-{i:05d}" + "-" * (i % 37), m.data(i % 7))

    # --- names --------------------------------------------------------------------------
    m.mkdir("names")
    m.file("names/" + "n" * 255, b"255 ascii")
    utf = "名" * 85  # 3 bytes each = 255 bytes
    assert len(utf.encode()) == 255
    m.file("names/" + utf, b"255 bytes utf-8")
    m.mkdir("names/" + "D" * 255)
    m.file("names/" + "D" * 255 + "/" + "f" * 255, b"nested long names")
    for name in ["with space", " leading space", "trailing space ", "new\nline", "tab\tchar",
                 "-leading-dash", "ünïcödé ✓ 日本語 😀", "quote'\"back\\slash", "star*?[]",
                 "percent%s%n", ".hidden", "..dots", "...", "#hash", "~tilde", "a:b;c,d=e"]:
        m.file("names/" + name, name.encode())
    if not args.no_invalid_utf8:
        bad = os.fsencode(m.p("names")) + b"/latin1-\xe9\xff\xfe"
        with open(bad, "wb") as f:
            f.write(b"non-utf8 name")
        os.chmod(bad, 0o644)
        counts["files"] += 1

    # --- deep ---------------------------------------------------------------------------
    rel = "deep"
    m.mkdir(rel)
    for i in range(60):
        rel += f"/d{i:02d}"
        m.mkdir(rel)
    m.file(rel + "/bottom", b"60 levels down\n")
    m.symlink("../" * 61 + "sizes/rand-1", rel + "/up-link")

    # --- modes --------------------------------------------------------------------------
    m.mkdir("modes")
    for mode in (0o4755, 0o2755, 0o6755, 0o4777, 0o1777, 0o000, 0o777, 0o400, 0o111, 0o7777,
                 0o2710, 0o4000):
        path = m.file(f"modes/file-{mode:04o}", b"mode %o\n" % mode)
        os.chmod(path, mode)
    for mode in (0o1777, 0o2775, 0o700, 0o000, 0o555, 0o3770):
        m.mkdir(f"modes/dir-{mode:04o}", mode=0o755)  # chmod after filling
        m.file(f"modes/dir-{mode:04o}/inside", b"x")
        os.chmod(m.p(f"modes/dir-{mode:04o}"), mode)

    # --- owners -------------------------------------------------------------------------
    m.mkdir("owners")
    for uid, gid in [(0, 0), (1, 1), (1000, 100), (65534, 65534), (65535, 65535),
                     (65536, 65537), (100000, 200000), (2 ** 31, 2 ** 31 + 1),
                     (4294967294, 4294967293)]:
        path = m.file(f"owners/u{uid}-g{gid}", b"%d:%d\n" % (uid, gid))
        try_op(f"chown {uid}:{gid}", os.chown, path, uid, gid)
    path = m.mkdir("owners/dir-u70000")
    try_op("chown dir", os.chown, path, 70000, 70001)
    path = m.symlink("u0-g0", "owners/symlink-u80000")
    try_op("lchown symlink", os.chown, path, 80000, 80001, follow_symlinks=False)
    path = m.file("owners/setuid-u66000", b"suid+big uid")
    if try_op("chown", os.chown, path, 66000, 66001):
        os.chmod(path, 0o6755)  # chown clears setuid: set it afterwards

    # --- times --------------------------------------------------------------------------
    m.mkdir("times")
    times = {"epoch-0": 0, "past-2038": (2 ** 31 + 10) * 10 ** 9,
             "year-2100": 4102444800 * 10 ** 9 + 123456789,
             "ns-999999999": 1700000000 * 10 ** 9 + 999999999,
             "ns-1": 1600000000 * 10 ** 9 + 1, "pre-epoch": -(86400 * 365) * 10 ** 9}
    for name, ns in times.items():
        path = m.file(f"times/{name}", name.encode())
        try_op(f"utime {name}", os.utime, path, ns=(ns, ns))
    path = m.symlink("epoch-0", "times/symlink-2100")
    os.utime(path, ns=(4102444800 * 10 ** 9 + 5, 4102444800 * 10 ** 9 + 5),
             follow_symlinks=False)
    m.mkdir("times/dir-epoch-0")
    m.dir_times.append(("times/dir-epoch-0", 0))
    m.mkdir("times/dir-2100")
    m.dir_times.append(("times/dir-2100", 4102444800 * 10 ** 9 + 42))

    # --- xattrs -------------------------------------------------------------------------
    m.mkdir("xattrs")
    path = m.file("xattrs/fifty", b"50 xattrs of 1000 bytes")
    for i in range(50):
        prefix = ("user.", "trusted.", "security.")[i % 3]
        m.xattr(path, f"{prefix}big.{i:02d}", bytes([i]) * 500 + m.data(500))
    path = m.file("xattrs/mixed", b"mixed")
    m.xattr(path, "user.empty", b"")
    m.xattr(path, "user.binary", bytes(range(256)))
    m.xattr(path, "user.utf8-ключ", "значение".encode())
    m.xattr(path, "user." + "k" * 240, b"long name")
    m.xattr(path, "trusted.overlay.opaque", b"y")
    m.xattr(path, "security.selinux-like", b"system_u:object_r:test_t:s0\0")
    m.xattr(path, "security.capability",
            bytes.fromhex("0000000200200000000000000000000000000000"))  # cap_net_raw
    path = m.mkdir("xattrs/dir-with-xattrs")
    m.xattr(path, "user.dir", b"on a directory")
    m.xattr(path, "trusted.dir", b"trusted on a directory")
    path = m.symlink("mixed", "xattrs/symlink")
    m.xattr(path, "trusted.on-symlink", b"symlinks take trusted.* but not user.*")
    for i in range(5):
        path = m.file(f"xattrs/shared-{i}", b"same xattrs")
        m.xattr(path, "user.shared", b"identical value on 5 inodes")
        m.xattr(path, "security.shared", b"also identical")

    # --- special files ------------------------------------------------------------------
    m.mkdir("special")
    for name, kind, major, minor in [("null-like", stat.S_IFCHR, 1, 3),
                                     ("chr-big", stat.S_IFCHR, 511, 65536 + 7),
                                     ("blk-sda", stat.S_IFBLK, 8, 0),
                                     ("blk-big", stat.S_IFBLK, 259, 131071),
                                     ("chr-0-0", stat.S_IFCHR, 0, 0)]:
        if try_op(f"mknod {name}", os.mknod, m.p(f"special/{name}"), kind | 0o640,
                  os.makedev(major, minor)):
            counts["special"] += 1
    if os.path.exists(m.p("special/null-like")):
        m.xattr(m.p("special/null-like"), "trusted.dev", b"xattr on a device")
    os.mkfifo(m.p("special/fifo"), 0o600)
    os.mkfifo(m.p("special/fifo-2"), 0o644)
    counts["special"] += 2
    m.xattr(m.p("special/fifo"), "trusted.fifo", b"xattr on a fifo")
    if args.with_socket:
        s = socket.socket(socket.AF_UNIX)
        s.bind(m.p("special/sock"))
        s.close()
        counts["special"] += 1

    # --- misc ---------------------------------------------------------------------------
    m.mkdir("empty-dir")
    m.mkdir("empty-dir-0700", mode=0o700)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("dest")
    ap.add_argument("--chunk-size", type=lambda s: int(s, 0), default=MiB)
    ap.add_argument("--sparse-size", type=lambda s: int(s, 0), default=100 * MiB + 12345)
    ap.add_argument("--small", action="store_true",
                    help="fewer/smaller entries (300-entry dir, 1 MiB sparse file) for quick runs")
    ap.add_argument("--with-socket", action="store_true",
                    help="also create a unix socket (tar can't carry it)")
    ap.add_argument("--no-invalid-utf8", action="store_true",
                    help="don't create a file whose name is not valid UTF-8")
    ap.add_argument("--strict", action="store_true", help="fail if anything had to be skipped")
    ap.add_argument("--seed", type=int, default=20240601)
    args = ap.parse_args()
    if args.small and args.sparse_size == 100 * MiB + 12345:
        args.sparse_size = MiB + 12345
    if args.chunk_size < 4096 or args.chunk_size & (args.chunk_size - 1):
        ap.error("--chunk-size must be a power of two >= 4096")

    os.makedirs(args.dest, exist_ok=True)
    if os.listdir(args.dest):
        ap.error(f"{args.dest} is not empty")
    root = os.path.abspath(args.dest)
    os.umask(0)
    m = Maker(root, random.Random(args.seed))
    build(m, args)

    # Directory mtimes last (creating children changes them), deepest first.
    for rel, ns in sorted(m.dir_times, key=lambda t: -t[0].count("/")):
        os.utime(m.p(rel), ns=(ns, ns))
    os.chmod(root, 0o755)
    os.utime(root, ns=(1234567890 * 10 ** 9 + 5, 1234567890 * 10 ** 9 + 5))

    print(f"make_tree: {root}: {counts['files']} files, {counts['dirs']} dirs, "
          f"{counts['symlinks']} symlinks, {counts['special']} special, "
          f"{counts['xattrs']} xattrs, {len(warnings)} skipped")
    if args.strict and warnings:
        print("make_tree: --strict and some things were skipped", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
