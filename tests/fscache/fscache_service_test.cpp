// nydusd's fscache request loop against the emulated kernel (in-process,
// through a socket pair), under each kernel profile: mounts whose every byte
// is checked against the builder's own layout files, failed and unknown
// objects, remounts served from the cache, shared domains, failing and slow
// backends, malformed messages, daemon restarts with `restore` and reopens.
#include "fscache/fscache_service.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <chrono>
#include <thread>

#include "fscache/kernel_emulator.h"
#include "fscache/fscache_test_util.h"
#include "storage/storage_test_util.h"

namespace nydus::fscache {
namespace {

using namespace std::chrono_literals;
using test::TestImage;
namespace fs = std::filesystem;

class FscacheServiceTest : public ::testing::TestWithParam<emu::Profile> {
 protected:
  void SetUp() override {
    img_ = test::build_image(tmp_ / "img", 1);
    ASSERT_FALSE(img_.blob_id.empty());
    emu_ = std::make_unique<emu::Emulator>(GetParam(), tmp_ / "store");
    registry_ = std::make_unique<BlobRegistry>(tmp_ / "work");
    start_service();
    ASSERT_TRUE(emu_->wait_bound(5s));
  }
  void TearDown() override {
    if (svc_) svc_->stop();
    svc_.reset();
    emu_.reset();
  }

  // Bind a fresh daemon to the emulated device (or, with `restore`, hand it
  // the same device as after a takeover).
  void start_service(int devfd = -1, bool restore = false) {
    if (devfd < 0) devfd = emu_->open_pair();
    auto dev = CacheDevice::adopt(devfd);
    ASSERT_TRUE(dev) << dev.error().message;
    if (!restore) {
      ASSERT_TRUE(bind_cache(*dev, tmp_ / "cachedir", "t"));
    }
    svc_ = std::make_unique<FscacheService>(std::move(*dev), *registry_, 3);
    ASSERT_TRUE(svc_->start(restore));
  }

  void add(const TestImage& img, const std::string& fsid, const std::string& domain = "",
           std::shared_ptr<storage::Backend> backend = nullptr, bool prefetch_all = false) {
    auto e = parse_blob_entry(test::entry_json(img, fsid, domain, tmp_ / "work", prefetch_all));
    ASSERT_TRUE(e) << e.error().message;
    auto st = registry_->add(*e, std::move(backend));
    ASSERT_TRUE(st) << st.error().message;
  }

  // Every byte of the mount's objects equals the bootstrap file and the
  // builder's blob layout.
  void expect_objects_match(int m, const TestImage& img) {
    const int boot = emu_->boot_object(m);
    ASSERT_TRUE(emu_->read_all(boot, 2, 16 << 10));
    const auto boot_bytes = nydus::test::read_file(img.bootstrap);
    EXPECT_EQ(emu_->object_size(boot), boot_bytes.size());
    EXPECT_EQ(test::read_prefix(emu_->backing_path(boot), boot_bytes.size()), boot_bytes);
    const auto blobs = emu_->blob_objects(m);
    ASSERT_EQ(blobs.size(), 1u);
    EXPECT_EQ(emu_->object_size(blobs[0]), img.blob_size);
    const auto layout = nydus::test::read_file(img.cache_dir / (img.blob_id + ".blob.data"));
    EXPECT_EQ(test::read_prefix(emu_->backing_path(blobs[0]), layout.size()), layout);
  }

  void expect_clean() {
    for (const auto& v : emu_->violations()) ADD_FAILURE() << "violation: " << v;
  }

