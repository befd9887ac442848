// --fs-driver fscache: one `nydusd singleton --fscache` started with the
// snapshotter; each image's bootstrap registered with PUT /api/v2/blobs in
// upstream's FscacheDaemonConfig shape, then mounted by the snapshotter as
// `erofs -o fsid=<FscacheID>`; a failed mount unregisters it again. Against a
// fake nydusd: this host has no /dev/cachefiles, so the EROFS mount itself
// (and the Remove after it) is exercised only in the QEMU guest
// (tests/fscache/qemu/guest_snapshotter.sh).
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>

#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>

#include <nlohmann/json.hpp>

#include "common/test_util.h"
#include "format/digest.h"
#include "snapshotter/labels.h"
#include "snapshotter/snapshotter.h"

using namespace nydus::snapshotter;
namespace fs = std::filesystem;

namespace {

constexpr const char* kFakeFscacheNydusd = R"PY(#!/usr/bin/env python3
# A fake `nydusd singleton --fscache`: records argv and every /api/v2/blobs request.
import json, os, signal, socket, sys, urllib.parse
args = sys.argv[1:]
log = os.environ["FAKE_NYDUSD_LOG"]
with open(log, "a") as f:
    f.write(json.dumps({"argv": args}) + "\n")
sock = args[args.index("--apisock") + 1]
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
s = socket.socket(socket.AF_UNIX)
s.bind(sock)
s.listen(8)
blobs = {}
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
    status, out = b"200 OK", json.dumps({"id": None, "state": "RUNNING", "fscache": {}}).encode()
    if url.path == "/api/v2/blobs":
        with open(log, "a") as f:
            f.write(json.dumps({"method": method, "target": target, "body": body.decode()}) + "\n")
        if method == "PUT":
            e = json.loads(body)
            blobs[e["domain_id"]] = e
            status, out = b"204 No Content", b""
        elif method == "DELETE":
            blobs.pop(q.get("domain_id", [""])[0], None)
            status, out = b"204 No Content", b""
        else:
            out = json.dumps([blobs[d] for d in q.get("domain_id", []) if d in blobs]).encode()
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

class FscacheDriverTest : public ::testing::Test {
 protected:
  void SetUp() override {
    fake_ = dir_ / "fake-nydusd";
    std::ofstream(fake_) << kFakeFscacheNydusd;
    fs::permissions(fake_, fs::perms::owner_all);
    ::setenv("FAKE_NYDUSD_LOG", (dir_ / "log.jsonl").c_str(), 1);
    SnapshotterOptions o;
    o.root = (dir_ / "root").string();
    o.index_off = false;
    o.userxattr = false;
    o.daemon.nydusd_path = fake_.string();
    o.daemon.ready_timeout = std::chrono::seconds(20);
    o.daemon.fs_driver = "fscache";
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

std::set<std::string> keys(const nlohmann::json& j) {
  std::set<std::string> out;
  for (const auto& [k, _] : j.items()) out.insert(k);
  return out;
}

}  // namespace

// upstream's erofs.FscacheID: hex sha256 of "nydus-snapshot-<id>" (value from sha256sum).
TEST(FscacheId, IsUpstreamsDigestOfTheSnapshotId) {
  EXPECT_EQ(nydus::format::fscache_id("42"), "98a7b6d18b8c7d20e5aee73a90f391719fe95784b42a2eaeb6d7698484a1e76a");
}

TEST(FscacheEntry, BadDaemonConfigIsAnErrorNotACrash) {
  EXPECT_FALSE(make_fscache_entry("", "x", "/b", "/w"));
  EXPECT_FALSE(make_fscache_entry("[]", "x", "/b", "/w"));
  EXPECT_FALSE(make_fscache_entry(R"({"device": {"backend": {"type": 3}}})", "x", "/b", "/w"));
  EXPECT_TRUE(make_fscache_entry(R"({"device": {"backend": {"type": "localfs"}}})", "x", "/b", "/w"));
}

TEST_F(FscacheDriverTest, OneSingletonDaemonEachImageRegisteredThenMountedAsErofs) {
  const std::string root = sn_->root();
  DaemonInstance sd = sn_->daemons().shared_daemon();
  ASSERT_GT(sd.pid, 0);
  auto log = records(dir_ / "log.jsonl");
  ASSERT_EQ(log.size(), 1u);
  std::vector<std::string> want{"singleton", "--fscache", root + "/fscache", "--fscache-threads", "4",
                                "--apisock", root + "/socket/shared_daemon/api.sock", "--log-level", "info",
                                "--log-rotation-size", "100", "--log-file",
                                root + "/logs/shared_daemon/nydusd.log", "--failover-policy", "resend"};
  EXPECT_EQ(log[0]["argv"].get<std::vector<std::string>>(), want);

  std::string id = make_image("1", "localhost:5000/ns/one:nydus");
  const std::string fsid = nydus::format::fscache_id(id);
  auto c1 = sn_->prepare("c1", "sha256:m1", {});
  // The fake daemon binds no cachefiles device: the kernel refuses the EROFS mount,
  // and the gRPC error says which mount.
  ASSERT_FALSE(c1);
  EXPECT_EQ(c1.error().code, Code::kUnavailable);
  EXPECT_NE(c1.error().message.find("mount -t erofs -o fsid=" + fsid + " " + root + "/mnt/" + id),
            std::string::npos) << c1.error().message;

  log = records(dir_ / "log.jsonl");
  ASSERT_EQ(log.size(), 3u);
  EXPECT_EQ(log[1]["method"], "PUT");
  EXPECT_EQ(log[1]["target"], "/api/v2/blobs");
  auto e = nlohmann::json::parse(log[1]["body"].get<std::string>());
  // upstream's FscacheDaemonConfig (config/daemonconfig/fscache.go) field names.
  EXPECT_EQ(keys(e), (std::set<std::string>{"type", "id", "domain_id", "config"}));
  EXPECT_EQ(e["type"], "bootstrap");
  EXPECT_EQ(e["id"], fsid);
  EXPECT_EQ(e["domain_id"], fsid);
  const auto& c = e["config"];
  EXPECT_EQ(keys(c), (std::set<std::string>{"id", "backend_type", "backend_config", "cache_type", "cache_config",
                                            "prefetch_config", "metadata_path"}));
  EXPECT_EQ(c["id"], fsid);
  EXPECT_EQ(c["backend_type"], "registry");
  EXPECT_EQ(c["backend_config"]["host"], "localhost:5000");
  EXPECT_EQ(c["backend_config"]["repo"], "ns/one");
  EXPECT_EQ(c["cache_type"], "fscache");
  EXPECT_EQ(c["cache_config"]["work_dir"], root + "/cache");
  EXPECT_EQ(c["metadata_path"], root + "/snapshots/" + id + "/fs/image/image.boot");
  EXPECT_EQ(c["prefetch_config"]["enable"], true);
  // The failed mount unregisters the image (upstream's UnbindBlob with domain == id: domain_id only).
  EXPECT_EQ(log[2]["method"], "DELETE");
  EXPECT_EQ(log[2]["target"], "/api/v2/blobs?domain_id=" + fsid);
  EXPECT_TRUE(sn_->daemons().running().empty());
  EXPECT_FALSE(fs::exists(root + "/config/shared_daemon/" + id));
  EXPECT_EQ(::kill(sd.pid, 0), 0) << "the shared daemon keeps running";
}
