// A tiny HTTP/1.1 server on 127.0.0.1 for fault injection in the remote
// backend tests: one thread per connection, one request per connection
// (`Connection: close`), a handler deciding each response — including
// misbehaviour (hang without answering, drop the connection, lie about
// lengths). Also: spawning real peer processes (docker-registry, s3rver).
#pragma once

#include <cstdlib>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "storage/http_client.h"

extern char** environ;

namespace nydus::storage::test {

struct FakeRequest {
  std::string method;
  std::string target;  // path + query
  std::map<std::string, std::string> headers;  // lower-case names
  std::string body;
  std::string header(const std::string& n) const {
    auto it = headers.find(n);
    return it == headers.end() ? "" : it->second;
  }
  bool has(const std::string& n) const { return headers.count(n) != 0; }
};

struct FakeResponse {
  enum Action { kRespond, kHang, kDrop };
  Action action = kRespond;
  int status = 200;
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
  bool send_body = true;  // false for HEAD (Content-Length still of `body`)
};

using FakeHandler = std::function<FakeResponse(const FakeRequest&)>;

// A TCP socket listening on 127.0.0.1:`port` (0 = any; the port taken is
// stored in *bound); -1 (and a test failure) when it cannot listen.
inline int listen_loopback(uint16_t port, uint16_t* bound) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int one = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(port);
  socklen_t len = sizeof a;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&a), len) != 0 || ::listen(fd, 64) != 0) {
    ADD_FAILURE() << "bind/listen 127.0.0.1:" << port << ": " << std::strerror(errno);
    ::close(fd);
    return -1;
  }
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  *bound = ntohs(a.sin_port);
  return fd;
}

class FakeHttpServer {
 public:
  // On a unix socket at `path` instead of TCP (the http-proxy backend's local form).
  static std::unique_ptr<FakeHttpServer> on_unix_socket(const std::string& path, FakeHandler h) {
    std::unique_ptr<FakeHttpServer> s(new FakeHttpServer(std::move(h), UnixTag{}));
    s->fd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    std::snprintf(a.sun_path, sizeof a.sun_path, "%s", path.c_str());
    ::unlink(path.c_str());
    if (::bind(s->fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || ::listen(s->fd_, 64) != 0) {
      ADD_FAILURE() << "fake unix server bind/listen: " << std::strerror(errno);
      return s;
    }
    s->accept_thread_ = std::thread([p = s.get()] { p->accept_loop(); });
    return s;
  }

  explicit FakeHttpServer(FakeHandler h, uint16_t port = 0) : handler_(std::move(h)) {
    fd_ = listen_loopback(port, &port_);
    if (fd_ < 0) return;
    accept_thread_ = std::thread([this] { accept_loop(); });
  }
  ~FakeHttpServer() { stop(); }
  FakeHttpServer(const FakeHttpServer&) = delete;
  FakeHttpServer& operator=(const FakeHttpServer&) = delete;

  void stop() {
    if (stopping_.exchange(true)) return;
    if (accept_thread_.joinable()) accept_thread_.join();
    std::vector<std::thread> ts;
    {
      std::lock_guard lk(mu_);
      ts.swap(conns_);
    }
    for (auto& t : ts) t.join();
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

  uint16_t port() const { return port_; }
  std::string base() const { return "http://127.0.0.1:" + std::to_string(port_); }
  std::string host() const { return "127.0.0.1:" + std::to_string(port_); }
  int hits() const { return hits_.load(); }
  int accepts() const { return accepts_.load(); }  // connections accepted
  int tls_hellos() const { return tls_hellos_.load(); }  // TLS handshakes refused
  std::vector<FakeRequest> requests() const {
    std::lock_guard lk(mu_);
    return reqs_;
  }
  void set_handler(FakeHandler h) {
    std::lock_guard lk(mu_);
    handler_ = std::move(h);
  }

 private:
  struct UnixTag {};
  FakeHttpServer(FakeHandler h, UnixTag) : handler_(std::move(h)) {}

  void accept_loop() {
    while (!stopping_.load()) {
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, 20) <= 0) continue;
      int c = ::accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (c < 0) continue;
      accepts_.fetch_add(1);
      std::lock_guard lk(mu_);
      conns_.emplace_back([this, c] { serve(c); });
    }
  }

