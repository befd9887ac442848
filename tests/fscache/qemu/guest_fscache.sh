#!/bin/sh
# /init of the fscache real-kernel test guest (busybox sh, PID 1). Built into
# the initramfs by tests/integration/fscache_qemu.sh, which also made:
#   /images/boot1, /images/boot2 (same image), /images/blobs/<id>,
#   /images/noblobs/ (empty: a backend that lacks the blob)
#   /entries/*.json     blob cache entries for /api/v2/blobs
#   /expected/manifest  tree-manifest of the source tree
#   /srv/v2/lib/img/blobs/sha256:<id>  the blob, for busybox httpd as a registry
#   /etc/bench          (present: also run the benchmark) and /dev/vdb, the
#                       same image as one flat EROFS disk (export --block)
# Prints one "RESULT <scenario>: OK|FAIL ..." line per scenario, "BENCH ..."
# lines in benchmark mode, then powers off.
. /lib/guest_lib.sh
guest_setup
ip link set lo up
mkdir -p /run /mnt/img1 /mnt/a /mnt/b /mnt/broken /mnt/reg /mnt/nope /mnt/bench /mnt/fuse /mnt/native /cache/fscache

log() { echo "guest: $*"; }

wait_sock() {  # wait_sock PATH: the daemon's API socket appears
  i=0
  while [ ! -S "$1" ] && [ $i -lt 100 ]; do usleep 100000; i=$((i + 1)); done
  [ -S "$1" ]
}

# metric SOCK NAME: one counter of the daemon's fscache stats ("fscache"."stats" of
# GET /api/v1/daemon: upstream's fscache daemon has no /api/v1/metrics).
metric() {
  nydusctl --sock "$1" --raw info | sed -n "s/.*\"$2\":\([0-9]*\).*/\1/p"
}

# check_tree NAME DIR: the mounted tree equals the source.
check_tree() {
  if tree-manifest "$2" > /tmp/$1.manifest 2>/tmp/$1.err && cmp -s /expected/manifest /tmp/$1.manifest; then
    result "$1" OK
  else
    result "$1" FAIL "$(cat /tmp/$1.err) $(diff /expected/manifest /tmp/$1.manifest 2>&1 | head -5 | tr '\n' ' ')"
  fi
}

now() { cut -d' ' -f1 /proc/uptime; }

log "starting nydusd (fscache)"
nydusctl supervise --path /run/sup.sock > /tmp/sup.log 2>&1 &
nydusd singleton --fscache /cache/fscache --fscache-threads 4 --apisock /run/n1.sock --id n1 \
  --supervisor /run/sup.sock --log-file /tmp/n1.log &
N1=$!
if ! wait_sock /run/n1.sock; then
  result daemon_start FAIL "no API socket; $(tail -5 /tmp/n1.log | tr '\n' ' ')"
  guest_poweroff
fi
result daemon_start OK
S=/run/n1.sock
for e in img1 a b broken reg; do
  nydusctl --sock $S blob add /entries/$e.json > /dev/null || result register_$e FAIL
done

# 1. A mount equals the source: every file's bytes, mode, owner, times, xattrs, links.
if mount -t erofs none -o fsid=img1 /mnt/img1; then
  check_tree mount_compare /mnt/img1
else
  result mount_compare FAIL "mount -o fsid=img1 failed"
fi

# 2. Remount: the kernel's cache files are reused, nothing is fetched again.
reads1=$(metric $S reads)
umount /mnt/img1
echo 3 > /proc/sys/vm/drop_caches
if mount -t erofs none -o fsid=img1 /mnt/img1 && tree-manifest /mnt/img1 > /tmp/re.manifest &&
   cmp -s /expected/manifest /tmp/re.manifest; then
  reads2=$(metric $S reads)
  if [ "$reads1" = "$reads2" ]; then result remount_no_fetch OK
  else result remount_no_fetch FAIL "READs went from $reads1 to $reads2"; fi
else
  result remount_no_fetch FAIL "remount or compare failed"
fi

