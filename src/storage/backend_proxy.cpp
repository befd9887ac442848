#include "storage/backend_proxy.h"

#include <nlohmann/json.hpp>

#include "storage/remote_config.h"

namespace nydus::storage {

namespace {

using Clock = std::chrono::steady_clock;

int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now().time_since_epoch()).count();
}

}  // namespace

Result<ProxyConfig> parse_proxy_config(const nlohmann::json& j) {
  using namespace remote_config;
  ProxyConfig p;
  auto it = j.find("proxy");
  if (it == j.end() || it->is_null()) return p;
  if (!it->is_object()) return errorf(Errc::kInvalidArgument, "backend config \"proxy\" must be an object");
  NYDUS_ASSIGN_OR_RETURN(p.url, get_string(*it, "url"));
  NYDUS_ASSIGN_OR_RETURN(p.ping_url, get_string(*it, "ping_url"));
  NYDUS_ASSIGN_OR_RETURN(p.fallback, get_bool(*it, "fallback", true));
  NYDUS_ASSIGN_OR_RETURN(p.check_interval, get_seconds(*it, "check_interval", Millis(5000)));
  NYDUS_ASSIGN_OR_RETURN(p.use_http, get_bool(*it, "use_http", false));
  NYDUS_ASSIGN_OR_RETURN(p.check_pause_elapsed, get_seconds(*it, "check_pause_elapsed", Millis(300000), true));
  NYDUS_ASSIGN_OR_RETURN(p.dragonfly_scheduler_endpoint, get_string(*it, "dragonfly_scheduler_endpoint"));
  for (char c : p.url)
    if (c == ' ' || c == '\n' || c == '\r')
      return errorf(Errc::kInvalidArgument, "backend config \"proxy.url\" '{}' is not a URL", p.url);
  return p;
}

BackendProxy::BackendProxy(ProxyConfig cfg, HttpClient& http)
    : cfg_(std::move(cfg)), http_(http), last_active_ms_(now_ms()) {
  if (enabled()) thread_ = std::thread([this] { health_loop(); });
}

BackendProxy::~BackendProxy() {
  {
    std::lock_guard lk(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void BackendProxy::mark_failed() {
  if (!cfg_.fallback) return;  // nothing to route around
  if (healthy_.exchange(false)) {
    std::lock_guard lk(mu_);
    retry_at_ = Clock::now() + cfg_.check_interval;
  }
}

Result<HttpResponse> BackendProxy::perform(const HttpRequest& req, const std::function<void()>& sent) {
  last_active_ms_.store(now_ms());
  if (enabled()) {
    if (healthy_.load()) {
      HttpRequest via = req;
      via.proxy = cfg_.url;
      if (cfg_.use_http && via.url.starts_with("https://")) via.url = "http://" + via.url.substr(8);
      if (sent) sent();
      auto r = http_.perform(via);
      if (r && (!cfg_.fallback || r->status < 500)) return r;
      if (!r && !cfg_.fallback) return std::unexpected(std::move(r).error().context("via proxy " + cfg_.url));
      mark_failed();  // fall back to the origin
    } else if (!cfg_.fallback) {
      return errorf(Errc::kIo, "proxy {} is not healthy and fallback is disabled", cfg_.url);
    }
  }
  if (sent) sent();
  return http_.perform(req);
}

void BackendProxy::health_loop() {
  const auto tick = std::clamp<Millis>(cfg_.check_interval, Millis(10), Millis(1000));
  auto next_ping = Clock::now();
  std::unique_lock lk(mu_);
  while (!stop_) {
    cv_.wait_for(lk, tick, [&] { return stop_; });
    if (stop_) break;
    const auto now = Clock::now();
    if (cfg_.ping_url.empty()) {
      // No ping: a proxy marked down gets another chance after check_interval.
      if (!healthy_.load() && now >= retry_at_) healthy_.store(true);
      continue;
    }
    if (now < next_ping) continue;
    next_ping = now + cfg_.check_interval;
    // Upstream pauses the check while the backend is idle.
    const int64_t idle = now_ms() - last_active_ms_.load();
    if (cfg_.check_pause_elapsed.count() > 0 && idle > cfg_.check_pause_elapsed.count()) continue;
    lk.unlock();
    HttpRequest ping;
    ping.url = cfg_.ping_url;
    ping.max_body = 64 << 10;
    ping.timeout = std::min<Millis>(http_.options().connect_timeout.count() > 0 ? http_.options().connect_timeout
                                                                                : Millis(5000),
                                    Millis(5000));
    auto r = http_.perform(ping);
    const bool up = r && r->status >= 200 && r->status < 400;  // upstream: is_success_status
    lk.lock();
    healthy_.store(up);
  }
}

}  // namespace nydus::storage
