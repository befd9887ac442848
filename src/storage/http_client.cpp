#include "storage/http_client.h"

#include <curl/curl.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstring>

#include <unistd.h>

namespace nydus::storage {

namespace {

constexpr size_t kMaxErrorBody = 64 << 10;  // error bodies kept for messages

void global_init() {
  static std::once_flag once;
  std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
}

std::string lower(std::string_view s) {
  std::string out(s);
  for (auto& c : out) c = char(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r' || s.back() == '\n'))
    s.remove_suffix(1);
  return s;
}

// State of one transfer, seen by the callbacks.
struct Transfer {
  const HttpRequest* req = nullptr;
  HttpResponse resp;
  bool decided = false;          // whether the first body byte was seen
  bool to_out = false;           // body goes to req->body_out
  bool to_stream = false;        // body goes to req->on_body
  std::optional<Error> abort;    // why a callback stopped the transfer
};

size_t header_cb(char* data, size_t size, size_t n, void* user) {
  auto* t = static_cast<Transfer*>(user);
  const size_t len = size * n;
  std::string_view line(data, len);
  line = trim(line);
  if (line.starts_with("HTTP/")) {
    // A new response (after 100-continue or a proxy CONNECT): start over.
    t->resp.headers.clear();
    t->resp.status = 0;
    auto sp = line.find(' ');
    if (sp != std::string_view::npos) {
      long code = 0;
      for (size_t i = sp + 1; i < line.size() && std::isdigit(static_cast<unsigned char>(line[i])); i++)
        code = code * 10 + (line[i] - '0');
      t->resp.status = code;
    }
    return len;
  }
  auto colon = line.find(':');
  if (colon != std::string_view::npos && colon > 0)
    t->resp.headers[lower(trim(line.substr(0, colon)))] = std::string(trim(line.substr(colon + 1)));
  return len;
}

size_t write_cb(char* data, size_t size, size_t n, void* user) {
  auto* t = static_cast<Transfer*>(user);
  const size_t len = size * n;
  if (!t->decided) {
    t->decided = true;
    const bool ok = t->resp.status >= 200 && t->resp.status < 300;
    t->to_out = ok && t->req->body_out.has_value();
    t->to_stream = ok && !t->to_out && t->req->on_body != nullptr;
    if (t->to_out && t->req->accept) {
      if (auto st = t->req->accept(t->resp); !st) {
        t->abort = std::move(st).error();
        return 0;
      }
    }
    t->resp.wrote_body_out = t->to_out;
  }
  if (t->to_out) {
    auto out = *t->req->body_out;
    if (t->resp.body_bytes + len > out.size()) {
      t->abort = Error{Errc::kCorrupt, 0,
                       fmt::format("response body exceeds the {} bytes expected", out.size())};
      return 0;
    }
    std::memcpy(out.data() + t->resp.body_bytes, data, len);
    t->resp.body_bytes += len;
    return len;
  }
  if (t->to_stream) {
    if (auto st = t->req->on_body(std::string_view(data, len)); !st) {
      t->abort = std::move(st).error();
      return 0;
    }
    t->resp.body_bytes += len;
    return len;
  }
  // A request whose 2xx body goes elsewhere keeps only the head of an error body here.
  const bool error_body = t->req->body_out || t->req->on_body;
  const size_t cap = error_body ? kMaxErrorBody : t->req->max_body;
  if (t->resp.body.size() + len > cap) {
    if (error_body) {  // keep the head, drop the rest
      t->resp.body.append(data, cap - t->resp.body.size());
      t->resp.body_bytes += len;
      return len;
    }
    t->abort = Error{Errc::kCorrupt, 0, fmt::format("response body exceeds the {} byte limit", cap)};
    return 0;
  }
  t->resp.body.append(data, len);
  t->resp.body_bytes += len;
  return len;
}

int progress_cb(void* user, curl_off_t, curl_off_t, curl_off_t, curl_off_t) {
  auto* t = static_cast<Transfer*>(user);
  if (!t->req->cancelled()) return 0;
  t->abort = Error{Errc::kIo, ECANCELED, fmt::format("{} {}: cancelled", t->req->method, t->req->url)};
  return 1;
}

}  // namespace

const std::string& HttpResponse::header(const std::string& name) const {
  static const std::string kEmpty;
  auto it = headers.find(name);
  return it == headers.end() ? kEmpty : it->second;
}

std::optional<uint64_t> HttpResponse::content_length() const {
  auto it = headers.find("content-length");
  if (it == headers.end() || it->second.empty()) return std::nullopt;
  uint64_t v = 0;
  for (char c : it->second) {
    if (!std::isdigit(static_cast<unsigned char>(c))) return std::nullopt;
    if (v > (UINT64_MAX - 9) / 10) return std::nullopt;
    v = v * 10 + uint64_t(c - '0');
  }
  return v;
}

struct HttpClient::Share {
  CURLSH* sh = nullptr;
  std::array<std::mutex, CURL_LOCK_DATA_LAST> locks;

