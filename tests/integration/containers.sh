#!/usr/bin/env bash
# containerd-nydus-grpc under real containerd 1.6 + runc (Debian's), each started
# by this script with its own root, state and sockets (containerd reaches us as
# [proxy_plugins.nydus]), images in a docker-registry on loopback:
#   - a plain OCI image (busybox-static + files over two layers, one file
#     changed and one deleted in the upper layer): `ctr image pull` + `ctr run`
#     through our snapshotter prints the upper layer's content and not the
#     deleted file (overlay lowerdir order, whiteouts), busybox's bytes equal
#     the host's; the layers are listed by our snapshotter;
#   - the same image converted by our nydusify, pulled with `ctr-remote image
#     rpull --snapshotter nydus`: the nydus blob layer is never in containerd's
#     content store (answered AlreadyExists), a container reads the right bytes
#     through a nydusd started with nydus-snapshotter's command line, whose
#     mount is the overlay's lowerdir; a kill -9 of the snapshotter leaves the
#     container reading, the restarted one lists the same snapshots and takes
#     the same nydusd over; after `ctr rm` and `ctr image rm --sync` no nydusd,
#     mount or snapshot directory is left;
#   - bad input (images edited in the registry): a manifest without its
#     bootstrap layer and a text file labelled nydus-bootstrap (with unknown,
#     long and odd labels) are refused at Prepare with FailedPrecondition naming
#     the cause (containerd's errdefs text is the oracle for the code); with the
#     registry stopped an rpull fails and a container on a never-fetched blob
#     gets Unavailable carrying nydusd's connection error; each time no mount,
#     nydusd or snapshot is added and a good container runs right after.
#   - Prometheus metrics ([metrics] address in config.toml), parsed by
#     python3-prometheus-client: nydusd_counts vs our nydusd processes and
#     `nydusd --version`, snapshots by kind vs `ctr snapshots ls`, cache
#     kilobytes vs du, GC counters vs the manifests' blob digests;
#   - blob cache GC with two Nydus images sharing no blob: after `ctr image rm
#     --sync` of one, no <root>/cache file named after its manifest's blob
#     digests is left while the other's stay (and serve it with the registry
#     stopped); after the second's removal the cache dir is empty.
#   - --daemon-mode shared (config.toml `daemon_mode`) with `[daemon] fs_driver =
#     "auto"`, a second snapshotter instance (own root, [proxy_plugins.nydus-shared]):
#     one nydusd with upstream's shared command line (no --bootstrap) started with
#     it; both Nydus images run concurrently, each rootfs' lowerdir is its
#     <root>/mnt/<id> in the one FUSE mount (the kernel's mountinfo is the oracle),
#     both read the right bytes; a kill -9 + restart re-attaches to the same
#     nydusd and its two images; `ctr image rm` of one unmounts it (gone from the
#     FUSE root) while the other keeps reading; after both, the shared daemon
#     still runs with nothing mounted, and stopping it leaves no mount.
set -uo pipefail
# shellcheck source-path=SCRIPTDIR source=lib/common.sh
source "$(dirname "$0")/lib/common.sh"

[ "$(id -u)" -eq 0 ] || skip "needs root (containerd, mounts)"
for t in containerd containerd-shim-runc-v2 ctr ctr-remote runc docker-registry umoci skopeo busybox sqlite3; do
  command -v $t >/dev/null || skip "$t not installed (scripts/setup.sh installs it)"
done
[ -e /dev/fuse ] || skip_kernel "no /dev/fuse"
grep -qw overlay /proc/filesystems || modprobe overlay 2>/dev/null || true
grep -qw overlay /proc/filesystems || skip_kernel "no overlayfs"
SNAPSHOTTER=$NYDUS_BIN_DIR/containerd-nydus-grpc
NYDUSD=$NYDUS_BIN_DIR/nydusd
NYDUSIFY=$NYDUS_BIN_DIR/nydusify
for b in "$SNAPSHOTTER" "$NYDUSD" "$NYDUSIFY"; do [ -x "$b" ] || die "$b not built"; done
BUSYBOX=$(readlink -f "$(command -v busybox)")
file -b "$BUSYBOX" 2>/dev/null | grep -q 'statically linked' || [ "$(ldd "$BUSYBOX" 2>&1 | grep -c 'not a dynamic')" = 1 ] ||
  skip "busybox is not static (install busybox-static)"

WORK=$(mktemp -d /var/tmp/nydus-containers.XXXXXX) || die "mktemp"
LOG_DIR=$WORK/logs
mkdir -p "$LOG_DIR"
ROOT=$WORK/snapshotter
SNAP_SOCK=$WORK/snapshotter.sock
CD=$WORK/containerd
CD_SOCK=$CD/containerd.sock
SNAP_PID='' CD_PID='' REGISTRY_PID=''
SROOT=$WORK/shared-root  # the shared-mode instance's root (not below $ROOT)
SSOCK=$WORK/shared.sock
SSNAP_PID=''

ctr_() { ctr --address "$CD_SOCK" "$@"; }
# Processes this test started, by pid: nydusd daemons under our root, shims of our containerd.
our_pids() {
  local p
  for p in $(pgrep -f "$1"); do
    { tr '\0' ' ' <"/proc/$p/cmdline"; } 2>/dev/null | grep -qF -- "$2" && echo "$p"
  done
}
stop_pid() {
  local p=$1
  [ -n "$p" ] || return 0
  kill -TERM "$p" 2>/dev/null || return 0
  for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || return 0; sleep 0.1; done
  kill -KILL "$p" 2>/dev/null
}
cleanup() {
  local p c
  if [ -n "$CD_PID" ] && kill -0 "$CD_PID" 2>/dev/null; then
    for c in $(ctr_ task ls -q 2>/dev/null); do ctr_ task kill -s KILL "$c" >/dev/null 2>&1; done
    sleep 0.5
    for c in $(ctr_ task ls -q 2>/dev/null); do ctr_ task rm -f "$c" >/dev/null 2>&1; done
    for c in $(ctr_ containers ls -q 2>/dev/null); do ctr_ containers rm "$c" >/dev/null 2>&1; done
  fi
  for p in $(our_pids containerd-shim "$CD_SOCK"); do stop_pid "$p"; done
  stop_pid "$CD_PID"
  stop_pid "$SNAP_PID"
  stop_pid "$SSNAP_PID"
  for p in $(our_pids nydusd "$ROOT/") $(our_pids nydusd "$SROOT/"); do stop_pid "$p"; done
  stop_pid "$REGISTRY_PID"
  umount_below "$WORK"
  [ "${KEEP_WORK:-0}" = 1 ] && { echo "kept $WORK"; return; }
  rm -rf "$WORK"
}
trap cleanup EXIT
cd "$WORK" || die "cd"

