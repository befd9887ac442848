#!/usr/bin/env python3
"""Compare two directory trees entry by entry (python3 stdlib only).

    compare_trees.py [options] A B
    compare_trees.py --self-test

Walks both trees without following symlinks (lstat) and compares, per relative path:
type, full st_mode, uid, gid, size (regular files and symlinks), mtime (seconds; with
--mtime-ns nanoseconds), symlink target, rdev (char/block devices), xattrs (names and
values, read without following symlinks), hardlink groups (the set of paths sharing an
inode must be the same set in both trees) and regular file content (SHA-256, read in
1 MiB pieces). Directory sizes and link counts are not compared (filesystem specific).

Prints every difference, one per line, and a summary "N entries compared, M differences".
Exit status: 0 if no differences, 1 if any, 2 on usage errors.
"""

import argparse
import hashlib
import os
import shutil
import stat
import subprocess
import sys
import tempfile

READ = 1 << 20


def show(rel):
    """Printable form of a relative path (bytes): escapes newlines and invalid UTF-8."""
    if rel == b"":
        return "/"
    s = rel.decode("utf-8", "backslashreplace")
    return "/" + "".join(c if c.isprintable() else repr(c)[1:-1] for c in s)


def type_name(mode):
    for test, name in ((stat.S_ISREG, "file"), (stat.S_ISDIR, "dir"), (stat.S_ISLNK, "symlink"),
                       (stat.S_ISCHR, "chardev"), (stat.S_ISBLK, "blockdev"),
                       (stat.S_ISFIFO, "fifo"), (stat.S_ISSOCK, "socket")):
        if test(mode):
            return name
    return f"unknown({stat.S_IFMT(mode):o})"


def walk(root):
    """Return {relpath(bytes): lstat} for every entry below root (root itself as b'')."""
    root = os.fsencode(root)
    entries = {b"": os.lstat(root)}
    stack = [b""]
    while stack:
        rel = stack.pop()
        path = os.path.join(root, rel) if rel else root
        try:
            with os.scandir(path) as it:
                names = [e.name for e in it]
        except OSError as e:
            raise SystemExit(f"compare_trees: cannot list {path!r}: {e}")
        for name in names:
            crel = os.path.join(rel, name) if rel else name
            st = os.lstat(os.path.join(root, crel))
            entries[crel] = st
            if stat.S_ISDIR(st.st_mode):
                stack.append(crel)
    return entries


def xattrs(path, ignore_prefixes):
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError as e:
        return {"<listxattr error>": str(e).encode()}
    out = {}
    for n in names:
        if any(n.startswith(p) for p in ignore_prefixes):
            continue
        try:
            out[n] = os.getxattr(path, n, follow_symlinks=False)
        except OSError as e:
            out[n] = f"<getxattr error: {e}>".encode()
    return out


def file_hash(path):
    h = hashlib.sha256()
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as e:
        return f"<open error: {os.strerror(e.errno)}>"
    try:
        while True:
            b = os.read(fd, READ)
            if not b:
                break
            h.update(b)
    except OSError as e:
        return f"<read error: {os.strerror(e.errno)}>"
    finally:
        os.close(fd)
    return h.hexdigest()


def first_diff_offset(pa, pb):
    with open(pa, "rb") as fa, open(pb, "rb") as fb:
        off = 0
        while True:
            a, b = fa.read(READ), fb.read(READ)
            if a != b:
                for i, (x, y) in enumerate(zip(a, b)):
                    if x != y:
                        return off + i
                return off + min(len(a), len(b))
            if not a:
                return None
            off += len(a)


def hardlink_groups(entries):
    """{rel: frozenset(rels sharing the inode)} for non-directories."""
    by_ino = {}
    for rel, st in entries.items():
        if not stat.S_ISDIR(st.st_mode):
            by_ino.setdefault((st.st_dev, st.st_ino), []).append(rel)
    groups = {}
    for rels in by_ino.values():
        g = frozenset(rels)
        for r in rels:
            groups[r] = g
    return groups


def fmt_time(ns):
    return f"{ns // 10**9}.{ns % 10**9:09d}"


