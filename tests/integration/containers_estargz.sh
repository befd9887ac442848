#!/usr/bin/env bash
# eStargz images run lazily through containerd-nydus-grpc ([experimental]
# enable_stargz, as nydus-snapshotter), under real containerd 1.6 + runc
# (lib/containerd.sh):
#   - a two-layer OCI image (busybox-static, a few MB of random data, the
#     second layer adds a file and deletes one) converted by Debian's
#     `ctr-remote image convert --estargz --oci`, pushed to a docker-registry
#     on loopback with its access log on;
#   - `ctr-remote image rpull --snapshotter nydus`: every layer is answered
#     "already exists" after its TOC was read (the snapshotter logged it per
#     layer), and the registry sent, per layer blob, far less than its size
#     with no GET as large as the layer (nobody downloaded a whole layer);
#   - `ctr run`: sha256 of files inside equal the source tree's (the deleted
#     file is gone: the merged bootstrap applies the whiteout), the rootfs
#     lowerdir is the nydusd FUSE mount; reading the big files later fetches
#     their ranges only then;
#   - a reboot (kill -9 of everything, mounts gone): a container created before
#     starts and reads right (the snapshotter serves the merged bootstrap again);
#   - `ctr image rm`: no nydusd, mount or snapshot left;
#   - the same image with the top layer's toc.digest annotation changed: that
#     TOC is refused (logged), containerd downloads that layer whole, layer 1
#     stays lazy under it, the sums are right;
#   - 64 KiB chunks (ctr-remote --estargz-chunk-size 65536) and, over that
#     layer 1, a layer stargz-snapshotter's writer made with a min chunk size
#     (payloads inside shared gzip members, tests/fixtures/estargz-min-chunk):
#     both built from their TOCs, the container's sums of its files right;
#     the same layer over a 4 MiB-chunk layer 1: left to containerd (one
#     merged bootstrap, one chunk size), the container still reads right;
#   - --fs-driver fanotify (kernels >= 6.14 with erofs): the lowerdir is EROFS
#     over nydusd's cache files filled from the eStargz blobs, sums right;
#   - --daemon-mode shared: the same through the shared nydusd, unmounted at image rm;
#   - a registry behind htpasswd: the TOCs are read with the docker config's
#     credentials (the snapshotter's keychain), the container reads right;
#   - enable_stargz off (default, as upstream): the same image is downloaded
#     and unpacked by containerd (overlay) and still reads right.
set -uo pipefail
# shellcheck source-path=SCRIPTDIR source=lib/common.sh
source "$(dirname "$0")/lib/common.sh"

# shellcheck source=lib/containers_test.sh
source "$LIB_DIR/containers_test.sh"
ct_test_preflight busybox curl
[ -e /dev/fuse ] || skip_kernel "no /dev/fuse"
[ -x "$NYDUS_BIN_DIR/nydus-image" ] || die "$NYDUS_BIN_DIR/nydus-image not built"
ct_test_workdir ct-estargz
cp "$NYDUS_BIN_DIR/nydus-image" "$WORK/bin/" || die "cp nydus-image"
# The upstream key, in nydus-snapshotter's config.toml.
printf '[experimental]\nenable_stargz = true\n' >"$WORK/snapshotter.toml"
SNAP_FLAGS=(--config "$WORK/snapshotter.toml" --nydus-image "$WORK/bin/nydus-image" --log-level debug)

# ---- the image: two layers ---------------------------------------------------------------
make_image() {
  local r=b0/rootfs
  umoci init --layout img && umoci new --image img:base && umoci unpack --image img:base b0 >/dev/null || return 1
  mkdir -p "$r/bin" "$r/data/sub/deeper" || return 1
  cp "$BUSYBOX" "$r/bin/busybox" && ln -s busybox "$r/bin/sh" || return 1
  head -c 16000000 /dev/urandom >"$r/data/random.bin"
  head -c 2000000 /dev/urandom >"$r/data/doomed.bin"
  head -c 12345 /dev/urandom >"$r/data/sub/odd.bin"
  seq 1 200000 >"$r/data/sub/deeper/numbers.txt"
  echo "hello from the image" >"$r/data/hello.txt"
  umoci repack --image img:v1 b0 || return 1
  umoci unpack --image img:v1 b1 >/dev/null || return 1
  rm b1/rootfs/data/doomed.bin && head -c 3000000 /dev/urandom >b1/rootfs/data/added.bin || return 1
  echo "changed in layer 2" >b1/rootfs/data/hello.txt
  umoci repack --image img:v2 b1 && (cd img && tar cf ../img.tar .)
}
step "umoci: a two-layer busybox-static image with a few MB of data" make_image || die "cannot build the image"
# The oracle: the source tree's sums (the top layer's rootfs), as the container's sha256sum prints them.
SMALL="data/hello.txt data/sub/odd.bin data/sub/deeper/numbers.txt bin/busybox"
BIG="data/random.bin data/added.bin"
(cd b1/rootfs && sha256sum $SMALL | sed 's#  #  /#') >want_small.txt
(cd b1/rootfs && sha256sum $BIG | sed 's#  #  /#') >want_big.txt

