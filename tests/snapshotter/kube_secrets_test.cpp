// Kubernetes image pull secrets (snapshotter/kube_secrets.h): the kubeconfig
// as client-go reads it, and the list + watch protocol of the API server
// (SecretList pages, newline-delimited watch events, 410 Gone) spoken by a
// scripted HTTP server. The answers are written here from the Kubernetes API
// reference, not produced by our code.
#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>

#include <nlohmann/json.hpp>

#include "../storage/fake_http_server.h"
#include "common/base64.h"
#include "common/test_util.h"
#include "snapshotter/kube_secrets.h"
#include "snapshotter/registry_auth.h"

namespace nydus::snapshotter {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using storage::test::FakeHttpServer;
using storage::test::FakeRequest;
using storage::test::FakeResponse;
using namespace std::chrono_literals;

constexpr const char* kPem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";

std::string b64(std::string_view s) { return base64_encode(s); }

TEST(KubeConfig, TakesTheCurrentContextsClusterAndUser) {
  const std::string text = R"(apiVersion: v1
kind: Config
current-context: prod
contexts:
  - name: dev
    context: {cluster: devc, user: devu}
  - name: prod
    context: {cluster: prodc, user: produ, namespace: kube-system}
clusters:
  - name: devc
    cluster: {server: "https://dev.example:6443"}
  - name: prodc
    cluster:
      server: "https://10.0.0.1:6443/"
      certificate-authority-data: )" + b64(kPem) + R"(
users:
  - name: devu
    user: {token: dev-token}
  - name: produ
    user:
      tokenFile: token
      client-certificate-data: )" + b64("CERT") + R"(
      client-key-data: )" + b64("KEY") + R"(
)";
  auto c = parse_kubeconfig(text, "/etc/k8s");
  ASSERT_TRUE(c) << c.error().message;
  EXPECT_EQ(c->server, "https://10.0.0.1:6443");  // no trailing '/': paths are appended
  EXPECT_EQ(c->ca_pem, kPem);
  EXPECT_EQ(c->token_file, fs::path("/etc/k8s/token"));  // relative to the kubeconfig
  EXPECT_EQ(c->client_cert_pem, "CERT");
  EXPECT_EQ(c->client_key_pem, "KEY");
  EXPECT_TRUE(c->token.empty());
}

TEST(KubeConfig, RefusesWhatItCannotUse) {
  auto with_user = [](const std::string& user) {
    return "current-context: c\ncontexts: [{name: c, context: {cluster: k, user: u}}]\n"
           "clusters: [{name: k, cluster: {server: 'https://h:6443'}}]\nusers: [{name: u, user: " +
           user + "}]\n";
  };
  ASSERT_TRUE(parse_kubeconfig(with_user("{token: t}"), "/"));
  auto exec = parse_kubeconfig(with_user("{exec: {command: aws}}"), "/");
  ASSERT_FALSE(exec);
  EXPECT_EQ(exec.error().code, Errc::kUnsupported);
  EXPECT_FALSE(parse_kubeconfig(with_user("{client-certificate-data: " + b64("C") + "}"), "/"));  // no key
  EXPECT_FALSE(parse_kubeconfig(with_user("{client-key: /nonexistent/key, client-certificate: /nonexistent/c}"), "/"));
  EXPECT_FALSE(parse_kubeconfig("current-context: missing\ncontexts: []\n", "/"));
  EXPECT_FALSE(parse_kubeconfig("current-context: c\ncontexts: [{name: c, context: {cluster: k}}]\n"
                                "clusters: [{name: k, cluster: {server: 'ftp://h'}}]\n", "/"));
  EXPECT_FALSE(parse_kubeconfig("[unterminated", "/"));
  EXPECT_FALSE(parse_kubeconfig("just a string", "/"));
  EXPECT_FALSE(parse_kubeconfig(
      "current-context: c\ncontexts: [{name: c, context: {cluster: k}}]\n"
      "clusters: [{name: k, cluster: {server: 'https://h', certificate-authority-data: '%%%'}}]\n", "/"));
}

