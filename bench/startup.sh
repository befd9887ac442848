#!/usr/bin/env bash
# Start-up benchmark (not a test): the reason Nydus exists. A ≥300 MB OCI
# image (a Python runtime and a pile of libraries from this machine, in two
# layers) sits in a docker-registry behind a shaped link (a network namespace;
# default 20 ms RTT, 100 Mbit/s, see tests/integration/lib/netns.sh). "Start a
# container" = read every file a Python program opens at start inside the
# image's rootfs (recorded with strace in the unpacked image), for two
# workloads: `pass` (the interpreter's own start) and `import asyncio, json,
# http.client, email.parser, argparse, logging` (a program with imports);
# each measured three ways:
#   (a) OCI: pull the whole image (skopeo) + unpack it (umoci), then read;
#   (b) Nydus: fetch manifest + bootstrap, mount lazily with nydusd (FUSE,
#       registry backend), read — only the chunks read cross the link;
#   (c) Nydus + prefetch: the same image converted with the recorded list as
#       its prefetch table (--prefetch-file), nydusd prefetching it.
# Prints time and bytes over the link for each, and the ratios. Needs root.
# Env: RTT_MS (20), RATE_MBIT (100), IMAGE_MB (320), WORKLOAD (python code:
#      measure only this one), AMPLIFY_IO (nydusd's, bytes), BENCH_TMP
#      (/var/tmp), KEEP=1.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${BUILD_DIR:-$ROOT/build}/bin
LIB=$ROOT/tests/integration/lib
RTT_MS=${RTT_MS:-20}
RATE_MBIT=${RATE_MBIT:-100}
IMAGE_MB=${IMAGE_MB:-320}
if [ -n "${WORKLOAD:-}" ]; then
  WORKLOADS=("$WORKLOAD")
else
  WORKLOADS=("pass" "import asyncio, json, http.client, email.parser, argparse, logging")
fi
PY=python3
[ "$(id -u)" -eq 0 ] || { echo "bench/startup.sh needs root" >&2; exit 1; }
for t in umoci skopeo docker-registry strace; do command -v $t >/dev/null || { echo "needs $t" >&2; exit 1; }; done
# shellcheck source=../tests/integration/lib/common.sh
. "$LIB/common.sh"
# shellcheck source=../tests/integration/lib/netns.sh
. "$LIB/netns.sh"

W=$(mktemp -d "${BENCH_TMP:-/var/tmp}/nydus-bench-startup.XXXXXX")
NS=nydusstart$$
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
  for m in "$W"/mnt-*; do [ -d "$m" ] && { fusermount3 -u -z "$m" 2>/dev/null || umount -l "$m" 2>/dev/null; }; done
  netns_down "$NS" >/dev/null 2>&1
  [ "${KEEP:-0}" = 1 ] || rm -rf "$W"
}
trap cleanup EXIT
cd "$W" || exit 1
log() { echo "# $*" >&2; }
now() { date +%s.%N; }
secs() { "$PY" -c "print(f'{$2 - $1:.2f}')"; }

# ---- the image: python3 and its stdlib (layer 1), libraries as filler (layer 2) ----------
log "building a ${IMAGE_MB} MB image from this machine's files"
umoci init --layout img >/dev/null && umoci new --image img:base && umoci unpack --image img:base b0 >/dev/null
R=b0/rootfs
mkdir -p "$R/usr/bin" "$R/usr/lib/x86_64-linux-gnu" "$R/lib64" "$R/etc" "$R/tmp"
cp -a /usr/bin/python3.11 "$R/usr/bin/" && ln -s python3.11 "$R/usr/bin/python3"
cp -a /usr/lib/python3.11 "$R/usr/lib/"
cp -aL /lib64/ld-linux-x86-64.so.2 "$R/lib64/"
for l in $(ldd /usr/bin/python3.11 | awk '/=>/ {print $3}'); do cp -aL "$l" "$R/usr/lib/x86_64-linux-gnu/"; done
for d in lib bin sbin; do ln -s usr/$d "$R/$d" 2>/dev/null; done
cp /etc/passwd /etc/group "$R/etc/"
umoci repack --image img:v1 b0 >/dev/null
umoci unpack --image img:v1 b1 >/dev/null
have=$(du -sm b1/rootfs | cut -f1)
while IFS= read -r f; do
  [ "$have" -ge "$IMAGE_MB" ] && break
  [ -e "b1/rootfs$f" ] && continue
  mkdir -p "b1/rootfs$(dirname "$f")" && cp -a "$f" "b1/rootfs$f" && have=$((have + $(du -sm "$f" | cut -f1)))
done < <(find /usr/lib/x86_64-linux-gnu /usr/share -type f -size +64k 2>/dev/null | sort)
umoci repack --image img:v2 b1 >/dev/null
umoci unpack --image img:v2 ref >/dev/null
log "image: $(du -sm ref/rootfs | cut -f1) MB in $(find ref/rootfs -type f | wc -l) files"

