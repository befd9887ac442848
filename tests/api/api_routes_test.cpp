// Upstream's v1 routes against a fake daemon, driven through ApiClient (curl)
// and raw sockets, plus the nydusctl binary when it is built.
#include "api/api_routes.h"

#include <cstdio>
#include <filesystem>
#include <mutex>

#include <gtest/gtest.h>

#include "api/api_client.h"
#include "api/raw_client.h"
#include "common/test_util.h"

namespace nydus::api {
namespace {

using test::RawConn;
using test::body_of;
using test::status_of;

class FakeDaemon : public DaemonApi {
 public:
  nlohmann::json daemon_info() override {
    if (throw_in_info) throw std::runtime_error("info exploded");
    return {{"id", "fake-1"},
            {"version", {{"package_ver", "v2.2.0"}, {"git_commit", "abc"}, {"build_time", "now"},
                         {"profile", "release"}, {"rustc", "none"}}},
            {"supervisor", nullptr},
            {"state", "RUNNING"},
            {"backend_collection", {{"/sub", {{"backend_type", "localfs"}}}}}};
  }
  Status mount(const MountRequest& req) override {
    std::lock_guard lk(mu);
    calls.push_back("mount");
    last = req;
    if (next_error) return std::unexpected(*std::exchange(next_error, std::nullopt));
    return ok();
  }
  Status remount(const MountRequest& req) override {
    std::lock_guard lk(mu);
    calls.push_back("remount");
    last = req;
    if (next_error) return std::unexpected(*std::exchange(next_error, std::nullopt));
    return ok();
  }
  Status umount(const std::string& mp) override {
    std::lock_guard lk(mu);
    calls.push_back("umount " + mp);
    if (next_error) return std::unexpected(*std::exchange(next_error, std::nullopt));
    return ok();
  }
  Result<nlohmann::json> metrics(const std::string& kind,
                                 const std::map<std::string, std::string>& query) override {
    if (kind == "pattern") return make_error(Errc::kUnsupported, "no access pattern tracking");
    nlohmann::json j = {{"kind", kind}, {"query", query}};
    return j;
  }
  std::string prometheus_metrics() override { return "# TYPE nydusd_up gauge\nnydusd_up 1\n"; }

  // Under the lock: when the request came from another process (nydusctl),
  // TSan cannot see the socket and the process exit ordering the accesses.
  MountRequest last_locked() {
    std::lock_guard lk(mu);
    return last;
  }
  std::string last_call() {
    std::lock_guard lk(mu);
    return calls.empty() ? "" : calls.back();
  }
  void fail_next(Error e) {
    std::lock_guard lk(mu);
    next_error = std::move(e);
  }

  std::mutex mu;
  std::vector<std::string> calls;
  MountRequest last;
  std::optional<Error> next_error;
  bool throw_in_info = false;
};

class RoutesTest : public ::testing::Test {
 protected:
  void SetUp() override { start({}); }
  void start(ApiHooks hooks) {
    if (server_) server_->stop();
    Router r;
    register_api_routes(r, daemon_, std::move(hooks));
    sock_ = (dir_ / "api.sock").string();
    server_ = std::make_unique<HttpServer>(sock_, std::move(r));
    ASSERT_TRUE(server_->start());
    client_ = std::make_unique<ApiClient>(sock_);
  }
  ApiReply req(std::string_view method, std::string_view path,
               std::optional<std::string_view> body = std::nullopt) {
    auto r = client_->request(method, path, body);
    EXPECT_TRUE(r) << r.error().message;
    return r ? *r : ApiReply{};
  }
  static std::string code_of(const ApiReply& r) {
    auto j = nlohmann::json::parse(r.body, nullptr, false);
    return j.is_object() && j.contains("code") ? j["code"].get<std::string>() : "";
  }

