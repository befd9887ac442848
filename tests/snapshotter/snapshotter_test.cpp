// Snapshot semantics against containerd v1.6's overlay snapshotter
// (snapshots/overlay/overlay.go, snapshots/storage/bolt.go: mounts, parent
// chains, error codes) and nydus-snapshotter's handling of Nydus layers.
#include "snapshotter/snapshotter.h"

#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>

#include "common/test_util.h"
#include "snapshotter/blob_cache_gc.h"
#include "snapshotter/labels.h"

using namespace nydus::snapshotter;
namespace fs = std::filesystem;

namespace {

class SnapshotterTest : public ::testing::Test {
 protected:
  void SetUp() override { reopen(); }
  void reopen() {
    sn_.reset();
    SnapshotterOptions o;
    o.root = (dir_ / "root").string();
    o.index_off = false;
    o.userxattr = false;
    o.daemon.nydusd_path = "/nonexistent/nydusd";
    o.daemon.ready_timeout = std::chrono::seconds(2);
    auto s = Snapshotter::open(o);
    ASSERT_TRUE(s) << s.error().message;
    sn_ = std::move(*s);
  }
  std::string fs_of(const std::string& id) { return sn_->upper_path(id); }
  // Prepare + write a file + Commit, as containerd's unpacker does.
  void layer(const std::string& name, const std::string& parent) {
    auto m = sn_->prepare("extract-" + name, parent, {});
    ASSERT_TRUE(m) << m.error().message;
    std::string upper = m->front().type == "bind" ? m->front().source : "";
    if (upper.empty())
      for (auto& o : m->front().options)
        if (o.starts_with("upperdir=")) upper = o.substr(9);
    std::ofstream(upper + "/" + name) << name;
    ASSERT_TRUE(sn_->commit(name, "extract-" + name, {{"l", name}}));
  }

  nydus::test::TempDir dir_;
  std::unique_ptr<Snapshotter> sn_;
};

Code code_of(const auto& r) { return r ? Code::kUnknown : r.error().code; }

}  // namespace

TEST_F(SnapshotterTest, NoParentIsABindMount) {
  auto m = sn_->prepare("a", "", {});
  ASSERT_TRUE(m);
  ASSERT_EQ(m->size(), 1u);
  EXPECT_EQ((*m)[0].type, "bind");
  EXPECT_EQ((*m)[0].source, fs_of("1"));
  EXPECT_EQ((*m)[0].options, (std::vector<std::string>{"rw", "rbind"}));
  EXPECT_TRUE(fs::is_directory(sn_->work_path("1")));
  auto v = sn_->view("v", "", {});
  ASSERT_TRUE(v);
  EXPECT_EQ((*v)[0].options, (std::vector<std::string>{"ro", "rbind"}));
  EXPECT_FALSE(fs::exists(sn_->work_path("2")));  // a view has no work dir
}

TEST_F(SnapshotterTest, OverlayLowerdirNearestParentFirst) {
  layer("l1", "");
  layer("l2", "l1");
  auto m = sn_->prepare("c", "l2", {});
  ASSERT_TRUE(m);
  ASSERT_EQ(m->size(), 1u);
  EXPECT_EQ((*m)[0].type, "overlay");
  EXPECT_EQ((*m)[0].source, "overlay");
  // Commit kept each layer's ID, so lowerdir names the directories the layers were unpacked to.
  EXPECT_EQ((*m)[0].options, (std::vector<std::string>{"workdir=" + sn_->work_path("3"), "upperdir=" + fs_of("3"),
                                                        "lowerdir=" + fs_of("2") + ":" + fs_of("1")}));
  EXPECT_TRUE(fs::exists(fs_of("2") + "/l2"));
  auto again = sn_->mounts("c");
  ASSERT_TRUE(again);
  EXPECT_EQ((*again)[0].options, (*m)[0].options);
  // A view of one layer is a read-only bind of it; of two, a lowerdir-only overlay.
  auto v1 = sn_->view("v1", "l1", {});
  ASSERT_TRUE(v1);
  EXPECT_EQ((*v1)[0].type, "bind");
  EXPECT_EQ((*v1)[0].source, fs_of("1"));
  EXPECT_EQ((*v1)[0].options, (std::vector<std::string>{"ro", "rbind"}));
  auto v2 = sn_->view("v2", "l2", {});
  ASSERT_TRUE(v2);
  EXPECT_EQ((*v2)[0].type, "overlay");
  EXPECT_EQ((*v2)[0].options, (std::vector<std::string>{"lowerdir=" + fs_of("2") + ":" + fs_of("1")}));
}

