#include "api/api_client.h"

#include <curl/curl.h>

namespace nydus::api {

namespace {

std::once_flag g_curl_once;

size_t on_body(char* data, size_t size, size_t nmemb, void* user) {
  static_cast<std::string*>(user)->append(data, size * nmemb);
  return size * nmemb;
}

Errc errc_for_status(long status) {
  switch (status) {
    case 400: return Errc::kInvalidArgument;
    case 404: return Errc::kNotFound;
    case 409: return Errc::kExists;
    case 501: return Errc::kUnsupported;
    default: return Errc::kInternal;
  }
}

std::string mount_body(const std::string& source, const std::string& config,
                       const std::string& fs_type,
                       const std::optional<std::vector<std::string>>& prefetch) {
  nlohmann::json j = {{"source", source}, {"fs_type", fs_type}, {"config", config}};
  if (prefetch) j["prefetch_files"] = *prefetch;
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

}  // namespace

std::string url_encode(std::string_view s) {
  static const char* hex = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : s) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
      out += static_cast<char>(c);
    } else {
      out += '%';
      out += hex[c >> 4];
      out += hex[c & 15];
    }
  }
  return out;
}

ApiClient::ApiClient(std::string socket_path, std::chrono::milliseconds timeout)
    : sock_(std::move(socket_path)), timeout_(timeout) {
  // curl_global_init is not thread-safe; do it once per process.
  std::call_once(g_curl_once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
  curl_ = curl_easy_init();
}

ApiClient::~ApiClient() {
  if (curl_) curl_easy_cleanup(static_cast<CURL*>(curl_));
}

Result<ApiReply> ApiClient::request(std::string_view method, std::string_view path_and_query,
                                    std::optional<std::string_view> body) {
  std::lock_guard lk(mu_);
  CURL* h = static_cast<CURL*>(curl_);
  if (!h) return make_error(Errc::kInternal, "curl_easy_init failed");
  // reset clears options but keeps the connection cache: keep-alive survives.
  curl_easy_reset(h);
  std::string url = "http://localhost" + std::string(path_and_query);
  std::string m(method);
  std::string payload(body.value_or(""));
  ApiReply reply;
  char errbuf[CURL_ERROR_SIZE] = {0};

  curl_easy_setopt(h, CURLOPT_UNIX_SOCKET_PATH, sock_.c_str());
  curl_easy_setopt(h, CURLOPT_URL, url.c_str());
  curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, static_cast<long>(timeout_.count()));
  curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf);
  curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
  curl_easy_setopt(h, CURLOPT_WRITEDATA, &reply.body);
  curl_slist* headers = nullptr;
  if (m == "GET") {
    curl_easy_setopt(h, CURLOPT_HTTPGET, 1L);
  } else {
    curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, m.c_str());
    if (body || m == "PUT" || m == "POST") {
      // Bodyless PUTs still say Content-Length: 0, like Go's client.
      curl_easy_setopt(h, CURLOPT_POSTFIELDS, payload.data());
      curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(payload.size()));
      if (body) headers = curl_slist_append(headers, "Content-Type: application/json");
    } else {
      curl_easy_setopt(h, CURLOPT_HTTPGET, 1L);
      curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, m.c_str());
    }
  }
  if (headers) curl_easy_setopt(h, CURLOPT_HTTPHEADER, headers);

  CURLcode rc = curl_easy_perform(h);
  if (headers) curl_slist_free_all(headers);
  if (rc != CURLE_OK) {
    return errorf(Errc::kIo, "{} {} via {}: {}", m, path_and_query, sock_,
                  errbuf[0] ? errbuf : curl_easy_strerror(rc));
  }
  curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &reply.status);
  char* ct = nullptr;
  if (curl_easy_getinfo(h, CURLINFO_CONTENT_TYPE, &ct) == CURLE_OK && ct) reply.content_type = ct;
  return reply;
}

