#!/usr/bin/env python3
"""Helpers of cache_crash_loop.sh (python3 stdlib only): kill -9 nydusd over and over
while it fills its blob cache, and check that the cache never claims wrong bytes.

    cache_crash.py tree DEST [--seed N] [--mib M]
        A deterministic tree of random-content files (~M MiB): big files spanning many
        chunks, medium files, many small ones, chunk-boundary sizes, a duplicate file.
        Half of the data is full-entropy, half 4-bit entropy (zstd compresses it, so the
        blob has compressed and uncompressed chunks). Every byte is position-dependent
        random, so a wrong or misplaced byte is detectable.

    cache_crash.py chunkmap WORK_DIR REF_DIR BLOB_ID [--json OUT] [--expect-all]
        On-disk check of one blob cache: for every chunk whose bit is set in
        WORK_DIR/<id>.chunk_map (and that the daemon would trust: same checks as
        src/storage/chunk_map.cpp), the bytes at the chunk's uncompressed offset in
        WORK_DIR/<id>.blob.data must equal the same range of the builder's full layout
        REF_DIR/<id>.blob.data. Chunk boundaries come from the builder's
        REF_DIR/<id>.blob.meta (ci array padded to 4 KiB, then the 4 KiB header).

    cache_crash.py loop --nydusd BIN --boot F --config F --mnt DIR --sock S --src DIR
                        --work-dir DIR --ref-dir DIR --blob-id ID [--iterations N] ...
        The crash loop: start nydusd, wait for the FUSE mount, start reader threads that
        read random files/ranges and compare every byte with the source, kill -9 the
        daemon after a random delay, detach the dead mount, check the chunk map on disk
        (as `chunkmap`), repeat. Prints one line per iteration and the totals; writes
        them as JSON with --json. Exit 1 on a wrong byte, a chunk-map lie, a read error
        while the daemon was alive, or a daemon that does not come up.

    cache_crash.py read-all SRC MNT [--json OUT] [--expect-complete]
        Read every regular file under MNT in 64 KiB blocks (readahead off) and compare
        each block that reads with SRC. EIO blocks are counted (the backend may be gone)
        unless --expect-complete. Exit 1 on any wrong byte or short read.
"""

import argparse
import ctypes
import errno
import json
import mmap
import os
import random
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time

KiB = 1 << 10
MiB = 1 << 20
CHUNK_MAP_MAGIC = 0x50414D43
CHUNK_MAP_VERSION = 1
CHUNK_MAP_HEADER = 4096
BLOB_META_MAGIC = 0xB10BB10B
BLOB_META_HEADER = 4096
CI_V2_FEATURE = 0x4


# ---- tree -------------------------------------------------------------------------------

LOW_ENTROPY = bytes(b"etaoinshrdlucmfw"[i % 16] for i in range(256))


def content(rng, n):
    """n random bytes; half the files get 4-bit entropy (compressible, still unique)."""
    data = rng.randbytes(n)
    if rng.random() < 0.5:
        data = data.translate(LOW_ENTROPY)
    return data