TEST_F(SnapshotterTest, ErrorCodesAsContainerd) {
  layer("base", "");
  ASSERT_TRUE(sn_->prepare("act", "base", {}));
  EXPECT_EQ(code_of(sn_->prepare("act", "base", {})), Code::kAlreadyExists);
  EXPECT_EQ(code_of(sn_->prepare("x", "missing", {})), Code::kNotFound);
  EXPECT_EQ(code_of(sn_->prepare("x", "act", {})), Code::kInvalidArgument);  // parent not committed
  EXPECT_EQ(code_of(sn_->prepare("", "", {})), Code::kInvalidArgument);
  EXPECT_EQ(code_of(sn_->commit("base", "act", {})), Code::kAlreadyExists);
  EXPECT_EQ(code_of(sn_->commit("n", "nokey", {})), Code::kNotFound);
  ASSERT_TRUE(sn_->view("vw", "base", {}));
  EXPECT_EQ(code_of(sn_->commit("n", "vw", {})), Code::kFailedPrecondition);
  EXPECT_EQ(code_of(sn_->mounts("base")), Code::kFailedPrecondition);  // committed
  EXPECT_EQ(code_of(sn_->mounts("nokey")), Code::kNotFound);
  EXPECT_EQ(code_of(sn_->remove("base")), Code::kFailedPrecondition);  // has children
  EXPECT_EQ(code_of(sn_->remove("nokey")), Code::kNotFound);
  EXPECT_EQ(code_of(sn_->stat("nokey")), Code::kNotFound);
  Info i;
  i.name = "base";
  EXPECT_EQ(code_of(sn_->update(i, {"parent"})), Code::kInvalidArgument);
  // Nothing half-made: the failed calls left no directories.
  EXPECT_TRUE(sn_->cleanup());
  size_t dirs = std::distance(fs::directory_iterator(sn_->root() + "/snapshots"), fs::directory_iterator());
  EXPECT_EQ(dirs, 3u);
}

TEST_F(SnapshotterTest, StatUpdateUsageWalk) {
  layer("base", "");
  auto st = sn_->stat("base");
  ASSERT_TRUE(st);
  EXPECT_EQ(st->kind, Kind::kCommitted);
  EXPECT_EQ(st->labels, (Labels{{"l", "base"}}));  // commit's labels replace prepare's
  EXPECT_GT(st->created_ns, 0);
  Info i;
  i.name = "base";
  i.labels = {{"a", "1"}, {"b", "2"}};
  auto u = sn_->update(i, {"labels.a"});
  ASSERT_TRUE(u);
  EXPECT_EQ(u->labels, (Labels{{"l", "base"}, {"a", "1"}}));
  i.labels = {};
  u = sn_->update(i, {"labels.l"});  // absent in the request: removed
  ASSERT_TRUE(u);
  EXPECT_EQ(u->labels, (Labels{{"a", "1"}}));
  i.labels = {{"z", "9"}};
  u = sn_->update(i, {});  // no mask: all labels
  ASSERT_TRUE(u);
  EXPECT_EQ(u->labels, (Labels{{"z", "9"}}));

  auto m = sn_->prepare("act", "base", {});
  ASSERT_TRUE(m);
  std::ofstream(fs_of("2") + "/data") << std::string(10000, 'x');
  auto us = sn_->usage("act");
  ASSERT_TRUE(us);
  EXPECT_EQ(us->inodes, 2);  // the fs dir and the file
  EXPECT_GE(us->size, 10000);
  auto cu = sn_->usage("base");  // measured at commit
  ASSERT_TRUE(cu);
  EXPECT_EQ(cu->inodes, 2);

  std::vector<std::string> names;
  auto collect = [&](const std::vector<std::string>& f) {
    names.clear();
    auto r = sn_->walk(f, [&](const Info& info) { names.push_back(info.name); });
    EXPECT_TRUE(r);
    return names;
  };
  EXPECT_EQ(collect({}), (std::vector<std::string>{"act", "base"}));
  EXPECT_EQ(collect({"kind==committed"}), (std::vector<std::string>{"base"}));
  EXPECT_EQ(collect({"labels.z==9"}), (std::vector<std::string>{"base"}));
  EXPECT_EQ(collect({"parent==base", "name==nothing"}), (std::vector<std::string>{"act"}));
  EXPECT_EQ(code_of(sn_->walk({"kind=="}, [](const Info&) {})), Code::kInvalidArgument);
}

