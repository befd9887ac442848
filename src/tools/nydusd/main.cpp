// nydusd: mounts RAFS images with FUSE and fetches their data lazily.
//   nydusd [fuse] --mountpoint M [--bootstrap B (--config C | --localfs-dir D)] [--apisock S] ...
//                                       (without a bootstrap: a shared daemon, images mounted at
//                                       M/<id> through POST /api/v1/mount?mountpoint=/<id>)
//   nydusd singleton --apisock S        (images mounted/umounted through the API)
//   nydusd fanotify --bootstrap B --config C --mountpoint M [--apisock S]
//                                       (kernel EROFS + fanotify pre-content fills; see src/fanotify/README.md)
//   nydusd [singleton] --fscache DIR --apisock S [--fscache-tag T] [--fscache-threads N]
//                                       (kernel EROFS over cachefiles on-demand; see src/fscache/README.md)
#include <malloc.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <optional>
#include <memory>
#include <string>
#include <thread>

#include <fstream>
#include <sstream>

#include <CLI/CLI.hpp>
#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/sinks/rotating_file_sink.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include "api/api_routes.h"
#include "api/http_server.h"
#include "common/build_info.h"
#include "common/file_util.h"
#include "daemon/daemon.h"
#include "fanotify/fanotify_image.h"
#include "fscache/fscache_daemon.h"
#include "runtime/config.h"
#include "storage/blob_cache.h"

