#include "api/http_server.h"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <mutex>
#include <thread>
#include <unordered_map>

#include <fcntl.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

namespace nydus::api {

namespace {

using Clock = std::chrono::steady_clock;

bool is_tchar(unsigned char c) {
  if (std::isalnum(c)) return true;
  return std::strchr("!#$%&'*+-.^_`|~", c) != nullptr && c != 0;
}

char ascii_lower(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c; }

std::string lower(std::string_view s) {
  std::string out(s);
  for (auto& c : out) c = ascii_lower(c);
  return out;
}

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i)
    if (ascii_lower(a[i]) != ascii_lower(b[i])) return false;
  return true;
}

std::string_view trim_ows(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

// Does a comma-separated header value contain `token` (case-insensitive)?
bool has_token(std::string_view value, std::string_view token) {
  while (!value.empty()) {
    size_t comma = value.find(',');
    std::string_view item = trim_ows(value.substr(0, comma));
    if (iequals(item, token)) return true;
    if (comma == std::string_view::npos) break;
    value.remove_prefix(comma + 1);
  }
  return false;
}

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

ParseOutcome parse_error(int status, std::string code, std::string message) {
  ParseOutcome o;
  o.kind = ParseOutcome::kError;
  o.error_status = status;
  o.error_code = std::move(code);
  o.error_message = std::move(message);
  return o;
}

// Bytes that can never appear in a request line; lets garbage be rejected
// before a full line (or 16 KiB) has arrived.
bool bad_request_line_byte(unsigned char c) {
  return c != '\r' && c != '\n' && (c < 0x20 || c >= 0x7f);
}

}  // namespace

// ---------------------------------------------------------------------------
// Requests and responses

std::optional<std::string> HttpRequest::query_param(const std::string& key) const {
  auto it = query.find(key);
  if (it == query.end()) return std::nullopt;
  return it->second;
}

HttpResponse HttpResponse::json(int status, std::string body) {
  return HttpResponse{status, "application/json", std::move(body), {}};
}

HttpResponse HttpResponse::error(int status, std::string_view code, std::string_view message) {
  nlohmann::json j = {{"code", std::string(code)}, {"message", std::string(message)}};
  // replace: a message quoting a client's bytes may not be valid UTF-8.
  return json(status, j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
}

const char* http_reason(int status) {
  switch (status) {
    case 100: return "Continue";
    case 200: return "OK";
    case 201: return "Created";
    case 204: return "No Content";
    case 400: return "Bad Request";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 411: return "Length Required";
    case 413: return "Payload Too Large";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 503: return "Service Unavailable";
    case 505: return "HTTP Version Not Supported";
    default: return "Unknown";
  }
}

std::string serialize_response(const HttpResponse& resp, bool keep_alive) {
  std::string out = fmt::format("HTTP/1.1 {} {}\r\nServer: Nydus API\r\n", resp.status,
                                http_reason(resp.status));
  // 1xx and 204 carry no body and no Content-Length (RFC 9110 8.6).
  bool bodyless = resp.status == 204 || (resp.status >= 100 && resp.status < 200);
  if (!bodyless) {
    if (!resp.content_type.empty()) out += fmt::format("Content-Type: {}\r\n", resp.content_type);
    out += fmt::format("Content-Length: {}\r\n", resp.body.size());
  }
  for (const auto& [k, v] : resp.headers) out += fmt::format("{}: {}\r\n", k, v);
  out += keep_alive ? "Connection: keep-alive\r\n" : "Connection: close\r\n";
  out += "\r\n";
  if (!bodyless) out += resp.body;
  return out;
}

Result<std::string> percent_decode(std::string_view s, bool plus_is_space) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size(); ++i) {
    char c = s[i];
    if (c == '%') {
      if (i + 2 >= s.size())
        return make_error(Errc::kInvalidArgument, "truncated percent escape");
      int hi = hex_value(s[i + 1]), lo = hex_value(s[i + 2]);
      if (hi < 0 || lo < 0) return make_error(Errc::kInvalidArgument, "bad percent escape");
      char decoded = static_cast<char>(hi * 16 + lo);
      if (decoded == '\0') return make_error(Errc::kInvalidArgument, "NUL in percent escape");
      out += decoded;
      i += 2;
    } else if (c == '+' && plus_is_space) {
      out += ' ';
    } else {
      out += c;
    }
  }
  return out;
}

