// A small HTTP/1.1 server on a unix domain socket, for nydusd's API.
//
// One poll-loop thread owns every connection (accept, non-blocking reads,
// request parsing, writes, timeouts); complete requests are handed to a small
// worker pool so a slow handler (a mount can take seconds) never stalls the
// loop, and a stalled client only ever costs a slot, never a thread.
//
// Why our own and not a library (decided 2026-12, measured): the API needs
// keep-alive connections held for the daemon's lifetime (the snapshotter's
// liveness monitor, one per daemon), a unix socket, request limits and a
// fuzzed parser (fuzz/fuzz_http_request.cpp). Debian 12's cpp-httplib 0.11.4
// binds a unix socket but parks one pool thread on every kept-alive
// connection: with keep-alive made unlimited, 8 idle clients left a 9th
// unanswered for 10 s (ours: 64 idle clients, the next answered at once; see
// KeptAliveClientsDoNotHoldWorkers in tests/api/http_server_test.cpp), and
// with its defaults (5 s, 5 requests) it closes the monitor's connection.
// Boost.Beast (libboost 1.74) would give a parser but not the connection
// loop, limits or worker pool, which are most of this file, for a heavy
// header-only dependency on 2-core builds. The client side is libcurl
// (api_client.cpp).
#pragma once

#include <chrono>
#include <cstddef>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <sys/types.h>

#include "common/result.h"

namespace nydus::api {

struct HttpRequest {
  std::string method;   // "GET", "PUT", ...
  std::string path;     // percent-decoded, without the query
  std::string raw_query;
  std::map<std::string, std::string> query;    // decoded; first value of a repeated key wins
  std::map<std::string, std::string> headers;  // names lower-cased
  std::string body;

  // The query value for `key`, if given (an empty value counts as given).
  std::optional<std::string> query_param(const std::string& key) const;
};

struct HttpResponse {
  int status = 200;
  std::string content_type = "application/json";
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers;  // extra headers

  static HttpResponse json(int status, std::string body);
  static HttpResponse no_content() { return HttpResponse{204, "", "", {}}; }
  // {"code": code, "message": message}, the error shape upstream's clients parse.
  static HttpResponse error(int status, std::string_view code, std::string_view message);
};

const char* http_reason(int status);

using HttpHandler = std::function<HttpResponse(const HttpRequest&)>;

// Exact method + path matching. A known path with an unregistered method is
// 400 (as upstream nydusd, with an Allow header), an unknown path 404.
class Router {
 public:
  void add(std::string method, std::string path, HttpHandler handler);
  HttpResponse dispatch(const HttpRequest& req) const;

 private:
  std::map<std::string, std::map<std::string, HttpHandler>> routes_;  // path -> method -> handler
};

struct HttpServerOptions {
  size_t max_header_bytes = 16 * 1024;  // request line + headers
  size_t max_body_bytes = 1024 * 1024;
  // Once a request's first byte arrives, the whole request must arrive (and
  // its response be taken by the client) within this long; trickling bytes
  // do not extend it (slowloris). An idle connection, between requests, is
  // not under this clock.
  std::chrono::milliseconds request_timeout{10'000};
  // Idle keep-alive connections are closed after this; 0 (the default) never
  // closes them: nydus-snapshotter's liveness monitor holds one idle
  // connection per daemon and takes a hang-up as the daemon's death.
  std::chrono::milliseconds idle_timeout{0};
  // What bounds idle clients instead: beyond this many connections, new
  // clients wait in the listen backlog until one closes.
  size_t max_connections = 256;
  size_t worker_threads = 4;
  mode_t socket_mode = 0600;
};

// Parsing, exposed for tests. Returns nullopt-equivalent kIncomplete while
// more bytes are needed.
struct ParseOutcome {
  enum Kind { kIncomplete, kComplete, kError } kind = kIncomplete;
  HttpRequest request;         // kComplete
  size_t consumed = 0;         // kComplete: bytes of `buf` this request used
  bool keep_alive = true;      // kComplete
  bool expect_continue = false;  // kIncomplete: headers done, client awaits 100
  int error_status = 400;      // kError
  std::string error_code;      // kError
  std::string error_message;   // kError
};
ParseOutcome parse_http_request(std::string_view buf, const HttpServerOptions& opts);

// Percent-decoding; '+' becomes a space only when `plus_is_space` (query).
Result<std::string> percent_decode(std::string_view s, bool plus_is_space);
Result<std::map<std::string, std::string>> parse_query(std::string_view q);

std::string serialize_response(const HttpResponse& resp, bool keep_alive);

class HttpServer {
 public:
  HttpServer(std::string socket_path, Router router, HttpServerOptions opts = {});
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // Binds (replacing a stale socket file, refusing a live one) and starts the
  // threads. Fails if already started.
  Status start();
  // Closes every connection, joins the threads (waiting only for handlers
  // already running), removes the socket file if it is still ours. Idempotent.
  void stop();

  const std::string& socket_path() const { return path_; }

 private:
  struct Impl;
  std::string path_;
  std::unique_ptr<Impl> impl_;
};

}  // namespace nydus::api