  Share() {
    sh = curl_share_init();
    curl_share_setopt(sh, CURLSHOPT_LOCKFUNC, +[](CURL*, curl_lock_data d, curl_lock_access, void* u) {
      static_cast<Share*>(u)->locks[size_t(d)].lock();
    });
    curl_share_setopt(sh, CURLSHOPT_UNLOCKFUNC, +[](CURL*, curl_lock_data d, void* u) {
      static_cast<Share*>(u)->locks[size_t(d)].unlock();
    });
    curl_share_setopt(sh, CURLSHOPT_USERDATA, this);
    curl_share_setopt(sh, CURLSHOPT_SHARE, CURL_LOCK_DATA_DNS);
    curl_share_setopt(sh, CURLSHOPT_SHARE, CURL_LOCK_DATA_SSL_SESSION);
  }
  ~Share() { curl_share_cleanup(sh); }
};

HttpClient::HttpClient(HttpOptions opts) : opts_(opts) {
  global_init();
  share_ = std::make_unique<Share>();
}

HttpClient::~HttpClient() {
  for (void* h : idle_) curl_easy_cleanup(static_cast<CURL*>(h));
  idle_.clear();
}

void* HttpClient::acquire() {
  {
    std::lock_guard lk(mu_);
    if (!idle_.empty()) {
      void* h = idle_.back();
      idle_.pop_back();
      return h;
    }
  }
  return curl_easy_init();
}

void HttpClient::release(void* h) {
  curl_easy_reset(static_cast<CURL*>(h));  // keeps live connections for reuse
  std::lock_guard lk(mu_);
  if (idle_.size() < opts_.max_idle_handles) {
    idle_.push_back(h);
    return;
  }
  curl_easy_cleanup(static_cast<CURL*>(h));
}

Result<HttpResponse> HttpClient::perform(const HttpRequest& req) {
  CURL* c = static_cast<CURL*>(acquire());
  if (!c) return errorf(Errc::kIo, "curl_easy_init failed");
  struct Guard {
    HttpClient* self;
    CURL* c;
    curl_slist* hdrs = nullptr;
    ~Guard() {
      curl_slist_free_all(hdrs);
      self->release(c);
    }
  } guard{this, c};

  Transfer t;
  t.req = &req;
  char errbuf[CURL_ERROR_SIZE] = {0};

  curl_easy_setopt(c, CURLOPT_SHARE, share_->sh);
  curl_easy_setopt(c, CURLOPT_URL, req.url.c_str());
  curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L);
  curl_easy_setopt(c, CURLOPT_ERRORBUFFER, errbuf);
  curl_easy_setopt(c, CURLOPT_HTTP_VERSION, opts_.http2 ? CURL_HTTP_VERSION_2TLS : CURL_HTTP_VERSION_1_1);
  const auto timeout = req.timeout.value_or(opts_.timeout);
  curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, long(timeout.count()));
  // 0 = no limit (upstream's timeout: 0); a connect timeout never outlasts the total one.
  auto connect = opts_.connect_timeout;
  if (timeout.count() > 0 && (connect.count() == 0 || connect > timeout)) connect = timeout;
  curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, long(connect.count()));
  curl_easy_setopt(c, CURLOPT_SSL_VERIFYPEER, opts_.skip_verify ? 0L : 1L);
  curl_easy_setopt(c, CURLOPT_SSL_VERIFYHOST, opts_.skip_verify ? 0L : 2L);
  if (!opts_.ca_bundle_pem.empty()) {
    curl_blob blob{const_cast<char*>(opts_.ca_bundle_pem.data()), opts_.ca_bundle_pem.size(), CURL_BLOB_NOCOPY};
    curl_easy_setopt(c, CURLOPT_CAINFO_BLOB, &blob);
  }
  if (!opts_.client_cert_pem.empty()) {
    curl_blob cert{const_cast<char*>(opts_.client_cert_pem.data()), opts_.client_cert_pem.size(), CURL_BLOB_NOCOPY};
    curl_blob key{const_cast<char*>(opts_.client_key_pem.data()), opts_.client_key_pem.size(), CURL_BLOB_NOCOPY};
    curl_easy_setopt(c, CURLOPT_SSLCERTTYPE, "PEM");
    curl_easy_setopt(c, CURLOPT_SSLCERT_BLOB, &cert);
    curl_easy_setopt(c, CURLOPT_SSLKEYTYPE, "PEM");
    curl_easy_setopt(c, CURLOPT_SSLKEY_BLOB, &key);
  }
  if (req.cancelled) {
    curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, progress_cb);
    curl_easy_setopt(c, CURLOPT_XFERINFODATA, &t);
    curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
  }
  // An explicit "" disables proxies from the environment.
  curl_easy_setopt(c, CURLOPT_PROXY, req.proxy.c_str());
  if (!req.unix_socket.empty()) curl_easy_setopt(c, CURLOPT_UNIX_SOCKET_PATH, req.unix_socket.c_str());
  curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, header_cb);
  curl_easy_setopt(c, CURLOPT_HEADERDATA, &t);
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, write_cb);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, &t);

  if (req.method == "HEAD") {
    curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
  } else if (req.method == "GET") {
    curl_easy_setopt(c, CURLOPT_HTTPGET, 1L);
  } else if (req.method == "PUT" || req.method == "POST") {
    curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, curl_off_t(req.body.size()));
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, req.body.empty() ? "" : reinterpret_cast<const char*>(req.body.data()));
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, req.method.c_str());
  } else {
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, req.method.c_str());
  }

  for (const auto& [k, v] : req.headers) {
    std::string line = v.empty() ? k + ";" : k + ": " + v;
    guard.hdrs = curl_slist_append(guard.hdrs, line.c_str());
  }
  guard.hdrs = curl_slist_append(guard.hdrs, "Expect:");
  curl_easy_setopt(c, CURLOPT_HTTPHEADER, guard.hdrs);

  CURLcode rc = curl_easy_perform(c);
  if (t.abort) return std::unexpected(std::move(*t.abort));
  if (rc != CURLE_OK) {
    return errorf(Errc::kIo, "{} {}: {}{}{}", req.method, req.url, curl_easy_strerror(rc), errbuf[0] ? ": " : "",
                  errbuf);
  }
  long code = 0;
  curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code);
  if (code != 0) t.resp.status = code;
  if (t.resp.status >= 200 && t.resp.status < 300 && req.body_out && !t.decided && req.method != "HEAD") {
    // An empty 2xx body: still let `accept` judge the headers.
    t.resp.wrote_body_out = true;
    if (req.accept) NYDUS_TRY(req.accept(t.resp));
  }
  return std::move(t.resp);
}