  test::TempDir dir_;
  std::string sock_;
  FakeDaemon daemon_;
  std::unique_ptr<HttpServer> server_;
  std::unique_ptr<ApiClient> client_;
};

TEST_F(RoutesTest, DaemonInfo) {
  auto info = client_->daemon_info();
  ASSERT_TRUE(info) << info.error().message;
  EXPECT_EQ((*info)["state"], "RUNNING");
  EXPECT_EQ((*info)["version"]["package_ver"], "v2.2.0");
  auto r = req("GET", "/api/v1/daemon");
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.content_type, "application/json");
  EXPECT_EQ(req("DELETE", "/api/v1/daemon").status, 400);  // upstream: wrong method is BadRequest
}

TEST_F(RoutesTest, MountRemountUmount) {
  std::string config = nlohmann::json{{"device", {{"backend", {{"type", "localfs"}}}}},
                                      {"padding", std::string(3000, 'p')}}
                           .dump();  // > 1 KiB: curl sends Expect: 100-continue
  auto s = client_->mount("/sub dir", "/boot/strap", config, "rafs",
                          std::vector<std::string>{"/etc", "/usr/bin"});
  ASSERT_TRUE(s) << s.error().message;
  EXPECT_EQ(daemon_.last.mountpoint, "/sub dir");
  EXPECT_EQ(daemon_.last.source, "/boot/strap");
  EXPECT_EQ(daemon_.last.fs_type, "rafs");
  EXPECT_EQ(daemon_.last.config, config);
  EXPECT_TRUE(daemon_.last.prefetch_files_given);
  EXPECT_EQ(daemon_.last.prefetch_files, (std::vector<std::string>{"/etc", "/usr/bin"}));

  ASSERT_TRUE(client_->remount("/sub dir", "/boot/strap2", "{}"));
  EXPECT_EQ(daemon_.last.source, "/boot/strap2");
  EXPECT_FALSE(daemon_.last.prefetch_files_given);

  ASSERT_TRUE(client_->umount("/sub dir"));
  EXPECT_EQ(daemon_.calls, (std::vector<std::string>{"mount", "remount", "umount /sub dir"}));

  // Upstream's own test body: no fs_type, defaults to rafs.
  auto r = req("POST", "/api/v1/mount?mountpoint=/test", R"({"source":"/path","config":"{}"})");
  EXPECT_EQ(r.status, 204);
  EXPECT_EQ(daemon_.last.fs_type, "rafs");
}

TEST_F(RoutesTest, MountInputErrors) {
  auto r = req("POST", "/api/v1/mount", R"({"source":"/p","config":"{}"})");
  EXPECT_EQ(r.status, 400);
  r = req("DELETE", "/api/v1/mount?mountpoint=");
  EXPECT_EQ(r.status, 400);
  r = req("POST", "/api/v1/mount?mountpoint=/m", "{not json");
  EXPECT_EQ(r.status, 400);
  EXPECT_EQ(code_of(r), "InvalidRequest");
  for (const char* body : {R"([1,2])", R"({"config":"{}"})", R"({"source":1,"config":"{}"})",
                           R"({"source":"/p"})", R"({"source":"/p","config":"{}","prefetch_files":"x"})",
                           R"({"source":"/p","config":"{}","prefetch_files":[1]})", ""}) {
    r = req("PUT", "/api/v1/mount?mountpoint=/m", body);
    EXPECT_EQ(r.status, 400) << body;
    EXPECT_FALSE(nlohmann::json::parse(r.body)["message"].get<std::string>().empty());
  }
  EXPECT_TRUE(daemon_.calls.empty());
  EXPECT_EQ(req("GET", "/api/v1/mount?mountpoint=/m").status, 400);
}

TEST_F(RoutesTest, DaemonErrorsMapToStatus) {
  struct Case {
    Errc code;
    int status;
    const char* name;
  };
  for (const Case& c : {Case{Errc::kInvalidArgument, 400, "InvalidArgument"},
                        Case{Errc::kNotFound, 404, "NotFound"}, Case{Errc::kExists, 409, "Exists"},
                        Case{Errc::kUnsupported, 501, "Unsupported"}, Case{Errc::kIo, 500, "Io"},
                        Case{Errc::kCorrupt, 500, "Corrupt"}}) {
    daemon_.next_error = Error{c.code, 0, "it went wrong"};
    auto r = req("DELETE", "/api/v1/mount?mountpoint=/x");
    EXPECT_EQ(r.status, c.status);
    EXPECT_EQ(code_of(r), c.name);
    EXPECT_EQ(nlohmann::json::parse(r.body)["message"], "it went wrong");
  }
  daemon_.next_error = Error{Errc::kExists, 0, "already mounted"};
  auto s = client_->mount("/x", "/b", "{}");
  ASSERT_FALSE(s);
  EXPECT_EQ(s.error().code, Errc::kExists);
  EXPECT_NE(s.error().message.find("already mounted"), std::string::npos);

  daemon_.throw_in_info = true;
  EXPECT_EQ(req("GET", "/api/v1/daemon").status, 500);
}

TEST_F(RoutesTest, Metrics) {
  for (std::string kind : {"", "files", "backend", "blobcache", "inflight"}) {
    auto m = client_->metrics(kind, "/sub", kind == "files");
    ASSERT_TRUE(m) << kind << ": " << m.error().message;
    EXPECT_EQ((*m)["kind"], kind);
    EXPECT_EQ((*m)["query"]["id"], "/sub");
    if (kind == "files") {
      EXPECT_EQ((*m)["query"]["latest"], "true");
    }
  }
  auto p = req("GET", "/api/v1/metrics/pattern?id=/sub");
  EXPECT_EQ(p.status, 501);
  EXPECT_EQ(req("GET", "/api/v1/metrics/unknown").status, 404);
  EXPECT_EQ(req("POST", "/api/v1/metrics", "{}").status, 400);

  auto prom = req("GET", "/metrics");
  EXPECT_EQ(prom.status, 200);
  EXPECT_EQ(prom.content_type, "text/plain; version=0.0.4");
  EXPECT_EQ(prom.body, daemon_.prometheus_metrics());
}

TEST_F(RoutesTest, DaemonControl) {
  EXPECT_EQ(req("PUT", "/api/v1/daemon/exit").status, 501);
  for (const char* p : {"/api/v1/daemon/start", "/api/v1/daemon/fuse/sendfd", "/api/v1/daemon/fuse/takeover"}) {
    auto r = req("PUT", p);
    EXPECT_EQ(r.status, 501) << p;
    EXPECT_EQ(code_of(r), "Unsupported");  // a daemon mode without live upgrade
    EXPECT_EQ(req("GET", p).status, 400) << p;
  }
  int exits = 0;
  start(ApiHooks{[&] {
    ++exits;
    return ok();
  }});
  ASSERT_TRUE(client_->exit_daemon());
  EXPECT_EQ(exits, 1);
}

TEST_F(RoutesTest, UnknownRoute) {
  auto r = req("GET", "/api/v3/blobs");
  EXPECT_EQ(r.status, 404);
  EXPECT_EQ(code_of(r), "NotFound");
}

TEST_F(RoutesTest, BlobObjectsV2) {
  // Query checks happen before the daemon is asked.
  EXPECT_EQ(req("GET", "/api/v2/blobs").status, 400);
  EXPECT_EQ(req("DELETE", "/api/v2/blobs").status, 400);
  // A daemon mode without blob objects says so.
  EXPECT_EQ(req("GET", "/api/v2/blobs?domain_id=d").status, 501);
  EXPECT_EQ(req("DELETE", "/api/v2/blobs?domain_id=d&blob_id=b").status, 501);
  EXPECT_EQ(req("DELETE", "/api/v2/blobs?blob_id=b").status, 501);
  EXPECT_EQ(req("PUT", "/api/v2/blobs", "{}").status, 501);
  EXPECT_EQ(req("GET", "/api/v2/daemon").status, 200);
}

TEST_F(RoutesTest, RawKeepAliveAcrossRoutes) {
  RawConn c(sock_);
  c.send("GET /api/v1/daemon HTTP/1.1\r\nHost: unix\r\n\r\n");
  auto a = c.read_response();
  ASSERT_TRUE(a);
  EXPECT_EQ(status_of(*a), 200);
  std::string body = R"({"source":"/b","config":"{}"})";
  c.send("POST /api/v1/mount?mountpoint=%2Fm HTTP/1.1\r\nHost: unix\r\nContent-Type: application/json\r\n"
         "Content-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body);
  auto b = c.read_response();
  ASSERT_TRUE(b);
  EXPECT_EQ(status_of(*b), 204);
  EXPECT_EQ(daemon_.last.mountpoint, "/m");
}

TEST_F(RoutesTest, TransportErrorWhenNoServer) {
  server_->stop();
  auto r = client_->daemon_info();
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, Errc::kIo);
}

// Runs `cmd`, returning (exit status, stdout).
std::pair<int, std::string> run(const std::string& cmd) {
  FILE* p = ::popen(cmd.c_str(), "r");
  std::string out;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof(buf), p)) > 0) out.append(buf, n);
  int st = ::pclose(p);
  return {WIFEXITED(st) ? WEXITSTATUS(st) : -1, out};
}