# ---- the working sets: what each Python program opens inside the rootfs --------------------
record_workset() {  # record_workset N CODE -> ws-N.txt
  strace -f -qq -e trace=openat,open,execve -o "trace-$1.txt" chroot ref/rootfs /usr/bin/python3 -c "$2" ||
    { echo "python3 does not run in the image" >&2; return 1; }
  "$PY" - ref/rootfs "trace-$1.txt" > "ws-$1.txt" <<'PY'
import os, re, sys
root = sys.argv[1]
seen = []
for line in open(sys.argv[2]):
    m = re.search(r'(?:openat|open|execve)\((?:AT_FDCWD, )?"([^"]+)"', line)
    if not m or re.search(r'= -1 ', line):
        continue
    p = os.path.normpath(m.group(1))
    real = os.path.realpath(os.path.join(root, p.lstrip("/")))
    if real.startswith(os.path.realpath(root)) and os.path.isfile(real):
        rel = "/" + os.path.relpath(real, os.path.realpath(root))
        if rel not in seen:
            seen.append(rel)
print("\n".join(seen))
PY
}
for n in "${!WORKLOADS[@]}"; do
  record_workset "$n" "${WORKLOADS[$n]}" || exit 1
  log "working set $n ($(wc -l < "ws-$n.txt") files): python3 -c '${WORKLOADS[$n]}'"
done

# ---- registries: one on a shaped link (measured), one unshaped (setup) on the same storage --
netns_up "$NS" "$RTT_MS" "$RATE_MBIT" >/dev/null || exit 1
FAR=$NETNS_IP:5000
cat > reg-far.yml <<YML
version: 0.1
log: {level: error, accesslog: {disabled: true}}
storage: {filesystem: {rootdirectory: $W/regdata}, delete: {enabled: true}}
http: {addr: "$FAR"}
YML
ip netns exec "$NS" docker-registry serve reg-far.yml > reg-far.log 2>&1 & PIDS+=($!)
start_registry "$W/near" >/dev/null || exit 1
PIDS+=("$REGISTRY_PID")
sed -i "s|rootdirectory: .*|rootdirectory: $W/regdata|" "$W/near/config.yml"
kill "$REGISTRY_PID"; wait "$REGISTRY_PID" 2>/dev/null
docker-registry serve "$W/near/config.yml" > near.log 2>&1 & PIDS+=($!)
NEAR=$REGISTRY_HOST
for i in $(seq 100); do curl -sf "http://$NEAR/v2/" >/dev/null && curl -sf "http://$FAR/v2/" >/dev/null && break; sleep 0.1; done
LINK=$(netns_measure "$NS" 10)
log "link: $LINK"
skopeo copy -q --dest-tls-verify=false oci:img:v2 "docker://$NEAR/lib/app:v2" || exit 1
"$BIN/nydusify" convert --source "$NEAR/lib/app:v2" --target "$NEAR/lib/app:v2-nydus" --source-insecure \
  --target-insecure --work-dir "$W/conv1" >/dev/null 2>conv1.err || { cat conv1.err; exit 1; }
for n in "${!WORKLOADS[@]}"; do
  "$BIN/nydusify" convert --source "$NEAR/lib/app:v2" --target "$NEAR/lib/app:v2-nydus-pf$n" --source-insecure \
    --target-insecure --work-dir "$W/conv-pf$n" --prefetch-file "$W/ws-$n.txt" >/dev/null 2>"conv-pf$n.err" ||
    { cat "conv-pf$n.err"; exit 1; }
done

read_workset() {  # read_workset ROOT N: cat every file of working set N
  (cd "$1" && xargs -a "$W/ws-$2.txt" -I{} cat ./{} > /dev/null)
}

# The tools' own binaries stay in the page cache for every run (the data
# under test never is: fresh directories, fresh mounts, fresh caches).
for t in skopeo umoci curl "$BIN/nydusd"; do "$t" --version > /dev/null 2>&1; done

# ---- (a) OCI: pull everything, unpack (once), read each working set -------------------------
t0=$(now)
skopeo copy -q --src-tls-verify=false "docker://$FAR/lib/app:v2" oci:pulled:v2 || exit 1
umoci unpack --image pulled:v2 run-a >/dev/null || exit 1
t1=$(now)
PULL_S=$(secs "$t0" "$t1")
A_B=$(du -sb pulled/blobs | cut -f1)
A_S=()
for n in "${!WORKLOADS[@]}"; do
  t0=$(now)
  read_workset run-a/rootfs "$n"
  t1=$(now)
  A_S[n]=$("$PY" -c "print(f'{$PULL_S + $t1 - $t0:.2f}')")
done