Result<ApiReply> ApiClient::checked(std::string_view method, std::string_view path_and_query,
                                    std::optional<std::string_view> body) {
  NYDUS_ASSIGN_OR_RETURN(ApiReply r, request(method, path_and_query, body));
  if (r.status >= 200 && r.status < 300) return r;
  std::string code = "Unknown", message = r.body;
  auto j = nlohmann::json::parse(r.body, nullptr, false);
  if (j.is_object()) {
    if (auto c = j.find("code"); c != j.end() && c->is_string()) code = c->get<std::string>();
    if (auto m = j.find("message"); m != j.end() && m->is_string()) message = m->get<std::string>();
  }
  return errorf(errc_for_status(r.status), "{} {}: HTTP {}: {}: {}", method, path_and_query,
                r.status, code, message);
}

Result<nlohmann::json> ApiClient::get_json(std::string_view path_and_query) {
  NYDUS_ASSIGN_OR_RETURN(ApiReply r, checked("GET", path_and_query));
  if (r.status == 204) return nlohmann::json(nullptr);  // e.g. no request in flight
  auto j = nlohmann::json::parse(r.body, nullptr, false);
  if (j.is_discarded()) return errorf(Errc::kCorrupt, "GET {}: reply is not JSON", path_and_query);
  return j;
}

Result<nlohmann::json> ApiClient::daemon_info() { return get_json("/api/v1/daemon"); }

Status ApiClient::mount(const std::string& mountpoint, const std::string& source,
                        const std::string& config, const std::string& fs_type,
                        const std::optional<std::vector<std::string>>& prefetch_files) {
  NYDUS_TRY(checked("POST", "/api/v1/mount?mountpoint=" + url_encode(mountpoint),
                    mount_body(source, config, fs_type, prefetch_files)));
  return ok();
}

Status ApiClient::remount(const std::string& mountpoint, const std::string& source,
                          const std::string& config, const std::string& fs_type) {
  NYDUS_TRY(checked("PUT", "/api/v1/mount?mountpoint=" + url_encode(mountpoint),
                    mount_body(source, config, fs_type, std::nullopt)));
  return ok();
}

Status ApiClient::umount(const std::string& mountpoint) {
  NYDUS_TRY(checked("DELETE", "/api/v1/mount?mountpoint=" + url_encode(mountpoint)));
  return ok();
}

Result<nlohmann::json> ApiClient::metrics(const std::string& kind, const std::string& id,
                                          bool latest) {
  std::string path = "/api/v1/metrics" + (kind.empty() ? "" : "/" + kind);
  std::string q;
  if (!id.empty()) q += "id=" + url_encode(id);
  if (latest) q += std::string(q.empty() ? "" : "&") + "latest=true";
  if (!q.empty()) path += "?" + q;
  return get_json(path);
}

Status ApiClient::set_log_level(const std::string& level) {
  NYDUS_TRY(checked("PUT", "/api/v1/daemon", nlohmann::json{{"log_level", level}}.dump()));
  return ok();
}

Status ApiClient::exit_daemon() {
  NYDUS_TRY(checked("PUT", "/api/v1/daemon/exit"));
  return ok();
}

Status ApiClient::create_blob(std::string_view entry_json) {
  NYDUS_TRY(checked("PUT", "/api/v2/blobs", entry_json));
  return ok();
}

Result<nlohmann::json> ApiClient::list_blobs(const std::string& domain_id, const std::string& blob_id) {
  std::string q = "/api/v2/blobs?domain_id=" + url_encode(domain_id);
  if (!blob_id.empty()) q += "&blob_id=" + url_encode(blob_id);
  return get_json(q);
}

Status ApiClient::delete_blobs(const std::string& domain_id, const std::string& blob_id) {
  std::string q;
  if (!domain_id.empty()) q = "domain_id=" + url_encode(domain_id);
  if (!blob_id.empty()) q += std::string(q.empty() ? "" : "&") + "blob_id=" + url_encode(blob_id);
  NYDUS_TRY(checked("DELETE", "/api/v2/blobs?" + q));
  return ok();
}

Status ApiClient::send_fd() {
  NYDUS_TRY(checked("PUT", "/api/v1/daemon/fuse/sendfd"));
  return ok();
}

Status ApiClient::takeover() {
  NYDUS_TRY(checked("PUT", "/api/v1/daemon/fuse/takeover"));
  return ok();
}

Status ApiClient::start() {
  NYDUS_TRY(checked("PUT", "/api/v1/daemon/start"));
  return ok();
}

}  // namespace nydus::api
