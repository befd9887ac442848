#!/usr/bin/env python3
"""Checks a RAFS v5 image built by our `nydus-image create --fs-version 5`,
for tests/integration/rafs_v5_build.sh. Uses rafs_v5_oracle.Image (a reader
sharing no code with the C++ side) and upstream's builder rules
(builder/src/core/{bootstrap,v5,node}.rs @ v2.4.4), coded here again.

  rafs_v5_build_check.py source BOOT BLOBDIR SRC [--repeatable] [--aligned]
      the image against the source directory: every path, type, mode, owner,
      size, ns mtime, rdev, symlink target, xattrs, hard-link groups; each
      chunk's digest = hash of the source file's bytes at that range; the
      stored chunk bytes in the blob decompress to them (none/zstd/lz4 via
      the CLI tools); the blob file's sha256 is its id. Upstream's layout:
      indexes (root 1, a directory's children consecutive in byte order of
      names, subdirectories entered in order), ino/parent/nlink, directory
      pseudo size, blocks, inodes_count, tables in order, inodes stored in
      depth-first pre-order, file offsets, uncompressed offsets packed (or
      4 KiB aligned with --aligned), extended blob table.
  rafs_v5_build_check.py upstream OURS FIXTURE
      our rebuild of an upstream fixture's unpacked tree against the fixture
      itself, inode by index; allowed differences are those between the
      fixture's older builder and v2.4.4: chunk CRC32 (HAS_CRC32 0x10),
      inode record order, inodes_count (2.4.4 counts the root) and the
      extended blob table's features (2.4.4 records CAP_TAR_TOC).
"""
import hashlib
import os
import stat
import struct
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from rafs_v5_oracle import CHUNK, INODE, SB, Image, align8  # noqa: E402

S_IFMT = 0o170000
bad = 0


def err(msg):
    global bad
    bad += 1
    if bad <= 60:
        print(msg)


def sb_dict(img):
    names = ["magic", "version", "sb_size", "chunk_size", "flags", "inodes_count", "inode_table_offset",
             "prefetch_table_offset", "blob_table_offset", "inode_table_entries", "prefetch_table_entries",
             "blob_table_size", "ext_entries", "ext_offset"]
    return dict(zip(names, SB.unpack_from(img.d, 0)))


def xattrs_of(img, index):
    off = img.table[index - 1] << 3
    n = INODE.unpack_from(img.d, off)
    flags, name_size, symlink_size = n[9], n[13], n[14]
    if not flags & 0x4:
        return {}
    p = off + INODE.size + align8(name_size) + align8(symlink_size)
    (size,) = struct.unpack_from("<Q", img.d, p)
    p += 8
    end = p + size
    out = {}
    while p < end:
        (ln,) = struct.unpack_from("<I", img.d, p)
        pair = img.d[p + 4:p + 4 + ln]
        k, v = pair.split(b"\0", 1)
        out[k] = v
        p += 4 + ln
    return out


def blob_table(img, sb):
    raw = img.d[sb["blob_table_offset"]:sb["blob_table_offset"] + sb["blob_table_size"]]
    out = []
    while len(raw) > 8:
        ra_off, ra_size = struct.unpack_from("<II", raw, 0)
        rest = raw[8:]
        z = rest.find(b"\0")
        bid = rest if z < 0 else rest[:z]
        out.append((ra_off, ra_size, bid.decode()))
        raw = rest[len(bid) + 1:] if z >= 0 else b""
    exts = [struct.unpack_from("<IIQQ", img.d, sb["ext_offset"] + 64 * i) for i in range(sb["ext_entries"])]
    return out, exts


def decompress(flags, data, usize):
    if flags & 0x80:
        return subprocess.run(["zstd", "-dc"], input=data, capture_output=True, check=True).stdout
    if flags & 0x2:
        raise SystemExit("lz4_block chunks: no independent decoder here")
    return data


