#!/usr/bin/env python3
"""Read a nydus layer blob the way nydus-snapshotter v0.15's pkg/converter does.

An independent re-reading of convert_unix.go's UnpackEntry: find the entry by the
ToC ("rafs.blob.toc", 128-byte little-endian TOCEntry records: flags u32,
reserved u32, name [16]byte, sha256 [32]byte, compressed offset u64, compressed
size u64, uncompressed size u64, reserved [44]byte; flags & 0xf: 1 none, 2 zstd),
else walk the reverse tar chain `data | 512-byte header` from the end. It does
not use any nydus-cpp code, so it checks our blob writer from the outside.

  converter_blob.py extract BLOB NAME OUT   write entry NAME (decompressed) to OUT;
                                            exit 3 when NAME is not in the blob
  converter_blob.py toc-digest BLOB         sha256 hex of the ToC entry's data, as
                                            convert_unix.go's calcBlobTOCDigest
"""

import hashlib
import struct
import subprocess
import sys

HEADER = 512
TOC = "rafs.blob.toc"


class NotFound(Exception):
    pass


def tar_header(hdr):
    name = hdr[:100].split(b"\0", 1)[0].decode()
    size_field = hdr[124:136].split(b"\0", 1)[0].strip()
    size = int(size_field or b"0", 8)
    # A tar header's checksum: the sum of its bytes with the field as spaces.
    want = int(hdr[148:156].split(b"\0", 1)[0].strip() or b"0", 8)
    got = sum(hdr[:148]) + 8 * 32 + sum(hdr[156:])
    if want != got:
        raise ValueError("bad tar header checksum")
    return name, size


def by_tar_header(data, target, max_size=None):
    if len(data) < HEADER:
        raise ValueError("invalid nydus tar size %d" % len(data))
    cur = len(data) - HEADER
    while True:
        name, size = tar_header(data[cur:cur + HEADER])
        if cur < size:
            raise ValueError("invalid nydus tar data, name %s, size %d" % (name, size))
        if name == target:
            if max_size is not None and size > max_size:
                raise ValueError("entry too large")
            return data[cur - size:cur]
        cur = cur - size - HEADER
        if cur < 0:
            raise NotFound(target)


def zstd_decompress(b):
    return subprocess.run(["zstd", "-d", "-c", "-q"], input=b, stdout=subprocess.PIPE, check=True).stdout


def by_toc(data, target):
    toc = by_tar_header(data, TOC, 1 << 20)
    if len(toc) % 128:
        raise ValueError("invalid entries length %d" % len(toc))
    for i in range(0, len(toc), 128):
        flags, _, name, _digest, off, csize, _usize = struct.unpack_from("<II16s32sQQQ", toc, i)
        if name.split(b"\0", 1)[0].decode() != target:
            continue
        raw = data[off:off + csize]
        comp = flags & 0xF
        if comp == 1:
            return raw
        if comp == 2:
            return zstd_decompress(raw)
        raise ValueError("unsupported compressor %x" % flags)
    raise NotFound(target)


def unpack_entry(data, target):
    try:
        return by_toc(data, target)
    except NotFound:
        return by_tar_header(data, target)


def main():
    cmd = sys.argv[1]
    data = open(sys.argv[2], "rb").read()
    if cmd == "extract":
        try:
            out = unpack_entry(data, sys.argv[3])
        except NotFound:
            sys.exit(3)
        open(sys.argv[4], "wb").write(out)
    elif cmd == "toc-digest":
        print(hashlib.sha256(by_tar_header(data, TOC, 1 << 20)).hexdigest())
    else:
        sys.exit("unknown command " + cmd)


if __name__ == "__main__":
    main()
