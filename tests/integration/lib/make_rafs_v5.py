#!/usr/bin/env python3
"""Write a RAFS v5 image of a directory, laid out as upstream nydus-image 2.x
does (rafs/src/metadata/layout/v5.rs): for tests/integration/rafs_v5.sh, to
cover what upstream's two v5 fixtures lack (xattrs, devices, fifos, sockets,
multi-chunk files with a 4 KiB chunk size, zstd-compressed chunks, hard links
across directories, a prefetch table). The source directory itself stays the
oracle: the mounted image must equal it (compare_trees.py).

    make_rafs_v5.py SRC BOOT BLOB_DIR [--chunk-size N] [--prefetch PATH ...]

Inode indexes are allocated as upstream does: a directory's children get
consecutive indexes when the directory is visited, directories depth first.
Chunks are zstd-compressed (the `zstd` tool: nydus chunks are zstd frames)
when that makes them smaller, deduplicated by SHA-256, packed back to back.
"""
import argparse
import hashlib
import os
import stat
import struct
import subprocess

SB = struct.Struct("<IIIIQQQQQIIIIQ")
INODE = struct.Struct("<32sQQIIIIQQQIIIHHIIQ8s")
CHUNK = struct.Struct("<32sIIIIQQQII")
FLAGS = 0x80 | 0x8 | 0x10  # zstd, sha256, explicit uid/gid


def align8(n):
    return (n + 7) & ~7


def pad8(b):
    return b + b"\0" * (align8(len(b)) - len(b))