TEST_F(SnapshotterTest, RemoveAndCleanupDeleteDirectories) {
  layer("base", "");
  ASSERT_TRUE(sn_->prepare("act", "base", {}));
  ASSERT_TRUE(sn_->remove("act"));
  EXPECT_FALSE(fs::exists(sn_->root() + "/snapshots/2"));
  ASSERT_TRUE(sn_->remove("base"));
  EXPECT_FALSE(fs::exists(sn_->root() + "/snapshots/1"));
  fs::create_directories(sn_->root() + "/snapshots/new-stray/fs");
  ASSERT_TRUE(sn_->cleanup());
  EXPECT_FALSE(fs::exists(sn_->root() + "/snapshots/new-stray"));
}

TEST_F(SnapshotterTest, MetadataSurvivesReopen) {
  layer("base", "");
  ASSERT_TRUE(sn_->prepare("act", "base", {{"k", "v"}}));
  reopen();
  auto st = sn_->stat("act");
  ASSERT_TRUE(st);
  EXPECT_EQ(st->parent, "base");
  EXPECT_EQ(st->labels, (Labels{{"k", "v"}}));
  auto m = sn_->mounts("act");
  ASSERT_TRUE(m);
  EXPECT_EQ((*m)[0].options.back(), "lowerdir=" + fs_of("1"));
  // IDs are never reused, even after the newest snapshot is removed.
  ASSERT_TRUE(sn_->remove("act"));
  ASSERT_TRUE(sn_->prepare("act2", "base", {}));
  EXPECT_TRUE(fs::exists(sn_->root() + "/snapshots/3"));
}

TEST_F(SnapshotterTest, UntrustedLabelsAreBounded) {
  Labels big{{"k", std::string(label::kMaxLabelSize, 'v')}};
  EXPECT_EQ(code_of(sn_->prepare("a", "", big)), Code::kInvalidArgument);
  Labels many;
  for (size_t i = 0; i <= label::kMaxLabels; ++i) many["k" + std::to_string(i)] = "v";
  EXPECT_EQ(code_of(sn_->prepare("a", "", many)), Code::kInvalidArgument);
  EXPECT_EQ(code_of(sn_->prepare("a", "", {{"", "v"}})), Code::kInvalidArgument);
  Labels fits{{"k", std::string(label::kMaxLabelSize - 1, 'v')}};
  EXPECT_TRUE(sn_->prepare("a", "", fits));
}