# 3. Two images sharing a domain: their common blob is opened once.
opens1=$(metric $S opens)
if mount -t erofs none -o domain_id=dom,fsid=a /mnt/a; then
  opens2=$(metric $S opens)
  if mount -t erofs none -o domain_id=dom,fsid=b /mnt/b; then
    opens3=$(metric $S opens)
    check_tree shared_domain_a /mnt/a
    check_tree shared_domain_b /mnt/b
    if [ $((opens2 - opens1)) -eq 2 ] && [ $((opens3 - opens2)) -eq 1 ]; then result shared_domain_blob_once OK
    else result shared_domain_blob_once FAIL "opens $opens1 -> $opens2 -> $opens3"; fi
  else
    result shared_domain_b FAIL "mount b failed"
  fi
else
  result shared_domain_a FAIL "mount a failed"
fi
if mount -t erofs none -o domain_id=dom,fsid=a /mnt/nope 2>/tmp/dup.err; then
  result duplicate_fsid_in_domain FAIL "mounted twice"
  umount /mnt/nope
else
  result duplicate_fsid_in_domain OK
fi

# 4. An fsid nobody registered: the mount fails, the daemon lives on.
if mount -t erofs none -o fsid=nobody /mnt/nope 2>/tmp/nope.err; then
  result unknown_fsid FAIL "mounted"
  umount /mnt/nope
elif kill -0 $N1; then
  result unknown_fsid OK
else
  result unknown_fsid FAIL "daemon died"
fi

# 5. A blob the backend does not have: reads fail with EIO, never hang; the
# daemon keeps serving the other mounts.
if mount -t erofs none -o fsid=broken /mnt/broken; then
  if timeout 60 tree-manifest /mnt/broken > /tmp/broken.manifest 2>/tmp/broken.err; then
    result bad_blob_eio FAIL "read a blob the backend lacks"
  elif grep -q "READ-ERROR:Input/output error" /tmp/broken.manifest && kill -0 $N1; then
    result bad_blob_eio OK
  else
    result bad_blob_eio FAIL "$(grep -m3 ERROR /tmp/broken.manifest | tr '\n' ' ')"
  fi
  umount /mnt/broken
else
  result bad_blob_eio FAIL "mount failed"
fi
echo 3 > /proc/sys/vm/drop_caches
check_tree still_serving /mnt/img1

# 6. Failover: the supervisor holds /dev/cachefiles; the daemon is SIGKILLed
# while a READ it took waits on a stalled registry; a new daemon takes over
# with `restore` and the blocked reader completes with the right bytes.
busybox httpd -f -p 127.0.0.1:8080 -h /srv &
HTTPD=$!
usleep 300000
if mount -t erofs none -o fsid=reg /mnt/reg; then
  nydusctl --sock $S sendfd > /dev/null || result failover_sendfd FAIL
  kill -STOP $HTTPD
  reads0=$(metric $S reads)
  tree-manifest /mnt/reg > /tmp/reg.manifest 2>/tmp/reg.err &
  READER=$!
  i=0
  while [ "$(metric $S reads)" = "$reads0" ] && [ $i -lt 100 ]; do usleep 100000; i=$((i + 1)); done
  usleep 500000
  # The scenario only means something if the reader is blocked on a READ the
  # daemon has taken.
  blocked=no
  kill -0 $READER 2>/dev/null && [ "$(metric $S reads)" != "$reads0" ] && blocked=yes
  kill -9 $N1
  wait $N1 2>/dev/null
  kill -CONT $HTTPD
  nydusd singleton --fscache /cache/fscache --fscache-threads 4 --apisock /run/n2.sock --id n2 \
    --supervisor /run/sup.sock --upgrade --log-file /tmp/n2.log &
  N2=$!
  S=/run/n2.sock
  if wait_sock $S && nydusctl --sock $S takeover > /dev/null && nydusctl --sock $S start > /dev/null; then
    if timeout 120 sh -c "while kill -0 $READER 2>/dev/null; do usleep 100000; done"; then
      wait $READER
      rc=$?
      served=$(metric $S reads)
      if [ $blocked != yes ]; then result failover_restore FAIL "the reader was not blocked on a taken READ at the kill"
      elif [ $rc -eq 0 ] && cmp -s /expected/manifest /tmp/reg.manifest && [ "${served:-0}" -gt 0 ]; then
        result failover_restore OK
      else result failover_restore FAIL "reader exit $rc, new daemon READs ${served:-?}: $(head -3 /tmp/reg.err | tr '\n' ' ')"; fi
    else
      result failover_restore FAIL "reader still blocked 120 s after the takeover"
    fi
  else
    result failover_restore FAIL "takeover failed: $(tail -5 /tmp/n2.log | tr '\n' ' ')"
  fi
  # Every mount of the dead daemon is served by the new one (objects reopened).
  echo 3 > /proc/sys/vm/drop_caches
  check_tree after_takeover_img1 /mnt/img1
  check_tree after_takeover_domain /mnt/b