def compare(a, b, opts, out=print):
    ea, eb = walk(a), walk(b)
    diffs = 0

    def diff(rel, what):
        nonlocal diffs
        diffs += 1
        out(f"DIFF {show(rel)}: {what}")

    excluded = [os.fsencode(x.strip("/")) for x in opts.exclude]

    def is_excluded(rel):
        return any(rel == x or rel.startswith(x + b"/") for x in excluded)

    only_a = sorted(r for r in ea.keys() - eb.keys() if not is_excluded(r))
    only_b = sorted(r for r in eb.keys() - ea.keys() if not is_excluded(r))
    for r in only_a:
        diff(r, f"only in A ({type_name(ea[r].st_mode)})")
    for r in only_b:
        diff(r, f"only in B ({type_name(eb[r].st_mode)})")

    ga, gb = hardlink_groups(ea), hardlink_groups(eb)
    common = sorted(r for r in ea.keys() & eb.keys() if not is_excluded(r))
    ba, bb = os.fsencode(a), os.fsencode(b)
    for rel in common:
        sa, sb = ea[rel], eb[rel]
        pa = os.path.join(ba, rel) if rel else ba
        pb = os.path.join(bb, rel) if rel else bb
        ta, tb = stat.S_IFMT(sa.st_mode), stat.S_IFMT(sb.st_mode)
        if ta != tb:
            diff(rel, f"type {type_name(sa.st_mode)} != {type_name(sb.st_mode)}")
            continue
        is_root = rel == b""
        if not (is_root and opts.ignore_root_attrs) and not opts.no_mode:
            if sa.st_mode != sb.st_mode:
                diff(rel, f"mode {sa.st_mode:o} != {sb.st_mode:o}")
        if not (is_root and opts.ignore_root_attrs) and not opts.no_owner:
            if sa.st_uid != sb.st_uid:
                diff(rel, f"uid {sa.st_uid} != {sb.st_uid}")
            if sa.st_gid != sb.st_gid:
                diff(rel, f"gid {sa.st_gid} != {sb.st_gid}")
        skip_mtime = (opts.no_mtime or (is_root and (opts.ignore_root_mtime or opts.ignore_root_attrs))
                      or (opts.ignore_symlink_mtime and stat.S_ISLNK(sa.st_mode))
                      or (opts.ignore_dir_mtime and stat.S_ISDIR(sa.st_mode)))
        if not skip_mtime:
            if opts.mtime_ns:
                if sa.st_mtime_ns != sb.st_mtime_ns:
                    diff(rel, f"mtime {fmt_time(sa.st_mtime_ns)} != {fmt_time(sb.st_mtime_ns)}")
            elif sa.st_mtime_ns // 10**9 != sb.st_mtime_ns // 10**9:
                diff(rel, f"mtime {sa.st_mtime_ns // 10**9} != {sb.st_mtime_ns // 10**9}")
        if stat.S_ISREG(sa.st_mode) or stat.S_ISLNK(sa.st_mode):
            if sa.st_size != sb.st_size:
                diff(rel, f"size {sa.st_size} != {sb.st_size}")
        if stat.S_ISLNK(sa.st_mode):
            la, lb = os.readlink(pa), os.readlink(pb)
            if la != lb:
                diff(rel, f"symlink target {la[:80]!r}{'...' if len(la) > 80 else ''} != "
                          f"{lb[:80]!r}{'...' if len(lb) > 80 else ''}")
        if stat.S_ISCHR(sa.st_mode) or stat.S_ISBLK(sa.st_mode):
            if sa.st_rdev != sb.st_rdev:
                diff(rel, f"rdev {os.major(sa.st_rdev)}:{os.minor(sa.st_rdev)} != "
                          f"{os.major(sb.st_rdev)}:{os.minor(sb.st_rdev)}")
        if not opts.no_xattr and not (is_root and opts.ignore_root_attrs):
            xa, xb = xattrs(pa, opts.ignore_xattr), xattrs(pb, opts.ignore_xattr)
            for n in sorted(xa.keys() - xb.keys()):
                diff(rel, f"xattr {n} only in A")
            for n in sorted(xb.keys() - xa.keys()):
                diff(rel, f"xattr {n} only in B")
            for n in sorted(xa.keys() & xb.keys()):
                if xa[n] != xb[n]:
                    diff(rel, f"xattr {n} value differs ({len(xa[n])} vs {len(xb[n])} bytes: "
                              f"{xa[n][:40]!r} vs {xb[n][:40]!r})")
        if not opts.no_hardlinks and not stat.S_ISDIR(sa.st_mode):
            g1 = {r for r in ga[rel] if not is_excluded(r)}
            g2 = {r for r in gb[rel] if not is_excluded(r)}
            if g1 != g2:
                diff(rel, "hardlink group {" + ", ".join(show(r) for r in sorted(g1)) + "} != {"
                     + ", ".join(show(r) for r in sorted(g2)) + "}")
        if stat.S_ISREG(sa.st_mode) and sa.st_size == sb.st_size and not opts.no_content:
            ha, hb = file_hash(pa), file_hash(pb)
            if ha != hb:
                where = ""
                if not ha.startswith("<") and not hb.startswith("<"):
                    where = f", first difference at byte {first_diff_offset(pa, pb)}"
                diff(rel, f"content sha256 {ha[:16]} != {hb[:16]}{where}")
    n = len(common) + len(only_a) + len(only_b)
    out(f"{n} entries compared, {diffs} differences")
    return diffs