TEST_F(RoutesTest, Nydusctl) {
  std::filesystem::path bin = test::bin_dir() / "nydusctl";
  if (!std::filesystem::exists(bin)) NYDUS_SKIP_UNLESS_CI("nydusctl not built");
  std::string base = bin.string() + " --sock " + sock_ + " ";
  auto [st, out] = run(base + "info");
  EXPECT_EQ(st, 0);
  EXPECT_NE(out.find("RUNNING"), std::string::npos) << out;
  std::tie(st, out) = run(base + "--raw info");
  EXPECT_EQ(st, 0);
  EXPECT_EQ(nlohmann::json::parse(out)["id"], "fake-1");
  std::tie(st, out) = run(base + "--raw metrics --id /sub");
  EXPECT_EQ(st, 0);
  EXPECT_EQ(nlohmann::json::parse(out)["query"]["id"], "/sub");
  std::tie(st, out) = run(base + "backend");
  EXPECT_EQ(st, 0);
  std::tie(st, out) = run(base + "blobcache");
  EXPECT_EQ(st, 0);
  std::tie(st, out) = run(base + "files --latest");
  EXPECT_EQ(st, 0);

  auto cfg = (dir_ / "cfg.json").string();
  test::write_file(cfg, std::string(R"({"device":{}})"));
  std::tie(st, out) = run(base + "mount --source /b --mountpoint /mp --config " + cfg);
  EXPECT_EQ(st, 0) << out;
  EXPECT_EQ(daemon_.last_locked().config, R"({"device":{}})");
  std::tie(st, out) = run(base + "umount /mp");
  EXPECT_EQ(st, 0);
  EXPECT_EQ(daemon_.last_call(), "umount /mp");
  daemon_.fail_next(Error{Errc::kNotFound, 0, "no such mount"});
  std::tie(st, out) = run(base + "umount /nope 2>&1");
  EXPECT_EQ(st, 1);
  EXPECT_NE(out.find("no such mount"), std::string::npos) << out;
}

}  // namespace
}  // namespace nydus::api
