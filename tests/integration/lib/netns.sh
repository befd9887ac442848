# shellcheck shell=bash
# A shaped network link to a network namespace, for putting a server "far away"
# from the daemon on a loopback-only machine. Source it (root only):
#
#   netns_up NAME RTT_MS RATE_MBIT   # prints the namespace-side IP; sets NETNS_IP,
#                                    # NETNS_HOST_IP, NETNS_MODE
#   ip netns exec NAME docker-registry serve cfg.yml   # listening on $NETNS_IP
#   netns_measure NAME [MB]          # "rtt_ms=.. rate_mbit=..": TCP connect RTT and the
#                                    # goodput of one HTTP GET of MB MiB (default 20)
#   netns_down NAME                  # the link, the namespace and what still runs in it
#   netns_ip NAME                    # the namespace-side IP of an existing link
#
# Traffic between the root namespace and NAME crosses a point-to-point link with
# RTT_MS of round trip (RTT/2 each way) and RATE_MBIT per direction (0: unlimited),
# addressed from a free private /30: 10.231.X.1 (root side) and 10.231.X.2 (NAME).
#
# Two implementations (NETNS_LINK=auto|netem|tun, default auto):
#  - netem: a veth pair with `tc qdisc ... netem delay RTT/2 rate RATE` on both ends.
#    Needs sch_netem (CONFIG_NET_SCH_NETEM), which many VM kernels lack.
#  - tun (auto's fallback without netem): two TUN devices, one per namespace, joined
#    by a small delay line (C, embedded below, compiled once with cc into
#    $NETNS_CACHE_DIR) that forwards every packet RTT/2 after it was sent, and
#    `tc qdisc ... tbf rate RATE` on both devices' egress for the rate. Same model
#    as netem's (FIFO, constant delay, a rate limit at each sender), real packets
#    and real TCP (handshake, slow start, ACK clocking all see the RTT). The TBF
#    queue holds up to 1000 MTU-sized packets, like netem's default limit.
# Env: NETNS_LINK, NETNS_CACHE_DIR (default /var/tmp/nydus-netns), NETNS_STATE_DIR
# (default /run/nydus-netns).

NETNS_STATE_DIR=${NETNS_STATE_DIR:-/run/nydus-netns}
NETNS_CACHE_DIR=${NETNS_CACHE_DIR:-/var/tmp/nydus-netns}

# The delay line: DELAY_US after a packet is read from one TUN device it is
# written to the other (both directions, FIFO). 16384 packets of buffer per
# direction (more is dropped and counted). SIGTERM ends it; the (non-persistent)
# TUN devices go with it.
_NETNS_DELAYLINE_C=$(
  cat <<'C'
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

enum { SLOTS = 16384, SLOT = 2048 };
struct line {
  int in, out;
  uint64_t head, tail, passed, drops;
  uint64_t *due;
  uint16_t *len;
  unsigned char *buf;
};

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int tun_open(const char *name) {
  int fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) { perror("open /dev/net/tun"); exit(1); }
  struct ifreq ifr;
  memset(&ifr, 0, sizeof ifr);
  ifr.ifr_flags = IFF_TUN | IFF_NO_PI;
  strncpy(ifr.ifr_name, name, IFNAMSIZ - 1);
  if (ioctl(fd, TUNSETIFF, &ifr) < 0) { perror("TUNSETIFF"); exit(1); }
  return fd;
}

static void line_init(struct line *l, int in, int out) {
  memset(l, 0, sizeof *l);
  l->in = in;
  l->out = out;
  l->due = calloc(SLOTS, sizeof *l->due);
  l->len = calloc(SLOTS, sizeof *l->len);
  l->buf = malloc((size_t)SLOTS * SLOT);
  if (!l->due || !l->len || !l->buf) { perror("alloc"); exit(1); }
}