# ---- images: busybox-static + files, two layers --------------------------------------
make_image() {
  umoci init --layout img && umoci new --image img:base && umoci unpack --image img:base b0 >/dev/null || return 1
  local r=b0/rootfs
  mkdir -p "$r/bin" "$r/data/sub" "$r/etc" || return 1
  cp "$BUSYBOX" "$r/bin/busybox" && ln -s busybox "$r/bin/sh" || return 1
  echo "hello from layer one" >"$r/data/hello.txt"
  echo "to be deleted" >"$r/data/gone.txt"
  head -c 3000000 /dev/urandom >"$r/data/sub/random.bin"
  printf 'root:x:0:0:root:/root:/bin/sh\napp:x:1234:2345:app:/:/bin/sh\n' >"$r/etc/passwd"
  umoci repack --image img:v1 b0 && umoci unpack --image img:v1 b1 >/dev/null || return 1
  r=b1/rootfs
  echo "hello from layer two" >"$r/data/hello.txt"
  rm "$r/data/gone.txt"
  echo "only in layer two" >"$r/data/second.txt"
  umoci repack --image img:v2 b1 || return 1
  umoci unpack --image img:v2 ref >/dev/null
}
step "umoci: busybox-static image, 2 layers (a file changed, one deleted)" make_image || die "cannot build the image"
# A second image sharing no layer with the first (its own random bytes): its
# blob cache files must outlive the first image's removal.
make_other_image() {
  umoci unpack --image img:base o0 >/dev/null || return 1
  local r=o0/rootfs
  mkdir -p "$r/bin" "$r/data" && cp "$BUSYBOX" "$r/bin/busybox" && ln -s busybox "$r/bin/sh" || return 1
  head -c 2000000 /dev/urandom >"$r/data/other.bin"
  umoci repack --image img:other o0
}
step "umoci: a second image sharing no layer" make_other_image || die "cannot build the second image"
OTHER_SUM=$(sha256sum o0/rootfs/data/other.bin | cut -d' ' -f1)
# What a container must print (from the unpacked reference tree, not from us).
EXPECTED=$(cd ref/rootfs && cat data/hello.txt && ls data && sha256sum data/sub/random.bin bin/busybox)

step "docker-registry on loopback" start_registry "$WORK/registry" || die "no registry"
R=$REGISTRY_HOST
step "skopeo: image into the registry" skopeo copy --dest-tls-verify=false oci:img:v2 "docker://$R/test/plain:v1" ||
  die "skopeo copy failed"
step "nydusify convert (registry -> registry)" "$NYDUSIFY" convert --source "$R/test/plain:v1" \
  --target "$R/test/nydus:v1" --source-insecure --target-insecure --work-dir "$WORK/convert" || die "convert failed"
step "skopeo + nydusify: the second image" sh -c "skopeo copy --dest-tls-verify=false oci:img:other docker://$R/test/other:v1 &&
  '$NYDUSIFY' convert --source $R/test/other:v1 --target $R/test/nydus-other:v1 --source-insecure --target-insecure \
  --work-dir '$WORK/convert2'" || die "convert of the second image failed"

