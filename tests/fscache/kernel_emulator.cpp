#include "fscache/kernel_emulator.h"

#include <fcntl.h>
#include <linux/sockios.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <climits>
#include <cstring>
#include <fstream>
#include <random>

#include "common/fd_passing.h"
#include "fscache/cachefiles_abi.h"
#include "fscache/message.h"

namespace nydus::fscache::emu {

namespace {

constexpr uint64_t kPage = 4096;
uint64_t page_down(uint64_t v) { return v & ~(kPage - 1); }
uint64_t page_up(uint64_t v) { return (v + kPage - 1) & ~(kPage - 1); }

// The kernel's kstrtoul/kstrtol (base 0): optional sign for signed, 0x/0
// prefixes, one trailing newline, nothing else (no spaces).
bool kstrto(std::string s, bool is_signed, long long* out) {
  if (!s.empty() && s.back() == '\n') s.pop_back();
  if (s.empty()) return false;
  if (!is_signed && (s[0] == '-')) return false;
  for (char c : s)
    if (c == ' ' || c == '\t') return false;
  errno = 0;
  char* end = nullptr;
  const long long v = is_signed ? std::strtoll(s.c_str(), &end, 0) : (long long)std::strtoull(s.c_str(), &end, 0);
  if (errno != 0 || end != s.c_str() + s.size()) return false;
  *out = v;
  return true;
}

// EROFS on-disk superblock fields (include/uapi... fs/erofs/erofs_fs.h), at byte 1024.
constexpr uint32_t kErofsMagic = 0xE0F5E1E2;
constexpr size_t kSbOff = 1024, kSbBlkszbits = 12, kSbExtraDevices = 86, kSbDevtSlotoff = 88;
constexpr size_t kDeviceSlotSize = 128, kDeviceTagSize = 64;

}  // namespace

Emulator::Emulator(Profile profile, std::filesystem::path store) : profile_(std::move(profile)), store_(std::move(store)) {
  std::filesystem::create_directories(store_);
  wake_ = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  inotify_ = ::inotify_init1(IN_CLOEXEC | IN_NONBLOCK);
  io_ = std::thread([this] { io_loop(); });
}

Emulator::~Emulator() {
  {
    std::lock_guard lk(mu_);
    stop_ = true;
  }
  kick();
  if (io_.joinable()) io_.join();
  for (auto& [id, o] : objects_)
    if (o.rfd >= 0) ::close(o.rfd);
  if (conn_ >= 0) ::close(conn_);
  if (listen_fd_ >= 0) ::close(listen_fd_);
  ::close(wake_);
  ::close(inotify_);
}

void Emulator::kick() {
  uint64_t one = 1;
  [[maybe_unused]] ssize_t n = ::write(wake_, &one, sizeof(one));
}

int Emulator::open_pair() {
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0) return -1;
  ::fcntl(sv[0], F_SETFL, O_NONBLOCK);
  {
    std::lock_guard lk(mu_);
    conn_ = sv[0];
  }
  kick();
  return sv[1];
}

Status Emulator::listen(const std::filesystem::path& sock) {
  const int fd = ::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, sock.c_str(), sizeof(addr.sun_path) - 1);
  ::unlink(sock.c_str());
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 || ::listen(fd, 4) != 0) {
    auto e = sys_error("emulator listen");
    ::close(fd);
    return e;
  }
  {
    std::lock_guard lk(mu_);
    listen_fd_ = fd;
  }
  kick();
  return ok();
}

bool Emulator::wait_bound(ms timeout) {
  std::unique_lock lk(mu_);
  return cv_.wait_for(lk, timeout, [&] { return bound_; });
}

bool Emulator::wait_restored(uint64_t count, ms timeout) {
  std::unique_lock lk(mu_);
  return cv_.wait_for(lk, timeout, [&] { return counters_.restores >= count; });
}

void Emulator::close_device() {
  std::lock_guard lk(mu_);
  if (conn_ >= 0) ::shutdown(conn_, SHUT_RDWR);
}

