// Kubelet credential provider plugins (snapshotter/kubelet_credentials.h):
// the config the kubelet reads (YAML and JSON, validated as upstream), the
// kubelet's registry globs, and real plugin executables (sh scripts) that
// record the request they were handed and answer as the API says.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <fstream>

#include <nlohmann/json.hpp>

#include "common/test_util.h"
#include "snapshotter/image_reference.h"
#include "snapshotter/kubelet_credentials.h"
#include "snapshotter/registry_auth.h"

namespace nydus::snapshotter {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using namespace std::chrono_literals;

constexpr const char* kYaml = R"(apiVersion: kubelet.config.k8s.io/v1
kind: CredentialProviderConfig
providers:
  - name: ecr-credential-provider
    matchImages:
      - "*.dkr.ecr.*.amazonaws.com"
      - "127.0.0.1:5000"
    defaultCacheDuration: "12h"
    apiVersion: credentialprovider.kubelet.k8s.io/v1
    args:
      - get-credentials
    env:
      - name: AWS_PROFILE
        value: temp
)";

TEST(KubeletConfig, YamlAsTheKubeletReadsIt) {
  auto p = parse_credential_provider_config(kYaml);
  ASSERT_TRUE(p) << p.error().message;
  ASSERT_EQ(p->size(), 1u);
  const KubeletPlugin& k = (*p)[0];
  EXPECT_EQ(k.name, "ecr-credential-provider");
  EXPECT_EQ(k.match_images, (std::vector<std::string>{"*.dkr.ecr.*.amazonaws.com", "127.0.0.1:5000"}));
  EXPECT_EQ(k.default_cache_duration, 12h);
  EXPECT_EQ(k.args, std::vector<std::string>{"get-credentials"});
  EXPECT_EQ(k.env, std::vector<std::string>{"AWS_PROFILE=temp"});
}

TEST(KubeletConfig, JsonToo) {
  auto p = parse_credential_provider_config(R"({"providers": [{"name": "a", "matchImages": ["r.io"],
      "defaultCacheDuration": "0s", "apiVersion": "credentialprovider.kubelet.k8s.io/v1"}]})");
  ASSERT_TRUE(p) << p.error().message;
  EXPECT_EQ((*p)[0].default_cache_duration, 0ms);
}

TEST(KubeletConfig, InvalidConfigsAreRefusedWithTheReason) {
  const std::string ok_tail = R"(, "matchImages": ["r.io"], "defaultCacheDuration": "1m",
      "apiVersion": "credentialprovider.kubelet.k8s.io/v1")";
  auto one = [&](const std::string& provider) { return R"({"providers": [)" + provider + "]}"; };
  const std::vector<std::pair<std::string, std::string>> bad = {
      {"", "mapping"},
      {"{\"providers\": []}", "at least one provider"},
      {"providers: [", "credential provider config"},
      {one(R"({"name": ""})" ), "name is required"},
      {one(R"({"name": "../x")" + ok_tail + "}"), "invalid provider name"},
      {one(R"({"name": "a b")" + ok_tail + "}"), "invalid provider name"},
      {one(R"({"name": "a", "matchImages": ["r.io"], "defaultCacheDuration": "1m"})"), "apiVersion is required"},
      {one(R"({"name": "a", "matchImages": ["r.io"], "defaultCacheDuration": "1m",
               "apiVersion": "credentialprovider.kubelet.k8s.io/v1beta1"})"), "only credentialprovider"},
      {one(R"({"name": "a", "matchImages": [], "defaultCacheDuration": "1m",
               "apiVersion": "credentialprovider.kubelet.k8s.io/v1"})"), "at least one matchImage"},
      {one(R"({"name": "a", "matchImages": [""], "defaultCacheDuration": "1m",
               "apiVersion": "credentialprovider.kubelet.k8s.io/v1"})"), "empty matchImage"},
      {one(R"({"name": "a", "matchImages": ["r.io"], "apiVersion": "credentialprovider.kubelet.k8s.io/v1"})"),
       "defaultCacheDuration is required"},
      {one(R"({"name": "a", "matchImages": ["r.io"], "defaultCacheDuration": "-1m",
               "apiVersion": "credentialprovider.kubelet.k8s.io/v1"})"), "defaultCacheDuration"},
      {one(R"({"name": "a", "env": [{"name": "X"}, {"name": "X"}])" + ok_tail + "}"), "duplicate environment"},
      {one(R"({"name": "a", "env": [{"value": "v"}])" + ok_tail + "}"), "environment variable name"},
      {R"({"providers": [{"name": "a")" + ok_tail + R"(}, {"name": "a")" + ok_tail + "}]}", "duplicate provider name"},
  };
  for (const auto& [text, why] : bad) {
    auto p = parse_credential_provider_config(text);
    ASSERT_FALSE(p) << text;
    EXPECT_NE(p.error().message.find(why), std::string::npos) << text << " -> " << p.error().message;
  }
}

