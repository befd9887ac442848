#!/usr/bin/env bash
# Container start benchmark (not a test, issue 14): time from the start of the
# pull to the container's command exiting, over a shaped link (RTT_MS round
# trip, RATE_MBIT each way; tests/integration/lib/netns.sh) to a docker-registry.
#   - image: a Debian bookworm rootfs (python3, numpy, pandas, perl, curl, git;
#     mmdebstrap, cached: tests/integration/lib/distro_rootfs.sh) as a gzip OCI
#     image (umoci), and the Nydus image nydusify makes of it, both in the registry;
#   - rows: containerd's overlayfs snapshotter (`ctr image pull` = download +
#     unpack, then `ctr run`), and ours (`ctr-remote image rpull --snapshotter
#     nydus`, then `ctr run --snapshotter nydus`: nydusd over FUSE fetches what
#     the container reads), and ours with `--fs-driver fanotify` (the same, but
#     the kernel's EROFS reads the image, nydusd fills its cache files on
#     fanotify pre-content events; the snapshotter is restarted between rows);
#   - workloads: `python3 -c pass` and an import-heavy start (numpy, pandas, ...);
#   - before each run: the image removed (`ctr image rm --sync`, so content,
#     snapshots and our blob cache go), the page cache dropped. RUNS (3)
#     alternating rounds; medians; bytes over the link from the registry's access log.
# Needs root, containerd + runc, ctr-remote, docker-registry, umoci, skopeo, mmdebstrap.
#
# Env: BUILD_DIR (./build), BENCH_TMP (/var/tmp), RTT_MS (20), RATE_MBIT (100),
#      RUNS (3), ROWS ("overlayfs nydus-fuse nydus-fanotify"), PREFETCH_ALL (0; 1: upstream's shipped nydusd config, prefetch of
#      the whole blob), PREFETCH_LIST (0; 1: the image's prefetch table lists what the import workload opens), AMPLIFY_IO (bytes; the template's amplify_io), NETNS_LINK (auto|netem|tun), KEEP=1.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD_DIR=${BUILD_DIR:-$ROOT/build}
BIN=$BUILD_DIR/bin
LIB=$ROOT/tests/integration/lib
RTT_MS=${RTT_MS:-20}
RATE_MBIT=${RATE_MBIT:-100}
RUNS=${RUNS:-3}
ROWS=${ROWS:-overlayfs nydus-fuse nydus-fanotify}
PACKAGES=python3,python3-numpy,python3-pandas,python3-yaml,perl,curl,git
PASS_CMD='import sys'
IMPORT_CMD='import numpy, pandas, yaml, json, email.parser, http.client, argparse, logging, asyncio'
[ "$(id -u)" -eq 0 ] || { echo "bench/container_start.sh needs root" >&2; exit 1; }
for t in docker-registry umoci skopeo; do command -v $t >/dev/null || { echo "install $t (scripts/setup.sh)" >&2; exit 1; }; done
# shellcheck source=../tests/integration/lib/netns.sh
source "$LIB/netns.sh"
# shellcheck source=../tests/integration/lib/distro_rootfs.sh
source "$LIB/distro_rootfs.sh"

W=$(mktemp -d "${BENCH_TMP:-/var/tmp}/nydus-bench-start.XXXXXX")
NS=nystart$$
RPID=
CT_WORK=$W/ct CT_BIN=$BIN
# shellcheck source=../tests/integration/lib/containerd.sh
source "$LIB/containerd.sh"
# PREFETCH_ALL=1: nydusd's config as nydus-snapshotter ships it (misc/snapshotter/
# nydusd-config.fusedev.json: amplify_io 1 MiB, fs_prefetch of the whole blob with 8
# threads) instead of the test template (no prefetch).
if [ "${PREFETCH_ALL:-0}" = 1 ]; then
  ct_nydusd_template() {
    cat >"$CT_WORK/nydusd-config.json" <<'JSON'
{
  "device": {
    "backend": {"type": "registry", "config": {"scheme": "http", "timeout": 5, "connect_timeout": 5, "retry_limit": 2}},
    "cache": {"type": "blobcache"}
  },
  "mode": "direct", "digest_validate": false, "iostats_files": false, "enable_xattr": true,
  "amplify_io": 1048576,
  "fs_prefetch": {"enable": true, "threads_count": 8, "merging_size": 1048576, "prefetch_all": true}
}
JSON
  }