# ---- (b)/(c) Nydus: manifest + bootstrap, mount lazily, read --------------------------------
AMPLIFY_JSON=${AMPLIFY_IO:+\"amplify_io\": $AMPLIFY_IO,}
nydus_run() {  # nydus_run RUN TAG PREFETCH(true|false) N -> "seconds bytes"
  local run=$1 tag=$2 pf=$3 n=$4 mnt=$W/mnt-$1 cache=$W/cache-$1 t0 tb t1 idx man boot meta_bytes bytes
  mkdir -p "$mnt" "$cache" "$W/b-$run"
  t0=$(now)
  # What nydus-snapshotter does before nydusd starts: index -> manifest ->
  # the bootstrap layer (the manifest's last), unpacked.
  idx=$(curl -sf -H 'Accept: application/vnd.oci.image.index.v1+json' "http://$FAR/v2/lib/app/manifests/$tag")
  man=$(curl -sf -H 'Accept: application/vnd.oci.image.manifest.v1+json' \
    "http://$FAR/v2/lib/app/manifests/$(grep -o 'sha256:[0-9a-f]\{64\}' <<<"$idx" | head -n1)")
  boot=$(grep -o 'sha256:[0-9a-f]\{64\}' <<<"$man" | tail -n1)
  curl -sf "http://$FAR/v2/lib/app/blobs/$boot" | tar -xz -C "$W/b-$run" || return 1
  tb=$(now)
  cat > "$W/cfg-$run.json" <<JSON
{"device": {"backend": {"type": "registry", "config": {"scheme": "http", "host": "$FAR", "repo": "lib/app"}},
            "cache": {"type": "blobcache", "config": {"work_dir": "$cache"}}},
 "mode": "direct",$AMPLIFY_JSON "fs_prefetch": {"enable": $pf, "threads_count": 4, "merging_size": 1048576}}
JSON
  "$BIN/nydusd" --bootstrap "$W/b-$run/image/image.boot" --config "$W/cfg-$run.json" --mountpoint "$mnt" \
    --apisock "$W/$run.sock" --log-level warn > "$W/nydusd-$run.log" 2>&1 & PIDS+=($!)
  local i tm
  for i in $(seq 2000); do grep -q " $mnt " /proc/mounts && break; sleep 0.005; done
  grep -q " $mnt " /proc/mounts || { echo "nydusd did not mount $run:" >&2; cat "$W/nydusd-$run.log" >&2; return 1; }
  tm=$(now)
  read_workset "$mnt" "$n"
  t1=$(now)
  echo "# $run: manifest + bootstrap $(secs "$t0" "$tb") s, mounted after $(secs "$t0" "$tm") s, working set read in $(secs "$tm" "$t1") s" >&2
  curl -sf --unix-socket "$W/$run.sock" http://localhost/api/v1/metrics/backend > "$W/backend-$run.json"
  bytes=$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["read_amount_total"])' "$W/backend-$run.json")
  echo "# $run: backend $(cat "$W/backend-$run.json")" >&2
  meta_bytes=$((${#idx} + ${#man} + $(curl -sfI "http://$NEAR/v2/lib/app/blobs/$boot" | tr -d '\r' |
    awk 'tolower($1)=="content-length:" {print $2}')))
  bytes=$((bytes + meta_bytes))
  # The working set read through the mount must be the image's own bytes.
  (cd ref/rootfs && xargs -a "$W/ws-$n.txt" -I{} cmp -s ./{} "$mnt/{}") || echo "WRONG BYTES in $run" >&2
  echo "$(secs "$t0" "$t1") $bytes"
}
B_S=() B_B=() C_S=() C_B=()
for n in "${!WORKLOADS[@]}"; do
  read -r B_S[n] B_B[n] < <(nydus_run "b$n" v2-nydus false "$n")
  read -r C_S[n] C_B[n] < <(nydus_run "c$n" "v2-nydus-pf$n" true "$n")
  [ -n "${B_S[n]:-}" ] && [ -n "${C_S[n]:-}" ] || { echo "a Nydus run failed" >&2; exit 1; }
done

IMG_MB=$(du -sm ref/rootfs | cut -f1)
echo
echo "Image: ${IMG_MB} MB unpacked, $(find ref/rootfs -type f | wc -l) files ($("$PY" -c "print(f'{$A_B/1e6:.0f}')") MB of OCI layers);"
echo "link ${RTT_MS} ms RTT / ${RATE_MBIT} Mbit/s ($LINK). (a) pull + unpack: ${PULL_S} s."
echo
echo "| start-up | working set | seconds | MB over the link | speed-up vs OCI |"
echo "|---|---|---:|---:|---:|"
row() {  # row LABEL N SECONDS BYTES
  echo "| $1 | $(ws_desc "$2") | $3 | $("$PY" -c "print(f'{$4/1e6:.1f}')") | $("$PY" -c "print(f'{${A_S[$2]}/$3:.1f}x')") |"
}
ws_desc() {
  echo "\`${WORKLOADS[$1]}\`: $(wc -l < "ws-$1.txt") files, $(cd ref/rootfs && xargs -a "$W/ws-$1.txt" -I{} stat -c %s ./{} |
    awk '{s+=$1} END {printf "%.1f MB", s/1e6}')"
}
for n in "${!WORKLOADS[@]}"; do
  row "(a) OCI: pull + unpack + read" "$n" "${A_S[n]}" "$A_B"
  row "(b) Nydus: lazy mount + read" "$n" "${B_S[n]}" "${B_B[n]}"
  row "(c) Nydus + prefetch of the working set" "$n" "${C_S[n]}" "${C_B[n]}"
done