// client-go's default loading rules: the explicit path, $KUBECONFIG, ~/.kube/config, the pod.
TEST(KubeConfig, LoadingRules) {
  test::TempDir dir;
  const std::string one = "current-context: c\ncontexts: [{name: c, context: {cluster: k}}]\n"
                          "clusters: [{name: k, cluster: {server: 'https://one:1'}}]\n";
  const std::string two = "current-context: c\ncontexts: [{name: c, context: {cluster: k}}]\n"
                          "clusters: [{name: k, cluster: {server: 'https://two:2'}}]\n";
  std::ofstream(dir.path() / "one") << one;
  fs::create_directories(dir.path() / "home/.kube");
  std::ofstream(dir.path() / "home/.kube/config") << two;
  const std::string old_home = std::getenv("HOME") ? std::getenv("HOME") : "";
  ::setenv("HOME", (dir.path() / "home").c_str(), 1);
  ::setenv("KUBECONFIG", ((dir.path() / "absent").string() + ":" + (dir.path() / "one").string()).c_str(), 1);
  auto a = load_kube_api_config("");
  ::unsetenv("KUBECONFIG");
  auto b = load_kube_api_config("");
  auto explicit_missing = load_kube_api_config(dir.path() / "absent");
  ::setenv("HOME", (dir.path() / "nohome").c_str(), 1);
  ::unsetenv("KUBERNETES_SERVICE_HOST");
  auto none = load_kube_api_config("");
  ::setenv("HOME", old_home.c_str(), 1);
  ASSERT_TRUE(a) << a.error().message;
  EXPECT_EQ(a->server, "https://one:1");
  ASSERT_TRUE(b) << b.error().message;
  EXPECT_EQ(b->server, "https://two:2");
  EXPECT_FALSE(explicit_missing);
  ASSERT_FALSE(none);
  EXPECT_EQ(none.error().code, Errc::kNotFound);
}

// A Secret object as the API serves it.
json secret(const std::string& ns, const std::string& name, const std::string& rv, const json& docker_config,
            const std::string& type = "kubernetes.io/dockerconfigjson") {
  return {{"metadata", {{"namespace", ns}, {"name", name}, {"resourceVersion", rv}}},
          {"type", type},
          {"data", {{".dockerconfigjson", b64(docker_config.dump())}}}};
}
json auths(const std::string& host, const std::string& user, const std::string& pass) {
  return {{"auths", {{host, {{"auth", b64(user + ":" + pass)}}}}}};
}

// The scripted API server: pages of a SecretList, then watches whose events
// the test queues; a watch with nothing queued hangs as a quiet one does.
struct ApiServer {
  std::mutex mu;
  std::vector<json> list_items;
  std::string list_rv = "100";
  std::vector<std::string> watch_bodies;  // one per watch request, then hang
  FakeHttpServer http{[this](const FakeRequest& r) { return answer(r); }};

  FakeResponse answer(const FakeRequest& r) {
    std::lock_guard lk(mu);
    if (r.header("authorization") != "Bearer s3cret") return {FakeResponse::kRespond, 401, {}, "{}", true};
    if (!r.target.starts_with("/api/v1/secrets?fieldSelector=type%3Dkubernetes.io%2Fdockerconfigjson"))
      return {FakeResponse::kRespond, 404, {}, "{}", true};
    if (r.target.find("watch=true") != std::string::npos) {
      if (watch_bodies.empty()) return {FakeResponse::kHang, 200, {}, "", true};
      std::string body = watch_bodies.front();
      watch_bodies.erase(watch_bodies.begin());
      return {FakeResponse::kRespond, 200, {{"Content-Type", "application/json"}}, body, true};
    }
    // Two pages: the first holds one item and a continue token.
    const bool second = r.target.find("&continue=tok%2F1") != std::string::npos;
    json page{{"kind", "SecretList"}, {"apiVersion", "v1"}, {"metadata", {{"resourceVersion", list_rv}}}, {"items", json::array()}};
    for (size_t i = 0; i < list_items.size(); i++)
      if ((i == 0) != second) page["items"].push_back(list_items[i]);
    if (!second && list_items.size() > 1) page["metadata"]["continue"] = "tok/1";
    return {FakeResponse::kRespond, 200, {{"Content-Type", "application/json"}}, page.dump(), true};
  }
  KubeApiConfig config() { return KubeApiConfig{.server = http.base(), .token = "s3cret", .source = "test"}; }
};

