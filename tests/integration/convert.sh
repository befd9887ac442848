#!/usr/bin/env bash
# nydusify convert against the real Debian docker-registry on loopback:
#  - a 3-layer OCI image made with umoci from a tree of this machine's files,
#    with whiteouts and an opaque directory in the upper layers, copied into
#    the registry with skopeo;
#  - converted registry -> registry; the result carries nydus-snapshotter's
#    media types, annotations and the nydus.remoteimage.v1 platform feature;
#  - mounted lazily from the registry by nydusd (FUSE) and compared with
#    `umoci unpack` of the original: 0 differences;
#  - a second image sharing the lower layers reuses their blobs (not pushed
#    again); an OCI layout source converts to the same blobs;
#  - owners: non-root uid/gid and set-id bits (GNU tar --numeric-owner and
#    python tarfile layers) survive, against tar -x --numeric-owner as root;
#  - shape: Docker manifest -> Docker manifest, --oci, a two-platform manifest
#    list, one platform of it, --merge-platform (skopeo inspect --raw),
#    --output-json decoded as upstream's Go struct;
#  - credentials from ~/.docker/config.json and a credsStore helper against a
#    docker-registry with htpasswd Basic auth.
set -uo pipefail
. "$(dirname "$0")/lib/common.sh"

[ "$(id -u)" -eq 0 ] || skip "needs root (FUSE mount, umoci unpack with owners)"
[ -e /dev/fuse ] || skip_kernel "no /dev/fuse"
for t in umoci skopeo docker-registry; do command -v $t >/dev/null || skip "$t not installed"; done
NYDUSIFY=$NYDUS_BIN_DIR/nydusify
NYDUSD=$NYDUS_BIN_DIR/nydusd
[ -x "$NYDUSIFY" ] && [ -x "$NYDUSD" ] || die "nydusify/nydusd not built in $NYDUS_BIN_DIR"

WORK=$(mktemp -d /var/tmp/nydus-convert.XXXXXX)
LOG_DIR=$WORK
DPID=
cleanup() {
  [ -n "$DPID" ] && kill "$DPID" 2>/dev/null && wait "$DPID" 2>/dev/null
  for m in "$WORK"/mnt*; do [ -d "$m" ] && { fusermount3 -u -z "$m" 2>/dev/null || umount -l "$m" 2>/dev/null; }; done
  [ -n "${REGISTRY_PID:-}" ] && kill "$REGISTRY_PID" 2>/dev/null
  [ -n "${S3_PID:-}" ] && kill "$S3_PID" 2>/dev/null
  [ "${KEEP_WORK:-0}" = 1 ] && { echo "kept $WORK"; return; }
  rm -rf "$WORK"
}
trap cleanup EXIT
cd "$WORK" || die "cd"

# ---- the source image: three layers of real files, whiteouts, an opaque dir ------------
make_layers() {
  umoci init --layout img && umoci new --image img:base || return 1
  umoci unpack --image img:base b0 >/dev/null || return 1
  local r=b0/rootfs
  mkdir -p "$r/usr/lib" "$r/usr/bin" "$r/etc/conf.d" "$r/var/cache/pkg"
  # ~30 MB of this machine's libraries and tools (real ELF files, symlinks).
  cp -a /usr/lib/x86_64-linux-gnu/libc.so.6 /usr/lib/x86_64-linux-gnu/libstdc++.so.6* \
        /usr/lib/x86_64-linux-gnu/libcrypto.so.3 /usr/lib/x86_64-linux-gnu/libssl.so.3 "$r/usr/lib/" || return 1
  cp -a /usr/bin/bash /usr/bin/ls /usr/bin/cp /usr/bin/python3* "$r/usr/bin/" 2>/dev/null
  cp -a /etc/os-release /etc/passwd "$r/etc/"
  echo conf-a > "$r/etc/conf.d/a"; echo conf-b > "$r/etc/conf.d/b"
  for i in $(seq 1 50); do head -c $((i * 997)) /dev/urandom > "$r/var/cache/pkg/f$i"; done
  ln -s ../usr/lib "$r/etc/liblink"; chown 1234:5678 "$r/etc/conf.d/a"; chmod 4755 "$r/usr/bin/ls"
  umoci repack --image img:v1 b0 || return 1
  umoci unpack --image img:v1 b1 >/dev/null || return 1
  r=b1/rootfs
  rm "$r/etc/conf.d/a"                          # a whiteout
  rm -rf "$r/var/cache/pkg" && mkdir "$r/var/cache/pkg" && echo fresh > "$r/var/cache/pkg/new"  # opaque dir
  head -c 2000000 /dev/urandom > "$r/usr/lib/added.bin"; echo changed > "$r/etc/os-release"
  umoci repack --image img:v2 b1 || return 1
  umoci unpack --image img:v2 b2 >/dev/null || return 1
  rm -rf b2/rootfs/usr/bin/python3*; mkdir -p b2/rootfs/srv && echo top > b2/rootfs/srv/top
  umoci repack --image img:v3 b2 || return 1
  umoci unpack --image img:v3 ref >/dev/null
}
step "umoci: a 3-layer image with whiteouts and an opaque dir" make_layers || die "cannot build the source image"

step "docker-registry on loopback" start_registry "$WORK/registry" || die "no registry"
R=$REGISTRY_HOST
step "skopeo: source image into the registry" skopeo copy --dest-tls-verify=false oci:img:v3 "docker://$R/lib/src:v3" ||
  die "skopeo copy failed"

# ---- convert registry -> registry ----------------------------------------------------
step "nydusify convert (registry -> registry)" sh -c "'$NYDUSIFY' convert --source $R/lib/src:v3 --target $R/lib/nyd:v3 \
  --source-insecure --target-insecure --work-dir '$WORK/w1' > '$WORK/convert1.out'" || die "convert failed"
cat "$WORK/convert1.out"

