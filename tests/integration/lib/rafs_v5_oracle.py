#!/usr/bin/env python3
"""Independent reader of RAFS v5 bootstraps, for tests/integration/rafs_v5.sh.

Written from upstream's layout (rafs/src/metadata/layout/v5.rs), sharing no
code with the C++ reader. Its own correctness is anchored by upstream: every
inode's digest recorded by upstream's builder (sha256 or blake3 of its chunk
digests / symlink target / children's digests) must match (`digests`).

  rafs_v5_oracle.py digests BOOT
      recompute every inode digest, up to the root
  rafs_v5_oracle.py mount BOOT MNT
      the mounted tree must match the bootstrap: names, types, modes, owners,
      sizes, mtimes, link targets, hard links (one st_ino), and every chunk of
      every file read from MNT must hash to the digest the bootstrap records
  rafs_v5_oracle.py result MNT RESULT
      MNT against upstream's `.result` (tree -J listing + md5sum of each file)
"""
import hashlib
import json
import os
import struct
import subprocess
import sys

SB = struct.Struct("<IIIIQQQQQIIIIQ")
INODE = struct.Struct("<32sQQIIIIQQQIIIHHIIQ8s")
CHUNK = struct.Struct("<32sIIIIQQQII")
S_IFMT, S_IFDIR, S_IFREG, S_IFLNK = 0o170000, 0o040000, 0o100000, 0o120000


def align8(n):
    return (n + 7) & ~7


def hasher(flags):
    if flags & 0x8:
        return lambda b: hashlib.sha256(b).digest()
    if flags & 0x4:
        # Debian's b3sum (scripts/setup.sh); Python has no blake3.
        return lambda b: bytes.fromhex(
            subprocess.run(["b3sum", "--no-names"], input=b, check=True, capture_output=True).stdout.split()[0].decode())
    raise SystemExit(f"no digest flag in {flags:#x}")


class Image:
    def __init__(self, path):
        d = self.d = open(path, "rb").read()
        (magic, ver, sbsize, self.chunk_size, self.flags, _inodes, itoff, _pfoff, _btoff, self.entries,
         _pfent, _btsz, _extent, _extoff) = SB.unpack_from(d, 0)
        assert magic == 0x52414653 and ver == 0x500 and sbsize == 8192, "not RAFS v5"
        self.table = struct.unpack_from(f"<{self.entries}I", d, itoff)
        self.hash = hasher(self.flags)

    def inode(self, index):
        off = self.table[index - 1] << 3
        f = INODE.unpack_from(self.d, off)
        n = dict(zip(["digest", "parent", "ino", "uid", "gid", "projid", "mode", "size", "blocks", "flags", "nlink",
                      "child_index", "child_count", "name_size", "symlink_size", "rdev", "mtime_nsec", "mtime",
                      "reserved"], f))
        p = off + INODE.size
        n["name"] = self.d[p:p + n["name_size"]]
        p += align8(n["name_size"])
        n["target"] = self.d[p:p + n["symlink_size"]]
        p += align8(n["symlink_size"])
        if n["flags"] & 0x4:  # xattrs: u64 size, then the pairs
            (size,) = struct.unpack_from("<Q", self.d, p)
            p += 8 + align8(size)
        n["chunks"] = []
        if n["mode"] & S_IFMT == S_IFREG:
            for k in range(n["child_count"]):
                c = CHUNK.unpack_from(self.d, p + k * CHUNK.size)
                n["chunks"].append(dict(zip(["digest", "blob", "flags", "csize", "usize", "coff", "uoff", "foff",
                                             "index", "crc"], c)))
        return n

    def walk(self):
        """(path, inode) depth first from the root (index 1)."""
        out = []
        stack = [(1, "/")]
        while stack:
            index, path = stack.pop()
            n = self.inode(index)
            n["index"] = index
            out.append((path, n))
            if n["mode"] & S_IFMT == S_IFDIR:
                for c in range(n["child_index"] + n["child_count"] - 1, n["child_index"] - 1, -1):
                    name = self.inode(c)["name"].decode()
                    stack.append((c, (path.rstrip("/")) + "/" + name))
        return out

    def digest_of(self, index, seen):
        """Upstream's rule (rafsv5_validate_inode): files hash their chunk
        digests, symlinks their target, directories their children's digests."""
        n = self.inode(index)
        t = n["mode"] & S_IFMT
        if t == S_IFREG:
            calc = self.hash(b"".join(c["digest"] for c in n["chunks"]))
        elif t == S_IFLNK:
            calc = self.hash(n["target"])
        elif t == S_IFDIR:
            parts = []
            for c in range(n["child_index"], n["child_index"] + n["child_count"]):
                parts.append(self.digest_of(c, seen))
            calc = self.hash(b"".join(parts))
        else:
            calc = self.hash(b"")
        seen.append((index, calc == n["digest"], n["name"]))
        return n["digest"]