Result<std::map<std::string, std::string>> parse_query(std::string_view q) {
  std::map<std::string, std::string> out;
  while (!q.empty()) {
    size_t amp = q.find('&');
    std::string_view pair = q.substr(0, amp);
    if (!pair.empty()) {
      size_t eq = pair.find('=');
      NYDUS_ASSIGN_OR_RETURN(std::string key, percent_decode(pair.substr(0, eq), true));
      std::string value;
      if (eq != std::string_view::npos) {
        NYDUS_ASSIGN_OR_RETURN(value, percent_decode(pair.substr(eq + 1), true));
      }
      out.emplace(std::move(key), std::move(value));  // first one wins
    }
    if (amp == std::string_view::npos) break;
    q.remove_prefix(amp + 1);
  }
  return out;
}

ParseOutcome parse_http_request(std::string_view buf, const HttpServerOptions& opts) {
  // RFC 9112 2.2: ignore empty lines before the request line.
  size_t start = 0;
  while (start + 1 < buf.size() && buf[start] == '\r' && buf[start + 1] == '\n') start += 2;
  std::string_view rest = buf.substr(start);

  size_t first_nl = rest.find('\n');
  std::string_view partial_line = rest.substr(0, first_nl);
  for (unsigned char c : partial_line)
    if (bad_request_line_byte(c)) return parse_error(400, "InvalidRequest", "malformed request line");

  size_t head_end = rest.find("\r\n\r\n");
  if (head_end == std::string_view::npos) {
    if (rest.size() > opts.max_header_bytes)
      return parse_error(431, "HeadersTooLarge", "request line and headers exceed the limit");
    if (first_nl != std::string_view::npos && (first_nl == 0 || rest[first_nl - 1] != '\r'))
      return parse_error(400, "InvalidRequest", "request line must end with CRLF");
    return {};
  }
  if (head_end + 4 > opts.max_header_bytes)
    return parse_error(431, "HeadersTooLarge", "request line and headers exceed the limit");

  std::string_view head = rest.substr(0, head_end + 2);  // every line ends with CRLF
  std::vector<std::string_view> lines;
  while (!head.empty()) {
    size_t crlf = head.find("\r\n");
    std::string_view line = head.substr(0, crlf);
    if (line.find('\r') != std::string_view::npos || line.find('\n') != std::string_view::npos)
      return parse_error(400, "InvalidRequest", "bare CR or LF in request head");
    lines.push_back(line);
    head.remove_prefix(crlf + 2);
  }

  // Request line: METHOD SP target SP HTTP/x.y
  std::string_view rl = lines[0];
  size_t sp1 = rl.find(' ');
  size_t sp2 = sp1 == std::string_view::npos ? sp1 : rl.find(' ', sp1 + 1);
  if (sp1 == std::string_view::npos || sp2 == std::string_view::npos ||
      rl.find(' ', sp2 + 1) != std::string_view::npos)
    return parse_error(400, "InvalidRequest", "malformed request line");
  std::string_view method = rl.substr(0, sp1);
  std::string_view target = rl.substr(sp1 + 1, sp2 - sp1 - 1);
  std::string_view version = rl.substr(sp2 + 1);
  if (method.empty() || method.size() > 32 ||
      !std::all_of(method.begin(), method.end(), [](unsigned char c) { return is_tchar(c); }))
    return parse_error(400, "InvalidRequest", "malformed method");
  bool http11 = version == "HTTP/1.1";
  if (!http11 && version != "HTTP/1.0") {
    bool looks_http = version.size() == 8 && version.starts_with("HTTP/") &&
                      std::isdigit(static_cast<unsigned char>(version[5])) && version[6] == '.' &&
                      std::isdigit(static_cast<unsigned char>(version[7]));
    if (looks_http) return parse_error(505, "VersionNotSupported", "only HTTP/1.0 and HTTP/1.1");
    return parse_error(400, "InvalidRequest", "malformed HTTP version");
  }
  // Absolute form (http://host/path) is legal; keep only the path part.
  if (target.starts_with("http://")) {
    size_t slash = target.find('/', 7);
    target = slash == std::string_view::npos ? std::string_view("/") : target.substr(slash);
  }
  if (target.empty() || target[0] != '/')
    return parse_error(400, "InvalidRequest", "request target must be an absolute path");
  if (size_t hash = target.find('#'); hash != std::string_view::npos) target = target.substr(0, hash);

  ParseOutcome o;
  HttpRequest& req = o.request;
  req.method = std::string(method);
  size_t qmark = target.find('?');
  auto path = percent_decode(target.substr(0, qmark), false);
  if (!path) return parse_error(400, "InvalidRequest", "bad path: " + path.error().message);
  req.path = std::move(*path);
  if (qmark != std::string_view::npos) {
    req.raw_query = std::string(target.substr(qmark + 1));
    auto q = parse_query(req.raw_query);
    if (!q) return parse_error(400, "InvalidRequest", "bad query string: " + q.error().message);
    req.query = std::move(*q);
  }

  for (size_t i = 1; i < lines.size(); ++i) {
    std::string_view line = lines[i];
    if (line.empty()) continue;  // cannot happen before head_end, but harmless
    if (line[0] == ' ' || line[0] == '\t')
      return parse_error(400, "InvalidRequest", "obsolete header line folding");
    size_t colon = line.find(':');
    if (colon == std::string_view::npos || colon == 0)
      return parse_error(400, "InvalidRequest", "malformed header line");
    std::string_view name = line.substr(0, colon);
    if (!std::all_of(name.begin(), name.end(), [](unsigned char c) { return is_tchar(c); }))
      return parse_error(400, "InvalidRequest", "malformed header name");
    std::string_view value = trim_ows(line.substr(colon + 1));
    for (unsigned char c : value)
      if ((c < 0x20 && c != '\t') || c == 0x7f)
        return parse_error(400, "InvalidRequest", "control character in header value");
    std::string key = lower(name);
    auto [it, inserted] = req.headers.emplace(key, std::string(value));
    if (!inserted) {
      if (key == "content-length") {
        if (it->second != value)
          return parse_error(400, "InvalidRequest", "conflicting Content-Length headers");
      } else if (key == "host") {
        return parse_error(400, "InvalidRequest", "duplicate Host header");
      } else {
        it->second += ", ";
        it->second += value;
      }
    }
  }

  if (req.headers.contains("transfer-encoding"))
    return parse_error(501, "NotImplemented",
                       "Transfer-Encoding is not supported; send a Content-Length");

  size_t content_length = 0;
  if (auto it = req.headers.find("content-length"); it != req.headers.end()) {
    const std::string& v = it->second;
    if (v.empty() || v.size() > 18 ||
        !std::all_of(v.begin(), v.end(), [](unsigned char c) { return std::isdigit(c); }))
      return parse_error(400, "InvalidRequest", "malformed Content-Length");
    content_length = std::stoull(v);
    if (content_length > opts.max_body_bytes)
      return parse_error(413, "PayloadTooLarge",
                         fmt::format("body of {} bytes exceeds the {} byte limit", content_length,
                                     opts.max_body_bytes));
  }

  auto conn = req.headers.find("connection");
  if (http11)
    o.keep_alive = conn == req.headers.end() || !has_token(conn->second, "close");
  else
    o.keep_alive = conn != req.headers.end() && has_token(conn->second, "keep-alive");

  size_t body_start = start + head_end + 4;
  if (buf.size() - body_start < content_length) {
    auto expect = req.headers.find("expect");
    ParseOutcome incomplete;
    incomplete.expect_continue = expect != req.headers.end() && iequals(expect->second, "100-continue");
    return incomplete;
  }
  req.body = std::string(buf.substr(body_start, content_length));
  o.kind = ParseOutcome::kComplete;
  o.consumed = body_start + content_length;
  return o;
}