fi
# AMPLIFY_IO=BYTES: the template's amplify_io (what nydusd reads after a missed chunk).
if [ -n "${AMPLIFY_IO:-}" ]; then
  eval "$(declare -f ct_nydusd_template | sed '1s/ct_nydusd_template/ct_nydusd_template_base/')"
  ct_nydusd_template() {
    ct_nydusd_template_base
    python3 - "$CT_WORK/nydusd-config.json" "$AMPLIFY_IO" <<'PY'
import json, sys
c = json.load(open(sys.argv[1])); c["amplify_io"] = int(sys.argv[2]); json.dump(c, open(sys.argv[1], "w"))
PY
  }
fi
# PREFETCH_LIST=1: an optimised Nydus image, made the way Nydus users make one: the
# files the import workload opens (strace of the same command in a chroot of the
# rootfs, before the image is built) become the image's prefetch table (nydusify
# convert --prefetch-file), and nydusd prefetches them at mount (fs_prefetch with
# prefetch_all off: only the table's files).
if [ "${PREFETCH_LIST:-0}" = 1 ]; then
  command -v strace >/dev/null || { echo "PREFETCH_LIST=1 needs strace" >&2; exit 1; }
  eval "$(declare -f ct_nydusd_template | sed '1s/ct_nydusd_template/ct_nydusd_template_list/')"
  ct_nydusd_template() {
    ct_nydusd_template_list
    python3 - "$CT_WORK/nydusd-config.json" <<'PY'
import json, sys
c = json.load(open(sys.argv[1]))
c["fs_prefetch"] = {"enable": True, "threads_count": 8, "merging_size": 1048576, "prefetch_all": False}
json.dump(c, open(sys.argv[1], "w"))
PY
  }
fi
WHY=$(ct_missing)
[ -z "$WHY" ] || { echo "containers cannot run here: $WHY" >&2; exit 1; }
cleanup() {
  local p
  # A snapshotter restarted by snapshotter_for (in a subshell) is not $CT_SNAP_PID.
  for p in $(ct_pids containerd-nydus-grpc "--root $CT_ROOT "); do ct_stop_pid "$p"; done
  ct_stop
  [ -n "$RPID" ] && kill "$RPID" 2>/dev/null && wait "$RPID" 2>/dev/null
  netns_down "$NS" >/dev/null 2>&1
  [ "${KEEP:-0}" = 1 ] && { echo "kept $W" >&2; return; }
  rm -rf "$W"
}
trap cleanup EXIT
T0=$SECONDS
log() { echo "# [$((SECONDS - T0))s] $*" >&2; }

TARBALL=$(distro_rootfs_tar "$PACKAGES") || exit 1
log "OCI image of $TARBALL (umoci)"
cd "$W" || exit 1
umoci init --layout oci && umoci new --image oci:app && umoci unpack --image oci:app bundle >/dev/null || exit 1
tar -C bundle/rootfs --numeric-owner -xpf "$TARBALL" || exit 1
IMAGE_BYTES=$(du -sb --apparent-size bundle/rootfs | cut -f1)
ENTRIES=$(find bundle/rootfs | wc -l)
CONVERT_OPTS=()
if [ "${PREFETCH_LIST:-0}" = 1 ]; then
  log "prefetch list: the files the import workload opens (strace, chroot of the rootfs)"
  strace -f -qq -e trace=open,openat,execve -o "$W/open.trace" \
    chroot bundle/rootfs /usr/bin/python3 -c "$IMPORT_CMD" >/dev/null 2>&1 || exit 1
  python3 - "$W/open.trace" bundle/rootfs >"$W/prefetch.list" <<'PY' || exit 1