def parser():
    ap = argparse.ArgumentParser(description="Compare two directory trees (metadata + content).")
    ap.add_argument("a", nargs="?")
    ap.add_argument("b", nargs="?")
    ap.add_argument("--mtime-ns", action="store_true", help="compare mtimes to the nanosecond")
    ap.add_argument("--no-mtime", action="store_true", help="don't compare mtimes")
    ap.add_argument("--ignore-root-mtime", action="store_true",
                    help="don't compare the mtime of the top directory (upstream forces it to 0)")
    ap.add_argument("--ignore-root-attrs", action="store_true",
                    help="don't compare mode/owner/mtime/xattrs of the top directory")
    ap.add_argument("--ignore-dir-mtime", action="store_true", help="don't compare directory mtimes")
    ap.add_argument("--ignore-symlink-mtime", action="store_true",
                    help="don't compare symlink mtimes")
    ap.add_argument("--no-owner", action="store_true", help="don't compare uid/gid")
    ap.add_argument("--no-mode", action="store_true", help="don't compare st_mode")
    ap.add_argument("--no-xattr", action="store_true", help="don't compare xattrs")
    ap.add_argument("--ignore-xattr", action="append", default=[], metavar="PREFIX",
                    help="ignore xattrs whose name starts with PREFIX (e.g. security.); repeatable")
    ap.add_argument("--no-hardlinks", action="store_true", help="don't compare hardlink groups")
    ap.add_argument("--no-content", action="store_true", help="don't hash file contents")
    ap.add_argument("--exclude", action="append", default=[], metavar="RELPATH",
                    help="skip this path (relative to the tree tops) and everything below; repeatable")
    ap.add_argument("-q", "--quiet", action="store_true", help="print only the summary line")
    ap.add_argument("--self-test", action="store_true",
                    help="check that this script detects each kind of difference")
    return ap