template <typename F>
bool eventually(F f, std::chrono::milliseconds limit = 10s) {
  for (auto end = std::chrono::steady_clock::now() + limit; std::chrono::steady_clock::now() < end;
       std::this_thread::sleep_for(10ms))
    if (f()) return true;
  return f();
}

TEST(KubeSecrets, ListsEveryPageThenFollowsTheWatch) {
  ApiServer api;
  api.list_items = {secret("team-b", "pull", "90", auths("reg.example:5000", "bob", "one")),
                    secret("team-a", "pull", "91", auths("other.example", "amy", "x")),
                    secret("team-c", "broken", "92", json::object()),  // no auths: never a credential
                    // A secret a field selector would not send, and one whose data is not base64:
                    secret("team-d", "opaque", "93", auths("reg.example:5000", "eve", "no"), "Opaque"),
                    json{{"metadata", {{"namespace", "team-e"}, {"name", "bad"}}},
                         {"type", "kubernetes.io/dockerconfigjson"},
                         {"data", {{".dockerconfigjson", "%%%"}}}}};
  api.watch_bodies.push_back(
      json{{"type", "MODIFIED"}, {"object", secret("team-b", "pull", "101", auths("reg.example:5000", "bob", "two"))}}.dump() +
      "\n" +
      json{{"type", "ADDED"}, {"object", secret("team-f", "new", "102", auths("new.example", "fay", "f"))}}.dump() + "\n" +
      json{{"type", "DELETED"}, {"object", secret("team-a", "pull", "120", json::object())}}.dump() + "\n" +
      json{{"type", "BOOKMARK"}, {"object", {{"kind", "Secret"}, {"metadata", {{"resourceVersion", "150"}}}}}}.dump() +
      "\n");
  KubeSecrets ks(api.config());
  ks.start();
  ASSERT_TRUE(ks.wait_synced(10s));
  ASSERT_TRUE(eventually([&] { return ks.watches() >= 2; }));  // the first watch's events are all applied
  EXPECT_EQ(ks.lists(), 1);
  EXPECT_EQ(ks.lookup("reg.example:5000"), (PassKeyChain{"bob", "two"}));
  EXPECT_EQ(ks.lookup("new.example"), (PassKeyChain{"fay", "f"}));
  EXPECT_EQ(ks.lookup("other.example"), std::nullopt);  // deleted
  EXPECT_EQ(ks.secret_names(), (std::vector<std::string>{"team-b/pull", "team-c/broken", "team-f/new"}));
  // The requests as the API wants them: both pages, then a watch from the list's resourceVersion, then one
  // resumed from the bookmark's.
  std::vector<std::string> targets;
  for (const auto& r : api.http.requests()) targets.push_back(r.target);
  ASSERT_GE(targets.size(), 4u);
  EXPECT_EQ(targets[0], "/api/v1/secrets?fieldSelector=type%3Dkubernetes.io%2Fdockerconfigjson&limit=500");
  EXPECT_EQ(targets[1], targets[0] + "&continue=tok%2F1");
  EXPECT_NE(targets[2].find("&watch=true&allowWatchBookmarks=true&timeoutSeconds=300&resourceVersion=100"),
            std::string::npos)
      << targets[2];
  EXPECT_NE(targets[3].find("&resourceVersion=150"), std::string::npos) << targets[3];
}

TEST(KubeSecrets, GoneListsAgain) {
  ApiServer api;
  api.list_items = {secret("ns", "a", "1", auths("reg.example", "u", "old"))};
  api.watch_bodies.push_back(
      json{{"type", "ERROR"}, {"object", {{"kind", "Status"}, {"code", 410}, {"reason", "Expired"}}}}.dump() + "\n");
  KubeSecrets ks(api.config());
  {
    std::lock_guard lk(api.mu);
    api.list_items = {secret("ns", "a", "1", auths("reg.example", "u", "new"))};  // what the relist finds
  }
  ks.start();
  ASSERT_TRUE(eventually([&] { return ks.lists() == 2; }));
  EXPECT_EQ(ks.lookup("reg.example"), (PassKeyChain{"u", "new"}));
}