static void line_read(struct line *l, uint64_t delay) {
  static unsigned char scratch[65536];
  for (int i = 0; i < 1024; i++) {
    int full = l->tail - l->head >= SLOTS;
    unsigned char *dst = full ? scratch : l->buf + (size_t)(l->tail % SLOTS) * SLOT;
    ssize_t n = read(l->in, dst, full ? sizeof scratch : SLOT);
    if (n < 0) {
      if (errno == EINTR) continue;
      return;  /* EAGAIN: drained */
    }
    if (full || n >= SLOT) { l->drops++; continue; }
    l->len[l->tail % SLOTS] = (uint16_t)n;
    l->due[l->tail % SLOTS] = now_ns() + delay;
    l->tail++;
  }
}

static void line_flush(struct line *l, uint64_t now) {
  while (l->head < l->tail && l->due[l->head % SLOTS] <= now) {
    size_t k = l->head % SLOTS;
    if (write(l->out, l->buf + k * SLOT, l->len[k]) < 0 && errno == EAGAIN) return;
    l->head++;
    l->passed++;
  }
}

static volatile sig_atomic_t stop;
static void on_term(int s) { (void)s; stop = 1; }

int main(int argc, char **argv) {
  if (argc != 6) {
    fprintf(stderr, "usage: %s ROOT_TUN NS_TUN NETNS_PATH DELAY_US READY_FILE\n", argv[0]);
    return 2;
  }
  uint64_t delay = strtoull(argv[4], 0, 10) * 1000u;
  int root = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
  int fh = tun_open(argv[1]);
  int ns = open(argv[3], O_RDONLY | O_CLOEXEC);
  if (root < 0 || ns < 0 || setns(ns, CLONE_NEWNET) < 0) { perror(argv[3]); return 1; }
  int fn = tun_open(argv[2]); /* created inside the namespace */
  if (setns(root, CLONE_NEWNET) < 0) { perror("setns back"); return 1; }
  close(ns);
  close(root);
  struct line a, b;
  line_init(&a, fh, fn);
  line_init(&b, fn, fh);
  signal(SIGTERM, on_term);
  signal(SIGINT, on_term);
  FILE *r = fopen(argv[5], "w");
  if (!r) { perror(argv[5]); return 1; }
  fprintf(r, "%d\n", (int)getpid());
  fclose(r);
  struct pollfd p[2] = {{fh, POLLIN, 0}, {fn, POLLIN, 0}};
  while (!stop) {
    uint64_t now = now_ns();
    line_flush(&a, now);
    line_flush(&b, now);
    uint64_t next = UINT64_MAX;
    if (a.head < a.tail) next = a.due[a.head % SLOTS];
    if (b.head < b.tail && b.due[b.head % SLOTS] < next) next = b.due[b.head % SLOTS];
    struct timespec ts, *tp = NULL;
    if (next != UINT64_MAX) {
      uint64_t w = next > now ? next - now : 0;
      ts.tv_sec = (time_t)(w / 1000000000u);
      ts.tv_nsec = (long)(w % 1000000000u);
      tp = &ts;
    }
    if (ppoll(p, 2, tp, NULL) < 0 && errno != EINTR) { perror("ppoll"); return 1; }
    if (p[0].revents & POLLIN) line_read(&a, delay);
    if (p[1].revents & POLLIN) line_read(&b, delay);
  }
  fprintf(stderr, "delay line: root->ns %llu packets (%llu dropped), ns->root %llu (%llu dropped)\n",
          (unsigned long long)a.passed, (unsigned long long)a.drops, (unsigned long long)b.passed,
          (unsigned long long)b.drops);
  return 0;
}
C
)