# ---- our snapshotter and containerd ----------------------------------------------------
# The template a daemon's config is made from: plain-HTTP registry (host/repo filled in).
cat >"$WORK/nydusd-config.json" <<'JSON'
{
  "device": {
    "backend": {"type": "registry", "config": {"scheme": "http", "timeout": 5, "connect_timeout": 5, "retry_limit": 2}},
    "cache": {"type": "blobcache"}
  },
  "mode": "direct", "digest_validate": false, "iostats_files": false, "enable_xattr": true,
  "fs_prefetch": {"enable": false, "threads_count": 4, "merging_size": 1048576, "prefetch_all": false}
}
JSON
METRICS_PORT=$("$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
# config.toml with [metrics] address (nydus-snapshotter's key): Prometheus on GET /v1/metrics.
printf '[metrics]\naddress = "127.0.0.1:%s"\n' "$METRICS_PORT" >"$WORK/snapshotter.toml"
start_snapshotter() {
  "$SNAPSHOTTER" --root "$ROOT" --address "$SNAP_SOCK" --nydusd "$NYDUSD" --config "$WORK/snapshotter.toml" \
    --nydusd-config "$WORK/nydusd-config.json" --log-level debug >"$LOG_DIR/snapshotter.log" 2>&1 &
  SNAP_PID=$!
  local _
  for _ in $(seq 100); do [ -S "$SNAP_SOCK" ] && return 0; sleep 0.1; done
  cat "$LOG_DIR/snapshotter.log"; return 1
}
step "containerd-nydus-grpc starts" start_snapshotter || die "snapshotter did not start"

mkdir -p "$CD/root" "$CD/state"
cat >"$CD/config.toml" <<TOML
version = 2
root = "$CD/root"
state = "$CD/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$CD_SOCK"
[ttrpc]
  address = "$CD/containerd.sock.ttrpc"
[debug]
  level = "info"
[proxy_plugins.nydus]
  type = "snapshot"
  address = "$SNAP_SOCK"
[proxy_plugins.nydus-shared]
  type = "snapshot"
  address = "$SSOCK"
TOML
start_containerd() {
  containerd --config "$CD/config.toml" >"$LOG_DIR/containerd.log" 2>&1 &
  CD_PID=$!
  local _
  for _ in $(seq 100); do ctr_ version >/dev/null 2>&1 && return 0; sleep 0.2; done
  tail -30 "$LOG_DIR/containerd.log"; return 1
}
step "containerd 1.6 with [proxy_plugins.nydus]" start_containerd || die "containerd did not start"
step "containerd lists the proxy snapshotter" sh -c "ctr --address '$CD_SOCK' plugins ls | grep -E 'io.containerd.snapshotter.v1 +nydus +.*ok'"

# ---- plain OCI image: overlay path ------------------------------------------------------
step "ctr image pull --snapshotter nydus (plain OCI)" ctr_ image pull --plain-http --snapshotter nydus "$R/test/plain:v1"
check_layers_listed() {
  local n
  ctr_ snapshots --snapshotter nydus ls | tee "$WORK/snapshots.txt"
  n=$(grep -c Committed "$WORK/snapshots.txt")
  echo "committed: $n"
  [ "$n" -eq 2 ] && [ "$(sqlite3 "$ROOT/metadata.db" 'select count(*) from snapshots where kind=3')" -eq 2 ]
}
step "both layers are committed snapshots in our metadata" check_layers_listed
CMD='cat /data/hello.txt && ls /data && cd / && sha256sum data/sub/random.bin bin/busybox'
run_and_compare() {  # IMAGE NAME
  local out
  out=$(ctr_ run --rm --snapshotter nydus "$1" "$2" /bin/sh -c "$CMD" 2>&1)
  printf 'got:\n%s\nwant:\n%s\n' "$out" "$EXPECTED"
  [ "$out" = "$EXPECTED" ]
}
step "ctr run (plain): upper layer wins, whiteout honoured, bytes equal" run_and_compare "$R/test/plain:v1" plain1
# containerd's GC removes a deleted container's snapshot right after the deletion.
wait_snapshot_count() {  # N: poll until our metadata holds N snapshots and snapshots/ N dirs
  local rows dirs
  for _ in $(seq 50); do
    rows=$(sqlite3 "$ROOT/metadata.db" 'select count(*) from snapshots')
    dirs=$(ls "$ROOT/snapshots" | wc -l)
    [ "$rows" -eq "$1" ] && [ "$dirs" -eq "$1" ] && return 0
    sleep 0.2
  done
  echo "rows=$rows dirs=$dirs, want $1"; return 1
}
check_rw_upper() {  # the rootfs is writable (upperdir) and the write goes away with the container
  local out
  out=$(ctr_ run --rm --snapshotter nydus "$R/test/plain:v1" plain2 /bin/sh -c 'echo x > /data/hello.txt && cat /data/hello.txt')
  echo "container wrote and read: '$out'"
  [ "$out" = x ] || return 1
  wait_snapshot_count 2 || return 1
  [ "$(cat "$ROOT"/snapshots/*/fs/data/hello.txt)" = "hello from layer one
hello from layer two" ]
}
step "ctr run (plain): writes go to the upper dir, the layers keep their bytes, --rm removes it" check_rw_upper

# ---- Nydus image: lazy through nydusd -----------------------------------------------------
NYDUS_REF=$R/test/nydus:v1
nydus_layers() {  # prints "<digest> <nydus-blob|nydus-bootstrap>" of the converted manifest
  curl -sf -H 'Accept: application/vnd.oci.image.manifest.v1+json' -H 'Accept: application/vnd.docker.distribution.manifest.v2+json' \
    "http://$R/v2/test/nydus/manifests/v1" | "$PY" -c '
import json, sys
m = json.load(sys.stdin)
for l in m["layers"]:
    a = l.get("annotations", {})
    kind = "nydus-bootstrap" if "containerd.io/snapshot/nydus-bootstrap" in a else ("nydus-blob" if "containerd.io/snapshot/nydus-blob" in a else "other")
    print(l["digest"], kind)'
}
check_manifest() {
  nydus_layers >"$WORK/nydus_layers.txt" || return 1
  cat "$WORK/nydus_layers.txt"
  grep -q nydus-blob "$WORK/nydus_layers.txt" && [ "$(tail -n 1 "$WORK/nydus_layers.txt" | cut -d' ' -f2)" = nydus-bootstrap ]
}
step "converted manifest: blob layer(s), then the bootstrap layer on top" check_manifest
step "ctr-remote image rpull --snapshotter nydus" ctr-remote --address "$CD_SOCK" image rpull --plain-http \
  --snapshotter nydus "$NYDUS_REF"
check_blob_not_fetched() {
  local d ok=0
  ctr_ content ls -q | tee "$WORK/content.txt"
  while read -r d kind; do
    case $kind in
      nydus-blob) if grep -qx "$d" "$WORK/content.txt"; then echo "blob $d was downloaded"; ok=1; else echo "blob $d not in the content store"; fi ;;
      nydus-bootstrap) grep -qx "$d" "$WORK/content.txt" || { echo "bootstrap $d missing"; ok=1; } ;;
    esac
  done <"$WORK/nydus_layers.txt"
  return $ok
}
step "the nydus blob layer never reached containerd's content store" check_blob_not_fetched
step "the blob layer is a committed snapshot labelled nydus-blob" sh -c \
  "sqlite3 '$ROOT/metadata.db' \"select labels from snapshots where kind=3\" | grep -q 'containerd.io/snapshot/nydus-blob'"

step "ctr run (nydus): right output through nydusd" run_and_compare "$NYDUS_REF" nydus1
no_daemon_left() {  # containerd's GC removes the snapshot right after a deletion
  local _
  for _ in $(seq 50); do [ -z "$(our_pids nydusd "$ROOT/")" ] && return 0; sleep 0.2; done
  echo "still running: $(our_pids nydusd "$ROOT/")"; return 1
}
step "the --rm container's snapshot removed: its nydusd stopped" no_daemon_left
step "only the images' layer snapshots remain (2 plain + the nydus manifest's layers)" \
  wait_snapshot_count $((2 + $(wc -l <"$WORK/nydus_layers.txt")))