export NYDUS_REGISTRY_ACCESS_LOG=1
step "docker-registry on loopback (access log on)" start_registry "$WORK/registry" || die "no registry"
REF=$REGISTRY_HOST/test/esgz:v2
RLOG=$WORK/registry/registry.log

start_all() { ct_start "${SNAP_FLAGS[@]}" || return 1; ct_wait_proxy; }
step "containerd-nydus-grpc (config.toml [experimental] enable_stargz = true) + containerd 1.6" start_all ||
  die "no snapshotter/containerd"
step "the snapshotter says eStargz layers run lazily" grep -q 'eStargz layers run lazily' "$CT_LOGS/snapshotter.log"

# Converted in another namespace (its content never serves the pull below).
CONV=(-n convert)
convert_push() {
  ct_ctr "${CONV[@]}" images import --no-unpack --base-name src img.tar || return 1
  local src; src=$(ct_ctr "${CONV[@]}" images ls -q | grep ':v2$' | head -1)
  [ -n "$src" ] || { ct_ctr "${CONV[@]}" images ls; return 1; }
  ctr-remote --address "$CT_CD_SOCK" "${CONV[@]}" image convert --estargz --oci "$src" "$REF" || return 1
  ct_ctr "${CONV[@]}" images push --plain-http "$REF" "$REF"
}
step "ctr-remote image convert --estargz --oci; push" convert_push || die "convert failed"

# The layers as the registry has them: digest, size, TOC annotation.
layers() {
  local m
  m=$(curl -fsS -H 'Accept: application/vnd.oci.image.manifest.v1+json' "http://$REGISTRY_HOST/v2/test/esgz/manifests/v2") || return 1
  echo "$m" | "$PY" -c '
import json, sys
m = json.load(sys.stdin)
assert len(m["layers"]) == 2, m["layers"]
for l in m["layers"]:
    assert "containerd.io/snapshot/stargz/toc.digest" in l.get("annotations", {}), l
    print(l["digest"], l["size"])' >layers.txt || return 1
  cat layers.txt
}
step "the manifest: 2 eStargz layers (TOC digest annotations)" layers || die "no eStargz layers"
# No local copy of a layer: whatever reads one goes to the registry (its log is the oracle).
drop_local_layers() {
  local d
  ct_ctr "${CONV[@]}" images rm $(ct_ctr "${CONV[@]}" images ls -q) >/dev/null || return 1
  while read -r d _; do ct_ctr "${CONV[@]}" content rm "$d" >/dev/null 2>&1; done <layers.txt
  while read -r d _; do
    ct_ctr "${CONV[@]}" content ls -q | grep -qx "$d" && { echo "$d still in the content store"; return 1; }
  done <layers.txt
  return 0
}
step "the layers removed from containerd's content store" drop_local_layers

MARK=0
mark() { MARK=$(wc -l <"$RLOG"); }
# Bytes the registry sent per layer blob since MARK: "digest bytes largest_get gets".
sent_per_layer() {
  local d s
  while read -r d s; do
    tail -n +"$((MARK + 1))" "$RLOG" | awk -v d="$d" -v size="$s" '
      $6 == "\"GET" && index($7, "/blobs/" d) && ($9 == 200 || $9 == 206) {t += $10; n++; if ($10 > m) m = $10}
      END {printf "%s size %d sent %d largest %d gets %d\n", d, size, t, m, n}'
  done <layers.txt
}
# Every layer: the registry sent less than FRACTION of it, and no single GET was
# the whole layer (then nobody - containerd, snapshotter or nydusd - downloaded it).
fetched_less_than() {
  sent_per_layer | tee sent.txt
  awk -v f="$1" '{ if ($5 >= f * $3 || $7 >= $3) bad = 1 } END { exit bad }' sent.txt
}

mark
step "ctr-remote image rpull --snapshotter nydus" ctr-remote --address "$CT_CD_SOCK" image rpull --plain-http \
  --snapshotter nydus "$REF" || die "rpull failed"