// ---------------------------------------------------------------------------
// Router

void Router::add(std::string method, std::string path, HttpHandler handler) {
  routes_[std::move(path)][std::move(method)] = std::move(handler);
}

HttpResponse Router::dispatch(const HttpRequest& req) const {
  auto p = routes_.find(req.path);
  if (p == routes_.end())
    return HttpResponse::error(404, "NotFound", fmt::format("no route for {}", req.path));
  auto m = p->second.find(req.method);
  if (m == p->second.end()) {
    std::string allow;
    for (const auto& [method, _] : p->second) allow += (allow.empty() ? "" : ", ") + method;
    // Upstream answers a known path with the wrong method 400 BadRequest.
    auto r = HttpResponse::error(400, "BadRequest",
                                 fmt::format("{} is not allowed on {}", req.method, req.path));
    r.headers.emplace_back("Allow", allow);
    return r;
  }
  return m->second(req);
}

// ---------------------------------------------------------------------------
// Server

namespace {

struct Conn {
  int fd = -1;
  std::string in;
  std::string out;
  size_t out_off = 0;
  bool busy = false;               // a worker is running its request
  bool close_after_write = false;  // close once `out` is flushed
  bool draining = false;           // response sent, write side shut; discard input until EOF
  bool sent_continue = false;
  bool peer_eof = false;
  bool has_deadline = false;       // idle connections have none (see idle_timeout)
  Clock::time_point deadline;
  Clock::time_point idle_since;
};

struct Job {
  uint64_t conn_id;
  HttpRequest request;
  bool keep_alive;
};

struct Done {
  uint64_t conn_id;
  std::string bytes;
  bool keep_alive;
};

constexpr auto kDrainTime = std::chrono::seconds(2);
constexpr size_t kReadChunk = 64 * 1024;

}  // namespace