def make_tree(a):
    rng = random.Random(a.seed)
    if os.path.exists(a.dest) and os.listdir(a.dest):
        sys.exit(f"{a.dest} exists and is not empty")
    os.makedirs(a.dest, exist_ok=True)
    budget = a.mib * MiB
    total = 0
    files = 0

    def put(rel, data):
        nonlocal total, files
        p = os.path.join(a.dest, rel)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        with open(p, "wb") as f:
            f.write(data)
        total += len(data)
        files += 1

    # Chunk-boundary sizes (64 KiB chunks) and tiny files.
    for n in (0, 1, 4095, 4096, 4097, 65535, 65536, 65537, 131072 + 1, 3 * 65536 - 1):
        put(f"edge/size-{n}", content(rng, n))
    # Big files: many chunks each (~45 % of the budget).
    big = 0
    i = 0
    while big < budget * 45 // 100:
        n = rng.randint(2 * MiB, 9 * MiB) + rng.randrange(65536)
        put(f"big/file-{i:02d}.bin", content(rng, n))
        big += n
        i += 1
    # Medium files (~40 %), a few directories deep.
    med = 0
    i = 0
    while med < budget * 40 // 100:
        n = rng.randint(64 * KiB, 1536 * KiB)
        put(f"medium/d{i % 7}/sub{i % 3}/m-{i:03d}", content(rng, n))
        med += n
        i += 1
    # Many small files (the rest): one chunk each, packed back to back in the blob.
    i = 0
    while total < budget:
        n = rng.choice((rng.randint(1, 512), rng.randint(512, 8 * KiB), rng.randint(8 * KiB, 60 * KiB)))
        put(f"small/s{i % 16:02d}/f-{i:04d}.dat", content(rng, n))
        i += 1
    # A whole-file duplicate (dedup: two files share chunks).
    with open(os.path.join(a.dest, "medium/d0/sub0/m-000"), "rb") as f:
        put("dup/copy-of-m-000", f.read())
    print(f"tree: {files} files, {total} bytes ({total / MiB:.1f} MiB), seed {a.seed}")
    return 0


# ---- blob meta / chunk map ----------------------------------------------------------------

def parse_blob_meta(path):
    """[(uncompressed_offset, uncompressed_size)] by ci index, from a blob.meta cache file."""
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < BLOB_META_HEADER:
        raise ValueError(f"{path}: too short")
    hdr = data[-BLOB_META_HEADER:]
    magic, features, _ci_comp, entries, _ci_off, _ci_csize, ci_usize = struct.unpack_from("<IIIIQQQ", hdr)
    (magic2,) = struct.unpack_from("<I", hdr, BLOB_META_HEADER - 4)
    if magic != BLOB_META_MAGIC or magic2 != BLOB_META_MAGIC:
        raise ValueError(f"{path}: bad blob meta magic")
    if entries == 0 or ci_usize % entries:
        raise ValueError(f"{path}: {entries} entries in {ci_usize} bytes")
    esize = ci_usize // entries
    if esize not in (16, 24) or (esize == 24) != bool(features & CI_V2_FEATURE):
        raise ValueError(f"{path}: entry size {esize} with features {features:#x}")
    chunks = []
    for i in range(entries):
        uncomp, comp = struct.unpack_from("<QQ", data, i * esize)
        if esize == 24:
            uoff = (uncomp & 0xFFFFFFFF) << 12
            usize = ((uncomp >> 32) & 0xFFFFFF) + 1
        else:
            uoff = uncomp & 0x00000FFFFFFFF000
            usize = (((uncomp >> 8) & 0xF) << 20 | (uncomp >> 44)) + 1
        chunks.append((uoff, usize))
    return chunks


class RefBlob:
    def __init__(self, ref_dir, blob_id):
        self.blob_id = blob_id
        self.chunks = parse_blob_meta(os.path.join(ref_dir, blob_id + ".blob.meta"))
        with open(os.path.join(ref_dir, blob_id + ".blob.data"), "rb") as f:
            self.data = f.read()
        self.size = len(self.data)
        for i, (o, n) in enumerate(self.chunks):
            if o + n > self.size:
                raise ValueError(f"chunk {i} {o:#x}+{n} beyond the reference layout ({self.size})")


