// Test helper: a blocking unix-socket client that speaks raw bytes, so tests
// can send malformed or partial requests the real client never would.
#pragma once

#include <chrono>
#include <cstring>
#include <optional>
#include <string>

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

namespace nydus::test {

class RawConn {
 public:
  explicit RawConn(const std::string& path) {
    fd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, path.c_str(), sizeof(addr.sun_path) - 1);
    if (::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
      ::close(fd_);
      fd_ = -1;
    }
  }
  ~RawConn() { close(); }
  RawConn(const RawConn&) = delete;
  RawConn& operator=(const RawConn&) = delete;

  bool ok() const { return fd_ >= 0; }
  void close() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }
  void shutdown_write() { ::shutdown(fd_, SHUT_WR); }

  bool send(const std::string& data) {
    size_t off = 0;
    while (off < data.size()) {
      ssize_t n = ::send(fd_, data.data() + off, data.size() - off, MSG_NOSIGNAL);
      if (n <= 0) return false;
      off += static_cast<size_t>(n);
    }
    return true;
  }

  // Reads until `pred(buffer)` holds, EOF, or the timeout. Returns what was read.
  template <class Pred>
  std::string read_until(Pred pred, std::chrono::milliseconds timeout = std::chrono::seconds(5)) {
    auto end = std::chrono::steady_clock::now() + timeout;
    while (!pred(buf_)) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(end - std::chrono::steady_clock::now());
      if (left.count() <= 0) break;
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) break;
      char tmp[65536];
      ssize_t n = ::recv(fd_, tmp, sizeof(tmp), 0);
      if (n <= 0) {
        eof_ = true;
        break;
      }
      buf_.append(tmp, static_cast<size_t>(n));
    }
    return buf_;
  }

  // One full response (head + Content-Length body), removed from the buffer.
  std::optional<std::string> read_response(std::chrono::milliseconds timeout = std::chrono::seconds(5)) {
    auto complete = [](const std::string& b) { return response_size(b).has_value(); };
    read_until(complete, timeout);
    auto size = response_size(buf_);
    if (!size) return std::nullopt;
    std::string r = buf_.substr(0, *size);
    buf_.erase(0, *size);
    return r;
  }

  // True if the server closed the connection (EOF) within the timeout.
  bool wait_eof(std::chrono::milliseconds timeout = std::chrono::seconds(5)) {
    read_until([this](const std::string&) { return eof_; }, timeout);
    return eof_;
  }

  static std::optional<size_t> response_size(const std::string& b) {
    size_t he = b.find("\r\n\r\n");
    if (he == std::string::npos) return std::nullopt;
    size_t len = 0;
    std::string head = b.substr(0, he);
    for (auto& c : head) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    if (size_t p = head.find("content-length:"); p != std::string::npos)
      len = std::stoul(head.substr(p + 15));
    if (b.size() < he + 4 + len) return std::nullopt;
    return he + 4 + len;
  }

 private:
  int fd_ = -1;
  std::string buf_;
  bool eof_ = false;
};

inline int status_of(const std::string& response) {
  // "HTTP/1.1 200 OK"
  if (response.size() < 12 || !response.starts_with("HTTP/1.")) return -1;
  return std::stoi(response.substr(9, 3));
}

inline std::string body_of(const std::string& response) {
  size_t he = response.find("\r\n\r\n");
  return he == std::string::npos ? "" : response.substr(he + 4);
}

}  // namespace nydus::test
