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

// The auth state of the registry itself (the proxy shares it: it forwards
// the registry's requests).
constexpr const char* kOriginAuth = "origin";

}  // namespace

// ---- config ---------------------------------------------------------------

Result<RegistryConfig> parse_registry_config(const nlohmann::json& j) {
  using namespace remote_config;
  RegistryConfig c;
  NYDUS_ASSIGN_OR_RETURN(std::string scheme, get_string(j, "scheme", "https"));
  // Upstream: only "http" is http; "" (the documented "detect") and anything else is https.
  c.scheme = scheme == "http" ? "http" : "https";
  NYDUS_ASSIGN_OR_RETURN(c.host, get_string(j, "host"));
  NYDUS_ASSIGN_OR_RETURN(c.repo, get_string(j, "repo"));
  NYDUS_ASSIGN_OR_RETURN(c.auth, get_string(j, "auth"));
  NYDUS_ASSIGN_OR_RETURN(c.registry_token, get_string(j, "registry_token"));
  NYDUS_ASSIGN_OR_RETURN(c.skip_verify, get_bool(j, "skip_verify", false));
  NYDUS_ASSIGN_OR_RETURN(c.ca_cert_files, get_string_list(j, "ca_cert_files"));
  NYDUS_ASSIGN_OR_RETURN(c.blob_url_scheme, get_string(j, "blob_url_scheme"));
  NYDUS_ASSIGN_OR_RETURN(c.blob_redirected_host, get_string(j, "blob_redirected_host"));
  NYDUS_ASSIGN_OR_RETURN(c.timeout, get_seconds(j, "timeout", Millis(5000), true));
  NYDUS_ASSIGN_OR_RETURN(c.connect_timeout, get_seconds(j, "connect_timeout", Millis(5000), true));
  NYDUS_ASSIGN_OR_RETURN(c.retry, get_retry(j));
  if (!c.blob_url_scheme.empty() && c.blob_url_scheme != "http" && c.blob_url_scheme != "https")
    return errorf(Errc::kInvalidArgument, "registry \"blob_url_scheme\" must be http or https, not '{}'",
                  c.blob_url_scheme);
  for (char ch : c.blob_redirected_host)
    if (ch == '/' || ch == ' ' || ch == '?' || ch == '#' || ch == '@')
      return errorf(Errc::kInvalidArgument, "registry \"blob_redirected_host\" '{}' must be a host", c.blob_redirected_host);
  if (c.host.empty()) return errorf(Errc::kInvalidArgument, "registry backend needs \"host\"");
  if (c.repo.empty()) return errorf(Errc::kInvalidArgument, "registry backend needs \"repo\"");
  for (char ch : c.host)
    if (ch == '/' || ch == ' ' || ch == '?' || ch == '#' || ch == '@')
      return errorf(Errc::kInvalidArgument, "registry host '{}' must be host[:port]", c.host);
  for (char ch : c.repo)
    if (!(std::isalnum(static_cast<unsigned char>(ch)) || ch == '/' || ch == '.' || ch == '_' || ch == '-'))
      return errorf(Errc::kInvalidArgument, "invalid registry repo '{}'", c.repo);

  NYDUS_ASSIGN_OR_RETURN(c.proxy, parse_proxy_config(j));
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
  NYDUS_ASSIGN_OR_RETURN(std::string ca_bundle, load_ca_bundle(cfg.ca_cert_files));
  return std::shared_ptr<RegistryBackend>(new RegistryBackend(std::move(cfg), std::move(ca_bundle)));
}

RegistryBackend::RegistryBackend(RegistryConfig cfg, std::string ca_bundle_pem)
    : RemoteBackend(cfg.retry),
      cfg_(std::move(cfg)),
      https_(cfg_.scheme != "http"),
      http_(http_options_for(cfg_, std::move(ca_bundle_pem))) {
  if (!cfg_.proxy.url.empty()) proxy_ = std::make_unique<BackendProxy>(cfg_.proxy, http_);
  for (const auto& m : cfg_.mirrors) {
    auto mm = std::make_unique<Mirror>();
    mm->cfg = m;
    mm->base = m.host;
    while (mm->base.ends_with('/')) mm->base.pop_back();
    if (mm->base.find("://") == std::string::npos) mm->base = cfg_.scheme + "://" + mm->base;
    mirrors_.push_back(std::move(mm));
  }
  if (!cfg_.registry_token.empty()) auth_for(kOriginAuth).header = "Bearer " + cfg_.registry_token;
  if (!mirrors_.empty()) health_thread_ = std::thread([this] { health_loop(); });
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

std::string RegistryBackend::basic_auth() const {
  std::lock_guard lk(cred_mu_);
  return cfg_.auth;
}

Status RegistryBackend::update_auth(const std::string& auth_base64) {
  {
    std::lock_guard lk(cred_mu_);
    cfg_.auth = auth_base64;
  }
  // Forget what the old credentials earned (Basic headers, Bearer tokens
  // from a realm): the next request is challenged again and answered with
  // the new ones. A static registry_token stays.
  std::lock_guard lk(auth_mu_);
  for (auto& [key, st] : auth_) {
    std::lock_guard sl(st->mu);
    if (st->header.starts_with("Basic ") || st->bearer) {
      st->header.clear();
      st->expires = std::chrono::steady_clock::time_point::max();
    }
  }
  return ok();
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
  if (const std::string a = basic_auth(); !a.empty()) req.headers.emplace_back("Authorization", "Basic " + a);
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
    const std::string basic_cred = basic_auth();
    if (basic_cred.empty())
      return fatal(Error{Errc::kIo, 0, "registry requires Basic auth but no \"auth\" is configured"});
    std::lock_guard lk(st.mu);
    st.header = "Basic " + basic_cred;
    st.expires = Clock::time_point::max();
    st.bearer.reset();
    return {};
  }
  return fatal(Error{Errc::kIo, 0, fmt::format("unsupported registry auth challenge '{}'", www_authenticate)});
}

