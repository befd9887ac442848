// The CRI keychain's store (snapshotter/cri_credentials.h): stargz-snapshotter's
// ParseAuth rules on a CRI AuthConfig, and references normalised as Docker does.
#include <gtest/gtest.h>

#include "common/base64.h"
#include "snapshotter/cri_credentials.h"

namespace nydus::snapshotter {
namespace {

CriAuthConfig cfg(std::string user = "", std::string pass = "", std::string auth = "", std::string server = "",
                  std::string id_token = "") {
  return CriAuthConfig{std::move(user), std::move(pass), std::move(auth), std::move(server), std::move(id_token), ""};
}

TEST(CriAuth, ParseAuthRules) {
  auto kc = [](const CriAuthConfig& a, std::string_view host) {
    auto r = cri_auth_credential(a, host);
    EXPECT_TRUE(r) << r.error().message;
    return r ? *r : std::nullopt;
  };
  EXPECT_EQ(kc(cfg("u", "p"), "r.io"), (PassKeyChain{"u", "p"}));
  // Username/password first, then the identity token (as a token), then auth.
  EXPECT_EQ(kc(cfg("u", "p", base64_encode("a:b"), "", "tok"), "r.io"), (PassKeyChain{"u", "p"}));
  EXPECT_EQ(kc(cfg("", "", base64_encode("a:b"), "", "tok"), "r.io"), (PassKeyChain{"", "tok"}));
  EXPECT_EQ(kc(cfg("", "", base64_encode("a:b:c")), "r.io"), (PassKeyChain{"a", "b:c"}));
  EXPECT_EQ(kc(cfg(), "r.io"), std::nullopt);  // anonymous
  // A server address naming another host: not for this one (with or without a scheme).
  EXPECT_EQ(kc(cfg("u", "p", "", "https://other.io/v1/"), "r.io"), std::nullopt);
  EXPECT_EQ(kc(cfg("u", "p", "", "other.io"), "r.io"), std::nullopt);
  EXPECT_EQ(kc(cfg("u", "p", "", "r.io:5000"), "r.io:5000"), (PassKeyChain{"u", "p"}));
  // Docker Hub's credentials are for index.docker.io, whichever name the image uses.
  EXPECT_EQ(kc(cfg("u", "p", "", "https://index.docker.io/v1/"), "docker.io"), (PassKeyChain{"u", "p"}));
  EXPECT_EQ(kc(cfg("u", "p", "", "https://index.docker.io/v1/"), "registry-1.docker.io"), (PassKeyChain{"u", "p"}));
  // A bad auth is an error that does not quote it.
  auto bad = cri_auth_credential(cfg("", "", "!!!!"), "r.io");
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.error().message.find("!!!!"), std::string::npos);
  EXPECT_FALSE(cri_auth_credential(cfg("", "", base64_encode("nocolon")), "r.io"));
}

TEST(CriCredentials, KeptByNormalisedReferenceAndForgotten) {
  CriCredentials c;
  c.remember("nginx", cfg("u", "p"));  // the kubelet's short name
  EXPECT_EQ(c.lookup("docker.io/library/nginx:latest"), (PassKeyChain{"u", "p"}));
  EXPECT_FALSE(c.lookup("docker.io/library/nginx:1.25"));  // another tag: another pull
  c.remember("127.0.0.1:5000/a/b:v1", cfg("", "", base64_encode("x:y")));
  EXPECT_EQ(c.lookup("127.0.0.1:5000/a/b:v1"), (PassKeyChain{"x", "y"}));
  EXPECT_EQ(c.size(), 2u);
  c.forget("docker.io/library/nginx");
  EXPECT_FALSE(c.lookup("nginx"));
  c.remember("", cfg("u", "p"));  // not a reference: ignored
  EXPECT_EQ(c.size(), 1u);
}

TEST(CriCredentials, Bounded) {
  CriCredentials c;
  for (int i = 0; i < 5000; ++i) c.remember("r.io/img" + std::to_string(i) + ":v1", cfg("u", "p"));
  EXPECT_LE(c.size(), 4096u);
  EXPECT_TRUE(c.lookup("r.io/img4999:v1"));
}

}  // namespace
}  // namespace nydus::snapshotter