# A long-running container: inspect its daemon and mount while it runs.
step "ctr run -d (nydus)" ctr_ run -d --snapshotter nydus "$NYDUS_REF" nydus2 /bin/sh -c 'sleep 300'
check_daemon() {
  local pids pid args rootfs opts
  pids=$(our_pids nydusd "$ROOT/")
  echo "nydusd pids: $pids"
  [ "$(echo "$pids" | wc -w)" -eq 1 ] || return 1
  pid=$pids
  args=$(tr '\0' ' ' <"/proc/$pid/cmdline")
  echo "cmdline: $args"
  # nydus-snapshotter's BuildCommand order for a dedicated fusedev daemon.
  echo "$args" | grep -Eq "^$NYDUSD fuse --thread-num [0-9]+ --config $ROOT/[^ ]+/config.json --bootstrap $ROOT/snapshots/[0-9]+/fs/image/image.boot --mountpoint ($ROOT/[^ ]+) --apisock $ROOT/[^ ]+ --log-level [a-z]+ --log-rotation-size 100( --log-file [^ ]+)? --failover-policy resend $" || return 1
  MNT=$(echo "$args" | sed -E 's/.* --mountpoint ([^ ]+) .*/\1/')
  SOCK=$(echo "$args" | sed -E 's/.* --apisock ([^ ]+) .*/\1/')
  curl -sf --unix-socket "$SOCK" http://unix/api/v1/daemon | grep -q '"state":"RUNNING"' || return 1
  is_mounted "$MNT" || { echo "$MNT not mounted"; return 1; }
  rootfs=$CD/state/io.containerd.runtime.v2.task/default/nydus2/rootfs
  opts=$(awk -v d="$rootfs" '$5 == d {print $NF}' /proc/self/mountinfo)
  echo "rootfs mount options: $opts"
  echo "$opts" | grep -q "lowerdir=$MNT" && echo "$opts" | grep -q "upperdir=$ROOT/snapshots/"
}
step "a nydusd with the snapshotter's command line serves the rootfs' lowerdir" check_daemon
# Prometheus metrics, parsed by Debian's python3-prometheus-client (the oracle
# for the exposition format; /usr/bin/python3: the Debian package's interpreter).
metrics() {  # prints "name{k=v,...} value" per sample
  curl -sf "http://127.0.0.1:$METRICS_PORT/v1/metrics" | /usr/bin/python3 -c '
import sys
from prometheus_client.parser import text_string_to_metric_families
for fam in text_string_to_metric_families(sys.stdin.read()):
    for s in fam.samples:
        print(s.name + "{" + ",".join(f"{k}={v}" for k, v in sorted(s.labels.items())) + "}", s.value)'
}
metric() { awk -v k="$1" '$1 == k {print $2}' "$WORK/metrics.txt"; }
check_metrics() {
  local version kb du_kb
  metrics >"$WORK/metrics.txt" || return 1
  grep -E '^(nydusd|snapshotter_(snapshots|cache|nydus))' "$WORK/metrics.txt"
  grep -E 'operation=PREPARE' "$WORK/metrics.txt" | grep _count
  # Daemons: ours by pid, labelled with the version nydusd itself prints.
  version=$("$NYDUSD" --version | awk '/Version:/ {print $NF; exit}')
  [ "$(metric "nydusd_counts{version=$version}")" = "$(our_pids nydusd "$ROOT/" | wc -l).0" ] || { echo "nydusd_counts"; return 1; }
  # Snapshots by kind: as containerd lists them through our List.
  ctr_ snapshots --snapshotter nydus ls >"$WORK/ls.txt"
  [ "$(metric "snapshotter_snapshots{kind=active}")" = "$(awk '$NF == "Active"' "$WORK/ls.txt" | wc -l).0" ] || { echo active; return 1; }
  [ "$(metric "snapshotter_snapshots{kind=committed}")" = "$(awk '$NF == "Committed"' "$WORK/ls.txt" | wc -l).0" ] || { echo committed; return 1; }
  # Cache usage: du's allocated kilobytes of the cache dir (a few KB of slack: files grow).
  kb=$(metric "snapshotter_cache_usage_kilobytes{}"); du_kb=$(du -sk "$ROOT/cache" | cut -f1)
  echo "cache: metric $kb KB, du $du_kb KB"
  "$PY" -c "import sys; sys.exit(abs(float('$kb') - $du_kb) > 16 or $du_kb < 100)" || return 1
  # The nydus image's blob layers were answered AlreadyExists; Prepares were timed.
  [ "$(metric "snapshotter_nydus_layers_skipped_total{}")" = "$(grep -c nydus-blob "$WORK/nydus_layers.txt").0" ] || { echo skipped; return 1; }
  "$PY" -c "import sys; sys.exit(not float('$(metric "snapshotter_snapshot_operation_elapsed_milliseconds_count{snapshot_operation=PREPARE}")') >= 5)"
}
step "metrics on [metrics] address: daemons by version, snapshots by kind, cache KB (vs du), skipped layers" check_metrics
step "the container reads through it" sh -c "ctr --address '$CD_SOCK' task exec --exec-id e1 nydus2 /bin/sh -c \"cat /data/second.txt\" | grep -qx 'only in layer two'"
step "the blob is read from the registry by nydusd (cache filled)" sh -c "[ -n \"\$(find '$ROOT/cache' -type f -size +1k)\" ]"
# kill -9 of the snapshotter while the container runs: the container keeps
# reading; the restarted snapshotter lists every snapshot and takes the running
# nydusd over (so removing the container below still stops it).
kill_snapshotter() {
  ctr_ snapshots --snapshotter nydus ls | tail -n +2 | sort >"$WORK/snaps.before"
  kill -KILL "$SNAP_PID" && wait "$SNAP_PID" 2>/dev/null
  SNAP_PID=''
  ctr_ task exec --exec-id e2 nydus2 /bin/sh -c 'cat /data/hello.txt' | grep -qx 'hello from layer two'
}
step "kill -9 of the snapshotter: the container still reads" kill_snapshotter
restart_snapshotter() {
  local pid_before _
  pid_before=$(our_pids nydusd "$ROOT/")
  mv "$LOG_DIR/snapshotter.log" "$LOG_DIR/snapshotter.1.log"
  start_snapshotter || return 1
  # containerd redials the proxy with gRPC's backoff: the first calls may still fail.
  for _ in $(seq 60); do ctr_ snapshots --snapshotter nydus ls >/dev/null 2>&1 && break; sleep 0.5; done
  ctr_ snapshots --snapshotter nydus ls | tail -n +2 | sort >"$WORK/snaps.after"
  diff "$WORK/snaps.before" "$WORK/snaps.after" || return 1
  grep -q 're-attached to the running nydusd' "$LOG_DIR/snapshotter.log" || return 1
  [ "$(our_pids nydusd "$ROOT/")" = "$pid_before" ] || { echo "nydusd changed: $pid_before -> $(our_pids nydusd "$ROOT/")"; return 1; }
  ctr_ task exec --exec-id e3 nydus2 /bin/sh -c 'cat /data/second.txt' | grep -qx 'only in layer two'
}
step "restarted snapshotter: same snapshots, re-attached to the same nydusd" restart_snapshotter
# ---- bad input: clear gRPC errors, nothing half-mounted, the snapshotter keeps serving ----
# Broken Nydus images made from the converted one by editing its manifest in the
# registry (the distribution API): "noboot" lacks the bootstrap layer (blob
# layers only); "badboot" has in place of the bootstrap a tar whose
# image/image.boot is text, still annotated nydus-bootstrap, plus unknown
# snapshot annotations (containerd hands every containerd.io/snapshot/* one to
# Prepare as a label; it refuses > 4096 bytes itself, so 3900 here).
edit_image() {  # MODE SRC_REPO DEST_REPO (tag v1 both)
  "$PY" - "$R" "$@" <<'EOF'
import hashlib, io, json, sys, tarfile, urllib.request
reg, mode, src, dst = sys.argv[1:5]
base = f"http://{reg}/v2"
accept = "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json"
def req(url, method="GET", data=None, headers={}):
    return urllib.request.urlopen(urllib.request.Request(url, data=data, method=method, headers=headers))
def put_blob(data):
    d = "sha256:" + hashlib.sha256(data).hexdigest()
    loc = req(f"{base}/{dst}/blobs/uploads/", "POST").headers["Location"]
    loc = (loc if loc.startswith("http") else f"http://{reg}{loc}") + ("&" if "?" in loc else "?") + "digest=" + d
    req(loc, "PUT", data, {"Content-Type": "application/octet-stream"})
    return d
m = json.loads(req(f"{base}/{src}/manifests/v1", headers={"Accept": accept}).read())
cfg = json.loads(req(f"{base}/{src}/blobs/{m['config']['digest']}").read())
boot = [i for i, l in enumerate(m["layers"]) if "containerd.io/snapshot/nydus-bootstrap" in l.get("annotations", {})]
assert len(boot) == 1, "no bootstrap layer in the source"
i, new = boot[0], None
if mode == "noboot":
    del m["layers"][i]
    del cfg["rootfs"]["diff_ids"][i]
else:
    text = b"this is not a bootstrap\n" * 200
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        ti = tarfile.TarInfo("image/image.boot"); ti.size = len(text); t.addfile(ti, io.BytesIO(text))
    layer = buf.getvalue()
    new = put_blob(layer)
    m["layers"][i] = {"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": new, "size": len(layer),
                      "annotations": {"containerd.io/snapshot/nydus-bootstrap": "true",
                                      "containerd.io/snapshot/unknown-label": "x" * 3900,
                                      "containerd.io/snapshot/odd \u00e9 label": "\u2603\t\\;,=\"'"}}
    cfg["rootfs"]["diff_ids"][i] = new
for l in m["layers"]:
    if l["digest"] != new:  # the source's blob layers: a cross-repository mount
        req(f"{base}/{dst}/blobs/uploads/?mount={l['digest']}&from={src}", "POST")
data = json.dumps(cfg).encode()
m["config"]["digest"], m["config"]["size"] = put_blob(data), len(data)
req(f"{base}/{dst}/manifests/v1", "PUT", json.dumps(m).encode(),
    {"Content-Type": m.get("mediaType", "application/vnd.oci.image.manifest.v1+json")})
print("pushed", dst, [l["digest"] for l in m["layers"]])
EOF
}
make_bad_images() { edit_image noboot test/nydus test/noboot && edit_image badboot test/nydus test/badboot; }
step "registry: test/noboot (no bootstrap layer), test/badboot (text as bootstrap, odd labels)" make_bad_images
# What must not change across a failed call: mounts under our root, our nydusd
# processes, the mount and socket directories, the snapshot list.
our_state() {
  echo "mounts:"; awk -v d="$ROOT" 'index($5, d) == 1 {print $5, $9}' /proc/self/mountinfo | sort
  echo "nydusd: $(our_pids nydusd "$ROOT/" | sort | tr '\n' ' ')"
  echo "mnt: $(ls "$ROOT/mnt" 2>/dev/null | tr '\n' ' ') socket: $(ls "$ROOT/socket" 2>/dev/null | tr '\n' ' ')"
  echo "snapshots:"; ctr_ snapshots --snapshotter nydus ls | tail -n +2 | sort
}
still_serving() {  # List answers, and a good Nydus container runs right after
  ctr_ snapshots --snapshotter nydus ls >/dev/null || { echo "List failed"; return 1; }
  run_and_compare "$NYDUS_REF" "good$STEP_NO"
}
refused_cleanly() {  # IMAGE NAME MSG_REGEX: ctr run fails naming the cause; state unchanged; still serving
  local out rc
  our_state >"$WORK/state.before"
  out=$(ctr_ run --rm --snapshotter nydus "$1" "$2" /bin/sh -c 'echo ran' 2>&1); rc=$?
  echo "ctr run exit $rc: $out"
  ctr_ containers rm "$2" >/dev/null 2>&1
  [ "$rc" -ne 0 ] || { echo "the container ran"; return 1; }
  echo "$out" | grep -Eq -- "$3" || { echo "error does not match /$3/"; return 1; }
  our_state >"$WORK/state.after"
  diff "$WORK/state.before" "$WORK/state.after" || { echo "state changed"; return 1; }
  still_serving
}
step "ctr-remote rpull test/noboot (its blob layers are answered AlreadyExists)" ctr-remote --address "$CD_SOCK" \
  image rpull --plain-http --snapshotter nydus "$R/test/noboot:v1"