def cmd_source(boot, blobdir, src, *opts):
    repeatable = "--repeatable" in opts
    aligned = "--aligned" in opts
    img = Image(boot)
    sb = sb_dict(img)
    cs = sb["chunk_size"]
    walk = img.walk()  # depth-first pre-order from index 1
    by_path = {p: n for p, n in walk}

    # Tables in upstream's order, right after each other.
    it_size = align8(sb["inode_table_entries"] * 4)
    if sb["inode_table_offset"] != 8192:
        err(f"inode table at {sb['inode_table_offset']}")
    if sb["prefetch_table_offset"] != 8192 + it_size:
        err("prefetch table not right after the inode table")
    if sb["blob_table_offset"] != sb["prefetch_table_offset"] + align8(4 * sb["prefetch_table_entries"]):
        err("blob table not right after the prefetch table")
    if sb["ext_offset"] != sb["blob_table_offset"] + sb["blob_table_size"]:
        err("extended blob table not right after the blob table")
    want_flags = (0x10 if not repeatable else 0)
    if sb["flags"] & 0x10 != want_flags:
        err(f"EXPLICIT_UID_GID flag {sb['flags']:#x}, repeatable={repeatable}")

    # Inodes stored in depth-first pre-order, the first right after the tables.
    offsets = [img.table[n["index"] - 1] << 3 for _, n in walk]
    if offsets != sorted(offsets) or offsets[0] != sb["ext_offset"] + 64 * sb["ext_entries"]:
        err("inode records are not stored in depth-first pre-order after the tables")
    if sorted(n["index"] for _, n in walk) != list(range(1, sb["inode_table_entries"] + 1)):
        err("the walk does not reach every inode table index exactly once")

    # Index assignment: replay upstream's build_rafs over the source tree.
    expect_index = {"/": 1}
    nxt = [2]

    def build(path):
        full = os.path.join(src, path.lstrip("/"))
        names = sorted(os.listdir(full), key=os.fsencode)
        for nm in names:
            expect_index[path.rstrip("/") + "/" + nm] = nxt[0]
            nxt[0] += 1
        for nm in names:
            cp = path.rstrip("/") + "/" + nm
            if stat.S_ISDIR(os.lstat(os.path.join(src, cp.lstrip("/"))).st_mode):
                build(cp)
    build("/")
    if set(expect_index) != set(by_path):
        for p in sorted(set(expect_index) ^ set(by_path)):
            err(f"{p}: in {'source' if p in expect_index else 'image'} only")
    first_ino = {}  # source (dev, ino) -> image ino
    groups = {}
    for p, idx in sorted(expect_index.items(), key=lambda x: x[1]):
        st = os.lstat(os.path.join(src, p.lstrip("/")))
        if not stat.S_ISDIR(st.st_mode):
            groups[(st.st_dev, st.st_ino)] = groups.get((st.st_dev, st.st_ino), 0) + 1
    ino_by_path = {}
    for p, idx in sorted(expect_index.items(), key=lambda x: x[1]):
        if p not in by_path:
            continue
        n = by_path[p]
        st = os.lstat(os.path.join(src, p.lstrip("/")))
        key = (st.st_dev, st.st_ino)
        t = st.st_mode & S_IFMT
        want_ino = idx if stat.S_ISDIR(st.st_mode) else first_ino.setdefault(key, idx)
        ino_by_path[p] = want_ino
        if n["index"] != idx:
            err(f"{p}: index {n['index']}, upstream's order gives {idx}")
        if n["ino"] != want_ino:
            err(f"{p}: ino {n['ino']}, want {want_ino}")
        if n["mode"] != st.st_mode:
            err(f"{p}: mode {n['mode']:o}, source {st.st_mode:o}")
        wuid, wgid = (0, 0) if repeatable else (st.st_uid, st.st_gid)
        if (n["uid"], n["gid"]) != (wuid, wgid):
            err(f"{p}: owner {n['uid']}:{n['gid']}, want {wuid}:{wgid}")
        if p != "/" and (n["mtime"], n["mtime_nsec"]) != (st.st_mtime_ns // 10**9, st.st_mtime_ns % 10**9):
            err(f"{p}: mtime {n['mtime']}.{n['mtime_nsec']:09}, source {st.st_mtime_ns}")
        if p == "/" and (n["mtime"], n["mtime_nsec"]) != (0, 0):
            err("/: upstream forces the root's mtime to 0")
        want_name = b"/" if p == "/" else os.fsencode(os.path.basename(p))
        if n["name"] != want_name:
            err(f"{p}: name {n['name']!r}")
        xs = {}
        full = os.path.join(src, p.lstrip("/"))
        for k in os.listxattr(full, follow_symlinks=False):
            xs[os.fsencode(k)] = os.getxattr(full, k, follow_symlinks=False)
        got_x = xattrs_of(img, idx)
        if got_x != xs:
            err(f"{p}: xattrs {got_x}, source {xs}")
        xsize = sum(4 + len(k) + 1 + len(v) for k, v in xs.items())
        if t == stat.S_IFDIR:
            kids = sorted(os.listdir(full), key=os.fsencode)
            want_size = sum(len(os.fsencode(k)) + 8 for k in kids)
            want_size = 4096 if want_size == 0 else (want_size + 4095) // 4096 * 4096
            subdirs = sum(stat.S_ISDIR(os.lstat(os.path.join(full, k)).st_mode) for k in kids)
            want_nlink = 2 + subdirs
            if n["child_count"] != len(kids) or (kids and n["child_index"] != expect_index[p.rstrip("/") + "/" + kids[0]]):
                err(f"{p}: children {n['child_index']}+{n['child_count']}")
        else:
            want_size = st.st_size
            want_nlink = groups[key]
        if n["size"] != want_size:
            err(f"{p}: size {n['size']}, want {want_size}")
        if n["nlink"] != want_nlink:
            err(f"{p}: nlink {n['nlink']}, want {want_nlink}")
        want_blocks = (want_size + align8(xsize) + 511) // 512
        if n["blocks"] != want_blocks:
            err(f"{p}: blocks {n['blocks']}, want {want_blocks}")
        if t in (stat.S_IFCHR, stat.S_IFBLK) and n["rdev"] != (st.st_rdev & 0xffffffff):
            err(f"{p}: rdev {n['rdev']:#x}, source {st.st_rdev:#x}")
        if t == stat.S_IFLNK:
            tgt = os.fsencode(os.readlink(full))
            if n["target"] != tgt or not n["flags"] & 0x1:
                err(f"{p}: symlink {n['target']!r} flags {n['flags']:#x}, source {tgt!r}")
        if t == stat.S_IFREG:
            data = open(full, "rb").read()
            want_n = (len(data) + cs - 1) // cs
            if len(n["chunks"]) != want_n:
                err(f"{p}: {len(n['chunks'])} chunks, want {want_n}")
            for k, c in enumerate(n["chunks"]):
                piece = data[k * cs:(k + 1) * cs]
                if c["foff"] != k * cs or c["usize"] != len(piece):
                    err(f"{p}: chunk {k} file offset {c['foff']} size {c['usize']}")
                if c["digest"] != img.hash(piece):
                    err(f"{p}: chunk {k} digest is not the hash of the source bytes")
    # Parents: the directory's ino.
    for p, n in walk:
        if p == "/":
            if n["parent"] != 0:
                err("/: parent must be 0")
            continue
        if n["parent"] != ino_by_path.get(os.path.dirname(p), -1):
            err(f"{p}: parent {n['parent']}")
    if sb["inodes_count"] != len(set(ino_by_path.values())):
        err(f"inodes_count {sb['inodes_count']}, {len(set(ino_by_path.values()))} distinct inodes")

    # Blob: chunks only, sha256 = id, every chunk's stored bytes decode to its data.
    blobs, exts = blob_table(img, sb)
    chunks = {}
    for _, n in walk:
        for c in n["chunks"]:
            chunks.setdefault((c["blob"], c["index"]), c)
    for b, (_, _, bid) in enumerate(blobs):
        data = open(os.path.join(blobdir, bid), "rb").read()
        if hashlib.sha256(data).hexdigest() != bid:
            err(f"blob {bid}: sha256 of the file differs")
        mine = sorted((ci, c) for (bi, ci), c in chunks.items() if bi == b)
        if [ci for ci, _ in mine] != list(range(len(mine))):
            err(f"blob {b}: ci indexes not dense")
        coff = uoff = 0
        for ci, c in mine:
            if c["coff"] != coff:
                err(f"blob {b} ci {ci}: compressed offset {c['coff']}, want {coff} (chunks back to back)")
            if c["uoff"] != uoff:
                err(f"blob {b} ci {ci}: uncompressed offset {c['uoff']}, want {uoff}")
            coff += c["csize"]
            uoff += (c["usize"] + 4095) // 4096 * 4096 if aligned else c["usize"]
            raw = decompress(sb["flags"] if c["flags"] & 1 else 0, data[c["coff"]:c["coff"] + c["csize"]], c["usize"])
            if img.hash(raw) != c["digest"]:
                err(f"blob {b} ci {ci}: stored bytes do not decode to the chunk's digest")
        if coff != len(data):
            err(f"blob {b}: {len(data)} bytes, chunks cover {coff} (a v5 blob holds chunks only)")
        want_ext = (len(mine), 0x40000000, uoff, len(data))
        if tuple(exts[b]) != want_ext:
            err(f"blob {b}: extended entry {exts[b]}, want {want_ext}")
    print(f"{len(walk)} inodes, {len(chunks)} chunks, {len(blobs)} blobs checked against {src}: {bad} problems")
    return 1 if bad or not walk else 0


def cmd_upstream(ours, fixture):
    a, b = Image(ours), Image(fixture)
    sa, sb = sb_dict(a), sb_dict(b)
    for k in sa:
        if k != "inodes_count" and sa[k] != sb[k]:
            err(f"superblock {k}: ours {sa[k]}, upstream {sb[k]}")
    distinct = len({a.inode(i)["ino"] for i in range(1, sa["inode_table_entries"] + 1)})
    if sa["inodes_count"] != distinct:
        err(f"inodes_count {sa['inodes_count']}, {distinct} distinct inodes")
    ba, ea = blob_table(a, sa)
    bb, eb = blob_table(b, sb)
    if ba != bb:
        err(f"blob table: ours {ba}, upstream {bb}")
    for x, y in zip(ea, eb):
        if (x[0], x[2], x[3]) != (y[0], y[2], y[3]):
            err(f"extended blob entry: ours {x}, upstream {y}")
    n_inodes = n_chunks = 0
    for i in range(1, sa["inode_table_entries"] + 1):
        x, y = a.inode(i), b.inode(i)
        n_inodes += 1
        for k in x:
            if k == "chunks":
                if len(x[k]) != len(y[k]):
                    err(f"inode {i} {x['name']!r}: {len(x[k])} chunks, upstream {len(y[k])}")
                for cx, cy in zip(x[k], y[k]):
                    n_chunks += 1
                    for kk in cx:
                        if kk == "crc" or (kk == "flags" and cx[kk] & ~0x10 == cy[kk]):
                            continue
                        if cx[kk] != cy[kk]:
                            err(f"inode {i} {x['name']!r} chunk {kk}: ours {cx[kk]}, upstream {cy[kk]}")
            elif x[k] != y[k]:
                err(f"inode {i} {x['name']!r} {k}: ours {x[k]!r}, upstream {y[k]!r}")
        if xattrs_of(a, i) != xattrs_of(b, i):
            err(f"inode {i}: xattrs differ")
    print(f"{n_inodes} inodes, {n_chunks} chunk infos compared with upstream's: {bad} differences")
    return 1 if bad or not n_inodes else 0


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    sys.exit({"source": cmd_source, "upstream": cmd_upstream}[cmd](*args))
