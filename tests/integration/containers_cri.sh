#!/usr/bin/env bash
# The CRI keychain ([remote.auth] enable_cri_keychain, image_service_address):
# how Kubernetes hands a pod's imagePullSecrets to a lazily pulled image.
# Real containerd 1.6 with its CRI plugin on (pulling with our snapshotter),
# Debian's docker-registry behind htpasswd auth, and no docker config at all:
#   - the snapshotter's socket serves runtime.v1.ImageService and forwards to
#     containerd's: ListImages through it equals the answer straight from
#     containerd byte for byte (fields our reduced .proto does not name pass
#     through); ImageFsInfo names containerd's nydus snapshotter directory;
#   - PullImage without credentials: containerd's own pull is refused (401);
#   - PullImage with the credentials (as the kubelet sends a pull secret):
#     containerd pulls, the snapshotter takes them for the bootstrap snapshot
#     (cri.image-ref) and puts them in the daemon config (coreutils base64 is the
#     oracle); a container of the CRI-pulled image (namespace k8s.io) reads a
#     file whose sha256 equals the source tree's, and the registry log shows
#     nydusd's authorized blob GETs;
#   - the same for another image with AuthConfig.auth (base64 user:password);
#   - RemoveImage through the proxy forgets the credential (logged), and the
#     image is gone from containerd.
set -uo pipefail
# shellcheck source-path=SCRIPTDIR source=lib/common.sh
source "$(dirname "$0")/lib/common.sh"

# shellcheck source=lib/containers_test.sh
source "$LIB_DIR/containers_test.sh"
ct_test_preflight busybox
[ -e /dev/fuse ] || skip_kernel "no /dev/fuse"
CRI_CLIENT=$NYDUS_BIN_DIR/cri-client
[ -x "$CRI_CLIENT" ] || die "$CRI_CLIENT not built"

ct_test_workdir ct-cri
mkdir -p "$WORK/docker"
echo '{}' >"$WORK/docker/config.json"
export DOCKER_CONFIG=$WORK/docker  # empty: the credentials come through CRI only
REG=$WORK/registry
RLOG=$REG/registry.log
export NYDUS_REGISTRY_HTPASSWD=$WORK/htpasswd NYDUS_REGISTRY_LOG_LEVEL=info
"$PY" -W ignore -c 'import crypt, sys; print(sys.argv[1] + ":" + crypt.crypt(sys.argv[2], crypt.mksalt(crypt.METHOD_BLOWFISH)))' \
  kube 'pull-secret:1' >"$NYDUS_REGISTRY_HTPASSWD" || die "htpasswd"
USER_PW='kube:pull-secret:1'

make_image() {
  local r=b0/rootfs
  umoci init --layout img && umoci new --image img:base && umoci unpack --image img:base b0 >/dev/null || return 1
  mkdir -p "$r/bin" "$r/data" || return 1
  cp "$BUSYBOX" "$r/bin/busybox" && ln -s busybox "$r/bin/sh" || return 1
  head -c 4194304 /dev/urandom >"$r/data/f1.bin"
  umoci repack --image img:v1 b0 || return 1
  head -c 4194304 /dev/urandom >"$r/data/f2.bin"  # :v2, another bootstrap
  umoci repack --image img:v2 b0
}
step "umoci: busybox-static image with a file of 4 MiB (:v1), one more (:v2)" make_image || die "cannot build the image"
step "docker-registry with htpasswd (bcrypt) auth" start_registry "$REG" || die "no registry"
REF=$REGISTRY_HOST/test/nydus:v1
REF2=$REGISTRY_HOST/test/nydus:v2
push_convert() {  # TAG: skopeo push of the OCI image, nydusify convert (its own docker config)
  mkdir -p "$WORK/push-docker"
  printf '{"auths": {"%s": {"auth": "%s"}}}\n' "$REGISTRY_HOST" "$(printf '%s' "$USER_PW" | base64 -w0)" \
    >"$WORK/push-docker/config.json"
  skopeo copy --dest-tls-verify=false --dest-creds "$USER_PW" "oci:img:$1" "docker://$REGISTRY_HOST/test/plain:$1" &&
    DOCKER_CONFIG=$WORK/push-docker "$NYDUSIFY" convert --source "$REGISTRY_HOST/test/plain:$1" \
      --target "$REGISTRY_HOST/test/nydus:$1" --source-insecure --target-insecure --work-dir "$WORK/convert-$1"
}
step "skopeo push --dest-creds + nydusify convert of :v1 and :v2" sh -c "$(declare -f push_convert);
  WORK='$WORK' REGISTRY_HOST='$REGISTRY_HOST' USER_PW='$USER_PW' NYDUSIFY='$NYDUSIFY'; push_convert v1 && push_convert v2" ||
  die "push/convert failed"

cat >"$WORK/snapshotter.toml" <<TOML
[remote.auth]
enable_cri_keychain = true
image_service_address = "$CT_CD_SOCK"
TOML
start_all() {
  CT_CRI=$REGISTRY_HOST ct_start --config "$WORK/snapshotter.toml" --log-level debug || return 1
  ct_wait_proxy || return 1
  grep 'CRI keychain: runtime.v1.ImageService' "$CT_LOGS/snapshotter.log"
}
step "containerd 1.6 with its CRI plugin (snapshotter nydus) + containerd-nydus-grpc with enable_cri_keychain" start_all ||
  die "no snapshotter/containerd"