import os, re, sys
root, seen = sys.argv[2], []
for line in open(sys.argv[1]):
    m = re.search(r'(?:open|openat|execve)\((?:AT_FDCWD, )?"([^"]+)".*\) = (\d+)', line)
    if not m or not m.group(1).startswith("/"):
        continue
    p = os.path.normpath(m.group(1))
    real = os.path.realpath(os.path.join(root, p.lstrip("/")))
    if not real.startswith(os.path.realpath(root) + "/") or not os.path.isfile(real):
        continue
    p = "/" + os.path.relpath(real, os.path.realpath(root))
    if p not in seen:
        seen.append(p)
print("\n".join(seen))
PY
  log "prefetch list: $(wc -l <"$W/prefetch.list") files, $(cd bundle/rootfs && sed 's|^/||' "$W/prefetch.list" | tr '\n' '\0' | du -cb --files0-from=- | tail -1 | cut -f1) bytes"
  CONVERT_OPTS=(--prefetch-file "$W/prefetch.list")
fi
umoci repack --image oci:app bundle || exit 1
rm -rf bundle

log "registry in namespace $NS: RTT ${RTT_MS} ms, ${RATE_MBIT} Mbit/s"
netns_up "$NS" "$RTT_MS" "$RATE_MBIT" >/dev/null || exit 1
netns_registry "$NS" "$W/registry" || exit 1
REG=$NETNS_REGISTRY RPID=$NETNS_REGISTRY_PID
# Pushed and converted inside the namespace: loopback there, not across the link.
log "push (skopeo) and convert (nydusify) next to the registry"
ip netns exec "$NS" skopeo copy -q --dest-tls-verify=false oci:oci:app "docker://$REG/bench/py:oci" || exit 1
ip netns exec "$NS" "$BIN/nydusify" convert --source "$REG/bench/py:oci" --target "$REG/bench/py:nydus" \
  --source-insecure --target-insecure --work-dir "$W/convert" "${CONVERT_OPTS[@]}" >"$W/nydusify.log" 2>&1 || {
  tail -20 "$W/nydusify.log" >&2; exit 1; }
layer_bytes() {  # TAG: the compressed bytes of the image's layers
  curl -sf -H 'Accept: application/vnd.oci.image.manifest.v1+json' "http://$REG/v2/bench/py/manifests/$1" |
    python3 -c 'import json, sys; print(sum(l["size"] for l in json.load(sys.stdin)["layers"]))'
}
OCI_BYTES=$(layer_bytes oci) NYDUS_BYTES=$(layer_bytes nydus)

log "containerd + containerd-nydus-grpc"
ct_start --log-level warn || exit 1
mark() { sleep 0.2; wc -l <"$W/registry/log"; }
sent_since() {  # MARK: bytes of blob GETs the registry answered since
  tail -n +"$(($1 + 1))" "$W/registry/log" |
    awk '$6 == "\"GET" && $7 ~ /\/blobs\// && ($9 == 200 || $9 == 206) {s += $10} END {print s + 0}'
}
drop() { sync; echo 3 >/proc/sys/vm/drop_caches; }
echo fusedev >"$W/snapshotter.driver"
# snapshotter_for DRIVER: the snapshotter runs with --fs-driver DRIVER (restarted when
# it differs; containerd redials it, a Prepare tells when it is reached). Called in
# the command substitution of `one`, so its state lives in files, not variables: the
# driver in $W/snapshotter.driver, the process found by its --root.
snapshotter_for() {
  local p
  [ "$1" = "$(cat "$W/snapshotter.driver")" ] && return 0
  for p in $(ct_pids containerd-nydus-grpc "--root $CT_ROOT "); do ct_stop_pid "$p"; done
  ct_start_snapshotter --log-level warn --fs-driver "$1" || return 1
  ct_wait_proxy >&2 || return 1
  echo "$1" >"$W/snapshotter.driver"
}
now() { date +%s.%N; }

