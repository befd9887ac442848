#include "storage/registry_backend.h"

#include <cctype>
#include <cstring>

#include <nlohmann/json.hpp>

#include "storage/remote_config.h"

namespace nydus::storage {

namespace {

using Clock = std::chrono::steady_clock;

std::string lower(std::string_view s) {
  std::string out(s);
  for (auto& c : out) c = char(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

bool is_redirect(long s) { return s == 301 || s == 302 || s == 303 || s == 307 || s == 308; }

}  // namespace

// ---- config ---------------------------------------------------------------

Result<RegistryConfig> parse_registry_config(const nlohmann::json& j) {
  using namespace remote_config;
  RegistryConfig c;
  NYDUS_ASSIGN_OR_RETURN(c.scheme, get_string(j, "scheme", "https"));
  NYDUS_ASSIGN_OR_RETURN(c.host, get_string(j, "host"));
  NYDUS_ASSIGN_OR_RETURN(c.repo, get_string(j, "repo"));
  NYDUS_ASSIGN_OR_RETURN(c.auth, get_string(j, "auth"));
  NYDUS_ASSIGN_OR_RETURN(c.registry_token, get_string(j, "registry_token"));
  NYDUS_ASSIGN_OR_RETURN(c.skip_verify, get_bool(j, "skip_verify", false));
  NYDUS_ASSIGN_OR_RETURN(c.timeout, get_seconds(j, "timeout", Millis(5000)));
  NYDUS_ASSIGN_OR_RETURN(c.connect_timeout, get_seconds(j, "connect_timeout", Millis(5000)));
  NYDUS_ASSIGN_OR_RETURN(c.retry, get_retry(j));
  if (c.scheme != "http" && c.scheme != "https")
    return errorf(Errc::kInvalidArgument, "registry scheme must be http or https, not '{}'", c.scheme);
  if (c.host.empty()) return errorf(Errc::kInvalidArgument, "registry backend needs \"host\"");
  if (c.repo.empty()) return errorf(Errc::kInvalidArgument, "registry backend needs \"repo\"");
  for (char ch : c.host)
    if (ch == '/' || ch == ' ' || ch == '?' || ch == '#' || ch == '@')
      return errorf(Errc::kInvalidArgument, "registry host '{}' must be host[:port]", c.host);
  for (char ch : c.repo)
    if (!(std::isalnum(static_cast<unsigned char>(ch)) || ch == '/' || ch == '.' || ch == '_' || ch == '-'))
      return errorf(Errc::kInvalidArgument, "invalid registry repo '{}'", c.repo);

  if (auto it = j.find("proxy"); it != j.end() && !it->is_null()) {
    if (!it->is_object()) return errorf(Errc::kInvalidArgument, "registry \"proxy\" must be an object");
    NYDUS_ASSIGN_OR_RETURN(c.proxy.url, get_string(*it, "url"));
    NYDUS_ASSIGN_OR_RETURN(c.proxy.ping_url, get_string(*it, "ping_url"));
    NYDUS_ASSIGN_OR_RETURN(c.proxy.fallback, get_bool(*it, "fallback", true));
    NYDUS_ASSIGN_OR_RETURN(c.proxy.check_interval, get_seconds(*it, "check_interval", Millis(5000)));
    NYDUS_ASSIGN_OR_RETURN(c.proxy.use_http, get_bool(*it, "use_http", false));
  }
  if (auto it = j.find("mirrors"); it != j.end() && !it->is_null()) {
    if (!it->is_array()) return errorf(Errc::kInvalidArgument, "registry \"mirrors\" must be a list");
    for (const auto& m : *it) {
      if (!m.is_object()) return errorf(Errc::kInvalidArgument, "registry mirror must be an object");
      MirrorConfig mc;
      NYDUS_ASSIGN_OR_RETURN(mc.host, get_string(m, "host"));
      if (mc.host.empty()) return errorf(Errc::kInvalidArgument, "registry mirror needs \"host\"");
      NYDUS_ASSIGN_OR_RETURN(mc.ping_url, get_string(m, "ping_url"));
      NYDUS_ASSIGN_OR_RETURN(mc.health_check_interval, get_seconds(m, "health_check_interval", Millis(5000)));
      NYDUS_ASSIGN_OR_RETURN(int64_t limit, get_int(m, "failure_limit", 5));
      mc.failure_limit = int(std::clamp<int64_t>(limit, 1, 1 << 20));
      if (auto h = m.find("headers"); h != m.end() && !h->is_null()) {
        if (!h->is_object()) return errorf(Errc::kInvalidArgument, "mirror \"headers\" must be an object");
        for (auto& [k, v] : h->items()) {
          if (!v.is_string()) return errorf(Errc::kInvalidArgument, "mirror header '{}' must be a string", k);
          mc.headers[k] = v.get<std::string>();
        }
      }
      c.mirrors.push_back(std::move(mc));
    }
  }
  return c;
}

// ---- WWW-Authenticate -----------------------------------------------------

std::vector<AuthChallenge> parse_www_authenticate(std::string_view h) {
  // challenge = scheme [ param *( "," param ) ], challenges separated by
  // commas; param = token "=" ( token / quoted-string ). A token not followed
  // by "=" starts a new challenge.
  std::vector<AuthChallenge> out;
  auto is_tchar = [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || (c != 0 && std::strchr("!#$%&'*+-.^_`|~", c) != nullptr);
  };
  size_t i = 0;
  const size_t n = h.size();
  auto skip_ws = [&] {
    while (i < n && (h[i] == ' ' || h[i] == '\t')) i++;
  };
  while (i < n) {
    skip_ws();
    if (i < n && h[i] == ',') {
      i++;
      continue;
    }
    const size_t start = i;
    while (i < n && is_tchar(h[i])) i++;
    if (i == start) {  // junk
      i++;
      continue;
    }
    std::string token = lower(h.substr(start, i - start));
    skip_ws();
    if (i < n && h[i] == '=' && !out.empty()) {
      i++;
      skip_ws();
      std::string value;
      if (i < n && h[i] == '"') {
        i++;
        while (i < n && h[i] != '"') {
          if (h[i] == '\\' && i + 1 < n) i++;
          value.push_back(h[i++]);
        }
        if (i < n) i++;  // closing quote
      } else {
        while (i < n && h[i] != ',' && h[i] != ' ' && h[i] != '\t') value.push_back(h[i++]);
      }
      out.back().params[token] = std::move(value);
      continue;
    }
    out.push_back(AuthChallenge{std::move(token), {}});
  }
  return out;
}

// ---- backend --------------------------------------------------------------

Result<std::shared_ptr<RegistryBackend>> RegistryBackend::create(RegistryConfig cfg) {
  if (cfg.host.empty() || cfg.repo.empty())
    return errorf(Errc::kInvalidArgument, "registry backend needs \"host\" and \"repo\"");
  return std::shared_ptr<RegistryBackend>(new RegistryBackend(std::move(cfg)));
}

RegistryBackend::RegistryBackend(RegistryConfig cfg)
    : RemoteBackend(cfg.retry),
      cfg_(std::move(cfg)),
      http_(HttpOptions{cfg_.timeout, cfg_.connect_timeout, cfg_.skip_verify}) {
  origin_ = cfg_.scheme + "://" + cfg_.host;
  if (!cfg_.proxy.url.empty()) {
    proxy_base_ = cfg_.proxy.url;
    while (proxy_base_.ends_with('/')) proxy_base_.pop_back();
    if (cfg_.proxy.use_http && proxy_base_.starts_with("https://")) proxy_base_ = "http://" + proxy_base_.substr(8);
    if (proxy_base_.find("://") == std::string::npos) proxy_base_ = (cfg_.proxy.use_http ? "http://" : "https://") + proxy_base_;
  }
  for (const auto& m : cfg_.mirrors) {
    auto mm = std::make_unique<Mirror>();
    mm->cfg = m;
    mm->base = m.host;
    while (mm->base.ends_with('/')) mm->base.pop_back();
    if (mm->base.find("://") == std::string::npos) mm->base = cfg_.scheme + "://" + mm->base;
    mirrors_.push_back(std::move(mm));
  }
  if (!cfg_.registry_token.empty()) auth_for(origin_).header = "Bearer " + cfg_.registry_token;
  if (!proxy_base_.empty() || !mirrors_.empty()) health_thread_ = std::thread([this] { health_loop(); });
}

RegistryBackend::~RegistryBackend() {
  {
    std::lock_guard lk(health_mu_);
    stop_ = true;
  }
  health_cv_.notify_all();
  if (health_thread_.joinable()) health_thread_.join();
}

size_t RegistryBackend::mirrors_disabled() const {
  size_t n = 0;
  for (const auto& m : mirrors_)
    if (m->failures.load() >= m->cfg.failure_limit) n++;
  return n;
}

std::string RegistryBackend::blob_path(const std::string& blob_id) const {
  return "/v2/" + cfg_.repo + "/blobs/sha256:" + blob_id;
}

RegistryBackend::AuthState& RegistryBackend::auth_for(const std::string& key) {
  std::lock_guard lk(auth_mu_);
  auto& p = auth_[key];
  if (!p) p = std::make_unique<AuthState>();
  return *p;
}

std::string RegistryBackend::auth_header(AuthState& st) {
  std::optional<AuthChallenge> refresh;
  {
    std::lock_guard lk(st.mu);
    if (st.header.empty() || Clock::now() < st.expires) return st.header;
    refresh = st.bearer;
  }
  // The token expired: fetch a new one from the last challenge.
  if (refresh && refresh_bearer(st, *refresh)) {
    std::lock_guard lk(st.mu);
    return st.header;
  }
  std::lock_guard lk(st.mu);
  st.header.clear();
  return {};
}

Attempt<> RegistryBackend::refresh_bearer(AuthState& st, const AuthChallenge& ch) {
  auto realm_it = ch.params.find("realm");
  if (realm_it == ch.params.end() || realm_it->second.empty())
    return fatal(Error{Errc::kIo, 0, "Bearer challenge without a realm"});
  std::string url = realm_it->second;
  std::string sep = url.find('?') == std::string::npos ? "?" : "&";
  if (auto s = ch.params.find("service"); s != ch.params.end()) {
    url += sep + "service=" + url_encode(s->second);
    sep = "&";
  }
  std::string scope = "repository:" + cfg_.repo + ":pull";
  if (auto s = ch.params.find("scope"); s != ch.params.end() && !s->second.empty()) scope = s->second;
  url += sep + "scope=" + url_encode(scope);
  HttpRequest req;
  req.url = url;
  req.max_body = 256 << 10;
  if (!cfg_.auth.empty()) req.headers.emplace_back("Authorization", "Basic " + cfg_.auth);
  note_request();
  auto r = http_.perform(req);
  if (!r) return retryable(std::move(r).error().context("fetching registry token"));
  if (r->status != 200) return std::unexpected(status_error(*r, "fetching registry token from " + realm_it->second));
  auto j = nlohmann::json::parse(r->body, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return fatal(Error{Errc::kIo, 0, "registry token response is not JSON"});
  std::string token;
  for (const char* k : {"token", "access_token"})
    if (auto it = j.find(k); it != j.end() && it->is_string() && !it->get<std::string>().empty()) {
      token = it->get<std::string>();
      break;
    }
  if (token.empty()) return fatal(Error{Errc::kIo, 0, "registry token response has no token"});
  int64_t secs = 60;
  if (auto it = j.find("expires_in"); it != j.end() && it->is_number() && it->get<double>() >= 1)
    secs = int64_t(std::min(it->get<double>(), 86400.0 * 365));
  // Refresh a little before the server's expiry.
  const auto life = std::chrono::seconds(secs > 10 ? secs - std::min<int64_t>(secs / 10, 30) : secs);
  std::lock_guard lk(st.mu);
  st.header = "Bearer " + token;
  st.expires = Clock::now() + life;
  st.bearer = ch;
  return {};
}

Attempt<> RegistryBackend::reauth(AuthState& st, const std::string& www_authenticate) {
  auto challenges = parse_www_authenticate(www_authenticate);
  const AuthChallenge* bearer = nullptr;
  const AuthChallenge* basic = nullptr;
  for (const auto& c : challenges) {
    if (c.scheme == "bearer" && !bearer) bearer = &c;
    if (c.scheme == "basic" && !basic) basic = &c;
  }
  if (bearer) return refresh_bearer(st, *bearer);
  if (basic) {
    if (cfg_.auth.empty())
      return fatal(Error{Errc::kIo, 0, "registry requires Basic auth but no \"auth\" is configured"});
    std::lock_guard lk(st.mu);
    st.header = "Basic " + cfg_.auth;
    st.expires = Clock::time_point::max();
    st.bearer.reset();
    return {};
  }
  return fatal(Error{Errc::kIo, 0, fmt::format("unsupported registry auth challenge '{}'", www_authenticate)});
}

std::vector<RegistryBackend::Endpoint> RegistryBackend::route() {
  std::vector<Endpoint> eps;
  if (!proxy_base_.empty()) {
    if (proxy_healthy_.load() || !cfg_.proxy.fallback) {
      eps.push_back({Kind::kProxy, proxy_base_, 0});
      if (!cfg_.proxy.fallback) return eps;
    }
  }
  for (size_t i = 0; i < mirrors_.size(); i++)
    if (mirrors_[i]->failures.load() < mirrors_[i]->cfg.failure_limit) eps.push_back({Kind::kMirror, mirrors_[i]->base, i});
  eps.push_back({Kind::kOrigin, origin_, 0});
  return eps;
}

void RegistryBackend::endpoint_failed(const Endpoint& ep) {
  if (ep.kind == Kind::kProxy) {
    if (cfg_.proxy.fallback && proxy_healthy_.exchange(false)) {
      std::lock_guard lk(health_mu_);
      proxy_next_check_ = Clock::now() + cfg_.proxy.check_interval;
    }
  } else if (ep.kind == Kind::kMirror) {
    auto& m = *mirrors_[ep.mirror];
    if (m.failures.fetch_add(1) + 1 == m.cfg.failure_limit) {
      std::lock_guard lk(health_mu_);
      m.next_check = Clock::now() + m.cfg.health_check_interval;
    }
  }
}

Attempt<HttpResponse> RegistryBackend::request_storage(const std::string& url, const std::string& method,
                                                       uint64_t offset, std::optional<std::span<uint8_t>> out) {
  HttpRequest req;
  req.method = method;
  req.url = url;
  if (out) {
    req.body_out = *out;
    req.headers.emplace_back("Range", fmt::format("bytes={}-{}", offset, offset + out->size() - 1));
    req.accept = [offset, len = out->size()](const HttpResponse& r) { return check_range_response(r, offset, len); };
  }
  note_request();
  auto r = http_.perform(req);
  const std::string what = fmt::format("{} redirected blob URL {}", method, url_origin(url));
  if (out) {
    if (auto st = finish_ranged_get(r, out->size(), what); !st) return std::unexpected(std::move(st).error());
    return std::move(*r);
  }
  if (!r) return retryable(std::move(r).error().context(what));
  if (r->status / 100 != 2) return std::unexpected(status_error(*r, what));
  return std::move(*r);
}

Attempt<HttpResponse> RegistryBackend::request(const Endpoint& ep, const std::string& method,
                                               const std::string& blob_id, uint64_t offset,
                                               std::optional<std::span<uint8_t>> out) {
  const std::string path = blob_path(blob_id);
  // The proxy forwards to the origin, so it shares the origin's credentials.
  AuthState& auth = auth_for(ep.kind == Kind::kMirror ? ep.base : origin_);
  const char* kind = ep.kind == Kind::kProxy ? "proxy" : ep.kind == Kind::kMirror ? "mirror" : "registry";
  const std::string what = fmt::format("{} {} {}{}", method, kind, ep.base, path);
  bool reauthed = false;
  for (;;) {
    HttpRequest req;
    req.method = method;
    req.url = ep.base + path;
    if (ep.kind == Kind::kProxy) req.headers.emplace_back("X-Dragonfly-Registry", origin_);
    if (ep.kind == Kind::kMirror)
      for (const auto& [k, v] : mirrors_[ep.mirror]->cfg.headers) req.headers.emplace_back(k, v);
    if (auto h = auth_header(auth); !h.empty()) req.headers.emplace_back("Authorization", h);
    if (out) {
      req.body_out = *out;
      req.headers.emplace_back("Range", fmt::format("bytes={}-{}", offset, offset + out->size() - 1));
      req.accept = [offset, len = out->size()](const HttpResponse& r) { return check_range_response(r, offset, len); };
    }
    note_request();
    auto r = http_.perform(req);
    if (!r) return retryable(std::move(r).error().context(what));
    if (r->status == 401 && !reauthed) {
      reauthed = true;
      if (auto a = reauth(auth, r->header("www-authenticate")); !a) {
        a.error().error = std::move(a.error().error).context(what + ": HTTP 401");
        return std::unexpected(std::move(a).error());
      }
      continue;
    }
    if (is_redirect(r->status)) {
      const auto& loc = r->header("location");
      if (loc.empty()) return retryable(Error{Errc::kIo, 0, what + ": redirect without Location"});
      auto target = resolve_url(req.url, loc);
      if (!target) return fatal(std::move(target).error().context(what));
      if (method == "GET") {
        std::lock_guard lk(redirect_mu_);
        redirects_[blob_id] = *target;
      }
      auto s = request_storage(*target, method, offset, out);
      if (!s && method == "GET") {
        std::lock_guard lk(redirect_mu_);
        redirects_.erase(blob_id);
      }
      return s;
    }
    if (out) {
      if (auto st = finish_ranged_get(r, out->size(), what); !st) return std::unexpected(std::move(st).error());
      return std::move(*r);
    }
    if (r->status / 100 != 2) return std::unexpected(status_error(*r, what));
    return std::move(*r);
  }
}

Attempt<> RegistryBackend::fetch(const std::string& blob_id, uint64_t offset, std::span<uint8_t> out) {
  // A storage URL the registry redirected us to before: use it until it fails.
  std::string cached;
  {
    std::lock_guard lk(redirect_mu_);
    if (auto it = redirects_.find(blob_id); it != redirects_.end()) cached = it->second;
  }
  if (!cached.empty()) {
    if (request_storage(cached, "GET", offset, out)) return {};
    std::lock_guard lk(redirect_mu_);
    if (auto it = redirects_.find(blob_id); it != redirects_.end() && it->second == cached) redirects_.erase(it);
  }
  auto eps = route();
  for (size_t i = 0; i < eps.size(); i++) {
    auto r = request(eps[i], "GET", blob_id, offset, out);
    if (r) return {};
    if (eps[i].kind == Kind::kOrigin || i + 1 == eps.size()) {
      if (eps[i].kind != Kind::kOrigin) endpoint_failed(eps[i]);
      return std::unexpected(std::move(r).error());
    }
    endpoint_failed(eps[i]);  // proxy/mirror: fall through to the next
  }
  return fatal(Error{Errc::kInternal, 0, "no registry endpoint"});
}

Attempt<uint64_t> RegistryBackend::head_size(const std::string& blob_id) {
  auto eps = route();
  for (size_t i = 0; i < eps.size(); i++) {
    auto r = request(eps[i], "HEAD", blob_id, 0, std::nullopt);
    if (r) {
      if (auto cl = r->content_length()) return *cl;
      return retryable(Error{Errc::kIo, 0, fmt::format("HEAD blob {}: no Content-Length", blob_id)});
    }
    if (eps[i].kind == Kind::kOrigin || i + 1 == eps.size()) return std::unexpected(std::move(r).error());
  }
  return fatal(Error{Errc::kInternal, 0, "no registry endpoint"});
}

bool RegistryBackend::ping(const std::string& url) {
  HttpRequest req;
  req.url = url;
  req.max_body = 64 << 10;
  req.timeout = std::min(cfg_.timeout, Millis(5000));
  auto r = http_.perform(req);
  return r && r->status / 100 == 2;
}

void RegistryBackend::health_loop() {
  Millis tick = Millis(1000);
  if (!proxy_base_.empty()) tick = std::min(tick, cfg_.proxy.check_interval);
  for (const auto& m : mirrors_) tick = std::min(tick, m->cfg.health_check_interval);
  tick = std::max(tick, Millis(10));
  std::unique_lock lk(health_mu_);
  while (!stop_) {
    health_cv_.wait_for(lk, tick, [&] { return stop_; });
    if (stop_) break;
    const auto now = Clock::now();
    // Proxy: pinged every check_interval while we have a ping URL; without
    // one, a proxy marked down is given another chance after the interval.
    if (!proxy_base_.empty() && now >= proxy_next_check_) {
      proxy_next_check_ = now + cfg_.proxy.check_interval;
      if (!cfg_.proxy.ping_url.empty()) {
        lk.unlock();
        bool up = ping(cfg_.proxy.ping_url);
        lk.lock();
        proxy_healthy_.store(up);
      } else {
        proxy_healthy_.store(true);
      }
    }
    for (auto& m : mirrors_) {
      if (m->failures.load() < m->cfg.failure_limit || Clock::now() < m->next_check) continue;
      m->next_check = Clock::now() + m->cfg.health_check_interval;
      bool up = true;
      if (!m->cfg.ping_url.empty()) {
        lk.unlock();
        up = ping(m->cfg.ping_url);
        lk.lock();
      }
      if (up) m->failures.store(0);
    }
  }
}

}  // namespace nydus::storage