# _netns_delayline: path of the compiled delay line (built on first use).
_netns_delayline() {
  local sum bin
  sum=$(printf '%s' "$_NETNS_DELAYLINE_C" | sha256sum | cut -c1-16)
  bin=$NETNS_CACHE_DIR/delayline-$sum
  if [ ! -x "$bin" ]; then
    command -v cc >/dev/null || { echo "netns: no C compiler (cc) to build the delay line" >&2; return 1; }
    mkdir -p "$NETNS_CACHE_DIR" || return 1
    printf '%s\n' "$_NETNS_DELAYLINE_C" >"$bin.c"
    cc -O2 -Wall -o "$bin.tmp.$$" "$bin.c" >&2 || { echo "netns: cannot compile $bin.c" >&2; return 1; }
    mv -f "$bin.tmp.$$" "$bin"
  fi
  echo "$bin"
}

_netns_has_netem() {
  local d=nnprobe$$ ok=1
  ip link add "$d" type dummy 2>/dev/null || ip link add "$d" type veth peer name "${d}p" 2>/dev/null || return 1
  tc qdisc add dev "$d" root netem delay 1ms 2>/dev/null && ok=0
  ip link del "$d" 2>/dev/null
  return $ok
}

# netns_ip NAME: the namespace-side address of NAME's link.
netns_ip() {
  [ -f "$NETNS_STATE_DIR/$1.env" ] || { echo "netns: no link named $1" >&2; return 1; }
  awk -F= '$1 == "NS_IP" {print $2}' "$NETNS_STATE_DIR/$1.env"
}