def cmd_digests(boot):
    img = Image(boot)
    seen = []
    img.digest_of(1, seen)
    bad = [s for s in seen if not s[1]]
    for index, _, name in bad:
        print(f"inode {index} {name!r}: digest mismatch")
    print(f"{len(seen)} inode digests recomputed, {len(bad)} mismatches")
    return 1 if bad or len(seen) != img.entries else 0


def cmd_mount(boot, mnt):
    img = Image(boot)
    bad = 0
    chunks = 0
    ino_of = {}
    listed = set()

    def err(msg):
        nonlocal bad
        bad += 1
        print(msg)

    for path, n in img.walk():
        listed.add(path)
        p = os.path.join(mnt, path.lstrip("/"))
        try:
            st = os.lstat(p)
        except OSError as e:
            err(f"{path}: {e}")
            continue
        want = {"mode": n["mode"], "uid": n["uid"], "gid": n["gid"]}
        got = {"mode": st.st_mode, "uid": st.st_uid, "gid": st.st_gid}
        if path != "/":
            want["mtime_ns"] = n["mtime"] * 10**9 + n["mtime_nsec"]
            got["mtime_ns"] = st.st_mtime_ns
        t = n["mode"] & S_IFMT
        if t == S_IFREG:
            want["size"], got["size"] = n["size"], st.st_size
            want["nlink"], got["nlink"] = n["nlink"], st.st_nlink
            # One upstream inode number, one inode in the mount.
            if ino_of.setdefault(n["ino"], st.st_ino) != st.st_ino:
                err(f"{path}: hard link of ino {n['ino']} has st_ino {st.st_ino}, another name has {ino_of[n['ino']]}")
            try:
                with open(p, "rb") as f:
                    data = f.read()
            except OSError as e:
                err(f"{path}: read: {e}")
                continue
            if len(data) != n["size"]:
                err(f"{path}: read {len(data)} bytes, size {n['size']}")
            for k, c in enumerate(n["chunks"]):
                chunks += 1
                piece = data[c["foff"]:c["foff"] + c["usize"]]
                if img.hash(piece) != c["digest"]:
                    err(f"{path}: chunk {k} (file offset {c['foff']}, {c['usize']} bytes) digest mismatch")
        elif t == S_IFLNK:
            target = os.readlink(p).encode()
            if target != n["target"]:
                err(f"{path}: link target {target!r}, bootstrap has {n['target']!r}")
        for k in want:
            if want[k] != got[k]:
                err(f"{path}: {k} {got[k]!r}, bootstrap has {want[k]!r}")
    # Nothing extra in the mount.
    for root, dirs, files in os.walk(mnt):
        for name in dirs + files:
            rel = "/" + os.path.relpath(os.path.join(root, name), mnt)
            if rel not in listed:
                err(f"{rel}: in the mount, not in the bootstrap")
    print(f"{len(listed)} paths, {chunks} chunks checked, {bad} mismatches")
    return 1 if bad or not chunks else 0


def read_result(path):
    text = open(path).read()
    end = text.index("\n]\n") + 3
    tree = json.loads(text[:end])
    md5 = {}
    for line in text[end:].splitlines():
        if line.strip():
            h, p = line.split("  ", 1)
            md5[p] = h
    entries = {}

    def visit(node, path):
        entries[path] = (node["type"], node.get("target"))
        for c in node.get("contents", []) if node["type"] == "directory" else []:
            visit(c, path.rstrip("/") + "/" + c["name"])

    visit(tree[0], "/")
    return entries, md5


def cmd_result(mnt, result):
    want, md5 = read_result(result)
    got = {}
    bad = 0
    for root, dirs, files in os.walk(mnt):
        rel = "/" + os.path.relpath(root, mnt) if root != mnt else "/"
        got[rel] = ("directory", None)
        for name in files + [d for d in dirs if os.path.islink(os.path.join(root, d))]:
            p = os.path.join(root, name)
            path = rel.rstrip("/") + "/" + name
            if os.path.islink(p):
                got[path] = ("link", os.readlink(p))
            else:
                got[path] = ("file", None)
                try:
                    with open(p, "rb") as f:
                        h = hashlib.md5(f.read()).hexdigest()
                except OSError as e:
                    h = f"unreadable ({e})"
                if md5.get(path) != h:
                    print(f"{path}: md5 {h}, upstream listed {md5.get(path)}")
                    bad += 1
    for p in sorted(set(want) | set(got)):
        if want.get(p) != got.get(p):
            print(f"{p}: mount has {got.get(p)}, upstream listing has {want.get(p)}")
            bad += 1
    print(f"{len(want)} listed entries, {len(md5)} md5 sums, {bad} mismatches")
    return 1 if bad or len(md5) == 0 else 0


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    sys.exit({"digests": cmd_digests, "mount": cmd_mount, "result": cmd_result}[cmd](*args))
