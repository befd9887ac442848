#include "storage/http_client.h"

#include <curl/curl.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cctype>
#include <cerrno>
#include <cstdio>
#include <condition_variable>
#include <cstring>
#include <system_error>
#include <thread>

#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

namespace nydus::storage {

// The one socket HttpClient::preconnect opened, until a transfer takes it,
// its time runs out or the client goes (the connecting thread shares it).
struct PreconnectSlot {
  std::mutex mu;
  std::condition_variable cv;
  bool running = false;  // a connecting thread holds this slot
  bool closed = false;   // the client is gone
  int fd = -1;           // connected or connecting; -1 = none
  sockaddr_storage addr{};
  std::chrono::steady_clock::time_point started{};

  // The socket, if it goes to `a` and is still fresh, once its connect has
  // finished (waiting at most `connect_timeout` from its start); -1 otherwise.
  int take(const sockaddr* a, std::chrono::milliseconds connect_timeout);
};

namespace {

constexpr size_t kMaxErrorBody = 64 << 10;  // error bodies kept for messages

thread_local bool t_background = false;  // see BackgroundRequestScope
std::atomic<int> g_preconnects{0};         // connecting threads alive (HttpClient::kMaxPreconnects)

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
  PreconnectSlot* pre = nullptr;        // a socket this transfer may take
  std::chrono::milliseconds connect_timeout{0};
  int preconnected = -1;         // the socket it took, already connected
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

// Whether two socket addresses name the same host and port.
bool same_address(const sockaddr* a, const sockaddr_storage& b) {
  if (a->sa_family != b.ss_family) return false;
  if (a->sa_family == AF_INET) {
    const auto* x = reinterpret_cast<const sockaddr_in*>(a);
    const auto* y = reinterpret_cast<const sockaddr_in*>(&b);
    return x->sin_port == y->sin_port && x->sin_addr.s_addr == y->sin_addr.s_addr;
  }
  if (a->sa_family == AF_INET6) {
    const auto* x = reinterpret_cast<const sockaddr_in6*>(a);
    const auto* y = reinterpret_cast<const sockaddr_in6*>(&b);
    return x->sin6_port == y->sin6_port && x->sin6_scope_id == y->sin6_scope_id &&
           std::memcmp(&x->sin6_addr, &y->sin6_addr, sizeof x->sin6_addr) == 0;
  }
  return false;
}

// curl's socket for a new connection: the preconnected one when it fits.
curl_socket_t open_socket_cb(void* user, curlsocktype purpose, curl_sockaddr* a) {
  auto* t = static_cast<Transfer*>(user);
  if (purpose == CURLSOCKTYPE_IPCXN && t->pre && !t_background) {
    if (int fd = t->pre->take(&a->addr, t->connect_timeout); fd >= 0) {
      t->preconnected = fd;
      return fd;
    }
  }
  return ::socket(a->family, a->socktype | SOCK_CLOEXEC, a->protocol);
}

int sockopt_cb(void* user, curl_socket_t fd, curlsocktype) {
  return fd == static_cast<Transfer*>(user)->preconnected ? CURL_SOCKOPT_ALREADY_CONNECTED : CURL_SOCKOPT_OK;
}

// host and port of an http(s) URL, for getaddrinfo; nullopt when unparsable.
std::optional<std::pair<std::string, std::string>> host_port(const std::string& url) {
  CURLU* u = curl_url();
  if (!u) return std::nullopt;
  std::optional<std::pair<std::string, std::string>> out;
  char* host = nullptr;
  char* port = nullptr;
  if (curl_url_set(u, CURLUPART_URL, url.c_str(), 0) == CURLUE_OK &&
      curl_url_get(u, CURLUPART_HOST, &host, 0) == CURLUE_OK &&
      curl_url_get(u, CURLUPART_PORT, &port, CURLU_DEFAULT_PORT) == CURLUE_OK) {
    std::string h(host);
    if (h.size() > 2 && h.front() == '[' && h.back() == ']') h = h.substr(1, h.size() - 2);  // IPv6 literal
    out.emplace(std::move(h), port);
  }
  curl_free(host);
  curl_free(port);
  curl_url_cleanup(u);
  return out;
}

}  // namespace

BackgroundRequestScope::BackgroundRequestScope() : was_(std::exchange(t_background, true)) {}
BackgroundRequestScope::~BackgroundRequestScope() { t_background = was_; }

int PreconnectSlot::take(const sockaddr* a, std::chrono::milliseconds connect_timeout) {
  int s = -1;
  std::chrono::steady_clock::time_point t0;
  {
    std::lock_guard lk(mu);
    if (fd < 0 || closed || !same_address(a, addr)) return -1;
    s = std::exchange(fd, -1);
    t0 = started;
  }
  cv.notify_all();  // the connecting thread's watch is over
  const auto now = std::chrono::steady_clock::now();
  const auto deadline = t0 + (connect_timeout.count() > 0 ? std::chrono::milliseconds(connect_timeout)
                                                          : std::chrono::milliseconds(HttpClient::kPreconnectTtl));
  auto unusable = [s] {
    ::close(s);
    return -1;
  };
  if (now - t0 > HttpClient::kPreconnectTtl || now >= deadline) return unusable();
  pollfd p{s, POLLOUT, 0};
  int r;
  do {
    const auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    r = ::poll(&p, 1, int(std::max<int64_t>(0, left.count())));
  } while (r < 0 && errno == EINTR);
  if (r <= 0) return unusable();
  int err = 0;
  socklen_t len = sizeof err;
  if (::getsockopt(s, SOL_SOCKET, SO_ERROR, &err, &len) != 0 || err != 0) return unusable();
  // Connected, but the server may have closed it since (FIN or RST), or spoken
  // first, which HTTP servers do only to give up on a silent client.
  char b;
  const ssize_t n = ::recv(s, &b, 1, MSG_PEEK | MSG_DONTWAIT);
  if (n >= 0 || (errno != EAGAIN && errno != EWOULDBLOCK)) return unusable();
  return s;
}

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

HttpClient::HttpClient(HttpOptions opts) : opts_(opts), pre_(std::make_shared<PreconnectSlot>()) {
  global_init();
  share_ = std::make_unique<Share>();
}

HttpClient::~HttpClient() {
  for (void* h : idle_) curl_easy_cleanup(static_cast<CURL*>(h));
  idle_.clear();
  {
    std::lock_guard lk(pre_->mu);
    pre_->closed = true;
    if (pre_->fd >= 0) ::close(std::exchange(pre_->fd, -1));
  }
  pre_->cv.notify_all();
}

void HttpClient::preconnect(const std::string& url) {
  auto hp = host_port(url);
  if (!hp) return;
  if (g_preconnects.fetch_add(1) >= kMaxPreconnects) {
    g_preconnects.fetch_sub(1);
    return;
  }
  {
    std::lock_guard lk(pre_->mu);
    if (pre_->running || pre_->closed) {
      g_preconnects.fetch_sub(1);
      return;
    }
    pre_->running = true;
    pre_->started = std::chrono::steady_clock::now();
  }
  // A thread of its own: resolving a name may block, and nothing here may
  // delay the caller. It shares the slot, so it may outlive the client.
  auto connecting = [slot = pre_, host = std::move(hp->first), port = std::move(hp->second)] {
    // As curl resolves (any family, stream sockets), so its first address is ours.
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    addrinfo* res = nullptr;
    const bool resolved = ::getaddrinfo(host.c_str(), port.c_str(), &hints, &res) == 0 && res;
    std::unique_lock lk(slot->mu);
    // Connect under the lock: a transfer that finds the slot empty is then
    // sure no connect of ours is on its way to that server.
    int s = -1;
    if (resolved && !slot->closed && res->ai_addrlen <= sizeof slot->addr) {
      s = ::socket(res->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, res->ai_protocol);
      if (s >= 0 && ::connect(s, res->ai_addr, res->ai_addrlen) != 0 && errno != EINPROGRESS) {
        ::close(s);
        s = -1;
      }
    }
    if (s >= 0) {
      std::memcpy(&slot->addr, res->ai_addr, res->ai_addrlen);
      slot->fd = s;
      // Until a transfer takes it, the client goes or its time is up.
      slot->cv.wait_until(lk, slot->started + HttpClient::kPreconnectTtl,
                          [&] { return slot->fd != s || slot->closed; });
      if (slot->fd == s) ::close(std::exchange(slot->fd, -1));
    }
    slot->running = false;
    lk.unlock();
    if (res) ::freeaddrinfo(res);
    g_preconnects.fetch_sub(1);
  };
  try {
    std::thread(std::move(connecting)).detach();
  } catch (const std::system_error&) {  // no thread to spare: the first request connects itself
    std::lock_guard lk(pre_->mu);
    pre_->running = false;
    g_preconnects.fetch_sub(1);
  }
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
  t.pre = pre_.get();
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
  t.connect_timeout = connect;
  curl_easy_setopt(c, CURLOPT_OPENSOCKETFUNCTION, open_socket_cb);
  curl_easy_setopt(c, CURLOPT_OPENSOCKETDATA, &t);
  curl_easy_setopt(c, CURLOPT_SOCKOPTFUNCTION, sockopt_cb);
  curl_easy_setopt(c, CURLOPT_SOCKOPTDATA, &t);
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