TEST_F(SnapshotterTest, NydusDataLayerIsCommittedAndAnsweredAlreadyExists) {
  const std::string chain = "sha256:1111";
  Labels l{{std::string(label::kTargetSnapshotRef), chain},
           {std::string(label::kNydusDataLayer), "true"},
           {std::string(label::kStargzReference), "localhost:5000/img:nydus"}};
  auto r = sn_->prepare("default/1/extract-1 sha256:1111", "", l);
  EXPECT_EQ(code_of(r), Code::kAlreadyExists);
  // containerd then finds the target by this filter and Stat: a committed snapshot with the labels.
  std::vector<Info> found;
  ASSERT_TRUE(sn_->walk({"labels.\"containerd.io/snapshot.ref\"==" + chain + ",parent==\"\""},
                        [&](const Info& i) { found.push_back(i); }));
  ASSERT_EQ(found.size(), 1u);
  EXPECT_EQ(found[0].name, chain);
  EXPECT_EQ(found[0].kind, Kind::kCommitted);
  EXPECT_EQ(found[0].labels, l);
  EXPECT_EQ(code_of(sn_->stat("default/1/extract-1 sha256:1111")), Code::kNotFound);
  EXPECT_TRUE(fs::is_directory(sn_->root() + "/snapshots/" + std::string("1") + "/fs"));
  // Again (another pull): still AlreadyExists, nothing new.
  EXPECT_EQ(code_of(sn_->prepare("default/2/extract-2 sha256:1111", "", l)), Code::kAlreadyExists);

  // The bootstrap layer on top is unpacked normally (an ordinary overlay over the empty blob layer).
  Labels meta{{std::string(label::kTargetSnapshotRef), "sha256:2222"},
              {std::string(label::kNydusMetaLayer), "true"},
              {std::string(label::kStargzReference), "localhost:5000/img:nydus"}};
  auto m = sn_->prepare("extract-boot", chain, meta);
  ASSERT_TRUE(m) << m.error().message;
  EXPECT_EQ((*m)[0].type, "overlay");
  std::string upper;
  for (auto& o : (*m)[0].options)
    if (o.starts_with("upperdir=")) upper = o.substr(9);
  ASSERT_TRUE(sn_->commit("sha256:2222", "extract-boot", meta));

  // A container right on the data layer (a manifest without its bootstrap
  // layer) would get an empty rootfs: refused, naming the missing layer.
  auto on_blob = sn_->prepare("container", chain, {});
  EXPECT_EQ(code_of(on_blob), Code::kFailedPrecondition);
  if (!on_blob) { EXPECT_NE(on_blob.error().message.find("nydus-bootstrap layer above them"), std::string::npos); }
  EXPECT_EQ(code_of(sn_->view("view", chain, {})), Code::kFailedPrecondition);
  EXPECT_EQ(code_of(sn_->stat("container")), Code::kNotFound);

  // A container on it needs a nydusd; with no bootstrap file in the layer the
  // answer is FailedPrecondition and no snapshot is left behind.
  auto no_file = sn_->prepare("container", "sha256:2222", {});
  EXPECT_EQ(code_of(no_file), Code::kFailedPrecondition);
  if (!no_file) { EXPECT_NE(no_file.error().message.find("has no bootstrap file"), std::string::npos); }
  EXPECT_EQ(code_of(sn_->stat("container")), Code::kNotFound);
  // Not a bootstrap (text): FailedPrecondition before any nydusd is started.
  auto boot_dir = upper + "/image";
  fs::create_directories(boot_dir);
  std::ofstream(boot_dir + "/image.boot") << std::string(4096, 'x');
  auto text = sn_->prepare("container", "sha256:2222", {});
  EXPECT_EQ(code_of(text), Code::kFailedPrecondition);
  if (!text) { EXPECT_NE(text.error().message.find("is not a RAFS bootstrap"), std::string::npos); }
  // With a bootstrap (EROFS magic at 1024) but a nydusd that cannot start: Unavailable, nothing left.
  std::string v6(4096, '\0');
  const uint32_t magic = 0xE0F5E1E2;  // EROFS_SUPER_MAGIC_V1, little-endian on disk
  std::memcpy(v6.data() + 1024, &magic, 4);
  std::ofstream(boot_dir + "/image.boot", std::ios::binary | std::ios::trunc) << v6;
  EXPECT_EQ(code_of(sn_->prepare("container", "sha256:2222", {})), Code::kUnavailable);
  EXPECT_EQ(code_of(sn_->stat("container")), Code::kNotFound);
  EXPECT_TRUE(sn_->daemons().running().empty());
}

