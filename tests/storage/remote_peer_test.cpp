// The remote backends against REAL peers on 127.0.0.1: Debian's
// docker-registry (distribution v2; anonymous, htpasswd Basic auth, and
// Bearer tokens from a token issuer of our own that signs RS256 JWTs the
// registry verifies against the issuer's certificate; and behind nginx as a
// caching proxy, with fallback when it dies) and
// s3rver (SigV4-checking S3 emulator). Blobs are pushed with plain HTTP
// (POST uploads/ + PUT ?digest=), then read through the backend and through
// a BlobCache end to end, for a real image built with create_image.
// Skipped (with a message) only when a peer program is not installed;
// scripts/setup.sh installs both.
#include <gtest/gtest.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <fstream>
#include <sstream>
#include <thread>

#include <nlohmann/json.hpp>

#include "builder/create_image.h"
#include "common/test_util.h"
#include "fake_http_server.h"
#include "storage/backend.h"
#include "storage/blob_cache.h"
#include "storage/localfs_backend.h"
#include "storage/registry_backend.h"
#include "storage/s3_backend.h"
#include "storage_test_util.h"

namespace nydus::storage {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using nydus::test::TempDir;
using test::Bytes;

constexpr const char* kRepo = "nydus/remote-test";

std::string as_string(const Bytes& b) { return std::string(b.begin(), b.end()); }

struct Registry {
  TempDir dir;
  uint16_t port = test::free_port();
  std::unique_ptr<test::PeerProcess> proc;
  std::string host() const { return "127.0.0.1:" + std::to_string(port); }

