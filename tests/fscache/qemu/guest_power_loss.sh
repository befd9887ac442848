#!/bin/sh
# /init of the power-loss test guest (busybox sh, PID 1). Built into the
# initramfs by tests/integration/power_loss.sh, which also made:
#   /dev/vda   an ext4 disk; it is used only through a dm-flakey device over it
#   /dev/vdb   a scratch "tape": the cache files as they were after each cut
#              are copied there (round R at R * 64 MiB: the chunk map at +0,
#              the data file at +1 MiB) for the host to check chunk by chunk
#   /images/boot, /images/blobs/<id>   the image and its blob (localfs backend)
#   /expected/files, /expected/sums    the tree's regular files; their sha256
#   /expected/nydusd.json              the daemon config, work_dir @CACHE@
#   /expected/blob_id
#
# A power cut here: the flakey table is switched to drop_writes (from then on
# every write and flush to the disk "succeeds" and is lost), nydusd is killed,
# the fs unmounted (its page cache, with every write not on the disk yet, goes
# away), the table switched back and the fs mounted again (journal replay):
# the disk is left as a power cut at that moment would leave it.
#
# Each round fills a fresh blob cache on that fs through nydusd (FUSE), cuts
# the power, copies the cache files to the tape, restarts nydusd on the same
# cache and compares every file with the source. Prints "TAPE R NAME MAP DATA"
# (sizes in bytes, -1: file absent) and "RESULT NAME: OK|FAIL ..." lines.
. /lib/guest_lib.sh
guest_setup
# guest_setup mounts /dev/vda on /cache; here the fs must sit on dm-flakey.
umount /cache 2>/dev/null
export DM_DISABLE_UDEV=1   # no udev here: dmsetup makes /dev/mapper nodes itself
mkdir -p /disk /mnt/fuse /run

log() { echo "guest: $*"; }
BLOB=$(cat /expected/blob_id)
SECTORS=$(cat /sys/block/vda/size)
UP="0 $SECTORS flakey /dev/vda 0 86400 0"
DOWN="0 $SECTORS flakey /dev/vda 0 0 86400 1 drop_writes"
DEV=/dev/mapper/pl
SLOT_MIB=64

# writeback MODE: "off" keeps dirty pages in memory until someone syncs them
# (nothing reaches the disk unless the daemon syncs it); "eager" writes them
# back within ~0.2 s in whatever order the kernel picks.
writeback() {
  case $1 in
    off) echo 0 > /proc/sys/vm/dirty_writeback_centisecs; echo 360000 > /proc/sys/vm/dirty_expire_centisecs ;;
    eager) echo 10 > /proc/sys/vm/dirty_writeback_centisecs; echo 20 > /proc/sys/vm/dirty_expire_centisecs ;;
  esac
}

# set_table TABLE: swap the flakey table. --nolockfs: no fs freeze, which
# would sync the fs first and so write exactly what a power cut loses.
set_table() {
  { dmsetup load pl --table "$1" && dmsetup suspend --nolockfs pl && dmsetup --noudevsync resume pl; } 2>> /tmp/dm.err
}

start_daemon() {  # start_daemon CACHE_DIR LOG
  sed "s|@CACHE@|$1|" /expected/nydusd.json > /tmp/nydusd.json
  nydusd --bootstrap /images/boot --config /tmp/nydusd.json --mountpoint /mnt/fuse \
    --thread-num 4 --log-file "$2" &
  DAEMON=$!
  i=0
  while ! grep -q " /mnt/fuse " /proc/mounts && [ $i -lt 200 ]; do
    kill -0 $DAEMON 2>/dev/null || return 1
    usleep 100000; i=$((i + 1))
  done
  grep -q " /mnt/fuse " /proc/mounts
}

stop_daemon() {  # stop_daemon SIGNAL
  kill -"$1" $DAEMON 2>/dev/null
  wait $DAEMON 2>/dev/null
  umount -l /mnt/fuse 2>/dev/null
}

# read_files FILTER: cat the files the awk FILTER selects from the list.
read_files() {
  awk "$1" /expected/files > /tmp/list
  while IFS= read -r f; do cat "/mnt/fuse/$f" > /dev/null; done < /tmp/list
}

# slow_read FILTER [PAUSE_AT]: read those files in 256 KiB blocks, 50 ms
# apart, so the fills go on for seconds and a cut lands in the middle of them;
# after PAUSE_AT blocks, stop for 2 s (writes that pause for a second let the
# daemon sync and persist its bits) and touch /tmp/paused. No pipeline: the
# loop runs in the caller's process, so killing that stops it.
slow_read() {
  awk "$1" /expected/files > /tmp/slow-list
  done_blocks=0
  while IFS= read -r f; do
    n=$(( ($(stat -c %s "/mnt/fuse/$f") + 262143) / 262144 )) b=0
    while [ $b -lt $n ]; do
      dd if="/mnt/fuse/$f" of=/dev/null bs=262144 skip=$b count=1 2>/dev/null
      usleep 50000; b=$((b + 1)); done_blocks=$((done_blocks + 1))
      if [ "$done_blocks" = "${2:-}" ]; then sleep 2; touch /tmp/paused; fi
    done
  done < /tmp/slow-list
}

log "power-loss guest up"
# dmsetup notes on stderr that the kernel has no System V IPC (no udev sync): kept aside.
if ! dmsetup --noudevsync create pl --table "$UP" 2>> /tmp/dm.err || [ ! -b $DEV ]; then
  result flakey_device FAIL "dmsetup create failed: $(tail -3 /tmp/dm.err | tr '\n' ' ')"
  guest_poweroff
