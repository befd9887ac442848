#!/usr/bin/env bash
# shellcheck disable=SC2016
# Lazy loading, proven from the registry's side: a ~200 MiB image whose blob sits in
# Debian's docker-registry, running in its own network namespace (lib/netns.sh, a
# light 2 ms RTT), mounted by nydusd (FUSE, registry backend, fresh blob cache, no
# prefetch) in the root namespace. Mounting fetches only the blob meta; reading ONE
# 4 KiB file fetches at most a few chunks — counted by nydusd's backend metrics and,
# independently, by the registry's access log (the size of every blob GET response);
# then the whole mounted tree equals the source, every chunk having been fetched once.
# Faults: the registry killed (EIO in bounded time, daemon up) and restarted (right
# bytes again); one byte of the blob inverted in the registry's storage (EIO for the
# file holding it, digest_failures counted, no wrong bytes).
# Needs root, /dev/fuse, docker-registry and `ip netns` (else exit 77).
#
# Env: NYDUS_BIN_DIR, NYDUS_TEST_TMP (default /var/tmp), KEEP_WORK=1,
#      REMOTE_LAZY_MB (source size, default 200).
set -uo pipefail
# shellcheck source-path=SCRIPTDIR source=lib/common.sh
source "$(dirname "$0")/lib/common.sh"
# shellcheck source-path=SCRIPTDIR source=lib/netns.sh
source "$LIB_DIR/netns.sh"

[ "$(id -u)" -eq 0 ] || skip "needs root (network namespace, FUSE mount)"
[ -c /dev/fuse ] || skip_kernel "no /dev/fuse"
command -v docker-registry >/dev/null || skip "docker-registry not installed"
command -v ip >/dev/null || skip "iproute2 (ip) not installed"
PROBE_NS=nyprobe$$
ip netns add "$PROBE_NS" 2>/dev/null || skip "ip netns add does not work here"
ip netns del "$PROBE_NS"
need_nydus_image
NYDUSD=${NYDUSD:-$NYDUS_BIN_DIR/nydusd}
[ -x "$NYDUSD" ] || die "nydusd not found at $NYDUSD (build first; set NYDUS_BIN_DIR)"
SIZE_MB=${REMOTE_LAZY_MB:-200}

WORK=$(mktemp -d "${NYDUS_TEST_TMP:-/var/tmp}/nydus-remote.XXXXXX") || die "mktemp"
LOG_DIR=$WORK/logs
mkdir -p "$LOG_DIR"
NS=nyrl$$
DAEMON_PID=
REGISTRY_PID=
cleanup() {
  if [ -n "$DAEMON_PID" ] && kill -0 "$DAEMON_PID" 2>/dev/null; then
    kill -TERM "$DAEMON_PID" 2>/dev/null
    for _ in $(seq 50); do kill -0 "$DAEMON_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$DAEMON_PID" 2>/dev/null
  fi
  [ -d "$WORK/mnt" ] && { fusermount3 -u "$WORK/mnt" 2>/dev/null || umount -l "$WORK/mnt" 2>/dev/null; }
  [ -n "$REGISTRY_PID" ] && kill "$REGISTRY_PID" 2>/dev/null && wait "$REGISTRY_PID" 2>/dev/null
  netns_down "$NS" >/dev/null 2>&1
  umount_below "$WORK"
  if [ "${KEEP_WORK:-0}" = 1 ]; then echo "kept $WORK"; return; fi
  rm -rf "$WORK"
}
trap cleanup EXIT

