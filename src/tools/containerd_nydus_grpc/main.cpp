// containerd-nydus-grpc: a containerd proxy snapshotter (snapshots v1 over
// gRPC on a unix socket) with nydus-snapshotter's flags and config.toml keys.
// containerd's config.toml:  [proxy_plugins.nydus] type = "snapshot" address = "<--address>"
#include <pthread.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>
#include <thread>

#include <CLI/CLI.hpp>
#include <grpcpp/grpcpp.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

#include "snapshotter/config_file.h"
#include "snapshotter/credential_renewal.h"
#include "snapshotter/cri_credentials.h"
#include "snapshotter/cri_image_proxy.h"
#include "snapshotter/kube_secrets.h"
#include "snapshotter/kubelet_credentials.h"
#include "snapshotter/fs_driver.h"
#include "snapshotter/grpc_service.h"
#include "snapshotter/metrics_server.h"
#include "snapshotter/snapshotter.h"

using namespace nydus::snapshotter;

namespace {

std::unique_ptr<grpc::Server> g_server;

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"containerd-nydus-grpc: containerd snapshotter for Nydus images (C++)"};
  std::string root = "/var/lib/containerd-nydus";
  std::string address = "/run/containerd-nydus/containerd-nydus-grpc.sock";
  std::string config_path, nydusd = "/usr/local/bin/nydusd", nydus_image = "/usr/local/bin/nydus-image";
  std::string nydusd_config, fs_driver = "fusedev", daemon_mode = "dedicated", log_level = "info";
  std::string recover_policy = "restart";
  std::string metrics_address;
  std::string renewal_interval = "0s";
  // [remote.auth] kubelet credential provider plugins (config.toml only, as upstream).
  bool kubelet_providers = false;
  // [remote.auth] enable_cri_keychain, image_service_address (config.toml only, as upstream).
  bool cri_keychain = false;
  std::string image_service_address = "/run/containerd/containerd.sock";
  std::string provider_config, provider_bin_dir;
  // [remote.auth] enable_kubeconfig_keychain, kubeconfig_path (config.toml only, as upstream).
  bool kubeconfig_keychain = false;
  std::string kubeconfig_path;
  bool log_to_stdout = false, version = false, enable_stargz = false;
  int threads = 4;
  int ready_timeout_s = 30;
  app.add_option("--root", root, "where snapshots, metadata, sockets and logs live");
  app.add_option("--address", address, "the gRPC unix socket containerd connects to");
  app.add_option("--config", config_path, "nydus-snapshotter config.toml (flags override it)");
  app.add_option("--nydusd", nydusd, "nydusd binary");
  app.add_option("--nydus-image", nydus_image, "nydus-image binary");
  app.add_option("--nydusd-config", nydusd_config, "nydusd config template (JSON)");
  app.add_option("--fs-driver", fs_driver,
                 "fusedev | fanotify (a `nydusd fanotify` per image: kernel EROFS, data filled on fanotify "
                 "pre-content events; Linux >= 6.14, dedicated daemons only) | fscache (one shared `nydusd "
                 "singleton --fscache`, images registered through its blob API and mounted as kernel EROFS "
                 "by the snapshotter; needs /dev/cachefiles and erofs) | auto (fanotify when the kernel "
                 "offers it, else fscache, else fusedev)");
  app.add_option("--daemon-mode", daemon_mode, "dedicated (a nydusd per image) | shared (one nydusd, images mounted through its API)");
  app.add_option("--log-level", log_level, "trace|debug|info|warn|error");
  app.add_flag("--log-to-stdout", log_to_stdout, "nydusd logs to stdout instead of files");
  app.add_option("--recover-policy", recover_policy,
                 "when a nydusd dies: restart (same command line, new mount: running containers see ENOTCONN) | "
                 "failover (a new nydusd takes the FUSE connection over from the supervisor: readers wait) | none. "
                 "fanotify daemons: the supervisor always holds the fanotify group; restart and failover both "
                 "take it over (the EROFS mount stays), none leaves it held until the next Prepare/Mounts");
  app.add_option("--nydusd-thread-num", threads, "nydusd --thread-num");
  app.add_option("--daemon-ready-timeout", ready_timeout_s, "seconds to wait for a nydusd to be RUNNING");
  app.add_option("--metrics-address", metrics_address,
                 "serve Prometheus metrics on GET /v1/metrics at this TCP host:port (config [metrics] address)");
  app.add_option("--credential-renewal-interval", renewal_interval,
                 "re-read the docker config this often (a Go duration: 30m, 2s; 0 = off) and send changed "
                 "registry credentials to the running nydusd daemons (config [remote.auth] "
                 "credential_renewal_interval; the flag is ours)");
  app.add_flag("--enable-stargz", enable_stargz,
               "run eStargz images lazily: a layer with an eStargz footer gets a bootstrap built from its TOC "
               "(nydus-image) instead of being downloaded (config [experimental] enable_stargz; the flag is ours)");
  app.add_flag("--version", version, "print the version");
  CLI11_PARSE(app, argc, argv);
  if (version) {
    std::cout << "containerd-nydus-grpc (nydus C++)\n";
    return 0;
  }

  if (!config_path.empty()) {
    std::ifstream in(config_path);
    if (!in) {
      std::cerr << "cannot read --config " << config_path << "\n";
      return 1;
    }
    std::stringstream ss;
    ss << in.rdbuf();
    auto cfg = parse_config_toml(ss.str());
    if (!cfg) {
      std::cerr << cfg.error().to_string() << "\n";
      return 1;
    }
    // Flags given on the command line win over the file.
    auto take = [&](const char* key, const char* flag, std::string& dst) {
      if (auto it = cfg->find(key); it != cfg->end() && app.count(flag) == 0) dst = it->second;
    };
    take("root", "--root", root);
    take("address", "--address", address);
    take("daemon_mode", "--daemon-mode", daemon_mode);
    take("daemon.nydusd_path", "--nydusd", nydusd);
    take("daemon.nydusimage_path", "--nydus-image", nydus_image);
    take("daemon.nydusd_config", "--nydusd-config", nydusd_config);
    take("daemon.fs_driver", "--fs-driver", fs_driver);
    take("daemon.recover_policy", "--recover-policy", recover_policy);
    take("log.level", "--log-level", log_level);
    take("metrics.address", "--metrics-address", metrics_address);
    take("remote.auth.credential_renewal_interval", "--credential-renewal-interval", renewal_interval);
    if (auto it = cfg->find("remote.auth.enable_cri_keychain"); it != cfg->end()) cri_keychain = it->second == "true";
    if (auto it = cfg->find("remote.auth.image_service_address"); it != cfg->end() && !it->second.empty())
      image_service_address = it->second;
    if (auto it = cfg->find("remote.auth.enable_kubelet_credential_providers"); it != cfg->end())
      kubelet_providers = it->second == "true";
    if (auto it = cfg->find("remote.auth.credential_provider_config"); it != cfg->end()) provider_config = it->second;
    if (auto it = cfg->find("remote.auth.credential_provider_bin_dir"); it != cfg->end()) provider_bin_dir = it->second;
    if (auto it = cfg->find("remote.auth.enable_kubeconfig_keychain"); it != cfg->end())
      kubeconfig_keychain = it->second == "true";
    if (auto it = cfg->find("remote.auth.kubeconfig_path"); it != cfg->end()) kubeconfig_path = it->second;
    if (auto it = cfg->find("daemon.threads_number"); it != cfg->end() && app.count("--nydusd-thread-num") == 0)
      threads = std::atoi(it->second.c_str());
    if (auto it = cfg->find("experimental.enable_stargz"); it != cfg->end() && app.count("--enable-stargz") == 0)
      enable_stargz = it->second == "true";
    if (auto it = cfg->find("log.log_to_stdout"); it != cfg->end() && app.count("--log-to-stdout") == 0)
      log_to_stdout = it->second == "true";
  }
  if (cri_keychain && kubeconfig_keychain) {  // upstream's config validation
    std::cerr << "\"enable_cri_keychain\" and \"enable_kubeconfig_keychain\" can't be set at the same time\n";
    return 2;
  }
  if (daemon_mode != "dedicated" && daemon_mode != "shared") {
    std::cerr << "--daemon-mode " << daemon_mode << ": want dedicated or shared\n";
    return 2;
  }
  // The blob cache files (what fanotify marks) live in <root>/cache.
  auto driver = choose_fs_driver(fs_driver, probe_kernel_paths(root + "/cache"), daemon_mode == "shared");
  if (!driver) {
    std::cerr << driver.error().message << "\n";
    return 2;
  }
  if (recover_policy != "restart" && recover_policy != "failover" && recover_policy != "none") {
    std::cerr << "--recover-policy must be restart, failover or none\n";
    return 2;
  }
  auto renewal_every = parse_go_duration(renewal_interval);
  if (!renewal_every) {
    std::cerr << "credential_renewal_interval: " << renewal_every.error().message << "\n";
    return 2;
  }
  if (threads < 1 || threads > 1024) {
    std::cerr << "--nydusd-thread-num out of range\n";
    return 2;
  }

  spdlog::set_level(spdlog::level::from_str(log_level));
  spdlog::set_pattern("%Y-%m-%dT%H:%M:%S.%f %l %v");

  SnapshotterOptions opts;
  opts.root = root;
  opts.daemon.nydusd_path = nydusd;
  opts.enable_stargz = enable_stargz;
  opts.nydus_image_path = nydus_image;
  opts.daemon.config_template = nydusd_config;
  opts.daemon.log_level = log_level == "warn" ? "warn" : log_level;
  opts.daemon.log_to_stdout = log_to_stdout;
  opts.daemon.thread_num = threads;
  opts.daemon.ready_timeout = std::chrono::seconds(ready_timeout_s);
  opts.daemon.shared = daemon_mode == "shared";
  opts.daemon.recover_policy = recover_policy;
  opts.daemon.fs_driver = driver->driver;
  // Credentials: snapshot labels, then the docker config (read at each daemon
  // start), then the kubelet's credential provider plugins when enabled.
  std::shared_ptr<const KubeletCredentials> kubelet;
  if (kubelet_providers) {
    auto k = KubeletCredentials::load(provider_config, provider_bin_dir);
    if (!k) {
      spdlog::error("kubelet credential providers: {}", k.error().message);
      return 2;
    }
    kubelet = std::move(*k);
  }
  auto cri_credentials = cri_keychain ? std::make_shared<CriCredentials>() : nullptr;
  // Kubernetes image pull secrets: a kubeconfig that does not load stops the
  // start (as upstream); an API server that does not answer in time does not:
  // the watcher keeps trying while the snapshotter serves.
  std::shared_ptr<KubeSecrets> kube_secrets;
  if (kubeconfig_keychain) {
    auto api = load_kube_api_config(kubeconfig_path);
    if (!api) {
      spdlog::error("kubeconfig keychain: {}", api.error().message);
      return 2;
    }
    kube_secrets = std::make_shared<KubeSecrets>(std::move(*api));
    kube_secrets->start();
    if (!kube_secrets->wait_synced(std::chrono::seconds(10)))
      spdlog::warn("kube secrets: not listed within 10 s; serving meanwhile, the watcher keeps trying");
  }
  auto keychain = std::make_shared<const Keychain>(default_docker_config_file(), kubelet, *renewal_every, cri_credentials,
                                                   kube_secrets);
  opts.daemon.keychain = keychain;
  spdlog::info("fs driver {} ({})", driver->driver, driver->reason);
  if (enable_stargz) spdlog::info("eStargz layers run lazily (enable_stargz; TOCs converted by {})", nydus_image);
  auto sn = Snapshotter::open(opts);
  if (!sn) {
    spdlog::error("open snapshotter at {}: {}", root, sn.error().message);
    return 1;
  }

  // SIGTERM/SIGINT are taken by one thread with sigwait (blocked here, before
  // gRPC starts its threads): grpc::Server::Shutdown is not async-signal-safe.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  signal(SIGPIPE, SIG_IGN);

  for (const auto& id : (*sn)->adopted())
    spdlog::info("re-attached to the running nydusd of snapshot {}{}", id, daemon_mode == "shared" ? " (shared daemon)" : "");
  if (driver->driver == "fscache")
    spdlog::info("shared fscache nydusd pid {} (cache {}/fscache; images mounted as erofs under {}/mnt)",
                 (*sn)->daemons().shared_daemon().pid, root, root);
  else if (daemon_mode == "shared")
    spdlog::info("shared nydusd pid {} on {}", (*sn)->daemons().shared_daemon().pid, root + "/mnt");
  Snapshotter& snap = **sn;
  CredentialRenewal renewal(snap.daemons(), keychain, *renewal_every,
                            [&snap](const std::string& meta_id) { return snap.image_ref_of(meta_id); });
  renewal.start();
  snap.metrics().config = {driver->driver, fs_driver, daemon_mode};
  MetricsServer metrics([&snap] { return snap.metrics().render(snap.metric_gauges()); });
  if (!metrics_address.empty()) {
    if (auto st = metrics.start(metrics_address); !st) {
      spdlog::error("metrics server: {}", st.error().to_string());
      return 1;
    }
    spdlog::info("Prometheus metrics on http://{}/v1/metrics (port {})", metrics_address, metrics.port());
  }
  std::error_code ec;
  std::filesystem::create_directories(std::filesystem::path(address).parent_path(), ec);
  ::unlink(address.c_str());  // a socket left by a previous run
  SnapshotsService service(**sn);
  grpc::ServerBuilder builder;
  builder.AddListeningPort("unix://" + address, grpc::InsecureServerCredentials());
  builder.RegisterService(&service);
  // The CRI keychain: the same socket serves the CRI image service (kubelet's
  // --image-service-endpoint), forwarded to image_service_address.
  std::unique_ptr<CriImageProxy> cri_proxy;
  if (cri_credentials) {
    cri_proxy = std::make_unique<CriImageProxy>(cri_credentials, image_service_address);
    builder.RegisterService(cri_proxy.get());
    spdlog::info("CRI keychain: runtime.v1.ImageService on {} forwarded to {}", address, image_service_address);
  }
  builder.SetMaxReceiveMessageSize(16 << 20);
  g_server = builder.BuildAndStart();
  if (!g_server) {
    spdlog::error("cannot listen on {}", address);
    return 1;
  }
  ::chmod(address.c_str(), 0660);
  std::thread([&stop_signals] {
    int sig = 0;
    sigwait(&stop_signals, &sig);
    spdlog::info("signal {}: shutting down", sig);
    g_server->Shutdown();
  }).detach();
  spdlog::info("containerd-nydus-grpc serving snapshots v1 on {} (root {}, nydusd {}, fs-driver {} -> {}, daemon-mode {})",
               address, root, nydusd, fs_driver, driver->driver, daemon_mode);
  g_server->Wait();
  // As nydus-snapshotter: daemons keep serving running containers across a
  // snapshotter restart; the next start re-attaches to them.
  spdlog::info("containerd-nydus-grpc: shut down");
  ::unlink(address.c_str());
  return 0;
}