  // htpasswd_user: "user:pass" enables Basic auth (bcrypt htpasswd file);
  // `auth_yaml`: any other auth section (token).
  bool start(const std::string& htpasswd_user = {}, std::string auth = {}) {
    if (!htpasswd_user.empty()) {
      auto colon = htpasswd_user.find(':');
      std::string cmd = "htpasswd -Bbn '" + htpasswd_user.substr(0, colon) + "' '" + htpasswd_user.substr(colon + 1) +
                        "' > " + (dir / "htpasswd").string() + " 2>/dev/null";
      if (::system(cmd.c_str()) != 0) return false;
      auth = "auth:\n  htpasswd:\n    realm: nydus-test\n    path: " + (dir / "htpasswd").string() + "\n";
    }
    std::ofstream(dir / "config.yml") << "version: 0.1\n"
                                         "log:\n  level: error\n  accesslog:\n    disabled: true\n"
                                         "storage:\n  filesystem:\n    rootdirectory: "
                                      << (dir / "data").string()
                                      << "\n"
                                         "http:\n  addr: "
                                      << host() << "\n"
                                      << auth;
    proc = std::make_unique<test::PeerProcess>(
        std::vector<std::string>{"docker-registry", "serve", (dir / "config.yml").string()},
        (dir / "registry.log").string());
    return proc->started() && test::wait_http("http://" + host() + "/v2/");
  }
};

// Push a blob with the registry's upload protocol (`authorization`: the
// whole header value, "Basic ..." or "Bearer ...").
Status push_blob(const std::string& host, const std::string& data, const std::string& authorization = {}) {
  HttpClient http;
  const std::string id = sha256_hex({reinterpret_cast<const uint8_t*>(data.data()), data.size()});
  HttpRequest post;
  post.method = "POST";
  post.url = "http://" + host + "/v2/" + kRepo + "/blobs/uploads/";
  if (!authorization.empty()) post.headers.emplace_back("Authorization", authorization);
  NYDUS_ASSIGN_OR_RETURN(auto r, http.perform(post));
  if (r.status != 202) return errorf(Errc::kIo, "upload start: HTTP {} {}", r.status, r.body);
  NYDUS_ASSIGN_OR_RETURN(std::string loc, resolve_url(post.url, r.header("location")));
  HttpRequest put;
  put.method = "PUT";
  put.url = loc + (loc.find('?') == std::string::npos ? "?" : "&") + "digest=sha256:" + id;
  put.body = {reinterpret_cast<const uint8_t*>(data.data()), data.size()};
  put.headers.emplace_back("Content-Type", "application/octet-stream");
  if (!authorization.empty()) put.headers.emplace_back("Authorization", authorization);
  NYDUS_ASSIGN_OR_RETURN(auto p, http.perform(put));
  if (p.status != 201) return errorf(Errc::kIo, "upload finish: HTTP {} {}", p.status, p.body);
  return ok();
}

std::shared_ptr<Backend> registry_backend(const std::string& host, json extra = json::object()) {
  json c = {{"scheme", "http"}, {"host", host}, {"repo", kRepo}, {"timeout", 10}, {"retry_limit", 1},
            {"retry_backoff_ms", 10}};
  for (auto& [k, v] : extra.items()) c[k] = v;
  auto b = make_backend(json{{"type", "registry"}, {"config", c}});
  EXPECT_TRUE(b) << b.error().message;
  return b ? *b : nullptr;
}

Result<std::string> read_range(Backend& b, const std::string& id, uint64_t off, size_t len) {
  std::string out(len, '\0');
  NYDUS_TRY(b.read(id, off, {reinterpret_cast<uint8_t*>(out.data()), len}));
  return out;
}

// scripts/setup.sh installs every peer: missing, it is a skip on a
// developer's machine and a failure in CI.
#define REQUIRE_PROGRAM(name)                                                                       \
  if (!test::have_program(name)) {                                                                  \
    if (test::in_ci()) GTEST_FAIL() << name << " is not installed (scripts/setup.sh installs it)";  \
    GTEST_SKIP() << name << " is not installed (scripts/setup.sh installs it); skipping the real-" \
                 << name << " test";                                                                \
  }

TEST(RealRegistry, RangedReadsOfAPushedBlob) {
  REQUIRE_PROGRAM("docker-registry");
  Registry reg;
  ASSERT_TRUE(reg.start()) << "docker-registry did not come up";
  const std::string data = as_string(test::random_bytes(3 << 20, 42));
  const std::string id = sha256_hex({reinterpret_cast<const uint8_t*>(data.data()), data.size()});
  ASSERT_TRUE(push_blob(reg.host(), data));
  auto b = registry_backend(reg.host());
  auto size = b->blob_size(id);
  ASSERT_TRUE(size) << size.error().message;
  EXPECT_EQ(*size, data.size());
  std::mt19937 rng(7);
  for (int i = 0; i < 40; i++) {
    uint64_t off = rng() % data.size();
    size_t len = 1 + rng() % std::min<uint64_t>(data.size() - off, 300000);
    auto got = read_range(*b, id, off, len);
    ASSERT_TRUE(got) << got.error().message;
    ASSERT_EQ(*got, data.substr(off, len)) << "off " << off << " len " << len;
  }
  auto whole = read_range(*b, id, 0, data.size());
  ASSERT_TRUE(whole) << whole.error().message;
  EXPECT_TRUE(*whole == data);
  // Past the end and an unknown blob are errors, never bytes.
  EXPECT_FALSE(read_range(*b, id, data.size() - 10, 20));
  auto missing = read_range(*b, std::string(64, '0'), 0, 10);
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.error().code, Errc::kNotFound);
  auto m = b->metrics();
  EXPECT_EQ(m.read_count, 41u);
  EXPECT_EQ(m.read_errors, 2u);
}

TEST(RealRegistry, HtpasswdBasicAuth) {
  REQUIRE_PROGRAM("docker-registry");
  REQUIRE_PROGRAM("htpasswd");
  Registry reg;
  ASSERT_TRUE(reg.start("nydus:s3cret")) << "docker-registry did not come up";
  const std::string creds = base64_encode("nydus:s3cret");
  const std::string data = as_string(test::text_bytes(200000, 3));
  const std::string id = sha256_hex({reinterpret_cast<const uint8_t*>(data.data()), data.size()});
  ASSERT_TRUE(push_blob(reg.host(), data, "Basic " + creds));
  auto b = registry_backend(reg.host(), {{"auth", creds}});
  auto got = read_range(*b, id, 1000, 50000);
  ASSERT_TRUE(got) << got.error().message;
  EXPECT_EQ(*got, data.substr(1000, 50000));
  EXPECT_EQ(b->metrics().requests, 2u);  // 401 challenge, then Basic
  auto wrong = registry_backend(reg.host(), {{"auth", base64_encode("nydus:wrong")}});
  auto denied = read_range(*wrong, id, 0, 10);
  ASSERT_FALSE(denied);
  EXPECT_EQ(denied.error().to_errno(), EIO);
  auto anon = registry_backend(reg.host());
  EXPECT_FALSE(read_range(*anon, id, 0, 10));
}

