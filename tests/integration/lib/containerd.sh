# shellcheck shell=bash
# A private containerd 1.6 (Debian's) with our containerd-nydus-grpc as its
# [proxy_plugins.nydus] snapshotter, for scripts that run real containers
# (scripts/demo.sh; tests may source it too). Everything lives below $CT_WORK:
# containerd's root/state/socket, the snapshotter's root/socket, logs.
# Source it after setting CT_WORK and CT_BIN (the directory with our binaries);
# it defines the functions below and the CT_* paths they use.

CT_ROOT=$CT_WORK/snapshotter
CT_SNAP_SOCK=$CT_WORK/snapshotter.sock
CT_CD=$CT_WORK/containerd
CT_CD_SOCK=$CT_CD/containerd.sock
CT_LOGS=$CT_WORK/logs
CT_SNAP_PID='' CT_CD_PID=''

ct_ctr() { ctr --address "$CT_CD_SOCK" "$@"; }

# ct_missing: prints why containers cannot run here (nothing when they can).
ct_missing() {
  local t
  [ "$(id -u)" -eq 0 ] || { echo "not root (containerd, mounts)"; return; }
  for t in containerd containerd-shim-runc-v2 ctr ctr-remote runc; do
    command -v $t >/dev/null || { echo "$t is not installed (scripts/setup.sh installs it)"; return; }
  done
  [ -e /dev/fuse ] || { echo "this kernel has no /dev/fuse"; return; }
  grep -qw overlay /proc/filesystems || modprobe overlay 2>/dev/null || true
  grep -qw overlay /proc/filesystems || echo "this kernel has no overlayfs"
}

# ct_nydusd_template: the config a daemon's is made from, for a plain-HTTP
# registry on loopback (the snapshotter fills in host and repo per image).
ct_nydusd_template() {
  cat >"$CT_WORK/nydusd-config.json" <<'JSON'
{
  "device": {
    "backend": {"type": "registry", "config": {"scheme": "http", "timeout": 5, "connect_timeout": 5, "retry_limit": 2}},
    "cache": {"type": "blobcache"}
  },
  "mode": "direct", "digest_validate": false, "iostats_files": false, "enable_xattr": true,
  "fs_prefetch": {"enable": false}
}
JSON
}

# ct_start_snapshotter [flags...]: the snapshotter alone (e.g. again after a kill -9;
# its log is appended to).
ct_start_snapshotter() {
  local _
  mkdir -p "$CT_LOGS"
  rm -f "$CT_SNAP_SOCK"
  "$CT_BIN/containerd-nydus-grpc" --root "$CT_ROOT" --address "$CT_SNAP_SOCK" --nydusd "$CT_BIN/nydusd" \
    --nydusd-config "$CT_WORK/nydusd-config.json" "$@" >>"$CT_LOGS/snapshotter.log" 2>&1 &
  CT_SNAP_PID=$!
  for _ in $(seq 100); do [ -S "$CT_SNAP_SOCK" ] && return 0; sleep 0.1; done
  cat "$CT_LOGS/snapshotter.log"; return 1
}

# ct_start [snapshotter flags...]: the snapshotter, then containerd using it.
# CT_CRI=HOST:PORT: containerd's CRI plugin on too (namespace k8s.io), pulling with
# the nydus snapshotter and its labels, HOST:PORT a plain-HTTP registry.
ct_start() {
  local _
  mkdir -p "$CT_LOGS" "$CT_CD/root" "$CT_CD/state"
  ct_nydusd_template
  ct_start_snapshotter "$@" || return 1
  cat >"$CT_CD/config.toml" <<TOML
version = 2
root = "$CT_CD/root"
state = "$CT_CD/state"
$([ -n "${CT_CRI:-}" ] || echo 'disabled_plugins = ["io.containerd.grpc.v1.cri"]')
[grpc]
  address = "$CT_CD_SOCK"
[ttrpc]
  address = "$CT_CD/containerd.sock.ttrpc"
[proxy_plugins.nydus]
  type = "snapshot"
  address = "$CT_SNAP_SOCK"
TOML
  [ -n "${CT_CRI:-}" ] && cat >>"$CT_CD/config.toml" <<TOML
[plugins."io.containerd.grpc.v1.cri"]
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "nydus"
    disable_snapshot_annotations = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "$CT_CD/cni/bin"
    conf_dir = "$CT_CD/cni/conf"
  [plugins."io.containerd.grpc.v1.cri".registry.mirrors."$CT_CRI"]
    endpoint = ["http://$CT_CRI"]
TOML
  containerd --config "$CT_CD/config.toml" >"$CT_LOGS/containerd.log" 2>&1 &
  CT_CD_PID=$!
  for _ in $(seq 100); do ct_ctr version >/dev/null 2>&1 && return 0; sleep 0.2; done
  tail -30 "$CT_LOGS/containerd.log"; return 1
}

# ct_wait_proxy: containerd dials a proxy snapshotter it found absent with gRPC's
# backoff; a Prepare through containerd is what tells it reaches ours again.
ct_wait_proxy() {
  local _
  for _ in $(seq 60); do
    ct_ctr snapshots --snapshotter nydus prepare "probe-$$" >/dev/null 2>&1 &&
      { ct_ctr snapshots --snapshotter nydus rm "probe-$$"; return 0; }
    sleep 0.5
  done
  echo "containerd does not reach the snapshotter"; return 1
}

# ct_pids PATTERN ARG: pids of processes matching PATTERN whose command line holds ARG.
ct_pids() {
  local p
  for p in $(pgrep -f "$1"); do
    { tr '\0' ' ' <"/proc/$p/cmdline"; } 2>/dev/null | grep -qF -- "$2" && echo "$p"
  done
}

ct_stop_pid() {
  local p=$1 _
  [ -n "$p" ] || return 0
  kill -TERM "$p" 2>/dev/null || return 0
  for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || return 0; sleep 0.1; done
  kill -KILL "$p" 2>/dev/null
}

# ct_stop: every task, container, shim, containerd, the snapshotter and its
# nydusd daemons started below $CT_WORK, then the mounts left there.
ct_stop() {
  local p c m
  if [ -n "$CT_CD_PID" ] && kill -0 "$CT_CD_PID" 2>/dev/null; then
    for c in $(ct_ctr task ls -q 2>/dev/null); do ct_ctr task kill -s KILL "$c" >/dev/null 2>&1; done
    sleep 0.5
    for c in $(ct_ctr task ls -q 2>/dev/null); do ct_ctr task rm -f "$c" >/dev/null 2>&1; done
    for c in $(ct_ctr containers ls -q 2>/dev/null); do ct_ctr containers rm "$c" >/dev/null 2>&1; done
  fi
  for p in $(ct_pids containerd-shim "$CT_CD_SOCK"); do ct_stop_pid "$p"; done
  ct_stop_pid "$CT_CD_PID"
  ct_stop_pid "$CT_SNAP_PID"
  for p in $(ct_pids nydusd "$CT_ROOT/"); do ct_stop_pid "$p"; done
  CT_CD_PID='' CT_SNAP_PID=''
  while read -r m; do
    [ -n "$m" ] && umount -l "$m" 2>/dev/null
  done < <(awk -v d="$CT_WORK" '$2 == d || index($2, d "/") == 1 {print $2}' /proc/self/mounts | sort -r)
}