cri() { "$CRI_CLIENT" "$CT_SNAP_SOCK" "$@"; }
direct() { "$CRI_CLIENT" "$CT_CD_SOCK" "$@"; }
same_answer() {  # OP: the proxy's answer equals containerd's own, byte for byte
  cri "$1" >"proxy-$1.txt" && direct "$1" >"direct-$1.txt" || return 1
  head -c 300 "proxy-$1.txt"; echo
  cmp "proxy-$1.txt" "direct-$1.txt"
}
fsinfo() {  # ImageFsInfo through the proxy: containerd's answer (a timestamp in it changes per call)
  cri fsinfo | tee fsinfo.txt | head -8
  grep -qF "$CT_CD/root/io.containerd.snapshotter.v1.nydus" fsinfo.txt
}
step "ImageFsInfo through the proxy: containerd's image filesystem (the nydus snapshotter's)" fsinfo

refused() {
  if cri pull "$REF" >out.txt 2>&1; then echo "pulled without credentials"; return 1; fi
  cat out.txt
  grep -qi 'unauthorized\|401\|authorization' out.txt
}
step "PullImage without credentials: containerd's pull is refused by the registry" refused

pulled() {
  cri pull "$REF" kube 'pull-secret:1' | tee out.txt | grep -q '^sha256:' || { cat out.txt; return 1; }
  cat out.txt
}
step "PullImage with the pull secret (AuthConfig username/password) through the proxy" pulled
step "ListImages through the proxy == containerd's own answer, and names $REF" sh -c \
  "$(declare -f cri direct same_answer); CRI_CLIENT='$CRI_CLIENT' CT_SNAP_SOCK='$CT_SNAP_SOCK' CT_CD_SOCK='$CT_CD_SOCK';
   same_answer list && grep -qF '$REF' proxy-list.txt"

config_auth() {  # the one daemon config's backend auth, decoded
  local cfg
  cfg=$(ls "$CT_ROOT"/config/nydusd-*/config.json 2>/dev/null)
  [ "$(echo "$cfg" | grep -c .)" = 1 ] || { echo "want one daemon config: $cfg"; return 1; }
  "$PY" -c 'import json, sys; print(json.load(open(sys.argv[1]))["device"]["backend"]["config"].get("auth", ""))' "$cfg" |
    base64 -d
}

k8s() { ct_ctr -n k8s.io "$@"; }
step "ctr -n k8s.io run -d: a keeper container of the CRI-pulled image (holds its nydusd)" \
  k8s run -d --runc-root "$RUNC_ROOT" --snapshotter nydus "$REF" keeper /bin/sh -c 'exec sleep 100000'
read_right() {
  ct_ctr -n k8s.io run --runc-root "$RUNC_ROOT" --snapshotter nydus --rm "$REF" c1 /bin/sh -c 'sha256sum /data/f1.bin' \
    >got.txt || return 1
  (cd b0/rootfs && sha256sum data/f1.bin | sed 's#  #  /#') >want.txt
  cat got.txt
  diff want.txt got.txt || return 1
  # nydusd's blob GETs (containerd fetched only the bootstrap layer) were authorized.
  grep 'msg="authorized request"' "$RLOG" | grep 'http.request.method=GET' |
    grep -c 'http.request.uri="/v2/test/nydus/blobs/sha256:' | grep -qv '^0$'
}
step "ctr -n k8s.io run of the CRI-pulled image: sha256 of /data/f1.bin == the source's" read_right
step "the snapshotter took the credentials of the CRI PullImage for $REF" sh -c \
  "grep 'registry credentials for $REF: from the CRI PullImage request' '$CT_LOGS/snapshotter.log' | tail -1 | grep ."
step "the daemon config holds backend.config.auth = base64(the pull secret)" sh -c \
  "$(declare -f config_auth); CT_ROOT='$CT_ROOT' PY='$PY'; [ \"\$(config_auth)\" = '$USER_PW' ]"

v2_runs() {
  cri pull-auth "$REF2" "$(printf '%s' "$USER_PW" | base64 -w0)" | grep -q '^sha256:' || return 1
  ct_ctr -n k8s.io run --runc-root "$RUNC_ROOT" --snapshotter nydus --rm "$REF2" c2 /bin/sh -c 'sha256sum /data/f2.bin' \
    >got2.txt || return 1
  (cd b0/rootfs && sha256sum data/f2.bin | sed 's#  #  /#') | diff - got2.txt || return 1
  grep "registry credentials for $REF2: from the CRI PullImage request" "$CT_LOGS/snapshotter.log" | tail -1 | grep .
}
step "PullImage of :v2 with AuthConfig.auth (base64) + ctr run: /data/f2.bin right, credentials from CRI" v2_runs

removed() {
  cri rm "$REF2" >/dev/null || return 1
  if direct status "$REF2" | grep -qF "$REF2"; then echo "still listed"; return 1; fi
  grep 'CRI keychain: credentials for .* forgotten' "$CT_LOGS/snapshotter.log" | tail -1 | grep .
}
step "RemoveImage through the proxy: the image is gone from containerd, the credential forgotten" removed
stop_keeper() {
  k8s task kill -s KILL keeper && sleep 0.5 && k8s task rm -f keeper >/dev/null && k8s containers rm keeper
}
step "keeper stopped" stop_keeper
step "the pull secret is in no log (snapshotter, nydusd, containerd)" sh -c \
  "! grep -rlF -e 'pull-secret:1' -e '$(printf '%s' "$USER_PW" | base64 -w0)' '$CT_LOGS' '$CT_ROOT/logs' 2>/dev/null"
step "the snapshotter logged no internal error" sh -c "! grep -E ' (error|critical) ' '$CT_LOGS/snapshotter.log'"

summary