def read_chunk_map(path, count):
    """(state, set of ready ci) as the daemon would see the file on open."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        return "absent", set()
    nwords = (count + 63) // 64
    if len(raw) != CHUNK_MAP_HEADER + nwords * 8:
        return "bad-size", set()
    magic, version, n = struct.unpack_from("<III", raw)
    if magic != CHUNK_MAP_MAGIC or version != CHUNK_MAP_VERSION or n != count:
        return "bad-header", set()
    words = struct.unpack_from(f"<{nwords}Q", raw, CHUNK_MAP_HEADER)
    if count % 64 and nwords and words[-1] >> (count % 64):
        return "stray-bits", set()
    ready = set()
    for w, v in enumerate(words):
        while v:
            low = v & -v
            ready.add(w * 64 + low.bit_length() - 1)
            v ^= low
    return "ok", ready


def check_chunk_map(work_dir, ref):
    """Verify every ready bit the daemon would trust. Returns a dict of figures; 'lies' lists
    (ci, uoff, usize, wrong_bytes, all_zero) of chunks whose cached bytes differ."""
    mp = os.path.join(work_dir, ref.blob_id + ".chunk_map")
    dp = os.path.join(work_dir, ref.blob_id + ".blob.data")
    state, ready = read_chunk_map(mp, len(ref.chunks))
    out = {"map_state": state, "ready": len(ready), "verified": 0, "lies": [], "trusted": True}
    try:
        dsize = os.path.getsize(dp)
    except FileNotFoundError:
        dsize = -1
    if not ready:
        return out
    if dsize != ref.size:
        # The daemon resets the map when the data file has the wrong size: not trusted.
        out["trusted"] = False
        out["map_state"] = f"{state}, data file size {dsize} != {ref.size} (map would be reset)"
        return out
    with open(dp, "rb") as f:
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
            for ci in sorted(ready):
                o, n = ref.chunks[ci]
                got = m[o:o + n]
                want = ref.data[o:o + n]
                if got != want:
                    wrong = sum(1 for x, y in zip(got, want) if x != y)
                    out["lies"].append((ci, o, n, wrong, got.count(0) == n))
                else:
                    out["verified"] += 1
    return out


def cmd_chunkmap(a):
    ref = RefBlob(a.ref_dir, a.blob_id)
    r = check_chunk_map(a.work_dir, ref)
    for ci, o, n, wrong, zero in r["lies"][:20]:
        print(f"LIE: chunk {ci} at {o:#x}+{n} marked ready but {wrong} bytes differ"
              f"{' (all zeros: never written)' if zero else ''}")
    print(f"chunk map: {r['map_state']}, {r['ready']}/{len(ref.chunks)} chunks ready, "
          f"{r['verified']} verified on disk, {len(r['lies'])} lies")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"chunks": len(ref.chunks), "ready": r["ready"], "verified": r["verified"],
                       "lies": len(r["lies"]), "map_state": r["map_state"]}, f)
    if r["lies"]:
        return 1
    if a.expect_all and r["verified"] != len(ref.chunks):
        print(f"expected all {len(ref.chunks)} chunks ready and verified")
        return 1
    return 0


# ---- source files -----------------------------------------------------------------------

def regular_files(root):
    out = []
    for d, _, names in os.walk(root):
        for n in sorted(names):
            p = os.path.join(d, n)
            if os.path.isfile(p) and not os.path.islink(p):
                out.append((os.path.relpath(p, root), os.path.getsize(p)))
    out.sort()
    return out


def load_tree(root):
    files = regular_files(root)
    data = {}
    for rel, _ in files:
        with open(os.path.join(root, rel), "rb") as f:
            data[rel] = f.read()
    return files, data


def count_diff(got, want):
    return sum(1 for x, y in zip(got, want) if x != y)


# ---- read-all ---------------------------------------------------------------------------

def cmd_read_all(a):
    block = a.block
    files = regular_files(a.src)
    st = {"files": len(files), "files_complete": 0, "files_with_eio": 0, "files_wrong": 0, "blocks_ok": 0, "blocks_eio": 0,
          "bytes_checked": 0, "wrong_bytes": 0, "wrong_blocks": 0, "short_reads": 0, "other_errors": 0}
    problems = []
    for rel, size in files:
        with open(os.path.join(a.src, rel), "rb") as f:
            want_all = f.read()
        eio = bad_file = False
        try:
            fd = os.open(os.path.join(a.mnt, rel), os.O_RDONLY)
        except OSError as e:
            st["other_errors"] += 1
            problems.append(f"{rel}: open: {e}")
            continue
        try:
            # Readahead off: each pread asks the daemon for its own block only, so one
            # uncached chunk doesn't fail reads of its cached neighbours.
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)
            for off in range(0, max(size, 1), block):
                want = want_all[off:off + block]
                try:
                    got = os.pread(fd, block, off)
                except OSError as e:
                    if e.errno == errno.EIO and not a.expect_complete:
                        st["blocks_eio"] += 1
                        eio = True
                        continue
                    st["other_errors"] += 1
                    problems.append(f"{rel} @{off}: {e}")
                    eio = True
                    continue
                if got != want:
                    if len(got) != len(want):
                        st["short_reads"] += 1
                    w = count_diff(got, want)
                    st["wrong_bytes"] += w
                    st["wrong_blocks"] += 1
                    bad_file = True
                    problems.append(f"{rel} @{off}: {len(got)} bytes read, {len(want)} expected, {w} differ")
                    continue
                st["blocks_ok"] += 1
                st["bytes_checked"] += len(got)
        finally:
            os.close(fd)
        st["files_wrong" if bad_file else "files_with_eio" if eio else "files_complete"] += 1
    for p in problems[:30]:
        print("PROBLEM", p)
    print(f"read-all: {st['files']} files: {st['files_complete']} read completely, {st['files_with_eio']} with "
          f"EIO blocks, {st['files_wrong']} with wrong bytes; {st['blocks_ok']} blocks ({st['bytes_checked']} bytes) checked, {st['blocks_eio']} EIO, "
          f"{st['wrong_bytes']} wrong bytes, {st['short_reads']} short reads, {st['other_errors']} other errors")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(st, f)
    bad = st["wrong_bytes"] or st["wrong_blocks"] or st["short_reads"] or st["other_errors"]
    if a.expect_complete and st["blocks_eio"]:
        bad = True
    return 1 if bad else 0


# ---- the crash loop ---------------------------------------------------------------------

libc = ctypes.CDLL(None, use_errno=True)
MNT_DETACH = 2


def is_mounted(mnt):
    with open("/proc/self/mountinfo") as f:
        for line in f:
            if line.split(" ", 5)[4] == mnt:
                return True
    return False


def detach(mnt):
    """Lazily unmount every mount stacked on mnt (dead FUSE mounts included)."""
    n = 0
    while is_mounted(mnt) and n < 10:
        if libc.umount2(mnt.encode(), MNT_DETACH) != 0:
            subprocess.run(["fusermount3", "-u", "-z", mnt], stderr=subprocess.DEVNULL)
        n += 1
    return not is_mounted(mnt)


def api_get(sock_path, path, timeout=0.5):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(sock_path)
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".encode())
        buf = b""
        while True:
            head, sep, body = buf.partition(b"\r\n\r\n")
            if sep:
                length = None
                for line in head.split(b"\r\n")[1:]:
                    k, _, v = line.partition(b":")
                    if k.strip().lower() == b"content-length":
                        length = int(v)
                if length is not None and len(body) >= length:
                    return json.loads(body[:length])
            d = s.recv(65536)
            if not d:
                return json.loads(body) if sep else None
            buf += d
    except (OSError, ValueError):
        return None
    finally:
        s.close()


class Readers:
    """Reader threads on the mount; every byte read is compared with the source."""

    def __init__(self, mnt, files, data, rng, nthreads, switch_at=None):
        self.mnt = mnt
        self.files = files
        self.data = data
        self.killed = threading.Event()
        self.lock = threading.Lock()
        self.reads_ok = 0        # reads that returned all requested bytes, all checked
        self.partial = 0         # short reads (only after the kill), their bytes checked
        self.bytes_checked = 0
        self.wrong_bytes = 0
        self.errors_after_kill = 0
        self.unexpected = []     # errors/short reads while the daemon was alive
        self.wrong = []
        self.inflight = 0
        # A random subset of the files per iteration, so the cache fills unevenly.
        k = max(1, int(len(files) * rng.uniform(0.03, 0.25)))
        self.subset = rng.sample(files, k)
        # From switch_at on, another subset: new misses after the first persist (the
        # daemon persists its map once its writes pause for a second, here about a
        # second after the first subset is cached), so some kills land while the
        # map holds bits and fetches are writing more.
        self.switch_at = switch_at
        self.subset2 = rng.sample(files, max(1, int(len(files) * rng.uniform(0.03, 0.25))))
        self.threads = [threading.Thread(target=self.run, args=(rng.randrange(1 << 30),), daemon=True)
                        for _ in range(nthreads)]
        for t in self.threads:
            t.start()

    def run(self, seed):
        rng = random.Random(seed)
        while not self.killed.is_set():
            late = self.switch_at is not None and time.monotonic() >= self.switch_at
            rel, size = rng.choice(self.subset2 if late else self.subset)
            r = rng.random()
            if size == 0 or r < 0.25:
                off, ln = 0, max(size, 1)                    # whole file
            elif r < 0.5:
                off = rng.randrange(0, size, 65536)           # chunk-aligned
                ln = rng.randint(1, 4) * 65536
            else:
                off = rng.randrange(size)                     # anywhere
                ln = rng.randint(1, 512 * KiB)
            want = self.data[rel][off:off + ln]
            with self.lock:
                self.inflight += 1
            try:
                fd = os.open(os.path.join(self.mnt, rel), os.O_RDONLY)
                try:
                    got = os.pread(fd, ln, off)
                finally:
                    os.close(fd)
            except OSError as e:
                with self.lock:
                    self.inflight -= 1
                    if self.killed.is_set():
                        self.errors_after_kill += 1
                    else:
                        self.unexpected.append(f"{rel} @{off}+{ln}: {e}")
                return  # the mount is dead (or broken): stop this reader
            with self.lock:
                self.inflight -= 1
                ok_prefix = got == want[:len(got)]
                if not ok_prefix:
                    w = count_diff(got, want)
                    self.wrong_bytes += w
                    self.wrong.append(f"{rel} @{off}+{ln}: {w} of {len(got)} bytes read differ from the source")
                self.bytes_checked += len(got)
                if len(got) < len(want):
                    if self.killed.is_set():
                        self.partial += 1
                    else:
                        self.unexpected.append(f"{rel} @{off}+{ln}: short read of {len(got)} (want {len(want)})")
                        return
                else:
                    self.reads_ok += 1

    def join(self, timeout):
        end = time.monotonic() + timeout
        for t in self.threads:
            t.join(max(0.0, end - time.monotonic()))
        return not any(t.is_alive() for t in self.threads)


def cmd_loop(a):
    files, data = load_tree(a.src)
    ref = RefBlob(a.ref_dir, a.blob_id)
    nchunks = len(ref.chunks)
    rng = random.Random(a.seed)
    os.makedirs(a.mnt, exist_ok=True)
    T = {"iterations": 0, "kills": 0, "kills_early": 0, "kills_short": 0, "kills_persist": 0,
         "kills_with_reads_in_flight": 0, "reads_checked": 0, "partial_reads_checked": 0,
         "bytes_checked": 0, "wrong_bytes": 0, "errors_after_kill": 0, "unexpected_errors": 0,
         "chunk_map_lies": 0, "chunks_verified_on_disk": 0, "chunks_total": nchunks,
         "ready_mem_at_kill_sum": 0, "ready_mem_samples": 0, "ready_disk_after_kill_sum": 0,
         "max_ready_disk": 0, "full_cache_kills": 0, "cache_wipes": 0, "start_failures": 0,
         "stuck_readers": 0, "untrusted_maps": 0,
         "persist_kills_map_grew": 0, "persist_kills_map_unchanged": 0}
    failures = []
    log_path = os.path.join(a.log_dir, "loop-daemon.log")
    t_start = time.monotonic()
    last_wipe_allowed = a.iterations - 2 * a.fresh_every  # the last stretch accumulates
    persists_since_wipe = 0
    prev_ready = 0
    for it in range(a.iterations):
        if it == 0 or (it % a.fresh_every == 0 and it <= last_wipe_allowed):
            shutil.rmtree(a.work_dir, ignore_errors=True)
            os.makedirs(a.work_dir)
            T["cache_wipes"] += 1
            persists_since_wipe = 0
            prev_ready = 0
        r = rng.random()
        kind = "early" if r < a.early_frac else ("persist" if r < a.early_frac + a.persist_frac else "short")
        if it == a.iterations - 2 and persists_since_wipe == 0:
            kind = "persist"  # leave something persisted for the checks after the loop
        persists_since_wipe += kind == "persist"
        with open(log_path, "w") as logf:
            t0 = time.monotonic()
            proc = subprocess.Popen([a.nydusd, "--bootstrap", a.boot, "--config", a.config, "--mountpoint",
                                     a.mnt, "--apisock", a.sock, "--log-level", "warn",
                                     "--thread-num", str(a.fuse_threads)],
                                    stdout=logf, stderr=subprocess.STDOUT)
        if a.pid_file:
            with open(a.pid_file, "w") as f:
                f.write(f"{proc.pid}\n")
        readers = None
        mounted = False
        if kind == "early":
            # Land in the daemon's start-up: blob meta load, data file sizing, map open.
            time.sleep(rng.uniform(0.0, 0.03))
        else:
            while time.monotonic() - t0 < 20:
                if is_mounted(a.mnt):
                    mounted = True
                    break
                if proc.poll() is not None:
                    break
                time.sleep(0.002)
            if not mounted:
                T["start_failures"] += 1
                with open(log_path) as f:
                    failures.append(f"iteration {it}: nydusd did not mount (exit {proc.poll()}): "
                                    + f.read()[-2000:])
            else:
                readers = Readers(a.mnt, files, data, rng, rng.randint(1, a.max_readers),
                                  switch_at=t0 + 1.6 if kind == "persist" else None)
                if kind == "short":
                    time.sleep(rng.uniform(a.min_delay_ms, a.max_delay_ms) / 1000)
                else:
                    # Around the first persist of the map (a second after the first
                    # subset is cached) and into the second subset's fetches.
                    time.sleep(max(0.0, t0 + rng.uniform(1.0, 2.0) - time.monotonic()))
        ready_mem = None
        if mounted and kind != "early":
            m = api_get(a.sock, "/api/v1/metrics/blobcache", timeout=0.3)
            # Upstream's object, with our per-blob list under "blobs".
            blobs = m.get("blobs") if isinstance(m, dict) else None
            if isinstance(blobs, list) and blobs:
                ready_mem = sum(int(b.get("chunks_ready", 0)) for b in blobs)
        inflight = 0
        if readers:
            readers.killed.set()
            with readers.lock:
                inflight = readers.inflight
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        T["kills"] += 1
        T["kills_" + kind] += 1
        if inflight:
            T["kills_with_reads_in_flight"] += 1
        if not detach(a.mnt):
            failures.append(f"iteration {it}: could not unmount {a.mnt}")
            break
        if readers:
            if not readers.join(10):
                T["stuck_readers"] += 1
                failures.append(f"iteration {it}: readers still blocked 10 s after the kill")
            T["reads_checked"] += readers.reads_ok
            T["partial_reads_checked"] += readers.partial
            T["bytes_checked"] += readers.bytes_checked
            T["wrong_bytes"] += readers.wrong_bytes
            T["errors_after_kill"] += readers.errors_after_kill
            T["unexpected_errors"] += len(readers.unexpected)
            for w in readers.wrong[:5]:
                failures.append(f"iteration {it}: WRONG BYTES {w}")
            for u in readers.unexpected[:5]:
                failures.append(f"iteration {it}: read failed while the daemon was alive: {u}")
        # The chunk map on disk right after the crash: every trusted bit over right bytes.
        c = check_chunk_map(a.work_dir, ref)
        T["chunks_verified_on_disk"] += c["verified"]
        T["chunk_map_lies"] += len(c["lies"])
        T["ready_disk_after_kill_sum"] += c["ready"]
        T["max_ready_disk"] = max(T["max_ready_disk"], c["ready"])
        if not c["trusted"]:
            T["untrusted_maps"] += 1
        if c["ready"] == nchunks:
            T["full_cache_kills"] += 1
        if kind == "persist":
            # Grew: the kill came after a persist; unchanged: before it or inside it.
            T["persist_kills_map_grew" if c["ready"] > prev_ready else "persist_kills_map_unchanged"] += 1
        prev_ready = c["ready"]
        for ci, o, n, wrong, zero in c["lies"][:5]:
            failures.append(f"iteration {it}: CHUNK MAP LIE: chunk {ci} at {o:#x}+{n} marked ready, {wrong} bytes "
                            f"differ{' (all zeros: never written)' if zero else ''}")
        if ready_mem is not None:
            T["ready_mem_at_kill_sum"] += ready_mem
            T["ready_mem_samples"] += 1
        T["iterations"] += 1
        rd = readers
        print(f"iter {it:3d} {kind:7s} t={time.monotonic() - t0:5.3f}s "
              f"readers={len(rd.threads) if rd else 0} reads={rd.reads_ok if rd else 0} "
              f"inflight@kill={inflight} ready(mem)@kill={ready_mem if ready_mem is not None else '-'} "
              f"ready(disk)={c['ready']}/{nchunks} verified={c['verified']} lies={len(c['lies'])}"
              f"{'' if c['trusted'] else ' [' + c['map_state'] + ']'}", flush=True)
        if (rd and (rd.wrong or rd.unexpected)) or c["lies"] or not mounted and kind != "early":
            shutil.copy(log_path, os.path.join(a.log_dir, f"loop-daemon.{it}.log"))
        if len(failures) > 50:
            break
    T["seconds"] = round(time.monotonic() - t_start, 1)
    T["avg_ready_mem_at_kill"] = round(T["ready_mem_at_kill_sum"] / max(1, T["ready_mem_samples"]), 1)
    T["avg_ready_disk_after_kill"] = round(T["ready_disk_after_kill_sum"] / max(1, T["iterations"]), 1)
    for f in failures[:50]:
        print("FAILURE", f)
    print("totals: " + json.dumps(T))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(T, f)
    bad = (failures or T["wrong_bytes"] or T["chunk_map_lies"] or T["unexpected_errors"]
           or T["iterations"] != a.iterations)
    return 1 if bad else 0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("tree")
    p.add_argument("dest")
    p.add_argument("--seed", type=int, default=4242)
    p.add_argument("--mib", type=int, default=60)
    p.set_defaults(fn=make_tree)

    p = sub.add_parser("chunkmap")
    p.add_argument("work_dir")
    p.add_argument("ref_dir")
    p.add_argument("blob_id")
    p.add_argument("--json")
    p.add_argument("--expect-all", action="store_true")
    p.set_defaults(fn=cmd_chunkmap)

    p = sub.add_parser("read-all")
    p.add_argument("src")
    p.add_argument("mnt")
    p.add_argument("--block", type=int, default=65536)
    p.add_argument("--json")
    p.add_argument("--expect-complete", action="store_true")
    p.set_defaults(fn=cmd_read_all)

    p = sub.add_parser("loop")
    for opt in ("--nydusd", "--boot", "--config", "--mnt", "--sock", "--src", "--work-dir", "--ref-dir",
                "--blob-id", "--log-dir"):
        p.add_argument(opt, required=True)
    p.add_argument("--json")
    p.add_argument("--pid-file", help="write the running daemon's pid here (for cleanup)")
    p.add_argument("--iterations", type=int, default=240)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--fresh-every", type=int, default=15, help="wipe the cache dir every N iterations")
    p.add_argument("--early-frac", type=float, default=0.1, help="kills during start-up")
    p.add_argument("--persist-frac", type=float, default=0.25, help="kills 1-2 s in (around the map persist)")
    p.add_argument("--min-delay-ms", type=float, default=5)
    p.add_argument("--max-delay-ms", type=float, default=150)
    p.add_argument("--max-readers", type=int, default=4)
    p.add_argument("--fuse-threads", type=int, default=4)
    p.set_defaults(fn=cmd_loop)
    a = ap.parse_args()
    for k in ("mnt", "work_dir", "src"):
        if getattr(a, k, None):
            setattr(a, k, os.path.abspath(getattr(a, k)))
    return a.fn(a)


if __name__ == "__main__":
    sys.exit(main())