// The token service a registry with `auth: token` sends clients to (the role
// of docker/auth, Harbor's core or a cloud's): GET /token?service=&scope=
// with Basic credentials of "nydus:s3cret" returns an RS256 JWT carrying the
// scope's access, signed by a key whose self-signed certificate is the
// registry's rootcertbundle and rides in the JWT's x5c header.
class TokenIssuer {
 public:
  TokenIssuer(const fs::path& dir, int expires_in) : expires_in_(expires_in) {
    const std::string cmd = "openssl req -x509 -newkey rsa:2048 -nodes -keyout '" + (dir / "key.pem").string() +
                            "' -out '" + (dir / "cert.pem").string() +
                            "' -days 2 -subj /CN=nydus-token-issuer >/dev/null 2>&1";
    if (::system(cmd.c_str()) != 0) return;
    cert_path_ = dir / "cert.pem";
    if (FILE* f = std::fopen((dir / "key.pem").c_str(), "r")) {
      key_ = PEM_read_PrivateKey(f, nullptr, nullptr, nullptr);
      std::fclose(f);
    }
    if (FILE* f = std::fopen(cert_path_.c_str(), "r")) {
      X509* x = PEM_read_X509(f, nullptr, nullptr, nullptr);
      std::fclose(f);
      unsigned char* der = nullptr;
      const int n = x ? i2d_X509(x, &der) : -1;
      if (n > 0) cert_b64_ = base64_encode(std::span<const uint8_t>(der, size_t(n)));
      OPENSSL_free(der);
      X509_free(x);
    }
    server_ = std::make_unique<test::FakeHttpServer>([this](const test::FakeRequest& r) { return serve(r); });
  }
  ~TokenIssuer() { EVP_PKEY_free(key_); }
  bool ok() const { return key_ && !cert_b64_.empty() && server_; }
  const fs::path& cert() const { return cert_path_; }
  std::string realm() const { return server_->base() + "/token"; }
  int issued() const { return issued_.load(); }
  int refused() const { return refused_.load(); }

  // A token for `scope` ("repository:<name>:<actions>"), as GET /token returns.
  std::string token(const std::string& scope) const {
    auto b64url = [](std::string_view in) {
      std::string s = base64_encode(in);
      for (char& c : s) c = c == '+' ? '-' : c == '/' ? '_' : c;
      while (!s.empty() && s.back() == '=') s.pop_back();
      return s;
    };
    json access = json::array();
    const auto c1 = scope.find(':'), c2 = scope.rfind(':');
    if (c1 != std::string::npos && c2 > c1) {
      json actions = json::array();
      std::stringstream as(scope.substr(c2 + 1));
      for (std::string a; std::getline(as, a, ',');) actions.push_back(a);
      access.push_back({{"type", scope.substr(0, c1)}, {"name", scope.substr(c1 + 1, c2 - c1 - 1)}, {"actions", actions}});
    }
    const int64_t now = ::time(nullptr);
    const std::string header = b64url(json{{"typ", "JWT"}, {"alg", "RS256"}, {"x5c", {cert_b64_}}}.dump());
    const std::string claims = b64url(json{{"iss", "nydus-test-issuer"}, {"sub", "nydus"}, {"aud", "nydus-test"},
                                           {"exp", now + expires_in_}, {"nbf", now - 10}, {"iat", now},
                                           {"jti", std::to_string(now) + "-" + std::to_string(issued_.load())},
                                           {"access", access}}
                                          .dump());
    const std::string input = header + "." + claims;
    std::string sig(512, '\0');
    size_t sig_len = sig.size();
    EVP_MD_CTX* md = EVP_MD_CTX_new();
    const bool signed_ok =
        EVP_DigestSignInit(md, nullptr, EVP_sha256(), nullptr, key_) == 1 &&
        EVP_DigestSign(md, reinterpret_cast<unsigned char*>(sig.data()), &sig_len,
                       reinterpret_cast<const unsigned char*>(input.data()), input.size()) == 1;
    EVP_MD_CTX_free(md);
    if (!signed_ok) return {};
    sig.resize(sig_len);
    return input + "." + b64url(sig);
  }

