#!/usr/bin/env bash
# containerd-nydus-grpc with a real distribution image: a Debian bookworm
# rootfs with python3, perl and curl (mmdebstrap, cached by
# lib/distro_rootfs.sh; > 150 MB unpacked) as a one-layer OCI image in a
# docker-registry whose access log is on, converted by our nydusify. Under
# containerd 1.6 + runc (lib/containerd.sh):
#   - `ctr-remote image rpull --snapshotter nydus` + `ctr run` of python3
#     importing json, sqlite3, email, http.client, decimal, ctypes: the output
#     equals the same command in a chroot of the unpacked source rootfs (the
#     oracle), and the registry sent (its own access log: bytes of blob GETs)
#     far less than the image holds;
#   - the plain OCI image through the same snapshotter (overlay path, a full
#     pull + unpack by containerd): same output, and the registry sent at least
#     the compressed layer.
set -uo pipefail
# shellcheck source-path=SCRIPTDIR source=lib/common.sh
source "$(dirname "$0")/lib/common.sh"
# shellcheck source=lib/distro_rootfs.sh
source "$LIB_DIR/distro_rootfs.sh"

# shellcheck source=lib/containers_test.sh
source "$LIB_DIR/containers_test.sh"
ct_test_preflight mmdebstrap
[ -e /dev/fuse ] || skip_kernel "no /dev/fuse"

ct_test_workdir ctdistro

TARBALL=$(distro_rootfs_tar python3,perl,curl) || die "no Debian rootfs (mmdebstrap)"
make_image() {
  umoci init --layout img && umoci new --image img:empty && umoci unpack --image img:empty b >/dev/null || return 1
  tar -C b/rootfs --numeric-owner -xpf "$TARBALL" || return 1
  umoci repack --image img:v1 b || return 1
  umoci config --image img:v1 --config.cmd /bin/sh >/dev/null || return 1
  echo "unpacked: $(du -sm --apparent-size b/rootfs | cut -f1) MB, $(find b/rootfs | wc -l) entries"
}
step "umoci: a one-layer image of a Debian rootfs (python3, perl, curl)" make_image || die "cannot build the image"
IMAGE_BYTES=$(du -sb --apparent-size b/rootfs | cut -f1)
[ "$IMAGE_BYTES" -ge 150000000 ] || die "the image has $IMAGE_BYTES bytes, want >= 150 MB"
# The workload and its oracle: the same command in a chroot of the source rootfs.
PYCMD='import json, sqlite3, email.parser, http.client, decimal, ctypes, sys
print(json.dumps({"sqlite": sqlite3.sqlite_version, "py": sys.version.split()[0], "d": str(decimal.Decimal(1) / 7)}))'
WANT=$(chroot b/rootfs /usr/bin/python3 -c "$PYCMD") || die "python3 does not run in a chroot of the rootfs"
echo "oracle: $WANT"

export NYDUS_REGISTRY_ACCESS_LOG=1
step "docker-registry on loopback (access log on)" start_registry "$WORK/registry" || die "no registry"
R=$REGISTRY_HOST
step "skopeo: the image into the registry" skopeo copy -q --dest-tls-verify=false oci:img:v1 "docker://$R/debian/py:v1" ||
  die "skopeo copy failed"
step "nydusify convert" "$NYDUSIFY" convert --source "$R/debian/py:v1" --target "$R/debian/py:nydus" \
  --source-insecure --target-insecure --work-dir "$WORK/convert" || die "convert failed"
# Bytes the registry sent for blob GETs since line $1 of its access log.
sent_since() {
  tail -n +"$(($1 + 1))" "$WORK/registry/registry.log" |
    awk '$6 == "\"GET" && $7 ~ /\/blobs\// && ($9 == 200 || $9 == 206) {s += $10} END {print s + 0}'
}
log_lines() { wc -l <"$WORK/registry/registry.log"; }

step "containerd-nydus-grpc + containerd 1.6" ct_start --log-level info || die "no snapshotter/containerd"
run_python() {  # MODE IMAGE NAME: pull (rpull|pull), run the workload, compare; prints the bytes sent
  local mark out sent
  mark=$(log_lines)
  if [ "$1" = rpull ]; then
    ctr-remote --address "$CT_CD_SOCK" image rpull --plain-http --snapshotter nydus "$2" >/dev/null || return 1
  else
    ct_ctr image pull --plain-http --snapshotter nydus "$2" >/dev/null || return 1
  fi
  out=$(ct_ctr run --rm --snapshotter nydus "$2" "$3" /usr/bin/python3 -c "$PYCMD") || return 1
  sent=$(sent_since "$mark")
  echo "container: $out"
  echo "registry sent $sent bytes for blobs; the image holds $IMAGE_BYTES bytes unpacked"
  [ "$out" = "$WANT" ] || { echo "want: $WANT"; return 1; }
  SENT=$sent
}
lazy() {
  run_python rpull "$R/debian/py:nydus" py-nydus || return 1
  # Far less than the image: the python3 start reads a few MB of a > 150 MB rootfs.
  [ "$SENT" -gt 0 ] && [ "$SENT" -lt $((IMAGE_BYTES / 5)) ] || { echo "sent $SENT, want < 1/5 of $IMAGE_BYTES"; return 1; }
  NYDUS_SENT=$SENT
}
step "Nydus image: rpull + ctr run python3 (imports): oracle's output, registry sent < 1/5 of the image" lazy
plain() {
  local layer
  run_python pull "$R/debian/py:v1" py-plain || return 1
  layer=$(curl -sf -H 'Accept: application/vnd.oci.image.manifest.v1+json' "http://$R/v2/debian/py/manifests/v1" |
    "$PY" -c 'import json, sys; print(sum(l["size"] for l in json.load(sys.stdin)["layers"]))')
  echo "compressed layer: $layer bytes; lazy run fetched $NYDUS_SENT"
  [ "$SENT" -ge "$layer" ] && [ "$NYDUS_SENT" -lt $((layer / 3)) ]
}
step "plain OCI image through the overlay path: same output; the full layer was fetched (lazy: < 1/3 of it)" plain
step "the snapshotter logged no internal error" sh -c "! grep -E ' (error|critical) ' '$CT_LOGS/snapshotter.log'"

summary
