#!/usr/bin/env bash
# Remote lazy-loading benchmark (not a test): an image behind a docker-registry on
# a shaped link (RTT_MS round trip, RATE_MBIT each way; tests/integration/lib/netns.sh),
# mounted by nydusd (FUSE, registry backend, fresh blob cache for every phase):
#   - mount: nydusd start -> mount visible (it fetches the blob meta, the ci array);
#   - first byte: mount visible -> the first 4 KiB read of one small file returns;
#   - working set: a fixed random WS_PERCENT of the files (by bytes) read by
#     WS_READERS threads;
#   - sequential: `cat` of the two big files.
# Bytes fetched come from nydusd (/api/v1/metrics/backend read_amount_total) and,
# independently, from the registry's access log (response sizes of blob GETs).
# Ideals: the compressed bytes of the chunks the phase needs / link rate, plus one
# RTT per request a perfect client must wait for (see bench/README.md).
# Prints one markdown table. Needs root (network namespace, FUSE).
#
# Env: BUILD_DIR (./build), BENCH_TMP (/var/tmp), RTT_MS (20), RATE_MBIT (200),
#      BIG_MB (64, per big file, 2 files), MEDIUM_FILES (64, 256 KiB-2 MiB),
#      SMALL_FILES (4000, 0-16 KiB), WS_PERCENT (5), WS_READERS (8),
#      FUSE_THREADS (nydusd --thread-num, 4), AMPLIFY_IO (bytes, daemon default if unset),
#      READ_AHEAD_KB (the FUSE mount's bdi read_ahead_kb, kernel default if unset),
#      VARIANTS: extra rows, each PHASE:KEY=VALUE[,KEY=VALUE...] with PHASE ws or seq
#      and keys threads (--thread-num), amplify (amplify_io), ra (read_ahead_kb),
#      prefetch (seq only: fs_prefetch threads_count, --prefetch-files /big,
#      merging_size = amplify or 4 MiB); default "ws:threads=16 ws:amplify=131072
#      seq:ra=4096 seq:ra=4096,amplify=4194304 seq:ra=4096,prefetch=4,amplify=4194304";
#      "" for none,
#      NETNS_LINK (auto|netem|tun), ZRAN (1: zran rows of the same tree as a gzip
#      layer referenced in place; 0: none), ESTARGZ (1: eStargz rows, the tree
#      converted by ctr-remote and mounted from its TOC; 0: none), KEEP=1.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD_DIR=${BUILD_DIR:-$ROOT/build}
BIN=$BUILD_DIR/bin
LIB=$ROOT/tests/integration/lib
RTT_MS=${RTT_MS:-20}
RATE_MBIT=${RATE_MBIT:-200}
BIG_MB=${BIG_MB:-64}
MEDIUM_FILES=${MEDIUM_FILES:-64}
SMALL_FILES=${SMALL_FILES:-4000}
WS_PERCENT=${WS_PERCENT:-5}
WS_READERS=${WS_READERS:-8}
FUSE_THREADS=${FUSE_THREADS:-4}
AMPLIFY_IO=${AMPLIFY_IO:-}
READ_AHEAD_KB=${READ_AHEAD_KB:-}
VARIANTS=${VARIANTS-ws:threads=16 ws:amplify=131072 seq:ra=4096 seq:ra=4096,amplify=4194304 seq:ra=4096,prefetch=4,amplify=4194304}
[ "$(id -u)" -eq 0 ] || { echo "bench/remote.sh needs root" >&2; exit 1; }
command -v docker-registry >/dev/null || { echo "install docker-registry (apt-get)" >&2; exit 1; }
[ -x "$BIN/nydusd" ] || { echo "no $BIN/nydusd (build first)" >&2; exit 1; }
# shellcheck source-path=SCRIPTDIR/../tests/integration/lib source=netns.sh
source "$LIB/netns.sh"
# shellcheck source-path=SCRIPTDIR/../tests/integration/lib source=common.sh
source "$LIB/common.sh"

W=$(mktemp -d "${BENCH_TMP:-/var/tmp}/nydus-bench-remote.XXXXXX")
NS=nybench$$
DPID=
RPID=
cleanup() {
  if [ -n "$DPID" ]; then
    kill -TERM "$DPID" 2>/dev/null
    for _ in $(seq 100); do kill -0 "$DPID" 2>/dev/null || break; sleep 0.05; done
  fi
  for m in "$W"/mnt*; do [ -d "$m" ] && { umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null; }; done
  [ -n "$RPID" ] && kill "$RPID" 2>/dev/null && wait "$RPID" 2>/dev/null
  netns_down "$NS" >/dev/null 2>&1
  [ "${KEEP:-0}" = 1 ] && { echo "kept $W" >&2; return; }
  rm -rf "$W"
}
trap cleanup EXIT
T0=$SECONDS
log() { echo "# [$((SECONDS - T0))s] $*" >&2; }