# ---- 1. a ~200 MiB tree and its image ------------------------------------------------------
SRC=$WORK/src
make_src() {
  "$PY" - "$SRC" "$SIZE_MB" <<'PY'
# 3 big files (most of the size; 64 KiB blocks, random or text-like), 64 medium
# files, 3000 small ones (0-16 KiB), the 4 KiB target, a few empty files, symlinks
# and nested directories. Deterministic.
import os, random, sys
src, total = sys.argv[1], int(sys.argv[2]) << 20
rng = random.Random(3)
def text(k):
    return (b"lazy loading line %d of a text-like block\n" % k) * 1600
def mixed(path, size):
    with open(path, "wb") as f:
        while size > 0:
            n = min(size, 1 << 16)
            f.write((rng.randbytes(n) if rng.random() < 0.5 else text(rng.randrange(1 << 20)))[:n])
            size -= n
os.makedirs(f"{src}/big"); os.makedirs(f"{src}/medium"); os.makedirs(f"{src}/etc/deep/er/still")
small = 0
for i in range(3000):
    d = f"{src}/small/d{i % 40:02d}"
    os.makedirs(d, exist_ok=True)
    n = rng.randrange(0, 16384)
    small += n
    with open(f"{d}/f{i:05d}", "wb") as f:
        f.write(rng.randbytes(n) if i % 2 else text(i)[:n])
medium = 0
for i in range(64):
    n = rng.randrange(64 << 10, 1 << 20)
    medium += n
    mixed(f"{src}/medium/m{i:02d}", n)
with open(f"{src}/etc/target_4k", "wb") as f:
    f.write(rng.randbytes(4096))
for i in range(3):
    open(f"{src}/etc/deep/empty{i}", "wb").close()
os.symlink("../big/file0", f"{src}/etc/link_to_big")
os.symlink("deep/er/still", f"{src}/etc/dirlink")
with open(f"{src}/etc/deep/er/still/leaf", "w") as f:
    f.write("leaf\n")
big = max(total - small - medium, 3 << 20) // 3
for i in range(3):
    mixed(f"{src}/big/file{i}", big + i * 4099)
PY
}
step "make a ~${SIZE_MB} MiB tree" make_src || die "cannot make the source tree"
IMG=$WORK/img
step "nydus-image create" "$NYDUS_IMAGE" create -B "$IMG/boot" -D "$IMG/blobs" -J "$IMG/create.json" "$SRC" ||
  die "cannot build the image"
BLOB=$(blob_ids "$IMG/create.json" | head -n1)
BLOB_SIZE=$(stat -c %s "$IMG/blobs/$BLOB")
read -r CI_BYTES CHUNK_SIZE < <("$NYDUS_IMAGE" inspect -B "$IMG/boot" -R blobs -J - |
  "$PY" -c 'import json,sys; b=json.load(sys.stdin)["blobs"][0]; print(b["ci_compressed_size"] + 4096, int(b["chunk_size"], 0))')
echo "blob $BLOB: $BLOB_SIZE bytes, chunk size $CHUNK_SIZE, blob meta fetch $CI_BYTES bytes"

# ---- 2. the registry, in a namespace behind a lightly shaped link ---------------------------
NS_IP=
ns_up() { NS_IP=$(netns_up "$NS" 2 0) && echo "namespace $NS at $NS_IP" && netns_measure "$NS" 8; }
step "netns: $NS up (2 ms RTT), link measured" ns_up || die "cannot set up the network namespace"
# (step runs shell functions in this shell: NS_IP is set here.)
REG=$NS_IP:5000
R=$WORK/registry
mkdir -p "$R/data"
cat >"$R/config.yml" <<YML
version: 0.1
log:
  level: warn
  accesslog:
    disabled: false
storage:
  filesystem:
    rootdirectory: $R/data
http:
  addr: $REG
YML
start_ns_registry() {
  ip netns exec "$NS" docker-registry serve "$R/config.yml" >"$R/log" 2>&1 &
  REGISTRY_PID=$!
  for _ in $(seq 100); do curl -sf "http://$REG/v2/" >/dev/null && return 0; sleep 0.1; done
  cat "$R/log"; return 1
}
step "registry: docker-registry serving inside $NS on $REG" start_ns_registry || die "no registry"
# Pushed from inside the namespace (its own loopback): no traffic on the link.
step "registry: push the blob" ip netns exec "$NS" bash -c "$(declare -f push_blob); push_blob \"\$@\"" _ \
  "$REG" lib/img "$IMG/blobs/$BLOB" || die "cannot push the blob"

# ---- 3. mount, read one 4 KiB file ------------------------------------------------------------
MNT=$WORK/mnt
SOCK=$WORK/nydusd.sock
mkdir -p "$MNT" "$WORK/cache"
cat >"$WORK/config.json" <<JSON
{"device": {"backend": {"type": "registry", "config": {"scheme": "http", "host": "$REG", "repo": "lib/img"}},
            "cache": {"type": "blobcache", "config": {"work_dir": "$WORK/cache"}}},
 "mode": "direct", "digest_validate": true, "enable_xattr": true, "amplify_io": 1048576,
 "fs_prefetch": {"enable": false}}
JSON