namespace {

// The API's exit request becomes a SIGTERM to ourselves (one shutdown path),
// sent a moment later so the HTTP reply to the request is written first. It
// is remembered: after a sendfd, an exit asked through the API is the old
// half of an upgrade and leaves the mount to the new daemon (a signal
// always unmounts).
std::atomic<bool> g_exit_by_api{false};
nydus::Status exit_soon() {
  g_exit_by_api = true;
  std::thread([] {
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    kill(getpid(), SIGTERM);
  }).detach();
  return nydus::ok();
}

struct Args {
  std::string bootstrap;
  std::string config;
  std::string mountpoint;
  std::string apisock;
  std::string id;
  std::string log_level = "info";
  std::string log_file;
  uint64_t log_rotation_mb = 0;      // 0: never rotate
  uint64_t rlimit_nofile = 1000000;  // 0: leave RLIMIT_NOFILE as it is
  unsigned threads = 4;
  std::string supervisor;
  bool upgrade = false;
  std::string failover_policy = "resend";
  std::string fuse_uring;  // auto|on|off: FUSE over io_uring (empty: NYDUSD_FUSE_URING, else auto)
  std::string localfs_dir;
  std::string virtual_mountpoint = "/";
  std::string prefetch_list;  // a file naming image paths, one a line
  std::string fscache_dir;
  std::string fscache_tag;
  unsigned fscache_threads = 4;
  std::string fscache_device = "/dev/cachefiles";
};

void add_common(CLI::App* app, Args& a) {
  app->add_option("-A,--apisock", a.apisock, "unix socket of the HTTP API");
  app->add_option("-I,--id", a.id, "daemon id");
  app->add_option("-l,--log-level", a.log_level, "trace, debug, info, warn, error")
      ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error"}));
  app->add_option("-L,--log-file", a.log_file,
                  "log to this file instead of stderr (\".log\" is added to a name without an extension)");
  app->add_option("--log-rotation-size", a.log_rotation_mb, "rotate the log file at this many MB (0: never)");
  app->add_option("--rlimit-nofile", a.rlimit_nofile,
                  "raise the open-file limit to this (capped at fs.file-max; 0 leaves it unchanged)");
  app->add_option("-T,--thread-num,--fuse-threads", a.threads, "FUSE worker threads")->check(CLI::Range(1u, 1024u));
  app->add_option("-S,--supervisor", a.supervisor, "supervisor socket for live upgrade and failover");
  app->add_flag("--upgrade", a.upgrade, "start without serving; take over from the supervisor (PUT .../takeover)");
  app->add_option("--failover-policy", a.failover_policy,
                  "resend (default: requests a crashed daemon held are sent again; Linux 6.9+), flush or none "
                  "(both: they fail with EIO)")
      ->check(CLI::IsMember({"none", "resend", "flush"}));
  app->add_option("--fuse-uring", a.fuse_uring,
                  "FUSE over io_uring (Linux 6.14+, fuse module parameter enable_uring=Y): auto (default: when the "
                  "kernel offers it), on, off")
      ->check(CLI::IsMember({"auto", "on", "off"}));
}

void add_fscache(CLI::App* app, Args& a) {
  app->add_option("-F,--fscache", a.fscache_dir, "fscache mode: the cachefiles working directory (ext4/xfs/btrfs)");
  app->add_option("--fscache-tag", a.fscache_tag, "fscache cache tag");
  app->add_option("--fscache-threads", a.fscache_threads, "fscache READ worker threads")->check(CLI::Range(1u, 1024u));
  app->add_option("--fscache-device", a.fscache_device,
                  "the cachefiles device, or a kernel emulator's unix socket (tests)");
}

void add_fuse(CLI::App* app, Args& a) {
  app->add_option("-B,--bootstrap", a.bootstrap, "RAFS bootstrap (metadata) file");
  app->add_option("-C,--config", a.config, "JSON config of storage and rafs");
  app->add_option("-D,--localfs-dir", a.localfs_dir,
                  "serve the blobs from this directory (instead of --config; cache files go there too)");
  app->add_option("-M,--mountpoint", a.mountpoint, "where to mount the FUSE filesystem");
  app->add_option("-m,--virtual-mountpoint", a.virtual_mountpoint,
                  "where the bootstrap's image appears inside the FUSE filesystem (default /)");
  app->add_option("--prefetch-files", a.prefetch_list, "a file listing image paths to prefetch, one a line");
}

// --prefetch-files: image paths, one a line, blank lines skipped.
nydus::Result<std::vector<std::string>> read_prefetch_list(const std::string& path) {
  std::vector<std::string> out;
  if (path.empty()) return out;
  std::ifstream in(path);
  if (!in) return nydus::errorf(nydus::Errc::kInvalidArgument, "the prefetch-files arg is not a file path: {}", path);
  std::string line;
  while (std::getline(in, line)) {
    const auto b = line.find_first_not_of(" \t\r");
    if (b == std::string::npos) continue;
    const auto e = line.find_last_not_of(" \t\r");
    out.push_back(line.substr(b, e - b + 1));
    if (out.size() > 1'000'000) return nydus::errorf(nydus::Errc::kInvalidArgument, "{}: too many paths", path);
  }
  return out;
}

// The image's config: --config (with IMAGE_PULL_AUTH applied), or upstream's
// fixed localfs config for --localfs-dir.
nydus::Result<nydus::runtime::DaemonConfig> image_config(const Args& a) {
  if (!a.config.empty()) return nydus::runtime::load_config(a.config);
  if (a.localfs_dir.empty()) return nydus::errorf(nydus::Errc::kInvalidArgument, "both --config and --localfs-dir are missing");
  const nlohmann::json j{{"device", {{"backend", {{"type", "localfs"}, {"config", {{"dir", a.localfs_dir}}}}},
                                     {"cache", {{"type", "blobcache"},
                                                {"config", {{"compressed", false}, {"work_dir", a.localfs_dir}}}}}}},
                         {"mode", "direct"},
                         {"digest_validate", false},
                         {"iostats_files", false}};
  return nydus::runtime::parse_config(j.dump());
}

// What upstream's --version prints (nydus-snapshotter parses "Git Commit:").
std::string version_text() {
  const auto& b = nydus::build_info();
  return fmt::format("\rVersion: \t{}\nGit Commit: \t{}\nBuild Time: \t{}\nProfile: \t{}\nRustc: \t\t{}\n",
                     b.package_ver, b.git_commit, b.build_time, b.profile, b.compiler);
}

// Upstream raises RLIMIT_NOFILE to --rlimit-nofile, never past fs.file-max.
void raise_nofile(uint64_t want) {
  if (want == 0) return;
  uint64_t file_max = want;
  if (std::ifstream f("/proc/sys/fs/file-max"); f) f >> file_max;
  want = std::min(want, file_max);
  rlimit rl{};
  if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur >= want) return;
  rlimit nl{want, std::max<rlim_t>(rl.rlim_max, want)};
  if (setrlimit(RLIMIT_NOFILE, &nl) != 0) {
    nl.rlim_max = rl.rlim_max;  // not allowed above the hard limit: as far as it goes
    nl.rlim_cur = std::min<rlim_t>(want, rl.rlim_max);
    if (setrlimit(RLIMIT_NOFILE, &nl) != 0) spdlog::warn("cannot raise RLIMIT_NOFILE to {}", want);
  }
}