toc_logged() {
  local d n=0
  while read -r d _; do
    grep -q "eStargz layer $d of $REF: bootstrap built from its TOC (sha256 == toc.digest label), not downloaded" \
      "$CT_LOGS/snapshotter.log" && n=$((n + 1))
  done <layers.txt
  echo "$n of 2 layers prepared from their TOC, checked against the toc.digest annotation"
  [ "$n" -eq 2 ]
}
step "both layers answered 'already exists' after reading their TOC (its sha256 == the annotation)" toc_logged
step "the pull: < 10% of each layer sent, no whole-layer GET" fetched_less_than 0.10

run() { ct_ctr run --runc-root "$RUNC_ROOT" --snapshotter nydus "$@"; }
nydusd_pids() { ct_pids nydusd "$CT_ROOT/"; }
small_right() {
  run --rm "$REF" small /bin/sh -c "sha256sum $(echo " $SMALL" | sed 's# # /#g'); ls /data" >got.txt || return 1
  grep -v '^/' got.txt | head -0
  grep '  /' got.txt >got_small.txt; diff want_small.txt got_small.txt || return 1
  grep -qx doomed.bin got.txt && { echo "doomed.bin (deleted by layer 2) is still there"; return 1; }
  grep -qx added.bin got.txt && echo "$(wc -l <got_small.txt) files equal the source tree; doomed.bin gone"
}
step "ctr run: sha256 of small files equal the source's; layer 2's deletion applied" small_right
step "after a container ran: < 40% of each layer sent, no whole-layer GET" fetched_less_than 0.40
lazy_mount() {
  run -d "$REF" sleeper /bin/sh -c 'exec sleep 1000' || return 1
  local lower
  lower=$(awk -v d="$CT_CD/state/io.containerd.runtime.v2.task/default/sleeper/rootfs" '$5 == d {print $NF}' \
    /proc/self/mountinfo | tr ',' '\n' | sed -n 's/^lowerdir=//p')
  echo "nydusd: $(nydusd_pids); lowerdir: $lower"
  [ "$(nydusd_pids | wc -w)" -eq 1 ] || return 1
  awk -v d="${lower%%:*}" '$5 == d' /proc/self/mountinfo | grep -q ' - fuse' || { echo "lowerdir is not a FUSE mount"; return 1; }
  ct_ctr task kill -s KILL sleeper; sleep 0.5; ct_ctr task rm -f sleeper >/dev/null; ct_ctr containers rm sleeper
}
step "the rootfs lowerdir is one nydusd's FUSE mount" lazy_mount
big_right() {
  run --rm "$REF" big /bin/sh -c "sha256sum $(echo " $BIG" | sed 's# # /#g')" >got_big.txt || return 1
  diff want_big.txt got_big.txt
}
step "ctr run: sha256 of the big files equal the source's" big_right

# ---- a reboot: every daemon, mount and containerd's /run state gone -----------------------------
C2=estargz-c2-$$  # on runc's default root (`ctr containers create` has no --runc-root): a unique id
# shellcheck disable=SC2046
step "a container created (not started) before the reboot" ct_ctr containers create --snapshotter nydus "$REF" "$C2" \
  /bin/busybox sha256sum $(echo " $SMALL" | sed 's# # /#g')
reboot() {
  local p _
  for p in $(ct_pids containerd-shim "$CT_CD_SOCK") "$CT_CD_PID" "$CT_SNAP_PID" $(nydusd_pids); do kill -KILL "$p"; done
  wait "$CT_CD_PID" "$CT_SNAP_PID" 2>/dev/null
  CT_CD_PID='' CT_SNAP_PID=''
  for _ in $(seq 50); do [ -z "$(nydusd_pids)" ] && break; sleep 0.1; done
  umount_below "$WORK"
  rm -rf "$CT_CD/state" "$RUNC_ROOT" "/run/containerd/runc/default/$C2"
  [ -z "$(nydusd_pids)" ] && [ -z "$(awk -v d="$WORK" 'index($5, d) == 1' /proc/self/mountinfo)" ]
}
step "reboot: kill -9 of containerd, snapshotter and nydusd; every mount gone" reboot
step "containerd and the snapshotter start again" start_all
after_reboot() {
  ct_ctr task start "$C2" >got_c2.txt || return 1
  diff want_small.txt got_c2.txt && [ "$(nydusd_pids | wc -w)" -eq 1 ]
}
step "ctr task start of the container created before the reboot: a new nydusd, sums right" after_reboot

