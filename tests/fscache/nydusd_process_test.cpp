// The real nydusd binary in fscache mode against the emulated kernel in this
// process (nydusd --fscache-device <emulator socket>): images registered over
// the HTTP API, and the failover path end to end — a supervisor holding the
// device fd, the daemon SIGKILLed while a READ it had taken is waiting on a
// stalled registry, a new daemon taking over with `restore`, and the blocked
// reader completing with the right bytes.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <thread>

#include "api/api_client.h"
#include "format/digest.h"
#include "common/test_util.h"
#include "fscache/fscache_test_util.h"
#include "fscache/kernel_emulator.h"
#include "storage/fake_http_server.h"

namespace nydus::fscache {
namespace {

using namespace std::chrono_literals;
using storage::test::FakeHttpServer;
using storage::test::FakeRequest;
using storage::test::FakeResponse;
using storage::test::PeerProcess;
namespace fs = std::filesystem;

const std::string kBin = nydus::test::bin_dir().string();

using nydus::test::wait_for;

class NydusdFscacheTest : public ::testing::Test {
 protected:
  void SetUp() override {
    img_ = test::build_image(tmp_ / "img", 7);
    ASSERT_FALSE(img_.blob_id.empty());
    blob_ = nydus::test::read_file(img_.blob_dir / img_.blob_id);
    // An OCI registry serving the blob with Range support, that can stall.
    registry_ = std::make_unique<FakeHttpServer>([this](const FakeRequest& r) { return serve(r); });
    emu_ = std::make_unique<emu::Emulator>(emu::Profile::linux_6_12(), tmp_ / "store");
    ASSERT_TRUE(emu_->listen(tmp_ / "cachefiles.sock"));
  }
  void TearDown() override {
    stall_ = false;
    daemons_.clear();
    supervisor_.reset();
    registry_.reset();
    emu_.reset();
  }

  FakeResponse serve(const FakeRequest& r) {
    while (stall_) std::this_thread::sleep_for(5ms);
    FakeResponse resp;
    if (!required_auth_.empty() && r.header("authorization") != "Basic " + required_auth_) {
      resp.status = 401;
      resp.headers.emplace_back("WWW-Authenticate", "Basic realm=\"test\"");
      return resp;
    }
    if (r.target.find("/blobs/sha256:" + img_.blob_id) == std::string::npos) {
      resp.status = 404;
      return resp;
    }
    uint64_t a = 0, b = blob_.size() - 1;
    const std::string range = r.header("range");
    if (!range.empty() && std::sscanf(range.c_str(), "bytes=%lu-%lu", &a, &b) >= 1) {
      b = std::min<uint64_t>(b, blob_.size() - 1);
      resp.status = 206;
      resp.headers.emplace_back("Content-Range", fmt::format("bytes {}-{}/{}", a, b, blob_.size()));
    }
    resp.body.assign(reinterpret_cast<const char*>(blob_.data()) + a, b - a + 1);
    resp.send_body = r.method != "HEAD";
    return resp;
  }

  std::string entry(const std::string& fsid, const std::string& auth = "") {
    nlohmann::json cfg{{"version", 2},
                       {"backend",
                        {{"type", "registry"},
                         {"registry", {{"scheme", "http"}, {"host", registry_->host()}, {"repo", "lib/img"},
                                       {"timeout", 60}, {"retry_limit", 0}}}}},
                       {"cache", {{"type", "fscache"}, {"fscache", {{"work_dir", (tmp_ / "work").string()}}}}},
                       {"metadata_path", img_.bootstrap.string()}};
    if (!auth.empty()) cfg["backend"]["registry"]["auth"] = auth;
    return nlohmann::json{{"type", "bootstrap"}, {"id", fsid}, {"domain_id", "dom"}, {"config_v2", cfg}}.dump();
  }

