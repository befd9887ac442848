#!/usr/bin/env bash
# Registry credentials through containerd-nydus-grpc, under real containerd 1.6
# + runc (lib/containerd.sh), with Debian's docker-registry behind htpasswd
# (bcrypt) Basic auth:
#   - the image pushed (skopeo --dest-creds) and converted by our nydusify with
#     the credentials in $DOCKER_CONFIG; unauthenticated, the registry refuses;
#   - the snapshotter started with that DOCKER_CONFIG: `ctr-remote image rpull
#     --user` + `ctr run`: the sha256 of files inside equals the source tree's,
#     and the registry's own log names the user on the nydusd's blob GETs;
#     the daemon config holds backend.config.auth = base64(user:pass) (coreutils
#     base64 is the oracle), mode 0600; no password in any log;
#   - renewal (--credential-renewal-interval 2s): the registry restarted with
#     another user and password only, the docker config rewritten: the
#     snapshotter sends them to the running nydusd (PUT /api/v1/config), and a
#     container reading a not-yet-fetched file gets the source's bytes, fetched
#     as the new user;
#   - without renewal (interval 0, the snapshotter restarted; it re-attaches the
#     running daemon): after the next password change a not-yet-fetched file
#     cannot be read; the snapshotter restarted with renewal on sends the new
#     credentials to that adopted daemon and the same file reads right;
#   - a credential helper (docker config {"credsStore": "citest"} only, a
#     docker-credential-citest on the snapshotter's PATH): after the next
#     password change the renewal runs it (server on stdin, as docker/cli)
#     and an unfetched file reads right, fetched as the helper's user;
#   - a kubelet credential provider plugin (config.toml [remote.auth]
#     enable_kubelet_credential_providers, a CredentialProviderConfig YAML, the
#     plugin in credential_provider_bin_dir), the docker config empty: the
#     restarted snapshotter's renewal runs it (CredentialProviderRequest on
#     stdin) and an unfetched file reads right, fetched as the plugin's user;
#   - Kubernetes image pull secrets (config.toml [remote.auth]
#     enable_kubeconfig_keychain, kubeconfig_path), watched on an API server
#     over HTTPS with a bearer token (lib/kube_api_stub.py: no real API server
#     is packaged for Debian 12; it speaks the list + chunked watch protocol):
#     the secret changed on the server reaches the running nydusd and an
#     unfetched file reads right, fetched as the secret's user.
# AUTH_DAEMON_MODE=shared (containers_auth_shared.sh): the same with one shared
# nydusd, each image mounted through its API (PUT /api/v1/config?id=/<snapshot id>).
set -uo pipefail
# shellcheck source-path=SCRIPTDIR source=lib/common.sh
source "$(dirname "$0")/lib/common.sh"

# shellcheck source=lib/containers_test.sh
source "$LIB_DIR/containers_test.sh"
ct_test_preflight busybox
[ -e /dev/fuse ] || skip_kernel "no /dev/fuse"

ct_test_workdir ct-auth
mkdir -p "$WORK/docker"
REGISTRY_HOST=''
MODE=${AUTH_DAEMON_MODE:-dedicated}
REG=$WORK/registry
RLOG=$REG/registry.log
export DOCKER_CONFIG=$WORK/docker  # read by nydusify and by the snapshotter started below
export NYDUS_REGISTRY_HTPASSWD=$WORK/htpasswd NYDUS_REGISTRY_LOG_LEVEL=info