check_format() {
  "$PY" - "$R" <<'PY'
import json, sys, urllib.request
reg = sys.argv[1]
def get(path, accept=None):
    req = urllib.request.Request(f"http://{reg}{path}")
    if accept: req.add_header("Accept", accept)
    with urllib.request.urlopen(req) as r:
        return r.headers.get("Content-Type"), r.read()
# The source is one OCI manifest, so the target is one too (upstream keeps the shape).
accept = ",".join(["application/vnd.oci.image.index.v1+json", "application/vnd.oci.image.manifest.v1+json",
                   "application/vnd.docker.distribution.manifest.list.v2+json",
                   "application/vnd.docker.distribution.manifest.v2+json"])
ct, body = get("/v2/lib/nyd/manifests/v3", accept)
assert ct.startswith("application/vnd.oci.image.manifest.v1+json"), ct
man = json.loads(body)
assert man["mediaType"] == "application/vnd.oci.image.manifest.v1+json", man
assert man["config"]["mediaType"] == "application/vnd.oci.image.config.v1+json", man["config"]
layers = man["layers"]
blobs, boot = layers[:-1], layers[-1]
assert blobs and all(l["mediaType"] == "application/vnd.oci.image.layer.nydus.blob.v1"
                     and l["annotations"]["containerd.io/snapshot/nydus-blob"] == "true" for l in blobs), blobs
assert boot["mediaType"] == "application/vnd.oci.image.layer.v1.tar+gzip", boot
assert boot["annotations"]["containerd.io/snapshot/nydus-bootstrap"] == "true", boot
assert boot["annotations"]["containerd.io/snapshot/nydus-fs-version"] == "6", boot
_, cfg = get(f"/v2/lib/nyd/blobs/{man['config']['digest']}")
cfg = json.loads(cfg)
assert cfg["rootfs"]["diff_ids"][:-1] == [l["digest"] for l in blobs], cfg["rootfs"]
assert cfg["history"][-1]["comment"] == "Nydus Bootstrap Layer"
print(f"manifest with {len(blobs)} blob layers + bootstrap layer {boot['digest']}")
open("bootstrap.digest", "w").write(boot["digest"])
PY
}
step "converted image: a manifest like the source, media types, annotations, diff ids" check_format

# ---- mount it lazily from the registry and compare with the original -----------------
fetch_bootstrap() {
  curl -sf "http://$R/v2/lib/nyd/blobs/$(cat bootstrap.digest)" -o boot.tgz && mkdir -p bx && tar -xzf boot.tgz -C bx &&
    [ -s bx/image/image.boot ]
}
step "bootstrap layer holds image/image.boot" fetch_bootstrap
mkdir -p "$WORK/mnt" "$WORK/cache"
cat > "$WORK/nydusd.json" <<JSON
{"device": {"backend": {"type": "registry", "config": {"scheme": "http", "host": "$R", "repo": "lib/nyd"}},
            "cache": {"type": "blobcache", "config": {"work_dir": "$WORK/cache"}}},
 "mode": "direct", "enable_xattr": true}
