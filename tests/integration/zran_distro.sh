#!/usr/bin/env bash
# nydusify convert --oci-ref on a real distribution image (issue 15): a Debian
# bookworm rootfs with python3, perl and curl made by mmdebstrap (cached, see
# lib/distro_rootfs.sh), split by umoci into three gzip layers (the base; the
# python3 standard library; perl's library plus a whiteout of /usr/share/doc
# and of /usr/bin/curl), pushed to docker-registry with skopeo, converted with
# --oci-ref, and mounted by nydusd from the registry:
#  - one small file costs < 2 MB, counted by the registry's own access log
#    (bytes sent for blob requests), not by our daemon; with the blob meta
#    read at mount, < 2% of the image;
#  - the mounted tree == `umoci unpack` of the source image (content, modes,
#    owners, hard links, symlinks, whiteouts applied);
#  - python3 and perl run from the lazy mount (chroot), and what the registry
#    then sent stays well below the image size.
set -uo pipefail
. "$(dirname "$0")/lib/common.sh"
. "$(dirname "$0")/lib/distro_rootfs.sh"

[ "$(id -u)" -eq 0 ] || skip "needs root (FUSE mount, umoci unpack with owners, chroot)"
[ -e /dev/fuse ] || skip_kernel "no /dev/fuse"
for t in umoci skopeo docker-registry mmdebstrap; do command -v $t >/dev/null || skip "$t not installed (scripts/setup.sh)"; done
NYDUSIFY=$NYDUS_BIN_DIR/nydusify
NYDUSD=$NYDUS_BIN_DIR/nydusd
[ -x "$NYDUSIFY" ] && [ -x "$NYDUSD" ] || die "nydusify/nydusd not built in $NYDUS_BIN_DIR"

WORK=$(mktemp -d "${NYDUS_TEST_TMP:-/var/tmp}/nydus-zran-distro.XXXXXX")
DPID=
cleanup() {
  [ -n "$DPID" ] && kill "$DPID" 2>/dev/null && wait "$DPID" 2>/dev/null
  [ -d "$WORK/mnt" ] && { fusermount3 -u -z "$WORK/mnt" 2>/dev/null || umount -l "$WORK/mnt" 2>/dev/null; }
  [ -n "${REGISTRY_PID:-}" ] && kill "$REGISTRY_PID" 2>/dev/null
  [ "${KEEP_WORK:-0}" = 1 ] && { echo "kept $WORK"; return; }
  rm -rf "$WORK"
}
trap cleanup EXIT
cd "$WORK" || die "cd"

TARBALL=$(distro_rootfs_tar python3,perl,curl) || die "no Debian rootfs (mmdebstrap)"
make_layers() {
  local r=b/rootfs py perl
  umoci init --layout img && umoci new --image img:empty && umoci unpack --image img:empty b >/dev/null || return 1
  tar -C "$r" --numeric-owner -xpf "$TARBALL" || return 1
  py=$(cd "$r" && echo usr/lib/python3.[0-9]*)
  perl=usr/share/perl
  [ -d "$r/$py" ] && [ -d "$r/$perl" ] || { echo "no $py or $perl in the rootfs"; return 1; }
  mkdir -p held/usr/lib held/usr/share
  mv "$r/$py" "held/$py" && mv "$r/$perl" "held/$perl" || return 1
  umoci repack --refresh-bundle --image img:v1 b || return 1
  mv "held/$py" "$r/$py" && umoci repack --refresh-bundle --image img:v2 b || return 1
  mv "held/$perl" "$r/$perl" && rm -rf "$r/usr/share/doc" "$r/usr/bin/curl" || return 1
  umoci repack --image img:v3 b || return 1
  umoci unpack --image img:v3 ref >/dev/null || return 1
  echo "source: $(du -sm --apparent-size ref/rootfs | cut -f1) MB unpacked, $(find ref/rootfs | wc -l) entries, layers:"
  "$PY" - <<'PY'
import json, os
idx = json.load(open("img/index.json"))
m = next(d for d in idx["manifests"] if d["annotations"]["org.opencontainers.image.ref.name"] == "v3")
man = json.load(open("img/blobs/sha256/" + m["digest"].split(":")[1]))
for l in man["layers"]:
    print(f"  {l['digest'][:19]}  {l['size'] / 1e6:6.1f} MB gzip")
PY
}
step "umoci: a 3-layer gzip image of a Debian rootfs (python3, perl, curl; a whiteout)" make_layers ||
  die "cannot build the source image"
IMAGE_BYTES=$(du -sb --apparent-size ref/rootfs | cut -f1)

export NYDUS_REGISTRY_ACCESS_LOG=1
step "docker-registry on loopback (access log on)" start_registry "$WORK/registry" || die "no registry"
R=$REGISTRY_HOST
step "skopeo: source image into the registry" skopeo copy -q --dest-tls-verify=false oci:img:v3 "docker://$R/debian/py:v3" ||
  die "skopeo copy failed"
