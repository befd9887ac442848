// Registry credentials: the docker config as docker/cli reads it, the labels
// first, the daemon config's backend auth. Expected base64 values come from
// coreutils' base64, not from our encoder.
#include <gtest/gtest.h>

#include <unistd.h>

#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "snapshotter/daemon_manager.h"
#include "snapshotter/registry_auth.h"
#include "storage/docker_config.h"

using namespace nydus::snapshotter;
namespace fs = std::filesystem;

namespace {

struct TempDir {
  fs::path path;
  TempDir() {
    char tmpl[] = "/tmp/registry_auth_test.XXXXXX";
    path = ::mkdtemp(tmpl);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  fs::path write(const std::string& name, const std::string& text) const {
    std::ofstream(path / name, std::ios::binary) << text;
    return path / name;
  }
};

std::optional<PassKeyChain> found(std::string_view config, std::string_view host) {
  auto r = docker_config_credential(config, host);
  EXPECT_TRUE(r) << r.error().to_string();
  return r ? *r : std::nullopt;
}

}  // namespace

TEST(DockerConfig, AuthFieldIsBase64UserColonPassword) {
  // `echo -n user:pass | base64` = dXNlcjpwYXNz
  auto kc = found(R"({"auths": {"127.0.0.1:5000": {"auth": "dXNlcjpwYXNz"}}})", "127.0.0.1:5000");
  ASSERT_TRUE(kc);
  EXPECT_EQ(kc->username, "user");
  EXPECT_EQ(kc->password, "pass");
  EXPECT_EQ(kc->to_base64(), "dXNlcjpwYXNz");
  // Split at the first ':' (docker's decodeAuth): `echo -n al:ice:pw | base64`.
  kc = found(R"({"auths": {"h.io": {"auth": "YWw6aWNlOnB3"}}})", "h.io");
  ASSERT_TRUE(kc);
  EXPECT_EQ(kc->username, "al");
  EXPECT_EQ(kc->password, "ice:pw");
  // The auth field wins over username/password fields.
  kc = found(R"({"auths": {"h.io": {"auth": "dXNlcjpwYXNz", "username": "x", "password": "y"}}})", "h.io");
  ASSERT_TRUE(kc);
  EXPECT_EQ(kc->username, "user");
}

TEST(DockerConfig, UsernamePasswordFields) {
  auto kc = found(R"({"auths": {"reg.example.com": {"username": "bob", "password": "s3cret"}}})", "reg.example.com");
  ASSERT_TRUE(kc);
  EXPECT_EQ(kc->username, "bob");
  EXPECT_EQ(kc->password, "s3cret");
  // A partial entry is no credential (upstream's DockerProvider).
  EXPECT_FALSE(found(R"({"auths": {"reg.example.com": {"username": "bob"}}})", "reg.example.com"));
  EXPECT_FALSE(found(R"({"auths": {"reg.example.com": {}}})", "reg.example.com"));
  // Another host's entry is not ours.
  EXPECT_FALSE(found(R"({"auths": {"other.io": {"auth": "dXNlcjpwYXNz"}}})", "reg.example.com"));
  EXPECT_FALSE(found(R"({})", "reg.example.com"));
}

TEST(DockerConfig, HostAliases) {
  // Docker Hub's entry, whichever name the image reference gives it.
  const char* hub = R"({"auths": {"https://index.docker.io/v1/": {"auth": "dXNlcjpwYXNz"}}})";
  for (const char* host : {"docker.io", "index.docker.io", "registry-1.docker.io"}) {
    auto kc = found(hub, host);
    ASSERT_TRUE(kc) << host;
    EXPECT_EQ(kc->username, "user") << host;
  }
  EXPECT_FALSE(found(hub, "ghcr.io"));
  // A key with scheme and path matches its host (docker/cli ConvertToHostname).
  auto kc = found(R"({"auths": {"https://127.0.0.1:5000/v1/": {"auth": "dXNlcjpwYXNz"}}})", "127.0.0.1:5000");
  ASSERT_TRUE(kc);
  EXPECT_EQ(kc->password, "pass");
  kc = found(R"({"auths": {"http://reg.io": {"username": "a", "password": "b"}}})", "reg.io");
  ASSERT_TRUE(kc);
  // The exact key first.
  kc = found(R"({"auths": {"https://reg.io/v1/": {"username": "a", "password": "b"},
                           "reg.io": {"username": "c", "password": "d"}}})", "reg.io");
  ASSERT_TRUE(kc);
  EXPECT_EQ(kc->username, "c");
}

TEST(DockerConfig, MalformedIsACleanError) {
  for (const char* bad : {"", "{", "[1,2]", "null", "\"x\"", R"({"auths": [1]})", R"({"auths": {"h.io": "str"}})"}) {
    auto r = docker_config_credential(bad, "h.io");
    EXPECT_FALSE(r) << bad;
  }
  // Not base64 (bad chars, bad length, data after padding), no ':'.
  for (const char* a : {"!!!!", "dXNlcjpwYXN", "YW==YWJj", "bm9jb2xvbg=="}) {
    auto r = docker_config_credential(fmt::format(R"({{"auths": {{"h.io": {{"auth": "{}"}}}}}})", a), "h.io");
    ASSERT_FALSE(r) << a;
    EXPECT_NE(r.error().message.find("auths[\"h.io\"].auth"), std::string::npos) << r.error().message;
    EXPECT_EQ(r.error().message.find("dXNlcjpwYXN"), std::string::npos) << "the secret is not in the error";
  }
  // A credential helper that is not installed is an error naming it, not no credential.
  auto missing = docker_config_credential(R"({"credsStore": "nydus-test-absent"})", "h.io");
  ASSERT_FALSE(missing);
  EXPECT_NE(missing.error().message.find("docker-credential-nydus-test-absent"), std::string::npos);
  EXPECT_FALSE(docker_config_credential(R"({"credHelpers": {"h.io": "nydus-test-absent"}})", "h.io"));
  // Another host's helper is not run.
  EXPECT_TRUE(docker_config_credential(R"({"credHelpers": {"other.io": "nydus-test-absent"}})", "h.io"));
}

TEST(DockerConfig, FileAbsentHugeOrGood) {
  TempDir t;
  auto none = docker_config_file_credential(t.path / "absent.json", "h.io");
  ASSERT_TRUE(none);
  EXPECT_FALSE(*none);
  std::string huge = R"({"auths": {"h.io": {"auth": "dXNlcjpwYXNz"}}, "pad": ")";
  huge += std::string(nydus::storage::kMaxDockerConfigSize, 'x') + "\"}";
  auto r = docker_config_file_credential(t.write("huge.json", huge), "h.io");
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message.find("over"), std::string::npos) << r.error().message;
  auto ok = docker_config_file_credential(t.write("config.json", R"({"auths": {"h.io": {"auth": "dXNlcjpwYXNz"}}})"), "h.io");
  ASSERT_TRUE(ok && *ok);
  EXPECT_EQ((*ok)->username, "user");
  auto garbage = docker_config_file_credential(t.write("garbage.json", std::string("\xff\x00{", 3)), "h.io");
  EXPECT_FALSE(garbage);
}