 private:
  test::FakeResponse serve(const test::FakeRequest& r) {
    test::FakeResponse resp;
    if (r.target.rfind("/token", 0) != 0) {
      resp.status = 404;
      return resp;
    }
    if (r.header("authorization") != "Basic " + base64_encode("nydus:s3cret")) {
      refused_++;
      resp.status = 401;
      resp.body = R"({"errors":[{"code":"UNAUTHORIZED"}]})";
      return resp;
    }
    std::string scope;
    if (auto p = r.target.find("scope="); p != std::string::npos) {
      const std::string enc = r.target.substr(p + 6, r.target.find('&', p) - p - 6);
      for (size_t i = 0; i < enc.size(); i++) {  // percent-decoding
        if (enc[i] == '%' && i + 2 < enc.size()) {
          scope += char(std::stoi(enc.substr(i + 1, 2), nullptr, 16));
          i += 2;
        } else {
          scope += enc[i];
        }
      }
    }
    issued_++;
    resp.headers.emplace_back("Content-Type", "application/json");
    resp.body = json{{"token", token(scope)}, {"expires_in", expires_in_}}.dump();
    return resp;
  }

  int expires_in_;
  EVP_PKEY* key_ = nullptr;
  fs::path cert_path_;
  std::string cert_b64_;
  mutable std::atomic<int> issued_{0};
  std::atomic<int> refused_{0};
  std::unique_ptr<test::FakeHttpServer> server_;
};

TEST(RealRegistry, BearerTokenAuth) {
  REQUIRE_PROGRAM("docker-registry");
  REQUIRE_PROGRAM("openssl");
  TempDir keys;
  TokenIssuer issuer(keys.path(), /*expires_in=*/2);
  ASSERT_TRUE(issuer.ok()) << "cannot make the token issuer's key and certificate";
  Registry reg;
  ASSERT_TRUE(reg.start({}, "auth:\n  token:\n    realm: " + issuer.realm() +
                                "\n    service: nydus-test\n    issuer: nydus-test-issuer\n    rootcertbundle: " +
                                issuer.cert().string() + "\n"))
      << "docker-registry did not come up";
  const std::string data = as_string(test::text_bytes(300000, 5));
  const std::string id = sha256_hex({reinterpret_cast<const uint8_t*>(data.data()), data.size()});
  // Without a token the registry refuses, and says where to get one.
  auto anon_push = push_blob(reg.host(), data);
  ASSERT_FALSE(anon_push);
  ASSERT_TRUE(push_blob(reg.host(), data, "Bearer " + issuer.token(std::string("repository:") + kRepo + ":pull,push")))
      << "the registry did not accept our issuer's token";

  auto b = registry_backend(reg.host(), {{"auth", base64_encode("nydus:s3cret")}});
  auto got = read_range(*b, id, 5000, 100000);
  ASSERT_TRUE(got) << got.error().message;
  EXPECT_EQ(*got, data.substr(5000, 100000));
  EXPECT_EQ(issuer.issued(), 1);  // challenge -> token -> retry
  // The token is cached: more reads, no new token.
  for (uint64_t off : {0ull, 123456ull, 299000ull}) {
    auto r = read_range(*b, id, off, 1000);
    ASSERT_TRUE(r) << r.error().message;
    EXPECT_EQ(*r, data.substr(off, 1000));
  }
  EXPECT_EQ(issuer.issued(), 1);
  // Past its expires_in the backend fetches a fresh one before reading.
  std::this_thread::sleep_for(std::chrono::milliseconds(2500));
  auto later = read_range(*b, id, 777, 4096);
  ASSERT_TRUE(later) << later.error().message;
  EXPECT_EQ(*later, data.substr(777, 4096));
  EXPECT_EQ(issuer.issued(), 2);
  // Wrong credentials: the issuer refuses, the read fails cleanly (EIO), no bytes.
  auto wrong = registry_backend(reg.host(), {{"auth", base64_encode("nydus:wrong")}});
  auto denied = read_range(*wrong, id, 0, 10);
  ASSERT_FALSE(denied);
  EXPECT_EQ(denied.error().to_errno(), EIO);
  EXPECT_GE(issuer.refused(), 1);
  EXPECT_FALSE(read_range(*registry_backend(reg.host()), id, 0, 10));  // anonymous
}

