#include "storage/s3_backend.h"

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/sha.h>

#include <algorithm>
#include <cctype>
#include <ctime>

#include <nlohmann/json.hpp>

#include "storage/remote_config.h"

namespace nydus::storage {

namespace {

std::string hex(std::span<const uint8_t> d) {
  static const char* h = "0123456789abcdef";
  std::string s;
  s.reserve(d.size() * 2);
  for (uint8_t b : d) {
    s.push_back(h[b >> 4]);
    s.push_back(h[b & 15]);
  }
  return s;
}

std::vector<uint8_t> hmac(const EVP_MD* md, std::span<const uint8_t> key, std::string_view data) {
  std::vector<uint8_t> out(EVP_MAX_MD_SIZE);
  unsigned len = 0;
  HMAC(md, key.data(), int(key.size()), reinterpret_cast<const uint8_t*>(data.data()), data.size(), out.data(), &len);
  out.resize(len);
  return out;
}

std::span<const uint8_t> bytes(std::string_view s) {
  return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

std::string lower(std::string_view s) {
  std::string out(s);
  for (auto& c : out) c = char(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

std::string trim_collapse(std::string_view v) {
  std::string out;
  bool space = false;
  for (char c : v) {
    if (c == ' ' || c == '\t') {
      space = !out.empty();
      continue;
    }
    if (space) out.push_back(' ');
    space = false;
    out.push_back(c);
  }
  return out;
}

std::string amz_now(const char* fmt) {
  std::time_t t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[64];
  std::strftime(buf, sizeof buf, fmt, &tm);
  return buf;
}

}  // namespace

std::string sha256_hex(std::span<const uint8_t> data) {
  uint8_t md[SHA256_DIGEST_LENGTH];
  SHA256(data.data(), data.size(), md);
  return hex(md);
}

std::string oss_signature(const std::string& secret, const std::string& string_to_sign) {
  return base64_encode(hmac(EVP_sha1(), bytes(secret), string_to_sign));
}

SigV4Output sigv4_sign(const SigV4Input& in, const std::string& key_id, const std::string& secret) {
  SigV4Output o;
  std::vector<std::pair<std::string, std::string>> hs;
  for (const auto& [k, v] : in.headers) hs.emplace_back(lower(k), trim_collapse(v));
  std::sort(hs.begin(), hs.end());
  std::string canon_headers;
  for (const auto& [k, v] : hs) {
    canon_headers += k + ":" + v + "\n";
    if (!o.signed_headers.empty()) o.signed_headers += ";";
    o.signed_headers += k;
  }
  o.canonical_request = in.method + "\n" + in.canonical_uri + "\n" + in.canonical_query + "\n" + canon_headers +
                        "\n" + o.signed_headers + "\n" + in.payload_hash;
  const std::string date = in.amz_date.substr(0, 8);
  const std::string scope = date + "/" + in.region + "/" + in.service + "/aws4_request";
  o.string_to_sign =
      "AWS4-HMAC-SHA256\n" + in.amz_date + "\n" + scope + "\n" + sha256_hex(bytes(o.canonical_request));
  auto k = hmac(EVP_sha256(), bytes("AWS4" + secret), date);
  k = hmac(EVP_sha256(), k, in.region);
  k = hmac(EVP_sha256(), k, in.service);
  k = hmac(EVP_sha256(), k, "aws4_request");
  o.signature = hex(hmac(EVP_sha256(), k, o.string_to_sign));
  o.authorization = "AWS4-HMAC-SHA256 Credential=" + key_id + "/" + scope + ", SignedHeaders=" + o.signed_headers +
                    ", Signature=" + o.signature;
  return o;
}

Result<S3Config> parse_s3_config(const nlohmann::json& j, bool oss) {
  using namespace remote_config;
  S3Config c;
  c.oss = oss;
  NYDUS_ASSIGN_OR_RETURN(c.endpoint, get_string(j, "endpoint", oss ? "" : "s3.amazonaws.com"));
  NYDUS_ASSIGN_OR_RETURN(c.scheme, get_string(j, "scheme", "https"));
  if (c.scheme.empty()) c.scheme = "https";  // upstream's default
  NYDUS_ASSIGN_OR_RETURN(c.bucket_name, get_string(j, "bucket_name"));
  NYDUS_ASSIGN_OR_RETURN(c.region, get_string(j, "region", oss ? "" : "us-east-1"));
  NYDUS_ASSIGN_OR_RETURN(c.object_prefix, get_string(j, "object_prefix"));
  NYDUS_ASSIGN_OR_RETURN(c.access_key_id, get_string(j, "access_key_id"));
  NYDUS_ASSIGN_OR_RETURN(c.access_key_secret, get_string(j, "access_key_secret"));
  NYDUS_ASSIGN_OR_RETURN(c.skip_verify, get_bool(j, "skip_verify", false));
  NYDUS_ASSIGN_OR_RETURN(c.ca_cert_files, get_string_list(j, "ca_cert_files"));
  NYDUS_ASSIGN_OR_RETURN(c.timeout, get_seconds(j, "timeout", Millis(5000), true));
  NYDUS_ASSIGN_OR_RETURN(c.connect_timeout, get_seconds(j, "connect_timeout", Millis(5000), true));
  NYDUS_ASSIGN_OR_RETURN(c.retry, get_retry(j));
  NYDUS_ASSIGN_OR_RETURN(c.proxy, parse_proxy_config(j));
  const char* type = oss ? "oss" : "s3";
  if (c.scheme != "http" && c.scheme != "https")
    return errorf(Errc::kInvalidArgument, "{} scheme must be http or https, not '{}'", type, c.scheme);
  if (c.endpoint.empty()) return errorf(Errc::kInvalidArgument, "{} backend needs \"endpoint\"", type);
  if (c.bucket_name.empty()) return errorf(Errc::kInvalidArgument, "{} backend needs \"bucket_name\"", type);
  for (char ch : c.endpoint)
    if (ch == '/' || ch == ' ' || ch == '?' || ch == '#' || ch == '@')
      return errorf(Errc::kInvalidArgument, "{} endpoint '{}' must be host[:port]", type, c.endpoint);
  for (char ch : c.bucket_name)
    if (!(std::isalnum(static_cast<unsigned char>(ch)) || ch == '.' || ch == '-' || ch == '_'))
      return errorf(Errc::kInvalidArgument, "invalid bucket name '{}'", c.bucket_name);
  if (c.access_key_id.empty() != c.access_key_secret.empty())
    return errorf(Errc::kInvalidArgument, "{} backend needs both access_key_id and access_key_secret, or neither",
                  type);
  return c;
}

Result<std::shared_ptr<S3Backend>> S3Backend::create(S3Config cfg) {
  if (cfg.endpoint.empty() || cfg.bucket_name.empty())
    return errorf(Errc::kInvalidArgument, "s3 backend needs \"endpoint\" and \"bucket_name\"");
  NYDUS_ASSIGN_OR_RETURN(std::string ca_bundle, load_ca_bundle(cfg.ca_cert_files));
  return std::shared_ptr<S3Backend>(new S3Backend(std::move(cfg), std::move(ca_bundle)));
}

S3Backend::S3Backend(S3Config cfg, std::string ca_bundle_pem)
    : RemoteBackend(cfg.retry),
      cfg_(std::move(cfg)),
      http_(http_options_for(cfg_, std::move(ca_bundle_pem))) {
  if (!cfg_.proxy.url.empty()) proxy_ = std::make_unique<BackendProxy>(cfg_.proxy, http_);
}

std::string S3Backend::request_host() const { return cfg_.oss ? cfg_.bucket_name + "." + cfg_.endpoint : cfg_.endpoint; }

void S3Backend::preconnect() {
  if (proxy_) return;
  http_.preconnect(cfg_.scheme + "://" + request_host());
}

Result<HttpResponse> S3Backend::object_request(const std::string& method, const std::string& key,
                                               std::span<const uint8_t> body,
                                               std::vector<std::pair<std::string, std::string>> extra_headers,
                                               std::optional<std::span<uint8_t>> out,
                                               std::function<Status(const HttpResponse&)> accept) {
  HttpRequest req;
  req.method = method;
  req.body = body;
  req.body_out = out;
  req.accept = std::move(accept);
  const bool signing = !cfg_.access_key_id.empty();
  const std::string host = request_host();
  if (!cfg_.oss) {
    const std::string uri = "/" + cfg_.bucket_name + (key.empty() ? "" : "/" + url_encode(key, true));
    req.url = cfg_.scheme + "://" + host + uri;
    std::vector<std::pair<std::string, std::string>> hs = {{"host", host}};
    for (auto& h : extra_headers) hs.push_back(h);
    if (signing) {
      SigV4Input in;
      in.method = method;
      in.canonical_uri = uri;
      in.payload_hash = body.empty() ? kEmptySha256 : sha256_hex(body);
      in.amz_date = amz_now("%Y%m%dT%H%M%SZ");
      in.region = cfg_.region;
      hs.emplace_back("x-amz-content-sha256", in.payload_hash);
      hs.emplace_back("x-amz-date", in.amz_date);
      in.headers = hs;
      hs.emplace_back("Authorization", sigv4_sign(in, cfg_.access_key_id, cfg_.access_key_secret).authorization);
    }
    for (auto& [k, v] : hs) req.headers.emplace_back(k == "host" ? "Host" : k, v);
  } else {
    req.url = cfg_.scheme + "://" + host + "/" + url_encode(key, true);
    req.headers = extra_headers;
    if (signing) {
      const std::string date = amz_now("%a, %d %b %Y %H:%M:%S GMT");
      std::string content_type;
      for (auto& [k, v] : extra_headers)
        if (lower(k) == "content-type") content_type = v;
      // VERB \n Content-MD5 \n Content-Type \n Date \n CanonicalizedOSSHeaders CanonicalizedResource
      const std::string sts = method + "\n\n" + content_type + "\n" + date + "\n/" + cfg_.bucket_name + "/" + key;
      req.headers.emplace_back("Date", date);
      req.headers.emplace_back("Authorization",
                               "OSS " + cfg_.access_key_id + ":" + oss_signature(cfg_.access_key_secret, sts));
    }
  }
  if (proxy_) return proxy_->perform(req, [this] { note_request(); });
  note_request();
  return http_.perform(req);
}

Attempt<> S3Backend::fetch(const std::string& blob_id, uint64_t offset, std::span<uint8_t> out) {
  const std::string key = cfg_.object_prefix + blob_id;
  const std::string what = fmt::format("GET {} object {}/{}", type(), cfg_.bucket_name, key);
  auto r = object_request("GET", key, {}, {{"range", fmt::format("bytes={}-{}", offset, offset + out.size() - 1)}},
                          out, [offset, len = out.size()](const HttpResponse& r) {
                            return check_range_response(r, offset, len);
                          });
  return finish_ranged_get(r, out.size(), what);
}

Attempt<uint64_t> S3Backend::head_size(const std::string& blob_id) {
  const std::string key = cfg_.object_prefix + blob_id;
  const std::string what = fmt::format("HEAD {} object {}/{}", type(), cfg_.bucket_name, key);
  auto r = object_request("HEAD", key);
  if (!r) return retryable(std::move(r).error().context(what));
  if (r->status / 100 != 2) return std::unexpected(status_error(*r, what));
  if (auto cl = r->content_length()) return *cl;
  return retryable(Error{Errc::kIo, 0, what + ": no Content-Length"});
}

Result<bool> S3Backend::has_blob(const std::string& blob_id) {
  const std::string key = cfg_.object_prefix + blob_id;
  auto r = object_request("HEAD", key);
  if (!r) return std::unexpected(std::move(r).error().context(fmt::format("HEAD {} object {}", type(), key)));
  if (r->status == 404) return false;
  if (r->status / 100 != 2) return std::unexpected(status_error(*r, fmt::format("HEAD {} object {}", type(), key)).error);
  return true;
}

Status S3Backend::put_blob(const std::string& blob_id, std::span<const uint8_t> data) {
  const std::string key = cfg_.object_prefix + blob_id;
  const std::string what = fmt::format("PUT {} object {}/{}", type(), cfg_.bucket_name, key);
  if (data.size() > (uint64_t(5) << 30)) return errorf(Errc::kUnsupported, "{}: larger than a single PUT allows", what);
  auto r = object_request("PUT", key, data, {{"content-type", "application/octet-stream"}});
  if (!r) return std::unexpected(std::move(r).error().context(what));
  if (r->status / 100 != 2) return std::unexpected(status_error(*r, what).error);
  return ok();
}

}  // namespace nydus::storage