fi
mount -t ext4 $DEV /disk || { result flakey_device FAIL "mount of $DEV failed"; guest_poweroff; }
result flakey_device OK

# round R NAME WRITEBACK: fill the cache, cut as the round says, check.
round() {
  R=$1 NAME=$2
  CACHE=/disk/cache-$R
  log "round $R ($NAME): fill"
  writeback "$3"
  if ! start_daemon "$CACHE" /tmp/fill-$R.log; then
    result "${NAME}_fill" FAIL "nydusd did not mount: $(tail -3 /tmp/fill-$R.log | tr '\n' ' ')"
    return
  fi
  READER=
  case $NAME in
    synced_map)
      # Half the files, read to the end; then wait past the persist (a
      # second after the last write) so the map holds their bits, and write
      # the map back before the data, as the kernel may at any time.
      read_files 'NR % 2 == 1'
      sleep 3
      sync -d "$CACHE/$BLOB.chunk_map" ;;
    mid_read_eager)
      # Everything, backwards, slowly; the cut lands while chunks are being
      # written and the kernel writes dirty pages back on its own.
      (slow_read '{ l[NR] = $0 } END { for (i = NR; i > 0; i--) print l[i] }') &
      READER=$!
      sleep 2 ;;
    mid_read_synced_map)
      # Everything, slowly, with one pause after 12 blocks: the fill
      # settles, so the daemon syncs the data and persists those bits; then
      # the reading goes on, the map is written back while fetches are still
      # writing data, and the power goes right after.
      rm -f /tmp/paused
      (slow_read 'NR % 3 != 0' 12; slow_read 'NR % 3 == 0') &
      READER=$!
      i=0
      while [ ! -e /tmp/paused ] && [ $i -lt 600 ]; do usleep 100000; i=$((i + 1)); done
      sleep 1
      sync -d "$CACHE/$BLOB.chunk_map" ;;
  esac
  # A reader that already finished would make this a cut after the fill.
  if [ -n "$READER" ] && ! kill -0 "$READER" 2>/dev/null; then
    result "${NAME}_mid_fill" FAIL "the reader finished before the cut"
  elif [ -n "$READER" ]; then
    result "${NAME}_mid_fill" OK
  fi
  log "round $R: cut"
  set_table "$DOWN" || { result "${NAME}_cut" FAIL "dmsetup could not switch to drop_writes: $(tail -3 /tmp/dm.err | tr '\n' ' ')"; return; }
  # A write made (and synced) after the cut must be gone after the restart.
  echo lost > /disk/canary-$R && sync
  [ -n "$READER" ] && { kill -9 "$READER" 2>/dev/null; wait "$READER" 2>/dev/null; }
  stop_daemon KILL
  umount /disk || { result "${NAME}_cut" FAIL "umount /disk: busy?"; return; }
  echo 3 > /proc/sys/vm/drop_caches
  set_table "$UP" || { result "${NAME}_cut" FAIL "dmsetup could not switch back"; return; }
  writeback eager
  mount -t ext4 $DEV /disk || { result "${NAME}_cut" FAIL "mount after the cut failed"; guest_poweroff; }
  if [ -e /disk/canary-$R ]; then result "${NAME}_cut" FAIL "a write after the cut survived"
  else result "${NAME}_cut" OK; fi

  # The cache as the cut left it, for the host's chunk-by-chunk check.
  map=$CACHE/$BLOB.chunk_map data=$CACHE/$BLOB.blob.data
  msize=-1 dsize=-1
  if [ -f "$map" ]; then msize=$(stat -c %s "$map"); dd if="$map" of=/dev/vdb bs=1M seek=$((R * SLOT_MIB)) conv=notrunc 2>/dev/null; fi
  if [ -f "$data" ]; then dsize=$(stat -c %s "$data"); dd if="$data" of=/dev/vdb bs=1M seek=$((R * SLOT_MIB + 1)) conv=notrunc 2>/dev/null; fi
  sync
  printf 'TAPE %s %s %s %s\n' "$R" "$NAME" "$msize" "$dsize"

  # Restart on the same cache: every file must read back as the source.
  log "round $R: restart and compare"
  if ! start_daemon "$CACHE" /tmp/check-$R.log; then
    result "${NAME}_restart" FAIL "nydusd did not mount: $(tail -3 /tmp/check-$R.log | tr '\n' ' ')"
    return
  fi
  (cd /mnt/fuse && sha256sum -c /expected/sums) > /tmp/sums-$R 2>&1
  # Every file not reported OK counts (wrong bytes, EIO, missing).
  bad=$(( $(wc -l < /expected/sums) - $(grep -c ': OK$' /tmp/sums-$R) ))
  stop_daemon TERM
  if [ "$bad" -eq 0 ]; then
    result "${NAME}_restart" OK
  else
    result "${NAME}_restart" FAIL "$bad of $(wc -l < /expected/sums) files differ from the source:" \
      "$(grep -v ': OK$' /tmp/sums-$R | head -5 | tr '\n' ' ')"
  fi
}

round 0 synced_map off
round 1 mid_read_eager eager
round 2 mid_read_synced_map off

umount /disk
dmsetup --noudevsync remove pl 2>> /tmp/dm.err
result done OK
guest_poweroff