// nginx as a caching proxy in front of the registry (the place Dragonfly's
// dfdaemon takes in production): reads go through it while its ping answers;
// when it dies they fall back to the registry at once and keep working; after
// it is back, the next health check (check_interval) returns them to it.
TEST(RealRegistry, NginxCachingProxyAndFallback) {
  REQUIRE_PROGRAM("docker-registry");
  REQUIRE_PROGRAM("nginx");
  Registry reg;
  ASSERT_TRUE(reg.start()) << "docker-registry did not come up";
  const std::string data = as_string(test::random_bytes(2 << 20, 11));
  const std::string id = sha256_hex({reinterpret_cast<const uint8_t*>(data.data()), data.size()});
  ASSERT_TRUE(push_blob(reg.host(), data));

  TempDir ng;
  const uint16_t port = test::free_port();
  fs::create_directories(ng / "tmp");
  std::ofstream(ng / "nginx.conf") << "daemon off;\nmaster_process off;\nuser root;\nworker_processes 1;\npid " << (ng / "nginx.pid").string()
                                   << ";\nerror_log " << (ng / "error.log").string()
                                   << ";\nevents {}\nhttp {\n"
                                      "  log_format st '$request_uri $status $upstream_cache_status';\n"
                                      "  access_log "
                                   << (ng / "access.log").string() << " st;\n  client_body_temp_path "
                                   << (ng / "tmp").string() << ";\n  proxy_temp_path " << (ng / "tmp").string()
                                   << ";\n  proxy_cache_path " << (ng / "cache").string()
                                   << " keys_zone=blobs:4m;\n  server {\n    listen 127.0.0.1:" << port
                                   << ";\n    location = /ping { return 200 'ok'; }\n"
                                      "    location / {\n      proxy_pass http://"
                                   << reg.host()
                                   << ";\n      proxy_http_version 1.1;\n      proxy_set_header Range $http_range;\n"
                                      "      proxy_cache blobs;\n      proxy_cache_key $uri$http_range;\n"
                                      "      proxy_cache_valid 200 206 10m;\n    }\n  }\n}\n";
  const std::string ping = "http://127.0.0.1:" + std::to_string(port) + "/ping";
  auto start_nginx = [&] {
    auto p = std::make_unique<test::PeerProcess>(
        std::vector<std::string>{"nginx", "-p", ng.path().string(), "-c", (ng / "nginx.conf").string()},
        (ng / "nginx.out").string());
    EXPECT_TRUE(p->started() && test::wait_http(ping)) << "nginx did not come up: "
                                                        << [&] {
                                                             auto b = nydus::test::read_file(ng / "error.log");
                                                             return std::string(b.begin(), b.end());
                                                           }();
    return p;
  };
  // Blob requests nginx answered so far (it logs just after answering: wait
  // up to a second for `expect` lines to show).
  auto proxied = [&](int expect) {
    int n = 0;
    for (int i = 0; i < 100; i++) {
      std::ifstream in(ng / "access.log");
      n = 0;
      for (std::string line; std::getline(in, line);) n += line.find("/blobs/") != std::string::npos;
      if (n >= expect) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return n;
  };
  auto nginx = start_nginx();
  auto b = registry_backend(reg.host(), {{"proxy",
                                          {{"url", "http://127.0.0.1:" + std::to_string(port)},
                                           {"ping_url", ping},
                                           {"fallback", true},
                                           {"check_interval", 1}}}});
  auto* rb = dynamic_cast<RegistryBackend*>(b.get());
  ASSERT_NE(rb, nullptr);
  auto check_reads = [&](int n, uint64_t seed) {
    std::mt19937 rng(seed);
    for (int i = 0; i < n; i++) {
      const uint64_t off = rng() % data.size();
      const size_t len = 1 + rng() % std::min<uint64_t>(data.size() - off, 100000);
      auto got = read_range(*b, id, off, len);
      ASSERT_TRUE(got) << got.error().message;
      ASSERT_EQ(*got, data.substr(off, len));
    }
  };
  check_reads(10, 1);
  EXPECT_EQ(proxied(10), 10);  // every read went through the proxy
  check_reads(10, 1);        // the same ranges again: nginx answers from its cache
  EXPECT_EQ(proxied(20), 20);
  {
    std::ifstream in(ng / "access.log");
    int hits = 0;
    for (std::string line; std::getline(in, line);) hits += line.ends_with(" HIT");
    EXPECT_EQ(hits, 10);
  }
  EXPECT_TRUE(rb->proxy_healthy());

  nginx->kill_now();  // the proxy dies: reads fall back to the registry, none fails
  const auto t0 = std::chrono::steady_clock::now();
  check_reads(10, 2);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(5));
  EXPECT_FALSE(rb->proxy_healthy());
  EXPECT_EQ(proxied(21), 20);  // (waits the full second: nothing more may show)

  nginx = start_nginx();  // back: within about one check_interval reads return to it
  std::this_thread::sleep_for(std::chrono::milliseconds(2500));
  EXPECT_TRUE(rb->proxy_healthy());
  check_reads(5, 3);
  EXPECT_EQ(proxied(25), 25);
}

