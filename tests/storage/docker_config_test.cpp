// Credentials as `docker login` stores them, read the way docker/cli does:
// config.json "auths" (base64 user:pass, identitytoken, keys with a scheme
// and path), "credsStore" and per-host "credHelpers" running a real
// executable docker-credential-<name> from PATH with the server on stdin.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <cstdlib>
#include <fstream>

#include "common/test_util.h"
#include "storage/docker_config.h"

namespace nydus::storage {
namespace {

using nlohmann::json;
namespace fs = std::filesystem;

TEST(DockerConfig, AuthsEntry) {
  // "dXNlcjpwYTpzcw==" is base64("user:pa:ss"): the password may hold ':'.
  json cfg = json::parse(R"({"auths": {
      "reg.example.com:5000": {"auth": "dXNlcjpwYTpzcw=="},
      "https://index.docker.io/v1/": {"auth": "aHViOnNlY3JldA=="},
      "https://legacy.example.com/v1/": {"auth": "bGVnOmFjeQ=="},
      "token.example.com": {"auth": "MDAwMDAwMDAtMDAwMC0wMDAwLTAwMDAtMDAwMDAwMDAwMDAwOg==", "identitytoken": "refresh-123"},
      "bad.example.com": {"auth": "!!!"}}})");
  auto c = credentials_from_config(cfg, "reg.example.com:5000");
  ASSERT_TRUE(c && *c);
  EXPECT_EQ((*c)->username, "user");
  EXPECT_EQ((*c)->password, "pa:ss");
  // Docker Hub, under whichever name the API host goes by.
  for (const char* hub : {"docker.io", "registry-1.docker.io", "index.docker.io"}) {
    auto h = credentials_from_config(cfg, hub);
    ASSERT_TRUE(h && *h) << hub;
    EXPECT_EQ((*h)->username, "hub");
    EXPECT_EQ((*h)->password, "secret");
  }
  // A key with scheme and path matches by host (docker/cli's ConvertToHostname).
  auto l = credentials_from_config(cfg, "legacy.example.com");
  ASSERT_TRUE(l && *l);
  EXPECT_EQ((*l)->username, "leg");
  auto t = credentials_from_config(cfg, "token.example.com");
  ASSERT_TRUE(t && *t);
  EXPECT_EQ((*t)->identity_token, "refresh-123");
  EXPECT_EQ((*t)->username, "00000000-0000-0000-0000-000000000000");
  auto none = credentials_from_config(cfg, "other.example.com");
  ASSERT_TRUE(none);
  EXPECT_FALSE(*none);
  EXPECT_FALSE(credentials_from_config(cfg, "bad.example.com"));
}

TEST(DockerConfig, FileInDirAndMissingFile) {
  test::TempDir dir;
  auto absent = docker_credentials("reg.example.com", dir.path());
  ASSERT_TRUE(absent);
  EXPECT_FALSE(*absent);
  test::write_file(dir / "config.json", std::string(R"({"auths": {"reg.example.com": {"auth": "YTpi"}}})"));
  auto c = docker_credentials("reg.example.com", dir.path());
  ASSERT_TRUE(c && *c);
  EXPECT_EQ((*c)->username, "a");
  EXPECT_EQ((*c)->password, "b");
  test::write_file(dir / "config.json", std::string("[1,2"));
  EXPECT_FALSE(docker_credentials("reg.example.com", dir.path()));
}

// A fake docker-credential-test on PATH: records its argument and stdin,
// answers per server as docker-credential-helpers do.
class CredentialHelper : public ::testing::Test {
 protected:
  void SetUp() override {
    const fs::path script = dir_ / "docker-credential-test";
    std::ofstream(script) << "#!/bin/sh\n"
                          << "read server\n"
                          << "echo \"$1 $server\" >> '" << (dir_ / "calls").string() << "'\n"
                          << "case \"$server\" in\n"
                          << "  reg.example.com) echo '{\"ServerURL\":\"reg.example.com\",\"Username\":\"alice\",\"Secret\":\"s3cret\"}' ;;\n"
                          << "  https://index.docker.io/v1/) echo '{\"ServerURL\":\"x\",\"Username\":\"<token>\",\"Secret\":\"idtok\"}' ;;\n"
                          << "  broken.example.com) echo 'keychain exploded' >&2; exit 1 ;;\n"
                          << "  *) echo 'credentials not found in native keychain'; exit 1 ;;\n"
                          << "esac\n";
    ::chmod(script.c_str(), 0755);
    const char* old = std::getenv("PATH");
    old_path_ = old ? old : "";
    ::setenv("PATH", (dir_.path().string() + ":" + old_path_).c_str(), 1);
  }
  void TearDown() override { ::setenv("PATH", old_path_.c_str(), 1); }
  std::string calls() {
    std::ifstream in(dir_ / "calls");
    return std::string(std::istreambuf_iterator<char>(in), {});
  }
  test::TempDir dir_;
  std::string old_path_;
};

TEST_F(CredentialHelper, CredsStoreIsAskedWithTheHostOnStdin) {
  json cfg = json::parse(R"({"credsStore": "test", "auths": {"reg.example.com": {}}})");
  auto c = credentials_from_config(cfg, "reg.example.com");
  ASSERT_TRUE(c && *c) << (c ? "none" : c.error().message);
  EXPECT_EQ((*c)->username, "alice");
  EXPECT_EQ((*c)->password, "s3cret");
  EXPECT_EQ(calls(), "get reg.example.com\n");
}

TEST_F(CredentialHelper, TokenUsernameMeansIdentityToken) {
  json cfg = json::parse(R"({"credsStore": "test"})");
  auto c = credentials_from_config(cfg, "docker.io");
  ASSERT_TRUE(c && *c);
  EXPECT_EQ((*c)->identity_token, "idtok");
  EXPECT_EQ((*c)->username, "");
  EXPECT_EQ(calls(), "get https://index.docker.io/v1/\n");
}

TEST_F(CredentialHelper, NotFoundIsNoCredentialAndFailureIsAnError) {
  json cfg = json::parse(R"({"credsStore": "test"})");
  auto none = credentials_from_config(cfg, "unknown.example.com");
  ASSERT_TRUE(none) << none.error().message;
  EXPECT_FALSE(*none);
  auto err = credentials_from_config(cfg, "broken.example.com");
  ASSERT_FALSE(err);
  EXPECT_NE(err.error().message.find("keychain exploded"), std::string::npos) << err.error().message;
}

TEST_F(CredentialHelper, PerHostHelperWinsOverStoreAndAuths) {
  // credHelpers names the helper for this host; the store ("missing") and
  // the auths entry are not used for it.
  json cfg = json::parse(R"({"credsStore": "missing", "credHelpers": {"reg.example.com": "test"},
                             "auths": {"reg.example.com": {"auth": "YTpi"}}})");
  auto c = credentials_from_config(cfg, "reg.example.com");
  ASSERT_TRUE(c && *c);
  EXPECT_EQ((*c)->username, "alice");
  // Another host goes to credsStore, whose helper is not installed: an error naming it.
  auto other = credentials_from_config(cfg, "other.example.com");
  ASSERT_FALSE(other);
  EXPECT_NE(other.error().message.find("docker-credential-missing"), std::string::npos) << other.error().message;
}

TEST(DockerConfig, HelperNameCannotBeAPath) {
  json cfg = json::parse(R"({"credsStore": "../../bin/sh"})");
  EXPECT_FALSE(credentials_from_config(cfg, "reg.example.com"));
}

}  // namespace
}  // namespace nydus::storage