convert() {
  local t0 t1
  t0=$(date +%s.%N)
  "$NYDUSIFY" convert --oci-ref --source "$R/debian/py:v3" --target "$R/debian/py:v3-zran" \
    --source-insecure --target-insecure --work-dir "$WORK/w" >"$WORK/convert.out" 2>&1 || {
    cat "$WORK/convert.out"; return 1; }
  t1=$(date +%s.%N)
  echo "converted in $("$PY" -c "print(f'{$t1 - $t0:.1f}')") s"
}
step "nydusify convert --oci-ref" convert || die "convert failed"

# The bootstrap, fetched as any client would: manifest -> last layer -> image/image.boot.
get_bootstrap() {
  "$PY" - "$R" <<'PY'
import io, json, sys, tarfile, urllib.request
reg = sys.argv[1]
def get(path, accept=None):
    req = urllib.request.Request(f"http://{reg}{path}")
    if accept: req.add_header("Accept", accept)
    return urllib.request.urlopen(req).read()
man = json.loads(get("/v2/debian/py/manifests/v3-zran", "application/vnd.oci.image.manifest.v1+json"))
assert len(man["layers"]) == 4, [l["mediaType"] for l in man["layers"]]
tgz = get(f"/v2/debian/py/blobs/{man['layers'][-1]['digest']}")
open("image.boot", "wb").write(tarfile.open(fileobj=io.BytesIO(tgz), mode="r:gz").extractfile("image/image.boot").read())
PY
}
step "the target's bootstrap layer" get_bootstrap || die "no bootstrap"

# Bytes the registry sent for blob GETs since line $1 of its access log.
sent_since() {
  tail -n +"$(($1 + 1))" "$WORK/registry/registry.log" |
    awk '$6 == "\"GET" && $7 ~ /\/blobs\// && ($9 == 200 || $9 == 206) {s += $10} END {print s + 0}'
}
log_lines() { wc -l <"$WORK/registry/registry.log"; }

mkdir -p "$WORK/mnt" "$WORK/cache"
cat >"$WORK/nydusd.json" <<JSON
{"device": {"backend": {"type": "registry", "config": {"scheme": "http", "host": "$R", "repo": "debian/py"}},
            "cache": {"type": "blobcache", "config": {"work_dir": "$WORK/cache"}}},
 "mode": "direct", "digest_validate": true, "enable_xattr": true}
JSON
mount_lazy() {
  MARK=$(log_lines)
  "$NYDUSD" --bootstrap image.boot --config "$WORK/nydusd.json" --mountpoint "$WORK/mnt" \
    --apisock "$WORK/api.sock" >"$WORK/nydusd.log" 2>&1 &
  DPID=$!
  local i
  for i in $(seq 100); do grep -q " $WORK/mnt " /proc/mounts && break; sleep 0.1; done
  grep -q " $WORK/mnt " /proc/mounts || { cat "$WORK/nydusd.log"; return 1; }
  # Before it mounts, nydusd reads each layer's blob meta (chunk table and
  # zran checkpoints with their 32 KiB windows, zstd) from the ref blobs, as
  # upstream does: a cost per image, not per file.
  META=$(sent_since "$MARK")
  MARK=$(log_lines)
  echo "blob meta read at mount: $META bytes"
}
small_read() {
  cmp ref/rootfs/etc/os-release "$WORK/mnt/etc/os-release" || return 1
  local b; b=$(sent_since "$MARK")
  echo "the registry sent $b bytes of blobs for one small file, $META at mount (image: $IMAGE_BYTES bytes unpacked)"
  [ "$b" -lt 2000000 ] && [ $((b + META)) -lt $((IMAGE_BYTES / 50)) ]
}
run_from_mount() {
  local mark b out
  mark=$(log_lines)
  out=$(chroot "$WORK/mnt" /usr/bin/python3 -c 'import json, email.parser, http.client, argparse; print(json.dumps({"ok": 1}))') ||
    return 1
  [ "$out" = '{"ok": 1}' ] || { echo "python3 printed: $out"; return 1; }
  # (the script on stdin: `perl -e` opens /dev/null, a device node FUSE mounts do not open)
  out=$(echo 'use POSIX; print floor(7.5), "\n";' | chroot "$WORK/mnt" /usr/bin/perl) || return 1
  [ "$out" = 7 ] || { echo "perl printed: $out"; return 1; }
  b=$(sent_since "$mark")
  echo "python3 + perl ran; the registry sent $b bytes of blobs for them (image: $IMAGE_BYTES bytes unpacked)"
  [ "$b" -gt 0 ] && [ "$b" -lt $((IMAGE_BYTES / 4)) ]
}
if step "nydusd (registry backend) mounts the zran image" mount_lazy; then
  step "lazy: one small file costs < 2 MB, by the registry's access log" small_read
  step "python3 and perl run from the lazy mount, fetching < 1/4 of the image" run_from_mount
  step "mounted image == umoci unpack of the source (0 differences)" \
    compare_trees --ignore-root-mtime --mtime-ns ref/rootfs "$WORK/mnt"
  kill "$DPID"; wait "$DPID" 2>/dev/null; DPID=
fi

summary