# A docker credential helper on the PATH the snapshotter inherits: it logs the server docker/cli
# hands it on stdin and answers with $WORK/helper/answer.json (docker-credential-helpers' format).
mkdir -p "$WORK/helper"
cat >"$WORK/helper/docker-credential-citest" <<HELPER
#!/bin/sh
[ "\$1" = get ] || exit 1
read -r server
echo "\$server" >>"$WORK/helper/calls"
cat "$WORK/helper/answer.json"
HELPER
chmod +x "$WORK/helper/docker-credential-citest"
export PATH="$WORK/helper:$PATH"
CRED_VIA=auths  # set_user writes the docker config's auths entry, or (helper) the helper's answer
# set_user USER PASSWORD: the registry's only account (bcrypt), and the docker config's entry.
set_user() {
  "$PY" -W ignore -c 'import crypt, sys; print(sys.argv[1] + ":" + crypt.crypt(sys.argv[2], crypt.mksalt(crypt.METHOD_BLOWFISH)))' \
    "$1" "$2" >"$NYDUS_REGISTRY_HTPASSWD" || return 1
  grep -q '^[^:]*:\$2b\$' "$NYDUS_REGISTRY_HTPASSWD" || { echo "no bcrypt hash"; return 1; }
  # Written whole, then renamed: the snapshotter may read them at any moment.
  if [ "$CRED_VIA" = kubesecret ]; then
    kube_secret team-a regcred kubernetes.io/dockerconfigjson "$REGISTRY_HOST" "$1" "$2" || return 1
    echo '{}' >"$DOCKER_CONFIG/config.json.tmp"
  elif [ "$CRED_VIA" = kubelet ]; then
    printf '{"kind": "CredentialProviderResponse", "apiVersion": "credentialprovider.kubelet.k8s.io/v1", "cacheKeyType": "Registry", "auth": {"%s": {"username": "%s", "password": "%s"}}}\n' \
      "$REGISTRY_HOST" "$1" "$2" >"$WORK/kubelet/answer.json.tmp" && mv "$WORK/kubelet/answer.json.tmp" "$WORK/kubelet/answer.json" || return 1
    echo '{}' >"$DOCKER_CONFIG/config.json.tmp"
  elif [ "$CRED_VIA" = helper ]; then
    printf '{"ServerURL": "%s", "Username": "%s", "Secret": "%s"}\n' "$REGISTRY_HOST" "$1" "$2" \
      >"$WORK/helper/answer.json.tmp" && mv "$WORK/helper/answer.json.tmp" "$WORK/helper/answer.json" || return 1
    echo '{"credsStore": "citest"}' >"$DOCKER_CONFIG/config.json.tmp"
  else
    printf '{"auths": {"%s": {"auth": "%s"}}}\n' "$REGISTRY_HOST" "$(printf '%s:%s' "$1" "$2" | base64 -w0)" \
      >"$DOCKER_CONFIG/config.json.tmp"
  fi
  mv "$DOCKER_CONFIG/config.json.tmp" "$DOCKER_CONFIG/config.json"
}
# restart_registry USER PASSWORD: the same address and storage, only USER:PASSWORD accepted.
restart_registry() {
  ct_stop_pid "$REGISTRY_PID"; wait "$REGISTRY_PID" 2>/dev/null
  set_user "$1" "$2" || return 1
  NYDUS_REGISTRY_PORT=${REGISTRY_HOST##*:} start_registry "$REG" || return 1
  [ "$(curl -s -o /dev/null -w '%{http_code}' "http://$REGISTRY_HOST/v2/")" = 401 ] || { echo "no auth asked"; return 1; }
  [ "$(curl -s -o /dev/null -w '%{http_code}' -u "$1:$2" "http://$REGISTRY_HOST/v2/")" = 200 ]
}

# ---- the image: busybox-static and 7 random files of 4 MiB (each read by one step) ------------
make_image() {
  local r=b0/rootfs i
  umoci init --layout img && umoci new --image img:base && umoci unpack --image img:base b0 >/dev/null || return 1
  mkdir -p "$r/bin" "$r/data" || return 1
  cp "$BUSYBOX" "$r/bin/busybox" && ln -s busybox "$r/bin/sh" || return 1
  for i in 1 2 3 4 5 6 7; do head -c 4194304 /dev/urandom >"$r/data/f$i.bin"; done
  echo "hello from a private registry" >"$r/data/hello.txt"
  umoci repack --image img:v1 b0
}
step "umoci: busybox-static image with 7 files of 4 MiB" make_image || die "cannot build the image"
want() { (cd b0/rootfs && sha256sum "$@" | sed 's#  #  /#'); }  # the oracle: the source tree

# ---- the registry wants credentials -----------------------------------------------------------
first_registry() {
  set_user placeholder x && start_registry "$REG" && restart_registry alice 'pw-one:1'
}
step "docker-registry with htpasswd (bcrypt) auth: 401 without credentials, 200 with" first_registry || die "no registry"
REF=$REGISTRY_HOST/test/nydus:v1
step "skopeo push --dest-creds + nydusify convert (credentials from \$DOCKER_CONFIG)" sh -c "
  skopeo copy --dest-tls-verify=false --dest-creds 'alice:pw-one:1' oci:img:v1 docker://$REGISTRY_HOST/test/plain:v1 &&
  '$NYDUSIFY' convert --source $REGISTRY_HOST/test/plain:v1 --target $REF --source-insecure --target-insecure --work-dir '$WORK/convert'" ||
  die "push/convert failed"
step "an anonymous pull of the converted manifest is refused (401)" sh -c \
  "[ \"\$(curl -s -o /dev/null -w '%{http_code}' http://$REGISTRY_HOST/v2/test/nydus/manifests/v1)\" = 401 ]"

start_all() { ct_start --daemon-mode "$MODE" --credential-renewal-interval 2s --log-level debug || return 1; ct_wait_proxy; }
step "containerd-nydus-grpc --daemon-mode $MODE (DOCKER_CONFIG, --credential-renewal-interval 2s) + containerd 1.6" start_all ||
  die "no snapshotter/containerd"
step "ctr-remote image rpull --user --snapshotter nydus" ctr-remote --address "$CT_CD_SOCK" image rpull --plain-http \
  --user 'alice:pw-one:1' --snapshotter nydus "$REF" || die "rpull failed"

# A container running all along keeps the image's nydusd (the last snapshot's removal would stop it).
step "ctr run -d: a keeper container (holds the image's nydusd)" ct_ctr run -d --runc-root "$RUNC_ROOT" --snapshotter nydus \
  "$REF" keeper /bin/sh -c 'exec sleep 100000'
run() { ct_ctr run --runc-root "$RUNC_ROOT" --snapshotter nydus --rm "$REF" "c$STEP_NO" /bin/sh -c "$1"; }
# read_right FILE...: a container's sha256 of FILEs equals the source's.
read_right() {
  run "sha256sum $*" >"got$STEP_NO.txt" || return 1
  want "${@#/}" >"want$STEP_NO.txt"
  cat "got$STEP_NO.txt"
  diff "want$STEP_NO.txt" "got$STEP_NO.txt"
}
# blob_gets USER [FROM_LINE]: the registry's "authorized request" log lines of GETs of the nydus
# data blobs (from FROM_LINE on): only nydusd fetches those (containerd takes the bootstrap
# layer alone); they are the blob cache's files. docker-registry 2.8 names the user only on
# failures, so the user is proven by the htpasswd file holding USER's account alone.
blob_gets() {
  local blobs
  [ "$(cut -d: -f1 "$NYDUS_REGISTRY_HTPASSWD")" = "$1" ] || { echo "the registry has other accounts than $1"; return 1; }
  blobs=$(ls "$CT_ROOT/cache" | grep -oE '^[0-9a-f]{64}' | sort -u | sed 's/^/sha256:/' | paste -sd'|')
  [ -n "$blobs" ] || { echo "no blob in the cache"; return 1; }
  tail -n +"${2:-1}" "$RLOG" | grep 'msg="authorized request"' | grep 'http.request.method=GET' |
    grep -E "http.request.uri=\"/v2/test/nydus/blobs/($blobs)\"" | sed 's/.*\(http.request.uri="[^"]*"\).*/\1/'
}
step "ctr run: sha256 of /data/f1.bin and hello.txt equal the source's" read_right /data/f1.bin /data/hello.txt
step "registry log: the nydusd's data blob GETs were authorized (alice: the only account)" sh -c \
  "$(declare -f blob_gets); RLOG='$RLOG' CT_ROOT='$CT_ROOT'; blob_gets alice | tail -3 | grep ."

DAEMON_CFG=''
config_has_auth() {
  # dedicated: config/nydusd-<id>/config.json; shared: config/shared_daemon/<id>/config.json
  DAEMON_CFG=$(ls "$CT_ROOT"/config/nydusd-*/config.json "$CT_ROOT"/config/shared_daemon/*/config.json 2>/dev/null)
  [ "$(echo "$DAEMON_CFG" | grep -c .)" = 1 ] || { echo "want one daemon config: $DAEMON_CFG"; return 1; }
  local want_auth
  want_auth=$(printf '%s' "$1" | base64 -w0)
  "$PY" -c 'import json, sys; c = json.load(open(sys.argv[1]))["device"]["backend"]["config"]; sys.exit(c.get("auth") != sys.argv[2])' \
    "$DAEMON_CFG" "$want_auth" || { echo "backend auth is not base64($1)"; return 1; }
  [ "$(stat -c %a "$DAEMON_CFG")" = 600 ] || { echo "mode $(stat -c %a "$DAEMON_CFG")"; return 1; }
}
step "the daemon config holds backend.config.auth = base64(alice:pw-one:1), mode 0600" config_has_auth 'alice:pw-one:1'

# ---- renewal --------------------------------------------------------------------------------
renewed_to() {  # USER PASSWORD FILE: wait for the renewal, then a not-yet-fetched FILE reads right as USER
  local from _
  from=$(($(wc -l <"$RLOG") + 1))
  for _ in $(seq 100); do config_has_auth "$1:$2" >/dev/null 2>&1 && break; sleep 0.1; done
  config_has_auth "$1:$2" || return 1
  grep 'credential renewal: new registry credentials' "$CT_LOGS/snapshotter.log" | tail -1
  read_right "$3" || return 1
  blob_gets "$1" "$from" | tail -2 | grep . || { echo "no blob GET as $1 after the renewal"; return 1; }
}
step "registry restarted: only bob:pw-two accepted; docker config rewritten" restart_registry bob pw-two
step "renewal (2 s): config + PUT /api/v1/config; unfetched /data/f2.bin reads right, fetched as bob" renewed_to bob pw-two /data/f2.bin

# ---- without renewal: the daemon keeps the old password ----------------------------------------
restart_snapshotter() {
  ct_stop_pid "$CT_SNAP_PID"; wait "$CT_SNAP_PID" 2>/dev/null
  ct_start_snapshotter --daemon-mode "$MODE" --log-level debug "$@" || return 1
  ct_wait_proxy || return 1
  grep 're-attached to the running nydusd' "$CT_LOGS/snapshotter.log" | tail -1 | grep .
}
step "snapshotter restarted with --credential-renewal-interval 0 (re-attaches the nydusd)" restart_snapshotter \
  --credential-renewal-interval 0
step "registry restarted: only carol:pw-three accepted; docker config rewritten" restart_registry carol pw-three
stale_fails() {
  sleep 4  # two renewal intervals of the first snapshotter: nothing renews now
  config_has_auth 'bob:pw-two' || return 1
  if run "sha256sum /data/f3.bin" >"got$STEP_NO.txt" 2>&1 && diff -q <(want data/f3.bin) "got$STEP_NO.txt"; then
    echo "read right without renewal"; return 1
  fi
  cat "got$STEP_NO.txt"
  # The registry's words: bob's password failed on a blob GET.
  tail -n 200 "$RLOG" | grep 'error authenticating user \\"bob\\": authentication failure' |
    grep 'http.request.uri="/v2/test/nydus/blobs/sha256:' | tail -1 | cut -c1-200 | grep .
}
step "no renewal: unfetched /data/f3.bin is not readable with bob's stale password" stale_fails
step "snapshotter restarted with --credential-renewal-interval 2s" restart_snapshotter --credential-renewal-interval 2s
step "renewal of the adopted daemon: /data/f3.bin now reads right, fetched as carol" renewed_to carol pw-three /data/f3.bin

# ---- a credential helper (credsStore) ----------------------------------------------------------
CRED_VIA=helper
step "registry restarted: only dave:pw-four accepted; docker config {credsStore: citest}, the helper knows dave" \
  restart_registry dave pw-four
helper_asked() {  # the helper ran and was handed the registry's host on stdin
  tail -1 "$WORK/helper/calls" | grep -Fx "$REGISTRY_HOST" || { echo "helper calls: $(cat "$WORK/helper/calls" 2>&1)"; return 1; }
}
step "renewal through docker-credential-citest: unfetched /data/f4.bin reads right, fetched as dave" \
  renewed_to dave pw-four /data/f4.bin
step "the helper was run with the registry host on stdin" helper_asked

# ---- a kubelet credential provider plugin ------------------------------------------------------
mkdir -p "$WORK/kubelet/bin"
cat >"$WORK/kubelet/bin/nydus-test-provider" <<PLUGIN
#!/bin/sh
echo "args: \$* env: \$TEST_ENV" >>"$WORK/kubelet/requests"
cat >>"$WORK/kubelet/requests"; echo >>"$WORK/kubelet/requests"
cat "$WORK/kubelet/answer.json"
PLUGIN
chmod +x "$WORK/kubelet/bin/nydus-test-provider"
cat >"$WORK/kubelet/config.yaml" <<YAML
apiVersion: kubelet.config.k8s.io/v1
kind: CredentialProviderConfig
providers:
  - name: nydus-test-provider
    matchImages:
      - "$REGISTRY_HOST"
    defaultCacheDuration: "0s"
    apiVersion: credentialprovider.kubelet.k8s.io/v1
    args: [get-credentials]
    env:
      - name: TEST_ENV
        value: from-config
YAML
cat >"$WORK/snapshotter.toml" <<TOML
[remote.auth]
enable_kubelet_credential_providers = true
credential_provider_config = "$WORK/kubelet/config.yaml"
credential_provider_bin_dir = "$WORK/kubelet/bin"
TOML
CRED_VIA=kubelet
step "snapshotter restarted with config.toml [remote.auth] kubelet credential providers" restart_snapshotter \
  --config "$WORK/snapshotter.toml" --credential-renewal-interval 2s
step "registry restarted: only erin:pw-five accepted; docker config {}, the plugin knows erin" restart_registry erin pw-five
step "renewal through the kubelet plugin: unfetched /data/f5.bin reads right, fetched as erin" \
  renewed_to erin pw-five /data/f5.bin
plugin_asked() {  # the plugin got the config's args and env, and the image on stdin as the API says
  local req
  grep -Fx 'args: get-credentials env: from-config' "$WORK/kubelet/requests" | head -1 | grep . || return 1
  req=$(grep '^{' "$WORK/kubelet/requests" | tail -1)
  echo "$req"
  "$PY" -c 'import json, sys; r = json.loads(sys.argv[1]); sys.exit(not (r["kind"] == "CredentialProviderRequest" and
    r["apiVersion"] == "credentialprovider.kubelet.k8s.io/v1" and r["image"] == sys.argv[2]))' "$req" "$REF"
}
step "the plugin was run with its args, env and a CredentialProviderRequest for $REF" plugin_asked

# ---- Kubernetes image pull secrets, watched on the API server -----------------------------------
mkdir -p "$WORK/kube/secrets"
# kube_secret NAMESPACE NAME TYPE HOST USER PASSWORD: the Secret object the API server holds, replaced whole.
kube_secret() {
  "$PY" -c 'import base64, json, sys
ns, name, typ, host, user, pw, out = sys.argv[1:]
cfg = {"auths": {host: {"auth": base64.b64encode((user + ":" + pw).encode()).decode()}}}
s = {"apiVersion": "v1", "kind": "Secret", "type": typ, "metadata": {"namespace": ns, "name": name},
     "data": {".dockerconfigjson": base64.b64encode(json.dumps(cfg).encode()).decode()}}
json.dump(s, open(out + ".tmp", "w"))' "$@" "$WORK/kube/secrets/$1_$2.json" &&
    mv "$WORK/kube/secrets/$1_$2.json.tmp" "$WORK/kube/secrets/$1_$2.json"
}
KUBE_PID=''
start_kube_api() {
  openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1 \
    -keyout "$WORK/kube/key.pem" -out "$WORK/kube/ca.pem" 2>/dev/null || return 1
  # Decoys: an Opaque secret and another registry's secret, both with wrong credentials for this one.
  kube_secret team-b opaque Opaque "$REGISTRY_HOST" mallory wrong || return 1
  kube_secret team-c other kubernetes.io/dockerconfigjson other.example:5000 mallory wrong || return 1
  "$PY" "$LIB_DIR/kube_api_stub.py" --secrets-dir "$WORK/kube/secrets" --cert "$WORK/kube/ca.pem" \
    --key "$WORK/kube/key.pem" --token kube-token-1 --port-file "$WORK/kube/port" --log "$WORK/kube/requests" \
    >"$WORK/kube/stub.log" 2>&1 &
  KUBE_PID=$!
  trap 'ct_stop_pid "$KUBE_PID"; ct_test_cleanup' EXIT
  local _
  for _ in $(seq 100); do [ -s "$WORK/kube/port" ] && break; sleep 0.1; done
  [ -s "$WORK/kube/port" ] || { cat "$WORK/kube/stub.log"; return 1; }
  cat >"$WORK/kube/kubeconfig" <<KUBECONFIG
apiVersion: v1
kind: Config
current-context: test
contexts:
  - name: test
    context: {cluster: stub, user: snapshotter}
clusters:
  - name: stub
    cluster:
      server: https://127.0.0.1:$(cat "$WORK/kube/port")
      certificate-authority-data: $(base64 -w0 "$WORK/kube/ca.pem")
users:
  - name: snapshotter
    user: {token: kube-token-1}
KUBECONFIG
}
step "an HTTPS API server holding image pull secrets (bearer token; an Opaque and another host's decoys)" start_kube_api
CRED_VIA=kubesecret
cat >"$WORK/snapshotter.toml" <<TOML
[remote.auth]
enable_kubeconfig_keychain = true
kubeconfig_path = "$WORK/kube/kubeconfig"
TOML
step "registry restarted: only frank:pw-six accepted; docker config {}, the secret team-a/regcred knows frank" \
  restart_registry frank pw-six
step "snapshotter restarted with config.toml [remote.auth] enable_kubeconfig_keychain" restart_snapshotter \
  --config "$WORK/snapshotter.toml" --credential-renewal-interval 2s
step "renewal through the kube secret: unfetched /data/f6.bin reads right, fetched as frank" \
  renewed_to frank pw-six /data/f6.bin
step "registry restarted: only grace:pw-seven accepted; the secret changed on the API server (a watch event)" \
  restart_registry grace pw-seven
watched_change() {  # the change came by the watch: one list, then watches; every request with the token
  renewed_to grace pw-seven /data/f7.bin || return 1
  cat "$WORK/kube/requests"
  [ "$(grep -c 'watch=true' "$WORK/kube/requests")" -ge 1 ] || return 1
  [ "$(grep -vc 'watch=true' "$WORK/kube/requests")" = 1 ] || { echo "listed more than once"; return 1; }
  ! grep -q 'auth=bad' "$WORK/kube/requests" || return 1
  grep -q 'fieldSelector=type%3Dkubernetes.io%2Fdockerconfigjson' "$WORK/kube/requests"
}
step "the watch delivered it (one list, then watches; bearer token; the dockerconfigjson field selector)" watched_change

no_secret_logged() {
  local f hits=0 c pats=(pw-one pw-two pw-three pw-four pw-five pw-six pw-seven)
  for c in 'alice:pw-one:1' 'bob:pw-two' 'carol:pw-three' 'dave:pw-four' 'erin:pw-five' 'frank:pw-six' 'grace:pw-seven'; do pats+=("$(printf '%s' "$c" | base64 -w0)"); done
  for f in "$CT_LOGS"/*.log "$CT_ROOT"/logs/*/*.log; do
    [ -f "$f" ] || continue
    for c in "${pats[@]}"; do grep -lF -- "$c" "$f" && hits=1; done
  done
  return $hits
}
step "no password or base64 credential in the snapshotter's or nydusd's logs" no_secret_logged
step "the snapshotter logged no internal error" sh -c "! grep -E ' (error|critical) ' '$CT_LOGS/snapshotter.log'"

summary