# ---- source tree and image ------------------------------------------------------------
log "source tree: 2 x ${BIG_MB} MiB + ${MEDIUM_FILES} medium + ${SMALL_FILES} small files"
SRC=$W/src
python3 - "$SRC" "$BIG_MB" "$MEDIUM_FILES" "$SMALL_FILES" <<'PY' || exit 1
# Deterministic (seed 11). Big and medium files: 64 KiB blocks, each either fresh
# random bytes or text-like (compresses ~20x), half and half; small files 0-16 KiB,
# two thirds random.
import os, random, sys
src, big_mb, nmed, nsmall = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
rng = random.Random(11)
def text(k):
    return (b"the quick brown fox jumps over the lazy dog %d\n" * 1500).replace(b"%d", str(k).encode())[:1 << 16]
def mixed(path, size):
    with open(path, "wb") as f:
        k = 0
        while size > 0:
            n = min(size, 1 << 16)
            f.write((rng.randbytes(n) if rng.random() < 0.5 else text(rng.randrange(1 << 30)))[:n])
            size -= n; k += 1
os.makedirs(f"{src}/big"); os.makedirs(f"{src}/medium")
for i in range(2):
    mixed(f"{src}/big/file{i}", big_mb << 20)
for i in range(nmed):
    mixed(f"{src}/medium/m{i:03d}", rng.randrange(256 << 10, 2 << 20))
for i in range(nsmall):
    d = f"{src}/small/d{i % 50:02d}"
    os.makedirs(d, exist_ok=True)
    n = rng.randrange(0, 16384)
    with open(f"{d}/f{i:05d}", "wb") as f:
        f.write(rng.randbytes(n) if i % 3 else text(i)[:n])
PY
log "nydus-image create"
"$BIN/nydus-image" create -B "$W/boot" -D "$W/blobs" -J "$W/create.json" "$SRC" >"$W/create.log" 2>&1 || {
  cat "$W/create.log" >&2; exit 1; }
BLOB=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["blobs"][0])' "$W/create.json")
BOOT=$W/boot   # the image the phases mount (the zran rows switch it)
ROW=           # prefix of the phase names
BLOB_SIZE=$(stat -c %s "$W/blobs/$BLOB")
SRC_BYTES=$(find "$SRC" -type f -printf '%s\n' | awk '{s+=$1} END {print s}')