// A real image: create_image → push its blob → read every chunk through a
// BlobCache over the registry, and the whole layout, comparing with a cache
// over the local blob file.
TEST(RealRegistry, BlobCacheEndToEndOverARealImage) {
  REQUIRE_PROGRAM("docker-registry");
  Registry reg;
  ASSERT_TRUE(reg.start()) << "docker-registry did not come up";
  TempDir work;
  fs::create_directories(work / "src/sub");
  nydus::test::write_file(work / "src/big.bin", test::random_bytes(3 << 20, 1));
  nydus::test::write_file(work / "src/text.txt", test::text_bytes(900000, 2));
  nydus::test::write_file(work / "src/sub/small", std::string("hello remote storage\n"));
  nydus::test::write_file(work / "src/sub/dup.bin", test::random_bytes(3 << 20, 1));  // dedups
  builder::CreateOptions opts;
  opts.source = work / "src";
  opts.bootstrap = work / "bootstrap";
  opts.blob_dir = work / "blobs";
  fs::create_directories(opts.blob_dir);
  opts.chunk_size = 256 << 10;
  auto rep = builder::create_image(opts);
  ASSERT_TRUE(rep) << rep.error().message;
  ASSERT_EQ(rep->blobs.size(), 1u);
  const format::BlobInfo info = rep->blobs[0];
  auto blob_bytes = nydus::test::read_file(rep->blob_path);
  ASSERT_EQ(sha256_hex(blob_bytes), info.blob_id) << "blob id is the sha256 of the blob";
  ASSERT_TRUE(push_blob(reg.host(), as_string(blob_bytes)));

  auto remote = registry_backend(reg.host());
  auto local = *LocalFsBackend::create(LocalFsConfig{opts.blob_dir, {}, {}});
  CacheConfig rc{work / "cache-remote", false, 1 << 20}, lc{work / "cache-local", false, 1 << 20};
  auto rcache = BlobCache::open(info, remote, rc);
  ASSERT_TRUE(rcache) << rcache.error().message;
  auto lcache = BlobCache::open(info, local, lc);
  ASSERT_TRUE(lcache) << lcache.error().message;
  std::vector<format::ChunkRecord> chunks;
  for (uint32_t ci = 0; ci < (*rcache)->chunk_count(); ci++) chunks.push_back((*rcache)->chunk(ci));
  ASSERT_GT(chunks.size(), 10u);
  // Every chunk, in reverse so each is its own request at first.
  for (auto it = chunks.rbegin(); it != chunks.rend(); ++it) {
    std::vector<uint8_t> a(it->uncompressed_size), b(it->uncompressed_size);
    ASSERT_TRUE((*rcache)->read(it->uncompressed_offset, a)) << "chunk " << it->ci_index;
    ASSERT_TRUE((*lcache)->read(it->uncompressed_offset, b));
    ASSERT_TRUE(a == b) << "chunk " << it->ci_index << " differs";
  }
  std::vector<uint8_t> all_r(info.uncompressed_size), all_l(info.uncompressed_size);
  ASSERT_TRUE((*rcache)->read(0, all_r));
  ASSERT_TRUE((*lcache)->read(0, all_l));
  EXPECT_TRUE(all_r == all_l);
  // The big file's bytes are in there, in order.
  auto big = nydus::test::read_file(work / "src/big.bin");
  EXPECT_NE(std::search(all_r.begin(), all_r.end(), big.begin(), big.begin() + 4096), all_r.end());
  auto m = remote->metrics();
  EXPECT_GE(m.read_count, chunks.size());
  EXPECT_EQ(m.read_errors, 0u);
  EXPECT_EQ(m.retries, 0u);
}