void setup_logging(const Args& a) {
  std::shared_ptr<spdlog::logger> lg;
  if (!a.log_file.empty()) {
    std::string file = a.log_file;
    if (std::filesystem::path(file).extension().empty()) file += ".log";  // as upstream
    try {
      if (a.log_rotation_mb > 0)
        lg = spdlog::rotating_logger_mt("nydusd", file, a.log_rotation_mb << 20, 5);
      else
        lg = spdlog::basic_logger_mt("nydusd", file);
    } catch (const spdlog::spdlog_ex& e) {
      std::fprintf(stderr, "cannot open log file %s: %s\n", file.c_str(), e.what());
      std::exit(1);
    }
  } else {
    lg = spdlog::stderr_color_mt("nydusd");
  }
  spdlog::set_default_logger(lg);
  spdlog::set_level(spdlog::level::from_str(a.log_level));
  spdlog::flush_on(spdlog::level::info);
}

// Signals are taken synchronously by the main thread (wait_for_shutdown):
// block them before any thread starts so every thread inherits the mask.
sigset_t block_shutdown_signals() {
  sigset_t sigs;
  sigemptyset(&sigs);
  sigaddset(&sigs, SIGTERM);
  sigaddset(&sigs, SIGINT);
  sigaddset(&sigs, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &sigs, nullptr);
  signal(SIGPIPE, SIG_IGN);
  return sigs;
}

// The HTTP API on `sock` over `api` (null when no socket is asked for); false
// when it cannot listen.
bool start_api(const std::string& sock, nydus::api::DaemonApi& api, std::unique_ptr<nydus::api::HttpServer>& out) {
  if (sock.empty()) return true;
  nydus::api::Router router;
  nydus::api::ApiHooks hooks;
  hooks.on_exit = exit_soon;
  nydus::api::register_api_routes(router, api, hooks);
  out = std::make_unique<nydus::api::HttpServer>(sock, std::move(router));
  if (auto st = out->start(); !st) {
    spdlog::error("API server on {}: {}", sock, st.error().message);
    return false;
  }
  spdlog::info("API listening on {}", sock);
  return true;
}

// Serve until a signal, or until `gone` names a reason the daemon has nothing
// left to serve (polled every 200 ms). Returns 0 for a signal, 1 otherwise
// when `gone_is_error`.
int wait_for_shutdown(const sigset_t& sigs, const std::function<std::optional<std::string>()>& gone,
                      bool gone_is_error = false) {
  for (;;) {
    timespec ts{0, 200'000'000};
    const int sig = sigtimedwait(&sigs, nullptr, &ts);
    if (sig > 0) {
      spdlog::info("signal {}: shutting down", sig);
      return 0;
    }
    if (auto why = gone()) {
      (gone_is_error ? spdlog::error("{}; exiting", *why) : spdlog::info("{}; exiting", *why));
      return gone_is_error ? 1 : 0;
    }
  }
}

