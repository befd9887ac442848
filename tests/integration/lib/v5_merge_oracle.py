#!/usr/bin/env python3
"""Oracles for tests/integration/rafs_v5_merge.sh (python3 stdlib only; shares
no code with the C++ merge).

  v5_merge_oracle.py apply OUT LAYER...
      OUT = the source dirs applied in order (lowest first) by OCI rules:
      `.wh.NAME` removes NAME of the lower layers, `.wh..wh..opq` empties the
      lower layers' directory, an entry replaces a lower one of its name
      (directory over directory: the children merge, the upper directory's
      mode/owner/xattrs/mtime win), hard links within a layer stay one inode.
  v5_merge_oracle.py overlay-dir SRC DST
      DST = a copy of SRC in overlayfs's whiteout form (char 0/0 for
      `.wh.NAME`, trusted.overlay.opaque=y for `.wh..wh..opq`), directory
      mtimes kept, for the kernel's overlayfs as a second oracle.
  v5_merge_oracle.py chunks MERGED LAYER_BOOT...
      Reads RAFS v5 bootstraps with lib/rafs_v5_oracle.py's reader. Every file
      of MERGED must carry, chunk for chunk, the chunk infos of the same path
      in the highest LAYER_BOOT that has the path (digest, flags, sizes,
      compressed and uncompressed offsets, ci index, crc) and name the same
      blob id; each merged blob's extended-table entry (chunk count,
      features, sizes) must be the one of a layer that lists it; the blob
      table must be in order of first use walking the tree breadth first.
"""
import os
import shutil
import stat
import struct
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import rafs_v5_oracle  # noqa: E402

OPQ = ".wh..wh..opq"
WH = ".wh."


def rm(p):
    if os.path.isdir(p) and not os.path.islink(p):
        shutil.rmtree(p)
    elif os.path.lexists(p):
        os.unlink(p)


def copy_xattrs(src, dst, replace):
    if replace:
        for n in os.listxattr(dst, follow_symlinks=False):
            os.removexattr(dst, n, follow_symlinks=False)
    for n in os.listxattr(src, follow_symlinks=False):
        os.setxattr(dst, n, os.getxattr(src, n, follow_symlinks=False), follow_symlinks=False)


def set_attrs(src, dst, st):
    os.lchown(dst, st.st_uid, st.st_gid)
    if not stat.S_ISLNK(st.st_mode):
        os.chmod(dst, stat.S_IMODE(st.st_mode))
    copy_xattrs(src, dst, replace=stat.S_ISDIR(st.st_mode))
    os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)


def apply_layer(layer, out):
    links = {}  # (dev, ino) in the layer -> first path made in out
    dirs_seen = []
    for d, dirs, files in os.walk(layer):
        rel = os.path.relpath(d, layer)
        tgt = os.path.normpath(os.path.join(out, rel))
        dirs_seen.append((d, tgt))
        names = sorted(dirs + files)
        if OPQ in names:
            for n in os.listdir(tgt):
                rm(os.path.join(tgt, n))
        for n in names:
            if n.startswith(WH) and n != OPQ:
                rm(os.path.join(tgt, n[len(WH):]))
        for n in names:
            if n.startswith(WH):
                continue
            src, dst = os.path.join(d, n), os.path.join(tgt, n)
            st = os.lstat(src)
            if stat.S_ISDIR(st.st_mode):
                if not (os.path.isdir(dst) and not os.path.islink(dst)):
                    rm(dst)
                    os.mkdir(dst)
                continue  # attributes once its children are in
            rm(dst)
            key = (st.st_dev, st.st_ino)
            if stat.S_ISREG(st.st_mode) and key in links:
                os.link(links[key], dst)
                continue
            if stat.S_ISREG(st.st_mode):
                shutil.copyfile(src, dst)
                links[key] = dst
            elif stat.S_ISLNK(st.st_mode):
                os.symlink(os.readlink(src), dst)
            elif stat.S_ISFIFO(st.st_mode):
                os.mkfifo(dst)
            else:
                os.mknod(dst, st.st_mode, st.st_rdev)
            set_attrs(src, dst, st)
    for src, dst in reversed(dirs_seen):
        set_attrs(src, dst, os.lstat(src))


def cmd_apply(out, *layers):
    os.makedirs(out, exist_ok=True)
    for layer in layers:
        apply_layer(layer, out)
    return 0