  // Start nydusd; returns its API client once the socket answers.
  std::unique_ptr<api::ApiClient> start_daemon(const std::string& name, bool upgrade) {
    const fs::path sock = tmp_ / (name + ".sock");
    std::vector<std::string> argv{kBin + "/nydusd", "singleton", "--fscache", (tmp_ / "cachedir").string(),
                                  "--fscache-device", (tmp_ / "cachefiles.sock").string(), "--apisock",
                                  sock.string(), "--id", name, "--supervisor", (tmp_ / "supervisor.sock").string(),
                                  "--fscache-threads", "2"};
    if (upgrade) argv.push_back("--upgrade");
    daemons_.push_back(std::make_unique<PeerProcess>(argv, (tmp_ / (name + ".log")).string()));
    auto client = std::make_unique<api::ApiClient>(sock.string(), 10s);
    EXPECT_TRUE(wait_for([&] { return client->daemon_info().has_value(); }, 10s)) << "nydusd " << name << " did not start";
    return client;
  }

  void start_supervisor() {
    supervisor_ = std::make_unique<PeerProcess>(
        std::vector<std::string>{kBin + "/nydusctl", "supervise", "--path", (tmp_ / "supervisor.sock").string()},
        (tmp_ / "supervisor.log").string());
    ASSERT_TRUE(wait_for([&] { return fs::exists(tmp_ / "supervisor.sock"); }, 5s));
  }

  void expect_blob_matches(int m) {
    const auto layout = nydus::test::read_file(img_.cache_dir / (img_.blob_id + ".blob.data"));
    EXPECT_EQ(test::read_prefix(emu_->backing_path(emu_->blob_objects(m)[0]), layout.size()), layout);
  }

  nydus::test::TempDir tmp_;
  test::TestImage img_;
  std::vector<uint8_t> blob_;
  std::atomic<bool> stall_{false};
  std::string required_auth_;  // set: the registry answers 401 unless Basic <this>
  std::unique_ptr<FakeHttpServer> registry_;
  std::unique_ptr<emu::Emulator> emu_;
  std::unique_ptr<PeerProcess> supervisor_;
  std::vector<std::unique_ptr<PeerProcess>> daemons_;
};

TEST_F(NydusdFscacheTest, RegisterMountReadList) {
  auto api = start_daemon("d1", false);
  ASSERT_TRUE(emu_->wait_bound(5s));
  ASSERT_TRUE(api->create_blob(entry("img")));
  auto dup = api->create_blob(entry("img"));
  ASSERT_FALSE(dup);
  EXPECT_EQ(dup.error().code, Errc::kExists);
  auto bad = api->create_blob(R"({"type":"bootstrap","id":"x/y","config_v2":{}})");
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.error().code, Errc::kInvalidArgument);

  auto list = api->list_blobs("dom");
  ASSERT_TRUE(list);
  ASSERT_EQ(list->size(), 2u) << list->dump();