# netns_up NAME RTT_MS RATE_MBIT
netns_up() {
  local name=$1 rtt=${2:-0} rate=${3:-0}
  if [ $# -lt 3 ] || ! [[ $rtt =~ ^[0-9]+([.][0-9]+)?$ && $rate =~ ^[0-9]+([.][0-9]+)?$ ]]; then
    echo "usage: netns_up NAME RTT_MS RATE_MBIT" >&2; return 2
  fi
  [ "$(id -u)" -eq 0 ] || { echo "netns: needs root" >&2; return 1; }
  case $name in ''|*/*|.*) echo "netns: bad name '$name'" >&2; return 2 ;; esac
  mkdir -p "$NETNS_STATE_DIR" || return 1
  [ -e "$NETNS_STATE_DIR/$name.env" ] && { echo "netns: $name is up already (netns_down $name)" >&2; return 1; }
  ip netns list | awk '{print $1}' | grep -qx -- "$name" && { echo "netns: namespace $name exists already" >&2; return 1; }

  local mode=${NETNS_LINK:-auto}
  if [ "$mode" = auto ]; then
    if _netns_has_netem; then mode=netem; else mode=tun; fi
  fi
  local bin=
  if [ "$mode" = tun ]; then bin=$(_netns_delayline) || return 1; fi

  # Pick X (and record the state) under a lock, so concurrent callers differ.
  local x='' used half_us
  half_us=$(awk -v r="$rtt" 'BEGIN {printf "%d", r * 500}')
  exec {_netns_lock}>"$NETNS_STATE_DIR/.lock"
  flock "$_netns_lock"
  used=$(ip -o -4 addr show; cat "$NETNS_STATE_DIR"/*.env 2>/dev/null)
  local i
  for i in $(seq 1 254); do
    if ! grep -q "10\.231\.$i\.[0-9]" <<<"$used"; then x=$i; break; fi
  done
  if [ -z "$x" ]; then flock -u "$_netns_lock"; echo "netns: no free 10.231.X.0/30" >&2; return 1; fi
  local hip=10.231.$x.1 nip=10.231.$x.2 hdev nsdev
  if [ "$mode" = netem ]; then hdev=nv${x}h nsdev=nv${x}n; else hdev=nt${x}h nsdev=nt${x}n; fi
  cat >"$NETNS_STATE_DIR/$name.env" <<EOF
NS_NAME=$name
NS_MODE=$mode
NS_IP=$nip
HOST_IP=$hip
HOST_DEV=$hdev
NS_DEV=$nsdev
RTT_MS=$rtt
RATE_MBIT=$rate
EOF
  flock -u "$_netns_lock"
  exec {_netns_lock}>&-

  _netns_fail() { echo "netns: $*" >&2; netns_down "$name" >/dev/null 2>&1; return 1; }
  ip netns add "$name" || _netns_fail "ip netns add $name failed" || return 1
  ip -n "$name" link set lo up || _netns_fail "lo up" || return 1
  if [ "$mode" = netem ]; then
    ip link add "$hdev" type veth peer name "$nsdev" netns "$name" || _netns_fail "veth" || return 1
    ip addr add "$hip/30" dev "$hdev" && ip link set "$hdev" up &&
      ip -n "$name" addr add "$nip/30" dev "$nsdev" && ip -n "$name" link set "$nsdev" up ||
      _netns_fail "addresses" || return 1
    local q="netem limit 1000"
    [ "$half_us" -gt 0 ] && q="$q delay ${half_us}us"
    [ "$rate" != 0 ] && q="$q rate ${rate}mbit"
    # shellcheck disable=SC2086
    tc qdisc add dev "$hdev" root $q && ip netns exec "$name" tc qdisc add dev "$nsdev" root $q ||
      _netns_fail "tc netem" || return 1
  else
    rm -f "$NETNS_STATE_DIR/$name.ready"
    # Detached (not a job of the caller's shell, so a bare `wait` there won't hang
    # on it); it writes its pid into the ready file.
    (setsid "$bin" "$hdev" "$nsdev" "/run/netns/$name" "$half_us" "$NETNS_STATE_DIR/$name.ready" \
      </dev/null >"$NETNS_STATE_DIR/$name.log" 2>&1 &)
    for i in $(seq 100); do
      [ -s "$NETNS_STATE_DIR/$name.ready" ] && break
      grep -q . "$NETNS_STATE_DIR/$name.log" 2>/dev/null && break  # it failed
      sleep 0.05
    done
    [ -s "$NETNS_STATE_DIR/$name.ready" ] || _netns_fail "delay line did not start: $(cat "$NETNS_STATE_DIR/$name.log")" || return 1
    echo "LINK_PID=$(cat "$NETNS_STATE_DIR/$name.ready")" >>"$NETNS_STATE_DIR/$name.env"
    ip link set "$hdev" mtu 1500 && ip addr add "$hip" peer "$nip/30" dev "$hdev" && ip link set "$hdev" up &&
      ip -n "$name" link set "$nsdev" mtu 1500 && ip -n "$name" addr add "$nip" peer "$hip/30" dev "$nsdev" &&
      ip -n "$name" link set "$nsdev" up || _netns_fail "addresses" || return 1
    if [ "$rate" != 0 ]; then
      # burst: 1 ms at RATE (at least 2 packets); limit: 1000 packets.
      local burst
      burst=$(awk -v r="$rate" 'BEGIN {b = r * 1e6 / 8 / 1000; if (b < 3028) b = 3028; printf "%d", b}')
      tc qdisc add dev "$hdev" root tbf rate "${rate}mbit" burst "$burst" limit 1514000 &&
        ip netns exec "$name" tc qdisc add dev "$nsdev" root tbf rate "${rate}mbit" burst "$burst" limit 1514000 ||
        _netns_fail "tc tbf" || return 1
    fi
  fi
  # shellcheck disable=SC2034  # for the caller
  NETNS_IP=$nip NETNS_HOST_IP=$hip NETNS_MODE=$mode
  echo "$nip"
}

# netns_down NAME: stop what runs in NAME, remove the link and the namespace.
netns_down() {
  local name=$1 f=$NETNS_STATE_DIR/$1.env p i HOST_DEV='' LINK_PID=''
  if [ -f "$f" ]; then  # read, not sourced: its names (RTT_MS, ...) may be the caller's too
    HOST_DEV=$(awk -F= '$1 == "HOST_DEV" {v = $2} END {print v}' "$f")
    LINK_PID=$(awk -F= '$1 == "LINK_PID" {v = $2} END {print v}' "$f")
  fi
  if ip netns list | awk '{print $1}' | grep -qx -- "$name"; then
    for p in $(ip netns pids "$name" 2>/dev/null); do kill -TERM "$p" 2>/dev/null; done
    for i in $(seq 50); do [ -z "$(ip netns pids "$name" 2>/dev/null)" ] && break; sleep 0.1; done
    for p in $(ip netns pids "$name" 2>/dev/null); do kill -KILL "$p" 2>/dev/null; done
  fi
  if [ -n "$LINK_PID" ] && kill -0 "$LINK_PID" 2>/dev/null; then
    kill -TERM "$LINK_PID"
    for i in $(seq 50); do kill -0 "$LINK_PID" 2>/dev/null || break; sleep 0.05; done
  fi
  [ -n "$HOST_DEV" ] && ip link del "$HOST_DEV" 2>/dev/null
  ip netns del "$name" 2>/dev/null
  rm -f "$f" "$NETNS_STATE_DIR/$name.ready"
  [ -f "$NETNS_STATE_DIR/$name.log" ] && cat "$NETNS_STATE_DIR/$name.log" && rm -f "$NETNS_STATE_DIR/$name.log"
  return 0
}

# netns_measure NAME [MB]: serve MB MiB from inside NAME over HTTP; print the median
# TCP connect time of 5 connections (one round trip) and the goodput of a GET of it.
netns_measure() {
  local name=$1 mb=${2:-20} ip dir port=8079 spid out
  ip=$(netns_ip "$name") || return 1
  dir=$(mktemp -d "${TMPDIR:-/tmp}/netns-measure.XXXXXX") || return 1
  head -c $((mb << 20)) /dev/urandom >"$dir/blob"
  ip netns exec "$name" python3 -m http.server "$port" --bind "$ip" --directory "$dir" >"$dir/log" 2>&1 &
  spid=$!
  for _ in $(seq 100); do curl -sf -o /dev/null "http://$ip:$port/" && break; sleep 0.05; done
  out=$(python3 - "$ip" "$port" <<'PY'
import socket, statistics, sys, time
ts = []
for _ in range(5):
    s = socket.socket(); t = time.monotonic(); s.connect((sys.argv[1], int(sys.argv[2]))); ts.append(time.monotonic() - t); s.close()
    time.sleep(0.05)
print(f"rtt_ms={statistics.median(ts) * 1000:.1f}")
PY
  )
  local t
  t=$(curl -sf -o /dev/null -w '%{speed_download}' "http://$ip:$port/blob")
  kill "$spid" 2>/dev/null; wait "$spid" 2>/dev/null
  rm -rf "$dir"
  echo "$out rate_mbit=$(awk -v s="$t" 'BEGIN {printf "%.1f", s * 8 / 1e6}') (${mb} MiB GET)"
}

# netns_registry NAME DIR: Debian's docker-registry inside namespace NAME on
# $NETNS_IP:5000 (so clients in the root namespace cross the shaped link),
# storage in DIR/data, its log in DIR/log with the access log on (status and
# bytes sent per request). Sets NETNS_REGISTRY (host:port) and
# NETNS_REGISTRY_PID; fails, printing the log, if it does not answer in 10 s.
netns_registry() {
  local ns=$1 dir=$2 _
  NETNS_REGISTRY=$NETNS_IP:5000
  mkdir -p "$dir/data"
  cat >"$dir/config.yml" <<YML
version: 0.1
log:
  level: warn
  accesslog:
    disabled: false
storage:
  filesystem:
    rootdirectory: $dir/data
http:
  addr: $NETNS_REGISTRY
YML
  ip netns exec "$ns" docker-registry serve "$dir/config.yml" >"$dir/log" 2>&1 &
  NETNS_REGISTRY_PID=$!
  for _ in $(seq 100); do curl -sf "http://$NETNS_REGISTRY/v2/" >/dev/null && return 0; sleep 0.1; done
  echo "docker-registry did not start" >&2; cat "$dir/log" >&2; return 1
}