Result<std::string> load_ca_bundle(const std::vector<std::string>& ca_cert_files) {
  if (ca_cert_files.empty()) return std::string();
  constexpr size_t kMaxPem = 16 << 20;
  auto read_file = [&](const std::string& path, std::string& out) -> Status {
    std::FILE* f = std::fopen(path.c_str(), "rb");
    if (!f) return sys_error(fmt::format("ca_cert_files: open {}", path));
    char buf[65536];
    size_t n;
    while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) {
      out.append(buf, n);
      if (out.size() > kMaxPem) break;
    }
    std::fclose(f);
    if (out.size() > kMaxPem) return errorf(Errc::kInvalidArgument, "ca_cert_files: {} is too large", path);
    return ok();
  };
  std::string bundle;
  // The system store curl would use (Debian's bundle; libcurl's built-in default).
  for (const char* sys : {"/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt"}) {
    if (::access(sys, R_OK) != 0) continue;
    NYDUS_TRY(read_file(sys, bundle));
    bundle += "\n";
    break;
  }
  for (const auto& path : ca_cert_files) {
    std::string pem;
    NYDUS_TRY(read_file(path, pem));
    if (pem.find("-----BEGIN CERTIFICATE-----") == std::string::npos)
      return errorf(Errc::kInvalidArgument, "ca_cert_files: {} holds no PEM certificate", path);
    bundle += pem;
    bundle += "\n";
  }
  return bundle;
}

bool is_tls_or_refused_error(const Error& e, const std::string& url) {
  // perform() writes "<METHOD> <url>: <curl error>"; judge only the curl part
  // so that a host name holding "ssl" does not count.
  std::string_view m = e.message;
  if (auto p = m.find(url + ": "); p != std::string_view::npos) m.remove_prefix(p + url.size() + 2);
  const std::string l = lower(m);
  return l.find("ssl") != std::string::npos || l.find("wrong version number") != std::string::npos || l.find("connection refused") != std::string::npos;
}

std::string url_encode(std::string_view s, bool keep_slash) {
  static const char* hex = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : s) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~' || (keep_slash && c == '/')) {
      out.push_back(char(c));
    } else {
      out.push_back('%');
      out.push_back(hex[c >> 4]);
      out.push_back(hex[c & 15]);
    }
  }
  return out;
}

Result<std::string> resolve_url(const std::string& base, const std::string& location) {
  global_init();
  CURLU* u = curl_url();
  if (!u) return errorf(Errc::kIo, "curl_url failed");
  struct G {
    CURLU* u;
    ~G() { curl_url_cleanup(u); }
  } g{u};
  if (curl_url_set(u, CURLUPART_URL, base.c_str(), 0) != CURLUE_OK)
    return errorf(Errc::kInvalidArgument, "bad base URL '{}'", base);
  if (curl_url_set(u, CURLUPART_URL, location.c_str(), CURLU_NON_SUPPORT_SCHEME) != CURLUE_OK)
    return corrupt("bad redirect location '{}'", location);
  char* out = nullptr;
  if (curl_url_get(u, CURLUPART_URL, &out, 0) != CURLUE_OK) return corrupt("bad redirect location '{}'", location);
  std::string s(out);
  curl_free(out);
  if (!s.starts_with("http://") && !s.starts_with("https://"))
    return corrupt("redirect to a non-HTTP location '{}'", location);
  return s;
}

std::string url_origin(const std::string& url) {
  auto p = url.find("://");
  if (p == std::string::npos) return {};
  auto slash = url.find('/', p + 3);
  return slash == std::string::npos ? url : url.substr(0, slash);
}

}  // namespace nydus::storage