struct HttpServer::Impl {
  Router router;
  HttpServerOptions opts;
  int listen_fd = -1;
  int wake_fd = -1;
  dev_t sock_dev = 0;
  ino_t sock_ino = 0;
  bool started = false;
  std::atomic<bool> stopping{false};
  std::thread loop_thread;
  std::vector<std::thread> workers;

  std::mutex job_mu;
  std::condition_variable job_cv;
  std::deque<Job> jobs;
  bool workers_stop = false;

  std::mutex done_mu;
  std::vector<Done> done;

  // Owned by the loop thread only.
  std::unordered_map<uint64_t, Conn> conns;
  uint64_t next_id = 1;
  Clock::time_point accept_pause_until{};

  void wake() {
    uint64_t one = 1;
    ssize_t r = ::write(wake_fd, &one, sizeof(one));
    (void)r;  // EAGAIN means the counter is already non-zero: the loop will wake anyway
  }

  void worker_main() {
    for (;;) {
      Job job;
      {
        std::unique_lock lk(job_mu);
        job_cv.wait(lk, [&] { return workers_stop || !jobs.empty(); });
        if (workers_stop) return;
        job = std::move(jobs.front());
        jobs.pop_front();
      }
      HttpResponse resp;
      try {
        resp = router.dispatch(job.request);
      } catch (const std::exception& e) {
        resp = HttpResponse::error(500, "Internal", fmt::format("handler failed: {}", e.what()));
      } catch (...) {
        resp = HttpResponse::error(500, "Internal", "handler failed");
      }
      std::string bytes;
      try {
        bytes = serialize_response(resp, job.keep_alive);
      } catch (...) {
        bytes = serialize_response(HttpResponse::error(500, "Internal", "serialization failed"), false);
        job.keep_alive = false;
      }
      {
        std::lock_guard lk(done_mu);
        done.push_back(Done{job.conn_id, std::move(bytes), job.keep_alive});
      }
      wake();
    }
  }