TEST(KubeSecrets, ABrokenWatchIsResumedNotTrusted) {
  ApiServer api;
  api.list_items = {secret("ns", "a", "1", auths("reg.example", "u", "p"))};
  api.watch_bodies.push_back("this is not json\n");
  api.watch_bodies.push_back(json{{"type", "MODIFIED"}, {"object", secret("ns", "a", "2", auths("reg.example", "u", "q"))}}.dump());
  KubeSecrets ks(api.config());
  ks.start();
  // The garbage ends the first watch (after a 1 s backoff the next one resumes); the last event has no newline.
  ASSERT_TRUE(eventually([&] { return ks.lookup("reg.example") == PassKeyChain{"u", "q"}; }));
  EXPECT_EQ(ks.lists(), 1);
}

TEST(KubeSecrets, HelpersNamedInASecretAreNeverRun) {
  test::TempDir dir;
  const fs::path helper = dir.path() / "docker-credential-evil";
  std::ofstream(helper) << "#!/bin/sh\ntouch " << (dir.path() / "ran").string() << "\necho '{\"Username\":\"x\",\"Secret\":\"y\"}'\n";
  fs::permissions(helper, fs::perms::owner_all);
  const std::string old_path = std::getenv("PATH") ? std::getenv("PATH") : "";
  ::setenv("PATH", (dir.path().string() + ":" + old_path).c_str(), 1);
  ApiServer api;
  json cfg = auths("reg.example", "u", "p");
  cfg["credsStore"] = "evil";
  cfg["credHelpers"] = {{"other.example", "evil"}};
  api.list_items = {secret("ns", "a", "1", cfg)};
  KubeSecrets ks(api.config());
  ks.start();
  ASSERT_TRUE(ks.wait_synced(10s));
  EXPECT_EQ(ks.lookup("reg.example"), (PassKeyChain{"u", "p"}));
  EXPECT_EQ(ks.lookup("other.example"), std::nullopt);
  ::setenv("PATH", old_path.c_str(), 1);
  EXPECT_FALSE(fs::exists(dir.path() / "ran"));
}

TEST(KubeSecrets, AnAbsentOrRefusingServerNeitherHangsNorCredits) {
  ApiServer api;
  auto cfg = api.config();
  cfg.token = "wrong";  // 401
  {
    KubeSecrets ks(cfg);
    ks.start();
    EXPECT_FALSE(ks.wait_synced(300ms));
    EXPECT_EQ(ks.lookup("reg.example"), std::nullopt);
  }  // the destructor stops a thread that is backing off
  api.list_items = {secret("ns", "a", "1", auths("reg.example", "u", "p"))};
  auto ks = std::make_unique<KubeSecrets>(api.config());
  ks->start();
  ASSERT_TRUE(ks->wait_synced(10s));
  ASSERT_TRUE(eventually([&] { return ks->watches() == 1; }));
  const auto t0 = std::chrono::steady_clock::now();
  ks.reset();  // cancels the hanging watch promptly
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 3s);
}

// The keychain's order: the docker config before the kube secrets, which are renewable.
TEST(KubeSecrets, KeychainAsksThemAfterTheDockerConfig) {
  test::TempDir dir;
  ApiServer api;
  api.list_items = {secret("ns", "a", "1", auths("reg.example", "kube", "k"))};
  auto ks = std::make_shared<KubeSecrets>(api.config());
  ks->start();
  ASSERT_TRUE(ks->wait_synced(10s));
  Keychain kc(dir.path() / "config.json", nullptr, 0ms, nullptr, ks);
  EXPECT_EQ(kc.renewable("reg.example/app:v1"), (PassKeyChain{"kube", "k"}));
  std::ofstream(dir.path() / "config.json") << auths("reg.example", "docker", "d").dump();
  EXPECT_EQ(kc.lookup("reg.example/app:v1", {}), (PassKeyChain{"docker", "d"}));
  EXPECT_EQ(kc.renewable("unknown.example/app:v1"), std::nullopt);
}

}  // namespace
}  // namespace nydus::snapshotter
