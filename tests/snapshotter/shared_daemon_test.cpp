// --daemon-mode shared: one nydusd started with the snapshotter (upstream's
// shared fusedev command line: no --config/--bootstrap), each image mounted
// into it by POST /api/v1/mount?mountpoint=/<bootstrap snapshot id> with
// nydus-snapshotter's MountRequest body, the overlay's lowerdir being
// <root>/mnt/<id>, and DELETE when the image's last snapshot goes while the
// daemon keeps running. Against a fake nydusd that records argv and requests.
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>

#include <gtest/gtest.h>

#include <cstring>
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

constexpr const char* kFakeSharedNydusd = R"PY(#!/usr/bin/env python3
import json, os, signal, socket, sys, urllib.parse
args = sys.argv[1:]
log = os.environ["FAKE_NYDUSD_LOG"]
with open(log, "a") as f:
    f.write(json.dumps({"argv": args}) + "\n")
sock = args[args.index("--apisock") + 1]
mnt = args[args.index("--mountpoint") + 1]
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
s = socket.socket(socket.AF_UNIX)
s.bind(sock)
s.listen(8)
while True:
    c, _ = s.accept()
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = c.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    method, target = lines[0].split(" ")[:2]
    hdrs = {l.split(":", 1)[0].strip().lower(): l.split(":", 1)[1].strip() for l in lines[1:] if ":" in l}
    n = int(hdrs.get("content-length", "0"))
    if n and hdrs.get("expect", "").lower() == "100-continue":
        c.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
    while len(body) < n:
        body += c.recv(65536)
    url = urllib.parse.urlparse(target)
    q = urllib.parse.parse_qs(url.query)
    status, out = b"200 OK", json.dumps({"id": None, "state": "RUNNING"}).encode()
    if url.path == "/api/v1/mount":
        with open(log, "a") as f:
            f.write(json.dumps({"method": method, "target": target, "body": body.decode()}) + "\n")
        rel = q["mountpoint"][0]
        if method == "POST":
            os.makedirs(mnt + rel, exist_ok=True)  # a dead predecessor's (not FUSE here) may be left
        elif method == "DELETE":
            os.rmdir(mnt + rel)
        status, out = b"204 No Content", b""
    c.sendall(b"HTTP/1.1 " + status + b"\r\nContent-Type: application/json\r\nConnection: close\r\nContent-Length: "
              + str(len(out)).encode() + b"\r\n\r\n" + out)
    c.close()
)PY";

std::vector<nlohmann::json> records(const fs::path& p) {
  std::ifstream in(p);
  std::vector<nlohmann::json> out;
  for (std::string line; std::getline(in, line);) out.push_back(nlohmann::json::parse(line));
  return out;
}

class SharedDaemonTest : public ::testing::Test {
 protected:
  void SetUp() override {
    fake_ = dir_ / "fake-nydusd";
    std::ofstream(fake_) << kFakeSharedNydusd;
    fs::permissions(fake_, fs::perms::owner_all);
    ::setenv("FAKE_NYDUSD_LOG", (dir_ / "log.jsonl").c_str(), 1);
    SnapshotterOptions o;
    o.root = (dir_ / "root").string();
    o.index_off = false;
    o.userxattr = false;
    o.daemon.nydusd_path = fake_.string();
    o.daemon.ready_timeout = std::chrono::seconds(20);
    o.daemon.shared = true;
    auto s = Snapshotter::open(o);
    ASSERT_TRUE(s) << s.error().message;
    sn_ = std::move(*s);
  }
  void TearDown() override {
    pid_t pid = sn_->daemons().shared_daemon().pid;
    if (pid > 0) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, nullptr, 0);
    }
  }

  // A Nydus image as containerd unpacks it: a blob layer (skipped), the bootstrap layer.
  std::string make_image(const std::string& n, const std::string& ref) {
    Labels blob{{std::string(label::kTargetSnapshotRef), "sha256:b" + n}, {std::string(label::kNydusDataLayer), "true"}};
    EXPECT_EQ(sn_->prepare("extract-b" + n, "", blob).error().code, Code::kAlreadyExists);
    Labels meta{{std::string(label::kTargetSnapshotRef), "sha256:m" + n},
                {std::string(label::kNydusMetaLayer), "true"},
                {std::string(label::kStargzReference), ref}};
    auto m = sn_->prepare("extract-m" + n, "sha256:b" + n, meta);
    EXPECT_TRUE(m);
    std::string upper;
    for (auto& o : (*m)[0].options)
      if (o.starts_with("upperdir=")) upper = o.substr(9);
    fs::create_directories(upper + "/image");
    std::string boot(4096, '\0');
    const uint32_t magic = 0xE0F5E1E2;  // EROFS superblock magic at 1024: a RAFS v6 bootstrap
    std::memcpy(boot.data() + 1024, &magic, 4);
    std::ofstream(upper + "/image/image.boot", std::ios::binary) << boot;
    EXPECT_TRUE(sn_->commit("sha256:m" + n, "extract-m" + n, meta));
    return fs::path(upper).parent_path().filename().string();
  }

  nydus::test::TempDir dir_;
  fs::path fake_;
  std::unique_ptr<Snapshotter> sn_;
};

}  // namespace