remove_all() {
  local _
  for c in $(ct_ctr containers ls -q); do ct_ctr containers rm "$c" || return 1; done
  ct_ctr image rm --sync "$REF" || return 1
  for _ in $(seq 50); do [ -z "$(nydusd_pids)" ] && [ -z "$(ls "$CT_ROOT/snapshots")" ] && break; sleep 0.2; done
  echo "nydusd: '$(nydusd_pids)'; snapshots: '$(ct_ctr snapshots --snapshotter nydus ls | tail -n +2)'"
  echo "mounts below the root: $(awk -v d="$CT_ROOT" 'index($5, d) == 1' /proc/self/mountinfo)"
  [ -z "$(nydusd_pids)" ] && [ -z "$(ct_ctr snapshots --snapshotter nydus ls | tail -n +2)" ] &&
    [ -z "$(ls "$CT_ROOT/snapshots")" ] && [ -z "$(awk -v d="$CT_ROOT" 'index($5, d) == 1' /proc/self/mountinfo)" ]
}
step "ctr image rm: no nydusd, mount or snapshot left" remove_all

# ---- a TOC that is not the annotated one: that layer is downloaded ----------------------------
# The same image under another tag, the top layer's toc.digest annotation changed:
# its TOC no longer verifies, so containerd downloads that layer and the
# container's rootfs is it (overlay) over the nydusd mount of layer 1.
TAMPERED=$REGISTRY_HOST/test/esgz:tampered
tamper() {
  curl -fsS -H 'Accept: application/vnd.oci.image.manifest.v1+json' "http://$REGISTRY_HOST/v2/test/esgz/manifests/v2" |
    "$PY" -c '
import json, sys
m = json.load(sys.stdin)
m["layers"][1]["annotations"]["containerd.io/snapshot/stargz/toc.digest"] = "sha256:" + "ab" * 32
sys.stdout.write(json.dumps(m))' >tampered.json || return 1
  curl -fsS -X PUT -H 'Content-Type: application/vnd.oci.image.manifest.v1+json' --data-binary @tampered.json \
    "http://$REGISTRY_HOST/v2/test/esgz/manifests/tampered"
}
step "push a manifest whose top layer's toc.digest annotation is wrong" tamper
mark
step "rpull of the tampered tag" ctr-remote --address "$CT_CD_SOCK" image rpull --plain-http --snapshotter nydus "$TAMPERED"
tampered_right() {
  local l1 l2
  l1=$(sed -n 1p layers.txt | cut -d' ' -f1); l2=$(sed -n 2p layers.txt | cut -d' ' -f1)
  grep -q "eStargz layer $l2 of $TAMPERED: eStargz TOC of ${l2#sha256:} hashes to sha256:.*, not the layer's toc.digest annotation sha256:abab.*; containerd will download it" \
    "$CT_LOGS/snapshotter.log" || { echo "no TOC digest mismatch logged for layer 2"; return 1; }
  grep -q "eStargz layer $l1 of $TAMPERED: bootstrap built from its TOC (sha256 == toc.digest label)" "$CT_LOGS/snapshotter.log" ||
    { echo "layer 1 was not prepared from its TOC"; return 1; }
  run --rm "$TAMPERED" tampered /bin/sh -c "sha256sum $(echo " $SMALL data/added.bin" | sed 's# # /#g')" >got_t.txt || return 1
  (cat want_small.txt; grep added.bin want_big.txt) | diff - got_t.txt || return 1
  sent_per_layer | tee sent.txt
  # Layer 1 lazily (no whole GET, < 40%), layer 2 whole (its TOC was refused).
  awk 'NR == 1 { if ($5 >= 0.4 * $3 || $7 >= $3) exit 1 } NR == 2 { if ($7 < $3) exit 1 }' sent.txt
}
step "the bad TOC refused (logged), that layer downloaded whole; layer 1 still lazy; sums right" tampered_right
rm_image_clean() { # REF: removed, and no nydusd or snapshot left after it
  local _
  ct_ctr image rm --sync "$1" || return 1
  for _ in $(seq 50); do [ -z "$(nydusd_pids)" ] && [ -z "$(ls "$CT_ROOT/snapshots")" ] && break; sleep 0.2; done
  [ -z "$(nydusd_pids)" ] && [ -z "$(ls "$CT_ROOT/snapshots")" ]
}
step "ctr image rm of it: no nydusd or snapshot left" rm_image_clean "$TAMPERED"

