#!/usr/bin/env bash
# fscache mode on a real kernel: boots a Linux 6.12 guest (QEMU TCG; kernel built
# from Debian's linux-source-6.12 with EROFS over fscache on-demand, cached in
# /var/cache/nydus-cpp/kernel) with an ext4 cache disk, and inside it runs
# tests/fscache/qemu/guest_fscache.sh against our nydusd: an awkward tree
# mounted with `mount -t erofs none -o fsid=...` compared entry by entry with
# the source (bytes, modes, owners, ns mtimes, xattrs, links), remount without
# refetching, two images sharing a domain, an unknown fsid, a blob the backend
# lacks (EIO, no hang), and failover: SIGKILL mid-READ, takeover from the
# supervisor, `restore`, the blocked reader completing with the right bytes;
# unregistering a domain culls its cache files.
# One RESULT line per scenario; any FAIL, missing line or timeout fails.
#   FSCACHE_TREE=DIR use DIR as the source tree instead of an awkward one
#   FSCACHE_BENCH="PHASE SUBDIR;..."  also run the benchmark (bench/fscache.sh);
#                    BENCH_OUT=FILE receives its BENCH lines
#   KEEP_WORK=1      keep the work dir (console log, initramfs)
set -uo pipefail
. "$(dirname "$0")/lib/common.sh"

[ "$(id -u)" -eq 0 ] || skip "needs root (apt-get, kernel build cache in /var/cache, tmpfs)"
need_nydus_image
QEMU_DIR=$NYDUS_SOURCE_DIR/tests/fscache/qemu
for b in nydusd nydusctl tree-manifest; do
  [ -x "$NYDUS_BIN_DIR/$b" ] || die "$b not found in $NYDUS_BIN_DIR (build first)"
done

WORK=$(mktemp -d /var/tmp/nydus-fscache-qemu.XXXXXX)
LOG_DIR=$WORK
cleanup() {
  umount "$WORK/srcfs" 2>/dev/null
  if [ "${KEEP_WORK:-0}" = 1 ]; then echo "kept $WORK"; return; fi
  rm -rf "$WORK"
}
trap cleanup EXIT

KERNEL=$("$QEMU_DIR/build_kernel.sh" | tail -n1) || die "kernel build failed"
[ -s "$KERNEL" ] || die "no kernel image"
echo "kernel: $KERNEL"

# The source tree on tmpfs (ext4 cannot hold its big xattrs).
mkdir -p "$WORK/srcfs" "$WORK/root/images/blobs" "$WORK/root/images/noblobs" "$WORK/root/entries" \
  "$WORK/root/expected" "$WORK/root/etc"
if [ -n "${FSCACHE_TREE:-}" ]; then
  SRC=$FSCACHE_TREE
else
  mount -t tmpfs -o size=512m,mode=0755 tmpfs "$WORK/srcfs" || die "cannot mount tmpfs"
  SRC=$WORK/srcfs/tree
  step "make awkward tree" "$PY" "$LIB_DIR/make_tree.py" --small "$SRC" || die "make_tree.py failed"
fi
IMG=$WORK/root/images
step "nydus-image create" "$NYDUS_IMAGE" create --fs-version 6 --compressor zstd -B "$IMG/boot1" \
  -D "$IMG/blobs" "$SRC" || die "create failed"
cp "$IMG/boot1" "$IMG/boot2"
BLOB=$(ls "$IMG/blobs")
[ "$(echo "$BLOB" | wc -l)" -eq 1 ] || die "expected one blob, got: $BLOB"
step "source manifest" sh -c "'$NYDUS_BIN_DIR/tree-manifest' '$SRC' > '$WORK/root/expected/manifest'" ||
  die "tree-manifest of the source failed"
# The registry the failover scenario reads from (busybox httpd serves files, with Range).
mkdir -p "$WORK/root/srv/v2/lib/img/blobs"
cp "$IMG/blobs/$BLOB" "$WORK/root/srv/v2/lib/img/blobs/sha256:$BLOB"