void RegistryBackend::preconnect() {
  if (proxy_) return;
  http_.preconnect(route().front().base);
}

std::string RegistryBackend::origin() const { return (https_.load() ? "https://" : "http://") + cfg_.host; }

Result<HttpResponse> RegistryBackend::send(const HttpRequest& req) {
  if (proxy_) return proxy_->perform(req, [this] { note_request(); });
  note_request();
  return http_.perform(req);
}

Result<std::string> RegistryBackend::rewrite_redirect(const std::string& url) const {
  if (cfg_.blob_url_scheme.empty() && cfg_.blob_redirected_host.empty()) return url;
  const auto sep = url.find("://");
  if (sep == std::string::npos) return corrupt("redirect target '{}' has no scheme", url);
  std::string scheme = url.substr(0, sep);
  std::string rest = url.substr(sep + 3);
  const auto path_at = rest.find_first_of("/?#");
  std::string authority = rest.substr(0, path_at);
  const std::string tail = path_at == std::string::npos ? "" : rest.substr(path_at);
  if (!cfg_.blob_url_scheme.empty()) scheme = cfg_.blob_url_scheme;
  if (!cfg_.blob_redirected_host.empty()) {
    // Like upstream's Url::set_host: the host changes, userinfo and port stay.
    const auto at = authority.rfind('@');
    const std::string userinfo = at == std::string::npos ? "" : authority.substr(0, at + 1);
    std::string hostport = at == std::string::npos ? authority : authority.substr(at + 1);
    std::string port;
    const auto colon = hostport.rfind(':');
    if (colon != std::string::npos && hostport.find(']', colon) == std::string::npos) port = hostport.substr(colon);
    authority = userinfo + cfg_.blob_redirected_host + port;
  }
  return scheme + "://" + authority + tail;
}

std::vector<RegistryBackend::Endpoint> RegistryBackend::route() {
  std::vector<Endpoint> eps;
  for (size_t i = 0; i < mirrors_.size(); i++)
    if (mirrors_[i]->failures.load() < mirrors_[i]->cfg.failure_limit) eps.push_back({Kind::kMirror, mirrors_[i]->base, i});
  eps.push_back({Kind::kOrigin, origin(), 0});
  return eps;
}

void RegistryBackend::endpoint_failed(const Endpoint& ep) {
  if (ep.kind == Kind::kMirror) {
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
  auto r = send(req);
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
  AuthState& auth = auth_for(ep.kind == Kind::kMirror ? ep.base : kOriginAuth);
  const char* kind = ep.kind == Kind::kMirror ? "mirror" : "registry";
  std::string base = ep.base;
  std::string what = fmt::format("{} {} {}{}", method, kind, base, path);
  bool reauthed = false;
  for (;;) {
    HttpRequest req;
    req.method = method;
    req.url = base + path;
    if (ep.kind == Kind::kMirror)
      for (const auto& [k, v] : mirrors_[ep.mirror]->cfg.headers) req.headers.emplace_back(k, v);
    if (auto h = auth_header(auth); !h.empty()) req.headers.emplace_back("Authorization", h);
    if (out) {
      req.body_out = *out;
      req.headers.emplace_back("Range", fmt::format("bytes={}-{}", offset, offset + out->size() - 1));
      req.accept = [offset, len = out->size()](const HttpResponse& r) { return check_range_response(r, offset, len); };
    }
    Result<HttpResponse> r = std::unexpected(Error{});
    if (ep.kind == Kind::kOrigin) {
      r = send(req);
    } else {
      note_request();
      r = http_.perform(req);
    }
    if (!r && ep.kind == Kind::kOrigin && cfg_.skip_verify && base.starts_with("https://") &&
        is_tls_or_refused_error(r.error(), req.url)) {
      // Upstream's needs_fallback_http: a plain-HTTP registry (or none on
      // 443) behind "https"; from now on the registry is spoken to over http.
      https_.store(false);
      base = origin();
      what = fmt::format("{} {} {}{}", method, kind, base, path);
      continue;
    }
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
      auto resolved = resolve_url(req.url, loc);
      if (!resolved) return fatal(std::move(resolved).error().context(what));
      auto target = rewrite_redirect(*resolved);
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
  for (const auto& m : mirrors_) tick = std::min(tick, m->cfg.health_check_interval);
  tick = std::max(tick, Millis(10));
  std::unique_lock lk(health_mu_);
  while (!stop_) {
    health_cv_.wait_for(lk, tick, [&] { return stop_; });
    if (stop_) break;
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