def h(b):
    return hashlib.sha256(b).digest()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("src")
    ap.add_argument("boot")
    ap.add_argument("blob_dir")
    ap.add_argument("--chunk-size", type=lambda s: int(s, 0), default=0x1000)
    ap.add_argument("--prefetch", action="append", default=[])
    a = ap.parse_args()
    cs = a.chunk_size

    # ---- tree and indexes -------------------------------------------------------
    nodes = []  # dicts in index order (index = position + 1)

    def new(path, name, parent):
        st = os.lstat(path)
        n = {"path": path, "name": name, "st": st, "parent": parent, "kids": []}
        nodes.append(n)
        n["index"] = len(nodes)
        return n

    root = new(a.src, b"/", None)

    def visit(d):
        names = sorted(os.listdir(os.fsencode(d["path"])))
        d["child_index"] = len(nodes) + 1 if names else 0
        for nm in names:
            d["kids"].append(new(os.path.join(os.fsencode(d["path"]), nm), nm, d))
        for k in d["kids"]:
            if stat.S_ISDIR(k["st"].st_mode):
                visit(k)

    root["path"] = os.fsencode(a.src)
    visit(root)

    # Hard links: one inode number (the first name's index) per source inode.
    first = {}
    for n in nodes:
        key = (n["st"].st_dev, n["st"].st_ino)
        if stat.S_ISDIR(n["st"].st_mode):
            n["ino"] = n["index"]
        else:
            n["ino"] = first.setdefault(key, n["index"])
    names_of = {}
    for n in nodes:
        names_of[n["ino"]] = names_of.get(n["ino"], 0) + 1

    # ---- blob ----------------------------------------------------------------------
    blob = bytearray()
    chunks_by_digest = {}
    uoff = 0
    for n in nodes:
        n["chunks"] = []
        if not stat.S_ISREG(n["st"].st_mode):
            continue
        data = open(n["path"], "rb").read()
        for fo in range(0, len(data), cs):
            piece = data[fo:fo + cs]
            d = h(piece)
            c = chunks_by_digest.get(d)
            if c is None:
                z = subprocess.run(["zstd", "-q", "-c", "-3"], input=piece, check=True, capture_output=True).stdout
                stored, flags = (z, 1) if len(z) < len(piece) else (piece, 0)
                c = {"digest": d, "flags": flags, "csize": len(stored), "usize": len(piece), "coff": len(blob),
                     "uoff": uoff, "index": len(chunks_by_digest)}
                chunks_by_digest[d] = c
                blob += stored
                uoff += len(piece)
            n["chunks"].append(dict(c, foff=fo))
    blob_id = hashlib.sha256(blob).hexdigest()
    os.makedirs(a.blob_dir, exist_ok=True)
    with open(os.path.join(a.blob_dir, blob_id), "wb") as f:
        f.write(blob)

    # ---- inode records -----------------------------------------------------------
    def xattrs_of(n):
        path = n["path"]
        pairs = b""
        for name in sorted(os.listxattr(path, follow_symlinks=False)):
            value = os.getxattr(path, name, follow_symlinks=False)
            body = name.encode() + b"\0" + value
            pairs += struct.pack("<I", len(body)) + body
        return pairs

    digests = {}

    def digest(n):
        if n["index"] in digests:
            return digests[n["index"]]
        m = n["st"].st_mode
        if stat.S_ISREG(m):
            d = h(b"".join(c["digest"] for c in n["chunks"]))
        elif stat.S_ISLNK(m):
            d = h(os.readlink(n["path"]))
        elif stat.S_ISDIR(m):
            d = h(b"".join(digest(k) for k in n["kids"]))
        else:
            d = h(b"")
        digests[n["index"]] = d
        return d

    digest(root)
    has_xattr = False
    records = []
    for n in nodes:
        st, m = n["st"], n["st"].st_mode
        target = os.readlink(n["path"]) if stat.S_ISLNK(m) else b""
        x = xattrs_of(n)
        flags = (0x1 if stat.S_ISLNK(m) else 0) | (0x4 if x else 0)
        if not stat.S_ISDIR(m) and names_of[n["ino"]] > 1:
            flags |= 0x2
        has_xattr |= bool(x)
        size = 4096 if stat.S_ISDIR(m) else (len(target) if stat.S_ISLNK(m) else
                                             (st.st_size if stat.S_ISREG(m) else 0))
        nlink = st.st_nlink if not stat.S_ISDIR(m) else 2 + sum(stat.S_ISDIR(k["st"].st_mode) for k in n["kids"])
        count = len(n["kids"]) if stat.S_ISDIR(m) else len(n["chunks"])
        rec = INODE.pack(digests[n["index"]], n["parent"]["ino"] if n["parent"] else 0, n["ino"], st.st_uid,
                         st.st_gid, 0, m, size, 0, flags, nlink, n.get("child_index", 0), count, len(n["name"]),
                         len(target), st.st_rdev & 0xFFFFFFFF, st.st_mtime_ns % 10**9, st.st_mtime_ns // 10**9,
                         b"\0" * 8)
        rec += pad8(n["name"]) + pad8(target)
        if x:
            rec += struct.pack("<Q", len(x)) + pad8(x)
        for c in n["chunks"]:
            rec += CHUNK.pack(c["digest"], 0, c["flags"], c["csize"], c["usize"], c["coff"], c["uoff"], c["foff"],
                              c["index"], 0)
        records.append(rec)

    # ---- tables and file -------------------------------------------------------------
    entries = len(nodes)
    it_off = 8192
    pf = []
    for p in a.prefetch:
        for n in nodes:
            if n["path"] == os.path.join(os.fsencode(a.src), os.fsencode(p.lstrip("/"))):
                pf.append(n["ino"])
    pf_off = it_off + align8(4 * entries)
    bt_off = pf_off + align8(4 * len(pf))
    blob_table = pad8(struct.pack("<II", 0, 0) + blob_id.encode())
    ext_off = bt_off + len(blob_table)
    ext = struct.pack("<IIQQ", len(chunks_by_digest), 0, uoff, len(blob)) + b"\0" * 40
    ino_off = ext_off + len(ext)
    table = []
    pos = ino_off
    for rec in records:
        table.append(pos >> 3)
        pos += len(rec)
    inodes_count = len({n["ino"] for n in nodes})
    flags = FLAGS | (0x20 if has_xattr else 0)
    sb = SB.pack(0x52414653, 0x500, 8192, cs, flags, inodes_count, it_off, pf_off, bt_off, entries, len(pf),
                 len(blob_table), 1, ext_off)
    out = sb + b"\0" * (8192 - len(sb))
    out += pad8(struct.pack(f"<{entries}I", *table)) + pad8(struct.pack(f"<{len(pf)}I", *pf))
    out += blob_table + ext + b"".join(records)
    with open(a.boot, "wb") as f:
        f.write(out)
    print(f"{entries} inodes, {len(chunks_by_digest)} chunks ({sum(c['flags'] for c in chunks_by_digest.values())}"
          f" zstd), blob {blob_id} ({len(blob)} bytes), bootstrap {len(out)} bytes, prefetch {pf}")


if __name__ == "__main__":
    main()
