#!/usr/bin/env bash
# nydusify convert --oci-ref (issue 15, zran phase 2) against Debian's
# docker-registry on loopback:
#  - a 4-layer gzip OCI image made with umoci (real libraries and tools, a
#    whiteout, an opaque directory, a layer without file data), copied into
#    the registry with skopeo;
#  - converted with --oci-ref into the same repository: the target manifest
#    is checked against nydus-snapshotter's zran layout (pkg/converter
#    MergeLayers and pkg/label constants, written out here, not taken from our
#    code): one nydus blob layer per source layer, annotated
#    containerd.io/snapshot/nydus-ref = that layer's digest, holding the ref
#    meta blob (its ToC tar header last), then the bootstrap layer; the merged
#    bootstrap's blob table names the source layers and their meta blobs;
#  - no data copied: the registry grew by a few percent of the layers;
#  - nydusd (registry backend) mounts it lazily, one small file costs < 2 MB
#    of backend reads, and the tree equals `umoci unpack` of the source.
set -uo pipefail
. "$(dirname "$0")/lib/common.sh"

[ "$(id -u)" -eq 0 ] || skip "needs root (FUSE mount, umoci unpack with owners)"
[ -e /dev/fuse ] || skip_kernel "no /dev/fuse"
for t in umoci skopeo docker-registry; do command -v $t >/dev/null || skip "$t not installed (scripts/setup.sh)"; done
NYDUSIFY=$NYDUS_BIN_DIR/nydusify
NYDUSD=$NYDUS_BIN_DIR/nydusd
[ -x "$NYDUSIFY" ] && [ -x "$NYDUSD" ] || die "nydusify/nydusd not built in $NYDUS_BIN_DIR"

WORK=$(mktemp -d "${NYDUS_TEST_TMP:-/var/tmp}/nydus-zran-convert.XXXXXX")
LOG_DIR=$WORK
DPID=
cleanup() {
  [ -n "$DPID" ] && kill "$DPID" 2>/dev/null && wait "$DPID" 2>/dev/null
  for m in "$WORK"/mnt*; do [ -d "$m" ] && { fusermount3 -u -z "$m" 2>/dev/null || umount -l "$m" 2>/dev/null; }; done
  [ -n "${REGISTRY_PID:-}" ] && kill "$REGISTRY_PID" 2>/dev/null
  [ "${KEEP_WORK:-0}" = 1 ] && { echo "kept $WORK"; return; }
  rm -rf "$WORK"
}
trap cleanup EXIT
cd "$WORK" || die "cd"

make_layers() {
  umoci init --layout img && umoci new --image img:base || return 1
  umoci unpack --image img:base b0 >/dev/null || return 1
  local r=b0/rootfs
  mkdir -p "$r/usr/lib" "$r/usr/bin" "$r/etc/conf.d" "$r/var/cache/pkg"
  cp -a /usr/lib/x86_64-linux-gnu/libc.so.6 /usr/lib/x86_64-linux-gnu/libstdc++.so.6* \
        /usr/lib/x86_64-linux-gnu/libcrypto.so.3 "$r/usr/lib/" || return 1
  cp -a /usr/bin/bash /usr/bin/ls /usr/bin/cp /usr/bin/python3* "$r/usr/bin/" 2>/dev/null
  cp -a /etc/os-release /etc/passwd "$r/etc/"
  echo conf-a > "$r/etc/conf.d/a"; echo conf-b > "$r/etc/conf.d/b"
  for i in $(seq 1 40); do head -c $((i * 997)) /dev/urandom > "$r/var/cache/pkg/f$i"; done
  cp "$r/var/cache/pkg/f7" "$r/var/cache/pkg/f7-copy"   # identical chunks in one layer
  ln -s ../usr/lib "$r/etc/liblink"; chown 1234:5678 "$r/etc/conf.d/a"; chmod 4755 "$r/usr/bin/ls"
  umoci repack --image img:v1 b0 || return 1
  umoci unpack --image img:v1 b1 >/dev/null || return 1
  r=b1/rootfs
  rm "$r/etc/conf.d/a"                                                                     # a whiteout
  rm -rf "$r/var/cache/pkg" && mkdir "$r/var/cache/pkg" && echo fresh > "$r/var/cache/pkg/new"  # opaque dir
  head -c 2000000 /dev/urandom > "$r/usr/lib/added.bin"; echo changed > "$r/etc/os-release"
  umoci repack --image img:v2 b1 || return 1
  umoci unpack --image img:v2 b2 >/dev/null || return 1
  rm -rf b2/rootfs/usr/bin/python3*; mkdir -p b2/rootfs/srv && echo top > b2/rootfs/srv/top
  umoci repack --image img:v3 b2 || return 1
  # A layer without file data (a directory and a symlink): upstream still
  # writes its ref blob (the bootstrap alone) and lists it.
  umoci unpack --image img:v3 b3 >/dev/null || return 1
  mkdir -p b3/rootfs/opt/empty && ln -s /srv/top b3/rootfs/opt/top-link
  umoci repack --image img:v4 b3 || return 1
  umoci unpack --image img:v4 ref >/dev/null
}
step "umoci: a 4-layer gzip image with a whiteout, an opaque dir, a layer without file data" make_layers || die "cannot build the source image"
step "docker-registry on loopback" start_registry "$WORK/registry" || die "no registry"
R=$REGISTRY_HOST
step "skopeo: source image into the registry" skopeo copy --dest-tls-verify=false oci:img:v4 "docker://$R/lib/src:v3" ||
  die "skopeo copy failed"

