// A container on a Nydus image: the nydusd command line (nydus-snapshotter's
// BuildCommand order), its config, the overlay over its mount (mountRemote's
// shape), and the daemon's lifetime, against a fake nydusd that records its
// argv and answers GET /api/v1/daemon with RUNNING on its --apisock.
#include <signal.h>
#include <linux/magic.h>
#include <stdlib.h>
#include <sys/statfs.h>

#include <gtest/gtest.h>

#include <cstring>
#include <atomic>
#include <thread>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "common/test_util.h"
#include "snapshotter/labels.h"
#include "snapshotter/snapshotter.h"

using namespace nydus::snapshotter;
namespace fs = std::filesystem;

namespace {

constexpr const char* kFakeNydusd = R"PY(#!/usr/bin/env python3
import json, os, signal, socket, sys
args = sys.argv[1:]
with open(os.environ["FAKE_NYDUSD_LOG"], "a") as f:
    f.write(json.dumps(args) + "\n")
sock = args[args.index("--apisock") + 1]
import time
time.sleep(float(os.environ.get("FAKE_NYDUSD_DELAY", "0")))  # a slow start: not serving yet
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
s = socket.socket(socket.AF_UNIX)
s.bind(sock)
s.listen(8)
while True:
    c, _ = s.accept()
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = c.recv(4096)
        if not chunk:
            break
        data += chunk
    body = json.dumps({"id": None, "state": "RUNNING"}).encode()
    c.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\nContent-Length: "
              + str(len(body)).encode() + b"\r\n\r\n" + body)
    c.close()
)PY";

std::string slurp(const fs::path& p) {
  std::ifstream in(p);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

class NydusDaemonTest : public ::testing::Test {
 protected:
  void SetUp() override {
    fake_ = dir_ / "fake-nydusd";
    std::ofstream(fake_) << kFakeNydusd;
    fs::permissions(fake_, fs::perms::owner_all);
    ::setenv("FAKE_NYDUSD_LOG", (dir_ / "argv.jsonl").c_str(), 1);
    SnapshotterOptions o;
    o.root = (dir_ / "root").string();
    o.index_off = false;
    o.userxattr = false;
    o.daemon.nydusd_path = fake_.string();
    o.daemon.ready_timeout = std::chrono::seconds(20);
    auto s = Snapshotter::open(o);
    ASSERT_TRUE(s) << s.error().message;
    sn_ = std::move(*s);
  }
  void TearDown() override {
    for (const auto& id : sn_->daemons().running()) (void)sn_->daemons().stop(id);
  }

  // A Nydus image as containerd unpacks it: one blob layer (skipped), the bootstrap layer.
  std::string make_image(const std::string& ref_label, const std::string& ref) {
    Labels blob{{std::string(label::kTargetSnapshotRef), "sha256:b1"}, {std::string(label::kNydusDataLayer), "true"}};
    EXPECT_EQ(sn_->prepare("extract-1", "", blob).error().code, Code::kAlreadyExists);
    Labels meta{{std::string(label::kTargetSnapshotRef), "sha256:m1"},
                {std::string(label::kNydusMetaLayer), "true"},
                {ref_label, ref}};
    auto m = sn_->prepare("extract-2", "sha256:b1", meta);
    EXPECT_TRUE(m);
    std::string upper;
    for (auto& o : (*m)[0].options)
      if (o.starts_with("upperdir=")) upper = o.substr(9);
    fs::create_directories(upper + "/image");
    // A RAFS v6 bootstrap as far as the snapshotter looks: the EROFS magic at byte 1024.
    std::string boot(4096, '\0');
    const uint32_t magic = 0xE0F5E1E2;
    std::memcpy(boot.data() + 1024, &magic, 4);
    std::ofstream(upper + "/image/image.boot", std::ios::binary) << boot;
    EXPECT_TRUE(sn_->commit("sha256:m1", "extract-2", meta));
    meta_fs_ = upper;
    return fs::path(upper).parent_path().filename().string();  // the snapshot ID
  }

  nydus::test::TempDir dir_;
  fs::path fake_;
  std::string meta_fs_;
  std::unique_ptr<Snapshotter> sn_;
};

}  // namespace