TEST_F(SnapshotterTest, NydusImageWithoutReferenceIsRefused) {
  Labels meta{{std::string(label::kTargetSnapshotRef), "sha256:2222"}, {std::string(label::kNydusMetaLayer), "true"}};
  ASSERT_TRUE(sn_->prepare("extract-boot", "", meta));
  ASSERT_TRUE(sn_->commit("sha256:2222", "extract-boot", meta));
  auto r = sn_->prepare("container", "sha256:2222", {});
  EXPECT_EQ(code_of(r), Code::kInvalidArgument);
  EXPECT_NE(r.error().message.find("image reference"), std::string::npos);
}

TEST(BlobCacheGc, CacheFileNamesAsNydusSnapshotterReadsThem) {
  const std::string id(64, 'a');
  for (const char* suffix : {"", ".blob.data", ".chunk_map", ".blob.data.chunk_map", ".blob.meta", ".image.disk",
                             ".layer.disk"})
    EXPECT_EQ(blob_id_of_cache_file(id + suffix), id) << suffix;
  EXPECT_EQ(blob_id_of_cache_file(id + ".blob.data.tmp"), "");
  EXPECT_EQ(blob_id_of_cache_file(std::string(63, 'a') + ".blob.data"), "");
  EXPECT_EQ(blob_id_of_cache_file(std::string(64, 'A') + ".blob.data"), "");
  EXPECT_EQ(blob_id_of_cache_file("config.json"), "");
}

// Removing the last Nydus data layer snapshot of a blob removes that blob's
// cache files; another image's blob and files that are not blob caches stay.
TEST_F(SnapshotterTest, RemovingANydusDataLayerRemovesItsBlobCacheFiles) {
  const std::string a(64, 'a'), b(64, 'b');
  auto data_layer = [&](const std::string& chain, const std::string& blob, std::string_view digest_label) {
    Labels l{{std::string(label::kTargetSnapshotRef), chain},
             {std::string(label::kNydusDataLayer), "true"},
             {std::string(digest_label), "sha256:" + blob}};
    EXPECT_EQ(code_of(sn_->prepare("extract " + chain, "", l)), Code::kAlreadyExists);
  };
  data_layer("sha256:chain-a", a, label::kStargzDigest);
  data_layer("sha256:chain-b", b, label::kCriLayerDigest);
  const fs::path cache = fs::path(sn_->root()) / "cache";
  fs::create_directories(cache);
  std::vector<std::string> files_a, files_b;
  for (const char* suffix : {".blob.data", ".chunk_map", ".blob.meta"}) {
    files_a.push_back(a + suffix);
    files_b.push_back(b + suffix);
    std::ofstream(cache / (a + suffix)) << "x";
    std::ofstream(cache / (b + suffix)) << "x";
  }
  std::ofstream(cache / "notes.txt") << "not a blob cache file";

  ASSERT_TRUE(sn_->remove("sha256:chain-a"));
  for (const auto& f : files_a) EXPECT_FALSE(fs::exists(cache / f)) << f;
  for (const auto& f : files_b) EXPECT_TRUE(fs::exists(cache / f)) << f;
  EXPECT_TRUE(fs::exists(cache / "notes.txt"));
  // A stray cache file of a blob no snapshot names goes at the next Cleanup.
  std::ofstream(cache / (std::string(64, 'c') + ".blob.data")) << "x";
  ASSERT_TRUE(sn_->cleanup());
  EXPECT_FALSE(fs::exists(cache / (std::string(64, 'c') + ".blob.data")));
  for (const auto& f : files_b) EXPECT_TRUE(fs::exists(cache / f)) << f;
  ASSERT_TRUE(sn_->remove("sha256:chain-b"));
  for (const auto& f : files_b) EXPECT_FALSE(fs::exists(cache / f)) << f;
}