# ---- 64 KiB chunks, and a layer made with eStargz's min chunk size --------------------------------
# The image converted again with `ctr-remote ... --estargz-chunk-size 65536` (upstream's
# snapshotter builds every TOC with 4 MiB chunks, and such layers fail there), its layer 1
# (busybox) under tests/fixtures/estargz-min-chunk/layer.tar.gz, written by stargz-snapshotter's
# own library with 64 KiB chunks and payloads inside shared gzip members (innerOffset): both
# bootstraps are built from their TOCs (not downloaded), the container reads the files right.
MINCHUNK=$REGISTRY_HOST/test/esgz:minchunk
MC_LAYER=$NYDUS_SOURCE_DIR/tests/fixtures/estargz-min-chunk/layer.tar.gz
# over_layer1 BASE TAG: push test/esgz:TAG = layer 1 of test/esgz:BASE + the fixture layer.
over_layer1() {
  local base=$1 tag=$2
  curl -fsS -H 'Accept: application/vnd.oci.image.manifest.v1+json' "http://$REGISTRY_HOST/v2/test/esgz/manifests/$base" \
    >"mc/$base.json" || return 1
  curl -fsS "http://$REGISTRY_HOST/v2/test/esgz/blobs/$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["config"]["digest"])' "mc/$base.json")" \
    >"mc/$base-config.json" || return 1
  "$PY" - "$MC_LAYER" mc "$base" "$tag" <<'EOF' || return 1
import hashlib, io, json, sys, tarfile, zlib
layer, d, base, tag = sys.argv[1:5]
b = open(layer, "rb").read()
toc_off = int(b[-51:][16:32], 16)
toc = tarfile.open(fileobj=io.BytesIO(zlib.decompressobj(31).decompress(b[toc_off:-51]))).extractfile("stargz.index.json").read()
m = json.load(open(f"{d}/{base}.json"))
cfg = json.load(open(f"{d}/{base}-config.json"))
cfg["rootfs"]["diff_ids"] = [cfg["rootfs"]["diff_ids"][0], "sha256:" + hashlib.sha256(open(d + "/layer.tar", "rb").read()).hexdigest()]
cfg["history"] = cfg.get("history", [])[:1]
cb = json.dumps(cfg).encode()
open(f"{d}/{tag}-config.json", "wb").write(cb)
m["config"] = {"mediaType": m["config"]["mediaType"], "digest": "sha256:" + hashlib.sha256(cb).hexdigest(), "size": len(cb)}
m["layers"] = [m["layers"][0], {
    "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
    "digest": "sha256:" + hashlib.sha256(b).hexdigest(), "size": len(b),
    "annotations": {"containerd.io/snapshot/stargz/toc.digest": "sha256:" + hashlib.sha256(toc).hexdigest(),
                    "io.containers.estargz.uncompressed-size": str(len(open(d + "/layer.tar", "rb").read()))}}]
open(f"{d}/{tag}.json", "w").write(json.dumps(m))
print(tag, "layers:", [l["digest"] for l in m["layers"]])
EOF
  push_blob "$REGISTRY_HOST" test/esgz "mc/$tag-config.json" || return 1
  curl -fsS -X PUT -H 'Content-Type: application/vnd.oci.image.manifest.v1+json' --data-binary "@mc/$tag.json" \
    "http://$REGISTRY_HOST/v2/test/esgz/manifests/$tag"
}
minchunk_push() {
  mkdir -p mc/ref && tar -C mc/ref --numeric-owner -xzf "$MC_LAYER" || return 1
  gzip -dc "$MC_LAYER" >mc/layer.tar || return 1
  ct_ctr "${CONV[@]}" images import --no-unpack --base-name src img.tar >/dev/null || return 1
  local src; src=$(ct_ctr "${CONV[@]}" images ls -q | grep ':v2$' | head -1)
  ctr-remote --address "$CT_CD_SOCK" "${CONV[@]}" image convert --estargz --oci --estargz-chunk-size 65536 \
    "$src" "$REGISTRY_HOST/test/esgz:c64" || return 1
  ct_ctr "${CONV[@]}" images push --plain-http "$REGISTRY_HOST/test/esgz:c64" "$REGISTRY_HOST/test/esgz:c64" || return 1
  push_blob "$REGISTRY_HOST" test/esgz "$MC_LAYER" || return 1
  over_layer1 c64 minchunk
}
step "ctr-remote --estargz-chunk-size 65536; its busybox layer + the min chunk size layer (fixture) pushed" minchunk_push
step "rpull of the min chunk size image" ctr-remote --address "$CT_CD_SOCK" image rpull --plain-http --snapshotter nydus "$MINCHUNK"
MC_FILES="etc/hostname etc/motd usr/lib/json/decoder.py usr/share/words.txt usr/bin/tool srv/small/f05 srv/small/after-random"
minchunk_right() {
  local d
  for d in $("$PY" -c 'import json,sys; print(" ".join(l["digest"] for l in json.load(open(sys.argv[1]))["layers"]))' mc/minchunk.json); do
    grep -q "eStargz layer $d of $MINCHUNK: bootstrap built from its TOC (sha256 == toc.digest label), not downloaded" \
      "$CT_LOGS/snapshotter.log" || { grep "$d" "$CT_LOGS/snapshotter.log"; echo "layer $d was not prepared from its TOC"; return 1; }
  done
  (cd mc/ref && sha256sum $MC_FILES | sed 's#  #  /#') >mc/want.txt
  run --rm "$MINCHUNK" minchunk /bin/sh -c "sha256sum $(echo " $MC_FILES" | sed 's# # /#g')" >mc/got.txt || return 1
  diff mc/want.txt mc/got.txt || return 1
  echo "$(wc -l <mc/got.txt) files of the min chunk size layer equal tar -x of it"
}
step "ctr run: files of the min chunk size layer (built from its TOC) equal tar -x of the layer" minchunk_right
step "ctr image rm of it: no nydusd or snapshot left" rm_image_clean "$MINCHUNK"