TEST(Keychain, LabelsBeforeDockerConfig) {
  TempDir t;
  Keychain k(t.write("config.json", R"({"auths": {"127.0.0.1:5000": {"username": "docker", "password": "dpw"}}})"));
  const std::string ref = "127.0.0.1:5000/ns/img:v1";
  std::map<std::string, std::string> labels{{"containerd.io/snapshot/pullusername", "labeluser"},
                                            {"containerd.io/snapshot/pullsecret", "lpw"}};
  auto kc = k.lookup(ref, labels);
  ASSERT_TRUE(kc);
  EXPECT_EQ(kc->username, "labeluser");
  EXPECT_EQ(kc->password, "lpw");
  // Renewal reads the docker config only.
  kc = k.renewable(ref);
  ASSERT_TRUE(kc);
  EXPECT_EQ(kc->username, "docker");
  // Half the labels: the docker config.
  labels.erase("containerd.io/snapshot/pullsecret");
  kc = k.lookup(ref, labels);
  ASSERT_TRUE(kc);
  EXPECT_EQ(kc->username, "docker");
  // Another registry: nothing.
  EXPECT_FALSE(k.lookup("other.io/a:b", {}));
  // A broken docker config: labels still work, else nothing (and no crash).
  Keychain broken(t.write("broken.json", "{not json"));
  EXPECT_FALSE(broken.lookup(ref, {}));
  EXPECT_TRUE(broken.lookup(ref, {{"containerd.io/snapshot/pullusername", "u"},
                                  {"containerd.io/snapshot/pullsecret", "p"}}));
}