void Emulator::set_pipeline(unsigned n) {
  std::lock_guard lk(mu_);
  pipeline_ = std::max(n, 1u);
}

void Emulator::violation_locked(std::string v) { violations_.push_back(std::move(v)); }

// ---- the io thread: device commands, fd closes, message delivery ----

void Emulator::io_loop() {
  std::vector<char> buf(8192);
  for (;;) {
    pollfd p[4];
    int n = 0, conn, lfd;
    int timeout;
    {
      std::lock_guard lk(mu_);
      if (stop_) return;
      conn = conn_;
      lfd = listen_fd_;
      timeout = in_flight_ ? 1 : -1;  // watch the daemon drain the in-flight message
    }
    p[n++] = {wake_, POLLIN, 0};
    p[n++] = {inotify_, POLLIN, 0};
    if (lfd >= 0) p[n++] = {lfd, POLLIN, 0};
    if (conn >= 0) p[n++] = {conn, POLLIN, 0};
    if (::poll(p, nfds_t(n), timeout) < 0 && errno != EINTR) return;
    uint64_t v;
    while (::read(wake_, &v, sizeof(v)) > 0) {
    }
    if (lfd >= 0) {
      for (;;) {
        const int c = ::accept4(lfd, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
        if (c < 0) break;
        std::lock_guard lk(mu_);
        if (conn_ >= 0 || dead_) {
          ::close(c);  // one opener at a time, like /dev/cachefiles (EBUSY)
        } else {
          conn_ = conn = c;
        }
      }
    }
    if (conn >= 0) {
      for (;;) {
        std::vector<int> fds;
        const ssize_t r = recv_with_fds(conn, buf.data(), buf.size(), fds, MSG_DONTWAIT);
        for (size_t i = 1; i < fds.size(); ++i) ::close(fds[i]);
        const int fd = fds.empty() ? -1 : fds[0];
        if (r < 0 && errno == EAGAIN) break;
        if (r <= 0) {
          if (fd >= 0) ::close(fd);
          on_device_closed();
          break;
        }
        handle_command(std::string(buf.data(), size_t(r)), fd);
        if (fd >= 0) ::close(fd);
      }
    }
    alignas(inotify_event) char ev[4096];
    for (;;) {
      const ssize_t r = ::read(inotify_, ev, sizeof(ev));
      if (r <= 0) break;
      for (ssize_t off = 0; off < r;) {
        auto* e = reinterpret_cast<inotify_event*>(ev + off);
        if (e->mask & IN_CLOSE_WRITE) on_fd_closed(e->wd);
        off += ssize_t(sizeof(inotify_event) + e->len);
      }
    }
    std::lock_guard lk(mu_);
    pump_locked();
  }
}

void Emulator::on_device_closed() {
  std::lock_guard lk(mu_);
  if (conn_ >= 0) ::close(conn_);
  conn_ = -1;
  // Nobody else holds the device: the cache is dead, every waiter gets EIO.
  dead_ = true;
  for (auto& [id, r] : requests_)
    if (r.state == ReqState::kNew || r.state == ReqState::kDelivered) r.state = ReqState::kFailed;
  new_queue_.clear();
  in_flight_ = false;
  cv_.notify_all();
}

void Emulator::handle_command(std::string cmd, int fd) {
  std::lock_guard lk(mu_);
  commands_.push_back(cmd);
  // One command per write: the name runs to the first space; a first '\n' ends it.
  if (cmd.find('\0') != std::string::npos) return violation_locked("command with a NUL byte: EINVAL");
  if (auto nl = cmd.find('\n'); nl != std::string::npos) cmd.resize(nl);
  const auto sp = cmd.find(' ');
  const std::string name = cmd.substr(0, sp);
  std::string args = sp == std::string::npos ? "" : cmd.substr(sp + 1);
  while (!args.empty() && args[0] == ' ') args.erase(0, 1);
  if (name == "dir" || name == "tag") return;
  if (name == "bind") {
    if (bound_) return violation_locked("bind on a bound cache: EBUSY");
    if (args != "ondemand") return violation_locked("bind without ondemand");
    bound_ = true;
    cv_.notify_all();
    return;
  }
  if (name == "copen") return on_copen(args);
  if (name == "cread") return on_cread(args, fd);
  if (name == "restore") return on_restore();
  if (name == "cull" || name == "inuse") return;
  violation_locked("unknown command \"" + cmd + "\": EOPNOTSUPP");
}

void Emulator::on_copen(const std::string& args) {
  const auto comma = args.find(',');
  if (comma == std::string::npos) return violation_locked("copen " + args + ": no size: EINVAL");
  long long id, size;
  if (!kstrto(args.substr(0, comma), false, &id) || !kstrto(args.substr(comma + 1), true, &size))
    return violation_locked("copen " + args + ": not kernel number syntax: EINVAL");
  auto it = requests_.find(uint32_t(id));
  if (it == requests_.end() || it->second.state != ReqState::kDelivered || it->second.opcode != uint32_t(Opcode::kOpen))
    return violation_locked("copen " + args + ": not a pending OPEN: EINVAL");
  Object& o = objects_[it->second.obj];
  finished_.insert(it->first);
  requests_.erase(it);
  if (size < -4095) {
    o.state = ObjState::kFailed;
    o.open_error = EINVAL;
    violation_locked("copen " + args + ": size below -4095: EINVAL");
  } else if (size < 0) {
    o.state = ObjState::kFailed;
    o.open_error = int(-size);
    counters_.copen_failed++;
  } else {
    // The cache file is reused only when the recorded size matches. The
    // daemon may write as soon as its copen returned (this command channel
    // is one-way), so a new file is only extended, never emptied: it is
    // empty already.
    if (!o.sized || o.size != uint64_t(size)) {
      if ((o.sized && ::truncate(o.path.c_str(), 0) != 0) ||
          ::truncate(o.path.c_str(), off_t(page_up(uint64_t(size)))) != 0)
        violation_locked("emulator: truncate " + o.path.string() + " failed");
      o.size = uint64_t(size);
      o.sized = true;
      std::ofstream(o.path.string() + ".size") << size;
    }
    o.state = ObjState::kOpen;
    counters_.copen_ok++;
  }
  cv_.notify_all();
}

void Emulator::on_cread(const std::string& args, int fd) {
  long long id;
  if (!kstrto(args, false, &id)) return violation_locked("cread " + args + ": bad id");
  auto it = requests_.find(uint32_t(id));
  if (it == requests_.end() || it->second.state != ReqState::kDelivered) {
    if (finished_.count(uint32_t(id))) {
      counters_.late_completions++;  // EINVAL for the daemon: the request is gone (cancelled, killed)
      return;
    }
    return violation_locked("READ_COMPLETE of msg " + args + ", which is not pending: EINVAL");
  }
  Request& r = it->second;
  if (fd < 0) return violation_locked("READ_COMPLETE of msg " + args + " without an anon fd");
  struct stat st;
  if (::fstat(fd, &st) != 0) return violation_locked("READ_COMPLETE fd unusable");
  const Object& o = objects_[r.obj];
  const bool same_object = st.st_dev == o.dev && st.st_ino == o.ino;
  if (profile_.strict_complete && (r.opcode != uint32_t(Opcode::kRead) || !same_object))
    return violation_locked("READ_COMPLETE of msg " + args + " on another object's fd or not a READ: EINVAL");
  if (!same_object) violation_locked("READ_COMPLETE of msg " + args + " on another object's fd (accepted by old kernels)");
  r.state = ReqState::kDone;
  finished_.insert(r.msg_id);
  counters_.completions++;
  cv_.notify_all();
}

void Emulator::on_restore() {
  if (!profile_.reopen) return violation_locked("restore on a kernel before 6.8: EOPNOTSUPP");
  counters_.restores++;
  // Whatever the daemon read and did not answer is new again; a message
  // still sitting unread in the socket will be read once, as it is.
  int unread = 0;
  if (in_flight_ && conn_ >= 0) ::ioctl(conn_, SIOCOUTQ, &unread);
  std::vector<uint32_t> again;
  for (auto& [id, r] : requests_)
    if (r.state == ReqState::kDelivered && !(unread > 0 && id == in_flight_id_)) {
      r.state = ReqState::kNew;
      again.push_back(id);
    }
  new_queue_.insert(new_queue_.begin(), again.begin(), again.end());
  cv_.notify_all();
}

void Emulator::on_fd_closed(int wd) {
  std::lock_guard lk(mu_);
  for (auto& [id, o] : objects_) {
    if (o.wd != wd) continue;
    if (o.live_fds > 0) o.live_fds--;
    if (o.live_fds > 0) break;
    if (o.state == ObjState::kOpen) {
      o.state = ObjState::kFdClosed;
      if (!profile_.reopen)  // before 6.8: its pending READs fail
        for (auto& [mid, r] : requests_)
          if (r.obj == o.id && (r.state == ReqState::kDelivered || r.state == ReqState::kNew))
            r.state = ReqState::kFailed;
    } else if (o.state == ObjState::kClosing) {
      o.state = ObjState::kIdle;
    }
    cv_.notify_all();
    break;
  }
}

uint32_t Emulator::new_msg_id_locked() {
  if (profile_.cyclic_msg_ids) {
    while (requests_.count(next_msg_id_)) next_msg_id_++;
    return next_msg_id_++;
  }
  uint32_t id = 0;
  while (requests_.count(id)) id++;
  return id;
}

uint32_t Emulator::queue_locked(uint32_t opcode, int obj, uint64_t off, uint64_t len) {
  Request r;
  r.msg_id = new_msg_id_locked();
  r.opcode = opcode;
  r.obj = obj;
  r.off = off;
  r.len = len;
  finished_.erase(r.msg_id);
  requests_[r.msg_id] = r;
  new_queue_.push_back(r.msg_id);
  return r.msg_id;
}

void Emulator::pump_locked() {
  if (conn_ < 0) return;
  if (in_flight_) {
    int unread = 0;
    if (::ioctl(conn_, SIOCOUTQ, &unread) == 0 && unread > 0 && sent_unconfirmed_ >= pipeline_) return;
    if (unread == 0) {
      in_flight_ = false;
      sent_unconfirmed_ = 0;
    }
  }
  while (pump_one_locked()) {
    if (++sent_unconfirmed_ >= pipeline_) return;
  }
}

bool Emulator::pump_one_locked() {
  for (size_t i = 0; i < new_queue_.size(); ++i) {
    auto it = requests_.find(new_queue_[i]);
    if (it == requests_.end() || it->second.state != ReqState::kNew) {
      new_queue_.erase(new_queue_.begin() + ptrdiff_t(i));
      --i;
      continue;
    }
    Request& r = it->second;
    Object& o = objects_[r.obj];
    if (r.opcode == uint32_t(Opcode::kRead)) {
      if (o.state == ObjState::kOpening) continue;  // its reopen goes first
      if (o.state == ObjState::kFdClosed && profile_.reopen) {
        // The object lost its fd: a fresh OPEN (new object id, new fd) first.
        counters_.reopens++;
        o.state = ObjState::kOpening;
        const uint32_t id = queue_locked(uint32_t(Opcode::kOpen), o.id);
        new_queue_.pop_back();
        new_queue_.insert(new_queue_.begin() + ptrdiff_t(i), id);
        Request& open = requests_[id];
        if (!send_locked(open)) return false;
        new_queue_.erase(new_queue_.begin() + ptrdiff_t(i));
        return true;
      }
      if (o.state != ObjState::kOpen) {
        r.state = ReqState::kFailed;
        cv_.notify_all();
        new_queue_.erase(new_queue_.begin() + ptrdiff_t(i));
        --i;
        continue;
      }
    }
    if (!send_locked(r)) return false;
    new_queue_.erase(new_queue_.begin() + ptrdiff_t(i));
    return true;
  }
  return false;
}

bool Emulator::send_locked(Request& r) {
  Object& o = objects_[r.obj];
  std::string msg;
  int fd = -1;
  if (r.opcode == uint32_t(Opcode::kOpen)) {
    // The anon fd: O_WRONLY and not close-on-exec, as the kernel makes it.
    fd = ::open(o.path.c_str(), O_WRONLY);
    if (fd < 0) {
      violation_locked("emulator: cannot open " + o.path.string());
      return false;
    }
    o.kernel_id = next_object_id_;
    next_object_id_ = next_object_id_ >= uint32_t(INT_MAX) ? 1 : next_object_id_ + 1;
    msg = encode_open(r.msg_id, o.kernel_id, o.volume, o.cookie, fd);
  } else if (r.opcode == uint32_t(Opcode::kRead)) {
    msg = encode_read(r.msg_id, o.kernel_id, r.off, r.len);
  } else {
    msg = encode_close(r.msg_id, o.kernel_id);
  }
  const ssize_t n = send_with_fd(conn_, msg.data(), msg.size(), fd, MSG_DONTWAIT);
  if (fd >= 0) ::close(fd);  // the description lives on in the message, then in the daemon
  if (n != ssize_t(msg.size())) return false;
  in_flight_ = true;
  in_flight_id_ = r.msg_id;
  switch (Opcode(r.opcode)) {
    case Opcode::kOpen:
      counters_.opens_sent++;
      o.live_fds++;
      r.state = ReqState::kDelivered;
      break;
    case Opcode::kRead:
      counters_.reads_sent++;
      r.state = ReqState::kDelivered;
      break;
    case Opcode::kClose:
      counters_.closes_sent++;  // completed in the kernel as soon as it is read
      finished_.insert(r.msg_id);
      requests_.erase(r.msg_id);
      break;
  }
  return true;
}

// ---- objects, mounts and application reads ----

int Emulator::object_locked(const std::string& volume, const std::string& cookie) {
  const std::string key = volume + "/" + cookie;
  if (auto it = object_by_key_.find(key); it != object_by_key_.end()) return it->second;
  Object o;
  o.id = next_obj_++;
  o.volume = volume;
  o.cookie = cookie;
  std::string vdir = volume, cname = cookie;
  // Usable as EROFS device= paths later (the kernel splits options at ',').
  for (auto* n : {&vdir, &cname})
    for (char& c : *n)
      if (c == '/' || c == ',') c = '_';
  std::filesystem::create_directories(store_ / vdir);
  o.path = store_ / vdir / cname;
  // A cache file from an earlier run (or mount) is reused if its size matches.
  {
    std::ifstream in(o.path.string() + ".size");
    long long sz;
    if (in >> sz && std::filesystem::exists(o.path)) {
      o.size = uint64_t(sz);
      o.sized = true;
    }
  }
  if (!o.sized) {
    const int fd = ::open(o.path.c_str(), O_CREAT | O_TRUNC | O_WRONLY | O_CLOEXEC, 0600);
    if (fd >= 0) ::close(fd);
  }
  o.rfd = ::open(o.path.c_str(), O_RDONLY | O_CLOEXEC);
  struct stat st;
  if (o.rfd >= 0 && ::fstat(o.rfd, &st) == 0) {
    o.dev = st.st_dev;
    o.ino = st.st_ino;
  }
  o.wd = ::inotify_add_watch(inotify_, o.path.c_str(), IN_CLOSE_WRITE);
  const int id = o.id;
  objects_[id] = std::move(o);
  object_by_key_[key] = id;
  return id;
}

Status Emulator::open_object_locked(std::unique_lock<std::mutex>& lk, int obj, ms timeout) {
  Object& o = objects_[obj];
  o.state = ObjState::kOpening;
  const uint32_t id = queue_locked(uint32_t(Opcode::kOpen), obj);
  kick();
  const bool answered = cv_.wait_for(lk, timeout, [&] {
    return dead_ || objects_[obj].state != ObjState::kOpening || !requests_.count(id);
  });
  Object& now = objects_[obj];
  if (!answered) {
    violation_locked("OPEN of " + now.volume + "/" + now.cookie + " left unanswered");
    return errorf(Errc::kIo, "OPEN of {}/{} left unanswered", now.volume, now.cookie);
  }
  if (dead_) return errorf(Errc::kIo, "cache dead");
  if (now.state != ObjState::kOpen)
    return errorf(Errc::kIo, "OPEN of {}/{} failed with errno {}", now.volume, now.cookie, now.open_error);
  return ok();
}

Result<int> Emulator::mount(const std::string& fsid, const std::string& domain,
                            const std::vector<std::string>& devices) {
  int boot;
  std::string volume = "erofs," + (domain.empty() ? fsid : domain);
  {
    std::unique_lock lk(mu_);
    if (dead_ || !bound_) return sys_error("mount: no bound on-demand cache", ENOBUFS);
    Volume& v = volumes_[volume];
    if (v.fsids.count(fsid)) return sys_error("mount: fsid already in use", domain.empty() ? EBUSY : EEXIST);
    boot = object_locked(volume, fsid);
    NYDUS_TRY(open_object_locked(lk, boot, ms(20000)));
    v.fsids.insert(fsid);
    objects_[boot].users++;
  }
  MountRec m;
  m.volume = volume;
  m.fsid = fsid;
  m.boot = boot;
  m.domain = !domain.empty();
  const int mid = [&] {
    std::lock_guard lk(mu_);
    const int id = next_mount_++;
    mounts_[id] = m;
    return id;
  }();
  auto fail = [&](Error e) -> Result<int> {
    (void)umount(mid);
    return std::unexpected(std::move(e));
  };
  // The superblock, read through the bootstrap object like EROFS does.
  if (auto st = read(boot, 0, kPage); !st) return fail(std::move(st).error().context("cannot read erofs superblock"));
  uint8_t sb[128];
  if (::pread(objects_[boot].rfd, sb, sizeof(sb), kSbOff) != ssize_t(sizeof(sb))) return fail(Error{Errc::kIo, EIO, "short superblock"});
  uint32_t magic;
  uint16_t extra, slotoff;
  std::memcpy(&magic, sb, 4);
  std::memcpy(&extra, sb + kSbExtraDevices, 2);
  std::memcpy(&slotoff, sb + kSbDevtSlotoff, 2);
  if (magic != kErofsMagic) return fail(Error{Errc::kCorrupt, EINVAL, "bad erofs magic"});
  if (sb[kSbBlkszbits] != 12) return fail(Error{Errc::kCorrupt, EINVAL, "unsupported blksize for fscache mode"});
  std::vector<std::string> tags;
  if (extra > 0) {
    const uint64_t toff = uint64_t(slotoff) * kDeviceSlotSize, tlen = uint64_t(extra) * kDeviceSlotSize;
    if (auto st = read(boot, page_down(toff), page_up(toff + tlen) - page_down(toff)); !st)
      return fail(std::move(st).error().context("reading the device table"));
    std::vector<char> table(tlen);
    if (::pread(objects_[boot].rfd, table.data(), tlen, off_t(toff)) != ssize_t(tlen))
      return fail(Error{Errc::kIo, EIO, "short device table"});
    for (uint16_t i = 0; i < extra; ++i) {
      const char* t = table.data() + i * kDeviceSlotSize;
      tags.emplace_back(t, ::strnlen(t, kDeviceTagSize));
    }
  }
  if (!devices.empty()) {
    if (devices.size() != tags.size()) return fail(Error{Errc::kInvalidArgument, EINVAL, "device count mismatch"});
    tags = devices;
  }
  std::unique_lock lk(mu_);
  for (const auto& tag : tags) {
    if (tag.empty()) {
      lk.unlock();
      return fail(Error{Errc::kInvalidArgument, EINVAL, "empty device tag"});
    }
    const int obj = object_locked(volume, tag);
    mounts_[mid].blobs.push_back(obj);
    mounts_[mid].tags.push_back(tag);
    Volume& v = volumes_[volume];
    if (m.domain && v.blob_users[tag]++ > 0) {
      objects_[obj].users++;  // shared in the domain: no second OPEN
      continue;
    }
    if (!m.domain) v.blob_users[tag]++;
    objects_[obj].users++;
    // A failed blob OPEN does not fail the mount: its reads fail later.
    (void)open_object_locked(lk, obj, ms(20000));
  }
  return mid;
}

Status Emulator::umount(int mount_id) {
  std::lock_guard lk(mu_);
  auto it = mounts_.find(mount_id);
  if (it == mounts_.end()) return errorf(Errc::kNotFound, "no mount {}", mount_id);
  MountRec m = it->second;
  mounts_.erase(it);
  Volume& v = volumes_[m.volume];
  auto release = [&](int obj) {
    Object& o = objects_[obj];
    if (--o.users > 0) return;
    if (o.state == ObjState::kOpen) {
      o.state = ObjState::kClosing;
      queue_locked(uint32_t(Opcode::kClose), obj);
    } else if (o.state == ObjState::kFdClosed) {
      o.state = ObjState::kIdle;
    }
  };
  for (size_t i = 0; i < m.blobs.size(); ++i) {
    if (--v.blob_users[m.tags[i]] > 0 && m.domain) {
      objects_[m.blobs[i]].users--;
      continue;
    }
    release(m.blobs[i]);
  }
  release(m.boot);  // blobs first, then the bootstrap, as EROFS does
  v.fsids.erase(m.fsid);
  kick();
  return ok();
}

int Emulator::boot_object(int mount_id) const {
  std::lock_guard lk(mu_);
  auto it = mounts_.find(mount_id);
  return it == mounts_.end() ? 0 : it->second.boot;
}

std::vector<int> Emulator::blob_objects(int mount_id) const {
  std::lock_guard lk(mu_);
  auto it = mounts_.find(mount_id);
  return it == mounts_.end() ? std::vector<int>{} : it->second.blobs;
}

std::vector<std::string> Emulator::blob_tags(int mount_id) const {
  std::lock_guard lk(mu_);
  auto it = mounts_.find(mount_id);
  return it == mounts_.end() ? std::vector<std::string>{} : it->second.tags;
}

bool Emulator::covered_locked(const Object& o, uint64_t off, uint64_t end, uint64_t* first_hole) const {
  const off_t d = ::lseek(o.rfd, off_t(off), SEEK_DATA);
  if (d < 0 || uint64_t(d) > off) {
    *first_hole = off;
    return false;
  }
  const off_t h = ::lseek(o.rfd, off_t(off), SEEK_HOLE);
  if (h < 0 || uint64_t(h) < end) {
    *first_hole = h < 0 ? off : uint64_t(h);
    return false;
  }
  return true;
}

Status Emulator::read(int obj, uint64_t off, uint64_t len, ms timeout) {
  uint64_t start = page_down(off);
  const uint64_t end = page_up(off + len);
  std::unique_lock lk(mu_);
  for (;;) {
    if (dead_) return sys_error("read: cache dead", EIO);
    auto oit = objects_.find(obj);
    if (oit == objects_.end()) return errorf(Errc::kNotFound, "no object {}", obj);
    Object& o = oit->second;
    // An object being reopened serves the read once the daemon answers.
    const bool usable = o.state == ObjState::kOpen ||
                        ((o.state == ObjState::kFdClosed || o.state == ObjState::kOpening) && profile_.reopen);
    if (!usable) return sys_error(fmt::format("read of {}/{}: object not open", o.volume, o.cookie), EIO);
    uint64_t hole;
    if (covered_locked(o, start, end, &hole)) return ok();
    start = page_down(hole);
    const uint32_t id = queue_locked(uint32_t(Opcode::kRead), obj, start, end - start);
    kick();
    const bool answered = cv_.wait_for(lk, timeout, [&] {
      auto it = requests_.find(id);
      return dead_ || it == requests_.end() || it->second.state == ReqState::kDone ||
             it->second.state == ReqState::kFailed;
    });
    auto it = requests_.find(id);
    if (!answered) {
      violation_locked(fmt::format("READ msg {} of {}/{} [{:#x}, {:#x}) left unanswered", id, o.volume, o.cookie,
                                   start, end));
      return errorf(Errc::kIo, "READ msg {} left unanswered", id);
    }
    const bool done = it != requests_.end() && it->second.state == ReqState::kDone;
    if (it != requests_.end()) {
      if (it->second.state == ReqState::kNew || it->second.state == ReqState::kDelivered) finished_.insert(id);
      requests_.erase(it);
    }
    if (!done) {
      counters_.reader_eio++;
      return sys_error("read: request failed", EIO);
    }
    // The kernel re-checks the cache file: nothing at `start` is EIO for the
    // reader; a covered prefix is used and the rest asked for again.
    const off_t d = ::lseek(o.rfd, off_t(start), SEEK_DATA);
    if (d < 0 || uint64_t(d) != start) {
      counters_.reader_eio++;
      return sys_error(fmt::format("read of {}/{} at {:#x}: the daemon wrote nothing", o.volume, o.cookie, start), EIO);
    }
    if (!covered_locked(o, start, end, &hole)) counters_.follow_ups++;
  }
}

Status Emulator::read_all(int obj, unsigned threads, uint64_t max_piece, uint32_t seed, ms timeout) {
  const uint64_t size = page_up(object_size(obj));
  std::vector<std::pair<uint64_t, uint64_t>> pieces;
  std::mt19937 rng(seed);
  for (uint64_t off = 0; off < size;) {
    const uint64_t n = std::min(size - off, page_up(kPage + rng() % std::max<uint64_t>(max_piece, kPage)));
    pieces.emplace_back(off, n);
    off += n;
  }
  std::shuffle(pieces.begin(), pieces.end(), rng);
  std::atomic<size_t> next{0};
  std::mutex emu;
  Status result = ok();
  std::vector<std::thread> ts;
  for (unsigned t = 0; t < std::max(threads, 1u); ++t)
    ts.emplace_back([&] {
      for (size_t i; (i = next++) < pieces.size();) {
        auto st = read(obj, pieces[i].first, pieces[i].second, timeout);
        if (!st) {
          std::lock_guard lk(emu);
          if (result) result = st;
        }
      }
    });
  for (auto& t : ts) t.join();
  return result;
}

std::shared_ptr<std::thread> Emulator::read_async(int obj, uint64_t off, uint64_t len, Status* result, ms timeout) {
  return std::make_shared<std::thread>([=, this] { *result = read(obj, off, len, timeout); });
}

std::filesystem::path Emulator::backing_path(int obj) const {
  std::lock_guard lk(mu_);
  auto it = objects_.find(obj);
  return it == objects_.end() ? std::filesystem::path() : it->second.path;
}

uint64_t Emulator::object_size(int obj) const {
  std::lock_guard lk(mu_);
  auto it = objects_.find(obj);
  return it == objects_.end() ? 0 : it->second.size;
}

Status Emulator::check_no_leaks(ms timeout) {
  std::unique_lock lk(mu_);
  auto leaks = [&] {
    std::vector<std::string> out;
    for (const auto& [id, o] : objects_)
      if ((o.state == ObjState::kIdle || o.state == ObjState::kFailed || o.state == ObjState::kClosing) &&
          o.live_fds > 0)
        out.push_back(o.volume + "/" + o.cookie);
    return out;
  };
  cv_.wait_for(lk, timeout, [&] { return leaks().empty(); });
  auto l = leaks();
  if (l.empty()) return ok();
  std::string s;
  for (auto& x : l) s += " " + x;
  return errorf(Errc::kIo, "anon fds still open after CLOSE or a failed OPEN:{}", s);
}

std::vector<std::string> Emulator::violations() const {
  std::lock_guard lk(mu_);
  return violations_;
}

std::vector<std::string> Emulator::commands() const {
  std::lock_guard lk(mu_);
  return commands_;
}

Counters Emulator::counters() const {
  std::lock_guard lk(mu_);
  return counters_;
}

size_t Emulator::delivered_pending() const {
  std::lock_guard lk(mu_);
  size_t n = 0;
  for (const auto& [id, r] : requests_) n += r.state == ReqState::kDelivered;
  return n;
}

}  // namespace nydus::fscache::emu