# The fixture layer (64 KiB chunks) over layer 1 of the 4 MiB-chunk image: one merged
# bootstrap cannot hold both, so the snapshotter leaves that layer to containerd (logged)
# and the container still starts and reads right.
MIXED=$REGISTRY_HOST/test/esgz:mixed
step "layer 1 of the 4 MiB image + the 64 KiB fixture layer pushed as test/esgz:mixed" over_layer1 v2 mixed
mark
step "rpull of the mixed chunk size image" ctr-remote --address "$CT_CD_SOCK" image rpull --plain-http --snapshotter nydus "$MIXED"
mixed_right() {
  local l1 l2
  l1=$(sed -n 1p layers.txt | cut -d' ' -f1); l2=sha256:$(sha256sum "$MC_LAYER" | cut -c1-64)
  grep -q "eStargz layer $l1 of $MIXED: bootstrap built from its TOC" "$CT_LOGS/snapshotter.log" ||
    { echo "layer 1 was not prepared from its TOC"; return 1; }
  grep -q "eStargz layer $l2 of $MIXED: its files are cut in chunks of 0x10000, the eStargz layers below it in 0x400000 .*; containerd will download it" \
    "$CT_LOGS/snapshotter.log" || { grep "$l2" "$CT_LOGS/snapshotter.log"; echo "no chunk size refusal logged"; return 1; }
  run --rm "$MIXED" mixed /bin/sh -c "sha256sum $(echo " $MC_FILES bin/busybox" | sed 's# # /#g')" >mc/got-mixed.txt || return 1
  (cat mc/want.txt; grep ' /bin/busybox$' want_small.txt) | diff - mc/got-mixed.txt
}
step "mixed chunk sizes: the upper layer downloaded (logged), the container's sums right" mixed_right
step "ctr image rm of it: no nydusd or snapshot left" rm_image_clean "$MIXED"

# ---- --fs-driver fanotify (kernel EROFS over the blob cache), where the kernel offers it ---------
fanotify_kernel() {
  local maj min
  IFS=. read -r maj min _ <<<"$(uname -r)"
  grep -qw erofs /proc/filesystems || modprobe erofs 2>/dev/null || true
  grep -qw erofs /proc/filesystems && { [ "$maj" -gt 6 ] || { [ "$maj" -eq 6 ] && [ "${min%%[!0-9]*}" -ge 14 ]; }; }
}
if fanotify_kernel; then
  restart_fanotify() {
    kill -TERM "$CT_SNAP_PID"; wait "$CT_SNAP_PID" 2>/dev/null
    ct_start_snapshotter "${SNAP_FLAGS[@]}" --fs-driver fanotify || return 1
    ct_wait_proxy
  }
  step "snapshotter restarted with --fs-driver fanotify (enable_stargz still on)" restart_fanotify
  mark
  step "rpull (fanotify)" ctr-remote --address "$CT_CD_SOCK" image rpull --plain-http --snapshotter nydus "$REF"
  fanotify_right() {
    run -d "$REF" fan /bin/sh -c 'exec sleep 1000' || return 1
    local lower
    lower=$(awk -v d="$CT_CD/state/io.containerd.runtime.v2.task/default/fan/rootfs" '$5 == d {print $NF}' \
      /proc/self/mountinfo | tr ',' '\n' | sed -n 's/^lowerdir=//p')
    echo "lowerdir $lower; nydusd: $(tr '\0' ' ' <"/proc/$(nydusd_pids)/cmdline" 2>/dev/null)"
    awk -v d="${lower%%:*}" '$5 == d' /proc/self/mountinfo | grep -q ' - erofs ' || { echo "lowerdir is not EROFS"; return 1; }
    ct_ctr task exec --exec-id sums fan /bin/sh -c "sha256sum $(echo " $SMALL $BIG" | sed 's# # /#g')" >got_f.txt || return 1
    ct_ctr task kill -s KILL fan; sleep 0.5; ct_ctr task rm -f fan >/dev/null; ct_ctr containers rm fan
    cat want_small.txt want_big.txt | diff - got_f.txt || return 1
    sent_per_layer | tee sent.txt
    awk '{ if ($7 >= $3) exit 1 }' sent.txt
  }
  step "ctr run over nydusd fanotify: lowerdir is EROFS, sums of all files right, no whole-layer GET" fanotify_right
  rm_fanotify() {
    local _
    ct_ctr image rm --sync "$REF" || return 1
    for _ in $(seq 50); do [ -z "$(nydusd_pids)" ] && [ -z "$(ls "$CT_ROOT/snapshots")" ] && break; sleep 0.2; done
    [ -z "$(nydusd_pids)" ] && [ -z "$(ls "$CT_ROOT/snapshots")" ] &&
      [ -z "$(awk -v d="$CT_ROOT" 'index($5, d) == 1' /proc/self/mountinfo)" ]
  }
  step "ctr image rm: no nydusd, mount or snapshot left (fanotify)" rm_fanotify
