// The `proxy` section every HTTP backend of upstream takes (registry, s3,
// oss, http-proxy; storage/src/backend/connection.rs): requests go through
// an HTTP forward proxy, e.g. Dragonfly's dfdaemon, while it is healthy.
//
// Upstream's meaning, kept here:
// - `url`: the proxy (curl's proxy syntax; "host:port" means http).
//   The request URL is unchanged; with `use_http` an https:// URL is sent
//   as http:// so the proxy sees it in the clear (instead of a CONNECT tunnel).
// - `fallback` (default true): a transport error or a 5xx from the proxy
//   sends the request straight to the origin; without fallback that answer
//   is final, and an unhealthy proxy fails the request.
// - `ping_url`: GET every `check_interval` s (default 5) decides health;
//   the check pauses while no request was made for `check_pause_elapsed` s
//   (default 300).
// - `dragonfly_scheduler_endpoint`: upstream's optional Dragonfly SDK client
//   (a cargo feature); accepted and ignored, the proxy is used as a proxy.
// Our addition: a failed proxy request marks it unhealthy at once (so later
// requests skip it); the ping, or without one the next check_interval,
// brings it back.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <string>
#include <thread>

#include <nlohmann/json_fwd.hpp>

#include "common/result.h"
#include "storage/http_client.h"

namespace nydus::storage {

struct ProxyConfig {
  std::string url;  // "" = no proxy
  std::string ping_url;
  bool fallback = true;
  std::chrono::milliseconds check_interval{5000};
  bool use_http = false;
  std::chrono::milliseconds check_pause_elapsed{300000};
  std::string dragonfly_scheduler_endpoint;  // accepted, unused
};

// The "proxy" member of a backend config (absent or null: no proxy).
Result<ProxyConfig> parse_proxy_config(const nlohmann::json& backend_config);

class BackendProxy {
 public:
  // `http` carries the backend's TLS/timeout options and must outlive this.
  BackendProxy(ProxyConfig cfg, HttpClient& http);
  ~BackendProxy();
  BackendProxy(const BackendProxy&) = delete;
  BackendProxy& operator=(const BackendProxy&) = delete;

  bool enabled() const { return !cfg_.url.empty(); }
  bool healthy() const { return healthy_.load(); }
  const ProxyConfig& config() const { return cfg_; }

  // One request, routed as upstream's Connection::call does. `sent` is
  // called for each HTTP request made (for the backends' metrics).
  Result<HttpResponse> perform(const HttpRequest& req, const std::function<void()>& sent = {});

 private:
  void mark_failed();
  void health_loop();

  ProxyConfig cfg_;
  HttpClient& http_;
  std::atomic<bool> healthy_{true};
  std::atomic<int64_t> last_active_ms_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  std::chrono::steady_clock::time_point retry_at_{};
  std::thread thread_;
};

}  // namespace nydus::storage