# Every blob file the registry stores, with its size.
registry_blobs() { find "$WORK/registry/data" -path '*/blobs/sha256/*/data' -printf '%s %h\n' | sort; }
registry_blobs >blobs.before

step "nydusify convert --oci-ref into the same repository" sh -c "'$NYDUSIFY' convert --oci-ref \
  --source $R/lib/src:v3 --target $R/lib/src:v3-zran --source-insecure --target-insecure --work-dir '$WORK/w1' \
  > '$WORK/convert.out' 2>&1" || { cat "$WORK/convert.out"; die "convert failed"; }
cat "$WORK/convert.out"
registry_blobs >blobs.after

# The zran layout as nydus-snapshotter's converter writes it (v0.15
# pkg/converter/convert_unix.go MergeLayers + pkg/label/label.go).
check_manifest() {
  "$PY" - "$R" <<'PY'
import hashlib, io, json, struct, sys, tarfile, urllib.request
reg = sys.argv[1]
NYDUS_BLOB = "application/vnd.oci.image.layer.nydus.blob.v1"
LABEL_DATA = "containerd.io/snapshot/nydus-blob"
LABEL_META = "containerd.io/snapshot/nydus-bootstrap"
LABEL_REF = "containerd.io/snapshot/nydus-ref"
def get(path, accept=None):
    req = urllib.request.Request(f"http://{reg}{path}")
    if accept: req.add_header("Accept", accept)
    with urllib.request.urlopen(req) as r:
        return r.headers.get("Content-Type"), r.read()
OCI_MAN = "application/vnd.oci.image.manifest.v1+json"
_, src = get("/v2/lib/src/manifests/v3", OCI_MAN)
src = json.loads(src)
ct, body = get("/v2/lib/src/manifests/v3-zran", OCI_MAN)
man = json.loads(body)
assert man["mediaType"] == OCI_MAN and ct.startswith(OCI_MAN), (ct, man["mediaType"])
src_layers = src["layers"]
# The bootstrap first (the mount step uses it whatever the checks below say).
boot = man["layers"][-1]
_, tgz = get(f"/v2/lib/src/blobs/{boot['digest']}")
bs = tarfile.open(fileobj=io.BytesIO(tgz), mode="r:gz").extractfile("image/image.boot").read()
open("image.boot", "wb").write(bs)
assert all(l["mediaType"] == "application/vnd.oci.image.layer.v1.tar+gzip" for l in src_layers)
layers = man["layers"]
blobs, boot = layers[:-1], layers[-1]
assert len(blobs) == len(src_layers) == 4, (len(blobs), len(src_layers))
with_data = set()
src_digests = {l["digest"] for l in src_layers}
for i, (b, s) in enumerate(zip(blobs, src_layers)):
    assert b["mediaType"] == NYDUS_BLOB, b
    assert b["annotations"][LABEL_DATA] == "true", b
    assert b["annotations"][LABEL_REF] == s["digest"], (i, b["annotations"], s["digest"])
    assert b["digest"] not in src_digests, "a source layer listed as a nydus blob"
    _, data = get(f"/v2/lib/src/blobs/{b['digest']}")
    assert "sha256:" + hashlib.sha256(data).hexdigest() == b["digest"] and len(data) == b["size"]
    # (a tiny layer's ref blob is mostly its bootstrap, larger than the layer)
    assert s["size"] < 1_000_000 or len(data) < s["size"] / 5, f"ref blob {len(data)} bytes for a {s['size']}-byte layer"
    # The ref meta blob: sections end with reverse tar headers, the ToC last,
    # the bootstrap (image.boot) inside.
    names, pos = [], len(data)
    while pos > 0:
        h = data[pos - 512:pos]
        assert h[257:262] == b"ustar", f"layer {i}: no tar header ending at {pos}"
        size = int(h[124:136].rstrip(b"\0 ").decode() or "0", 8)
        names.append(h[:100].rstrip(b"\0").decode()); pos -= 512 + size
    names.reverse()
    assert pos == 0 and names in (["blob.meta", "blob.digest", "image.boot", "rafs.blob.toc"],
                                  ["image.boot", "rafs.blob.toc"]), names
    if names[0] == "blob.meta": with_data.add(s["digest"])
assert len(with_data) == 3, "expected one layer without file data"
assert boot["mediaType"] == "application/vnd.oci.image.layer.v1.tar+gzip", boot
assert boot["annotations"][LABEL_META] == "true" and boot["annotations"]["containerd.io/snapshot/nydus-fs-version"] == "6"
_, cfg = get(f"/v2/lib/src/blobs/{man['config']['digest']}")
cfg = json.loads(cfg)
assert cfg["rootfs"]["diff_ids"][:-1] == [l["digest"] for l in blobs], cfg["rootfs"]
# The merged bootstrap: blob i = source layer i (id = its digest, size = its
# size), its meta blob = manifest blob layer i, SEPARATE|ZRAN, not inlined.
table, tsize = struct.unpack_from("<QI", bs, 1152 + 8)
entries = {}
for i in range(tsize // 256):
    e = bs[table + 256 * i:table + 256 * (i + 1)]
    entries["sha256:" + e[:64].decode()] = e
assert set(entries) == with_data, (sorted(entries), sorted(with_data))
for i, (b, s) in enumerate(zip(blobs, src_layers)):
    if s["digest"] not in with_data: continue
    e = entries[s["digest"]]
    feat = struct.unpack_from("<I", e, 84)[0]
    assert feat & 0x18 == 0x18 and feat & 0x2 == 0, hex(feat)
    assert struct.unpack_from("<Q", e, 88)[0] == s["size"], "compressed_size != layer size"
    assert "sha256:" + e[168:200].hex() == b["digest"], (i, e[168:200].hex())
    assert struct.unpack_from("<Q", e, 200)[0] == b["size"]
print(f"manifest: {len(blobs)} zran blob layers + bootstrap {boot['digest']}")
PY
}
step "target manifest: upstream's zran layout, annotations, merged blob table" check_manifest

# No data copied: what the registry gained is small next to the layers.
no_copy() {
  local added layers
  added=$(comm -13 blobs.before blobs.after | awk '{s += $1} END {print s + 0}')
  layers=$(awk '{s += $1} END {print s}' blobs.before)
  comm -13 blobs.before blobs.after | awk '{print "  new blob:", $1, "bytes"}'
  echo "registry gained $added bytes; it held $layers before"
  [ "$added" -gt 0 ] && [ "$added" -lt $((layers / 10)) ]
}
step "the registry got no copy of the data layers (< 10% added)" no_copy

mkdir -p "$WORK/mnt" "$WORK/cache"
cat > "$WORK/nydusd.json" <<JSON
{"device": {"backend": {"type": "registry", "config": {"scheme": "http", "host": "$R", "repo": "lib/src"}},
            "cache": {"type": "blobcache", "config": {"work_dir": "$WORK/cache"}}},
 "mode": "direct", "digest_validate": true, "enable_xattr": true}
JSON
mount_lazy() { # [BOOTSTRAP]
  "$NYDUSD" --bootstrap "${1:-image.boot}" --config "$WORK/nydusd.json" --mountpoint "$WORK/mnt" \
    --apisock "$WORK/api.sock" >"$WORK/nydusd.log" 2>&1 &
  DPID=$!
  local i
  for i in $(seq 100); do grep -q " $WORK/mnt " /proc/mounts && return 0; sleep 0.1; done
  cat "$WORK/nydusd.log"; return 1
}
small_read() {
  cmp ref/rootfs/etc/os-release "$WORK/mnt/etc/os-release" || return 1
  local b; b=$(backend_metric "$WORK/api.sock" read_amount_total) || return 1
  echo "backend bytes after one small file: $b"
  [ "$b" -lt 2000000 ]
}
if step "nydusd (registry backend) mounts the zran image" mount_lazy; then
  step "lazy: one small file costs < 2 MB of backend reads" small_read
  step "mounted image == umoci unpack of the source (0 differences)" \
    compare_trees --ignore-root-mtime --mtime-ns ref/rootfs "$WORK/mnt"
  kill "$DPID"; wait "$DPID" 2>/dev/null; DPID=
fi

step "nydusify check: manifest, bootstrap, every chunk read from the source layers, tree == source" \
  "$NYDUSIFY" check --target "$R/lib/src:v3-zran" --source "$R/lib/src:v3" --target-insecure --source-insecure \
  --work-dir "$WORK/check"

# ---- --oci-ref --chunk-dict ---------------------------------------------------------
# A dictionary of plain Nydus blobs with sha256 chunk digests: `nydus-image create
# --digester sha256` of the source's usr/lib, pushed here by hand as a Nydus image
# (blob layer + bootstrap layer, upstream's annotations). The ref layers' chunks it
# holds point into its blob, which the target manifest then lists after the ref blobs
# and the target repository holds; the tree read through nydusd still equals the
# source. A dictionary that cannot serve a ref image (here the zran image itself: its
# data is in its own source layers) is left out with a note, as upstream's packRef
# leaves out every dictionary, and the conversion equals the one without it.
push_dict() {
  mkdir -p dict/src dict/blobs && cp -a ref/rootfs/usr/lib/. dict/src/ || return 1
  "$NYDUS_IMAGE" create --digester sha256 -B dict/boot -D dict/blobs dict/src >/dev/null || return 1
  "$PY" - "$R" dict <<'PY'
import gzip, hashlib, io, json, os, sys, tarfile, urllib.request
reg, d = sys.argv[1], sys.argv[2]
def put_blob(data):
    dg = "sha256:" + hashlib.sha256(data).hexdigest()
    r = urllib.request.urlopen(urllib.request.Request(f"http://{reg}/v2/lib/dict/blobs/uploads/", method="POST"))
    loc = r.headers["Location"]
    loc = loc if loc.startswith("http") else f"http://{reg}{loc}"
    urllib.request.urlopen(urllib.request.Request(f"{loc}{'&' if '?' in loc else '?'}digest={dg}", data=data,
                           method="PUT", headers={"Content-Type": "application/octet-stream"}))
    return dg
(name,) = os.listdir(f"{d}/blobs")
blob = open(f"{d}/blobs/{name}", "rb").read()
buf = io.BytesIO()
with tarfile.open(fileobj=buf, mode="w") as t:
    ti = tarfile.TarInfo("image"); ti.type = tarfile.DIRTYPE; t.addfile(ti)
    boot = open(f"{d}/boot", "rb").read()
    ti = tarfile.TarInfo("image/image.boot"); ti.size = len(boot); t.addfile(ti, io.BytesIO(boot))
raw = buf.getvalue(); gz = gzip.compress(raw)
blob_dg, boot_dg = put_blob(blob), put_blob(gz)
assert blob_dg == "sha256:" + name, (blob_dg, name)
cfg = json.dumps({"architecture": "amd64", "os": "linux",
                  "rootfs": {"type": "layers", "diff_ids": [blob_dg, "sha256:" + hashlib.sha256(raw).hexdigest()]}}).encode()
cfg_dg = put_blob(cfg)
m = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
     "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cfg_dg, "size": len(cfg)},
     "layers": [{"mediaType": "application/vnd.oci.image.layer.nydus.blob.v1", "digest": blob_dg, "size": len(blob),
                 "annotations": {"containerd.io/snapshot/nydus-blob": "true"}},
                {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": boot_dg, "size": len(gz),
                 "annotations": {"containerd.io/snapshot/nydus-bootstrap": "true"}}]}
urllib.request.urlopen(urllib.request.Request(f"http://{reg}/v2/lib/dict/manifests/sha256", data=json.dumps(m).encode(),
                       method="PUT", headers={"Content-Type": m["mediaType"]}))
open(f"{d}/blob_digest", "w").write(blob_dg)
print(f"dictionary blob {blob_dg}, {len(blob)} bytes")
PY
}
dict_manifest() {
  "$PY" - "$R" "$(cat dict/blob_digest)" <<'PY'
import io, json, sys, tarfile, urllib.request
reg, dict_blob = sys.argv[1], sys.argv[2]
OCI_MAN = "application/vnd.oci.image.manifest.v1+json"
def get(path, accept=None):
    req = urllib.request.Request(f"http://{reg}{path}")
    if accept: req.add_header("Accept", accept)
    return urllib.request.urlopen(req).read()
plain = json.loads(get("/v2/lib/src/manifests/v3-zran", OCI_MAN))["layers"]
man = json.loads(get("/v2/lib/src/manifests/v3-zdict", OCI_MAN))["layers"]
refs = [l for l in man if "containerd.io/snapshot/nydus-ref" in l.get("annotations", {})]
extra = [l for l in man[:-1] if l not in refs]
assert len(refs) == 4, refs
assert [l["digest"] for l in extra] == [dict_blob], extra
assert extra[0]["annotations"] == {"containerd.io/snapshot/nydus-blob": "true"}, extra
# the ref blobs shrank: the dictionary holds part of their chunks
own = sum(l["size"] for l in refs); before = sum(l["size"] for l in plain[:-1])
print(f"ref blobs {own} bytes with the dictionary, {before} without; + dictionary blob {extra[0]['size']} bytes")
assert own < before, (own, before)
urllib.request.urlopen(urllib.request.Request(f"http://{reg}/v2/lib/src/blobs/{dict_blob}", method="HEAD"))
boot = man[-1]
tgz = get(f"/v2/lib/src/blobs/{boot['digest']}")
open("image-zdict.boot", "wb").write(tarfile.open(fileobj=io.BytesIO(tgz), mode="r:gz").extractfile("image/image.boot").read())
PY
}
if step "--chunk-dict: a sha256 Nydus image of the source's usr/lib, pushed as lib/dict:sha256" push_dict &&
   step "nydusify convert --oci-ref --chunk-dict <that image>" "$NYDUSIFY" convert --oci-ref \
     --chunk-dict "bootstrap:registry:$R/lib/dict:sha256" --chunk-dict-insecure --source "$R/lib/src:v3" \
     --target "$R/lib/src:v3-zdict" --source-insecure --target-insecure --work-dir "$WORK/w-dict" &&
   step "--chunk-dict: the manifest lists the ref blobs, then the dictionary's blob, held by the target" dict_manifest; then
  rm -rf "$WORK/cache" && mkdir -p "$WORK/cache"
  if step "--chunk-dict: nydusd (registry backend) mounts it" mount_lazy image-zdict.boot; then
    step "--chunk-dict: mounted image == umoci unpack of the source" \
      compare_trees --ignore-root-mtime --mtime-ns ref/rootfs "$WORK/mnt"
    kill "$DPID"; wait "$DPID" 2>/dev/null; DPID=
  fi
fi
ref_dict_left_out() {
  "$NYDUSIFY" convert --oci-ref --chunk-dict "bootstrap:registry:$R/lib/src:v3-zran" --source "$R/lib/src:v3" \
    --target "$R/lib/src:v3-zself" --source-insecure --target-insecure --work-dir "$WORK/w2" >"$WORK/self.out" 2>&1 ||
    { cat "$WORK/self.out"; return 1; }
  grep "chunk dict" "$WORK/self.out"
  grep -q "it is a ref image" "$WORK/self.out" || return 1
  local a b
  a=$(curl -sf -H "Accept: application/vnd.oci.image.manifest.v1+json" "http://$R/v2/lib/src/manifests/v3-zran" | sha256sum)
  b=$(curl -sf -H "Accept: application/vnd.oci.image.manifest.v1+json" "http://$R/v2/lib/src/manifests/v3-zself" | sha256sum)
  [ "$a" = "$b" ] || { echo "the conversion differs from the one without a dictionary"; return 1; }
}
step "--oci-ref with a ref image as --chunk-dict: left out with a note, same image as without it" ref_dict_left_out

summary