TEST(KubeletGlob, TheKubeletsUrlsMatch) {
  EXPECT_TRUE(registry_glob_matches("*.docker.io", "blah.docker.io/library/nginx:latest"));
  EXPECT_FALSE(registry_glob_matches("*.docker.io", "not.right.io/x:1"));
  EXPECT_FALSE(registry_glob_matches("*.docker.io", "docker.io/x:1"));  // a part per part
  EXPECT_TRUE(registry_glob_matches("*.dkr.ecr.*.amazonaws.com", "123.dkr.ecr.us-east-1.amazonaws.com/app:v1"));
  EXPECT_TRUE(registry_glob_matches("127.0.0.1:5000", "127.0.0.1:5000/a/b:v1"));
  EXPECT_FALSE(registry_glob_matches("127.0.0.1:5000", "127.0.0.1:5001/a/b:v1"));  // the port must equal
  EXPECT_FALSE(registry_glob_matches("127.0.0.1", "127.0.0.1:5000/a/b:v1"));
  EXPECT_TRUE(registry_glob_matches("gcr.io/etcd-development", "gcr.io/etcd-development/etcd:v3"));
  EXPECT_FALSE(registry_glob_matches("gcr.io/etcd-development", "gcr.io/other/etcd:v3"));  // a path prefix
  EXPECT_TRUE(registry_glob_matches("reg?.io", "reg1.io/a:1"));
  EXPECT_FALSE(registry_glob_matches("[", "[/a:1"));  // a bad pattern matches nothing
}

TEST(KubeletImage, NormalisedAsTheKubeletHandsIt) {
  EXPECT_EQ(*normalized_image("nginx"), "docker.io/library/nginx:latest");
  EXPECT_EQ(*normalized_image("127.0.0.1:5000/a/b:v1"), "127.0.0.1:5000/a/b:v1");
  EXPECT_EQ(*normalized_image("127.0.0.1:5000/a/b"), "127.0.0.1:5000/a/b:latest");
  EXPECT_EQ(*normalized_image("r.io/a@sha256:abc"), "r.io/a@sha256:abc");
  EXPECT_FALSE(normalized_image(""));
}

TEST(KubeletResponse, ParsedOrRefused) {
  auto r = parse_credential_provider_response(
      R"({"kind": "CredentialProviderResponse", "apiVersion": "credentialprovider.kubelet.k8s.io/v1",
          "cacheKeyType": "Registry", "cacheDuration": "6h",
          "auth": {"r.io": {"username": "u", "password": "p"}}})",
      kCredentialProviderApiV1);
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->cache_key_type, "Registry");
  EXPECT_EQ(r->cache_duration, std::optional<std::chrono::milliseconds>(6h));
  EXPECT_EQ(r->auth.at("r.io"), (PassKeyChain{"u", "p"}));
  auto none = parse_credential_provider_response(R"({"apiVersion": "credentialprovider.kubelet.k8s.io/v1", "auth": null})",
                                                 kCredentialProviderApiV1);
  ASSERT_TRUE(none);
  EXPECT_TRUE(none->auth.empty());
  EXPECT_FALSE(none->cache_duration);
  for (const char* bad : {"", "[]", R"({"apiVersion": "v0"})", R"({"apiVersion": "credentialprovider.kubelet.k8s.io/v1",
                           "cacheDuration": "soon"})", R"({"apiVersion": "credentialprovider.kubelet.k8s.io/v1", "auth": []})",
                          R"({"apiVersion": "credentialprovider.kubelet.k8s.io/v1", "auth": {"r.io": "u:p"}})"})
    EXPECT_FALSE(parse_credential_provider_response(bad, kCredentialProviderApiV1)) << bad;
}