TEST(DaemonConfigAuth, BackendAuthAndTokenAsUpstreamFillAuth) {
  auto cfg = make_daemon_config(default_fusedev_template(), "127.0.0.1:5000/ns/img:v1", "/r/cache");
  ASSERT_TRUE(cfg);
  auto with = config_with_auth(*cfg, PassKeyChain{"user", "pass"});
  ASSERT_TRUE(with);
  auto j = nlohmann::json::parse(*with);
  EXPECT_EQ(j["device"]["backend"]["config"]["auth"], "dXNlcjpwYXNz");
  EXPECT_EQ(j["device"]["backend"]["config"]["host"], "127.0.0.1:5000");
  auto reg = config_registry(*with);
  ASSERT_TRUE(reg);
  EXPECT_EQ(reg->host, "127.0.0.1:5000");
  EXPECT_EQ(reg->repo, "ns/img");
  ASSERT_TRUE(reg->auth);
  EXPECT_EQ(*reg->auth, (PassKeyChain{"user", "pass"}));
  // Bearer-only: registry_token, no auth.
  auto tok = config_with_auth(*with, PassKeyChain{"", "tkn"});
  ASSERT_TRUE(tok);
  j = nlohmann::json::parse(*tok);
  EXPECT_EQ(j["device"]["backend"]["config"]["registry_token"], "tkn");
  EXPECT_FALSE(j["device"]["backend"]["config"].contains("auth"));
  EXPECT_EQ(*config_registry(*tok)->auth, (PassKeyChain{"", "tkn"}));
  // Not a registry backend: unchanged.
  auto local = config_with_auth(R"({"device": {"backend": {"type": "localfs", "config": {}}}})", PassKeyChain{"u", "p"});
  ASSERT_TRUE(local);
  EXPECT_FALSE(nlohmann::json::parse(*local)["device"]["backend"]["config"].contains("auth"));
  EXPECT_EQ(PassKeyChain{}.to_base64(), "");
  EXPECT_EQ((PassKeyChain{"a", "b"}).to_base64(), "YTpi");
  EXPECT_EQ((PassKeyChain{"ab", ""}).to_base64(), "YWI6");
}

TEST(DaemonConfigAuth, FscacheEntryCarriesThemToo) {
  // What the fscache driver keeps as an image's config file: the blob entry made from the daemon config.
  auto cfg = make_daemon_config(default_fusedev_template(), "127.0.0.1:5000/ns/img:v1", "/r/cache");
  ASSERT_TRUE(cfg);
  auto entry = make_fscache_entry(*cfg, "fsid1", "/boot", "/r/cache");
  ASSERT_TRUE(entry) << entry.error().message;
  auto reg = config_registry(*entry);
  ASSERT_TRUE(reg) << *entry;
  EXPECT_EQ(reg->host, "127.0.0.1:5000");
  EXPECT_EQ(reg->repo, "ns/img");
  EXPECT_FALSE(reg->auth);
  auto with = config_with_auth(*entry, PassKeyChain{"user", "pass"});
  ASSERT_TRUE(with);
  auto j = nlohmann::json::parse(*with);
  EXPECT_EQ(j["config"]["backend_config"]["auth"], "dXNlcjpwYXNz");
  EXPECT_EQ(j["id"], "fsid1");
  EXPECT_EQ(*config_registry(*with)->auth, (PassKeyChain{"user", "pass"}));
  // A localfs entry: unchanged, no registry.
  const std::string local = R"({"type": "bootstrap", "id": "x", "config": {"backend_type": "localfs", "backend_config": {}}})";
  EXPECT_FALSE(config_registry(local));
  EXPECT_FALSE(nlohmann::json::parse(*config_with_auth(local, PassKeyChain{"u", "p"}))["config"]["backend_config"].contains("auth"));
  EXPECT_FALSE(config_with_auth(R"({"type": "bootstrap"})", PassKeyChain{"u", "p"}));
}

TEST(GoDuration, ConfigForms) {
  using std::chrono::milliseconds;
  EXPECT_EQ(*parse_go_duration("0"), milliseconds(0));
  EXPECT_EQ(*parse_go_duration("0s"), milliseconds(0));
  EXPECT_EQ(*parse_go_duration("2s"), milliseconds(2000));
  EXPECT_EQ(*parse_go_duration("30m"), milliseconds(1'800'000));
  EXPECT_EQ(*parse_go_duration("1h30m"), milliseconds(5'400'000));
  EXPECT_EQ(*parse_go_duration("500ms"), milliseconds(500));
  EXPECT_EQ(*parse_go_duration("1.5s"), milliseconds(1500));
  for (const char* bad : {"", "s", "5", "5x", "-1s", "1h 2m"}) EXPECT_FALSE(parse_go_duration(bad)) << bad;
}
