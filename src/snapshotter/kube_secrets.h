// Kubernetes image pull secrets as a source of registry credentials
// (nydus-snapshotter v0.15 pkg/auth/kubesecret.go; config.toml [remote.auth]
// enable_kubeconfig_keychain, kubeconfig_path).
//
// The API server is found as client-go's default loading rules find it:
// kubeconfig_path, else the first file of $KUBECONFIG, else ~/.kube/config,
// else the pod's service account (KUBERNETES_SERVICE_HOST/PORT, its token and
// ca.crt). Every secret of type kubernetes.io/dockerconfigjson in every
// namespace is listed (GET /api/v1/secrets?fieldSelector=type=...), then
// watched (the same with watch=true from the list's resourceVersion): ADDED
// and MODIFIED replace a secret's docker config, DELETED drops it, a 410 Gone
// lists again, a broken watch is resumed after a backoff (1 s doubling to 30 s).
//
// A lookup takes, for the image's registry host, the first secret (by
// namespace/name: upstream's Go map order is random) whose "auths" hold a
// user and a password for it. Unlike upstream, a secret's credsStore and
// credHelpers are ignored: anyone who can create a secret in any namespace
// must not make the node run a program.
//
// Unlike upstream, the snapshotter does not hang at start when the API server
// is away: it waits a bounded time for the first list, then keeps trying.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include <nlohmann/json.hpp>

#include "common/result.h"
#include "snapshotter/registry_auth.h"

namespace nydus::storage {
struct HttpRequest;  // storage/http_client.h
}

namespace nydus::snapshotter {

inline constexpr std::string_view kDockerConfigJsonSecretType = "kubernetes.io/dockerconfigjson";
inline constexpr std::string_view kDockerConfigJsonKey = ".dockerconfigjson";

// How to reach the API server.
struct KubeApiConfig {
  std::string server{};  // https://host:port[/prefix], no trailing '/'
  std::string ca_pem{};  // trust only this CA (PEM); "" = the system store
  bool insecure_skip_verify = false;
  std::string token{};                 // a bearer token
  std::filesystem::path token_file{};  // read at each request (tokens rotate); wins over `token`
  std::string client_cert_pem{}, client_key_pem{};
  std::string username{}, password{};  // basic auth
  std::string source{};                // where it came from, for logs
};

// A kubeconfig's text (YAML or JSON) at its current-context; relative file
// names are taken from `dir`. Exec and auth-provider plugins are refused.
Result<KubeApiConfig> parse_kubeconfig(std::string_view text, const std::filesystem::path& dir);

// client-go's default loading rules (see above); `explicit_path` must exist when given.
Result<KubeApiConfig> load_kube_api_config(const std::filesystem::path& explicit_path);

class KubeSecrets {
 public:
  explicit KubeSecrets(KubeApiConfig api);
  ~KubeSecrets();
  KubeSecrets(const KubeSecrets&) = delete;
  KubeSecrets& operator=(const KubeSecrets&) = delete;

  // Starts listing and watching in a thread of its own.
  void start();
  // Whether the first list succeeded, waiting up to `timeout` for it.
  bool wait_synced(std::chrono::milliseconds timeout) const;

  // The first secret's user and password for `host` (both non-empty). Thread-safe.
  std::optional<PassKeyChain> lookup(std::string_view host) const;

  // For tests: the secrets held ("namespace/name"), lists and watches made.
  std::vector<std::string> secret_names() const;
  int lists() const { return lists_; }
  int watches() const { return watches_; }

 private:
  enum class WatchEnd { kResume, kRelist };
  void run();
  Status list();
  Result<WatchEnd> watch();
  // One watch event (a JSON line); kRelist when the server says the
  // resourceVersion is gone.
  Result<WatchEnd> apply_event(std::string_view line);
  Result<std::vector<std::pair<std::string, std::string>>> headers() const;
  // A GET of the dockerconfigjson secrets with `query` ("&limit=..."), its
  // headers (the token re-read) and the stop flag as its cancellation.
  Result<storage::HttpRequest> request(std::string_view query) const;
  bool sleep_for(std::chrono::milliseconds d);  // false when stopping

  KubeApiConfig api_;
  struct Client;
  std::unique_ptr<Client> client_;
  std::thread thread_;
  std::atomic<bool> stopping_{false};
  mutable std::mutex mu_;
  mutable std::condition_variable cv_;
  bool synced_ = false;
  std::map<std::string, nlohmann::json> configs_;  // "namespace/name" -> docker config
  std::string resource_version_;                   // watcher thread only
  std::atomic<int> lists_{0}, watches_{0};
};

}  // namespace nydus::snapshotter