else
  result failover_restore FAIL "mount of the registry image failed"
fi

# 7. Benchmark: the same image through fscache, FUSE and a native EROFS disk.
# /etc/bench lists "PHASE SUBDIR" lines: read every file below SUBDIR (". " for
# all). Each mode reads the phases cold (nothing cached), then warm (page cache
# dropped, data in that mode's cache), then walks the tree with lstat.
if [ -e /etc/bench ]; then
  timed() {  # timed CMD...: seconds it took, page cache dropped first
    echo 3 > /proc/sys/vm/drop_caches
    _t0=$(now)
    "$@" > /dev/null 2>&1
    _t1=$(now)
    echo "$_t1 $_t0" | awk '{printf "%.2f", $1 - $2}'
  }
  readall() { find "$1" -type f -exec cat {} + ; }
  bench_mode() {  # bench_mode MODE MNT
    for temp in cold warm; do
      while read -r phase sub; do
        [ -n "$phase" ] && echo "BENCH $1 ${temp}_$phase $(timed readall "$2/$sub")"
      done < /etc/bench
    done
    echo "BENCH $1 stat_walk $(timed ls -laR "$2")"
  }
  nydusctl --sock $S blob add /entries/bench.json > /dev/null
  mount -t erofs none -o fsid=bench /mnt/bench && bench_mode fscache /mnt/bench
  nydusd --bootstrap /images/boot1 --config /entries/fuse.json --mountpoint /mnt/fuse --log-file /tmp/fuse.log &
  i=0
  while ! grep -q " /mnt/fuse " /proc/mounts && [ $i -lt 100 ]; do usleep 100000; i=$((i + 1)); done
  bench_mode fuse /mnt/fuse
  if [ -b /dev/vdb ] && mount -t erofs -o ro /dev/vdb /mnt/native; then bench_mode erofs_disk /mnt/native; fi
fi

# 8. Unregistering a domain culls the kernel's cache files nothing uses any
# more (they live in <dir>/cache/Ierofs,<domain>/@<fan-out>/D<cookie>).
umount /mnt/a /mnt/b
before=$(find /cache/fscache/cache/Ierofs,dom -name 'D*' -type f 2>/dev/null | wc -l)
if nydusctl --sock $S blob rm --domain dom > /dev/null; then
  after=$(find /cache/fscache/cache/Ierofs,dom -name 'D*' -type f 2>/dev/null | wc -l)
  if [ "$before" -eq 3 ] && [ "$after" -eq 0 ] && [ "$(nydusctl --sock $S --raw blob list --domain dom)" = "[]" ]; then
    result delete_culls_cache_files OK
  else
    result delete_culls_cache_files FAIL "cache files in the domain: $before before, $after after"
  fi
else
  result delete_culls_cache_files FAIL "blob rm failed"
fi

umount /mnt/img1 /mnt/reg /mnt/bench /mnt/fuse /mnt/native 2>/dev/null
log "nydusd log tail:"
tail -3 /tmp/n1.log
result done OK
guest_poweroff
