// The registry backend: blobs are OCI/Docker registry blobs, read with
// ranged GETs of `/v2/<repo>/blobs/sha256:<blob id>`.
//
// Auth: anonymous first; a 401 is answered from its WWW-Authenticate
// challenge — Bearer: a token from the realm (with `auth` as Basic
// credentials when set), cached until `expires_in` (default 60 s) and
// refreshed on expiry or 401; Basic: `auth`. `registry_token` is a static
// bearer token. Redirects (to blob storage) are followed by hand without the
// registry's Authorization, and the target is cached per blob until it fails.
//
// Scheme: "http" means http, anything else (also "" or absent) https, as
// upstream. With `skip_verify`, TLS is not verified and a request to the
// registry that fails on TLS ("ssl", "wrong version number") or with
// "connection refused" switches the backend to http for good, as upstream's
// registry backend does. `ca_cert_files` are trusted besides the system store.
// A redirect Location gets `blob_url_scheme` / `blob_redirected_host` when set.
//
// Proxy: an HTTP forward proxy for the registry and storage requests (not the
// token requests), with upstream's health/fallback rules (backend_proxy.h).
// Mirrors (ours; the snapshotter still writes them) are tried in order
// before the origin, each with its `headers`; a mirror failing
// `failure_limit` times is skipped until its `ping_url` passes (checked
// every `health_check_interval` s).
#pragma once

#include <atomic>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "storage/backend_proxy.h"
#include "storage/remote_backend.h"

namespace nydus::storage {

struct MirrorConfig {
  std::string host;  // "http://127.0.0.1:5001" (a scheme-less host takes the registry's scheme)
  std::map<std::string, std::string> headers;
  std::string ping_url;
  Millis health_check_interval{5000};
  int failure_limit = 5;
};

struct RegistryConfig {
  std::string scheme = "https";  // "http" or "https" (anything but "http" in the JSON)
  std::string host;
  std::string repo;
  std::string auth;            // base64("user:pass")
  std::string registry_token;  // static bearer token
  bool skip_verify = false;    // also allows the https->http fallback
  std::vector<std::string> ca_cert_files;
  std::string blob_url_scheme;       // scheme forced on redirect targets
  std::string blob_redirected_host;  // host forced on redirect targets
  Millis timeout{5000};              // 0 = no limit
  Millis connect_timeout{5000};
  RetryPolicy retry;           // retry.retry_limit from "retry_limit"
  ProxyConfig proxy;
  std::vector<MirrorConfig> mirrors;
};

// From upstream's `backend.config` JSON for type "registry". Intervals are
// seconds (fractions allowed); "retry_backoff_ms" (ours) sets the base backoff.
Result<RegistryConfig> parse_registry_config(const nlohmann::json& config);

// One challenge of a WWW-Authenticate header: scheme (lower-case) and params
// (lower-case names, unquoted values).
struct AuthChallenge {
  std::string scheme;
  std::map<std::string, std::string> params;
};
std::vector<AuthChallenge> parse_www_authenticate(std::string_view header);

class RegistryBackend final : public RemoteBackend {
 public:
  static Result<std::shared_ptr<RegistryBackend>> create(RegistryConfig cfg);
  ~RegistryBackend() override;

  const char* type() const override { return "registry"; }
  // To the first endpoint a read tries (a mirror or the registry); not when
  // a proxy carries the reads.
  void preconnect() override;
  // New Basic credentials (base64 "user:pass") for every later request;
  // what the old ones earned is dropped.
  Status update_auth(const std::string& auth_base64) override;

  // For tests/metrics: whether the proxy is considered healthy, and how many
  // mirrors are currently skipped.
  bool proxy_healthy() const { return !proxy_ || proxy_->healthy(); }
  size_t mirrors_disabled() const;
  // Whether requests to the registry still use https (false after a fallback).
  bool uses_https() const { return https_.load(); }

 protected:
  Attempt<> fetch(const std::string& blob_id, uint64_t offset, std::span<uint8_t> out) override;
  Attempt<uint64_t> head_size(const std::string& blob_id) override;

 private:
  RegistryBackend(RegistryConfig cfg, std::string ca_bundle_pem);

  enum class Kind { kMirror, kOrigin };
  struct Endpoint {
    Kind kind;
    std::string base;  // scheme://host[:port]
    size_t mirror = 0;
  };
  struct AuthState {
    std::mutex mu;
    std::string header;  // "Bearer x" / "Basic x" / ""
    std::chrono::steady_clock::time_point expires = std::chrono::steady_clock::time_point::max();
    std::optional<AuthChallenge> bearer;  // to refresh an expired token
  };
  struct Mirror {
    MirrorConfig cfg;
    std::string base;
    std::atomic<int> failures{0};
    std::chrono::steady_clock::time_point next_check{};
  };

  std::vector<Endpoint> route();
  std::string origin() const;  // scheme://host, following an https->http fallback
  // Send through the proxy when one is configured (not for token requests).
  Result<HttpResponse> send(const HttpRequest& req);
  // Apply blob_url_scheme / blob_redirected_host to a redirect target.
  Result<std::string> rewrite_redirect(const std::string& url) const;
  std::string blob_path(const std::string& blob_id) const;
  AuthState& auth_for(const std::string& key);
  std::string auth_header(AuthState& st);
  // Answer a 401; false when there is nothing more to try.
  Attempt<> reauth(AuthState& st, const std::string& www_authenticate);
  // Get a token from a Bearer challenge's realm and store it in `st`.
  Attempt<> refresh_bearer(AuthState& st, const AuthChallenge& ch);

  // One request to an endpoint (auth, manual redirect). For a GET with
  // `out`, the body lands in `out` after check_range_response.
  Attempt<HttpResponse> request(const Endpoint& ep, const std::string& method, const std::string& blob_id,
                                uint64_t offset, std::optional<std::span<uint8_t>> out);
  Attempt<HttpResponse> request_storage(const std::string& url, const std::string& method, uint64_t offset,
                                        std::optional<std::span<uint8_t>> out);
  void endpoint_failed(const Endpoint& ep);
  void health_loop();
  bool ping(const std::string& url);

  RegistryConfig cfg_;
  std::atomic<bool> https_;
  HttpClient http_;
  std::unique_ptr<BackendProxy> proxy_;
  std::vector<std::unique_ptr<Mirror>> mirrors_;

  std::string basic_auth() const;  // cfg_.auth, which update_auth may change
  mutable std::mutex cred_mu_;     // guards cfg_.auth
  std::mutex auth_mu_;
  std::map<std::string, std::unique_ptr<AuthState>> auth_;
  std::mutex redirect_mu_;
  std::map<std::string, std::string> redirects_;  // blob id -> storage URL

  std::mutex health_mu_;
  std::condition_variable health_cv_;
  bool stop_ = false;
  std::thread health_thread_;
};

}  // namespace nydus::storage