JSON
mount_lazy() {
  "$NYDUSD" --bootstrap bx/image/image.boot --config "$WORK/nydusd.json" --mountpoint "$WORK/mnt" \
    --apisock "$WORK/api.sock" >"$WORK/nydusd.log" 2>&1 &
  DPID=$!
  local i
  for i in $(seq 100); do grep -q " $WORK/mnt " /proc/mounts && return 0; sleep 0.1; done
  cat "$WORK/nydusd.log"; return 1
}
if step "nydusd mounts the converted image from the registry" mount_lazy; then
  fetched_before=$(curl -sf --unix-socket "$WORK/api.sock" http://localhost/api/v1/metrics/backend | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["read_amount_total"])')
  step "lazy: one small file reads without fetching the image" \
    sh -c "cmp ref/rootfs/etc/os-release '$WORK/mnt/etc/os-release' && [ \$(curl -sf --unix-socket '$WORK/api.sock' http://localhost/api/v1/metrics/backend | '$PY' -c 'import json,sys; print(json.load(sys.stdin)[\"read_amount_total\"])') -lt 2000000 ]"
  echo "backend bytes before the first read: $fetched_before"
  step "mounted image == umoci unpack of the original (0 differences)" \
    compare_trees --ignore-root-mtime --mtime-ns ref/rootfs "$WORK/mnt"
  kill "$DPID"; wait "$DPID" 2>/dev/null; DPID=
fi

step "nydusify check: format, bootstrap, every chunk, tree == source layers" \
  "$NYDUSIFY" check --target "$R/lib/nyd:v3" --source "$R/lib/src:v3" --target-insecure --source-insecure \
  --work-dir "$WORK/check1"

# ---- a second image sharing the lower layers: their blobs are reused ----------------
more_layers() {
  umoci unpack --image img:v3 b3 >/dev/null && echo extra > b3/rootfs/srv/extra && umoci repack --image img:v4 b3 &&
    skopeo copy --dest-tls-verify=false oci:img:v4 "docker://$R/lib/src:v4"
}
step "a second image on top of the first" more_layers
step "nydusify convert of the second image" sh -c "'$NYDUSIFY' convert --source $R/lib/src:v4 --target $R/lib/nyd:v4 \
  --source-insecure --target-insecure --work-dir '$WORK/w2' > '$WORK/convert2.out'"
cat "$WORK/convert2.out"
# The three layers shared with v3 convert to the same blobs, which lib/nyd
# already has: only the new blob, the bootstrap and the config are sent.
step "the shared layers' blobs were not pushed again" grep -q "3 already there" "$WORK/convert2.out"
# blobs_also_in A B: every blob in directory A is also in B; A must hold the three
# layers' blobs (an empty or missing A would otherwise pass).
blobs_also_in() {
  local n=0 b
  for b in "$1"/*; do
    [ -e "$b" ] || continue
    n=$((n + 1))
    [ -e "$2/$(basename "$b")" ] || { echo "blob $(basename "$b") not in $2"; return 1; }
  done
  echo "$n blobs of $1 found in $2"
  [ "$n" -ge 3 ] || { echo "expected at least the 3 layers' blobs in $1"; return 1; }
}
step "shared layers convert to the same blobs" blobs_also_in "$WORK/w1/layers/blobs" "$WORK/w2/layers/blobs"
step "converting again pushes no blob (all already in the registry)" sh -c "'$NYDUSIFY' convert --source $R/lib/src:v4 \
  --target $R/lib/nyd:v4 --source-insecure --target-insecure --work-dir '$WORK/w3' | tee /dev/stderr | grep -q 'pushed 0 blobs'"

check_mismatch() {  # v4 checked against v3's layers: must fail, naming the extra file
  "$NYDUSIFY" check --target "$R/lib/nyd:v4" --source "$R/lib/src:v3" --target-insecure --source-insecure \
    --work-dir "$WORK/check2" > "$WORK/check2.out"
  local rc=$?
  cat "$WORK/check2.out"
  [ "$rc" -ne 0 ] && grep -q '^PROBLEM /srv/extra: only in the Nydus image' "$WORK/check2.out"
}
step "nydusify check tells images apart (v4 against v3's layers fails)" check_mismatch

# ---- an OCI layout source gives the same blobs ---------------------------------------
step "nydusify convert (OCI layout -> OCI layout)" sh -c "'$NYDUSIFY' convert --source oci:img:v3 --target oci:out:v3 \
  --work-dir '$WORK/w4' > /dev/null"
step "layout and registry conversions made the same blobs" blobs_also_in "$WORK/w1/layers/blobs" "$WORK/out/blobs/sha256"

# ---- owners: non-root uid/gid and set-id bits survive conversion -------------------
# Layers as distributions ship them: one made by GNU tar --numeric-owner (empty
# uname/gname), one by python's tarfile with names that disagree with the ids
# (the numeric id is what counts, as containerd applies layers). The reference
# is `tar -x --numeric-owner` of the layers in order, as root.
write_image_tool() {
  cat > "$WORK/img.py" <<'PY'
"""img.py push REG REPO TAG FLAVOUR ARCH LAYER.tar...   -> prints "digest size mediatype"
   img.py list REG REPO TAG FLAVOUR DIGEST,SIZE,MEDIATYPE,ARCH...
   img.py pylayer OUT.tar
FLAVOUR: docker or oci. REG_AUTH=user:pass for Basic auth."""
import base64, gzip, hashlib, io, json, os, sys, tarfile, urllib.request

def req(method, url, data=None, headers=None):
    r = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    if os.environ.get("REG_AUTH"):
        r.add_header("Authorization", "Basic " + base64.b64encode(os.environ["REG_AUTH"].encode()).decode())
    return urllib.request.urlopen(r)

def digest(b): return "sha256:" + hashlib.sha256(b).hexdigest()

def push_blob(reg, repo, data):
    d = digest(data)
    loc = req("POST", f"http://{reg}/v2/{repo}/blobs/uploads/").headers["Location"]
    if not loc.startswith("http"): loc = f"http://{reg}{loc}"
    req("PUT", loc + ("&" if "?" in loc else "?") + "digest=" + d, data,
        {"Content-Type": "application/octet-stream"})
    return d

MT = {"docker": {"manifest": "application/vnd.docker.distribution.manifest.v2+json",
                 "list": "application/vnd.docker.distribution.manifest.list.v2+json",
                 "config": "application/vnd.docker.container.image.v1+json",
                 "layer": "application/vnd.docker.image.rootfs.diff.tar.gzip"},
      "oci": {"manifest": "application/vnd.oci.image.manifest.v1+json",
              "list": "application/vnd.oci.image.index.v1+json",
              "config": "application/vnd.oci.image.config.v1+json",
              "layer": "application/vnd.oci.image.layer.v1.tar+gzip"}}

def push(reg, repo, tag, flavour, arch, layers):
    mt = MT[flavour]
    descs, diff_ids = [], []
    for path in layers:
        raw = open(path, "rb").read()
        gz = gzip.compress(raw, mtime=0)
        descs.append({"mediaType": mt["layer"], "digest": push_blob(reg, repo, gz), "size": len(gz)})
        diff_ids.append(digest(raw))
    cfg = json.dumps({"architecture": arch, "os": "linux", "config": {"Env": ["PATH=/usr/bin"]},
                      "rootfs": {"type": "layers", "diff_ids": diff_ids}}).encode()
    man = json.dumps({"schemaVersion": 2, "mediaType": mt["manifest"],
                      "config": {"mediaType": mt["config"], "digest": push_blob(reg, repo, cfg), "size": len(cfg)},
                      "layers": descs}).encode()
    req("PUT", f"http://{reg}/v2/{repo}/manifests/{tag}", man, {"Content-Type": mt["manifest"]})
    print(digest(man), len(man), mt["manifest"])

def push_list(reg, repo, tag, flavour, entries):
    mt = MT[flavour]
    ms = []
    for e in entries:
        d, size, media, arch = e.split(",")
        ms.append({"mediaType": media, "digest": d, "size": int(size), "platform": {"os": "linux", "architecture": arch}})
    body = json.dumps({"schemaVersion": 2, "mediaType": mt["list"], "manifests": ms}).encode()
    req("PUT", f"http://{reg}/v2/{repo}/manifests/{tag}", body, {"Content-Type": mt["list"]})
    print(digest(body), len(body), mt["list"])

def pylayer(out):
    t = tarfile.open(out, "w", format=tarfile.PAX_FORMAT)
    def add(name, kind=tarfile.REGTYPE, mode=0o644, uid=0, gid=0, uname="", gname="", data=b"", link=""):
        i = tarfile.TarInfo(name)
        i.type, i.mode, i.uid, i.gid, i.uname, i.gname, i.mtime = kind, mode, uid, gid, uname, gname, 1700000000
        i.linkname = link
        i.size = len(data) if kind == tarfile.REGTYPE else 0
        t.addfile(i, io.BytesIO(data) if kind == tarfile.REGTYPE else None)
    add("home", tarfile.DIRTYPE, 0o755)
    add("home/user", tarfile.DIRTYPE, 0o700, 1000, 1000, "user", "user")          # a directory over a directory
    add("home/user/.bashrc", mode=0o644, uid=1000, gid=1000, uname="user", gname="user", data=b"alias ll='ls -l'\n")
    add("srv", tarfile.DIRTYPE, 0o755)
    add("srv/www", tarfile.DIRTYPE, 0o2775, 33, 33, "www-data", "www-data")
    add("srv/www/index.html", uid=33, gid=33, uname="www-data", gname="www-data", data=b"<html></html>\n")
    add("etc", tarfile.DIRTYPE, 0o755)
    add("etc/shadow", mode=0o640, uid=0, gid=42, uname="root", gname="shadow", data=b"root:*:19000:0:99999:7:::\n")
    # Names that disagree with the ids: the ids count.
    add("etc/named-root", mode=0o600, uid=4242, gid=4343, uname="root", gname="root", data=b"ids win\n")
    add("etc/subuid-owned", mode=0o4750, uid=100000, gid=100000, uname="nosuchuser", gname="nosuchgroup", data=b"x")
    add("etc/nobody-link", tarfile.SYMTYPE, 0o777, 65534, 65534, "nobody", "nogroup", link="shadow")
    add("usr", tarfile.DIRTYPE, 0o755)
    add("usr/bin", tarfile.DIRTYPE, 0o755)
    add("usr/bin/crontab", mode=0o2755, uid=0, gid=107, uname="root", gname="crontab", data=b"\x7fELF-ish")
    t.close()

cmd = sys.argv[1]
if cmd == "push": push(*sys.argv[2:7], sys.argv[7:])
elif cmd == "list": push_list(*sys.argv[2:6], sys.argv[6:])
elif cmd == "pylayer": pylayer(sys.argv[2])
PY
}
write_image_tool

make_owner_layers() {
  local a=$WORK/own/a
  mkdir -p "$a/etc" "$a/usr/bin" "$a/home/user" "$a/var/nobody" "$a/var/mail" "$a/tmp" || return 1
  echo 'root:*:19000:0:99999:7:::' > "$a/etc/shadow"; chown 0:42 "$a/etc/shadow"; chmod 0640 "$a/etc/shadow"
  echo 'root:*::' > "$a/etc/gshadow"; chown 0:42 "$a/etc/gshadow"; chmod 0640 "$a/etc/gshadow"
  cp /usr/bin/true "$a/usr/bin/expiry"; chown 0:42 "$a/usr/bin/expiry"; chmod 2755 "$a/usr/bin/expiry"
  cp /usr/bin/true "$a/usr/bin/passwd"; chmod 4755 "$a/usr/bin/passwd"
  cp /usr/bin/true "$a/usr/bin/both"; chown 1000:1000 "$a/usr/bin/both"; chmod 6750 "$a/usr/bin/both"
  echo 'PS1=$ ' > "$a/home/user/.profile"; ln -s .profile "$a/home/user/link"
  chown -h 1000:1000 "$a/home/user" "$a/home/user/.profile" "$a/home/user/link"; chmod 0750 "$a/home/user"
  echo hidden > "$a/var/nobody/file"; chown -R 65534:65534 "$a/var/nobody"; chmod 0700 "$a/var/nobody"
  chown 0:8 "$a/var/mail"; chmod 2775 "$a/var/mail"; chmod 1777 "$a/tmp"
  tar --numeric-owner -cf "$WORK/own/A.tar" -C "$a" . || return 1
  # --numeric-owner writes no user/group names: the case a name lookup would get wrong.
  "$PY" -c 'import sys, tarfile; bad = [m.name for m in tarfile.open(sys.argv[1]) if m.uname or m.gname]; sys.exit(1 if bad else 0)' \
    "$WORK/own/A.tar" || { echo "GNU tar wrote names"; return 1; }
  "$PY" "$WORK/img.py" pylayer "$WORK/own/B.tar" || return 1
  mkdir -p "$WORK/own/ref" && tar -x --numeric-owner -p -f "$WORK/own/A.tar" -C "$WORK/own/ref" &&
    tar -x --numeric-owner -p -f "$WORK/own/B.tar" -C "$WORK/own/ref" || return 1
  # the reference really holds the owners (tar as root restores them)
  [ "$(stat -c %u:%g:%a "$WORK/own/ref/etc/named-root")" = 4242:4343:600 ] &&
    [ "$(stat -c %g:%a "$WORK/own/ref/usr/bin/expiry")" = 42:2755 ]
}
step "owners image: a GNU tar --numeric-owner layer and a python tarfile layer" make_owner_layers ||
  die "cannot build the owners image"
step "owners image into the registry (Docker media types)" sh -c "'$PY' '$WORK/img.py' push $R lib/owners v1 docker amd64 \
  '$WORK/own/A.tar' '$WORK/own/B.tar' > '$WORK/own/push.out'"
step "nydusify convert of the owners image" "$NYDUSIFY" convert --source "$R/lib/owners:v1" --target "$R/lib/owners:v1-nydus" \
  --source-insecure --target-insecure --work-dir "$WORK/w-own"
step "nydusify check: the owners image's tree == its layers (owners included)" \
  "$NYDUSIFY" check --target "$R/lib/owners:v1-nydus" --source "$R/lib/owners:v1" --target-insecure --source-insecure \
  --work-dir "$WORK/check-own"

# mount_nydus REPO TAG DIR: nydusd serves the converted image REPO:TAG lazily at DIR.
mount_nydus() {
  local repo=$1 tag=$2 dir=$3
  "$PY" - "$R" "$repo" "$tag" "$dir.boot.tgz" <<'PY' || return 1
import json, sys, urllib.request
reg, repo, tag, out = sys.argv[1:]
def get(path, accept):
    r = urllib.request.Request(f"http://{reg}/v2/{repo}/{path}", headers={"Accept": accept})
    return urllib.request.urlopen(r).read()
acc = ",".join(["application/vnd.oci.image.index.v1+json", "application/vnd.oci.image.manifest.v1+json",
                "application/vnd.docker.distribution.manifest.list.v2+json",
                "application/vnd.docker.distribution.manifest.v2+json"])
doc = json.loads(get(f"manifests/{tag}", acc))
if "manifests" in doc:
    m = next(m for m in doc["manifests"] if "nydus.remoteimage.v1" in m.get("platform", {}).get("os.features", []))
    doc = json.loads(get(f"manifests/{m['digest']}", acc))
open(out, "wb").write(get(f"blobs/{doc['layers'][-1]['digest']}", "*/*"))
PY
  mkdir -p "$dir" "$dir.x" "$dir.cache" && tar -xzf "$dir.boot.tgz" -C "$dir.x" || return 1
  cat > "$dir.json" <<JSON
{"device": {"backend": {"type": "registry", "config": {"scheme": "http", "host": "$R", "repo": "$repo"}},
            "cache": {"type": "blobcache", "config": {"work_dir": "$dir.cache"}}},
 "mode": "direct", "enable_xattr": true}
JSON
  "$NYDUSD" --bootstrap "$dir.x/image/image.boot" --config "$dir.json" --mountpoint "$dir" \
    --apisock "$dir.sock" >"$dir.log" 2>&1 &
  DPID=$!
  local i
  for i in $(seq 100); do grep -q " $dir " /proc/mounts && return 0; sleep 0.1; done
  cat "$dir.log"; return 1
}
if step "nydusd mounts the converted owners image" mount_nydus lib/owners v1-nydus "$WORK/mnt-own"; then
  step "mounted owners image == tar -x --numeric-owner of its layers (owners, set-id bits)" \
    compare_trees --ignore-root-mtime "$WORK/own/ref" "$WORK/mnt-own"
  kill "$DPID"; wait "$DPID" 2>/dev/null; DPID=
fi

# ---- the target keeps the source's shape and media types (skopeo inspect --raw) -----
# raw_field REF EXPR: a Python expression over the manifest `m` skopeo reads raw.
raw_field() {
  skopeo inspect --raw --tls-verify=false "docker://$1" | "$PY" -c "import json,sys; m=json.load(sys.stdin); print($2)"
}
shape_docker_manifest() {  # the owners image is a Docker schema2 manifest: so is its conversion
  [ "$(raw_field $R/lib/owners:v1-nydus 'm["mediaType"]')" = application/vnd.docker.distribution.manifest.v2+json ] &&
  [ "$(raw_field $R/lib/owners:v1-nydus 'm["config"]["mediaType"]')" = application/vnd.docker.container.image.v1+json ] &&
  [ "$(raw_field $R/lib/owners:v1-nydus 'm["layers"][-1]["mediaType"]')" = application/vnd.docker.image.rootfs.diff.tar.gzip ] &&
  [ "$(raw_field $R/lib/owners:v1-nydus 'm["layers"][0]["mediaType"]')" = application/vnd.oci.image.layer.nydus.blob.v1 ]
}
step "Docker manifest in, Docker manifest out (skopeo inspect --raw)" shape_docker_manifest
shape_oci() {
  "$NYDUSIFY" convert --source "$R/lib/owners:v1" --target "$R/lib/owners:v1-oci" --oci --work-dir "$WORK/w-oci" &&
  [ "$(raw_field $R/lib/owners:v1-oci 'm["mediaType"]')" = application/vnd.oci.image.manifest.v1+json ] &&
  [ "$(raw_field $R/lib/owners:v1-oci 'm["config"]["mediaType"]')" = application/vnd.oci.image.config.v1+json ] &&
  [ "$(raw_field $R/lib/owners:v1-oci 'm["layers"][-1]["mediaType"]')" = application/vnd.oci.image.layer.v1.tar+gzip ]
}
step "--oci: OCI media types" shape_oci

# A two-platform Docker manifest list (amd64 = the owners layers, arm64 = one of them).
push_list() {
  local a b
  a=$("$PY" "$WORK/img.py" push $R lib/multi amd64 docker amd64 "$WORK/own/A.tar" "$WORK/own/B.tar") &&
  b=$("$PY" "$WORK/img.py" push $R lib/multi arm64 docker arm64 "$WORK/own/B.tar") || return 1
  set -- $a; local ea="$1,$2,$3,amd64"; set -- $b
  "$PY" "$WORK/img.py" list $R lib/multi v1 docker "$ea" "$1,$2,$3,arm64"
}
step "a Docker manifest list with linux/amd64 and linux/arm64" push_list
shape_list() {  # both platforms: a Docker manifest list of two Nydus manifests
  "$NYDUSIFY" convert --source "$R/lib/multi:v1" --target "$R/lib/multi:nydus" --platform linux/amd64,linux/arm64 \
    --work-dir "$WORK/w-multi" &&
  [ "$(raw_field $R/lib/multi:nydus 'm["mediaType"]')" = application/vnd.docker.distribution.manifest.list.v2+json ] &&
  [ "$(raw_field $R/lib/multi:nydus '",".join(sorted(e["platform"]["architecture"] for e in m["manifests"]))')" = amd64,arm64 ] &&
  "$NYDUSIFY" check --target "$R/lib/multi:nydus" --source "$R/lib/multi:v1" --platform linux/arm64 --work-dir "$WORK/check-arm"
}
step "--platform a,b: a manifest list stays a manifest list (each platform checked)" shape_list
shape_one() {  # one platform out of an index: a manifest (the snapshotter converter's convertIndex)
  "$NYDUSIFY" convert --source "$R/lib/multi:v1" --target "$R/lib/multi:arm" --platform linux/arm64 --work-dir "$WORK/w-arm" &&
  [ "$(raw_field $R/lib/multi:arm 'm["mediaType"]')" = application/vnd.docker.distribution.manifest.v2+json ]
}
step "one platform of a list: a manifest" shape_one
merge_platform() {  # the CI form: the source manifest and the Nydus one in one OCI index
  "$NYDUSIFY" --log-level info convert --source "$R/lib/owners:v1" --target "$R/lib/owners:merged" --fs-version 6 \
    --compressor zstd --platform linux/amd64 --merge-platform --work-dir "$WORK/w-merge" || return 1
  local src
  src=sha256:$(skopeo inspect --raw --tls-verify=false "docker://$R/lib/owners:v1" | sha256sum | cut -d' ' -f1)
  skopeo inspect --raw --tls-verify=false "docker://$R/lib/owners:merged" | "$PY" -c '
import json, sys
m = json.load(sys.stdin)
assert m["mediaType"] == "application/vnd.oci.image.index.v1+json", m["mediaType"]
src, nyd = m["manifests"]
assert src["digest"] == sys.argv[1] and src["mediaType"] == "application/vnd.docker.distribution.manifest.v2+json", src
assert "os.features" not in src["platform"] and "artifactType" not in src, src
assert nyd["artifactType"] == "application/vnd.nydus.image.manifest.v1+json", nyd
assert nyd["platform"]["os.features"] == ["nydus.remoteimage.v1"], nyd
assert (nyd["platform"]["os"], nyd["platform"]["architecture"]) == ("linux", "amd64"), nyd
print("merged index:", src["digest"][:19], "+", nyd["digest"][:19])' "$src" &&
  "$NYDUSIFY" check --multi-platform --target "$R/lib/owners:merged" --source "$R/lib/owners:v1" --work-dir "$WORK/check-merge" &&
  ! "$NYDUSIFY" check --multi-platform --target "$R/lib/owners:v1-nydus" --work-dir "$WORK/check-merge2"
}
step "--merge-platform: an OCI index with the source manifest and the Nydus one; check --multi-platform" merge_platform
metric_json() {  # upstream's --output-json: acceleration-service's converter.Metric
  "$NYDUSIFY" convert --source "$R/lib/owners:v1" --target "$R/lib/owners:m" --output-json "$WORK/metric.json" \
    --fs-chunk-size 0x100000 --work-dir "$WORK/w-metric" || return 1
  PYTHONPATH="$NYDUS_SOURCE_DIR/tests/compat/lib" "$PY" -c '
import json, sys
from go_structs import Struct, decode
metric = Struct("converter.Metric", {"SourceImageSize": "int", "TargetImageSize": "int", "SourcePullElapsed": "int",
                                     "ConversionElapsed": "int", "TargetPushElapsed": "int"})
m = decode(json.load(open(sys.argv[1])), metric)
assert m["SourceImageSize"] > 0 and m["TargetImageSize"] > 0, m
print(m)' "$WORK/metric.json"
}
step "--output-json writes upstream's metric JSON" metric_json

# ---- --chunk-dict: an image sharing files with lib/nyd:v3 in a layer of its own -------
# Image D is one new layer holding copies of v3's libraries (so no layer is
# shared) and a file of its own. With v3 as the chunk dictionary its blob stores
# only what v3 lacks; the manifest lists v3's blobs it uses (the oracle: v3's
# own manifest) and the tree read back through nydusd equals umoci's unpack.
dict_image() {
  umoci new --image img:dict && umoci unpack --image img:dict bd >/dev/null || return 1
  mkdir -p bd/rootfs/opt/lib && cp -a ref/rootfs/usr/lib/. bd/rootfs/opt/lib/ &&
    head -c 300000 /dev/urandom > bd/rootfs/opt/own.bin || return 1
  umoci repack --image img:dict bd && umoci unpack --image img:dict dref >/dev/null &&
    skopeo copy --dest-tls-verify=false oci:img:dict "docker://$R/lib/dsrc:v1"
}
step "an image with v3's libraries in a new layer" dict_image
step "nydusify convert without a chunk dict" "$NYDUSIFY" convert --source "$R/lib/dsrc:v1" --target "$R/lib/dnyd:plain" \
  --source-insecure --target-insecure --work-dir "$WORK/w-nodict"
step "nydusify convert --chunk-dict bootstrap:registry:<v3's Nydus image>" "$NYDUSIFY" convert --source "$R/lib/dsrc:v1" \
  --target "$R/lib/dnyd:dict" --chunk-dict "bootstrap:registry:$R/lib/nyd:v3" --chunk-dict-insecure \
  --source-insecure --target-insecure --work-dir "$WORK/w-dict"
dict_manifest() {
  "$PY" - "$R" <<'PY'
import json, sys, urllib.request
reg = sys.argv[1]
acc = "application/vnd.oci.image.manifest.v1+json"
def man(repo, tag):
    r = urllib.request.Request(f"http://{reg}/v2/{repo}/manifests/{tag}", headers={"Accept": acc})
    return json.loads(urllib.request.urlopen(r).read())
def blobs(m): return [l for l in m["layers"] if l["mediaType"] == "application/vnd.oci.image.layer.nydus.blob.v1"]
v3 = {l["digest"]: l["size"] for l in blobs(man("lib/nyd", "v3"))}
plain, dic = blobs(man("lib/dnyd", "plain")), blobs(man("lib/dnyd", "dict"))
shared = [l for l in dic if l["digest"] in v3]
own = [l for l in dic if l["digest"] not in v3]
assert shared, f"no blob of the dictionary image in {dic}"
assert all(l["size"] == v3[l["digest"]] for l in shared), (shared, v3)
assert all(l["annotations"]["containerd.io/snapshot/nydus-blob"] == "true" for l in dic), dic
assert len(plain) == 1 and not any(l["digest"] in v3 for l in plain), plain
own_size, plain_size = sum(l["size"] for l in own), plain[0]["size"]
print(f"without dict: 1 blob of {plain_size} B; with dict: own {own_size} B + {len(shared)} of v3's blobs")
assert own_size < plain_size // 4, (own_size, plain_size)
# every blob the manifest names is in this repository (the dict's were copied)
for l in dic:
    r = urllib.request.Request(f"http://{reg}/v2/lib/dnyd/blobs/{l['digest']}", method="HEAD")
    assert urllib.request.urlopen(r).status == 200, l
PY
}
step "--chunk-dict: the new blob holds only what v3 lacks; the manifest lists v3's blobs used" dict_manifest
if step "nydusd mounts the chunk-dict image" mount_nydus lib/dnyd dict "$WORK/mnt-dict"; then
  step "mounted chunk-dict image == umoci unpack of its source" compare_trees --ignore-root-mtime dref/rootfs "$WORK/mnt-dict"
  kill "$DPID"; wait "$DPID" 2>/dev/null; DPID=
fi
bad_dict_format() {
  local out rc
  out=$("$NYDUSIFY" convert --source "$R/lib/dsrc:v1" --target "$R/lib/dnyd:bad" --chunk-dict "blob:registry:$R/lib/nyd:v3" \
    --work-dir "$WORK/w-bad" 2>&1); rc=$?
  echo "$out"
  [ "$rc" -eq 1 ] && grep -q 'invalid chunk dict format blob, should be \[bootstrap\]' <<<"$out"
}
step "--chunk-dict with an unknown format is refused (upstream's message)" bad_dict_format

# ---- --backend-type s3 (s3rver) / localfs: the blobs go to object storage -------------
# Oracles: the registry conversion of the same source (lib/nyd:v3: deterministic,
# so the same blobs), the bucket listed and read by curl's own SigV4 signer, each
# object's sha256sum against its name, the registry's 404s, and the tree read
# through nydusd's s3 backend against umoci's unpack.
S3_PID=
start_s3rver() {
  S3_PORT=$("$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  s3rver --directory "$WORK/s3" --address 127.0.0.1 --port "$S3_PORT" --silent --configure-bucket nydus \
    > "$WORK/s3rver.log" 2>&1 &
  S3_PID=$!
  local i
  for i in $(seq 100); do curl -s "http://127.0.0.1:$S3_PORT/" >/dev/null && return 0; sleep 0.1; done
  return 1
}
s3_get() {
  curl -sf --aws-sigv4 "aws:amz:us-east-1:s3" --user S3RVER:S3RVER -H "x-amz-content-sha256: UNSIGNED-PAYLOAD" \
    "http://127.0.0.1:$S3_PORT/nydus$1"
}
if step "s3rver on loopback (bucket nydus)" start_s3rver; then
  S3_CFG="{\"endpoint\": \"127.0.0.1:$S3_PORT\", \"scheme\": \"http\", \"bucket_name\": \"nydus\", \"region\": \"us-east-1\",
    \"object_prefix\": \"blobs/\", \"access_key_id\": \"S3RVER\", \"access_key_secret\": \"S3RVER\"}"
  step "nydusify convert --backend-type s3 --backend-config JSON" "$NYDUSIFY" convert --source "$R/lib/src:v3" \
    --target "$R/lib/nyd-s3:v3" --backend-type s3 --backend-config "$S3_CFG" --source-insecure --target-insecure \
    --work-dir "$WORK/w-s3"
  s3_layout() {
    s3_get "?list-type=2&prefix=blobs/" > "$WORK/s3-list.xml" || return 1
    "$PY" - "$R" "$WORK/s3-list.xml" "$WORK/s3-keys" <<'PY' || return 1
import json, re, sys, urllib.request, urllib.error
reg, listing, keys_out = sys.argv[1:]
acc = "application/vnd.oci.image.manifest.v1+json"
def get(path):
    return urllib.request.urlopen(urllib.request.Request(f"http://{reg}/v2/{path}", headers={"Accept": acc})).read()
ref = json.loads(get("lib/nyd/manifests/v3"))
want = {l["digest"][7:] for l in ref["layers"] if l["mediaType"] == "application/vnd.oci.image.layer.nydus.blob.v1"}
keys = set(re.findall(r"<Key>([^<]+)</Key>", open(listing).read()))
assert keys == {"blobs/" + h for h in want}, (sorted(keys), sorted(want))
open(keys_out, "w").write("\n".join(sorted(keys)) + "\n")
m = json.loads(get("lib/nyd-s3/manifests/v3"))
assert len(m["layers"]) == 1, m["layers"]           # the bootstrap layer only
boot = m["layers"][0]
assert boot["annotations"]["containerd.io/snapshot/nydus-bootstrap"] == "true", boot
cfg = json.loads(get(f"lib/nyd-s3/blobs/{m['config']['digest']}"))
assert len(cfg["rootfs"]["diff_ids"]) == 1 and len(cfg["history"]) == 1, (cfg["rootfs"], cfg["history"])
assert cfg["history"][0]["comment"] == "Nydus Bootstrap Layer", cfg["history"]
for h in want:   # no blob went to the registry
    try:
        urllib.request.urlopen(urllib.request.Request(f"http://{reg}/v2/lib/nyd-s3/blobs/sha256:{h}", method="HEAD"))
        raise SystemExit(f"blob {h} is in the registry")
    except urllib.error.HTTPError as e:
        assert e.code == 404, e
open("s3boot.digest", "w").write(boot["digest"])
print(f"{len(keys)} objects in the bucket, manifest = bootstrap layer {boot['digest'][:19]}")
PY
    local k
    while read -r k; do  # each object's bytes hash to its name
      [ "$(s3_get "/$k" | sha256sum | cut -d' ' -f1)" = "${k#blobs/}" ] || { echo "object $k: wrong bytes"; return 1; }
    done < "$WORK/s3-keys"
  }
  step "s3: the bucket holds the blobs (named by sha256), the registry only the bootstrap layer" s3_layout
  mount_s3() {
    mkdir -p "$WORK/s3x" "$WORK/mnt-s3" "$WORK/s3cache" &&
      curl -sf "http://$R/v2/lib/nyd-s3/blobs/$(cat s3boot.digest)" | tar -xz -C "$WORK/s3x" || return 1
    cat > "$WORK/nydusd-s3.json" <<JSON
{"device": {"backend": {"type": "s3", "config": $S3_CFG},
            "cache": {"type": "blobcache", "config": {"work_dir": "$WORK/s3cache"}}},
 "mode": "direct", "enable_xattr": true}
JSON
    "$NYDUSD" --bootstrap "$WORK/s3x/image/image.boot" --config "$WORK/nydusd-s3.json" --mountpoint "$WORK/mnt-s3" \
      --apisock "$WORK/s3.sock" > "$WORK/nydusd-s3.log" 2>&1 &
    DPID=$!
    local i
    for i in $(seq 100); do grep -q " $WORK/mnt-s3 " /proc/mounts && return 0; sleep 0.1; done
    cat "$WORK/nydusd-s3.log"; return 1
  }
  if step "nydusd mounts the s3 image (backend s3, the bucket)" mount_s3; then
    step "mounted s3 image == umoci unpack of the original" compare_trees --ignore-root-mtime --mtime-ns ref/rootfs "$WORK/mnt-s3"
    kill "$DPID"; wait "$DPID" 2>/dev/null; DPID=
  fi
  s3_missing_region() {
    local out rc
    out=$("$NYDUSIFY" convert --source "$R/lib/src:v3" --target "$R/lib/nyd-s3:bad" --backend-type s3 \
      --backend-config '{"bucket_name": "nydus"}' --work-dir "$WORK/w-s3bad" 2>&1); rc=$?
    echo "$out"
    [ "$rc" -eq 1 ] && grep -q "missing 'bucket_name' or 'region'" <<<"$out"
  }
  step "s3 config without a region is refused (upstream's message)" s3_missing_region
  kill "$S3_PID" 2>/dev/null; wait "$S3_PID" 2>/dev/null
fi
localfs_backend() {
  "$NYDUSIFY" convert --source "$R/lib/src:v3" --target "$R/lib/nyd-lfs:v3" --backend-type localfs \
    --backend-config-file <(echo "{\"dir\": \"$WORK/lfs\"}") --source-insecure --target-insecure \
    --work-dir "$WORK/w-lfs" || return 1
  # the registry conversion's blobs (the manifest's layers but the bootstrap)
  [ "$(ls "$WORK/lfs" | sort)" = "$(raw_field "$R/lib/nyd:v3" '"\n".join(sorted(l["digest"][7:] for l in m["layers"][:-1]))')" ] ||
    { echo "localfs dir != lib/nyd:v3's blobs"; return 1; }
  local f
  for f in "$WORK"/lfs/*; do [ "$(sha256sum < "$f" | cut -d' ' -f1)" = "$(basename "$f")" ] || return 1; done
  [ "$(raw_field "$R/lib/nyd-lfs:v3" 'len(m["layers"])')" = 1 ]
}
step "--backend-type localfs --backend-config-file: the same blobs in the dir, the bootstrap layer only" localfs_backend

# ---- credentials from a Docker config.json against a registry with htpasswd ----------
auth_registry() {
  local d=$WORK/authreg port
  mkdir -p "$d/data" && htpasswd -Bbn ci 'pa:ss' > "$d/htpasswd" || return 1
  port=$("$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  AUTH_HOST=127.0.0.1:$port
  cat > "$d/config.yml" <<YML
version: 0.1
log: {level: error, accesslog: {disabled: true}}
storage: {filesystem: {rootdirectory: $d/data}}
auth: {htpasswd: {realm: nydus-test, path: $d/htpasswd}}
http: {addr: $AUTH_HOST}
YML
  docker-registry serve "$d/config.yml" > "$d/registry.log" 2>&1 &
  AUTH_PID=$!
  local i
  for i in $(seq 100); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "http://$AUTH_HOST/v2/")" = 401 ] && break; sleep 0.1
  done
  REG_AUTH='ci:pa:ss' "$PY" "$WORK/img.py" push "$AUTH_HOST" lib/owners v1 docker amd64 "$WORK/own/A.tar" "$WORK/own/B.tar"
}
AUTH_PID=
if step "docker-registry with htpasswd (Basic auth) holding the owners image" auth_registry; then
  mkdir -p "$WORK/home/.docker"
  printf '{"auths": {"%s": {"auth": "%s"}}}\n' "$AUTH_HOST" "$(printf 'ci:pa:ss' | base64)" > "$WORK/home/.docker/config.json"
  step "without credentials the registry refuses (the check can fail)" sh -c "! HOME='$WORK/nohome' '$NYDUSIFY' convert \
    --source $AUTH_HOST/lib/owners:v1 --target $AUTH_HOST/lib/owners:nydus --work-dir '$WORK/w-noauth'"
  step "nydusify convert with ~/.docker/config.json auth (no --*-auth)" env HOME="$WORK/home" "$NYDUSIFY" convert \
    --source "$AUTH_HOST/lib/owners:v1" --target "$AUTH_HOST/lib/owners:nydus" --plain-http --work-dir "$WORK/w-auth"
  # credsStore: the same credentials from a credential helper on PATH.
  mkdir -p "$WORK/helper"
  cat > "$WORK/helper/docker-credential-citest" <<'SH'
#!/bin/sh
read server
echo "get $server" >> "$(dirname "$0")/calls"
printf '{"ServerURL":"%s","Username":"ci","Secret":"pa:ss"}\n' "$server"
SH
  chmod +x "$WORK/helper/docker-credential-citest"
  mkdir -p "$WORK/home2/.docker" && echo '{"credsStore": "citest"}' > "$WORK/home2/.docker/config.json"
  step "nydusify check with a credential helper (credsStore), owners compared" env HOME="$WORK/home2" \
    PATH="$WORK/helper:$PATH" "$NYDUSIFY" check --target "$AUTH_HOST/lib/owners:nydus" --source "$AUTH_HOST/lib/owners:v1" \
    --work-dir "$WORK/check-auth"
  step "the helper was asked for the registry host" grep -qx "get $AUTH_HOST" "$WORK/helper/calls"
  kill "$AUTH_PID" 2>/dev/null; wait "$AUTH_PID" 2>/dev/null
fi

summary