  void close_conn(uint64_t id) {
    auto it = conns.find(id);
    if (it == conns.end()) return;
    ::close(it->second.fd);
    conns.erase(it);
  }

  // Write what we can. false: the connection is dead.
  bool flush(Conn& c) {
    while (c.out_off < c.out.size()) {
      ssize_t n = ::send(c.fd, c.out.data() + c.out_off, c.out.size() - c.out_off,
                         MSG_NOSIGNAL | MSG_DONTWAIT);
      if (n > 0) {
        c.out_off += static_cast<size_t>(n);
        continue;
      }
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return true;
      return false;
    }
    c.out.clear();
    c.out_off = 0;
    return true;
  }

  // Read what is available. false: the connection is dead.
  bool fill(Conn& c) {
    size_t cap = opts.max_header_bytes + opts.max_body_bytes + 4096;
    char buf[kReadChunk];
    for (;;) {
      if (!c.draining && c.in.size() >= cap) return true;  // parse will decide
      ssize_t n = ::recv(c.fd, buf, sizeof(buf), MSG_DONTWAIT);
      if (n > 0) {
        if (!c.draining) c.in.append(buf, static_cast<size_t>(n));
        continue;
      }
      if (n == 0) {
        c.peer_eof = true;
        return true;
      }
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) return true;
      return false;
    }
  }

  void set_out(Conn& c, std::string bytes) {
    c.out = std::move(bytes);
    c.out_off = 0;
  }

  // The clock a connection is under: a request in progress (bytes in or a
  // response out) has request_timeout from its first byte, an idle one has
  // idle_timeout (none by default), a draining one its drain time.
  void refresh_deadline(Conn& c, Clock::time_point now) {
    if (c.draining || c.busy) return;
    if (!c.in.empty() || !c.out.empty()) {
      if (!c.has_deadline) {
        c.has_deadline = true;
        c.deadline = now + opts.request_timeout;
      }
      return;
    }
    if (opts.idle_timeout.count() > 0) {
      c.has_deadline = true;
      c.deadline = c.idle_since + opts.idle_timeout;
    } else {
      c.has_deadline = false;
    }
  }

  // Move a connection forward as far as it can go without blocking.
  void advance(uint64_t id, Clock::time_point now) {
    advance_inner(id, now);
    auto it = conns.find(id);
    if (it != conns.end()) refresh_deadline(it->second, now);
  }

  void advance_inner(uint64_t id, Clock::time_point now) {
    auto it = conns.find(id);
    if (it == conns.end()) return;
    Conn& c = it->second;
    for (;;) {
      if (c.busy) return;
      if (!c.out.empty()) {
        if (!flush(c)) return close_conn(id);
        if (!c.out.empty()) return;  // wait for POLLOUT
      }
      if (c.draining) {
        if (c.peer_eof) return close_conn(id);
        return;
      }
      if (c.close_after_write) {
        // Let the client read our reply even if it is still sending: shut
        // our side and discard its bytes for a moment instead of closing on
        // unread data (which makes the client see EPIPE/ECONNRESET).
        if (c.peer_eof || ::shutdown(c.fd, SHUT_WR) != 0) return close_conn(id);
        c.draining = true;
        c.in.clear();
        c.deadline = c.has_deadline ? std::min(c.deadline, now + kDrainTime) : now + kDrainTime;
        c.has_deadline = true;
        return;
      }
      ParseOutcome o = parse_http_request(c.in, opts);
      switch (o.kind) {
        case ParseOutcome::kError:
          set_out(c, serialize_response(
                         HttpResponse::error(o.error_status, o.error_code, o.error_message), false));
          c.close_after_write = true;
          continue;
        case ParseOutcome::kIncomplete:
          if (c.peer_eof) return close_conn(id);
          if (o.expect_continue && !c.sent_continue) {
            c.sent_continue = true;
            set_out(c, "HTTP/1.1 100 Continue\r\n\r\n");
            continue;
          }
          return;
        case ParseOutcome::kComplete: {
          c.in.erase(0, o.consumed);
          c.sent_continue = false;
          c.busy = true;
          c.has_deadline = false;  // a pipelined next request gets its own clock
          bool keep = o.keep_alive && !c.peer_eof;
          {
            std::lock_guard lk(job_mu);
            jobs.push_back(Job{id, std::move(o.request), keep});
          }
          job_cv.notify_one();
          return;
        }
      }
    }
  }

  void accept_some(Clock::time_point now) {
    while (conns.size() < opts.max_connections) {
      int fd = ::accept4(listen_fd, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
      if (fd < 0) {
        // Out of fds: the listener stays readable, so back off instead of spinning.
        if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM)
          accept_pause_until = now + std::chrono::milliseconds(100);
        return;  // EAGAIN or a transient error: retry on a later poll
      }
      Conn c;
      c.fd = fd;
      c.idle_since = now;
      refresh_deadline(c, now);
      conns.emplace(next_id++, std::move(c));
    }
  }

  void collect_done(Clock::time_point now) {
    std::vector<Done> finished;
    {
      std::lock_guard lk(done_mu);
      finished.swap(done);
    }
    for (auto& d : finished) {
      auto it = conns.find(d.conn_id);
      if (it == conns.end()) continue;
      Conn& c = it->second;
      c.busy = false;
      set_out(c, std::move(d.bytes));
      c.close_after_write = !d.keep_alive;
      c.idle_since = now;
      c.has_deadline = false;  // the response gets request_timeout to be taken (refresh_deadline)
    }
  }

  void loop_main() {
    std::vector<pollfd> pfds;
    std::vector<uint64_t> ids;
    while (!stopping.load()) {
      auto now = Clock::now();
      // Expire connections that have had their time (busy ones are ours to finish).
      for (auto it = conns.begin(); it != conns.end();) {
        if (!it->second.busy && it->second.has_deadline && now >= it->second.deadline) {
          ::close(it->second.fd);
          it = conns.erase(it);
        } else {
          ++it;
        }
      }

      pfds.clear();
      ids.clear();
      pfds.push_back({wake_fd, POLLIN, 0});
      bool poll_listen = conns.size() < opts.max_connections && now >= accept_pause_until;
      pfds.push_back({poll_listen ? listen_fd : -1, POLLIN, 0});
      auto next_deadline = now + std::chrono::seconds(1);
      if (accept_pause_until > now) next_deadline = std::min(next_deadline, accept_pause_until);
      for (auto& [id, c] : conns) {
        if (c.busy) continue;
        short ev = 0;
        if (!c.out.empty()) ev |= POLLOUT;
        if (!c.peer_eof) ev |= POLLIN;
        if (ev == 0) continue;
        pfds.push_back({c.fd, ev, 0});
        ids.push_back(id);
        if (c.has_deadline) next_deadline = std::min(next_deadline, c.deadline);
      }
      auto wait = std::chrono::duration_cast<std::chrono::milliseconds>(next_deadline - now).count();
      int n = ::poll(pfds.data(), pfds.size(), static_cast<int>(std::clamp<long long>(wait + 1, 0, 1000)));
      if (n < 0) {
        if (errno == EINTR) continue;
        break;  // EFAULT/EINVAL/ENOMEM: nothing sensible left to do
      }
      now = Clock::now();
      if (pfds[0].revents & POLLIN) {
        uint64_t v;
        ssize_t r = ::read(wake_fd, &v, sizeof(v));
        (void)r;
      }
      collect_done(now);
      if (poll_listen && (pfds[1].revents & POLLIN)) accept_some(now);

      for (size_t i = 0; i < ids.size(); ++i) {
        short re = pfds[i + 2].revents;
        if (re == 0) continue;
        auto it = conns.find(ids[i]);
        if (it == conns.end()) continue;
        if (re & POLLNVAL) {
          close_conn(ids[i]);
          continue;
        }
        if ((re & (POLLIN | POLLHUP | POLLERR)) && !fill(it->second)) close_conn(ids[i]);
      }
      // Everything not busy may have progressed (new data, responses, writable).
      std::vector<uint64_t> all;
      all.reserve(conns.size());
      for (auto& [id, c] : conns)
        if (!c.busy) all.push_back(id);
      for (uint64_t id : all) advance(id, now);
    }
    for (auto& [id, c] : conns) ::close(c.fd);
    conns.clear();
  }
};