int run(Args& a, bool singleton) {
  setup_logging(a);
  if (a.upgrade && (singleton || a.supervisor.empty())) {
    spdlog::error("--upgrade takes over a FUSE connection: it needs --supervisor and --mountpoint "
                  "(or singleton --fscache)");
    return 1;
  }
  raise_nofile(a.rlimit_nofile);
  if (singleton) {
    if (a.apisock.empty()) {
      spdlog::error("singleton mode needs --apisock");
      return 1;
    }
  } else if (a.mountpoint.empty()) {
    spdlog::error("Mountpoint must be provided for FUSE server! (--mountpoint; or `nydusd singleton --apisock`)");
    return 1;
  }
  // Without a bootstrap the FUSE daemon is shared: an empty directory until
  // images are mounted inside it through the API.
  std::optional<nydus::runtime::DaemonConfig> cfg;
  std::vector<std::string> prefetch;
  if (!singleton && !a.bootstrap.empty()) {
    auto c = image_config(a);
    auto p = read_prefetch_list(a.prefetch_list);
    if (!c || !p) {
      spdlog::error("{}", !c ? c.error().message : p.error().message);
      return 1;
    }
    cfg = std::move(*c);
    prefetch = std::move(*p);
  }
  const sigset_t sigs = block_shutdown_signals();

  nydus::daemon::DaemonOptions dopts;
  dopts.id = a.id;
  dopts.apisock = a.apisock;
  // Never a stat of the mountpoint itself: a failover daemon starts while
  // the connection there has nobody to answer it (shared daemons' pseudo
  // root keeps its attributes 1 s, and the stat then hung for good).
  if (!singleton) dopts.fuse_mountpoint = nydus::resolve_parent(a.mountpoint);
  dopts.fuse_threads = a.threads;
  dopts.singleton = singleton;
  dopts.supervisor = a.supervisor;
  dopts.upgrade = a.upgrade;
  dopts.failover_resend = a.failover_policy == "resend";
  dopts.fallback_work_dir = std::filesystem::temp_directory_path() /
                            fmt::format("nydusd-cache-{}", a.id.empty() ? std::to_string(getpid()) : a.id);
  // fs_type "fanotify" through the API: the kernel's EROFS over our cache files.
  dopts.mounters["fanotify"] = [threads = a.threads, id = a.id](const nydus::runtime::ExternalMountRequest& r)
      -> nydus::Result<std::unique_ptr<nydus::runtime::ExternalMount>> {
    nydus::fanotify::FanotifyImageOptions o;
    o.bootstrap = r.bootstrap;
    o.mountpoint = r.mountpoint;
    o.config = r.config;
    // Not under /tmp: file-backed EROFS cannot use files on tmpfs.
    o.fallback_work_dir = std::filesystem::path("/var/tmp") /
                          fmt::format("nydusd-cache-{}", id.empty() ? std::to_string(getpid()) : id) /
                          r.fallback_work_dir.filename();
    o.workers = threads;
    o.prefetch_files = r.prefetch_files;
    NYDUS_ASSIGN_OR_RETURN(std::unique_ptr<nydus::fanotify::FanotifyImage> img,
                           nydus::fanotify::FanotifyImage::mount(o));
    return std::unique_ptr<nydus::runtime::ExternalMount>(std::move(img));
  };
  if (a.upgrade) {
    // Serve nothing until PUT /api/v1/daemon/fuse/takeover brings the connection.
    dopts.takeover_bootstrap = a.bootstrap;
    if (cfg) dopts.takeover_config = *cfg;
  }
  auto daemon = std::make_unique<nydus::daemon::Daemon>(dopts);

  if (a.upgrade) {
    spdlog::info("waiting to take over {} from {}", a.mountpoint, a.supervisor);
  } else if (!singleton) {
    // The image joins the connection before the kernel sees the mount: a
    // reader never finds an empty root where the image should be.
    if (cfg) {
      if (auto st = daemon->mount_image(a.virtual_mountpoint, a.bootstrap, *cfg, prefetch); !st) {
        spdlog::error("mount {} at {}{}: {}", a.bootstrap, a.mountpoint, a.virtual_mountpoint, st.error().message);
        daemon->shutdown();
        return 1;
      }
    }
    if (auto st = daemon->start_fuse(); !st) {
      spdlog::error("mount FUSE at {}: {}", a.mountpoint, st.error().message);
      daemon->shutdown();
      return 1;
    }
    daemon->set_state("RUNNING");
  } else {
    daemon->set_state("RUNNING");
  }

  std::unique_ptr<nydus::api::HttpServer> server;
  if (!start_api(a.apisock, *daemon, server)) {
    daemon->shutdown();
    return 1;
  }
  // In fuse mode the daemon's life is its mount: leave when it was unmounted
  // from outside (as upstream does).
  const int rc = wait_for_shutdown(sigs, [&]() -> std::optional<std::string> {
    if (singleton) return std::nullopt;
    auto dead = daemon->dead_mounts();
    if (dead.empty()) return std::nullopt;
    return dead.front() + " was unmounted externally";
  });
  if (server) server->stop();
  daemon->shutdown(/*leave_handed_over=*/g_exit_by_api);
  nydus::storage::stop_background_work();
  spdlog::info("bye");
  spdlog::shutdown();
  return rc;
}

// fanotify mode: one image, mounted by the kernel's EROFS over our cache files.
int run_fanotify(Args& a) {
  setup_logging(a);
  raise_nofile(a.rlimit_nofile);
  if (a.bootstrap.empty() || a.mountpoint.empty()) {
    spdlog::error("fanotify mode needs --bootstrap, --mountpoint and --config or --localfs-dir");
    return 1;
  }
  const sigset_t sigs = block_shutdown_signals();
  auto cfg = image_config(a);
  if (!cfg) {
    spdlog::error("{}", cfg.error().message);
    return 1;
  }
  nydus::fanotify::FanotifyImageOptions o;
  o.bootstrap = a.bootstrap;
  o.mountpoint = std::filesystem::absolute(a.mountpoint).lexically_normal().string();
  o.config = *cfg;
  // Not /tmp: file-backed EROFS cannot use files on tmpfs.
  o.fallback_work_dir = fmt::format("/var/tmp/nydusd-cache-{}", a.id.empty() ? std::to_string(getpid()) : a.id);
  o.workers = a.threads;
  auto prefetch = read_prefetch_list(a.prefetch_list);
  if (!prefetch) {
    spdlog::error("{}", prefetch.error().message);
    return 1;
  }
  o.prefetch_files = std::move(*prefetch);
  o.supervisor = a.supervisor;
  o.id = a.id;
  if (a.upgrade && (a.supervisor.empty() || a.apisock.empty())) {
    spdlog::error("--upgrade takes over a fanotify group: it needs --supervisor and --apisock");
    return 1;
  }
  nydus::Result<std::unique_ptr<nydus::fanotify::FanotifyImage>> img =
      a.upgrade ? nydus::fanotify::FanotifyImage::awaiting_takeover(o) : nydus::fanotify::FanotifyImage::mount(o);
  if (!img) {
    spdlog::error("fanotify mode: {}", img.error().to_string());
    return 1;
  }
  if (a.upgrade) spdlog::info("waiting to take over {} from {}", o.mountpoint, a.supervisor);
  std::unique_ptr<nydus::api::HttpServer> server;
  if (!start_api(a.apisock, **img, server)) {
    (*img)->shutdown();
    return 1;
  }
  const int rc = wait_for_shutdown(sigs, [&]() -> std::optional<std::string> {
    // An upgrade daemon has no mount of its own until the takeover.
    if ((*img)->mounted() || (*img)->daemon_info()["state"] == "INIT") return std::nullopt;
    return o.mountpoint + " was unmounted externally";
  });
  if (server) server->stop();
  (*img)->shutdown();
  nydus::storage::stop_background_work();
  spdlog::info("bye");
  spdlog::shutdown();
  return rc;
}