# reg_gets: "count bytes" of the blob GETs (200/206) in the access log so far. The
# registry logs a request once its response is written: wait until N lines are there.
reg_gets() {
  local want=${1:-0} i out
  for i in $(seq 50); do
    out=$(awk '$6 == "\"GET" && $7 ~ /\/blobs\/sha256:/ && ($9 == 200 || $9 == 206) {n++; s += $10} END {print n+0, s+0}' "$R/log")
    [ "${out%% *}" -ge "$want" ] && break
    sleep 0.1
  done
  echo "$out"
}
# nydusd_fetched: "requests bytes" from nydusd's backend metrics, once they have not
# changed for 0.5 s (a read may start background read-ahead that lands later).
nydusd_fetched() {
  local a b i
  a=$(curl -sf --unix-socket "$SOCK" http://localhost/api/v1/metrics/backend |
    "$PY" -c 'import json,sys; d=json.load(sys.stdin); print(d["read_count"], d["read_amount_total"])')
  for i in $(seq 20); do
    sleep 0.5
    b=$(curl -sf --unix-socket "$SOCK" http://localhost/api/v1/metrics/backend |
      "$PY" -c 'import json,sys; d=json.load(sys.stdin); print(d["read_count"], d["read_amount_total"])')
    [ "$a" = "$b" ] && break
    a=$b
  done
  echo "$a"
}
start_daemon() {
  "$NYDUSD" --bootstrap "$IMG/boot" --config "$WORK/config.json" --mountpoint "$MNT" --apisock "$SOCK" \
    --log-level info --thread-num 4 >"$LOG_DIR/nydusd.log" 2>&1 &
  DAEMON_PID=$!
  for i in $(seq 200); do
    if awk -v d="$MNT" '$5 == d {f=1} END {exit !f}' /proc/self/mountinfo && [ -S "$SOCK" ]; then
      echo "mounted after $i polls (pid $DAEMON_PID)"; return 0
    fi
    kill -0 "$DAEMON_PID" 2>/dev/null || { echo "nydusd exited early"; cat "$LOG_DIR/nydusd.log"; return 1; }
    sleep 0.1
  done
  echo "not mounted after 20s"; cat "$LOG_DIR/nydusd.log"; return 1
}
step "nydusd: mount (registry backend, fresh cache)" start_daemon || die "cannot mount"

mount_fetched_meta_only() {
  local n b rn rb
  read -r n b < <(nydusd_fetched)
  read -r rn rb < <(reg_gets 1)
  echo "after mount: nydusd $n requests, $b bytes; registry $rn GETs, $rb bytes; blob meta $CI_BYTES bytes"
  [ "$n" -eq 1 ] && [ "$b" -eq "$CI_BYTES" ] && [ "$rn" -eq 1 ] && [ "$rb" -eq "$CI_BYTES" ]
}
step "mount fetched the blob meta only (nydusd and registry agree)" mount_fetched_meta_only
read -r N0 B0 < <(nydusd_fetched)
read -r RN0 RB0 < <(reg_gets 1)

step "read one 4 KiB file == source" cmp "$SRC/etc/target_4k" "$MNT/etc/target_4k"
# "A few chunks": at most 4 requests and 4 chunks' worth of bytes, against a blob
# that is ~25x that. The file is one 4 KiB chunk: 1 request of 4096 bytes, or, when
# the daemon amplifies reads to the chunks stored next to it (amplify_io), 1 request
# of up to amplify_io (1 MiB here).
LIMIT_REQS=4
LIMIT_BYTES=$((4 * CHUNK_SIZE))
one_file_nydusd() {
  local n b
  read -r n b < <(nydusd_fetched)
  echo "nydusd: $((n - N0)) requests, $((b - B0)) bytes for the 4 KiB file (limits $LIMIT_REQS, $LIMIT_BYTES; blob $BLOB_SIZE)"
  [ $((n - N0)) -ge 1 ] && [ $((n - N0)) -le "$LIMIT_REQS" ] && [ $((b - B0)) -le "$LIMIT_BYTES" ]
}
one_file_registry() {
  local rn rb n b
  read -r n b < <(nydusd_fetched)
  read -r rn rb < <(reg_gets $((RN0 + n - N0)))
  echo "registry access log: $((rn - RN0)) blob GETs, $((rb - RB0)) bytes for the 4 KiB file"
  grep '"GET /v2/lib/img/blobs/' "$R/log" | tail -n $((rn - RN0))
  [ $((rn - RN0)) -ge 1 ] && [ $((rn - RN0)) -le "$LIMIT_REQS" ] && [ $((rb - RB0)) -le "$LIMIT_BYTES" ] &&
    [ $((rb - RB0)) -eq $((b - B0)) ] && echo "== nydusd's count"
}
step "one 4 KiB file: nydusd fetched at most a few chunks" one_file_nydusd
step "one 4 KiB file: the registry served at most a few chunks (== nydusd's count)" one_file_registry
# The cache file is sparse: its allocated bytes are what was fetched, decompressed.
cache_small() {
  local alloc size
  alloc=$(stat -c '%b %B' "$WORK/cache/$BLOB.blob.data" | awk '{print $1 * $2}')
  size=$(stat -c %s "$WORK/cache/$BLOB.blob.data")
  curl -sf --unix-socket "$SOCK" http://localhost/api/v1/metrics/blobcache; echo
  echo "cache data file: $alloc bytes allocated of $size (limit $((4 * LIMIT_BYTES)))"
  [ "$alloc" -ge 4096 ] && [ "$alloc" -le $((4 * LIMIT_BYTES)) ]
}
step "one 4 KiB file: the cache holds a few MiB at most" cache_small