TEST_F(SharedDaemonTest, OneDaemonServesEveryImageThroughTheMountApi) {
  const std::string root = sn_->root();
  // Started with the snapshotter, before any image: upstream's shared fusedev command line.
  DaemonInstance sd = sn_->daemons().shared_daemon();
  ASSERT_GT(sd.pid, 0);
  auto log = records(dir_ / "log.jsonl");
  ASSERT_EQ(log.size(), 1u);
  std::vector<std::string> want{"fuse", "--thread-num", "4", "--mountpoint", root + "/mnt",
                                "--apisock", root + "/socket/shared_daemon/api.sock", "--log-level", "info",
                                "--log-rotation-size", "100", "--log-file",
                                root + "/logs/shared_daemon/nydusd.log", "--failover-policy", "resend"};
  EXPECT_EQ(log[0]["argv"].get<std::vector<std::string>>(), want);

  std::string id1 = make_image("1", "localhost:5000/ns/one:nydus");
  std::string id2 = make_image("2", "docker.io/library/two:1");
  auto c1 = sn_->prepare("c1", "sha256:m1", {});
  ASSERT_TRUE(c1) << c1.error().message;
  auto c2 = sn_->prepare("c2", "sha256:m2", {});
  ASSERT_TRUE(c2) << c2.error().message;
  EXPECT_EQ((*c1)[0].options.back(), "lowerdir=" + root + "/mnt/" + id1);
  EXPECT_EQ((*c2)[0].options.back(), "lowerdir=" + root + "/mnt/" + id2);
  EXPECT_EQ(sn_->daemons().running().size(), 2u);

  // No second process; two mount requests with nydus-snapshotter's MountRequest.
  log = records(dir_ / "log.jsonl");
  ASSERT_EQ(log.size(), 3u);
  int n = 1;
  for (const auto& [id, host, repo] : {std::tuple{id1, "localhost:5000", "ns/one"},
                                       std::tuple{id2, "index.docker.io", "library/two"}}) {
    const auto& r = log[n++];
    EXPECT_EQ(r["method"], "POST");
    // The query decodes to mountpoint=/<id> (Go's url.Values escapes the slash too).
    EXPECT_EQ(r["target"], "/api/v1/mount?mountpoint=%2F" + id);
    auto body = nlohmann::json::parse(r["body"].get<std::string>());
    EXPECT_EQ(body["fs_type"], "rafs");
    EXPECT_EQ(body["source"], root + "/snapshots/" + id + "/fs/image/image.boot");
    ASSERT_TRUE(body["config"].is_string());  // the daemon config as JSON text
    auto cfg = nlohmann::json::parse(body["config"].get<std::string>());
    EXPECT_EQ(cfg["device"]["backend"]["config"]["host"], host);
    EXPECT_EQ(cfg["device"]["backend"]["config"]["repo"], repo);
    EXPECT_EQ(cfg["device"]["cache"]["config"]["work_dir"], root + "/cache");
  }
  // Mounts again: no new request.
  ASSERT_TRUE(sn_->mounts("c1"));
  EXPECT_EQ(records(dir_ / "log.jsonl").size(), 3u);

  // The last snapshot of image one goes: DELETE /<id1>; the daemon and image two stay.
  ASSERT_TRUE(sn_->remove("c1"));
  log = records(dir_ / "log.jsonl");
  ASSERT_EQ(log.size(), 4u);
  EXPECT_EQ(log[3]["method"], "DELETE");
  EXPECT_EQ(log[3]["target"], "/api/v1/mount?mountpoint=%2F" + id1);
  EXPECT_EQ(::kill(sd.pid, 0), 0);
  EXPECT_EQ(sn_->daemons().running(), std::vector<std::string>{id2});
  EXPECT_FALSE(fs::exists(root + "/mnt/" + id1));
  EXPECT_TRUE(fs::exists(root + "/mnt/" + id2));

  ASSERT_TRUE(sn_->remove("c2"));
  log = records(dir_ / "log.jsonl");
  ASSERT_EQ(log.size(), 5u);
  EXPECT_EQ(log[4]["target"], "/api/v1/mount?mountpoint=%2F" + id2);
  EXPECT_TRUE(sn_->daemons().running().empty());
  EXPECT_EQ(::kill(sd.pid, 0), 0) << "the shared daemon outlives its images (as upstream)";
  EXPECT_EQ(sn_->daemons().shared_daemon().pid, sd.pid);
}

// The shared daemon dies: the next Prepare of an image starts a new one (the
// same command line) and mounts the image into it again.
TEST_F(SharedDaemonTest, ADeadSharedDaemonIsStartedAgainByTheNextPrepare) {
  std::string id1 = make_image("1", "localhost:5000/ns/one:nydus");
  ASSERT_TRUE(sn_->prepare("c1", "sha256:m1", {}));
  pid_t first = sn_->daemons().shared_daemon().pid;
  ASSERT_GT(first, 0);
  ::kill(first, SIGKILL);
  ::waitpid(first, nullptr, 0);
  auto c2 = sn_->prepare("c2", "sha256:m1", {});
  ASSERT_TRUE(c2) << c2.error().message;
  EXPECT_EQ((*c2)[0].options.back(), "lowerdir=" + sn_->root() + "/mnt/" + id1);
  pid_t second = sn_->daemons().shared_daemon().pid;
  EXPECT_GT(second, 0);
  EXPECT_NE(second, first);
  EXPECT_EQ(::kill(second, 0), 0);
  auto log = records(dir_ / "log.jsonl");
  std::vector<std::string> kinds;
  for (const auto& r : log) kinds.push_back(r.contains("argv") ? "start" : r["method"].get<std::string>());
  EXPECT_EQ(kinds, (std::vector<std::string>{"start", "POST", "start", "POST"}));
  EXPECT_EQ(log[0]["argv"], log[2]["argv"]);
  EXPECT_EQ(log[3]["target"], "/api/v1/mount?mountpoint=%2F" + id1);
}
