// A small libcurl HTTP client shared by the remote backends (registry, s3).
//
// - Connection reuse: a bounded pool of CURL easy handles (curl keeps each
//   handle's live connections across curl_easy_reset) plus a CURLSH sharing
//   the DNS cache and TLS sessions between them.
// - HTTP/2 over TLS when the server offers it (CURL_HTTP_VERSION_2TLS),
//   HTTP/1.1 otherwise; TLS verification on unless `skip_verify`.
// - Every request has a deadline (total timeout + connect timeout).
// - Redirects are never followed automatically: callers see 3xx + Location.
// - Bodies are bounded: a ranged GET writes straight into the caller's span
//   and a body longer than the span aborts the transfer (kCorrupt); other
//   bodies are collected up to `max_body` bytes.
// - Response headers are captured (names lower-cased, last value wins).
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "common/base64.h"
#include "common/result.h"

namespace nydus::storage {

struct HttpOptions {
  std::chrono::milliseconds timeout{std::chrono::seconds(30)};
  std::chrono::milliseconds connect_timeout{std::chrono::seconds(5)};
  bool skip_verify = false;
  // PEM certificates to trust instead of curl's default store ("" = the
  // default); see load_ca_bundle() for "the system store plus these files".
  std::string ca_bundle_pem{};
  // A client certificate and its key (PEM), for servers that want TLS client
  // authentication (a kubeconfig's client-certificate-data); "" = none.
  std::string client_cert_pem{};
  std::string client_key_pem{};
  bool http2 = true;           // offer HTTP/2 over TLS
  size_t max_idle_handles = 16;  // easy handles kept for reuse
};

struct HttpResponse {
  long status = 0;
  std::map<std::string, std::string> headers;  // lower-case names
  std::string body;           // when the request had no body_out (bounded)
  uint64_t body_bytes = 0;    // bytes of body received (into body_out or body)
  bool wrote_body_out = false;  // the body went into the request's body_out

  // Header value or "" when absent (`name` lower-case).
  const std::string& header(const std::string& name) const;
  std::optional<uint64_t> content_length() const;
};

struct HttpRequest {
  std::string method = "GET";  // GET, HEAD, PUT, POST
  std::string url;
  std::vector<std::pair<std::string, std::string>> headers;
  // Request body (PUT/POST); not owned, must outlive perform().
  std::span<const uint8_t> body;
  // GET target: a 2xx body is written here and must not exceed its size.
  // Before the first byte lands, `accept` (if set) sees the status and
  // headers; an error from it aborts the transfer and is returned.
  std::optional<std::span<uint8_t>> body_out;
  std::function<Status(const HttpResponse&)> accept;
  // A 2xx body streamed here as it arrives (a watch that never ends); an
  // error from it aborts the transfer and is returned. Not with body_out.
  std::function<Status(std::string_view)> on_body;
  // Polled about once a second and at every progress: true aborts the
  // transfer (kIo "cancelled"), so a long-lived request can be stopped.
  std::function<bool()> cancelled;
  size_t max_body = 1 << 20;  // bound for bodies collected into `body`
  std::string proxy;          // e.g. "http://127.0.0.1:3128"; "" = none (env ignored)
  std::string unix_socket;    // connect to this unix socket instead of the URL's host
  std::optional<std::chrono::milliseconds> timeout;  // overrides HttpOptions
};

struct PreconnectSlot;  // HttpClient::preconnect's socket (http_client.cpp)

// While one lives on a thread, that thread's requests leave a preconnected
// socket to others: a read-ahead started beside a read must not take the
// warm connection the read waits on.
class BackgroundRequestScope {
 public:
  BackgroundRequestScope();
  ~BackgroundRequestScope();
  BackgroundRequestScope(const BackgroundRequestScope&) = delete;
  BackgroundRequestScope& operator=(const BackgroundRequestScope&) = delete;

 private:
  bool was_;
};

// Which failures a caller may retry: transport errors (connect, timeout,
// reset) and a bad body length are kIo/kCorrupt from perform(); HTTP status
// codes are returned in the response for the caller to judge.
class HttpClient {
 public:
  explicit HttpClient(HttpOptions opts = {});
  ~HttpClient();
  HttpClient(const HttpClient&) = delete;
  HttpClient& operator=(const HttpClient&) = delete;

  // Perform one request. Transport failures are kIo; a body larger than
  // body_out is kCorrupt; an `accept` error is returned as is.
  Result<HttpResponse> perform(const HttpRequest& req);

  // Start a TCP connect to `url`'s host:port in the background and return at
  // once. The next request that opens a new connection to that address takes
  // this socket instead (waiting, within the connect timeout, for the connect
  // to finish), so a backend whose start fetched nothing (an eStargz TOC is in
  // the bootstrap) does not add the handshake to its first read. No HTTP is
  // sent: nothing at start waits on the server. One socket at a time; an
  // untaken one is closed after kPreconnectTtl, and a failed or closed one is
  // never used (the request opens its own). At most kMaxPreconnects exist in
  // the process at a time (a daemon binding hundreds of blobs at once opens
  // no more); past that, preconnect does nothing.
  void preconnect(const std::string& url);
  static constexpr std::chrono::seconds kPreconnectTtl{30};
  static constexpr int kMaxPreconnects = 8;

  const HttpOptions& options() const { return opts_; }

 private:
  struct Share;
  void* acquire();
  void release(void* h);

  HttpOptions opts_;
  std::unique_ptr<Share> share_;
  std::shared_ptr<PreconnectSlot> pre_;  // shared with the connecting thread
  std::mutex mu_;
  std::vector<void*> idle_;
};

// The system CA store plus the PEM files `ca_cert_files` (upstream's
// "ca_cert_files": trusted in addition to the system store), for
// HttpOptions::ca_bundle_pem; "" when the list is empty. A missing or
// non-PEM file is an error (upstream fails the backend's creation too).
Result<std::string> load_ca_bundle(const std::vector<std::string>& ca_cert_files);

// The HTTP client options every remote backend's config spells the same way
// (timeout, connect_timeout, skip_verify), with the CA bundle already loaded.
template <typename BackendConfig>
HttpOptions http_options_for(const BackendConfig& cfg, std::string ca_bundle_pem) {
  return HttpOptions{.timeout = cfg.timeout,
                     .connect_timeout = cfg.connect_timeout,
                     .skip_verify = cfg.skip_verify,
                     .ca_bundle_pem = std::move(ca_bundle_pem)};
}

// Whether a transport error from perform() of `url` is one upstream's
// registry backend answers with an https->http fallback (skip_verify):
// its text names SSL/TLS, "wrong version number" or "connection refused".
bool is_tls_or_refused_error(const Error& e, const std::string& url);

// Helpers for URLs and headers.
std::string url_encode(std::string_view s, bool keep_slash = false);
// Resolve a Location header against the request URL (absolute or relative).
Result<std::string> resolve_url(const std::string& base, const std::string& location);
// scheme://host[:port] of a URL ("" when unparsable).
std::string url_origin(const std::string& url);
using nydus::base64_encode;  // common/base64.h

}  // namespace nydus::storage