# The working set and the first-byte file, and the compressed bytes of their chunks
# (distinct chunks, from `nydus-image inspect`): the ideal bytes of each phase.
log "planning the working set"
python3 - "$SRC" "$WS_PERCENT" "$BIN/nydus-image" "$W/boot" "$W" <<'PY' || exit 1
import json, os, random, subprocess, sys
src, pct, tool, boot, w = sys.argv[1], float(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
files = sorted(os.path.relpath(os.path.join(d, f), src) for d, _, fs in os.walk(src) for f in fs)
size = {f: os.path.getsize(os.path.join(src, f)) for f in files}
total = sum(size.values())
rng = random.Random(5)
order = files[:]
rng.shuffle(order)
target, ws, got = total * pct / 100, [], 0
for f in order:
    if got + size[f] <= target:
        ws.append(f); got += size[f]
# first-byte file: the first small file of 8-16 KiB
first = next(f for f in files if f.startswith("small/") and 8192 <= size[f] <= 16384)
def chunks(paths):
    seen = {}
    for p in paths:
        out = subprocess.run([tool, "inspect", "-B", boot, "-J", "-", "/" + p], check=True,
                             capture_output=True, text=True).stdout
        for c in json.loads(out)["inode"].get("chunks", []):
            seen[(c["blob"], c["ci"])] = c["compressed_size"]
    return len(seen), sum(seen.values())
open(f"{w}/ws.list", "w").write("".join(p + "\n" for p in ws))
ws_chunks, ws_bytes = chunks(ws)
big_chunks, big_bytes = chunks(["big/file0", "big/file1"])
first_chunks, first_bytes = chunks([first])
with open(f"{w}/plan.env", "w") as f:
    f.write(f"WS_FILES={len(ws)}\nWS_SRC_BYTES={got}\nWS_CHUNKS={ws_chunks}\nWS_IDEAL_BYTES={ws_bytes}\n"
            f"BIG_CHUNKS={big_chunks}\nBIG_IDEAL_BYTES={big_bytes}\nFIRST_FILE={first}\n"
            f"FIRST_IDEAL_BYTES={first_bytes}\n")
PY
# shellcheck disable=SC1091
. "$W/plan.env"

# ---- the registry in a shaped namespace -----------------------------------------------
sync  # no writeback of the tree competing with the measurements
log "network namespace $NS: RTT ${RTT_MS} ms, ${RATE_MBIT} Mbit/s"
netns_up "$NS" "$RTT_MS" "$RATE_MBIT" >/dev/null || exit 1
NS_IP=$NETNS_IP
LINK_MODE=$NETNS_MODE
LINK_CHECK=$(netns_measure "$NS" 20)
log "link ($LINK_MODE): $LINK_CHECK"
netns_registry "$NS" "$W/registry" || exit 1
REG=$NETNS_REGISTRY RPID=$NETNS_REGISTRY_PID
# Pushed from inside the namespace: loopback there, not across the shaped link.
log "pushing the blob ($BLOB_SIZE bytes)"
ip netns exec "$NS" bash -c "$(declare -f push_blob); push_blob \"\$@\"" _ "$REG" lib/img "$W/blobs/$BLOB" >&2 ||
  { echo "push failed" >&2; exit 1; }

# The server's own floor: 4 KiB ranged blob GETs, one after another on one
# keep-alive connection across the link (median ms per request), and WS_READERS
# connections in parallel (requests/s).
log "calibrating the registry"
read -r REG_MS REG_RPS < <(python3 - "http://$REG/v2/lib/img/blobs/sha256:$BLOB" "$BLOB_SIZE" "$WS_READERS" <<'PY'
import http.client, statistics, sys, threading, time, urllib.parse
u, size, par = urllib.parse.urlparse(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
def get(c, i):
    off = (i * 7919 * 4096) % (size - 4096)
    c.request("GET", u.path, headers={"Range": f"bytes={off}-{off + 4095}"})
    r = c.getresponse(); assert len(r.read()) == 4096
c = http.client.HTTPConnection(u.hostname, u.port); get(c, 0)
ts = []
for i in range(40):
    t = time.monotonic(); get(c, i + 1); ts.append(time.monotonic() - t)
n = 40
def worker(k):
    c = http.client.HTTPConnection(u.hostname, u.port)
    for i in range(n): get(c, k * n + i)
th = [threading.Thread(target=worker, args=(k,)) for k in range(par)]
t = time.monotonic()
for x in th: x.start()
for x in th: x.join()
print(f"{statistics.median(ts) * 1000:.1f} {par * n / (time.monotonic() - t):.0f}")
PY
)
log "registry: ${REG_MS} ms per 4 KiB GET (serial, RTT included), ${REG_RPS} GETs/s with $WS_READERS connections"

# registry_mark: lines of the access log so far; registry_bytes MARK: "GETs bytes"
# of blob GETs logged after MARK (the combined log's size field: body bytes written).
registry_mark() { sleep 0.3; wc -l <"$W/registry/log"; }
registry_bytes() {
  sleep 0.3
  tail -n +"$(($1 + 1))" "$W/registry/log" |
    awk '$6 == "\"GET" && $7 ~ /\/blobs\/sha256:/ && ($9 == 200 || $9 == 206) {n++; s += $10} END {print n+0, s+0}'
}

# registry_cpu: the registry's CPU time so far (utime + stime, in clock ticks).
registry_cpu() { awk '{print $14 + $15}' "/proc/$RPID/stat"; }
CLK_TCK=$(getconf CLK_TCK)

# ---- nydusd -----------------------------------------------------------------------------
# nydusd_config TAG THREADS AMPLIFY PREFETCH_THREADS [nydusd args...]: a fresh cache
# and a config (registry backend; prefetch only when PREFETCH_THREADS is set, with
# merging_size = AMPLIFY or 4 MiB); sets MNT SOCK DLOG and NYDUSD_CMD.
nydusd_config() {
  local tag=$1 threads=$2 amplify=$3 pf=$4 extra="" pfcfg='{"enable": false}'
  shift 4
  [ -n "$amplify" ] && extra="\"amplify_io\": $amplify,"
  [ -n "$pf" ] && pfcfg="{\"enable\": true, \"threads_count\": $pf, \"merging_size\": ${amplify:-4194304}}"
  rm -rf "$W/cache-$tag"
  cat >"$W/cfg-$tag.json" <<JSON
{"device": {"backend": {"type": "registry", "config": {"scheme": "http", "host": "$REG", "repo": "lib/img"}},
            "cache": {"type": "blobcache", "config": {"work_dir": "$W/cache-$tag"}}},
 "mode": "direct", "digest_validate": false, "enable_xattr": true, $extra
 "fs_prefetch": $pfcfg}
JSON
  MNT=$W/mnt-$tag
  SOCK=$W/$tag.sock
  DLOG=$W/nydusd-$tag.log
  mkdir -p "$MNT"
  NYDUSD_CMD=("$BIN/nydusd" --bootstrap "$BOOT" --config "$W/cfg-$tag.json" --mountpoint "$MNT"
    --apisock "$SOCK" --thread-num "$threads" --log-level warn "$@")
}
start_nydusd() {
  nydusd_config "$@"
  "${NYDUSD_CMD[@]}" >"$DLOG" 2>&1 &
  DPID=$!
}
wait_mounted() {
  for _ in $(seq 3000); do
    awk -v d="$MNT" '$5 == d {f=1} END {exit !f}' /proc/self/mountinfo && [ -S "$SOCK" ] && return 0
    kill -0 "$DPID" 2>/dev/null || break
    sleep 0.005
  done
  echo "nydusd did not mount" >&2; cat "$DLOG" >&2; exit 1
}
set_read_ahead() {  # KB: the FUSE mount's bdi
  [ -n "$1" ] || return 0
  local dev
  dev=$(mountpoint -d "$MNT") && echo "$1" >"/sys/class/bdi/$dev/read_ahead_kb"
}
# stop_nydusd: SIGTERM and wait (phase 1's daemon is not our child: poll).
stop_nydusd() {
  kill -TERM "$DPID" 2>/dev/null
  for _ in $(seq 200); do kill -0 "$DPID" 2>/dev/null || break; sleep 0.05; done
  wait "$DPID" 2>/dev/null
  DPID=
}
backend_bytes() {
  curl -sf --unix-socket "$SOCK" http://localhost/api/v1/metrics/backend |
    python3 -c 'import json,sys; d=json.load(sys.stdin); print(d["read_count"], d["read_amount_total"])'
}
# backend_bytes_settled: the same once nothing changed for 0.3 s (up to ~10 s): a
# phase's bytes include fetches it started in the background (read-ahead).
backend_bytes_settled() {
  local a b
  a=$(backend_bytes)
  for _ in $(seq 30); do
    sleep 0.3
    b=$(backend_bytes)
    [ "$a" = "$b" ] && break
    a=$b
  done
  echo "$a"
}

# ---- phases -------------------------------------------------------------------------------
RESULTS=$W/results
: >"$RESULTS"
# record NAME SECONDS NYDUSD_REQS NYDUSD_BYTES REG_GETS REG_BYTES REG_CPU_S IDEAL_BYTES IDEAL_RTTS IDEAL_REQS [SRC_BYTES]
record() { echo "$*" >>"$RESULTS"; }

# Phase 1: mount, then the first byte of one small file. Python starts nydusd, so
# the mount time has no interpreter start-up in it.
run_first() {
  log "phase: mount + first byte"
  m0=$(registry_mark) c0=$(registry_cpu)
  nydusd_config first "$FUSE_THREADS" "$AMPLIFY_IO" ""
  read -r DPID t_mount pre_req pre_bytes t_first < <(python3 - "$MNT" "$SRC/$FIRST_FILE" "$FIRST_FILE" "$SOCK" "$DLOG" \
      "${NYDUSD_CMD[@]}" <<'PY'
import json, os, subprocess, sys, time
mnt, src, rel, sock, log, cmd = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5], sys.argv[6:]
t0 = time.monotonic()
p = subprocess.Popen(cmd, stdout=open(log, "w"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
print(p.pid, end=" ", flush=True)
while not any(l.split()[4] == mnt for l in open("/proc/self/mountinfo")):
    time.sleep(0.0005)
    if time.monotonic() - t0 > 30 or p.poll() is not None: sys.exit("no mount")
t_mount = time.monotonic() - t0
while not os.path.exists(sock): time.sleep(0.001)
# what the mount fetched (before the read)
m = json.loads(subprocess.run(["curl", "-sf", "--unix-socket", sock, "http://localhost/api/v1/metrics/backend"],
                              capture_output=True, text=True).stdout)
t1 = time.monotonic()
fd = os.open(os.path.join(mnt, rel), os.O_RDONLY)
data = os.read(fd, 4096)
t2 = time.monotonic()
os.close(fd)
assert data == open(src, "rb").read(4096), "first byte: wrong data"
print(f"{t_mount:.4f} {m['read_count']} {m['read_amount_total']} {t2 - t1:.4f}")
PY
  )
  [ -n "${t_first:-}" ] || { echo "mount / first-byte read failed" >&2; cat "$DLOG" >&2; exit 1; }
  read -r n_req n_bytes < <(backend_bytes_settled)
  m1=$(registry_mark)
  # The registry's view: the first blob GET is the mount's (blob meta), the rest the read's.
  read -r r_gets r_mount_bytes r_first_bytes <<<"$(tail -n +"$((m0 + 1))" "$W/registry/log" | head -n "$((m1 - m0))" |
    awk '$6 == "\"GET" && $7 ~ /\/blobs\/sha256:/ && ($9 == 200 || $9 == 206) {n++; if (n == 1) a = $10; else b += $10}
         END {print n+0, a+0, b+0}')"
  CI_BYTES=$("$BIN/nydus-image" inspect -B "$BOOT" -R blobs -J - |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["blobs"][0]["ci_compressed_size"] + 4096)')
  # ideal mount: a TCP handshake and one GET of the blob meta (ci array + 4 KiB header)
  c1=$(registry_cpu)
  record "${ROW}mount" "$t_mount" "$pre_req" "$pre_bytes" 1 "$r_mount_bytes" - "$CI_BYTES" 2 1
  record "${ROW}first_byte" "$t_first" "$((n_req - pre_req))" "$((n_bytes - pre_bytes))" "$((r_gets - 1))" "$r_first_bytes" \
    "$(awk -v a="$c0" -v b="$c1" -v hz="$CLK_TCK" 'BEGIN {printf "%.2f", (b - a) / hz}')" "$FIRST_IDEAL_BYTES" 1 1
  stop_nydusd
  MOUNT_REQS=$pre_req MOUNT_BYTES=$pre_bytes MOUNT_GET_BYTES=$r_mount_bytes
}
run_first

# run_ws NAME THREADS AMPLIFY RA / run_seq NAME THREADS AMPLIFY RA PREFETCH_THREADS:
# a fresh daemon; the clock starts when the mount is visible; bytes are everything
# the daemon fetched minus the mount's blob meta fetch (as measured in phase 1).
phase_bytes() {  # REGISTRY_MARK CPU0 -> "nydusd_reqs nydusd_bytes registry_gets registry_bytes registry_cpu_s"
  local b rg rb
  read -r -a b < <(backend_bytes_settled)
  read -r rg rb < <(registry_bytes "$1")
  echo "$((b[0] - MOUNT_REQS)) $((b[1] - MOUNT_BYTES)) $((rg - 1)) $((rb - MOUNT_GET_BYTES))" \
    "$(awk -v a="$2" -v b="$(registry_cpu)" -v hz="$CLK_TCK" 'BEGIN {printf "%.2f", (b - a) / hz}')"
}
run_ws() {
  local r0 c0 t
  r0=$(registry_mark) c0=$(registry_cpu)
  start_nydusd ws "$2" "$3" ""; wait_mounted; set_read_ahead "$4"
  t=$(python3 - "$MNT" "$W/ws.list" "$WS_READERS" "$SRC" <<'PY'
import os, sys, time
from concurrent.futures import ThreadPoolExecutor
mnt, files, n, src = sys.argv[1], open(sys.argv[2]).read().split("\n")[:-1], int(sys.argv[3]), sys.argv[4]
def rd(p):
    with open(os.path.join(mnt, p), "rb", buffering=0) as f:
        return b"".join(iter(lambda: f.read(1 << 20), b""))
t = time.monotonic()
with ThreadPoolExecutor(n) as ex: got = list(ex.map(rd, files))
t = time.monotonic() - t
if any(g != open(os.path.join(src, p), "rb").read() for g, p in zip(got, files)):
    sys.exit("working set: data differs from the source")
print(f"{t:.4f}")
PY
) || exit 1
  # shellcheck disable=SC2046
  record "$1" "$t" $(phase_bytes "$r0" "$c0") "$WS_IDEAL_BYTES" "$(((WS_FILES + WS_READERS - 1) / WS_READERS))" \
    "$WS_FILES" "$WS_SRC_BYTES"
  stop_nydusd
}
run_seq() {
  local pfargs=() r0 c0 t0 t1
  # --prefetch-files names a file listing image paths, one a line (as upstream)
  [ -n "$5" ] && { echo /big >"$W/prefetch.list"; pfargs=(--prefetch-files "$W/prefetch.list"); }
  r0=$(registry_mark) c0=$(registry_cpu)
  start_nydusd seq "$2" "$3" "$5" "${pfargs[@]}"; wait_mounted; set_read_ahead "$4"
  t0=$(date +%s.%N)
  cat "$MNT/big/file0" "$MNT/big/file1" >/dev/null
  t1=$(date +%s.%N)
  if ! cmp "$MNT/big/file0" "$SRC/big/file0" || ! cmp "$MNT/big/file1" "$SRC/big/file1"; then
    echo "sequential: data differs from the source" >&2; exit 1
  fi
  # shellcheck disable=SC2046
  record "$1" "$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.4f", b - a}')" $(phase_bytes "$r0" "$c0") \
    "$BIG_IDEAL_BYTES" 1 1 "$((2 * BIG_MB << 20))"
  stop_nydusd
}
log "phase: working set ($WS_FILES files, $WS_READERS readers)"
run_ws working_set "$FUSE_THREADS" "$AMPLIFY_IO" "$READ_AHEAD_KB"
log "phase: sequential read of the big files"
run_seq sequential "$FUSE_THREADS" "$AMPLIFY_IO" "$READ_AHEAD_KB" ""
for v in $VARIANTS; do
  phase=${v%%:*} th=$FUSE_THREADS amp=$AMPLIFY_IO ra=$READ_AHEAD_KB pf=
  IFS=, read -r -a kvs <<<"${v#*:}"
  for kv in "${kvs[@]}"; do
    case ${kv%%=*} in
      threads) th=${kv#*=} ;; amplify) amp=${kv#*=} ;; ra) ra=${kv#*=} ;; prefetch) pf=${kv#*=} ;;
      *) echo "unknown variant key in '$v'" >&2; exit 1 ;;
    esac
  done
  log "variant $v"
  case $phase in
    ws) run_ws "working_set[${v#*:}]" "$th" "$amp" "$ra" ;;
    seq) run_seq "sequential[${v#*:}]" "$th" "$amp" "$ra" "$pf" ;;
    *) echo "variant '$v': phase must be ws or seq" >&2; exit 1 ;;
  esac
