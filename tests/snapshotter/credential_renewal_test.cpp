// update_daemon_auth (snapshotter/credential_renewal.h) against nydusd's own
// API routes (api/api_routes.h) over a unix socket: which id each kind of
// daemon is sent, and the config file rewritten with the new credentials.
#include <gtest/gtest.h>
#include <unistd.h>

#include <fstream>
#include <mutex>

#include <nlohmann/json.hpp>

#include "api/api_routes.h"
#include "api/http_server.h"
#include "common/test_util.h"
#include "format/digest.h"
#include "snapshotter/credential_renewal.h"
#include "snapshotter/daemon_manager.h"

namespace nydus::snapshotter {
namespace {

// A daemon that records the credentials the API hands it.
class AuthRecorder : public api::DaemonApi {
 public:
  nlohmann::json daemon_info() override { return {{"id", "fake"}, {"state", "RUNNING"}}; }
  Status mount(const api::MountRequest&) override { return {}; }
  Status remount(const api::MountRequest&) override { return {}; }
  Status umount(const std::string&) override { return {}; }
  Result<nlohmann::json> metrics(const std::string&, const std::map<std::string, std::string>&) override {
    return nlohmann::json::object();
  }
  std::string prometheus_metrics() override { return ""; }
  Status set_registry_auth(const std::string& id, const std::string& auth) override {
    std::lock_guard lk(mu);
    calls.emplace_back(id, auth);
    return {};
  }
  std::mutex mu;
  std::vector<std::pair<std::string, std::string>> calls;
};

class UpdateDaemonAuth : public ::testing::Test {
 protected:
  void SetUp() override {
    api::Router r;
    api::register_api_routes(r, daemon_, {});
    sock_ = (dir_ / "api.sock").string();
    server_ = std::make_unique<api::HttpServer>(sock_, std::move(r));
    ASSERT_TRUE(server_->start());
  }
  void TearDown() override { server_->stop(); }
  std::string write(const std::string& name, const std::string& text) {
    const auto p = dir_ / name;
    std::ofstream(p) << text;
    return p.string();
  }
  nlohmann::json read(const std::string& p) {
    std::ifstream in(p);
    return nlohmann::json::parse(in);
  }
  test::TempDir dir_;
  AuthRecorder daemon_;
  std::string sock_;
  std::unique_ptr<api::HttpServer> server_;
};

TEST_F(UpdateDaemonAuth, EachKindOfDaemonIsSentItsId) {
  auto cfg = make_daemon_config(default_fusedev_template(), "127.0.0.1:5000/ns/img:v1", "/r/cache");
  ASSERT_TRUE(cfg);
  const PassKeyChain kc{"new", "pw"};
  const std::string b64 = kc.to_base64();

  DaemonInstance dedicated;
  dedicated.id = "nydusd-1";
  dedicated.meta_id = "1";
  dedicated.apisock = sock_;
  dedicated.config_path = write("dedicated.json", *cfg);
  ASSERT_TRUE(update_daemon_auth(dedicated, kc));

  DaemonInstance shared = dedicated;
  shared.id = "shared_daemon";
  shared.meta_id = "7";
  shared.shared = true;
  shared.config_path = write("shared.json", *cfg);
  ASSERT_TRUE(update_daemon_auth(shared, kc));

  // fscache: the image's config file is its blob entry; the singleton is sent the fsid.
  auto entry = make_fscache_entry(*cfg, format::fscache_id("9"), "/boot", "/r/cache");
  ASSERT_TRUE(entry);
  DaemonInstance fscache = shared;
  fscache.meta_id = "9";
  fscache.fscache_id = format::fscache_id("9");
  fscache.config_path = write("fscache.json", *entry);
  ASSERT_TRUE(update_daemon_auth(fscache, kc));

  std::lock_guard lk(daemon_.mu);
  ASSERT_EQ(daemon_.calls.size(), 3u);
  EXPECT_EQ(daemon_.calls[0], std::make_pair(std::string("/"), b64));
  EXPECT_EQ(daemon_.calls[1], std::make_pair(std::string("/7"), b64));
  EXPECT_EQ(daemon_.calls[2], std::make_pair(format::fscache_id("9"), b64));
  EXPECT_EQ(read(dedicated.config_path)["device"]["backend"]["config"]["auth"], b64);
  EXPECT_EQ(read(shared.config_path)["device"]["backend"]["config"]["auth"], b64);
  EXPECT_EQ(read(fscache.config_path)["config"]["backend_config"]["auth"], b64);
}

}  // namespace
}  // namespace nydus::snapshotter
