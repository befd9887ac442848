#!/usr/bin/env python3
"""Independent decoder for encrypted / batch RAFS v6 blobs, written from
upstream Nydus v2.4 sources (utils/src/crypt.rs, storage/src/meta/batch.rs,
storage/src/meta/mod.rs, rafs/src/metadata/layout/v6.rs), not from ours.

usage: crypt_batch_oracle.py BOOTSTRAP BLOBDIR
Decrypts (Python `cryptography`, AES-128-XTS) and decompresses (zstd CLI) the
blob meta of every blob, resolves batch chunks through the batch contexts,
decodes every chunk and checks sha256(chunk) against the bootstrap's chunk
table (build with -d sha256). Prints a summary; exit 1 on any mismatch."""
import hashlib
import os
import struct
import subprocess
import sys

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes


def xts_decrypt(key, iv, data):
    d = Cipher(algorithms.AES(key), modes.XTS(iv)).decryptor()
    out = d.update(data) + d.finalize()
    # crypt.rs: an 18-byte unit ending in 78 90 carries a short plaintext.
    if len(out) == 18 and out[16:18] == b"\x78\x90":
        pad = out[15]
        assert pad < 16, "bad padding"
        out = out[: 16 - pad]
    return out


def decompress(algo, data, size):
    if algo == 0:
        return data
    if algo == 3:
        out = subprocess.run(["zstd", "-dc"], input=data, capture_output=True, check=True).stdout
        assert len(out) == size, f"zstd gave {len(out)} bytes, want {size}"
        return out
    raise SystemExit(f"oracle: compressor {algo} not supported here")


def main():
    boot = open(sys.argv[1], "rb").read()
    blobdir = sys.argv[2]
    flags, bt_off, bt_size, chunk_size, ct_off, ct_size = struct.unpack_from("<QQIIQQ", boot, 1152)
    digests = {}  # (blob index, ci index) -> digest
    for off in range(ct_off, ct_off + ct_size, 80):
        block_id = boot[off : off + 32]
        blob_index, cflags = struct.unpack_from("<II", boot, off + 32)
        (index,) = struct.unpack_from("<I", boot, off + 72)
        digests[(blob_index, index)] = (block_id, cflags)
    total = batched = encrypted = 0
    for b in range(bt_size // 256):
        e = bt_off + 256 * b
        blob_id = boot[e : e + 64].decode()
        chunk_count, comp, digest_algo, features = struct.unpack_from("<IIII", boot, e + 72)
        (ci_comp,) = struct.unpack_from("<I", boot, e + 108)
        ci_offset, ci_csize, ci_usize = struct.unpack_from("<QQQ", boot, e + 112)
        meta_digest = boot[e + 168 : e + 200]
        meta_size_bytes = boot[e + 200 : e + 208]
        cipher_iv = boot[e + 208 : e + 216]
        (cipher_algo,) = struct.unpack_from("<I", boot, e + 216)
        assert digest_algo == 1, "build the test image with -d sha256"
        blob = open(os.path.join(blobdir, blob_id), "rb").read()
        raw_ci = blob[ci_offset : ci_offset + ci_csize]
        raw_hdr = blob[ci_offset + ci_csize : ci_offset + ci_csize + 4096]
        key = iv = None
        if cipher_algo == 1:
            key, iv = meta_digest, meta_size_bytes + cipher_iv
            assert flags & 0x0200_0000, "superblock lacks ENCRYPTION_ASE_128_XTS"
            assert features & 0x100, "blob lacks ENCRYPTED"
            raw_ci = xts_decrypt(key, iv, raw_ci)
            raw_hdr = xts_decrypt(key, iv, raw_hdr)
        magic, hfeat, hcomp, hentries = struct.unpack_from("<IIII", raw_hdr, 0)
        assert magic == 0xB10BB10B and struct.unpack_from("<I", raw_hdr, 4092)[0] == 0xB10BB10B, "header magic"
        zran_off, zran_size, zran_count = struct.unpack_from("<QQI", raw_hdr, 40)
        ci = decompress(ci_comp, raw_ci, ci_usize)
        batches = []
        if features & 0x80:
            assert zran_off == 24 * chunk_count and zran_size == 40 * zran_count, "batch table location"
            for k in range(zran_count):
                batches.append(struct.unpack_from("<II", ci, zran_off + 40 * k))
        cache = {}
        for i in range(chunk_count):
            uncomp_info, comp_info, data = struct.unpack_from("<QQQ", ci, 24 * i)
            usize = ((uncomp_info >> 32) & 0xFFFFFF) + 1
            f = uncomp_info >> 56
            coff = comp_info & 0xFF_FFFF_FFFF
            csize = comp_info >> 40
            if f & 0x4:  # batch
                bidx, boff = data >> 32, data & 0xFFFFFFFF
                bcsize, bsize = batches[bidx]
                if (coff, bidx) not in cache:
                    piece = blob[coff : coff + bcsize]
                    if f & 0x8:
                        piece = xts_decrypt(key, iv, piece)
                    cache[(coff, bidx)] = piece if len(piece) == bsize else decompress(comp, piece, bsize)
                chunk = cache[(coff, bidx)][boff : boff + usize]
                batched += 1
            else:
                piece = blob[coff : coff + csize]
                if f & 0x8:
                    piece = xts_decrypt(key, iv, piece)
                chunk = decompress(comp, piece, usize) if f & 0x1 else piece
            if f & 0x8:
                encrypted += 1
            want = digests.get((b, i))
            if want is None:
                continue  # not referenced by any file
            if hashlib.sha256(chunk).digest() != want[0]:
                print(f"blob {b} chunk {i}: digest mismatch")
                return 1
            total += 1
    print(f"oracle: {total} chunks verified, {batched} batched, {encrypted} encrypted")
    return 0


if __name__ == "__main__":
    sys.exit(main())