// Plugins in a bin dir: each logs "<args> <env FOO>" and its stdin to <dir>/<name>.log,
// then prints <dir>/<name>.answer (or fails when the file says "fail").
class KubeletPlugins : public ::testing::Test {
 protected:
  void plugin(const std::string& name) {
    const fs::path script = dir_ / name;
    std::ofstream(script) << "#!/bin/sh\n"
                          << "log=" << (dir_ / (name + ".log")).string() << "\n"
                          << "echo \"args: $* env: $FOO\" >> \"$log\"\n"
                          << "cat >> \"$log\"; echo >> \"$log\"\n"
                          << "ans=" << (dir_ / (name + ".answer")).string() << "\n"
                          << "if [ \"$(cat \"$ans\")\" = fail ]; then echo 'plugin broke' >&2; exit 1; fi\n"
                          << "cat \"$ans\"\n";
    ::chmod(script.c_str(), 0755);
  }
  void answer(const std::string& name, const std::string& key_type, const std::string& duration,
              const json& auth) {
    json a{{"kind", "CredentialProviderResponse"}, {"apiVersion", kCredentialProviderApiV1},
           {"cacheKeyType", key_type}, {"auth", auth}};
    if (!duration.empty()) a["cacheDuration"] = duration;
    std::ofstream(dir_ / (name + ".answer")) << a.dump();
  }
  std::vector<std::string> log(const std::string& name) {
    std::ifstream in(dir_ / (name + ".log"));
    std::vector<std::string> lines;
    for (std::string l; std::getline(in, l);) lines.push_back(l);
    return lines;
  }
  KubeletPlugin spec(const std::string& name, std::vector<std::string> match, std::chrono::milliseconds ttl = 1h) {
    return KubeletPlugin{name, std::move(match), ttl, std::string(kCredentialProviderApiV1), {"get-credentials"}, {"FOO=bar"}};
  }
  test::TempDir dir_;
};

TEST_F(KubeletPlugins, RequestOnStdinArgsEnvAndTheAnswerUsed) {
  plugin("p1");
  answer("p1", "Registry", "", {{"127.0.0.1:5000", {{"username", "kube"}, {"password", "pw"}}}});
  KubeletCredentials k({spec("p1", {"127.0.0.1:5000"})}, dir_.path());
  auto kc = k.lookup("127.0.0.1:5000/ns/app:v1");
  ASSERT_TRUE(kc);
  EXPECT_EQ(*kc, (PassKeyChain{"kube", "pw"}));
  const auto lines = log("p1");
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_EQ(lines[0], "args: get-credentials env: bar");
  const json req = json::parse(lines[1]);
  EXPECT_EQ(req["kind"], "CredentialProviderRequest");
  EXPECT_EQ(req["apiVersion"], kCredentialProviderApiV1);
  EXPECT_EQ(req["image"], "127.0.0.1:5000/ns/app:v1");
  // Another image of the same registry: the Registry-keyed answer is cached (1 h default).
  EXPECT_TRUE(k.lookup("127.0.0.1:5000/other:v2"));
  EXPECT_EQ(k.plugin_runs(), 1);
  // An image the plugin does not match: not run, no credential.
  EXPECT_FALSE(k.lookup("other.io/a:v1"));
  EXPECT_EQ(k.plugin_runs(), 1);
  // A renewal that needs the credential for longer than the cache holds it runs the plugin again.
  EXPECT_TRUE(k.lookup("127.0.0.1:5000/ns/app:v1", 2h));
  EXPECT_EQ(k.plugin_runs(), 2);
}

