// Client for nydusd's HTTP API over its unix socket (libcurl underneath).
// Used by nydusctl and tests; a daemon doing a live upgrade can use it to
// talk to its predecessor. One connection is kept alive across calls.
#pragma once

#include <chrono>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/result.h"

namespace nydus::api {

struct ApiReply {
  long status = 0;
  std::string content_type;
  std::string body;
};

// Percent-encodes everything but unreserved characters (RFC 3986).
std::string url_encode(std::string_view s);

class ApiClient {
 public:
  explicit ApiClient(std::string socket_path,
                     std::chrono::milliseconds timeout = std::chrono::seconds(30));
  ~ApiClient();
  ApiClient(const ApiClient&) = delete;
  ApiClient& operator=(const ApiClient&) = delete;

  // Raw request; any HTTP status is a success here. Errors are transport
  // failures (kIo), e.g. no daemon listening.
  Result<ApiReply> request(std::string_view method, std::string_view path_and_query,
                           std::optional<std::string_view> body = std::nullopt);

  // Typed calls: a non-2xx reply becomes an Error whose category follows the
  // HTTP status (400→kInvalidArgument, 404→kNotFound, 409→kExists,
  // 501→kUnsupported, else kInternal) and whose message carries the server's
  // {"code","message"}.
  Result<nlohmann::json> daemon_info();
  Status mount(const std::string& mountpoint, const std::string& source, const std::string& config,
               const std::string& fs_type = "rafs",
               const std::optional<std::vector<std::string>>& prefetch_files = std::nullopt);
  Status remount(const std::string& mountpoint, const std::string& source, const std::string& config,
                 const std::string& fs_type = "rafs");
  Status umount(const std::string& mountpoint);
  // kind: "" (fs), "files", "pattern", "backend", "blobcache", "inflight"
  // (null when nothing is in flight: 204).
  Result<nlohmann::json> metrics(const std::string& kind, const std::string& id = "",
                                 bool latest = false);
  Status exit_daemon();
  // PUT /api/v1/daemon {"log_level"}: off, error, warn, info, debug, trace.
  Status set_log_level(const std::string& level);

  // fscache mode: /api/v2/blobs.
  Status create_blob(std::string_view entry_json);
  Result<nlohmann::json> list_blobs(const std::string& domain_id, const std::string& blob_id = "");
  // With a domain: remove its objects (one bootstrap or blob when `blob_id`
  // is set); without: remove the cached files of blob `blob_id`.
  Status delete_blobs(const std::string& domain_id, const std::string& blob_id);
  // Live upgrade / failover.
  Status send_fd();
  Status takeover();
  Status start();

 private:
  Result<ApiReply> checked(std::string_view method, std::string_view path_and_query,
                           std::optional<std::string_view> body = std::nullopt);
  Result<nlohmann::json> get_json(std::string_view path_and_query);

  std::string sock_;
  std::chrono::milliseconds timeout_;
  std::mutex mu_;       // a curl handle is not thread-safe
  void* curl_ = nullptr;  // CURL*, kept for connection reuse
};

}  // namespace nydus::api