# containerd turns the gRPC status into its errdefs error: FailedPrecondition
# prints "failed precondition" (errdefs.FromGRPC), the oracle for the code.
step "no bootstrap layer: Prepare refused (FailedPrecondition naming nydus-bootstrap), nothing left, still serving" \
  refused_cleanly "$R/test/noboot:v1" noboot1 'nydus-bootstrap.*: failed precondition'
step "ctr-remote rpull test/badboot (unknown and odd labels on its layers are accepted)" ctr-remote \
  --address "$CD_SOCK" image rpull --plain-http --snapshotter nydus "$R/test/badboot:v1"
step "text labelled nydus-bootstrap: Prepare refused (FailedPrecondition, not a RAFS bootstrap), no nydusd, still serving" \
  refused_cleanly "$R/test/badboot:v1" badboot1 'not a RAFS bootstrap.*: failed precondition'
odd_labels_kept() {  # Stat of the bootstrap snapshot gives the labels back byte for byte
  local k
  for k in $(ctr_ snapshots --snapshotter nydus ls | awk 'NR > 1 {print $1}'); do
    ctr_ snapshots --snapshotter nydus info "$k"
  done | "$PY" -c '
import json, sys
text = sys.stdin.read()
dec, pos, found = json.JSONDecoder(), 0, 0
while pos < len(text):
    while pos < len(text) and text[pos].isspace(): pos += 1
    if pos >= len(text): break
    info, pos = dec.raw_decode(text, pos)
    l = info.get("Labels") or {}
    if "containerd.io/snapshot/unknown-label" in l:
        found += 1
        assert l["containerd.io/snapshot/unknown-label"] == "x" * 3900, "long label changed"
        assert l["containerd.io/snapshot/odd \u00e9 label"] == "\u2603\t\\;,=\"\x27", repr(l)
print("snapshots with the labels:", found)
sys.exit(0 if found == 1 else 1)'
}
step "the unknown and odd labels are kept verbatim (Stat)" odd_labels_kept