done

# ---- the same tree as a zran image (issue 15) ---------------------------------------------
# The tree as one gzip tar layer, referenced in place (`create --type targz-ref`:
# a bootstrap and a small meta blob of inflate checkpoints; the layer itself is the
# data blob). Same link, same phases; the ideal bytes stay the Nydus blob's.
CONVERT_NOTE=
if [ "${ZRAN:-1}" = 1 ]; then
  log "zran: gzip layer of the tree; targz-ref vs a full conversion of that layer"
  tar -C "$SRC" --numeric-owner -cf - . | gzip -6 >"$W/layer.tar.gz"
  t0=$(date +%s.%N)
  "$BIN/nydus-image" create --type targz-ref -B "$W/boot-zran" -D "$W/zblobs" "$W/layer.tar.gz" >"$W/zran.log" 2>&1 || {
    cat "$W/zran.log" >&2; exit 1; }
  t1=$(date +%s.%N)
  "$BIN/nydus-image" create --type targz-rafs -B "$W/boot-full" -D "$W/fblobs" "$W/layer.tar.gz" >"$W/full.log" 2>&1 || {
    cat "$W/full.log" >&2; exit 1; }
  t2=$(date +%s.%N)
  CONVERT_NOTE=$(awk -v a="$t0" -v b="$t1" -v c="$t2" -v z="$(stat -c %s "$W/layer.tar.gz")" \
    'BEGIN {printf "zran: layer %d MiB gzip; create --type targz-ref %.2f s, a full targz-rafs conversion %.2f s (%.1fx);", z / 1048576, b - a, c - b, (c - b) / (b - a)}')
  log "$CONVERT_NOTE"
  for f in "$W/layer.tar.gz" "$W"/zblobs/*; do
    ip netns exec "$NS" bash -c "$(declare -f push_blob); push_blob \"\$@\"" _ "$REG" lib/img "$f" >&2 ||
      { echo "push of $f failed" >&2; exit 1; }
  done
  BOOT=$W/boot-zran ROW=zran:
  run_first
  log "zran: working set"
  run_ws "zran:working_set" "$FUSE_THREADS" "$AMPLIFY_IO" "$READ_AHEAD_KB"
  log "zran: sequential"
  run_seq "zran:sequential" "$FUSE_THREADS" "$AMPLIFY_IO" "$READ_AHEAD_KB" ""
fi

# ---- the same tree as an eStargz image (issue 15) ------------------------------------------
# The tree as one OCI layer (umoci), converted by Debian's `ctr-remote image convert
# --estargz --oci` in a private containerd with 1 MiB eStargz chunks (the Nydus rows'
# chunk size), mounted from its TOC (`create --type estargztoc-ref`: only a
# bootstrap; the eStargz layer is the data blob, its gzip members the chunks).
if [ "${ESTARGZ:-1}" = 1 ]; then
  for t in containerd ctr ctr-remote umoci; do
    command -v $t >/dev/null || { echo "install $t (scripts/setup.sh) or set ESTARGZ=0" >&2; exit 1; }
  done
  log "estargz: OCI layer of the tree, ctr-remote convert --estargz"
  E=$W/estargz
  mkdir -p "$E/cd/root" "$E/cd/state"
  (cd "$E" && umoci init --layout img && umoci new --image img:base && umoci unpack --image img:base b) >"$E/umoci.log" 2>&1 &&
    cp -a "$SRC/." "$E/b/rootfs/" && (cd "$E" && umoci repack --image img:v1 b && cd img && tar cf ../img.tar .) >>"$E/umoci.log" 2>&1 ||
    { cat "$E/umoci.log" >&2; exit 1; }
  cat >"$E/cd/config.toml" <<TOML
version = 2
root = "$E/cd/root"
state = "$E/cd/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$E/cd/containerd.sock"
[ttrpc]
  address = "$E/cd/containerd.sock.ttrpc"
TOML
  containerd --config "$E/cd/config.toml" >"$E/containerd.log" 2>&1 &
  CDPID=$!
  CTR=(--address "$E/cd/containerd.sock" -n bench)
  for _ in $(seq 100); do ctr "${CTR[@]}" version >/dev/null 2>&1 && break; sleep 0.2; done
  t0=$(date +%s.%N)
  { ctr "${CTR[@]}" images import "$E/img.tar" &&
    ctr-remote "${CTR[@]}" image convert --estargz --oci --estargz-chunk-size 1048576 \
      "$(ctr "${CTR[@]}" images ls -q | grep ':v1$' | head -1)" esgz:v1 &&
    ctr "${CTR[@]}" images export "$E/esgz.tar" esgz:v1; } >"$E/convert.log" 2>&1 || { cat "$E/convert.log" >&2; kill "$CDPID"; exit 1; }
  t1=$(date +%s.%N)
  kill "$CDPID"; wait "$CDPID" 2>/dev/null
  mkdir -p "$E/x" && tar -C "$E/x" -xf "$E/esgz.tar" || exit 1
  # The layer, and its TOC read from the footer (as tests/integration/estargz.sh does).
  python3 - "$E" <<'PY' || exit 1
import io, json, os, sys, tarfile, zlib
e = sys.argv[1]
def blob(d): return f"{e}/x/blobs/" + d.replace(":", "/")
m = json.load(open(blob(json.load(open(f"{e}/x/index.json"))["manifests"][0]["digest"])))
l, = m["layers"]
os.rename(blob(l["digest"]), f"{e}/layer")
b = open(f"{e}/layer", "rb").read()
off = int(b[-51:][16:32], 16)
t = tarfile.open(fileobj=io.BytesIO(zlib.decompressobj(31).decompress(b[off:len(b) - 51])))
open(f"{e}/toc.json", "wb").write(t.extractfile("stargz.index.json").read())
PY
  t2=$(date +%s.%N)
  "$BIN/nydus-image" create --type estargztoc-ref --blob-id "$(sha256sum "$E/layer" | cut -c1-64)" \
    --blob-data-size "$(printf %x "$(stat -c %s "$E/layer")")" -S 0x100000 -B "$W/boot-estargz" "$E/toc.json" \
    >"$E/create.log" 2>&1 || { cat "$E/create.log" >&2; exit 1; }
  t3=$(date +%s.%N)
  ESTARGZ_NOTE=$(awk -v a="$t0" -v b="$t1" -v c="$t2" -v d="$t3" -v z="$(stat -c %s "$E/layer")" \
    'BEGIN {printf "estargz: layer %d MiB; ctr-remote convert %.2f s, create --type estargztoc-ref %.2f s;", z / 1048576, b - a, d - c}')
  CONVERT_NOTE="$CONVERT_NOTE $ESTARGZ_NOTE"
  log "$ESTARGZ_NOTE"
  ip netns exec "$NS" bash -c "$(declare -f push_blob); push_blob \"\$@\"" _ "$REG" lib/img "$E/layer" >&2 ||
    { echo "push of the eStargz layer failed" >&2; exit 1; }
  BOOT=$W/boot-estargz ROW=estargz:
  run_first
  log "estargz: working set"
  run_ws "estargz:working_set" "$FUSE_THREADS" "$AMPLIFY_IO" "$READ_AHEAD_KB"
  log "estargz: sequential"
  run_seq "estargz:sequential" "$FUSE_THREADS" "$AMPLIFY_IO" "$READ_AHEAD_KB" ""
fi

# ---- report -------------------------------------------------------------------------------
python3 - "$RESULTS" "$RTT_MS" "$RATE_MBIT" "$REG_MS" "$REG_RPS" <<'PY'
import sys
rtt, rate = float(sys.argv[2]) / 1000, float(sys.argv[3]) * 1e6 / 8 or float("inf")  # s, bytes/s (0: no limit)
req_s, req_rate = float(sys.argv[4]) / 1000, float(sys.argv[5])
def mb(b): return f"{int(b) / 1e6:.2f}"
print("| phase | time (s) | ideal (s) | time / ideal | floor (s) | time / floor | nydusd: requests, MB | "
      "registry: GETs, MB, CPU s | ideal MB | fetched / ideal | MB/s file (wire) | link use |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for line in open(sys.argv[1]):
    f = line.split()
    name, t, nreq, nby, rg, rby, rcpu, ib, irtt, ireq = f[:10]
    src = int(f[10]) if len(f) > 10 else None
    t, ib, irtt, ireq = float(t), int(ib), int(irtt), int(ireq)
    ideal = ib / rate + irtt * rtt
    # with this registry: its measured time per request instead of the bare RTT,
    # and no faster than its request rate allows
    floor = max(ib / rate + irtt * req_s, ireq / req_rate)
    fetched = int(nby)
    mbps = f"{src / t / 1e6:.1f} ({fetched / t / 1e6:.1f})" if src else "-"
    use = f"{fetched / t / rate * 100:.0f}%" if src and rate != float("inf") else "-"
    def ratio(a, b): return f"{a / b:.2f}" if b > 0 else "-"
    print(f"| {name.replace('_', ' ')} | {t:.3f} | {ideal:.3f} | {ratio(t, ideal)} | {floor:.3f} | {ratio(t, floor)} | "
          f"{nreq}, {mb(nby)} | {rg}, {mb(rby)}, {rcpu} | {ib / 1e6:.2f} | {fetched / ib:.2f} | {mbps} | {use} |")
PY
echo
echo "image: $((SRC_BYTES >> 20)) MiB in $(find "$SRC" -type f | wc -l) files -> blob $((BLOB_SIZE >> 20)) MiB" \
  "($(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["compressor"])' "$W/create.json"), 1 MiB chunks);" \
  "working set: $WS_FILES files, $((WS_SRC_BYTES >> 10)) KiB, $WS_CHUNKS chunks;" \
  "link: RTT ${RTT_MS} ms, ${RATE_MBIT} Mbit/s ($LINK_MODE; measured: $LINK_CHECK);" \
  "registry: ${REG_MS} ms per serial 4 KiB GET, ${REG_RPS} GETs/s with $WS_READERS connections;" \
  "nydusd --thread-num $FUSE_THREADS, amplify_io ${AMPLIFY_IO:-default}, read_ahead_kb ${READ_AHEAD_KB:-default};" \
  "nydusd $(sha256sum "$BIN/nydusd" | cut -c1-12) built $(date -r "$BIN/nydusd" -u +%FT%TZ)" \
  "(source tree: $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$ROOT" diff --quiet HEAD -- src 2>/dev/null || echo ', src/ modified'));" \
  "$CONVERT_NOTE" "$(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg); $(uname -r); total $((SECONDS - T0)) s"