# entry ID DOMAIN BACKEND_JSON WORK_DIR BOOT: a blob cache entry as nydus-snapshotter sends it.
entry() {
  cat > "$WORK/root/entries/$1.json" <<JSON
{"type": "bootstrap", "id": "$1", "domain_id": "$2",
 "config_v2": {"version": 2, "id": "$1", "backend": $3,
               "cache": {"type": "fscache", "fscache": {"work_dir": "$4"}},
               "metadata_path": "/images/$5"}}
JSON
}
LOCAL='{"type": "localfs", "localfs": {"dir": "/images/blobs"}}'
entry img1 "" "$LOCAL" /cache/fscache boot1
entry a dom "$LOCAL" /cache/fscache boot1
entry b dom "$LOCAL" /cache/fscache boot2
entry broken "" '{"type": "localfs", "localfs": {"dir": "/images/noblobs"}}' /cache/broken boot1
entry reg "" '{"type": "registry", "registry": {"scheme": "http", "host": "127.0.0.1:8080", "repo": "lib/img",
  "timeout": 120, "retry_limit": 2}}' /cache/reg boot1
entry bench "" "$LOCAL" /cache/bench boot1
cat > "$WORK/root/entries/fuse.json" <<'JSON'
{"device": {"backend": {"type": "localfs", "config": {"dir": "/images/blobs"}},
            "cache": {"type": "blobcache", "config": {"work_dir": "/cache/fuse"}}},
 "mode": "direct", "enable_xattr": true}
JSON

DISKS=()
# Room for every scenario's kernel cache files and blob caches (sparse on the host).
TREE_MB=$(( $(du -sm "$SRC" | cut -f1) + 1 ))
truncate -s $((512 + 12 * TREE_MB))M "$WORK/cache.img"
mkfs.ext4 -q -F "$WORK/cache.img" || die "mkfs.ext4 failed"
DISKS+=(--disk "$WORK/cache.img")
if [ -n "${FSCACHE_BENCH:-}" ]; then
  echo "$FSCACHE_BENCH" | tr ';' '\n' > "$WORK/root/etc/bench"
  step "export --block (native EROFS disk for the benchmark)" "$NYDUS_IMAGE" export --block \
    -B "$IMG/boot1" --blob-dir "$IMG/blobs" -O "$WORK/native.img" || die "export failed"
  DISKS+=(--disk "$WORK/native.img")
fi

step "initramfs" "$QEMU_DIR/make_initramfs.sh" "$WORK/initramfs.cpio.gz" "$QEMU_DIR/guest_fscache.sh" \
  "$QEMU_DIR/guest_lib.sh:/lib/guest_lib.sh" "$NYDUS_BIN_DIR/nydusd" "$NYDUS_BIN_DIR/nydusctl" \
  "$NYDUS_BIN_DIR/tree-manifest" "$WORK/root/images:/images" "$WORK/root/entries:/entries" \
  "$WORK/root/expected:/expected" "$WORK/root/srv:/srv" "$WORK/root/etc:/etc" || die "initramfs failed"

t0=$SECONDS
rc=0
"$QEMU_DIR/run_guest.sh" --kernel "$KERNEL" --initrd "$WORK/initramfs.cpio.gz" "${DISKS[@]}" \
  --mem $((1536 + 3 * TREE_MB)) \
  --timeout "${FSCACHE_GUEST_TIMEOUT:-900}" --log "$WORK/console.log" > /dev/null || rc=$?
echo "guest ran $((SECONDS - t0)) s (exit $rc)"
grep -E '^(RESULT|BENCH) ' "$WORK/console.log"

EXPECTED=(daemon_start mount_compare remount_no_fetch shared_domain_a shared_domain_b shared_domain_blob_once
          duplicate_fsid_in_domain unknown_fsid bad_blob_eio still_serving failover_restore
          after_takeover_img1 after_takeover_domain delete_culls_cache_files done)
[ "$rc" -eq 0 ] || fail_step "guest" "run_guest.sh exited with $rc (124: timeout, 3: kernel panic)"
while read -r line; do
  fail_step "${line#RESULT }" "in the guest"
done < <(grep '^RESULT .*: FAIL' "$WORK/console.log")
for name in "${EXPECTED[@]}"; do
  if grep -q "^RESULT $name: OK" "$WORK/console.log"; then PASSES=$((PASSES + 1))
  elif ! grep -q "^RESULT $name: " "$WORK/console.log"; then fail_step "$name" "no RESULT line"; fi
done
if [ "$FAILS" -gt 0 ]; then
  echo "---- console (last 60 lines) ----"
  tail -n 60 "$WORK/console.log"
  cp "$WORK/console.log" /var/tmp/nydus-fscache-qemu.console.log && echo "console log: /var/tmp/nydus-fscache-qemu.console.log"
fi
[ -n "${BENCH_OUT:-}" ] && grep '^BENCH ' "$WORK/console.log" > "$BENCH_OUT"
summary
