// Upstream v2.4.4's backend config keys and their meaning (storage/src/backend/
// registry.rs, connection.rs, http_proxy.rs, localdisk.rs): registry scheme
// "" = https, the skip_verify https->http fallback against a plain-HTTP server,
// ca_cert_files, blob_redirected_host / blob_url_scheme, the proxy as a
// forward proxy (s3 too), the http-proxy backend over TCP and a unix socket,
// and the localdisk backend over a GPT image written by sfdisk.
#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>

#include "common/test_util.h"
#include "fake_http_server.h"
#include "storage/backend.h"
#include "storage/http_proxy_backend.h"
#include "storage/localdisk_backend.h"
#include "storage/registry_backend.h"
#include "storage/s3_backend.h"
#include "storage_test_util.h"

namespace nydus::storage {
namespace {

using nlohmann::json;
using test::FakeHttpServer;
using test::FakeRequest;
using test::FakeResponse;

std::string read_str(Backend& b, const std::string& id, uint64_t off, size_t len, Status* st = nullptr) {
  std::string out(len, '\0');
  auto r = b.read(id, off, std::span<uint8_t>(reinterpret_cast<uint8_t*>(out.data()), len));
  if (st) *st = r;
  if (!r) return "<error: " + r.error().message + ">";
  return out;
}

struct Blob {
  std::string data;
  std::string id;
  std::string path;
  explicit Blob(size_t n = 100000, uint32_t seed = 7) {
    auto b = test::random_bytes(n, seed);
    data.assign(b.begin(), b.end());
    id = sha256_hex(b);
    path = "/v2/library/test/blobs/sha256:" + id;
  }
};

FakeHttpServer serve_blob(const Blob& blob, std::string prefix = {}) {
  return FakeHttpServer([&blob, prefix](const FakeRequest& req) {
    if (req.target != prefix + blob.path) return FakeResponse{FakeResponse::kRespond, 404, {}, "unknown blob"};
    return test::serve_bytes(req, blob.data);
  });
}

json reg(const std::string& host, json extra = json::object()) {
  json c = {{"host", host}, {"repo", "library/test"}, {"timeout", 2}, {"connect_timeout", 1},
            {"retry_limit", 0}};
  for (auto& [k, v] : extra.items()) c[k] = v;
  return c;
}

std::shared_ptr<Backend> make(const json& config, const char* type = "registry") {
  auto b = make_backend(json{{"type", type}, {"config", config}});
  EXPECT_TRUE(b) << b.error().message;
  return b ? *b : nullptr;
}

// ---- registry config ------------------------------------------------------

TEST(RegistryConfigUpstream, SchemeOnlyHttpIsHttp) {
  // registry.rs: `if !scheme.is_empty() && scheme == "http"` → http, else https.
  for (const char* s : {"", "https", "HTTP", "whatever"}) {
    auto c = parse_registry_config(reg("h", {{"scheme", s}}));
    ASSERT_TRUE(c) << s << ": " << c.error().message;
    EXPECT_EQ(c->scheme, "https") << s;
  }
  EXPECT_EQ(parse_registry_config(reg("h"))->scheme, "https");
  EXPECT_EQ(parse_registry_config(reg("h", {{"scheme", "http"}}))->scheme, "http");
}

TEST(RegistryConfigUpstream, AcceptsEveryDocumentedKey) {
  // docs/nydusd.md "Registry Backend" and "Enable P2P Proxy", misc/configs.
  auto c = parse_registry_config(reg("my-registry:5000", {
      {"scheme", ""}, {"skip_verify", true}, {"ca_cert_files", json::array()},
      {"auth", "dXNlcjpwYXNz"}, {"registry_token", "tok"},
      {"blob_url_scheme", "http"}, {"blob_redirected_host", "redirect.registry.com"},
      {"timeout", 0}, {"connect_timeout", 0},
      {"proxy", {{"url", "http://p2p-proxy:65001"}, {"fallback", true},
                 {"ping_url", "http://p2p-proxy:40901/server/ping"}, {"check_interval", 5},
                 {"check_pause_elapsed", 300}, {"use_http", false},
                 {"dragonfly_scheduler_endpoint", "http://127.0.0.1:8002"}}}}));
  ASSERT_TRUE(c) << c.error().message;
  EXPECT_TRUE(c->skip_verify);
  EXPECT_EQ(c->blob_url_scheme, "http");
  EXPECT_EQ(c->blob_redirected_host, "redirect.registry.com");
  EXPECT_EQ(c->timeout.count(), 0);  // upstream: 0 = no timeout
  EXPECT_EQ(c->proxy.url, "http://p2p-proxy:65001");
  EXPECT_EQ(c->proxy.check_pause_elapsed, std::chrono::seconds(300));
  EXPECT_EQ(c->proxy.dragonfly_scheduler_endpoint, "http://127.0.0.1:8002");
  // Defaults as upstream's ProxyConfig::default().
  auto d = parse_registry_config(reg("h", {{"proxy", {{"url", "http://p:1"}}}}));
  ASSERT_TRUE(d);
  EXPECT_TRUE(d->proxy.fallback);
  EXPECT_EQ(d->proxy.check_interval, std::chrono::seconds(5));
  EXPECT_EQ(d->proxy.check_pause_elapsed, std::chrono::seconds(300));
  EXPECT_FALSE(parse_registry_config(reg("h", {{"ca_cert_files", "/one.pem"}})));  // a list upstream
  EXPECT_FALSE(parse_registry_config(reg("h", {{"blob_url_scheme", "ftp"}})));
}

TEST(RegistryConfigUpstream, CaCertFilesMustBeReadablePem) {
  nydus::test::TempDir tmp;
  EXPECT_FALSE(make_backend(json{{"type", "registry"}, {"config", reg("h", {{"ca_cert_files", {"/nonexistent.pem"}}})}}));
  nydus::test::write_file(tmp / "junk.pem", "not a certificate");
  EXPECT_FALSE(make_backend(
      json{{"type", "registry"}, {"config", reg("h", {{"ca_cert_files", {(tmp / "junk.pem").string()}}})}}));
  const std::string pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
  nydus::test::write_file(tmp / "ca.pem", pem);
  auto bundle = load_ca_bundle({(tmp / "ca.pem").string()});
  ASSERT_TRUE(bundle) << bundle.error().message;
  EXPECT_NE(bundle->find(pem), std::string::npos);
  // "in addition to the system CA store": the system bundle comes first.
  if (std::filesystem::exists("/etc/ssl/certs/ca-certificates.crt")) {
    EXPECT_GT(bundle->size(), pem.size() + 1000);
  }
  EXPECT_EQ(*load_ca_bundle({}), "");
}

// ---- skip_verify: https -> http fallback ----------------------------------

TEST(RegistryUpstream, SkipVerifyFallsBackToHttpOnPlainServer) {
  Blob blob;
  auto srv = serve_blob(blob);
  auto b = make(reg(srv.host(), {{"scheme", "https"}, {"skip_verify", true}}));
  ASSERT_TRUE(b);
  auto* rb = dynamic_cast<RegistryBackend*>(b.get());
  EXPECT_TRUE(rb->uses_https());
  EXPECT_EQ(read_str(*b, blob.id, 10, 1000), blob.data.substr(10, 1000));
  EXPECT_GE(srv.tls_hellos(), 1);  // it did try TLS first
  EXPECT_FALSE(rb->uses_https());  // and stays on http
  const int hellos = srv.tls_hellos();
  auto size = b->blob_size(blob.id);
  ASSERT_TRUE(size) << size.error().message;
  EXPECT_EQ(*size, blob.data.size());
  EXPECT_EQ(read_str(*b, blob.id, 5000, 10), blob.data.substr(5000, 10));
  EXPECT_EQ(srv.tls_hellos(), hellos);
}

TEST(RegistryUpstream, NoFallbackWithoutSkipVerify) {
  Blob blob;
  auto srv = serve_blob(blob);
  for (const char* scheme : {"https", ""}) {
    auto b = make(reg(srv.host(), {{"scheme", scheme}}));
    ASSERT_TRUE(b);
    Status st;
    read_str(*b, blob.id, 0, 100, &st);
    EXPECT_FALSE(st) << scheme;
    EXPECT_TRUE(dynamic_cast<RegistryBackend*>(b.get())->uses_https());
  }
  EXPECT_GE(srv.tls_hellos(), 2);
  for (const auto& r : srv.requests()) EXPECT_NE(r.target, blob.path) << "served over plain http";
}

// ---- redirects: blob_redirected_host / blob_url_scheme --------------------

TEST(RegistryUpstream, BlobRedirectedHostAndScheme) {
  Blob blob;
  FakeHttpServer storage([&](const FakeRequest& req) {
    if (req.target != "/store" + blob.path + "?sig=1") return FakeResponse{FakeResponse::kRespond, 404, {}, ""};
    return test::serve_bytes(req, blob.data);
  });
  // The registry redirects to a host name that does not resolve (and to
  // https): only the rewrites make the storage reachable.
  FakeHttpServer origin([&](const FakeRequest& req) {
    if (req.target != blob.path) return FakeResponse{FakeResponse::kRespond, 404, {}, ""};
    return FakeResponse{FakeResponse::kRespond, 307,
                        {{"Location", "https://blobs.invalid:" + std::to_string(storage.port()) + "/store" + blob.path +
                                          "?sig=1"}},
                        ""};
  });
  auto plain = make(reg(origin.host(), {{"scheme", "http"}}));
  Status st;
  read_str(*plain, blob.id, 0, 10, &st);
  EXPECT_FALSE(st);
  auto b = make(reg(origin.host(), {{"scheme", "http"}, {"blob_redirected_host", "127.0.0.1"},
                                    {"blob_url_scheme", "http"}}));
  EXPECT_EQ(read_str(*b, blob.id, 100, 200), blob.data.substr(100, 200));
  ASSERT_FALSE(storage.requests().empty());
  EXPECT_EQ(storage.requests().back().target, "/store" + blob.path + "?sig=1");
}

// ---- the proxy is a forward proxy -----------------------------------------

TEST(ProxyUpstream, UseHttpRewritesHttpsUrlsForTheProxy) {
  Blob blob;
  // An https registry that does not exist; the proxy gets the http:// URL.
  const std::string want = "http://registry.invalid" + blob.path;
  FakeHttpServer proxy([&](const FakeRequest& req) {
    if (req.target != want) return FakeResponse{FakeResponse::kRespond, 404, {}, ""};
    return test::serve_bytes(req, blob.data);
  });
  auto b = make(reg("registry.invalid", {{"proxy", {{"url", proxy.base()}, {"use_http", true}, {"fallback", false}}}}));
  EXPECT_EQ(read_str(*b, blob.id, 0, 64), blob.data.substr(0, 64));
  ASSERT_FALSE(proxy.requests().empty());
  EXPECT_EQ(proxy.requests().back().target, want);
}

TEST(ProxyUpstream, FallbackOnlyOn5xxOrTransportErrors) {
  Blob blob;
  auto origin = serve_blob(blob);
  std::atomic<int> status{404};
  FakeHttpServer proxy([&](const FakeRequest&) { return FakeResponse{FakeResponse::kRespond, status.load(), {}, ""}; });
  auto b = make(reg(origin.host(), {{"scheme", "http"}, {"proxy", {{"url", proxy.base()}}}}));
  // A 4xx from the proxy is its answer (connection.rs: fallback only when >= 500).
  Status st;
  read_str(*b, blob.id, 0, 10, &st);
  EXPECT_FALSE(st);
  EXPECT_EQ(origin.hits(), 0);
  status = 502;
  EXPECT_EQ(read_str(*b, blob.id, 0, 10), blob.data.substr(0, 10));
  EXPECT_EQ(origin.hits(), 1);
}

TEST(ProxyUpstream, S3ThroughProxyWithCaCertFilesChecked) {
  Blob blob;
  FakeHttpServer proxy([&](const FakeRequest& req) {
    if (req.target != "http://s3.test.invalid/bucket/nydus/" + blob.id)
      return FakeResponse{FakeResponse::kRespond, 404, {}, ""};
    return test::serve_bytes(req, blob.data);
  });
  auto b = make(json{{"endpoint", "s3.test.invalid"}, {"scheme", "http"}, {"bucket_name", "bucket"},
                     {"object_prefix", "nydus/"}, {"region", "r"}, {"retry_limit", 0},
                     {"proxy", {{"url", proxy.base()}, {"fallback", false}}}},
                "s3");
  ASSERT_TRUE(b);
  EXPECT_EQ(read_str(*b, blob.id, 50, 50), blob.data.substr(50, 50));
  EXPECT_FALSE(make_backend(json{{"type", "oss"},
                                 {"config", {{"endpoint", "e"}, {"bucket_name", "b"}, {"ca_cert_files", {"/none.pem"}}}}}));
}

// ---- http-proxy backend ---------------------------------------------------

TEST(HttpProxyBackend, UrlFormJoinsPathAndBlobId) {
  Blob blob;
  FakeHttpServer plain([&](const FakeRequest& req) {
    if (req.target != "/namespace/repo/blobs/" + blob.id) return FakeResponse{FakeResponse::kRespond, 404, {}, ""};
    return test::serve_bytes(req, blob.data);
  });
  auto b = make(json{{"addr", plain.base()}, {"path", "/namespace/repo/blobs"}, {"retry_limit", 0}}, "http-proxy");
  ASSERT_TRUE(b);
  EXPECT_STREQ(b->type(), "http-proxy");
  EXPECT_EQ(read_str(*b, blob.id, 777, 3000), blob.data.substr(777, 3000));
  auto size = b->blob_size(blob.id);
  ASSERT_TRUE(size) << size.error().message;
  EXPECT_EQ(*size, blob.data.size());
  bool saw_range = false;
  for (const auto& r : plain.requests()) saw_range |= r.header("range") == "bytes=777-3776";
  EXPECT_TRUE(saw_range);
}

TEST(HttpProxyBackend, UnixSocketFormAsksForSlash) {
  Blob blob;
  nydus::test::TempDir tmp;
  const std::string sock = (tmp / "proxy.sock").string();
  auto srv = FakeHttpServer::on_unix_socket(sock, [&](const FakeRequest& req) {
    // Upstream sends every request to "/" on the socket.
    if (req.target != "/") return FakeResponse{FakeResponse::kRespond, 404, {}, ""};
    return test::serve_bytes(req, blob.data);
  });
  // v2 shape, as upstream's test_backend_http_proxy_config.
  auto b = make_backend(json{{"type", "http-proxy"}, {"config", {{"addr", sock}, {"retry_limit", 0}}}});
  ASSERT_TRUE(b) << b.error().message;
  EXPECT_EQ(read_str(**b, blob.id, 4096, 4096), blob.data.substr(4096, 4096));
  auto size = (*b)->blob_size(blob.id);
  ASSERT_TRUE(size) << size.error().message;
  EXPECT_EQ(*size, blob.data.size());
}

TEST(HttpProxyBackend, AddrValidatedAsUpstream) {
  for (json bad : {json::object(), json{{"addr", "127.0.0.1:80"}}, json{{"addr", "/nonexistent/socket"}},
                   json{{"addr", 5}}})
    EXPECT_FALSE(make_backend(json{{"type", "http-proxy"}, {"config", bad}})) << bad.dump();
}

// ---- localdisk backend ----------------------------------------------------

TEST(LocalDiskBackend, GptPartitionsNamedByBlobId) {
  ASSERT_EQ(std::system("command -v sfdisk >/dev/null 2>&1"), 0) << "sfdisk missing: run scripts/setup.sh (Debian package fdisk)";
  nydus::test::TempDir tmp;
  const auto img = tmp / "disk.img";
  Blob b1(300000, 1), b2(70000, 2);
  {
    std::ofstream f(img, std::ios::binary);
    f.seekp(8 << 20);
    f.put(0);
  }
  // Blob id = partition name (first 32 hex digits) + partition GUID (the last 32).
  auto guid = [](const std::string& id) {
    const std::string g = id.substr(32);
    return g.substr(0, 8) + "-" + g.substr(8, 4) + "-" + g.substr(12, 4) + "-" + g.substr(16, 4) + "-" + g.substr(20);
  };
  std::ofstream(tmp / "layout") << "label: gpt\n"
                                << "start=2048, size=1024, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, uuid="
                                << guid(b1.id) << ", name=" << b1.id.substr(0, 32) << "\n"
                                << "start=4096, size=256, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, uuid="
                                << guid(b2.id) << ", name=" << b2.id.substr(0, 32) << "\n";
  ASSERT_EQ(std::system(("sfdisk -q " + img.string() + " < " + (tmp / "layout").string() + " >/dev/null").c_str()),
            0);
  {
    std::fstream f(img, std::ios::binary | std::ios::in | std::ios::out);
    f.seekp(2048 * 512);
    f.write(b1.data.data(), std::streamsize(b1.data.size()));
    f.seekp(4096 * 512);
    f.write(b2.data.data(), std::streamsize(b2.data.size()));
  }
  auto b = make_backend(json{{"type", "localdisk"}, {"config", {{"device_path", img.string()}}}});
  ASSERT_TRUE(b) << b.error().message;
  EXPECT_EQ(read_str(**b, b1.id, 12345, 5000), b1.data.substr(12345, 5000));
  EXPECT_EQ(read_str(**b, b2.id, 0, b2.data.size()), b2.data);
  EXPECT_EQ(*(*b)->blob_size(b2.id), 256u * 512);
  Status st;
  read_str(**b, std::string(64, 'a'), 0, 1, &st);
  EXPECT_FALSE(st);
  read_str(**b, b2.id, 256 * 512 - 1, 2, &st);  // past the partition
  EXPECT_FALSE(st);
  // disable_gpt: nothing is discovered, as upstream.
  auto raw = make_backend(json{{"type", "localdisk"}, {"config", {{"device_path", img.string()}, {"disable_gpt", true}}}});
  ASSERT_TRUE(raw) << raw.error().message;
  EXPECT_FALSE((*raw)->blob_size(b1.id));
  // Not a GPT disk, or no device: refused with the reason.
  nydus::test::write_file(tmp / "plain", std::string(8192, 'x'));
  auto plain = make_backend(json{{"type", "localdisk"}, {"config", {{"device_path", (tmp / "plain").string()}}}});
  ASSERT_FALSE(plain);
  EXPECT_NE(plain.error().message.find("GPT"), std::string::npos);
  EXPECT_FALSE(make_backend(json{{"type", "localdisk"}, {"config", json::object()}}));
}

}  // namespace
}  // namespace nydus::storage