  // Wait for readability up to ~5 s (or until stopped).
  bool wait_readable(int c) {
    for (int i = 0; i < 250 && !stopping_.load(); i++) {
      pollfd p{c, POLLIN, 0};
      if (::poll(&p, 1, 20) > 0) return true;
    }
    return false;
  }

  void serve(int c) {
    std::string buf;
    char tmp[65536];
    size_t hdr_end;
    while ((hdr_end = buf.find("\r\n\r\n")) == std::string::npos) {
      if (!wait_readable(c)) return (void)::close(c);
      ssize_t n = ::recv(c, tmp, sizeof tmp, 0);
      if (n <= 0) return (void)::close(c);
      buf.append(tmp, size_t(n));
      if (buf[0] == '\x16') {
        // A TLS ClientHello: answer as a plain-HTTP server does (Go's, nginx),
        // which a TLS client reports as "wrong version number".
        tls_hellos_.fetch_add(1);
        static const char kBad[] = "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
        (void)!::send(c, kBad, sizeof kBad - 1, MSG_NOSIGNAL);
        return (void)::close(c);
      }
    }
    FakeRequest req;
    std::string head = buf.substr(0, hdr_end);
    size_t line_end = head.find("\r\n");
    std::string first = head.substr(0, line_end);
    auto sp1 = first.find(' '), sp2 = first.rfind(' ');
    req.method = first.substr(0, sp1);
    req.target = first.substr(sp1 + 1, sp2 - sp1 - 1);
    size_t pos = line_end == std::string::npos ? head.size() : line_end + 2;
    while (pos < head.size()) {
      size_t e = head.find("\r\n", pos);
      if (e == std::string::npos) e = head.size();
      std::string line = head.substr(pos, e - pos);
      pos = e + 2;
      auto colon = line.find(':');
      if (colon == std::string::npos) continue;
      std::string name = line.substr(0, colon);
      for (auto& ch : name) ch = char(std::tolower(static_cast<unsigned char>(ch)));
      std::string value = line.substr(colon + 1);
      while (!value.empty() && value.front() == ' ') value.erase(0, 1);
      req.headers[name] = value;
    }
    size_t want = req.has("content-length") ? std::stoul(req.header("content-length")) : 0;
    req.body = buf.substr(hdr_end + 4);
    while (req.body.size() < want) {
      if (!wait_readable(c)) return (void)::close(c);
      ssize_t n = ::recv(c, tmp, sizeof tmp, 0);
      if (n <= 0) return (void)::close(c);
      req.body.append(tmp, size_t(n));
    }
    FakeHandler h;
    {
      std::lock_guard lk(mu_);
      reqs_.push_back(req);
      h = handler_;
    }
    hits_.fetch_add(1);
    FakeResponse r = h(req);
    if (r.action == FakeResponse::kHang) {
      while (!stopping_.load()) std::this_thread::sleep_for(std::chrono::milliseconds(10));
      return (void)::close(c);
    }
    if (r.action == FakeResponse::kDrop) return (void)::close(c);
    std::string out = "HTTP/1.1 " + std::to_string(r.status) + " X\r\n";
    bool has_cl = false;
    for (auto& [k, v] : r.headers) {
      out += k + ": " + v + "\r\n";
      if (strcasecmp(k.c_str(), "content-length") == 0) has_cl = true;
    }
    if (!has_cl) out += "Content-Length: " + std::to_string(r.body.size()) + "\r\n";
    out += "Connection: close\r\n\r\n";
    if (req.method != "HEAD" && r.send_body) out += r.body;
    size_t off = 0;
    while (off < out.size()) {
      ssize_t n = ::send(c, out.data() + off, out.size() - off, MSG_NOSIGNAL);
      if (n <= 0) break;
      off += size_t(n);
    }
    ::shutdown(c, SHUT_WR);
    // Drain until the client closes so it sees the whole response.
    for (int i = 0; i < 50; i++) {
      pollfd p{c, POLLIN, 0};
      if (::poll(&p, 1, 20) > 0 && ::recv(c, tmp, sizeof tmp, 0) <= 0) break;
    }
    ::close(c);
  }