  nydus::test::TempDir tmp_;
  TestImage img_;
  std::unique_ptr<emu::Emulator> emu_;
  std::unique_ptr<BlobRegistry> registry_;
  std::unique_ptr<FscacheService> svc_;
};

TEST_P(FscacheServiceTest, MountAndReadEverything) {
  add(img_, "img1");
  auto m = emu_->mount("img1");
  ASSERT_TRUE(m) << m.error().message;
  ASSERT_TRUE(emu_->read_all(emu_->boot_object(*m), 4, 64 << 10));
  ASSERT_TRUE(emu_->read_all(emu_->blob_objects(*m)[0], 4, 256 << 10));
  expect_objects_match(*m, img_);
  ASSERT_TRUE(emu_->umount(*m));
  EXPECT_TRUE(emu_->check_no_leaks(5s));
  expect_clean();
  const auto s = svc_->stats();
  EXPECT_EQ(s.opens, 2u);
  EXPECT_EQ(s.read_failures, 0u);
  // Every blob byte came through the daemon: asked for by a READ, or
  // written past one (amplify_io) before the reader got there.
  EXPECT_GE(s.read_bytes + s.amplified_bytes, img_.blob_size);
  // The emulator delivers CLOSE once the daemon has read the OPENs before it.
  for (int i = 0; i < 100 && svc_->stats().closes < 2; ++i) std::this_thread::sleep_for(10ms);
  EXPECT_EQ(svc_->stats().closes, 2u);
}

TEST_P(FscacheServiceTest, UnknownFsidFailsTheMountAndLeaksNothing) {
  auto m = emu_->mount("nobody");
  EXPECT_FALSE(m);
  EXPECT_EQ(emu_->counters().copen_failed, 1u);
  EXPECT_TRUE(emu_->check_no_leaks(5s));
  expect_clean();
  EXPECT_EQ(svc_->stats().open_failures, 1u);
}

TEST_P(FscacheServiceTest, RemountIsServedFromTheCacheFiles) {
  add(img_, "img1");
  auto m = emu_->mount("img1");
  ASSERT_TRUE(m);
  ASSERT_TRUE(emu_->read_all(emu_->blob_objects(*m)[0], 2, 128 << 10));
  ASSERT_TRUE(emu_->umount(*m));
  const auto reads_before = emu_->counters().reads_sent;
  auto m2 = emu_->mount("img1");
  ASSERT_TRUE(m2);
  ASSERT_TRUE(emu_->read_all(emu_->blob_objects(*m2)[0], 2, 128 << 10));
  EXPECT_EQ(emu_->counters().reads_sent, reads_before) << "same copen size: the cache file must be reused";
  expect_objects_match(*m2, img_);
  expect_clean();
}

TEST_P(FscacheServiceTest, SharedDomainOpensASharedBlobOnce) {
  const TestImage twin = test::build_image(tmp_ / "twin", 1);  // same tree: same blob
  ASSERT_EQ(twin.blob_id, img_.blob_id);
  add(img_, "a", "dom");
  add(twin, "b", "dom");
  auto ma = emu_->mount("a", "dom");
  ASSERT_TRUE(ma) << ma.error().message;
  const auto opens = emu_->counters().opens_sent;
  auto mb = emu_->mount("b", "dom");
  ASSERT_TRUE(mb) << mb.error().message;
  EXPECT_EQ(emu_->counters().opens_sent, opens + 1) << "only b's bootstrap is opened";
  EXPECT_EQ(emu_->blob_objects(*ma), emu_->blob_objects(*mb));
  EXPECT_FALSE(emu_->mount("a", "dom")) << "a duplicate fsid in a domain is refused";
  ASSERT_TRUE(emu_->read_all(emu_->blob_objects(*mb)[0], 3, 64 << 10));
  expect_objects_match(*ma, img_);
  ASSERT_TRUE(emu_->umount(*ma));
  ASSERT_TRUE(emu_->umount(*mb));
  EXPECT_TRUE(emu_->check_no_leaks(5s));
  expect_clean();
}

TEST_P(FscacheServiceTest, FailingBackendGivesEioThenRecovers) {
  auto real = storage::make_backend(nlohmann::json{{"type", "localfs"}, {"config", {{"dir", img_.blob_dir.string()}}}});
  ASSERT_TRUE(real);
  auto fake = std::make_shared<storage::test::FakeBackend>(*real);
  fake->fail = true;
  add(img_, "img1", "", fake);
  auto m = emu_->mount("img1");
  ASSERT_TRUE(m) << "the mount needs only the bootstrap";
  const int blob = emu_->blob_objects(*m)[0];
  auto st = emu_->read(blob, 0, 4096, 10s);
  EXPECT_FALSE(st);
  EXPECT_EQ(st.error().sys_errno, EIO);
  EXPECT_EQ(emu_->counters().reader_eio, 1u);
  EXPECT_GE(svc_->stats().read_failures, 1u);
  // The daemon keeps serving: once the backend is back, the same range reads.
  fake->fail = false;
  ASSERT_TRUE(emu_->read_all(blob, 3, 64 << 10));
  expect_objects_match(*m, img_);
  expect_clean();
}

TEST_P(FscacheServiceTest, SlowBlobDoesNotBlockOtherObjects) {
  auto real = storage::make_backend(nlohmann::json{{"type", "localfs"}, {"config", {{"dir", img_.blob_dir.string()}}}});
  ASSERT_TRUE(real);
  auto slow = std::make_shared<storage::test::FakeBackend>(*real);
  std::atomic<bool> release{false};
  slow->hook = [&](uint64_t, uint64_t) {
    while (!release) std::this_thread::sleep_for(5ms);
  };
  add(img_, "img1", "", slow);
  auto m = emu_->mount("img1");
  ASSERT_TRUE(m);
  Status blob_result = ok();
  auto t = emu_->read_async(emu_->blob_objects(*m)[0], 0, 64 << 10, &blob_result, 20s);
  // Two workers stay free for other objects: the whole bootstrap reads.
  const auto t0 = std::chrono::steady_clock::now();
  EXPECT_TRUE(emu_->read_all(emu_->boot_object(*m), 2, 8192, 1, 5s));
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 5s);
  release = true;
  t->join();
  EXPECT_TRUE(blob_result) << blob_result.error().message;
  expect_clean();
}

TEST_P(FscacheServiceTest, PrefetchFillsTheBlobWithoutReads) {
  add(img_, "img1", "", nullptr, /*prefetch_all=*/true);
  auto m = emu_->mount("img1");
  ASSERT_TRUE(m);
  // Every chunk is written page-padded, and chunks tile the blob layout.
  for (int i = 0; i < 500 && svc_->stats().prefetch_bytes < img_.blob_size; ++i) std::this_thread::sleep_for(10ms);
  EXPECT_EQ(svc_->stats().prefetch_bytes, img_.blob_size);
  const auto reads = emu_->counters().reads_sent;
  ASSERT_TRUE(emu_->read_all(emu_->blob_objects(*m)[0], 2, 64 << 10));
  EXPECT_EQ(emu_->counters().reads_sent, reads) << "prefetched ranges need no READ";
  expect_objects_match(*m, img_);
  expect_clean();
}

// Only kernels that reopen objects (6.8+) run this: an older one has no
// restore path to test (instantiated below with those profiles only).
class FscacheReopenTest : public FscacheServiceTest {};

TEST_P(FscacheReopenTest, RestartedDaemonServesReopenedObjects) {
  ASSERT_TRUE(GetParam().reopen);
  add(img_, "img1");
  auto m = emu_->mount("img1");
  ASSERT_TRUE(m);
  // Keep the device alive across the restart (what the supervisor does).
  const int keep = ::fcntl(svc_->device().fd(), F_DUPFD_CLOEXEC, 0);
  ASSERT_GE(keep, 0);
  svc_->stop();  // closes every anon fd: the emulator marks the objects closed
  svc_.reset();
  registry_ = std::make_unique<BlobRegistry>(tmp_ / "work");
  add(img_, "img1");
  start_service(keep, /*restore=*/true);
  ASSERT_TRUE(emu_->wait_restored(1, 5s));
  auto st = emu_->read_all(emu_->blob_objects(*m)[0], 3, 64 << 10);
  ASSERT_TRUE(st) << st.error().message;
  EXPECT_GE(emu_->counters().reopens, 1u);
  expect_objects_match(*m, img_);
  ASSERT_TRUE(emu_->umount(*m));
  EXPECT_TRUE(emu_->check_no_leaks(5s));
  expect_clean();
}

TEST_P(FscacheServiceTest, MalformedMessagesCostOnlyThemselves) {
  add(img_, "img1");
  // Garbage of every length straight into the handler: no crash, counted.
  std::mt19937 rng(3);
  for (int i = 0; i < 2000; ++i) {
    std::vector<uint8_t> junk(rng() % 80);
    for (auto& b : junk) b = uint8_t(rng());
    if (junk.size() >= 8 && (rng() % 2)) junk[4] = 1, junk[5] = junk[6] = junk[7] = 0;  // CLOSE-shaped
    svc_->handle_buffer(junk);
  }
  EXPECT_GE(svc_->stats().malformed, 1000u);
  // A bad OPEN naming a real object fd gets a negative copen and its fd closed.
  const int f = ::open((tmp_ / "victim").c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0600);
  ASSERT_GE(f, 0);
  std::string bad = encode_open(999, 77, "erofs,img1", "img1", f);
  bad[16] = 0x7f;  // volume key size that does not fit
  svc_->handle_buffer({reinterpret_cast<const uint8_t*>(bad.data()), bad.size()});
  EXPECT_EQ(::fcntl(f, F_GETFD), -1) << "the OPEN's fd must be closed";
  // The loop still serves real mounts.
  auto m = emu_->mount("img1");
  ASSERT_TRUE(m) << m.error().message;
  ASSERT_TRUE(emu_->read_all(emu_->blob_objects(*m)[0], 2, 64 << 10));
  expect_objects_match(*m, img_);
}

std::string kernel_name(const ::testing::TestParamInfo<emu::Profile>& info) {
  std::string n = "linux_" + info.param.name;
  std::replace(n.begin(), n.end(), '.', '_');
  return n;
}

INSTANTIATE_TEST_SUITE_P(Kernels, FscacheServiceTest,
                         ::testing::Values(emu::Profile::linux_6_12(), emu::Profile::linux_6_8(),
                                           emu::Profile::linux_5_19()),
                         kernel_name);
INSTANTIATE_TEST_SUITE_P(Kernels, FscacheReopenTest,
                         ::testing::Values(emu::Profile::linux_6_12(), emu::Profile::linux_6_8()), kernel_name);

}  // namespace
}  // namespace nydus::fscache