# one ROW WORKLOAD: pull + run, print "seconds bytes" (or nothing on failure).
one() {
  local row=$1 cmd m t0 t1 out ref snap=() pull
  [ "$2" = pass ] && cmd=$PASS_CMD || cmd=$IMPORT_CMD
  case $row in
    overlayfs) ref=$REG/bench/py:oci pull=(ct_ctr image pull --plain-http "$ref") ;;
    nydus-fuse|nydus-fanotify) ref=$REG/bench/py:nydus snap=(--snapshotter nydus)
      pull=(ctr-remote --address "$CT_CD_SOCK" image rpull --plain-http --snapshotter nydus "$ref") ;;
  esac
  ct_ctr image rm --sync "$ref" >/dev/null 2>&1
  case $row in
    nydus-fuse) snapshotter_for fusedev || return 1 ;;
    nydus-fanotify) snapshotter_for fanotify || return 1 ;;
  esac
  drop
  m=$(mark)
  t0=$(now)
  "${pull[@]}" >"$W/pull.log" 2>&1 || { echo "$row: pull failed: $(tail -3 "$W/pull.log")" >&2; return 1; }
  out=$(ct_ctr run --rm "${snap[@]}" "$ref" "start-$row" /usr/bin/python3 -c "$cmd; print('ok')" 2>&1)
  t1=$(now)
  [ "$out" = ok ] || { echo "$row/$2: the container printed: $out" >&2; return 1; }
  echo "$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.3f", b - a}') $(sent_since "$m")"
}

: >"$W/times"
for r in $(seq "$RUNS"); do
  for w in pass import; do
    for row in $ROWS; do
      log "round $r/$RUNS: $row, $w"
      res=$(one "$row" "$w") && echo "$row $w $res" >>"$W/times"
    done
  done
done

python3 - "$W/times" <<'PY'
import statistics, sys
t = {}
for line in open(sys.argv[1]):
    row, w, s, b = line.split()
    t.setdefault((row, w), []).append((float(s), int(b)))
names = {"overlayfs": "containerd overlayfs (pull + unpack, run)", "nydus-fuse": "ours, nydusd FUSE (rpull, run)",
         "nydus-fanotify": "ours, nydusd fanotify + kernel EROFS (rpull, run)"}
def cell(row, w):
    v = t.get((row, w))
    if not v: return "-", "-", "-"
    s = statistics.median(x[0] for x in v)
    base = t.get(("overlayfs", w))
    speed = f"{statistics.median(x[0] for x in base) / s:.1f}x" if base else "-"
    return f"{s:.2f}", speed, f"{statistics.median(x[1] for x in v) / 1e6:.1f}"
print("| snapshotter | `python3 -c pass` (s) | vs overlayfs | MB over the link | import-heavy start (s) | vs overlayfs | MB over the link |")
print("|---|---:|---:|---:|---:|---:|---:|")
for row in ("overlayfs", "nydus-fuse", "nydus-fanotify"):
    if any(k[0] == row for k in t):
        print(f"| {names[row]} | " + " | ".join(cell(row, "pass") + cell(row, "import")) + " |")
PY
echo
echo "image: bookworm minbase + $PACKAGES, $((IMAGE_BYTES >> 20)) MiB unpacked, $ENTRIES entries;" \
  "OCI layers $((OCI_BYTES >> 20)) MiB gzip, Nydus layers $((NYDUS_BYTES >> 20)) MiB;" \
  "nydusd config: $([ "${PREFETCH_ALL:-0}" = 1 ] && echo "nydus-snapshotter's shipped one (prefetch_all)" || { [ "${PREFETCH_LIST:-0}" = 1 ] && echo "prefetch of the image's prefetch table ($(wc -l <"$W/prefetch.list") files the import workload opens)" || echo "no prefetch"; }), amplify_io ${AMPLIFY_IO:-default};" \
  "link: RTT ${RTT_MS} ms, ${RATE_MBIT} Mbit/s ($NETNS_MODE); medians of $RUNS alternating rounds;" \
  "$(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg); $(uname -r); total $((SECONDS - T0)) s"