  auto m = emu_->mount("img", "dom");
  ASSERT_TRUE(m) << m.error().message;
  ASSERT_TRUE(emu_->read_all(emu_->blob_objects(*m)[0], 4, 128 << 10));
  expect_blob_matches(*m);
  // Upstream's fscache daemon has no filesystem metrics; its blob cache
  // counts the reads the kernel's requests made.
  EXPECT_FALSE(api->metrics(""));
  auto metrics = api->metrics("blobcache");
  ASSERT_TRUE(metrics);
  EXPECT_GT((*metrics)["total"].get<uint64_t>(), 0u) << metrics->dump();
  EXPECT_FALSE((*metrics)["underlying_files"].empty()) << metrics->dump();
  ASSERT_TRUE(emu_->umount(*m));
  EXPECT_TRUE(emu_->check_no_leaks(5s));
  ASSERT_TRUE(api->delete_blobs("dom", "img"));
  EXPECT_EQ(api->list_blobs("dom")->size(), 0u);
  for (const auto& v : emu_->violations()) ADD_FAILURE() << v;
}

TEST_F(NydusdFscacheTest, RenewedRegistryCredentialsServeTheNextReads) {
  // As nydus-snapshotter renews them: PUT /api/v1/config?id=/<snapshot id> {"registry_auth"},
  // the image registered under upstream's FscacheID, sha256("nydus-snapshot-<snapshot id>").
  const std::string s = "nydus-snapshot-42";
  const std::string upstream_fsid =
      format::to_hex(format::sha256(std::span(reinterpret_cast<const uint8_t*>(s.data()), s.size())));
  required_auth_ = "bmV3OnB3";  // new:pw; the entries carry old:pw
  auto api = start_daemon("d1", false);
  ASSERT_TRUE(emu_->wait_bound(5s));
  ASSERT_TRUE(api->create_blob(entry(upstream_fsid, "b2xkOnB3")));
  auto nope = api->request("PUT", "/api/v1/config?id=%2Fnot-registered", R"({"registry_auth":"bmV3OnB3"})");
  ASSERT_TRUE(nope);
  EXPECT_EQ(nope->status, 404) << nope->body;
  auto put = api->request("PUT", "/api/v1/config?id=%2F42", R"({"registry_auth":"bmV3OnB3"})");
  ASSERT_TRUE(put) << put.error().message;
  EXPECT_EQ(put->status / 100, 2) << put->body;
  auto m = emu_->mount(upstream_fsid, "dom");
  ASSERT_TRUE(m) << m.error().message;
  ASSERT_TRUE(emu_->read_all(emu_->blob_objects(*m)[0], 4, 128 << 10));
  expect_blob_matches(*m);
  ASSERT_TRUE(emu_->umount(*m));
  for (const auto& v : emu_->violations()) ADD_FAILURE() << v;
}

TEST_F(NydusdFscacheTest, CrashMidReadThenTakeoverWithRestore) {
  start_supervisor();
  auto api = start_daemon("d1", false);
  ASSERT_TRUE(emu_->wait_bound(5s));
  ASSERT_TRUE(api->create_blob(entry("img")));
  auto m = emu_->mount("img", "dom");
  ASSERT_TRUE(m) << m.error().message;
  ASSERT_TRUE(api->send_fd()) << "the supervisor now holds the device";

  // A reader waits on a READ the daemon took and cannot finish: the registry stalls.
  stall_ = true;
  const int blob = emu_->blob_objects(*m)[0];
  Status result = ok();
  auto reader = emu_->read_async(blob, 0, 256 << 10, &result, 30s);
  ASSERT_TRUE(wait_for([&] { return emu_->delivered_pending() >= 1 && registry_->hits() >= 1; }, 10s));
  daemons_[0]->kill_now();
  stall_ = false;

  auto api2 = start_daemon("d2", true);
  auto info = api2->daemon_info();
  ASSERT_TRUE(info);
  EXPECT_EQ((*info)["state"], "INIT");
  ASSERT_TRUE(api2->takeover());
  ASSERT_TRUE(api2->start());
  reader->join();
  EXPECT_TRUE(result) << result.error().message;
  EXPECT_EQ(emu_->counters().restores, 1u);
  EXPECT_GE(emu_->counters().reopens, 1u) << "the dead daemon's object fds are reopened";
  ASSERT_TRUE(emu_->read_all(blob, 3, 64 << 10));
  expect_blob_matches(*m);
  ASSERT_TRUE(emu_->umount(*m));
  EXPECT_TRUE(emu_->check_no_leaks(5s));
  for (const auto& v : emu_->violations()) ADD_FAILURE() << v;
}

TEST_F(NydusdFscacheTest, CrashWithoutSupervisorFailsReadersInsteadOfHanging) {
  auto api = start_daemon("d1", false);
  ASSERT_TRUE(emu_->wait_bound(5s));
  ASSERT_TRUE(api->create_blob(entry("img")));
  auto m = emu_->mount("img", "dom");
  ASSERT_TRUE(m);
  stall_ = true;
  Status result = ok();
  auto reader = emu_->read_async(emu_->blob_objects(*m)[0], 0, 4096, &result, 30s);
  ASSERT_TRUE(wait_for([&] { return emu_->delivered_pending() >= 1; }, 10s));
  daemons_[0]->kill_now();  // the device fd dies with it: the cache is dead
  stall_ = false;
  reader->join();
  ASSERT_FALSE(result);
  EXPECT_EQ(result.error().sys_errno, EIO);
}

}  // namespace
}  // namespace nydus::fscache