def self_test():
    """Build a small tree, copy it, mutate one attribute at a time, expect a difference."""
    ok = True
    root = os.geteuid() == 0
    tmp = tempfile.mkdtemp(prefix="compare_trees_selftest.")
    try:
        base = os.path.join(tmp, "base")
        os.mkdir(base)
        with open(os.path.join(base, "f"), "wb") as f:
            f.write(b"x" * 5000)
        with open(os.path.join(base, "g"), "wb") as f:
            f.write(b"y" * 10)
        os.link(os.path.join(base, "f"), os.path.join(base, "f-link"))
        os.symlink("f", os.path.join(base, "s"))
        os.mkdir(os.path.join(base, "d"))
        os.mkfifo(os.path.join(base, "d", "p"))
        with open(os.path.join(base, "new\nline"), "wb") as f:
            f.write(b"z")
        try:
            os.setxattr(os.path.join(base, "g"), "user.k", b"v")
            have_xattr = True
        except OSError:
            have_xattr = False
        if root:
            os.mknod(os.path.join(base, "d", "c"), stat.S_IFCHR | 0o600, os.makedev(1, 3))
        os.utime(os.path.join(base, "g"), ns=(10**9 * 1000 + 5, 10**9 * 1000 + 5))

        def clone(name):
            dst = os.path.join(tmp, name)
            # cp -a keeps hardlinks, xattrs, nanosecond mtimes, devices
            subprocess.run(["cp", "-a", "--", base, dst], check=True)
            return dst

        def p(t, rel):
            return os.path.join(t, rel)

        mutations = [
            ("identical", None, {}),
            ("mode", lambda t: os.chmod(p(t, "g"), 0o600), {}),
            ("content same size", lambda t: open(p(t, "f"), "r+b").write(b"X"), {}),
            ("size", lambda t: open(p(t, "g"), "ab").write(b"!"), {}),
            ("mtime s", lambda t: os.utime(p(t, "g"), ns=(10**9 * 1001 + 5, 10**9 * 1001 + 5)), {}),
            ("mtime ns", lambda t: os.utime(p(t, "g"), ns=(10**9 * 1000 + 6, 10**9 * 1000 + 6)),
             {"mtime_ns": True}),
            ("symlink target", lambda t: (os.unlink(p(t, "s")), os.symlink("g", p(t, "s"))), {}),
            ("extra file", lambda t: open(p(t, "d/extra"), "w").close(), {}),
            ("missing file", lambda t: os.unlink(p(t, "d/p")), {}),
            ("type", lambda t: (os.unlink(p(t, "d/p")), open(p(t, "d/p"), "w").close()), {}),
            ("hardlink broken", lambda t: (os.unlink(p(t, "f-link")),
                                           shutil.copy2(p(t, "f"), p(t, "f-link"))), {}),
            ("hardlink added", lambda t: (os.unlink(p(t, "g")), os.link(p(t, "f"), p(t, "g"))), {}),
            ("newline name content", lambda t: open(p(t, "new\nline"), "wb").write(b"Z"), {}),
        ]
        if have_xattr:
            mutations += [
                ("xattr value", lambda t: os.setxattr(p(t, "g"), "user.k", b"w"), {}),
                ("xattr removed", lambda t: os.removexattr(p(t, "g"), "user.k"), {}),
                ("xattr added", lambda t: os.setxattr(p(t, "f"), "user.new", b""), {}),
            ]
        if root:
            mutations += [
                ("uid", lambda t: os.chown(p(t, "g"), 12345, -1), {}),
                ("gid", lambda t: os.chown(p(t, "g"), -1, 12345), {}),
                ("rdev", lambda t: (os.unlink(p(t, "d/c")),
                                    os.mknod(p(t, "d/c"), stat.S_IFCHR | 0o600, os.makedev(1, 5))), {}),
            ]
        for i, (name, mutate, extra) in enumerate(mutations):
            t = clone(f"t{i}")
            if mutate:
                mutate(t)
            opts = parser().parse_args([base, t])
            for k, v in extra.items():
                setattr(opts, k, v)
            lines = []
            n = compare(base, t, opts, out=lines.append)
            expect_diff = mutate is not None
            good = (n > 0) == expect_diff
            ok &= good
            print(f"{'PASS' if good else 'FAIL'} self-test {name}: {n} differences"
                  + ("" if good else "\n    " + "\n    ".join(lines)))
        # ignore options must actually ignore
        t = clone("ign")
        os.chmod(t, 0o700)
        os.utime(t, ns=(0, 0))
        n = compare(base, t, parser().parse_args([base, t, "--ignore-root-attrs"]), out=lambda s: None)
        good = n == 0
        ok &= good
        print(f"{'PASS' if good else 'FAIL'} self-test --ignore-root-attrs: {n} differences")
        if have_xattr:
            os.setxattr(os.path.join(t, "g"), "user.k", b"other")
            n = compare(base, t, parser().parse_args(
                [base, t, "--ignore-root-attrs", "--ignore-xattr", "user."]), out=lambda s: None)
            good = n == 0
            ok &= good
            print(f"{'PASS' if good else 'FAIL'} self-test --ignore-xattr user.: {n} differences")
    finally:
        subprocess.run(["chmod", "-R", "u+rwx", tmp])
        shutil.rmtree(tmp, ignore_errors=True)
    print("self-test " + ("passed" if ok else "FAILED"))
    return 0 if ok else 1


def main():
    ap = parser()
    opts = ap.parse_args()
    if opts.self_test:
        return self_test()
    if not opts.a or not opts.b:
        ap.error("need two directories A and B (or --self-test)")
    for d in (opts.a, opts.b):
        if not os.path.isdir(d):
            ap.error(f"{d} is not a directory")
    out = print
    if opts.quiet:
        def out(s):
            if not s.startswith("DIFF"):
                print(s)
    return 1 if compare(opts.a, opts.b, opts, out=out) else 0


if __name__ == "__main__":
    sys.exit(main())