def cmd_overlay_dir(src, dst):
    # GNU cp -a keeps hard links, owners, modes, xattrs, devices and times.
    os.makedirs(os.path.dirname(os.path.abspath(dst)), exist_ok=True)
    subprocess.run(["cp", "-a", src, dst], check=True)
    for d, dirs, files in os.walk(dst):
        for n in files:
            if not n.startswith(WH):
                continue
            os.unlink(os.path.join(d, n))
            if n == OPQ:
                os.setxattr(d, "trusted.overlay.opaque", b"y")
            else:
                os.mknod(os.path.join(d, n[len(WH):]), stat.S_IFCHR | 0o600, os.makedev(0, 0))
    # Directory attributes last (the edits above moved their mtimes).
    for d, dirs, files in os.walk(src):
        t = os.path.normpath(os.path.join(dst, os.path.relpath(d, src)))
        st = os.lstat(d)
        os.lchown(t, st.st_uid, st.st_gid)
        os.chmod(t, stat.S_IMODE(st.st_mode))
        for n in os.listxattr(d, follow_symlinks=False):
            os.setxattr(t, n, os.getxattr(d, n, follow_symlinks=False), follow_symlinks=False)
        os.utime(t, ns=(st.st_atime_ns, st.st_mtime_ns))
    return 0


EXT = struct.Struct("<IIQQ40s")


def blob_table(img):
    """[(blob id, (chunk_count, features, uncompressed, compressed))] from the
    v5 blob table (frames: u32 readahead offset, u32 size, id, NUL) and the
    extended blob table (64-byte entries)."""
    fields = rafs_v5_oracle.SB.unpack_from(img.d, 0)
    bt_off, bt_size, ext_n, ext_off = fields[8], fields[11], fields[12], fields[13]
    raw = img.d[bt_off:bt_off + bt_size]
    ids = []
    p = 0
    while len(raw) - p > 8:
        end = raw.find(b"\0", p + 8)
        end = len(raw) if end < 0 else end
        ids.append(raw[p + 8:end].decode())
        p = end + 1
    assert ext_n == len(ids), f"{ext_n} extended entries for {len(ids)} blobs"
    out = []
    for i, bid in enumerate(ids):
        cc, feat, us, cs, _ = EXT.unpack_from(img.d, ext_off + i * EXT.size)
        out.append((bid, (cc, feat, us, cs)))
    return out


def files_of(img):
    return {path: n for path, n in img.walk()}


def chunk_key(c, ids):
    return (c["digest"], ids[c["blob"]], c["flags"], c["csize"], c["usize"], c["coff"], c["uoff"], c["foff"],
            c["index"], c["crc"])


def cmd_chunks(merged, *layers):
    m = rafs_v5_oracle.Image(merged)
    m_blobs = blob_table(m)
    m_ids = [b for b, _ in m_blobs]
    bad = 0

    def err(msg):
        nonlocal bad
        bad += 1
        print(msg)

    ls = []
    entry_of = {}
    for path in layers:
        img = rafs_v5_oracle.Image(path)
        table = blob_table(img)
        ls.append((path, files_of(img), [b for b, _ in table]))
        for bid, e in table:
            entry_of.setdefault(bid, set()).add(e)
    for bid, e in m_blobs:
        if e not in entry_of.get(bid, set()):
            err(f"merged blob {bid}: extended entry {e}, the layers have {entry_of.get(bid)}")
    files = 0
    for path, n in m.walk():
        if n["mode"] & rafs_v5_oracle.S_IFMT != rafs_v5_oracle.S_IFREG:
            continue
        files += 1
        src = [(lp, f[path], ids) for lp, f, ids in ls if path in f]
        if not src:
            err(f"{path}: in no layer")
            continue
        lp, ln, ids = src[-1]
        want = [chunk_key(c, ids) for c in ln["chunks"]]
        got = [chunk_key(c, m_ids) for c in n["chunks"]]
        if want != got:
            err(f"{path}: chunks {got}, layer {lp} has {want}")
    # First-use order, breadth first with children by name.
    order = []
    queue = [1]
    for i in queue:
        n = m.inode(i)
        for c in n["chunks"]:
            if c["blob"] not in order:
                order.append(c["blob"])
        if n["mode"] & rafs_v5_oracle.S_IFMT == rafs_v5_oracle.S_IFDIR:
            kids = list(range(n["child_index"], n["child_index"] + n["child_count"]))
            queue.extend(sorted(kids, key=lambda k: m.inode(k)["name"]))
    if order != list(range(len(m_ids))):
        err(f"blob table {m_ids} is not in order of first use (uses {order})")
    print(f"{files} files, {len(m_ids)} blobs checked, {bad} mismatches")
    return 1 if bad or not files else 0


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    sys.exit({"apply": cmd_apply, "overlay-dir": cmd_overlay_dir, "chunks": cmd_chunks}[cmd](*args))
