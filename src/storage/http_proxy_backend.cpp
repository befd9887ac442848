#include "storage/http_proxy_backend.h"

#include <sys/stat.h>

#include <nlohmann/json.hpp>

#include "storage/remote_config.h"

namespace nydus::storage {

Result<HttpProxyBackendConfig> parse_http_proxy_config(const nlohmann::json& j) {
  using namespace remote_config;
  HttpProxyBackendConfig c;
  NYDUS_ASSIGN_OR_RETURN(c.addr, get_string(j, "addr"));
  NYDUS_ASSIGN_OR_RETURN(c.path, get_string(j, "path"));
  NYDUS_ASSIGN_OR_RETURN(c.skip_verify, get_bool(j, "skip_verify", false));
  NYDUS_ASSIGN_OR_RETURN(c.ca_cert_files, get_string_list(j, "ca_cert_files"));
  NYDUS_ASSIGN_OR_RETURN(c.timeout, get_seconds(j, "timeout", Millis(5000), true));
  NYDUS_ASSIGN_OR_RETURN(c.connect_timeout, get_seconds(j, "connect_timeout", Millis(5000), true));
  NYDUS_ASSIGN_OR_RETURN(c.retry, get_retry(j));
  NYDUS_ASSIGN_OR_RETURN(c.proxy, parse_proxy_config(j));
  // Upstream's validate(): an http(s) URL or an existing absolute socket path.
  if (c.addr.starts_with("http://") || c.addr.starts_with("https://")) {
    while (c.addr.ends_with('/')) c.addr.pop_back();
    for (char ch : c.addr)
      if (ch == ' ' || ch == '?' || ch == '#' || uint8_t(ch) < 0x20)
        return errorf(Errc::kInvalidArgument, "http-proxy \"addr\" '{}' is not a base URL", c.addr);
  } else if (c.addr.starts_with("/")) {
    struct stat st;
    if (::stat(c.addr.c_str(), &st) != 0)
      return errorf(Errc::kInvalidArgument, "http-proxy \"addr\" {}: no such unix socket", c.addr);
  } else {
    return errorf(Errc::kInvalidArgument,
                  "http-proxy backend needs \"addr\": an http(s):// URL or the absolute path of a unix socket");
  }
  for (char ch : c.path)
    if (ch == ' ' || ch == '?' || ch == '#' || uint8_t(ch) < 0x20)
      return errorf(Errc::kInvalidArgument, "http-proxy \"path\" '{}' is not a URL path", c.path);
  return c;
}

Result<std::shared_ptr<HttpProxyBackend>> HttpProxyBackend::create(HttpProxyBackendConfig cfg) {
  if (cfg.addr.empty()) return errorf(Errc::kInvalidArgument, "http-proxy backend needs \"addr\"");
  NYDUS_ASSIGN_OR_RETURN(std::string ca_bundle, load_ca_bundle(cfg.ca_cert_files));
  return std::shared_ptr<HttpProxyBackend>(new HttpProxyBackend(std::move(cfg), std::move(ca_bundle)));
}

HttpProxyBackend::HttpProxyBackend(HttpProxyBackendConfig cfg, std::string ca_bundle_pem)
    : RemoteBackend(cfg.retry),
      cfg_(std::move(cfg)),
      http_(http_options_for(cfg_, std::move(ca_bundle_pem))) {
  // A proxy only makes sense for the URL form (upstream: "for remote usage").
  if (!cfg_.proxy.url.empty() && !over_unix_socket()) proxy_ = std::make_unique<BackendProxy>(cfg_.proxy, http_);
}

std::string HttpProxyBackend::blob_url(const std::string& blob_id) const {
  if (over_unix_socket()) return "http://localhost/";
  // Upstream joins `path` and the id as file paths; an empty or relative
  // path still gets the "/" a URL needs.
  std::string p = cfg_.path;
  if (!p.starts_with("/")) p = "/" + p;
  if (!p.ends_with("/")) p += "/";
  return cfg_.addr + p + blob_id;
}

Result<HttpResponse> HttpProxyBackend::send(HttpRequest req) {
  if (over_unix_socket()) req.unix_socket = cfg_.addr;
  if (proxy_) return proxy_->perform(req, [this] { note_request(); });
  note_request();
  return http_.perform(req);
}

Attempt<> HttpProxyBackend::fetch(const std::string& blob_id, uint64_t offset, std::span<uint8_t> out) {
  HttpRequest req;
  req.url = blob_url(blob_id);
  req.body_out = out;
  req.headers.emplace_back("Range", fmt::format("bytes={}-{}", offset, offset + out.size() - 1));
  req.accept = [offset, len = out.size()](const HttpResponse& r) { return check_range_response(r, offset, len); };
  auto r = send(std::move(req));
  return finish_ranged_get(r, out.size(), fmt::format("GET http-proxy blob {} from {}", blob_id, cfg_.addr));
}

Attempt<uint64_t> HttpProxyBackend::head_size(const std::string& blob_id) {
  const std::string what = fmt::format("HEAD http-proxy blob {} from {}", blob_id, cfg_.addr);
  HttpRequest req;
  req.method = "HEAD";
  req.url = blob_url(blob_id);
  auto r = send(std::move(req));
  if (!r) return retryable(std::move(r).error().context(what));
  if (r->status / 100 != 2) return std::unexpected(status_error(*r, what));
  if (auto cl = r->content_length()) return *cl;
  return retryable(Error{Errc::kIo, 0, what + ": no Content-Length"});
}

}  // namespace nydus::storage
