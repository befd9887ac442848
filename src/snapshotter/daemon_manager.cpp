#include "snapshotter/daemon_manager.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/mount.h>
#include <linux/magic.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "api/api_client.h"
#include "snapshotter/image_reference.h"

namespace nydus::snapshotter {
namespace fs = std::filesystem;
namespace {

constexpr std::string_view kFusedevTemplate = R"({
  "device": {
    "backend": {
      "type": "registry",
      "config": {
        "timeout": 5,
        "connect_timeout": 5,
        "retry_limit": 2
      }
    },
    "cache": {
      "type": "blobcache"
    }
  },
  "mode": "direct",
  "digest_validate": false,
  "iostats_files": false,
  "enable_xattr": true,
  "amplify_io": 1048576,
  "fs_prefetch": {
    "enable": true,
    "threads_count": 8,
    "merging_size": 1048576,
    "prefetch_all": true
  }
}
)";

bool is_mountpoint(const std::string& path) {
  struct stat a{}, b{};
  if (::stat(path.c_str(), &a) != 0) return errno == ENOTCONN;  // a dead FUSE mount
  if (::stat((path + "/..").c_str(), &b) != 0) return false;
  return a.st_dev != b.st_dev;
}

// True when `pid` has exited (reaping it if it is our child). A daemon adopted
// from a previous snapshotter process is not our child: kill(0) tells.
bool reaped(pid_t pid) {
  if (pid <= 0) return true;
  int st = 0;
  pid_t r = ::waitpid(pid, &st, WNOHANG);
  if (r == pid) return true;
  if (r == 0) return false;
  if (::kill(pid, 0) != 0) return true;
  // Alive or a zombie its new parent has not reaped yet.
  std::ifstream st_file("/proc/" + std::to_string(pid) + "/stat");
  std::string stat_line;
  std::getline(st_file, stat_line);
  auto close_paren = stat_line.rfind(')');
  return close_paren != std::string::npos && close_paren + 2 < stat_line.size() && stat_line[close_paren + 2] == 'Z';
}

