#!/usr/bin/env python3
"""Many concurrent readers over several mounts, checked byte for byte.

    load_readers.py --pid PID --threads N --seconds S MOUNT=SOURCE...

Each thread loops until the time is up: picks a mount and one of its regular
files, reads a random range (sometimes the whole file) through the mount
and the same range from SOURCE, and compares. Now and then it drops the
file's pages from the kernel's page cache (POSIX_FADV_DONTNEED) so later
reads reach the daemon again instead of being served by the kernel. A
sampler records the daemon's RSS and open fds every second.

Prints JSON: reads, bytes, errors (with the first few), mismatches,
rss_kb (min/max), fds (first/max/last).
"""

import argparse
import json
import os
import random
import threading
import time

ap = argparse.ArgumentParser()
ap.add_argument("--pid", type=int, required=True)
ap.add_argument("--threads", type=int, default=64)
ap.add_argument("--seconds", type=float, default=60)
ap.add_argument("pairs", nargs="+")
args = ap.parse_args()

files = []  # (mount path, source path, size)
for pair in args.pairs:
    mnt, src = pair.split("=", 1)
    for root, _, names in os.walk(src):
        for n in names:
            s = os.path.join(root, n)
            if os.path.isfile(s) and not os.path.islink(s):
                rel = os.path.relpath(s, src)
                files.append((os.path.join(mnt, rel), s, os.path.getsize(s)))
assert files, "no files to read"

lock = threading.Lock()
stats = {"reads": 0, "bytes": 0, "errors": 0, "mismatches": 0, "first_errors": []}
started = time.monotonic()
deadline = started + args.seconds


def reader(seed):
    rnd = random.Random(seed)
    reads = nbytes = 0
    while time.monotonic() < deadline:
        mpath, spath, size = rnd.choice(files)
        if size == 0 or rnd.random() < 0.2:
            off, length = 0, size
        else:
            off = rnd.randrange(size)
            length = min(size - off, rnd.choice((1, 4096, 65536, 1 << 20)))
        try:
            fd = os.open(mpath, os.O_RDONLY)
            try:
                got = os.pread(fd, length, off)
                if rnd.random() < 0.1:
                    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)
            with open(spath, "rb") as f:
                f.seek(off)
                want = f.read(length)
            reads += 1
            nbytes += len(got)
            if got != want:
                with lock:
                    stats["mismatches"] += 1
                    if len(stats["first_errors"]) < 5:
                        diff = next((i for i, (a, b) in enumerate(zip(got, want)) if a != b),
                                    min(len(got), len(want)))
                        stats["first_errors"].append(
                            f"mismatch {mpath} @{off}+{length}: got {len(got)} bytes, want {len(want)}, "
                            f"first difference at +{diff} (got {got[diff:diff + 8].hex()} want "
                            f"{want[diff:diff + 8].hex()}), at {time.strftime('%H:%M:%S')}.{int(time.time() * 1000) % 1000:03d}")
        except OSError as e:
            with lock:
                stats["errors"] += 1
                if len(stats["first_errors"]) < 5:
                    stats["first_errors"].append(f"{mpath} @{off}+{length}: {e} (at {time.strftime('%H:%M:%S')}"
                                                 f".{int(time.time() * 1000) % 1000:03d})")
    with lock:
        stats["reads"] += reads
        stats["bytes"] += nbytes


samples = []


def sampler():
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{args.pid}/status") as f:
                rss = next(int(l.split()[1]) for l in f if l.startswith("VmRSS"))
            fds = len(os.listdir(f"/proc/{args.pid}/fd"))
            samples.append((rss, fds))
        except (OSError, StopIteration):
            samples.append((0, 0))  # the daemon is gone
        time.sleep(1)


threads = [threading.Thread(target=reader, args=(i,)) for i in range(args.threads)]
threads.append(threading.Thread(target=sampler))
for t in threads:
    t.start()
for t in threads:
    t.join()
rss = [s[0] for s in samples] or [0]
fds = [s[1] for s in samples] or [0]
stats.update(files=len(files), threads=args.threads, seconds=args.seconds,
             rss_kb={"min": min(rss), "max": max(rss)},
             fds={"first": fds[0], "max": max(fds), "last": fds[-1]})
print(json.dumps(stats))
