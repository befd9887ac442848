#!/usr/bin/env python3
"""The benchmarks' source tree: make_tree.py DEST BIG_MB SMALL_FILES

DEST/big/file0, file1: BIG_MB MB each, 64 KiB blocks alternating random and
text-like, so compression matters; DEST/small/dNNN/fNNNNNN: SMALL_FILES files
of 0-16 KiB in 100 directories, two thirds random. Deterministic (seed 7)
apart from the random small files' bytes."""
import os
import random
import sys

src, big_mb, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rng = random.Random(7)
os.makedirs(f"{src}/big", exist_ok=True)
block = bytes(rng.getrandbits(8) for _ in range(1 << 16))
text = (b"the quick brown fox jumps over the lazy dog %d\n" * 1500)[: 1 << 16]
for i in range(2):
    with open(f"{src}/big/file{i}", "wb") as f:
        for k in range(big_mb * 16):
            f.write(block if (k + i) % 2 else text.replace(b"%d", str(k).encode()))
for i in range(n):
    d = f"{src}/small/d{i % 100:03d}"
    os.makedirs(d, exist_ok=True)
    with open(f"{d}/f{i:06d}", "wb") as f:
        f.write(os.urandom(rng.randrange(0, 16384)) if i % 3 else b"x" * rng.randrange(0, 16384))