// The pid of the process whose command line has `--apisock <sock>`, or -1.
pid_t find_daemon_pid(const std::string& sock) {
  std::error_code ec;
  const std::string needle = std::string("--apisock") + '\0' + sock + '\0';
  for (fs::directory_iterator it("/proc", ec), end; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    if (name.empty() || !std::all_of(name.begin(), name.end(), ::isdigit)) continue;
    std::ifstream in(it->path() / "cmdline", std::ios::binary);
    std::string cmd((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    if (cmd.find(needle) != std::string::npos) return static_cast<pid_t>(std::stol(name));
  }
  return -1;
}

// argv[1..] of a running process (an adopted daemon's command line, to run it again).
std::vector<std::string> cmdline_args(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/cmdline", std::ios::binary);
  std::string cmd((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::vector<std::string> out;
  for (size_t pos = 0; pos < cmd.size();) {
    size_t end = cmd.find('\0', pos);
    if (end == std::string::npos) end = cmd.size();
    out.push_back(cmd.substr(pos, end - pos));
    pos = end + 1;
  }
  if (!out.empty()) out.erase(out.begin());
  return out;
}

bool is_fanotify(const DaemonInstance& d) { return !d.args.empty() && d.args[0] == "fanotify"; }

// File-backed EROFS refuses files on tmpfs and tmpfs takes no pre-content marks.
SResult<void> check_disk_cache_dir(const std::string& dir) {
  struct statfs sf{};
  if (::statfs(dir.c_str(), &sf) != 0) return snap_error(Code::kInternal, "statfs {}: {}", dir, std::strerror(errno));
  if (sf.f_type == TMPFS_MAGIC || sf.f_type == RAMFS_MAGIC)
    return snap_error(Code::kFailedPrecondition,
                      "--fs-driver fanotify: the blob cache dir {} is on tmpfs/ramfs; EROFS cannot mount its files "
                      "and fanotify cannot mark them: put the snapshotter root on a disk filesystem", dir);
  return {};
}

std::string arg_value(const std::vector<std::string>& args, std::string_view flag) {
  for (size_t i = 0; i + 1 < args.size(); ++i)
    if (args[i] == flag) return args[i + 1];
  return "";
}

std::string tail_of(const std::string& path, size_t max = 2000) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  std::string s = ss.str();
  return s.size() > max ? s.substr(s.size() - max) : s;
}

// Why a daemon died, for the gRPC error: the last "[error]" line of its log
// file (nydusd logs there, not to stdout), else the tail of its stdout.
// Only what this start wrote counts (from `from`: the log is appended to across starts).
std::string exit_reason(const std::string& log_file, uintmax_t from, const std::string& stdout_file) {
  std::error_code ec;
  uintmax_t size = fs::file_size(log_file, ec);
  std::string log = ec || size <= from ? "" : tail_of(log_file, std::min<uintmax_t>(size - from, 64 * 1024));
  std::string last;
  std::istringstream lines(log);
  for (std::string line; std::getline(lines, line);)
    if (line.find("[error]") != std::string::npos) last = line;
  if (last.empty()) last = tail_of(stdout_file, 1000);
  if (last.size() > 1000) last = last.substr(0, 1000) + "...";
  while (!last.empty() && (last.back() == '\n' || last.back() == '\r')) last.pop_back();
  return last.empty() ? "(nothing logged)" : last;
}

// RAFS v6 is an EROFS image (superblock magic at byte 1024); RAFS v5 starts
// with its own magic. Anything else is refused before a nydusd is started.
constexpr uint32_t kErofsMagic = 0xE0F5E1E2;
constexpr uint32_t kRafsV5Magic = 0x52414653;

SResult<void> check_bootstrap(const std::string& path, const std::string& meta_id) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return snap_error(Code::kFailedPrecondition,
                      "snapshot {} is labelled containerd.io/snapshot/nydus-bootstrap but has no bootstrap file "
                      "(image/image.boot): {}", meta_id, std::strerror(errno));
  uint32_t v5 = 0, v6 = 0;
  bool ok = ::pread(fd, &v5, 4, 0) == 4 && v5 == kRafsV5Magic;
  if (!ok) ok = ::pread(fd, &v6, 4, 1024) == 4 && v6 == kErofsMagic;
  ::close(fd);
  if (!ok)
    return snap_error(Code::kFailedPrecondition,
                      "snapshot {} is labelled containerd.io/snapshot/nydus-bootstrap but {} is not a RAFS bootstrap "
                      "(no RAFS v5 or v6 superblock magic)", meta_id, path);
  return {};
}

}  // namespace

std::string_view default_fusedev_template() { return kFusedevTemplate; }

Result<std::string> make_daemon_config(std::string_view template_text, std::string_view image_ref,
                                       const std::string& cache_dir) {
  auto j = nlohmann::json::parse(template_text, nullptr, false);
  if (!j.is_object() || !j.contains("device") || !j["device"].is_object())
    return make_error(Errc::kInvalidArgument, "nydusd config template: no \"device\" object");
  auto& dev = j["device"];
  if (!dev.contains("backend") || !dev["backend"].is_object())
    return make_error(Errc::kInvalidArgument, "nydusd config template: no device.backend");
  auto& backend = dev["backend"];
  std::string type = backend.value("type", "");
  if (!backend.contains("config") || !backend["config"].is_object()) backend["config"] = nlohmann::json::object();
  if (type == "registry") {
    NYDUS_ASSIGN_OR_RETURN(ImageReference ref, parse_image_reference(image_ref));
    std::string host = ref.host == "docker.io" ? "index.docker.io" : ref.host;
    backend["config"]["host"] = host;
    backend["config"]["repo"] = ref.repo;
  } else if (type != "localfs" && type != "oss" && type != "s3") {
    return errorf(Errc::kInvalidArgument, "nydusd config template: unknown backend type {:?}", type);
  }
  if (!dev.contains("cache") || !dev["cache"].is_object()) dev["cache"] = {{"type", "blobcache"}};
  if (!dev["cache"].contains("config") || !dev["cache"]["config"].is_object())
    dev["cache"]["config"] = nlohmann::json::object();
  dev["cache"]["config"]["work_dir"] = cache_dir;
  return j.dump(2);
}

std::string DaemonManager::mountpoint_for(const std::string& meta_id) const {
  return s_.root + "/mnt/" + meta_id;
}

DaemonInstance DaemonManager::shared_image(const DaemonInstance& sd, const fs::path& config_dir) const {
  DaemonInstance d = sd;
  d.meta_id = config_dir.filename().string();
  d.shared = true;
  d.mountpoint = mountpoint_for(d.meta_id);
  d.config_path = (config_dir / "config.json").string();
  return d;
}

std::optional<DaemonInstance> DaemonManager::find(const std::string& meta_id) const {
  std::lock_guard lk(mu_);
  auto it = daemons_.find(meta_id);
  if (it == daemons_.end()) return std::nullopt;
  return it->second;
}

std::vector<DaemonInstance> DaemonManager::instances() const {
  std::lock_guard lk(mu_);
  std::vector<DaemonInstance> out;
  for (const auto& [_, d] : daemons_) out.push_back(d);
  return out;
}

std::vector<std::string> DaemonManager::running() const {
  std::lock_guard lk(mu_);
  std::vector<std::string> out;
  for (const auto& [k, _] : daemons_) out.push_back(k);
  return out;
}

SResult<void> DaemonManager::wait_state(const DaemonInstance& d, uintmax_t log_offset, std::string_view state) {
  auto deadline = std::chrono::steady_clock::now() + s_.ready_timeout;
  std::string last = "no answer";
  while (std::chrono::steady_clock::now() < deadline) {
    if (reaped(d.pid))
      return snap_error(Code::kUnavailable, "nydusd {} exited before {}: {}", d.id, state,
                        exit_reason(s_.root + "/logs/" + d.id + "/nydusd.log", log_offset, s_.root + "/logs/" + d.id + "/stdout.log"));
    if (::access(d.apisock.c_str(), F_OK) == 0) {
      api::ApiClient c(d.apisock, std::chrono::seconds(2));
      if (auto info = c.daemon_info(); info) {
        last = info->value("state", "");
        if (last == state) return {};
      } else {
        last = info.error().to_string();
      }
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return snap_error(Code::kUnavailable, "nydusd {} not {} after {} ms (last: {})", d.id, state,
                    s_.ready_timeout.count(), last);
}

void DaemonManager::kill_process(DaemonInstance& d) {
  if (d.pid > 0 && !reaped(d.pid)) {
    ::kill(d.pid, SIGTERM);
    for (int i = 0; i < 100 && !reaped(d.pid); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(50));
    if (!reaped(d.pid)) {
      ::kill(d.pid, SIGKILL);
      ::waitpid(d.pid, nullptr, 0);
    }
  }
  d.pid = -1;
}

void DaemonManager::terminate(DaemonInstance& d) {
  std::error_code ec;
  if (d.shared && fscache()) {
    unmount_from_fscache(d);
    fs::remove_all(fs::path(d.config_path).parent_path(), ec);
    return;
  }
  if (d.shared) {
    // The image only: the shared daemon keeps serving the others.
    if (d.pid > 0 && !reaped(d.pid)) {
      api::ApiClient c(d.apisock, std::chrono::seconds(10));
      if (auto st = c.umount("/" + d.meta_id); !st)
        spdlog::warn("shared nydusd: umount /{}: {}", d.meta_id, st.error().to_string());
      else if (auto sd = shared_daemon(); sd.pid == d.pid)
        save_state(sd);
    }
    fs::remove_all(fs::path(d.config_path).parent_path(), ec);
    return;
  }
  kill_process(d);
  if (is_mountpoint(d.mountpoint)) ::umount2(d.mountpoint.c_str(), MNT_DETACH);
  {
    // Unmounted first: the held fd is then the connection's last, closed with it.
    std::lock_guard lk(sup_mu_);
    supervisors_.erase(d.id);
  }
  fs::remove(d.mountpoint, ec);
  fs::remove_all(fs::path(d.apisock).parent_path(), ec);
  fs::remove_all(fs::path(d.config_path).parent_path(), ec);
}

SResult<std::string> DaemonManager::ensure(const std::string& meta_id, const std::string& bootstrap,
                                           const std::string& image_ref,
                                           const std::map<std::string, std::string>& labels) {
  std::unique_lock lk(mu_);
  for (;;) {
    if (auto it = starting_.find(meta_id); it != starting_.end()) {
      auto st = it->second;
      cv_.wait(lk, [&] { return st->done; });
      if (!st->result) return std::unexpected(st->result.error());
      continue;  // published: look again (it may have been stopped since)
    }
    if (stopping_.count(meta_id)) {
      cv_.wait(lk, [&] { return !stopping_.count(meta_id); });
      continue;
    }
    break;
  }
  std::optional<DaemonInstance> dead;
  if (auto it = daemons_.find(meta_id); it != daemons_.end()) {
    if (!reaped(it->second.pid)) return it->second.mountpoint;
    // It died: failed over (readers of its mount keep it), or cleaned up and started anew.
    dead = std::move(it->second);
    daemons_.erase(it);
    reported_dead_.erase(meta_id);
  }
  auto st = std::make_shared<StartState>();
  starting_[meta_id] = st;
  lk.unlock();
  SResult<DaemonInstance> started = snap_error(Code::kInternal, "not started");
  if (dead && !dead->shared && supervised(*dead)) started = recover(*dead);
  if (!started) {
    if (dead) terminate(*dead);
    started = start(meta_id, bootstrap, image_ref, labels);
  }
  lk.lock();
  starting_.erase(meta_id);
  if (started) {
    st->result = started->mountpoint;
    daemons_[meta_id] = std::move(*started);
  } else {
    st->result = std::unexpected(started.error());
  }
  st->done = true;
  cv_.notify_all();
  return st->result;
}

SResult<std::string> DaemonManager::image_config(const std::string& image_ref,
                                                const std::map<std::string, std::string>& labels) const {
  std::string tmpl;
  if (s_.config_template.empty()) {
    tmpl = std::string(kFusedevTemplate);
  } else {
    std::ifstream in(s_.config_template, std::ios::binary);
    if (!in) return snap_error(Code::kInternal, "read nydusd config template {}", s_.config_template);
    std::stringstream ss;
    ss << in.rdbuf();
    tmpl = ss.str();
  }
  auto cfg = make_daemon_config(tmpl, image_ref, s_.root + "/cache");
  if (!cfg) return from_error(cfg.error(), "nydusd config for " + image_ref);
  if (s_.keychain)
    if (auto kc = s_.keychain->lookup(image_ref, labels)) {
      cfg = config_with_auth(*cfg, *kc);
      if (!cfg) return from_error(cfg.error(), "nydusd config for " + image_ref);
    }
  return *cfg;
}

namespace {

SResult<void> write_file(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
  out.flush();
  if (!out) return snap_error(Code::kInternal, "write {}", path);
  std::error_code ec;  // it may hold registry credentials
  fs::permissions(path, fs::perms::owner_read | fs::perms::owner_write, ec);
  return {};
}

}  // namespace

SResult<DaemonInstance> DaemonManager::start(const std::string& meta_id, const std::string& bootstrap,
                                             const std::string& image_ref,
                                             const std::map<std::string, std::string>& labels) {
  SNAP_TRY(check_bootstrap(bootstrap, meta_id));
  if (s_.shared || fscache()) return mount_in_shared(meta_id, bootstrap, image_ref, labels);
  auto cfg = image_config(image_ref, labels);
  if (!cfg) return std::unexpected(cfg.error());

  DaemonInstance d;
  d.id = "nydusd-" + meta_id;
  d.meta_id = meta_id;
  d.mountpoint = mountpoint_for(meta_id);
  d.apisock = s_.root + "/socket/" + d.id + "/api.sock";
  d.config_path = s_.root + "/config/" + d.id + "/config.json";
  d.bootstrap = bootstrap;
  std::string log_dir = s_.root + "/logs/" + d.id;
  std::error_code ec;
  for (const auto& dir : {d.mountpoint, fs::path(d.apisock).parent_path().string(),
                          fs::path(d.config_path).parent_path().string(), log_dir, s_.root + "/cache"}) {
    fs::create_directories(dir, ec);
    if (ec) return snap_error(Code::kInternal, "mkdir {}: {}", dir, ec.message());
  }
  if (is_mountpoint(d.mountpoint)) ::umount2(d.mountpoint.c_str(), MNT_DETACH);  // left by a crash
  fs::remove(d.apisock, ec);
  const bool fanotify = s_.fs_driver == "fanotify";
  if (fanotify) SNAP_TRY(check_disk_cache_dir(s_.root + "/cache"));
  SNAP_TRY(write_file(d.config_path, *cfg));
  // nydus-snapshotter's BuildCommand order; --id and --supervisor when supervised
  // (failover, or fanotify: see the header).
  d.args = {fanotify ? "fanotify" : "fuse", "--thread-num", std::to_string(s_.thread_num)};
  const bool supervise = supervised(d);
  if (supervise) d.args.insert(d.args.end(), {"--id", d.id});
  d.args.insert(d.args.end(), {"--config", d.config_path, "--bootstrap", d.bootstrap, "--mountpoint", d.mountpoint,
                               "--apisock", d.apisock, "--log-level", s_.log_level, "--log-rotation-size", "100"});
  if (supervise) {
    if (auto r = open_supervisor(d.id); !r) {
      terminate(d);
      return std::unexpected(r.error());
    }
    d.args.insert(d.args.end(), {"--supervisor", supervisor_path(d.id)});
  }
  append_common_tail(d, log_dir);
  if (auto r = spawn(d, log_dir); !r) {
    terminate(d);
    return std::unexpected(r.error());
  }
  save_state(d);
  return d;
}

void DaemonManager::append_common_tail(DaemonInstance& d, const std::string& log_dir) const {
  // The tail of every nydusd command line, in nydus-snapshotter's order.
  if (!s_.log_to_stdout) {
    d.args.push_back("--log-file");
    d.args.push_back(log_dir + "/nydusd.log");
  }
  d.args.push_back("--failover-policy");
  d.args.push_back("resend");
}

SResult<void> DaemonManager::spawn(DaemonInstance& d, const std::string& log_dir, std::string_view state) {
  std::error_code ec;
  const uintmax_t log_offset = fs::exists(log_dir + "/nydusd.log", ec) ? fs::file_size(log_dir + "/nydusd.log", ec) : 0;
  // Everything the child needs is built before fork (no allocation after it).
  std::vector<char*> argv;
  argv.push_back(const_cast<char*>(s_.nydusd_path.c_str()));
  for (auto& a : d.args) argv.push_back(a.data());
  argv.push_back(nullptr);
  std::string out_path = log_dir + "/stdout.log";
  // What a failed exec leaves in stdout.log, so the start error names it (e.g. a binary being relinked).
  const std::string exec_failed = "[error] cannot execute " + s_.nydusd_path + "\n";
  int out_fd = s_.log_to_stdout ? -1 : ::open(out_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
  int null_fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  pid_t pid = ::fork();
  if (pid < 0) {
    if (out_fd >= 0) ::close(out_fd);
    if (null_fd >= 0) ::close(null_fd);
    return snap_error(Code::kInternal, "fork nydusd: {}", std::strerror(errno));
  }
  if (pid == 0) {
    ::setsid();  // its own session: signals to the snapshotter's group do not reach it
    if (null_fd >= 0) ::dup2(null_fd, 0);
    if (out_fd >= 0) {
      ::dup2(out_fd, 1);
      ::dup2(out_fd, 2);
    }
    ::execv(argv[0], argv.data());
    if (::write(1, exec_failed.data(), exec_failed.size()) < 0) _exit(126);
    _exit(127);
  }
  if (out_fd >= 0) ::close(out_fd);
  if (null_fd >= 0) ::close(null_fd);
  d.pid = pid;
  if (auto r = wait_state(d, log_offset, state); !r) {
    kill_process(d);
    return std::unexpected(r.error());
  }
  return {};
}

DaemonInstance DaemonManager::shared_daemon() const {
  std::lock_guard lk(shared_mu_);
  return shared_;
}

SResult<DaemonInstance> DaemonManager::ensure_shared_daemon() {
  std::lock_guard lk(shared_mu_);
  if (shared_.pid > 0 && !reaped(shared_.pid)) return shared_;
  DaemonInstance d;
  d.id = "shared_daemon";
  d.mountpoint = s_.root + "/mnt";
  d.apisock = s_.root + "/socket/" + d.id + "/api.sock";
  d.config_path = s_.root + "/config/" + d.id + "/config.json";
  std::string log_dir = s_.root + "/logs/" + d.id;
  // A previous shared daemon not taken over (not RUNNING, no mount): it goes,
  // with its images' configs; then its directories are made anew.
  if (pid_t old = find_daemon_pid(d.apisock); old > 0) {
    DaemonInstance o = d;
    o.pid = old;
    terminate(o);
  }
  if (is_mountpoint(d.mountpoint)) ::umount2(d.mountpoint.c_str(), MNT_DETACH);
  std::error_code ec;
  for (const auto& dir : {d.mountpoint, fs::path(d.apisock).parent_path().string(),
                          fs::path(d.config_path).parent_path().string(), log_dir, s_.root + "/cache"}) {
    fs::create_directories(dir, ec);
    if (ec) return snap_error(Code::kInternal, "mkdir {}: {}", dir, ec.message());
  }
  fs::remove(d.apisock, ec);
  // As upstream's initSharedDaemon: no --config/--bootstrap, images come by the mount API
  // (fscache: by the blob API, and the snapshotter mounts each EROFS; <root>/mnt stays a plain dir).
  const bool failover = s_.recover_policy == "failover";
  if (fscache()) {
    const std::string cache = s_.root + "/fscache";  // cachefiles' own tree: not the blob cache GC's <root>/cache
    fs::create_directories(cache, ec);
    if (ec) return snap_error(Code::kInternal, "mkdir {}: {}", cache, ec.message());
    d.args = {"singleton", "--fscache", cache, "--fscache-threads", std::to_string(s_.thread_num)};
  } else {
    d.args = {"fuse", "--thread-num", std::to_string(s_.thread_num)};
  }
  if (failover) d.args.insert(d.args.end(), {"--id", d.id});
  if (!fscache()) d.args.insert(d.args.end(), {"--mountpoint", d.mountpoint});
  d.args.insert(d.args.end(), {"--apisock", d.apisock, "--log-level", s_.log_level, "--log-rotation-size", "100"});
  if (failover) {
    if (auto r = open_supervisor(d.id); !r) return std::unexpected(r.error());
    d.args.insert(d.args.end(), {"--supervisor", supervisor_path(d.id)});
  }
  append_common_tail(d, log_dir);
  if (auto r = spawn(d, log_dir); !r) {
    terminate(d);
    return std::unexpected(r.error());
  }
  save_state(d);
  shared_ = d;
  return d;
}

SResult<DaemonInstance> DaemonManager::mount_in_shared(const std::string& meta_id, const std::string& bootstrap,
                                                       const std::string& image_ref,
                                                       const std::map<std::string, std::string>& labels) {
  auto cfg = image_config(image_ref, labels);
  if (!cfg) return std::unexpected(cfg.error());
  auto sd = ensure_shared_daemon();
  if (!sd) return std::unexpected(sd.error());
  if (fscache()) return mount_in_fscache(*sd, meta_id, bootstrap, *cfg);
  DaemonInstance d;
  d.id = sd->id;
  d.meta_id = meta_id;
  d.pid = sd->pid;
  d.shared = true;
  d.mountpoint = mountpoint_for(meta_id);
  d.apisock = sd->apisock;
  d.config_path = s_.root + "/config/" + sd->id + "/" + meta_id + "/config.json";
  d.bootstrap = bootstrap;
  std::error_code ec;
  fs::create_directories(fs::path(d.config_path).parent_path(), ec);
  if (ec) return snap_error(Code::kInternal, "mkdir {}: {}", d.config_path, ec.message());
  SNAP_TRY(write_file(d.config_path, *cfg));
  api::ApiClient c(d.apisock, s_.ready_timeout);
  const std::string rel = "/" + meta_id;  // upstream's Rafs.RelaMountpoint
  if (auto st = c.mount(rel, bootstrap, *cfg); !st) {
    fs::remove_all(fs::path(d.config_path).parent_path(), ec);
    return snap_error(Code::kUnavailable, "shared nydusd: mount {} at {}: {}", bootstrap, rel,
                      st.error().to_string());
  }
  save_state(*sd);  // the supervisor's state lists the images a failover mounts again
  return d;
}

SResult<std::vector<std::string>> DaemonManager::adopt_running() {
  if (s_.shared || fscache()) {
    std::vector<std::string> adopted = adopt_shared_images();
    auto sd = ensure_shared_daemon();  // started here when none was taken over
    if (!sd) return std::unexpected(sd.error());
    return adopted;
  }
  std::lock_guard lk(mu_);
  std::vector<std::string> adopted;
  std::error_code ec;
  for (fs::directory_iterator it(s_.root + "/socket", ec), end; !ec && it != end; it.increment(ec)) {
    const std::string id = it->path().filename().string();
    if (!id.starts_with("nydusd-")) continue;
    const std::string meta_id = id.substr(7);
    DaemonInstance d;
    d.id = id;
    d.meta_id = meta_id;
    d.mountpoint = mountpoint_for(meta_id);
    d.apisock = (it->path() / "api.sock").string();
    d.config_path = s_.root + "/config/" + id + "/config.json";
    d.pid = find_daemon_pid(d.apisock);
    bool running = false;
    if (d.pid > 0) {
      api::ApiClient c(d.apisock, std::chrono::seconds(2));
      auto info = c.daemon_info();
      running = info && info->value("state", "") == "RUNNING" && is_mountpoint(d.mountpoint);
    }
    if (!running) {
      terminate(d);  // half-started or dead: kill what is left, unmount, remove its files
      continue;
    }
    d.args = cmdline_args(d.pid);  // what a restart runs again
    d.bootstrap = arg_value(d.args, "--bootstrap");
    daemons_[meta_id] = d;
    adopted.push_back(meta_id);
  }
  // The supervisors died with the previous process: each daemon hands its fd over again.
  {
    for (const auto& id : adopted) {
      const DaemonInstance& d = daemons_[id];
      if (!supervised(d)) continue;
      if (arg_value(d.args, "--supervisor") != supervisor_path(d.id)) {
        spdlog::warn("nydusd {} was started without --supervisor {}: if it dies it is restarted, not failed over",
                     d.id, supervisor_path(d.id));
        continue;
      }
      if (auto r = open_supervisor(d.id); !r) {
        spdlog::warn("nydusd {}: {}", d.id, r.error().message);
        continue;
      }
      save_state(d);
    }
  }
  return adopted;
}

std::vector<std::string> DaemonManager::adopt_shared_images() {
  std::vector<std::string> adopted;
  DaemonInstance sd;
  sd.id = "shared_daemon";
  sd.mountpoint = s_.root + "/mnt";
  sd.apisock = s_.root + "/socket/" + sd.id + "/api.sock";
  sd.pid = find_daemon_pid(sd.apisock);
  if (sd.pid <= 0) return adopted;
  api::ApiClient c(sd.apisock, std::chrono::seconds(2));
  auto info = c.daemon_info();
  // (An fscache daemon mounts nothing itself: each image is an EROFS mount of the snapshotter's.)
  if (!info || info->value("state", "") != "RUNNING" || (!fscache() && !is_mountpoint(sd.mountpoint)))
    return adopted;  // ensure_shared_daemon() replaces it
  sd.args = cmdline_args(sd.pid);
  {
    std::lock_guard lk(shared_mu_);
    shared_ = sd;
  }
  if (s_.recover_policy == "failover") {
    if (arg_value(sd.args, "--supervisor") != supervisor_path(sd.id))
      spdlog::warn("the shared nydusd was started without --supervisor {}: it cannot be failed over",
                   supervisor_path(sd.id));
    else if (auto r = open_supervisor(sd.id); !r)
      spdlog::warn("shared nydusd: {}", r.error().message);
    else
      save_state(sd);
  }
  if (fscache()) return adopt_fscache_images(sd);
  // Its images: the configs we wrote, each still served at <root>/mnt/<id>
  // (the shared FUSE root lists exactly the mounted images).
  std::lock_guard lk(mu_);
  std::error_code ec;
  for (fs::directory_iterator it(s_.root + "/config/" + sd.id, ec), end; !ec && it != end; it.increment(ec)) {
    if (!it->is_directory()) continue;
    DaemonInstance d = shared_image(sd, it->path());
    std::error_code e2;
    if (!fs::is_directory(d.mountpoint, e2)) {
      fs::remove_all(it->path(), e2);
      continue;
    }
    daemons_[d.meta_id] = d;
    adopted.push_back(d.meta_id);
  }
  return adopted;
}

SResult<void> DaemonManager::stop(const std::string& meta_id) {
  if (auto d = detach(meta_id)) finish_stop(std::move(*d));
  return {};
}

std::optional<DaemonInstance> DaemonManager::detach(const std::string& meta_id) {
  std::lock_guard lk(mu_);
  auto it = daemons_.find(meta_id);
  if (it == daemons_.end()) return std::nullopt;
  DaemonInstance d = std::move(it->second);
  daemons_.erase(it);
  stopping_.insert(meta_id);
  return d;
}

void DaemonManager::finish_stop(DaemonInstance d) {
  terminate(d);
  std::lock_guard lk(mu_);
  stopping_.erase(d.meta_id);
  cv_.notify_all();
}

}  // namespace nydus::snapshotter

namespace nydus::snapshotter {

DaemonManager::~DaemonManager() {
  {
    std::lock_guard lk(monitor_mu_);
    monitor_stop_ = true;
  }
  monitor_cv_.notify_all();
  if (monitor_.joinable()) monitor_.join();
}

void DaemonManager::start_monitor() {
  if (!monitor_.joinable()) monitor_ = std::thread([this] { monitor(); });
}

std::string DaemonManager::supervisor_path(const std::string& daemon_id) const {
  return s_.root + "/supervisor/" + daemon_id + ".sock";  // upstream's SupervisorsSet layout
}

SResult<void> DaemonManager::open_supervisor(const std::string& daemon_id) {
  std::error_code ec;
  fs::create_directories(s_.root + "/supervisor", ec);
  if (ec) return snap_error(Code::kInternal, "mkdir {}/supervisor: {}", s_.root, ec.message());
  auto sup = Supervisor::start(supervisor_path(daemon_id));
  if (!sup) return std::unexpected(sup.error());
  std::lock_guard lk(sup_mu_);
  supervisors_[daemon_id] = std::move(*sup);
  return {};
}

bool DaemonManager::supervised(const DaemonInstance& d) const {
  return s_.recover_policy == "failover" || is_fanotify(d);
}

bool DaemonManager::supervisor_holds_state(const std::string& daemon_id) const {
  std::lock_guard lk(sup_mu_);
  auto it = supervisors_.find(daemon_id);
  return it != supervisors_.end() && it->second->holds_state();
}

void DaemonManager::save_state(const DaemonInstance& d) {
  if (d.shared ? s_.recover_policy != "failover" : !supervised(d)) return;
  api::ApiClient c(d.apisock, std::chrono::seconds(10));
  // RUNNING may come just before the kernel's FUSE_INIT (what the state holds): retried a while.
  Status st = c.send_fd();
  for (int i = 0; !st && i < 30; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    st = c.send_fd();
  }
  if (!st) {
    spdlog::warn("nydusd {}: sendfd to its supervisor failed ({}): a death of it cannot be failed over", d.id,
                 st.error().to_string());
    return;
  }
  // The supervisor's thread takes the message a moment after the daemon sent it.
  for (int i = 0; i < 100 && !supervisor_holds_state(d.id); ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  spdlog::debug("nydusd {}: its supervisor holds the {}", d.id,
                is_fanotify(d)                                  ? "fanotify group fd"
                : !d.args.empty() && d.args[0] == "singleton" ? "/dev/cachefiles fd"
                                                                : "FUSE fd");
}

SResult<DaemonInstance> DaemonManager::recover(const DaemonInstance& dead, bool* took_over) {
  if (took_over) *took_over = false;
  if (dead.args.empty() || (dead.args[0] != "fuse" && dead.args[0] != "fanotify" && dead.args[0] != "singleton"))
    return snap_error(Code::kInternal, "nydusd {}: its command line is unknown", dead.id);
  const bool fanotify = is_fanotify(dead);
  const std::string log_dir = s_.root + "/logs/" + dead.id;
  DaemonInstance d = dead;
  d.pid = -1;
  std::vector<std::string> args;
  for (const auto& a : dead.args)
    if (a != "--upgrade") args.push_back(a);
  std::error_code ec;
  if (fanotify && s_.recover_policy != "failover")
    spdlog::info("nydusd {}: recover policy {} acts as failover for a fanotify daemon (a new daemon on a new mount "
                 "cannot replace the EROFS mount running containers read)", d.id, s_.recover_policy);
  if ((dead.shared ? s_.recover_policy == "failover" : supervised(dead)) && supervisor_holds_state(d.id)) {
    // upstream's doDaemonFailover: a new daemon in upgrade mode (state INIT)
    // takes the connection over from the supervisor and serves it again; the
    // requests the dead one had read are sent again (--failover-policy resend).
    d.args = args;
    d.args.insert(d.args.begin() + 1, "--upgrade");
    fs::remove(d.apisock, ec);
    spdlog::debug("nydusd {}: starting its failover daemon", d.id);
    auto r = spawn(d, log_dir, "INIT");
    if (r) {
      api::ApiClient c(d.apisock, s_.ready_timeout);
      Status st = c.takeover();
      if (st) st = c.start();
      if (!st) r = from_error(st.error(), "takeover");
    }
    if (r) r = wait_state(d, 0, "RUNNING");
    if (r) {
      spdlog::info("nydusd {}: failover done, pid {} serves {} ({} taken over)", d.id, d.pid, d.mountpoint,
                   fanotify                     ? "the fanotify group of its EROFS mount"
                   : d.args[0] == "singleton" ? "the /dev/cachefiles fd under the images' EROFS mounts"
                                              : "the FUSE connection");
      save_state(d);
      if (took_over) *took_over = true;
      return d;
    }
    spdlog::warn("nydusd {}: failover failed ({}); restarting it instead", d.id, r.error().message);
    kill_process(d);
  }
  // upstream's doDaemonRestart: clear what the dead daemon left, same command line again.
  d.args = args;
  if (is_mountpoint(d.mountpoint)) ::umount2(d.mountpoint.c_str(), MNT_DETACH);
  if (fanotify) {
    // The old group goes with its supervisor (after the detach: no new opens of
    // that mount); readers still holding files of it see unfilled ranges as zeros.
    spdlog::warn("nydusd {}: not taken over; its EROFS mount is detached and a new daemon mounts anew (containers "
                 "already running on the old mount may read unfilled ranges as zeros)", d.id);
    {
      std::lock_guard lk(sup_mu_);
      supervisors_.erase(d.id);
    }
    SNAP_TRY(open_supervisor(d.id));
  }
  fs::remove(d.apisock, ec);
  SNAP_TRY(spawn(d, log_dir));
  spdlog::info("nydusd {}: restarted, pid {} serves {}", d.id, d.pid, d.mountpoint);
  save_state(d);
  return d;
}

void DaemonManager::monitor() {
  for (;;) {
    {
      std::unique_lock lk(monitor_mu_);
      if (monitor_cv_.wait_for(lk, std::chrono::milliseconds(100), [this] { return monitor_stop_; })) return;
    }
    std::vector<std::pair<DaemonInstance, std::shared_ptr<StartState>>> dead;
    {
      std::lock_guard lk(mu_);
      for (auto it = daemons_.begin(); it != daemons_.end();) {
        const auto& [id, d] = *it;
        if (d.shared || starting_.count(id) || stopping_.count(id) || !reaped(d.pid)) {
          ++it;
          continue;
        }
        if (s_.recover_policy != "restart" && s_.recover_policy != "failover") {
          if (reported_dead_.insert(id).second)
            spdlog::warn("nydusd {} (pid {}) died; recover policy {}: left so{}", d.id, d.pid, s_.recover_policy,
                         is_fanotify(d) ? " (its supervisor keeps the fanotify group: readers of its EROFS mount "
                                          "wait; the next Prepare/Mounts takes it over)"
                                        : "");
          ++it;
          continue;
        }
        // Published as starting: an ensure() for it waits for this recovery.
        auto st = std::make_shared<StartState>();
        starting_[id] = st;
        dead.emplace_back(std::move(it->second), st);
        it = daemons_.erase(it);
      }
    }
    if ((s_.shared || fscache()) && s_.recover_policy == "failover") fail_over_shared();
    for (auto& [d, st] : dead) {
      spdlog::warn("nydusd {} (pid {}) died; recover policy {}", d.id, d.pid, s_.recover_policy);
      auto r = recover(d);
      if (!r) {
        spdlog::warn("nydusd {}: not recovered ({}); the next Prepare/Mounts starts it", d.id, r.error().message);
        terminate(d);
      }
      std::lock_guard lk(mu_);
      starting_.erase(d.meta_id);
      if (r) {
        st->result = r->mountpoint;
        daemons_[d.meta_id] = std::move(*r);
      } else {
        st->result = std::unexpected(r.error());
      }
      st->done = true;
      cv_.notify_all();
    }
  }
}

}  // namespace nydus::snapshotter

namespace nydus::snapshotter {

void DaemonManager::fail_over_shared() {
  const DaemonInstance sd = shared_daemon();
  if (sd.pid <= 0 || !reaped(sd.pid)) return;
  spdlog::warn("shared nydusd (pid {}) died; recover policy failover", sd.pid);
  // Its images wait (an ensure() for one waits) until the connection is served again.
  std::vector<std::pair<DaemonInstance, std::shared_ptr<StartState>>> images;
  {
    std::lock_guard lk(mu_);
    for (auto it = daemons_.begin(); it != daemons_.end();) {
      if (!it->second.shared || starting_.count(it->first) || stopping_.count(it->first)) {
        ++it;
        continue;
      }
      auto st = std::make_shared<StartState>();
      starting_[it->first] = st;
      images.emplace_back(std::move(it->second), st);
      it = daemons_.erase(it);
    }
  }
  bool took_over = false;
  SResult<DaemonInstance> r = snap_error(Code::kUnavailable, "the shared nydusd died");
  spdlog::debug("shared nydusd failover: {} images wait", images.size());
  {
    std::lock_guard lk(shared_mu_);
    spdlog::debug("shared nydusd failover: recovering");
    if (shared_.pid == sd.pid) {
      r = recover(shared_, &took_over);
      if (r) shared_ = *r;
    }
  }
  if (!r) spdlog::warn("shared nydusd: not recovered ({}); the next Prepare starts it", r.error().message);
  // Taken over: the new daemon serves every image the handed state listed. Else
  // (restarted empty, or not at all) the images are forgotten: the next
  // Prepare/Mounts of each mounts it again.
  std::lock_guard lk(mu_);
  for (auto& [d, st] : images) {
    starting_.erase(d.meta_id);
    if (took_over) {
      d.pid = r->pid;
      st->result = d.mountpoint;
      daemons_[d.meta_id] = std::move(d);
    } else {
      st->result = snap_error(Code::kUnavailable, "the shared nydusd died; it was not failed over");
    }
    st->done = true;
  }
  cv_.notify_all();
}

}  // namespace nydus::snapshotter