# ---- 4. the whole tree --------------------------------------------------------------------------
step "mounted tree (read through the registry) == source" compare_trees --ignore-root-mtime --mtime-ns "$SRC" "$MNT"
whole_fetched_once() {
  local n b rn rb
  read -r n b < <(nydusd_fetched)
  read -r rn rb < <(reg_gets "$n")
  echo "whole tree: nydusd $n requests, $b bytes; registry $rn GETs, $rb bytes; blob $BLOB_SIZE bytes"
  # every chunk fetched once: the blob's data and the blob meta, nothing twice
  [ "$rb" -eq "$b" ] && [ "$rn" -eq "$n" ] && [ "$b" -le $((BLOB_SIZE + CI_BYTES)) ] &&
    [ "$b" -ge $((BLOB_SIZE - CI_BYTES - (1 << 20))) ]
}
step "whole tree: each chunk fetched once (nydusd == registry, about the blob's size)" whole_fetched_once
step "whole tree: every chunk is cached" bash -c \
  'curl -sf --unix-socket "$1" http://localhost/api/v1/metrics/blobcache | tee /dev/stderr |
   "$2" -c "import json,sys; d=json.load(sys.stdin)[\"blobs\"][0]; sys.exit(0 if d[\"chunks_ready\"] == d[\"chunks_total\"] else 1)"' \
  _ "$SOCK" "$PY"
stop_daemon() {
  local rc
  kill -TERM "$DAEMON_PID" || return 1
  for _ in $(seq 100); do kill -0 "$DAEMON_PID" 2>/dev/null || break; sleep 0.1; done
  kill -0 "$DAEMON_PID" 2>/dev/null && { echo "nydusd still running 10 s after SIGTERM"; return 1; }
  wait "$DAEMON_PID"; rc=$?
  DAEMON_PID=
  echo "nydusd exit status $rc"
  [ "$rc" -eq 0 ] && ! awk -v d="$MNT" '$5 == d {f=1} END {exit !f}' /proc/self/mountinfo
}
step "nydusd: SIGTERM -> clean exit and unmount" stop_daemon

# ---- 5. faults: the registry dies and comes back; a tampered blob ------------------------------
# A second daemon on a fresh cache (short timeouts, one retry) mounts while the registry
# is up, then the registry is killed: reads of data not cached fail with EIO in bounded
# time, the daemon stays up, and once the registry is back the same reads return the
# source's bytes.
sed -e "s|$WORK/cache|$WORK/cache2|" -e 's|"repo": "lib/img"|"repo": "lib/img", "timeout": 3, "connect_timeout": 2, "retry_limit": 1|' \
  "$WORK/config.json" >"$WORK/config2.json"