# The registry goes away: an rpull fails before any Prepare; a container on a
# pulled image whose blob was never fetched cannot start, since nydusd reads
# the blob's meta (chunk table) from the registry when it mounts (as upstream's
# FileCacheEntry does): Prepare answers Unavailable with nydusd's own error,
# and nothing is left behind.
stop_registry() { stop_pid "$REGISTRY_PID"; REGISTRY_PID=''; ! curl -sf "http://$R/v2/" >/dev/null; }
restart_registry() {  # same address: the image references name it
  docker-registry serve "$WORK/registry/config.yml" >>"$WORK/registry/registry.log" 2>&1 &
  REGISTRY_PID=$!
  for _ in $(seq 100); do curl -sf "http://$R/v2/" >/dev/null && return 0; sleep 0.1; done
  return 1
}
rpull_without_registry() {
  local out rc
  our_state >"$WORK/state.before"
  out=$(ctr-remote --address "$CD_SOCK" image rpull --plain-http --snapshotter nydus "$R/test/nydus-other:v1" 2>&1); rc=$?
  echo "rpull exit $rc: $out"
  [ "$rc" -ne 0 ] && echo "$out" | grep -q 'connection refused' || return 1
  our_state >"$WORK/state.after"
  diff "$WORK/state.before" "$WORK/state.after" || return 1
  ctr_ snapshots --snapshotter nydus ls >/dev/null
}
step "registry stopped" stop_registry
step "rpull of a not-yet-pulled image with the registry gone: fails (connection refused), nothing changed" \
  rpull_without_registry
step "registry back (same address)" restart_registry
step "ctr-remote rpull test/nydus-other" ctr-remote --address "$CD_SOCK" image rpull --plain-http --snapshotter nydus \
  "$R/test/nydus-other:v1"
step "registry stopped again" stop_registry
read_without_registry() {
  local out rc
  our_state >"$WORK/state.before"
  out=$(ctr_ run --rm --snapshotter nydus "$R/test/nydus-other:v1" other1 /bin/sh -c 'sha256sum /data/other.bin' 2>&1); rc=$?
  echo "ctr run exit $rc: $out"
  ctr_ containers rm other1 >/dev/null 2>&1
  [ "$rc" -ne 0 ] || return 1
  echo "$out" | grep -Eq "exited before RUNNING: .*$R.*connect.*: unavailable" || { echo "want nydusd's reason, Unavailable"; return 1; }
  our_state >"$WORK/state.after"
  diff "$WORK/state.before" "$WORK/state.after" || return 1
  ctr_ snapshots --snapshotter nydus ls >/dev/null
}
step "a container on a never-fetched blob with the registry gone: Prepare Unavailable naming the connection error, no nydusd or mount left" \
  read_without_registry
step "registry back" restart_registry
step "the same container with the registry back reads the right bytes (no poisoned cache)" sh -c \
  "ctr --address '$CD_SOCK' run --rm --snapshotter nydus '$R/test/nydus-other:v1' other2 /bin/sh -c 'sha256sum /data/other.bin' | grep -q '^$OTHER_SUM '"
step "the snapshotter still serves after all of it" still_serving

# Blob cache files of an image: <blob id>.{blob.data,chunk_map,blob.meta} in
# <root>/cache, the blob ids being the digests of its manifest's nydus-blob
# layers (read from the registry, not from us).
blob_digests() {  # REPO: the sha256 hex of each nydus-blob layer
  curl -sf -H 'Accept: application/vnd.oci.image.manifest.v1+json' "http://$R/v2/$1/manifests/v1" | "$PY" -c '
import json, sys
for l in json.load(sys.stdin)["layers"]:
    if "containerd.io/snapshot/nydus-blob" in l.get("annotations", {}):
        print(l["digest"].split(":", 1)[1])'
}
cache_files_of() { local d; for d in $(blob_digests "$1"); do ls "$ROOT/cache" | grep -F "$d"; done; }
check_caches_filled() {
  blob_digests test/nydus >"$WORK/blobs.nydus" && blob_digests test/nydus-other >"$WORK/blobs.other" || return 1
  echo "cache dir:"; ls -l "$ROOT/cache"
  echo "nydus blobs: $(cat "$WORK/blobs.nydus")"; echo "other blobs: $(cat "$WORK/blobs.other")"
  [ -n "$(cache_files_of test/nydus)" ] && [ -n "$(cache_files_of test/nydus-other)" ] || return 1
  ! grep -qxFf "$WORK/blobs.nydus" "$WORK/blobs.other"  # the two images share no blob
}
step "both Nydus images have blob cache files (the images share no blob)" check_caches_filled
remove_all() {
  ctr_ task kill -s KILL nydus2 && sleep 0.5
  ctr_ task rm -f nydus2 >/dev/null 2>&1
  ctr_ containers rm nydus2 || return 1
  ctr_ image rm --sync "$NYDUS_REF" "$R/test/plain:v1" "$R/test/noboot:v1" "$R/test/badboot:v1" || return 1
}
step "ctr task kill + ctr rm + ctr image rm --sync (all but test/nydus-other)" remove_all
check_first_gone() {
  local _
  for _ in $(seq 50); do [ -z "$(cache_files_of test/nydus)" ] && break; sleep 0.2; done
  echo "cache dir:"; ls -l "$ROOT/cache"
  [ -z "$(cache_files_of test/nydus)" ] || { echo "left: $(cache_files_of test/nydus)"; return 1; }
  # The other image, still pulled and sharing nothing: all its files stay.
  [ "$(cache_files_of test/nydus-other | wc -l)" -ge 3 ] || return 1
  echo "nydusd: $(our_pids nydusd "$ROOT/")"; [ -z "$(our_pids nydusd "$ROOT/")" ] || return 1
  echo "mounts below $ROOT:"; awk -v d="$ROOT" 'index($5, d) == 1' /proc/self/mountinfo
  [ -z "$(awk -v d="$ROOT" 'index($5, d) == 1' /proc/self/mountinfo)" ]
}
step "removed image: no cache file of its blobs, nydusd or mount left; the other image's cache files stay" check_first_gone
check_gc_metrics() {
  metrics >"$WORK/metrics.txt" || return 1
  grep -E '^snapshotter_cache' "$WORK/metrics.txt"
  # This process (restarted above) removed the first image's blobs and keeps the other's.
  [ "$(metric "snapshotter_cache_blobs_deleted_total{}")" = "$(sort -u "$WORK/blobs.nydus" | wc -l).0" ] &&
    [ "$(metric "snapshotter_cache_blobs_in_use{}")" = "$(sort -u "$WORK/blobs.other" | wc -l).0" ] &&
    [ "$(metric "snapshotter_cache_blob_deletion_errors_total{}")" = 0.0 ]
}
step "metrics: blobs deleted by the GC = the removed image's blobs, in use = the other's" check_gc_metrics
step "the other image still runs from its cache with the registry stopped" sh -c "kill $REGISTRY_PID && sleep 0.3 &&
  ctr --address '$CD_SOCK' run --rm --snapshotter nydus '$R/test/nydus-other:v1' other3 /bin/sh -c 'sha256sum /data/other.bin' | grep -q '^$OTHER_SUM '"