TEST_F(NydusDaemonTest, ContainerGetsOverlayOverADedicatedNydusd) {
  std::string meta_id = make_image(std::string(label::kStargzReference), "localhost:5000/ns/img:nydus");
  auto m = sn_->prepare("container", "sha256:m1", {});
  ASSERT_TRUE(m) << m.error().message;
  const std::string root = sn_->root();
  const std::string mnt = root + "/mnt/" + meta_id;
  auto c = sn_->stat("container");
  ASSERT_TRUE(c);
  ASSERT_EQ(m->size(), 1u);
  EXPECT_EQ((*m)[0].type, "overlay");
  std::vector<std::string> opts = (*m)[0].options;
  ASSERT_EQ(opts.size(), 3u);
  EXPECT_TRUE(opts[0].starts_with("workdir=" + root + "/snapshots/"));
  EXPECT_TRUE(opts[1].starts_with("upperdir=" + root + "/snapshots/"));
  EXPECT_EQ(opts[2], "lowerdir=" + mnt);

  // The command line, in nydus-snapshotter's order.
  auto d = sn_->daemons().find(meta_id);
  ASSERT_TRUE(d);
  std::string line = slurp(dir_ / "argv.jsonl");
  auto argv = nlohmann::json::parse(line.substr(0, line.find('\n'))).get<std::vector<std::string>>();
  std::vector<std::string> want{"fuse",        "--thread-num", "4",
                                "--config",    d->config_path, "--bootstrap",
                                meta_fs_ + "/image/image.boot", "--mountpoint", mnt,
                                "--apisock",   d->apisock,     "--log-level",
                                "info",        "--log-rotation-size", "100",
                                "--log-file",  root + "/logs/" + d->id + "/nydusd.log",
                                "--failover-policy", "resend"};
  EXPECT_EQ(argv, want);
  // Its config: the template with the image's registry.
  auto cfg = nlohmann::json::parse(slurp(d->config_path));
  EXPECT_EQ(cfg["device"]["backend"]["config"]["host"], "localhost:5000");
  EXPECT_EQ(cfg["device"]["backend"]["config"]["repo"], "ns/img");
  EXPECT_EQ(cfg["device"]["cache"]["config"]["work_dir"], root + "/cache");

  // Mounts answers the same; a view shares the daemon (mountRemote's view shape).
  auto again = sn_->mounts("container");
  ASSERT_TRUE(again);
  EXPECT_EQ((*again)[0].options, opts);
  auto v = sn_->view("view", "sha256:m1", {});
  ASSERT_TRUE(v);
  ASSERT_EQ((*v)[0].options.size(), 1u);
  EXPECT_TRUE((*v)[0].options[0].starts_with("lowerdir=" + mnt + ":" + root + "/snapshots/"));
  EXPECT_EQ(sn_->daemons().running().size(), 1u);
  EXPECT_EQ(std::count(line.begin(), line.end(), '\n'), 1);  // one daemon start only

  // The daemon lives while a snapshot uses it, and goes with the last one.
  pid_t pid = d->pid;
  ASSERT_TRUE(sn_->remove("container"));
  EXPECT_EQ(::kill(pid, 0), 0);
  ASSERT_TRUE(sn_->remove("view"));
  EXPECT_TRUE(sn_->daemons().running().empty());
  EXPECT_NE(::kill(pid, 0), 0);
  EXPECT_FALSE(fs::exists(mnt));
  EXPECT_FALSE(fs::exists(d->apisock));
  EXPECT_FALSE(fs::exists(d->config_path));
}

TEST_F(NydusDaemonTest, CriImageRefLabelAndLayersAboveTheBootstrap) {
  std::string meta_id = make_image(std::string(label::kCriImageRef), "docker.io/library/app:1");
  // A layer committed on top of the Nydus image (e.g. a build step) stays above the nydusd mount.
  auto up = sn_->prepare("extract-3", "sha256:m1", {{std::string(label::kTargetSnapshotRef), "sha256:u1"}});
  ASSERT_TRUE(up) << up.error().message;
  std::string up_fs;
  for (auto& o : (*up)[0].options)
    if (o.starts_with("upperdir=")) up_fs = o.substr(9);
  ASSERT_FALSE(up_fs.empty());
  EXPECT_EQ(sn_->daemons().running().size(), 0u);  // unpacking a layer starts no daemon
  ASSERT_TRUE(sn_->commit("sha256:u1", "extract-3", {}));
  auto m = sn_->prepare("container", "sha256:u1", {});
  ASSERT_TRUE(m) << m.error().message;
  EXPECT_EQ((*m)[0].options.back(), "lowerdir=" + up_fs + ":" + sn_->root() + "/mnt/" + meta_id);
  auto d = sn_->daemons().find(meta_id);
  ASSERT_TRUE(d);
  auto cfg = nlohmann::json::parse(slurp(d->config_path));
  EXPECT_EQ(cfg["device"]["backend"]["config"]["host"], "index.docker.io");
  EXPECT_EQ(cfg["device"]["backend"]["config"]["repo"], "library/app");
}