// fscache mode: images registered through /api/v2/blobs, read by the
// kernel's EROFS through cachefiles on-demand objects we fill.
int run_fscache(Args& a) {
  setup_logging(a);
  raise_nofile(a.rlimit_nofile);
  if (a.apisock.empty()) {
    spdlog::error("fscache mode needs --apisock (images are registered through the API)");
    return 1;
  }
  const sigset_t sigs = block_shutdown_signals();
  nydus::fscache::FscacheOptions o;
  o.dir = a.fscache_dir;
  o.tag = a.fscache_tag;
  o.threads = a.fscache_threads;
  o.device = a.fscache_device;
  o.id = a.id;
  o.supervisor = a.supervisor;
  o.upgrade = a.upgrade;
  auto d = nydus::fscache::FscacheDaemon::create(o);
  if (!d) {
    spdlog::error("fscache mode: {}", d.error().to_string());
    return 1;
  }
  std::unique_ptr<nydus::api::HttpServer> server;
  if (!start_api(a.apisock, **d, server)) {
    (*d)->shutdown();
    return 1;
  }
  const int rc = wait_for_shutdown(
      sigs,
      [&]() -> std::optional<std::string> {
        if (!(*d)->failed()) return std::nullopt;
        return std::string("fscache: the request loop stopped (cache device gone)");
      },
      /*gone_is_error=*/true);
  if (server) server->stop();
  (*d)->shutdown();
  nydus::storage::stop_background_work();
  spdlog::info("bye");
  spdlog::shutdown();
  return rc;
}

}  // namespace

int main(int argc, char** argv) {
  // Chunk buffers (up to amplify_io compressed + a chunk decompressed) come
  // and go on many threads. glibc's adaptive threshold would soon serve them
  // from per-thread arenas that keep the memory; a fixed threshold maps and
  // unmaps them, so the daemon's RSS is what it holds, not what it once held.
  mallopt(M_MMAP_THRESHOLD, 256 * 1024);
  mallopt(M_ARENA_MAX, 4);
  CLI::App app{"nydusd: RAFS image daemon (FUSE)"};
  app.set_version_flag("-V,--version", "nydusd " + version_text());
  Args a;
  add_common(&app, a);
  add_fuse(&app, a);
  add_fscache(&app, a);
  auto* fuse_cmd = app.add_subcommand("fuse", "mount one image with FUSE (the default)");
  add_common(fuse_cmd, a);
  add_fuse(fuse_cmd, a);
  auto* single = app.add_subcommand("singleton", "no image at start; mount through the API");
  add_common(single, a);
  add_fscache(single, a);
  auto* fan = app.add_subcommand("fanotify", "mount one image with the kernel's EROFS, data filled via fanotify");
  add_common(fan, a);
  add_fuse(fan, a);
  app.require_subcommand(0, 1);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // --help and --version exit 0; a usage error exits 2, as clap does.
    const int rc = app.exit(e);
    return rc == 0 ? 0 : 2;
  }
  // The FUSE sessions read it (fuse::uring_mode_from_env), wherever they are made.
  if (!a.fuse_uring.empty()) ::setenv("NYDUSD_FUSE_URING", a.fuse_uring.c_str(), 1);
  if (fan->parsed()) return run_fanotify(a);
  if (!a.fscache_dir.empty()) return run_fscache(a);
  return run(a, single->parsed());
}
