#!/usr/bin/env python3
"""Concurrent random reads: N threads read random (file, offset, length)
ranges from a mounted tree and compare each with the same range of the source
tree. Exits 1 on any mismatch or read error. Python stdlib only."""
import argparse
import os
import random
import sys
import threading


def regular_files(root):
    out = []
    for d, _, files in os.walk(root):
        for f in files:
            p = os.path.join(d, f)
            st = os.lstat(p)
            if os.path.isfile(p) and not os.path.islink(p) and st.st_size > 0:
                out.append((os.path.relpath(p, root), st.st_size))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("source")
    ap.add_argument("mount")
    ap.add_argument("--threads", type=int, default=16)
    ap.add_argument("--reads", type=int, default=400, help="reads per thread")
    ap.add_argument("--max-len", type=int, default=256 * 1024)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    files = regular_files(a.source)
    if not files:
        print("no regular files in", a.source)
        return 1
    errors = []
    counts = [0] * a.threads
    nbytes = [0] * a.threads

    def worker(i):
        rng = random.Random(a.seed * 1000 + i)
        for _ in range(a.reads):
            rel, size = rng.choice(files)
            off = rng.randrange(0, size)
            ln = rng.randint(1, a.max_len)
            try:
                with open(os.path.join(a.mount, rel), "rb", buffering=0) as f:
                    got = os.pread(f.fileno(), ln, off)
                with open(os.path.join(a.source, rel), "rb", buffering=0) as f:
                    want = os.pread(f.fileno(), ln, off)
            except OSError as e:
                errors.append(f"{rel} @{off}+{ln}: {e}")
                return
            if got != want:
                errors.append(f"{rel} @{off}+{ln}: {len(got)} bytes differ from the source ({len(want)})")
                return
            counts[i] += 1
            nbytes[i] += len(got)

    ts = [threading.Thread(target=worker, args=(i,)) for i in range(a.threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    for e in errors[:20]:
        print("MISMATCH", e)
    print(f"{sum(counts)} reads ({sum(nbytes)} bytes) by {a.threads} threads, {len(errors)} errors")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