TEST_F(KubeletPlugins, CacheKeyTypesAndDurations) {
  plugin("img");
  answer("img", "Image", "0s", {{"r.io", {{"username", "a"}, {"password", "b"}}}});
  KubeletCredentials k({spec("img", {"r.io"})}, dir_.path());
  EXPECT_TRUE(k.lookup("r.io/x:1"));
  EXPECT_TRUE(k.lookup("r.io/x:1"));  // cacheDuration 0s: never cached
  EXPECT_EQ(k.plugin_runs(), 2);
  answer("img", "Image", "1h", {{"r.io", {{"username", "a"}, {"password", "b"}}}});
  EXPECT_TRUE(k.lookup("r.io/x:1"));
  EXPECT_TRUE(k.lookup("r.io/x:1"));
  EXPECT_EQ(k.plugin_runs(), 3);
  EXPECT_TRUE(k.lookup("r.io/y:1"));  // Image key: another image runs it again
  EXPECT_EQ(k.plugin_runs(), 4);
  answer("img", "Bogus", "1h", {{"r.io", {{"username", "a"}, {"password", "b"}}}});
  EXPECT_FALSE(k.lookup("r.io/z:1"));  // an invalid cacheKeyType: the answer is not used
}

TEST_F(KubeletPlugins, MostSpecificKeyAndFirstPluginWin) {
  plugin("first");
  plugin("second");
  answer("first", "Global", "", {{"gcr.io", {{"username", "first-gcr"}, {"password", "p"}}}});
  answer("second", "Global", "",
         {{"gcr.io", {{"username", "second-gcr"}, {"password", "p"}}},
          {"gcr.io/etcd-development", {{"username", "second-etcd"}, {"password", "p"}}}});
  KubeletCredentials k({spec("first", {"gcr.io"}), spec("second", {"*.io"})}, dir_.path());
  EXPECT_EQ(k.lookup("gcr.io/etcd-development/etcd:v3")->username, "second-etcd");
  EXPECT_EQ(k.lookup("gcr.io/other/x:1")->username, "first-gcr");
}

TEST_F(KubeletPlugins, AFailingOrSilentPluginIsNoCredential) {
  plugin("broken");
  plugin("good");
  std::ofstream(dir_ / "broken.answer") << "fail";
  answer("good", "Registry", "", {{"r.io", {{"username", "g"}, {"password", "p"}}}});
  KubeletCredentials k({spec("broken", {"r.io"}), spec("good", {"r.io"})}, dir_.path());
  EXPECT_EQ(k.lookup("r.io/a:1")->username, "g");  // the next plugin still answers
  answer("good", "Registry", "", nullptr);
  KubeletCredentials silent({spec("good", {"r.io"})}, dir_.path());
  EXPECT_FALSE(silent.lookup("r.io/a:1"));
  KubeletCredentials missing({spec("absent", {"r.io"})}, dir_.path());
  EXPECT_FALSE(missing.lookup("r.io/a:1"));
}

TEST_F(KubeletPlugins, KeychainAsksThePluginsAfterTheDockerConfig) {
  plugin("p");
  answer("p", "Registry", "", {{"r.io", {{"username", "kube"}, {"password", "pw"}}}});
  auto kubelet = std::make_shared<KubeletCredentials>(std::vector{spec("p", {"r.io"})}, dir_.path());
  const fs::path cfg = dir_ / "config.json";
  Keychain keys(cfg, kubelet);
  EXPECT_EQ(keys.renewable("r.io/a:1")->username, "kube");  // no docker config: the plugin
  std::ofstream(cfg) << R"({"auths": {"r.io": {"username": "docker", "password": "d"}}})";
  EXPECT_EQ(keys.renewable("r.io/a:1")->username, "docker");
  EXPECT_EQ(keys.lookup("r.io/a:1", {{"containerd.io/snapshot/pullusername", "l"},
                                     {"containerd.io/snapshot/pullsecret", "s"}})->username, "l");
}

TEST_F(KubeletPlugins, LoadReadsTheFileAndNeedsABinDir) {
  std::ofstream(dir_ / "cfg.yaml") << kYaml;
  auto k = KubeletCredentials::load(dir_ / "cfg.yaml", dir_.path());
  ASSERT_TRUE(k) << k.error().message;
  EXPECT_FALSE(KubeletCredentials::load(dir_ / "cfg.yaml", ""));
  EXPECT_FALSE(KubeletCredentials::load(dir_ / "absent.yaml", dir_.path()));
  std::ofstream(dir_ / "bad.yaml") << "providers: 3";
  auto bad = KubeletCredentials::load(dir_ / "bad.yaml", dir_.path());
  ASSERT_FALSE(bad);
  EXPECT_NE(bad.error().message.find("bad.yaml"), std::string::npos);
}

}  // namespace
}  // namespace nydus::snapshotter
