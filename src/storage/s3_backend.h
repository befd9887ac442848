// The s3 backend (and oss): blobs are objects `<object_prefix><blob id>` in a
// bucket, read with ranged GETs.
//
// s3: path-style `scheme://endpoint/bucket/key`, signed with AWS Signature V4
// (host, range, x-amz-content-sha256, x-amz-date; scope
// date/region/s3/aws4_request); anonymous when no keys are configured.
// oss: virtual-hosted `scheme://bucket.endpoint/key`, signed with OSS's
// HMAC-SHA1 header signature (implemented from Aliyun's documented
// string-to-sign; not exercised against a real OSS service here).
#pragma once

#include <memory>
#include <span>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "storage/backend_proxy.h"
#include "storage/remote_backend.h"

namespace nydus::storage {

struct S3Config {
  bool oss = false;  // type "oss"
  std::string endpoint;  // host[:port]; s3 default "s3.amazonaws.com"
  std::string scheme = "https";
  std::string bucket_name;
  std::string region;    // s3 default "us-east-1"
  std::string object_prefix;
  std::string access_key_id;
  std::string access_key_secret;
  bool skip_verify = false;
  std::vector<std::string> ca_cert_files;  // trusted besides the system store
  Millis timeout{5000};                    // 0 = no limit
  Millis connect_timeout{5000};
  RetryPolicy retry;
  ProxyConfig proxy;                       // forward proxy (backend_proxy.h)
};

Result<S3Config> parse_s3_config(const nlohmann::json& config, bool oss);

// AWS Signature Version 4 over one request.
struct SigV4Input {
  std::string method;
  std::string canonical_uri;    // already URI-encoded path, e.g. "/bucket/a%20b"
  std::string canonical_query;  // already canonical ("" for none)
  std::vector<std::pair<std::string, std::string>> headers;  // signed; names any case
  std::string payload_hash;     // hex sha256 or "UNSIGNED-PAYLOAD"
  std::string amz_date;         // YYYYMMDDTHHMMSSZ
  std::string region;
  std::string service = "s3";
};
struct SigV4Output {
  std::string canonical_request;
  std::string string_to_sign;
  std::string signed_headers;
  std::string signature;
  std::string authorization;  // the Authorization header value
};
SigV4Output sigv4_sign(const SigV4Input& in, const std::string& key_id, const std::string& secret);

std::string sha256_hex(std::span<const uint8_t> data);
inline constexpr const char* kEmptySha256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
// OSS: base64(HMAC-SHA1(secret, string_to_sign)).
std::string oss_signature(const std::string& secret, const std::string& string_to_sign);

class S3Backend final : public RemoteBackend {
 public:
  static Result<std::shared_ptr<S3Backend>> create(S3Config cfg);
  const char* type() const override { return cfg_.oss ? "oss" : "s3"; }
  // To the endpoint the reads go to; not when a proxy carries them.
  void preconnect() override;

  // A signed request for object `key` (relative to the bucket, prefix not
  // applied; "" = the bucket itself). Used for HEAD/GET here and by tests to
  // create buckets and upload objects (PUT with a body).
  Result<HttpResponse> object_request(const std::string& method, const std::string& key,
                                      std::span<const uint8_t> body = {},
                                      std::vector<std::pair<std::string, std::string>> extra_headers = {},
                                      std::optional<std::span<uint8_t>> out = std::nullopt,
                                      std::function<Status(const HttpResponse&)> accept = nullptr);

  // Blob `blob_id` as object `<object_prefix><blob_id>` (what the converter
  // writes with `nydusify convert --backend-type s3|oss`): whether it exists,
  // and a single-request PUT of its bytes (up to S3's 5 GiB PUT limit).
  Result<bool> has_blob(const std::string& blob_id);
  Status put_blob(const std::string& blob_id, std::span<const uint8_t> data);

 protected:
  Attempt<> fetch(const std::string& blob_id, uint64_t offset, std::span<uint8_t> out) override;
  Attempt<uint64_t> head_size(const std::string& blob_id) override;

 private:
  S3Backend(S3Config cfg, std::string ca_bundle_pem);
  // The host requests go to: the endpoint (s3, path-style) or
  // bucket.endpoint (oss, virtual-hosted).
  std::string request_host() const;

  S3Config cfg_;
  HttpClient http_;
  std::unique_ptr<BackendProxy> proxy_;
};

}  // namespace nydus::storage