HttpServer::HttpServer(std::string socket_path, Router router, HttpServerOptions opts)
    : path_(std::move(socket_path)), impl_(std::make_unique<Impl>()) {
  impl_->router = std::move(router);
  impl_->opts = opts;
  if (impl_->opts.worker_threads == 0) impl_->opts.worker_threads = 1;
  if (impl_->opts.max_connections == 0) impl_->opts.max_connections = 1;
}

HttpServer::~HttpServer() { stop(); }

Status HttpServer::start() {
  Impl& m = *impl_;
  if (m.started) return make_error(Errc::kInvalidArgument, "API server already started");
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path_.empty() || path_.size() >= sizeof(addr.sun_path))
    return errorf(Errc::kInvalidArgument, "API socket path '{}' is empty or too long", path_);
  std::memcpy(addr.sun_path, path_.c_str(), path_.size() + 1);

  // A leftover socket from a dead daemon is removed; a live one, or a file
  // that is not a socket, is left alone.
  struct stat st{};
  if (::lstat(path_.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode))
      return errorf(Errc::kExists, "API socket path {} exists and is not a socket", path_);
    int probe = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (probe < 0) return sys_error("socket");
    int r = ::connect(probe, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
    ::close(probe);
    if (r == 0) return errorf(Errc::kExists, "another server is listening on {}", path_);
    if (::unlink(path_.c_str()) != 0 && errno != ENOENT)
      return sys_error(fmt::format("removing stale socket {}", path_));
  }

  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) return sys_error("socket");
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    auto e = sys_error(fmt::format("binding {}", path_));
    ::close(fd);
    return e;
  }
  if (::chmod(path_.c_str(), m.opts.socket_mode) != 0 || ::listen(fd, 128) != 0 ||
      ::stat(path_.c_str(), &st) != 0) {
    auto e = sys_error(fmt::format("setting up {}", path_));
    ::close(fd);
    ::unlink(path_.c_str());
    return e;
  }
  int wfd = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (wfd < 0) {
    auto e = sys_error("eventfd");
    ::close(fd);
    ::unlink(path_.c_str());
    return e;
  }
  m.listen_fd = fd;
  m.wake_fd = wfd;
  m.sock_dev = st.st_dev;
  m.sock_ino = st.st_ino;
  m.stopping = false;
  m.workers_stop = false;
  m.started = true;
  for (size_t i = 0; i < m.opts.worker_threads; ++i) m.workers.emplace_back([&m] { m.worker_main(); });
  m.loop_thread = std::thread([&m] { m.loop_main(); });
  return ok();
}

void HttpServer::stop() {
  Impl& m = *impl_;
  if (!m.started) return;
  m.stopping = true;
  m.wake();
  if (m.loop_thread.joinable()) m.loop_thread.join();
  {
    std::lock_guard lk(m.job_mu);
    m.workers_stop = true;
    m.jobs.clear();  // their connections are gone
  }
  m.job_cv.notify_all();
  for (auto& t : m.workers) t.join();
  m.workers.clear();
  m.done.clear();
  ::close(m.listen_fd);
  ::close(m.wake_fd);
  m.listen_fd = m.wake_fd = -1;
  // Only remove the socket file if it is still the one we bound: a successor
  // (e.g. after a takeover) may have replaced it.
  struct stat st{};
  if (::lstat(path_.c_str(), &st) == 0 && st.st_dev == m.sock_dev && st.st_ino == m.sock_ino)
    ::unlink(path_.c_str());
  m.started = false;
}

}  // namespace nydus::api