// A nydusd that takes 3 s to serve holds up only the Prepares of its own image:
// Stat, List and Mounts of other snapshots are answered meanwhile, and a second
// Prepare of the same image waits for the one start instead of spawning another.
TEST_F(NydusDaemonTest, SlowDaemonStartDoesNotBlockOtherCalls) {
  std::string meta_id = make_image(std::string(label::kStargzReference), "localhost:5000/ns/img:nydus");
  auto plain = sn_->prepare("plain", "", {});
  ASSERT_TRUE(plain);
  ::setenv("FAKE_NYDUSD_DELAY", "3", 1);
  std::atomic<int> done{0};
  SResult<std::vector<Mount>> r1, r2;
  std::thread t1([&] { r1 = sn_->prepare("c1", "sha256:m1", {}); ++done; });
  // Until the fake has been spawned (it records its argv first).
  for (int i = 0; i < 200 && !fs::exists(dir_ / "argv.jsonl"); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  std::thread t2([&] { r2 = sn_->prepare("c2", "sha256:m1", {}); ++done; });
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  ::unsetenv("FAKE_NYDUSD_DELAY");

  auto t0 = std::chrono::steady_clock::now();
  EXPECT_TRUE(sn_->stat("sha256:m1"));
  int listed = 0;
  EXPECT_TRUE(sn_->walk({}, [&](const Info&) { ++listed; }));
  EXPECT_TRUE(sn_->mounts("plain"));
  EXPECT_TRUE(sn_->remove("plain"));
  auto took = std::chrono::steady_clock::now() - t0;
  EXPECT_EQ(done.load(), 0) << "the daemon start was not slow: the check proves nothing";
  EXPECT_LT(took, std::chrono::milliseconds(1000)) << "Stat/List/Mounts/Remove waited for the daemon start";
  EXPECT_GE(listed, 3);

  t1.join();
  t2.join();
  ASSERT_TRUE(r1) << r1.error().message;
  ASSERT_TRUE(r2) << r2.error().message;
  const std::string lower = "lowerdir=" + sn_->root() + "/mnt/" + meta_id;
  EXPECT_EQ((*r1)[0].options.back(), lower);
  EXPECT_EQ((*r2)[0].options.back(), lower);
  std::string argv = slurp(dir_ / "argv.jsonl");
  EXPECT_EQ(std::count(argv.begin(), argv.end(), '\n'), 1) << "one start for both Prepares";
  EXPECT_EQ(sn_->daemons().running().size(), 1u);
}

// --fs-driver fanotify: the same dedicated layout with `nydusd fanotify`, and
// (whatever the recover policy; restart here) --id and --supervisor, the
// supervisor listening while the daemon lives and gone with it: it holds the
// fanotify group fd, without which unfilled ranges would read as zeros.
TEST_F(NydusDaemonTest, FanotifyDaemonIsSupervisedWhateverThePolicy) {
  SnapshotterOptions o;
  o.root = (dir_ / "root-fanotify").string();
  o.index_off = false;
  o.userxattr = false;
  o.daemon.nydusd_path = fake_.string();
  o.daemon.ready_timeout = std::chrono::seconds(20);
  o.daemon.fs_driver = "fanotify";
  o.daemon.recover_policy = "restart";
  fs::create_directories(o.root);
  struct statfs sf{};
  ASSERT_EQ(::statfs(o.root.c_str(), &sf), 0);
  if (sf.f_type == TMPFS_MAGIC) GTEST_SKIP() << "the test dir is on tmpfs: fanotify is refused there";
  for (const auto& id : sn_->daemons().running()) (void)sn_->daemons().stop(id);
  auto s = Snapshotter::open(o);
  ASSERT_TRUE(s) << s.error().message;
  sn_ = std::move(*s);
  std::string meta_id = make_image(std::string(label::kStargzReference), "localhost:5000/ns/img:nydus");
  auto m = sn_->prepare("container", "sha256:m1", {});
  ASSERT_TRUE(m) << m.error().message;
  const std::string mnt = o.root + "/mnt/" + meta_id;
  EXPECT_EQ((*m)[0].options.back(), "lowerdir=" + mnt);
  auto d = sn_->daemons().find(meta_id);
  ASSERT_TRUE(d);
  std::string line = slurp(dir_ / "argv.jsonl");
  auto argv = nlohmann::json::parse(line.substr(0, line.find('\n'))).get<std::vector<std::string>>();
  const std::string sup = o.root + "/supervisor/" + d->id + ".sock";
  std::vector<std::string> want{"fanotify",   "--thread-num", "4", "--id", d->id,
                                "--config",   d->config_path, "--bootstrap",
                                meta_fs_ + "/image/image.boot", "--mountpoint", mnt,
                                "--apisock",  d->apisock,     "--log-level",
                                "info",       "--log-rotation-size", "100",
                                "--supervisor", sup,
                                "--log-file", o.root + "/logs/" + d->id + "/nydusd.log",
                                "--failover-policy", "resend"};
  EXPECT_EQ(argv, want);
  EXPECT_TRUE(fs::is_socket(sup));
  ASSERT_TRUE(sn_->remove("container"));
  EXPECT_TRUE(sn_->daemons().running().empty());
  EXPECT_FALSE(fs::exists(sup));
  EXPECT_FALSE(fs::exists(mnt));
}