REGISTRY_PID=''
step "registry back" restart_registry
step "ctr image rm --sync test/nydus-other" ctr_ image rm --sync "$R/test/nydus-other:v1"
check_all_gone() {
  local _
  for _ in $(seq 50); do [ -z "$(our_pids nydusd "$ROOT/")" ] && [ -z "$(ls "$ROOT/cache")" ] && break; sleep 0.2; done
  echo "nydusd: $(our_pids nydusd "$ROOT/")"; [ -z "$(our_pids nydusd "$ROOT/")" ] || return 1
  echo "mounts below $ROOT:"; awk -v d="$ROOT" 'index($5, d) == 1' /proc/self/mountinfo
  [ -z "$(awk -v d="$ROOT" 'index($5, d) == 1' /proc/self/mountinfo)" ] || return 1
  echo "snapshots: $(ctr_ snapshots --snapshotter nydus ls | tail -n +2)"
  [ -z "$(ctr_ snapshots --snapshotter nydus ls | tail -n +2)" ] || return 1
  echo "cache: $(ls "$ROOT/cache")"
  [ -z "$(ls "$ROOT/cache")" ] || return 1
  echo "dirs: $(ls "$ROOT/snapshots" "$ROOT/mnt" 2>/dev/null)"
  [ -z "$(ls "$ROOT/snapshots")" ] && [ -z "$(ls "$ROOT/mnt" 2>/dev/null)" ]
}
step "no nydusd, mount, snapshot, cache file or directory left" check_all_gone
step "the snapshotter still serves (List)" ctr_ snapshots --snapshotter nydus ls
step "the snapshotter logged no internal error" sh -c "! cat '$LOG_DIR'/snapshotter*.log | grep -E ' (error|critical) '"

# ---- --daemon-mode shared + --fs-driver auto: a second instance, its own root ------------
SMETRICS_PORT=$("$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
printf 'daemon_mode = "shared"\n[daemon]\nfs_driver = "auto"\n[metrics]\naddress = "127.0.0.1:%s"\n' "$SMETRICS_PORT" >"$WORK/shared.toml"
start_shared_snapshotter() {
  "$SNAPSHOTTER" --root "$SROOT" --address "$SSOCK" --nydusd "$NYDUSD" --config "$WORK/shared.toml" \
    --nydusd-config "$WORK/nydusd-config.json" --log-level debug >>"$LOG_DIR/shared.log" 2>&1 &
  SSNAP_PID=$!
  local _
  for _ in $(seq 100); do [ -S "$SSOCK" ] && break; sleep 0.1; done
  [ -S "$SSOCK" ] || { cat "$LOG_DIR/shared.log"; return 1; }
  # containerd redials a proxy it found absent with gRPC's backoff (up to 3 s):
  # until then calls fail at once. (List is answered from containerd's own
  # metadata: a Prepare is what reaches us.)
  for _ in $(seq 60); do
    sctr snapshots prepare probe-$$ >/dev/null 2>&1 && { sctr snapshots rm probe-$$; return; }
    sleep 0.5
  done
  echo "containerd does not reach $SSOCK"; return 1
}
sctr() { ctr_ "$1" --snapshotter nydus-shared "${@:2}"; }
step "containerd-nydus-grpc (config.toml daemon_mode = shared, fs_driver = auto) starts" start_shared_snapshotter
check_auto_logged() {
  grep -E 'fs driver fusedev \(auto: fanotify pre-content .*; fscache on-demand .*; using fusedev\)' "$LOG_DIR/shared.log" &&
    grep -q 'fs-driver auto -> fusedev, daemon-mode shared' "$LOG_DIR/shared.log"
}
step "--fs-driver auto: the choice (fusedev) and why are logged" check_auto_logged
SHARED_PID=''
check_shared_daemon() {  # one nydusd, upstream's shared fusedev command line, its FUSE mount at <root>/mnt
  local pids args
  pids=$(our_pids nydusd "$SROOT/")
  echo "nydusd pids: $pids"
  [ "$(echo "$pids" | wc -w)" -eq 1 ] || return 1
  args=$(tr '\0' ' ' <"/proc/$pids/cmdline")
  echo "cmdline: $args"
  echo "$args" | grep -Eq "^$NYDUSD fuse --thread-num [0-9]+ --mountpoint $SROOT/mnt --apisock $SROOT/socket/shared_daemon/api.sock --log-level [a-z]+ --log-rotation-size 100( --log-file [^ ]+)? --failover-policy resend $" || return 1
  awk -v d="$SROOT/mnt" '$5 == d' /proc/self/mountinfo | grep -q ' - fuse' || { echo "no FUSE mount at $SROOT/mnt"; return 1; }
  SHARED_PID=$pids
}
step "the shared nydusd runs from the start, with upstream's shared command line, mounted at <root>/mnt" check_shared_daemon
step "ctr-remote rpull both Nydus images --snapshotter nydus-shared" sh -c "
  ctr-remote --address '$CD_SOCK' image rpull --plain-http --snapshotter nydus-shared '$NYDUS_REF' &&
  ctr-remote --address '$CD_SOCK' image rpull --plain-http --snapshotter nydus-shared '$R/test/nydus-other:v1'"
step "two containers on the two images, concurrently" sh -c "
  ctr --address '$CD_SOCK' run -d --snapshotter nydus-shared '$NYDUS_REF' sh1 /bin/sh -c 'sleep 300' &&
  ctr --address '$CD_SOCK' run -d --snapshotter nydus-shared '$R/test/nydus-other:v1' sh2 /bin/sh -c 'sleep 300'"
reads_right() {  # which containers must read right: sh1 and/or sh2
  local c out
  for c in "$@"; do
    case $c in
      sh1) out=$(ctr_ task exec --exec-id "r$RANDOM" sh1 /bin/sh -c "$CMD")
           [ "$out" = "$EXPECTED" ] || { printf 'sh1 got:\n%s\nwant:\n%s\n' "$out" "$EXPECTED"; return 1; } ;;
      sh2) out=$(ctr_ task exec --exec-id "r$RANDOM" sh2 /bin/sh -c 'sha256sum /data/other.bin')
           [ "${out%% *}" = "$OTHER_SUM" ] || { echo "sh2 got '$out', want $OTHER_SUM"; return 1; } ;;
    esac
    echo "$c reads the right bytes"
  done
}
lower_of() { awk -v d="$CD/state/io.containerd.runtime.v2.task/default/$1/rootfs" '$5 == d {print $NF}' /proc/self/mountinfo |
  tr ',' '\n' | sed -n 's/^lowerdir=//p'; }