cp "$WORK/config2.json" "$WORK/config.json.orig2"
FAULT_FILES=$(cd "$SRC" && find . -type f -size +64k | sort | head -n 5)
# The bound on one failed read: every attempt (retry_limit 1 -> 2) may spend
# connect_timeout 2 s + timeout 3 s, plus 2 s of slack for the FUSE round trip.
EIO_BOUND_MS=$(((1 + 1) * (2 + 3) * 1000 + 2000))
registry_down_up() {
  local f failed=0 t0 ms
  cp "$WORK/config2.json" "$WORK/config.json"
  start_daemon || return 1
  kill "$REGISTRY_PID"; wait "$REGISTRY_PID" 2>/dev/null
  for f in $FAULT_FILES; do
    t0=$(date +%s%N)
    if cat "$MNT/$f" >/dev/null 2>"$WORK/cat.err"; then
      echo "read $f succeeded with the registry down"; return 1
    fi
    ms=$((($(date +%s%N) - t0) / 1000000))
    grep -q "Input/output error" "$WORK/cat.err" || { echo "$f: not EIO: $(cat "$WORK/cat.err")"; return 1; }
    echo "$f: EIO after $ms ms (bound $EIO_BOUND_MS ms)"
    [ "$ms" -le "$EIO_BOUND_MS" ] || { echo "$f: EIO took $ms ms, over the bound"; return 1; }
    failed=$((failed + 1))
  done
  echo "registry down: $failed reads failed with EIO, each within $EIO_BOUND_MS ms"
  kill -0 "$DAEMON_PID" && curl -sf --unix-socket "$SOCK" http://localhost/api/v1/daemon >/dev/null ||
    { echo "the daemon did not survive"; return 1; }
  start_ns_registry || return 1
  for f in $FAULT_FILES; do cmp "$SRC/$f" "$MNT/$f" || return 1; done
  echo "registry back: the same $failed files read right"
}
step "faults: registry killed -> EIO in bounded time, daemon up; restarted -> right bytes" registry_down_up
step "faults: stop the second daemon" stop_daemon
# Invert one byte in the middle of the blob in the registry's own storage (the registry
# does not re-check content on GET): with digest_validate, the file holding it reads
# EIO and is counted, every other file still reads right, no wrong byte anywhere.
tampered_blob() {
  local data walk
  data=$(find "$R/data" -path "*/blobs/sha256/*/$BLOB/data" | head -n1)
  [ -f "$data" ] || { echo "blob data not found in the registry's storage"; return 1; }
  "$PY" -c 'import sys; f = open(sys.argv[1], "r+b"); f.seek(int(sys.argv[2])); b = f.read(1)
f.seek(int(sys.argv[2])); f.write(bytes([b[0] ^ 0xFF]))' "$data" $((BLOB_SIZE / 2)) || return 1
  sed "s|$WORK/cache2|$WORK/cache3|" "$WORK/config.json.orig2" >"$WORK/config.json"
  start_daemon || return 1
  walk=$(timeout 300 "$PY" "$LIB_DIR/hostile_walk.py" "$MNT" "$SRC") || { echo "walk failed"; return 1; }
  # "That file only": the failed reads must be of one content (one file, or copies of it
  # sharing the tampered chunk), and every other regular file of the source read right.
  echo "$walk" | "$PY" -c 'import hashlib, json, os, sys
w = json.load(sys.stdin)
src = sys.argv[1]
n, errs, wrong = w["entries"], w["errors"], w["wrong"]
print(f"tampered blob: {n} entries walked, {len(errs)} failed {errs[:3]}, wrong bytes in {len(wrong)}")
assert not wrong, wrong
assert errs and all(e[1] == "read" and e[2] == "EIO" for e in errs), errs
failed = {e[0] for e in errs}
regular = [os.path.relpath(os.path.join(d, f), src) for d, _, fs in os.walk(src) for f in fs
           if os.path.isfile(os.path.join(d, f)) and not os.path.islink(os.path.join(d, f))]
contents = {hashlib.sha256(open(os.path.join(src, f), "rb").read()).hexdigest() for f in failed}
print(f"failed files {sorted(failed)}: {len(contents)} distinct content(s); {len(regular) - len(failed)} of {len(regular)} regular files read right")
assert len(contents) == 1, "more than the file holding the tampered byte failed"
assert len(regular) - len(failed) > 0' "$SRC" || return 1
  curl -sf --unix-socket "$SOCK" http://localhost/api/v1/metrics/blobcache |
    "$PY" -c 'import json,sys; d=json.load(sys.stdin)["blobs"][0]; print("digest_failures", d["digest_failures"]); sys.exit(0 if d["digest_failures"] >= 1 else 1)'
}
step "faults: tampered blob -> EIO for the file holding it, counted, no wrong bytes" tampered_blob
step "faults: stop the third daemon" stop_daemon
teardown() {
  kill "$REGISTRY_PID" && wait "$REGISTRY_PID"
  REGISTRY_PID=
  netns_down "$NS"
  ! ip netns list | awk '{print $1}' | grep -qx "$NS" && [ ! -e "$NETNS_STATE_DIR/$NS.env" ]
}
step "registry stopped, netns removed" teardown

summary