else
  echo "note: no fanotify pre-content/EROFS on $(uname -r): the fanotify section is left out"
fi

# ---- the shared daemon: the image mounted into one nydusd through its API ----------------------
restart_shared() {
  kill -TERM "$CT_SNAP_PID"; wait "$CT_SNAP_PID" 2>/dev/null
  ct_start_snapshotter "${SNAP_FLAGS[@]}" --daemon-mode shared || return 1
  ct_wait_proxy
}
step "snapshotter restarted with --daemon-mode shared (enable_stargz still on)" restart_shared
mark
step "rpull (shared daemon)" ctr-remote --address "$CT_CD_SOCK" image rpull --plain-http --snapshotter nydus "$REF"
shared_right() {
  run --rm "$REF" shared /bin/sh -c "sha256sum $(echo " $SMALL data/added.bin" | sed 's# # /#g')" >got_s.txt || return 1
  (cat want_small.txt; grep added.bin want_big.txt) | diff - got_s.txt || return 1
  local shared
  shared=$(sed -n 's/.* shared nydusd pid \([0-9]*\) on .*/\1/p' "$CT_LOGS/snapshotter.log" | tail -1)
  [ "$(nydusd_pids)" = "$shared" ] || { echo "nydusd '$(nydusd_pids)' is not the shared daemon '$shared'"; return 1; }
  sent_per_layer | tee sent.txt
  awk '{ if ($7 >= $3) exit 1 }' sent.txt
}
step "ctr run through the shared nydusd: sums right, no whole-layer GET" shared_right
rm_shared() {
  local _
  ct_ctr image rm --sync "$REF" || return 1
  for _ in $(seq 50); do [ -z "$(ls "$CT_ROOT/snapshots")" ] && break; sleep 0.2; done
  echo "mnt: '$(ls "$CT_ROOT/mnt")'; mounts below mnt/: $(awk -v d="$CT_ROOT/mnt/" 'index($5, d) == 1' /proc/self/mountinfo)"
  [ -z "$(ls "$CT_ROOT/snapshots")" ] && [ -z "$(awk -v d="$CT_ROOT/mnt/" 'index($5, d) == 1' /proc/self/mountinfo)" ]
}
step "ctr image rm: the image unmounted from the shared daemon, no snapshot left" rm_shared