check_two_in_one() {
  local l1 l2
  reads_right sh1 sh2 || return 1
  [ "$(our_pids nydusd "$SROOT/")" = "$SHARED_PID" ] || { echo "nydusd: $(our_pids nydusd "$SROOT/") want $SHARED_PID"; return 1; }
  l1=$(lower_of sh1) l2=$(lower_of sh2)
  echo "lowerdirs: $l1 | $l2; FUSE root lists: $(ls "$SROOT/mnt" | tr '\n' ' ')"
  [[ $l1 =~ ^$SROOT/mnt/[0-9]+$ ]] && [[ $l2 =~ ^$SROOT/mnt/[0-9]+$ ]] && [ "$l1" != "$l2" ] || return 1
  [ "$(ls "$SROOT/mnt" | sort | tr '\n' ' ')" = "$(printf '%s\n' "${l1##*/}" "${l2##*/}" | sort | tr '\n' ' ')" ] || return 1
  # One FUSE connection below the root: the images are not mounts of their own.
  [ "$(awk -v d="$SROOT/" 'index($5, d) == 1' /proc/self/mountinfo | grep -c ' - fuse')" -eq 1 ]
}
step "both read the right bytes through one nydusd; lowerdirs <root>/mnt/<id> in its one FUSE mount" check_two_in_one
check_shared_metrics() {  # the resolved driver, and the one nydusd counted once for its two images
  local version
  METRICS_PORT=$SMETRICS_PORT metrics >"$WORK/metrics.txt" || return 1
  grep -E '^(nydusd_counts|snapshotter_config_info)' "$WORK/metrics.txt"
  version=$("$NYDUSD" --version | awk '/Version:/ {print $NF; exit}')
  [ "$(metric "snapshotter_config_info{daemon_mode=shared,fs_driver=fusedev,requested_fs_driver=auto}")" = 1.0 ] &&
    [ "$(metric "nydusd_counts{version=$version}")" = "$(our_pids nydusd "$SROOT/" | wc -l).0" ] &&
    [ "$(grep -c '^nydusd_counts' "$WORK/metrics.txt")" -eq 1 ]
}
step "metrics: snapshotter_config_info names the driver auto resolved to; nydusd_counts = 1 for two images" check_shared_metrics
restart_shared() {
  kill -KILL "$SSNAP_PID" && wait "$SSNAP_PID" 2>/dev/null
  SSNAP_PID=''
  reads_right sh1 sh2 || return 1
  start_shared_snapshotter || return 1
  [ "$(grep -c 're-attached to the running nydusd of snapshot .* (shared daemon)' "$LOG_DIR/shared.log")" -eq 2 ] || return 1
  [ "$(our_pids nydusd "$SROOT/")" = "$SHARED_PID" ] || { echo "nydusd changed"; return 1; }
  reads_right sh1 sh2
}
step "kill -9 + restart of the shared-mode snapshotter: re-attached to the same nydusd and both images" restart_shared
remove_first() {
  local _ left
  ctr_ task kill -s KILL sh1 && sleep 0.5
  ctr_ task rm -f sh1 >/dev/null 2>&1
  ctr_ containers rm sh1 && ctr_ image rm --sync "$NYDUS_REF" || return 1
  for _ in $(seq 50); do [ "$(ls "$SROOT/mnt" | wc -l)" -eq 1 ] && break; sleep 0.2; done
  left=$(ls "$SROOT/mnt")
  echo "FUSE root lists: $left (sh2's lowerdir: $(lower_of sh2))"
  [ "$SROOT/mnt/$left" = "$(lower_of sh2)" ] || return 1
  [ "$(our_pids nydusd "$SROOT/")" = "$SHARED_PID" ] || return 1
  reads_right sh2
}
step "ctr image rm of the first: unmounted from the shared nydusd, the second keeps reading" remove_first
remove_second() {
  local _
  ctr_ task kill -s KILL sh2 && sleep 0.5
  ctr_ task rm -f sh2 >/dev/null 2>&1
  ctr_ containers rm sh2 && ctr_ image rm --sync "$R/test/nydus-other:v1" || return 1
  for _ in $(seq 50); do [ -z "$(ls "$SROOT/mnt")" ] && [ -z "$(sctr snapshots ls | tail -n +2)" ] && break; sleep 0.2; done
  echo "FUSE root: '$(ls "$SROOT/mnt")', snapshots: '$(sctr snapshots ls | tail -n +2)', cache: '$(ls "$SROOT/cache")'"
  [ -z "$(ls "$SROOT/mnt")" ] && [ -z "$(sctr snapshots ls | tail -n +2)" ] && [ -z "$(ls "$SROOT/cache")" ] || return 1
  [ "$(our_pids nydusd "$SROOT/")" = "$SHARED_PID" ]  # as upstream: the shared daemon stays
}
step "ctr image rm of the second: nothing mounted, no snapshot or cache file; the shared nydusd stays" remove_second
stop_shared() {
  stop_pid "$SSNAP_PID"; SSNAP_PID=''
  stop_pid "$SHARED_PID"
  echo "nydusd: '$(our_pids nydusd "$SROOT/")'; mounts: $(awk -v d="$SROOT/" 'index($5, d) == 1 {print $5}' /proc/self/mountinfo)"
  [ -z "$(our_pids nydusd "$SROOT/")" ] && [ -z "$(awk -v d="$SROOT/" 'index($5, d) == 1' /proc/self/mountinfo)" ]
}
step "stopping the snapshotter and the shared nydusd leaves no process or mount" stop_shared
step "the shared-mode snapshotter logged no internal error" sh -c "! grep -E ' (error|critical) ' '$LOG_DIR/shared.log'"

summary