  FakeHandler handler_;
  int fd_ = -1;
  uint16_t port_ = 0;
  std::atomic<bool> stopping_{false};
  std::atomic<int> hits_{0};
  std::atomic<int> accepts_{0};
  std::atomic<int> tls_hellos_{0};
  mutable std::mutex mu_;
  std::vector<std::thread> conns_;
  std::vector<FakeRequest> reqs_;
  std::thread accept_thread_;
};

// Serve `data` honouring a "Range: bytes=a-b" header (206) or whole (200).
inline FakeResponse serve_bytes(const FakeRequest& req, const std::string& data) {
  FakeResponse r;
  auto range = req.header("range");
  unsigned long long a = 0, b = 0;
  if (!range.empty() && std::sscanf(range.c_str(), "bytes=%llu-%llu", &a, &b) == 2) {
    if (a >= data.size() || b < a) return FakeResponse{FakeResponse::kRespond, 416, {}, "", true};
    b = std::min<unsigned long long>(b, data.size() - 1);
    r.status = 206;
    r.headers.emplace_back("Content-Range",
                           "bytes " + std::to_string(a) + "-" + std::to_string(b) + "/" + std::to_string(data.size()));
    r.body = data.substr(a, b - a + 1);
    return r;
  }
  r.body = data;
  return r;
}

inline uint16_t free_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
  socklen_t len = sizeof a;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  ::close(fd);
  return ntohs(a.sin_port);
}

// A child process (a real peer server), killed and reaped on destruction.
class PeerProcess {
 public:
  explicit PeerProcess(std::vector<std::string> argv, const std::string& log_path = "/dev/null") {
    std::vector<char*> args;
    for (auto& a : argv) args.push_back(a.data());
    args.push_back(nullptr);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    posix_spawn_file_actions_adddup2(&fa, 1, 2);
    if (posix_spawnp(&pid_, args[0], &fa, nullptr, args.data(), environ) != 0) pid_ = -1;
    posix_spawn_file_actions_destroy(&fa);
  }
  ~PeerProcess() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGTERM);
    for (int i = 0; i < 200; i++) {
      if (::waitpid(pid_, nullptr, WNOHANG) == pid_) return;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
  }
  bool started() const { return pid_ > 0; }
  bool alive() const { return pid_ > 0 && ::waitpid(pid_, nullptr, WNOHANG) == 0; }
  pid_t pid() const { return pid_; }
  // SIGKILL and reap: a crash, as far as the process's peers can tell.
  void kill_now() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
    pid_ = -1;
  }

 private:
  pid_t pid_ = -1;
};

// Poll `url` until any HTTP answer (or the deadline).
inline bool wait_http(const std::string& url, std::chrono::milliseconds deadline = std::chrono::seconds(15)) {
  HttpClient http(HttpOptions{std::chrono::milliseconds(500), std::chrono::milliseconds(500)});
  auto end = std::chrono::steady_clock::now() + deadline;
  while (std::chrono::steady_clock::now() < end) {
    HttpRequest req;
    req.url = url;
    if (auto r = http.perform(req); r && r->status > 0) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return false;
}

// Running under CI (CI=true): a missing tool that setup installs is a failure.
inline bool in_ci() {
  const char* ci = std::getenv("CI");
  return ci && std::string(ci) == "true";
}

inline bool have_program(const std::string& name) {
  return ::system(("command -v " + name + " >/dev/null 2>&1").c_str()) == 0;
}

}  // namespace nydus::storage::test