# ---- enable_stargz off (the default): containerd downloads and unpacks ----------------------
restart_plain() {
  local p
  kill -TERM "$CT_SNAP_PID"; wait "$CT_SNAP_PID" 2>/dev/null
  for p in $(nydusd_pids); do ct_stop_pid "$p"; done  # the shared daemon
  umount_below "$CT_ROOT"
  ct_start_snapshotter --nydus-image "$WORK/bin/nydus-image" || return 1
  ct_wait_proxy
}
step "snapshotter restarted without enable_stargz" restart_plain
CONVERTED=$(grep -c 'bootstrap built from its TOC' "$CT_LOGS/snapshotter.log")
mark
step "rpull without enable_stargz" ctr-remote --address "$CT_CD_SOCK" image rpull --plain-http --snapshotter nydus "$REF"
downloaded() {
  sent_per_layer | tee sent.txt
  awk '{ if ($5 < $3) bad = 1 } END { exit bad }' sent.txt
}
step "without enable_stargz every layer was downloaded whole" downloaded
plain_right() {
  run --rm "$REF" plain /bin/sh -c "sha256sum $(echo " $SMALL $BIG" | sed 's# # /#g')" >got_all.txt || return 1
  cat want_small.txt want_big.txt | diff - got_all.txt && [ -z "$(nydusd_pids)" ]
}
step "ctr run (overlay, no nydusd): the same sums" plain_right
unpacked() {
  # The container's own snapshot may be going away under find (containerd's
  # GC after `ctr run --rm`): its complaint is not the answer, the match is.
  { find "$CT_ROOT/snapshots" -path '*/fs/data/random.bin' 2>/dev/null || true; } | grep -q . &&
    [ "$(grep -c 'bootstrap built from its TOC' "$CT_LOGS/snapshotter.log")" -eq "$CONVERTED" ]
}
step "... unpacked by containerd into the snapshots (no new TOC conversion)" unpacked
# ---- a registry behind htpasswd: TOCs read with the docker config's credentials ---------------
auth_registry() {
  ct_stop_pid "$REGISTRY_PID"; wait "$REGISTRY_PID" 2>/dev/null  # the anonymous one is done with
  mkdir -p "$WORK/docker"
  export DOCKER_CONFIG=$WORK/docker NYDUS_REGISTRY_HTPASSWD=$WORK/htpasswd
  "$PY" -W ignore -c 'import crypt, sys; print(sys.argv[1] + ":" + crypt.crypt(sys.argv[2], crypt.mksalt(crypt.METHOD_BLOWFISH)))' \
    alice 'pw:esgz' >"$NYDUS_REGISTRY_HTPASSWD" || return 1
  start_registry "$WORK/registry-auth" || return 1
  RLOG=$WORK/registry-auth/registry.log
  printf '{"auths": {"%s": {"auth": "%s"}}}\n' "$REGISTRY_HOST" "$(printf 'alice:pw:esgz' | base64 -w0)" >"$DOCKER_CONFIG/config.json"
  [ "$(curl -s -o /dev/null -w '%{http_code}' "http://$REGISTRY_HOST/v2/")" = 401 ] || { echo "no auth asked"; return 1; }
  AUTH_REF=$REGISTRY_HOST/test/esgz:v2
  ct_ctr images push --plain-http --user 'alice:pw:esgz' "$AUTH_REF" "$REF" || return 1
  [ "$(curl -s -o /dev/null -w '%{http_code}' "http://$REGISTRY_HOST/v2/test/esgz/manifests/v2")" = 401 ]
}
step "docker-registry with htpasswd auth (401 anonymous); the eStargz image pushed with credentials" auth_registry
restart_auth() {
  local p
  kill -TERM "$CT_SNAP_PID"; wait "$CT_SNAP_PID" 2>/dev/null
  ct_ctr image rm --sync "$REF" >/dev/null
  ct_start_snapshotter "${SNAP_FLAGS[@]}" || return 1  # DOCKER_CONFIG exported: its keychain
  ct_wait_proxy
}
step "snapshotter restarted with enable_stargz and DOCKER_CONFIG" restart_auth
mark
step "ctr-remote image rpull --user (private registry)" ctr-remote --address "$CT_CD_SOCK" image rpull --plain-http \
  --user 'alice:pw:esgz' --snapshotter nydus "$AUTH_REF"
auth_right() {
  local d n=0
  while read -r d _; do
    grep -q "eStargz layer $d of $AUTH_REF: bootstrap built from its TOC (sha256 == toc.digest label)" \
      "$CT_LOGS/snapshotter.log" && n=$((n + 1))
  done <layers.txt
  echo "$n of 2 layers prepared from their TOC through the authenticated registry"
  [ "$n" -eq 2 ] || return 1
  run --rm "$AUTH_REF" authc /bin/sh -c "sha256sum $(echo " $SMALL" | sed 's# # /#g')" >got_a.txt || return 1
  diff want_small.txt got_a.txt || return 1
  sent_per_layer | tee sent.txt
  awk '{ if ($5 >= 0.4 * $3 || $7 >= $3) exit 1 }' sent.txt
}
step "both TOCs read with the credentials; ctr run sums right; < 40% of each layer sent" auth_right
step "no password in the snapshotter's log" sh -c "! grep -q 'pw:esgz' '$CT_LOGS/snapshotter.log'"
step "the snapshotter logged no internal error" sh -c "! grep -E ' (error|critical) ' '$CT_LOGS/snapshotter.log'"

summary
