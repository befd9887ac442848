// The "http-proxy" backend (upstream storage/src/backend/http_proxy.rs):
// blobs served by a plain HTTP server that honours Range, e.g. a local
// cache daemon. `addr` is either a base URL (http:// or https://), then a
// blob is `addr` + `path` + "/" + blob id, or the absolute path of a unix
// socket, then every request is "GET /" (HEAD for the size) on that socket,
// as upstream sends it: the server behind a socket serves one blob.
// Also: skip_verify, ca_cert_files, timeout, connect_timeout, retry_limit
// and proxy, with the meaning they have for the registry backend.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "storage/backend_proxy.h"
#include "storage/remote_backend.h"

namespace nydus::storage {

struct HttpProxyBackendConfig {
  std::string addr;  // http(s)://host[:port] or /path/to/unix.sock
  std::string path;  // URL path before the blob id (URL form only)
  bool skip_verify = false;
  std::vector<std::string> ca_cert_files;
  Millis timeout{5000};  // 0 = no limit
  Millis connect_timeout{5000};
  RetryPolicy retry;
  ProxyConfig proxy;
};

Result<HttpProxyBackendConfig> parse_http_proxy_config(const nlohmann::json& config);

class HttpProxyBackend final : public RemoteBackend {
 public:
  static Result<std::shared_ptr<HttpProxyBackend>> create(HttpProxyBackendConfig cfg);
  const char* type() const override { return "http-proxy"; }
  // The URL a blob is requested at (for a unix socket: "http://localhost/").
  std::string blob_url(const std::string& blob_id) const;

 protected:
  Attempt<> fetch(const std::string& blob_id, uint64_t offset, std::span<uint8_t> out) override;
  Attempt<uint64_t> head_size(const std::string& blob_id) override;

 private:
  HttpProxyBackend(HttpProxyBackendConfig cfg, std::string ca_bundle_pem);
  Result<HttpResponse> send(HttpRequest req);
  bool over_unix_socket() const { return cfg_.addr.starts_with("/"); }

  HttpProxyBackendConfig cfg_;
  HttpClient http_;
  std::unique_ptr<BackendProxy> proxy_;
};

}  // namespace nydus::storage