// ---- s3rver ---------------------------------------------------------------

struct S3rver {
  TempDir dir;
  uint16_t port = test::free_port();
  std::unique_ptr<test::PeerProcess> proc;
  std::string host() const { return "127.0.0.1:" + std::to_string(port); }
  bool start() {
    fs::create_directories(dir / "data");
    proc = std::make_unique<test::PeerProcess>(
        std::vector<std::string>{"s3rver", "--directory", (dir / "data").string(), "--address", "127.0.0.1", "--port",
                                 std::to_string(port), "--silent", "--configure-bucket", "nydus-blobs"},
        (dir / "s3rver.log").string());
    return proc->started() && test::wait_http("http://" + host() + "/");
  }
};

json s3_config(const S3rver& s, json extra = json::object()) {
  json c = {{"endpoint", s.host()},          {"scheme", "http"},          {"bucket_name", "nydus-blobs"},
            {"region", "us-east-1"},         {"object_prefix", "blobs/"}, {"access_key_id", "S3RVER"},
            {"access_key_secret", "S3RVER"}, {"timeout", 10},             {"retry_limit", 1},
            {"retry_backoff_ms", 10}};
  for (auto& [k, v] : extra.items()) c[k] = v;
  return c;
}

TEST(RealS3, SignedUploadAndRangedReads) {
  REQUIRE_PROGRAM("s3rver");
  S3rver s3;
  ASSERT_TRUE(s3.start()) << "s3rver did not come up";
  auto cfg = parse_s3_config(s3_config(s3), false);
  ASSERT_TRUE(cfg);
  auto b = *S3Backend::create(*cfg);
  const Bytes data = test::random_bytes(2 << 20, 9);
  const std::string id = sha256_hex(data);
  // Upload with our own SigV4 (payload hash signed); s3rver checks it.
  auto put = b->object_request("PUT", "blobs/" + id, data);
  ASSERT_TRUE(put) << put.error().message;
  ASSERT_EQ(put->status, 200) << put->body;
  auto size = b->blob_size(id);
  ASSERT_TRUE(size) << size.error().message;
  EXPECT_EQ(*size, data.size());
  std::mt19937 rng(3);
  for (int i = 0; i < 30; i++) {
    uint64_t off = rng() % data.size();
    size_t len = 1 + rng() % std::min<uint64_t>(data.size() - off, 200000);
    auto got = read_range(*b, id, off, len);
    ASSERT_TRUE(got) << got.error().message;
    ASSERT_TRUE(*got == as_string(data).substr(off, len)) << off << "+" << len;
  }
  // Through make_backend, the whole object.
  auto viaj = make_backend(json{{"type", "s3"}, {"config", s3_config(s3)}});
  ASSERT_TRUE(viaj);
  auto whole = read_range(**viaj, id, 0, data.size());
  ASSERT_TRUE(whole) << whole.error().message;
  EXPECT_TRUE(*whole == as_string(data));
  // An unknown key id: 403 InvalidAccessKeyId, not retried → EIO. (s3rver
  // parses SigV4 Authorization headers and checks the key id but does not
  // recompute V4 signatures; the signature itself is checked against AWS's
  // published vector in remote_backend_test.)
  auto bad = make_backend(json{{"type", "s3"}, {"config", s3_config(s3, {{"access_key_id", "NOPE"}})}});
  ASSERT_TRUE(bad);
  auto denied = read_range(**bad, id, 0, 10);
  ASSERT_FALSE(denied);
  EXPECT_EQ(denied.error().to_errno(), EIO);
  EXPECT_NE(denied.error().message.find("403"), std::string::npos) << denied.error().message;
  EXPECT_EQ((*bad)->metrics().requests, 1u);
  // Missing object: kNotFound.
  auto missing = read_range(*b, std::string(64, 'e'), 0, 10);
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.error().code, Errc::kNotFound);
}

}  // namespace
}  // namespace nydus::storage
