// The registry store against a fake registry: the https -> http fallback
// (upstream's converter retries over plain HTTP when https gets an HTTP
// answer), --plain-http, and credentials from a Docker config (Basic, and
// an identity token exchanged as an OAuth2 refresh token).
#include <gtest/gtest.h>

#include "../storage/fake_http_server.h"
#include "common/test_util.h"
#include "convert/image_store.h"

namespace nydus::convert {
namespace {

using storage::test::FakeHttpServer;
using storage::test::FakeRequest;
using storage::test::FakeResponse;

const std::string kManifest =
    R"({"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:)" +
    std::string(64, 'c') + R"(","size":2},"layers":[]})";

FakeResponse manifest_response() {
  FakeResponse r;
  r.headers.emplace_back("Content-Type", "application/vnd.oci.image.manifest.v1+json");
  r.body = kManifest;
  return r;
}

Result<FetchedManifest> fetch(const FakeHttpServer& s, StoreOptions o) {
  auto ref = parse_image_ref(s.host() + "/lib/app:v1");
  if (!ref) return std::unexpected(ref.error());
  auto store = open_store(*ref, o);
  if (!store) return std::unexpected(store.error());
  return (*store)->get_manifest("v1");
}

TEST(RegistryStore, HttpsFallsBackToPlainHttp) {
  FakeHttpServer s([](const FakeRequest& r) {
    if (r.target == "/v2/lib/app/manifests/v1") return manifest_response();
    FakeResponse nf;
    nf.status = 404;
    return nf;
  });
  StoreOptions o;
  o.use_docker_config = false;
  o.skip_verify = true;  // --target-insecure
  auto m = fetch(s, o);
  ASSERT_TRUE(m) << m.error().message;
  EXPECT_EQ(m->bytes, kManifest);
  EXPECT_EQ(s.tls_hellos(), 1);  // https was tried first, once
  // Without the fallback the same registry is an error (https only).
  o.http_fallback = false;
  EXPECT_FALSE(fetch(s, o));
  // --plain-http: no https attempt at all.
  o.plain_http = true;
  const int hellos = s.tls_hellos();
  ASSERT_TRUE(fetch(s, o));
  EXPECT_EQ(s.tls_hellos(), hellos);
}

TEST(RegistryStore, BasicAuthFromDockerConfig) {
  test::TempDir cfg;
  FakeHttpServer s([](const FakeRequest& r) {
    // "alice:pw" -> YWxpY2U6cHc=
    if (r.header("authorization") != "Basic YWxpY2U6cHc=") {
      FakeResponse u;
      u.status = 401;
      u.headers.emplace_back("WWW-Authenticate", "Basic realm=\"test\"");
      return u;
    }
    return manifest_response();
  });
  test::write_file(cfg / "config.json",
                   R"({"auths": {")" + s.host() + R"(": {"auth": "YWxpY2U6cHc="}}})");
  StoreOptions o;
  o.plain_http = true;
  o.docker_config_dir = cfg.path();
  auto m = fetch(s, o);
  ASSERT_TRUE(m) << m.error().message;
  // No config entry: anonymous, and the error says how to log in.
  StoreOptions anon = o;
  anon.docker_config_dir = cfg / "nowhere";
  auto e = fetch(s, anon);
  ASSERT_FALSE(e);
  EXPECT_NE(e.error().message.find("docker login"), std::string::npos) << e.error().message;
  // An explicit --*-auth wins over the config.
  StoreOptions explicit_auth = o;
  explicit_auth.auth = "Ym9iOng=";  // bob:x
  EXPECT_FALSE(fetch(s, explicit_auth));
}

TEST(RegistryStore, IdentityTokenIsARefreshToken) {
  test::TempDir cfg;
  std::string realm;
  FakeHttpServer s([&](const FakeRequest& r) {
    if (r.target.starts_with("/token")) {
      FakeResponse t;
      const bool good = r.method == "POST" && r.body.find("grant_type=refresh_token") != std::string::npos &&
                        r.body.find("refresh_token=idtok%2B1") != std::string::npos &&
                        r.body.find("scope=repository%3Alib%2Fapp%3Apull") != std::string::npos;
      t.status = good ? 200 : 401;
      t.body = good ? R"({"access_token":"acc"})" : "";
      return t;
    }
    if (r.header("authorization") != "Bearer acc") {
      FakeResponse u;
      u.status = 401;
      u.headers.emplace_back("WWW-Authenticate", "Bearer realm=\"" + realm + "\",service=\"reg\"");
      return u;
    }
    return manifest_response();
  });
  realm = s.base() + "/token";
  test::write_file(cfg / "config.json", R"({"auths": {")" + s.host() + R"(": {"identitytoken": "idtok+1"}}})");
  StoreOptions o;
  o.plain_http = true;
  o.docker_config_dir = cfg.path();
  auto m = fetch(s, o);
  ASSERT_TRUE(m) << m.error().message;
}

}  // namespace
}  // namespace nydus::convert
