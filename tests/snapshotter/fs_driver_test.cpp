// --fs-driver: what `auto` picks and why, what explicit drivers need, and the probe.
#include <gtest/gtest.h>

#include <sys/utsname.h>

#include <cstdio>
#include <filesystem>
#include <fstream>

#include "snapshotter/fs_driver.h"

using namespace nydus::snapshotter;

namespace {

KernelPaths paths(bool init, bool mark, bool erofs, bool fscache = false) {
  KernelPaths k;
  k.fanotify_pre_content = init;
  k.pre_access_mark = mark;
  k.erofs = erofs;
  k.fscache_ondemand = fscache;
  k.fanotify_why = init ? "INIT-OK" : "INIT-FAILED";
  k.mark_why = mark ? "MARK-OK" : "MARK-FAILED";
  k.erofs_why = erofs ? "EROFS-OK" : "EROFS-MISSING";
  k.fscache_why = fscache ? "CACHEFILES-OK" : "CACHEFILES-MISSING";
  return k;
}

bool has(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

}  // namespace

TEST(FsDriver, AutoPicksFanotifyThenFscacheThenFusedev) {
  for (int bits = 0; bits < 8; ++bits) {
    const bool init = bits & 1, mark = bits & 2, erofs = bits & 4;
    for (bool fsc : {false, true}) {
      auto c = choose_fs_driver("auto", paths(init, mark, erofs, fsc));
      ASSERT_TRUE(c);
      const std::string want = bits == 7 ? "fanotify" : fsc ? "fscache" : "fusedev";
      EXPECT_EQ(c->driver, want) << c->reason;
      // Each reason is in the log line, and the verdict.
      EXPECT_TRUE(has(c->reason, init ? "INIT-OK" : "INIT-FAILED")) << c->reason;
      EXPECT_TRUE(has(c->reason, mark ? "MARK-OK" : "MARK-FAILED")) << c->reason;
      EXPECT_TRUE(has(c->reason, erofs ? "EROFS-OK" : "EROFS-MISSING")) << c->reason;
      EXPECT_TRUE(has(c->reason, bits == 7 ? "fanotify pre-content offered" : "fanotify pre-content not offered"))
          << c->reason;
      EXPECT_TRUE(has(c->reason, fsc ? "fscache on-demand offered" : "fscache on-demand not offered")) << c->reason;
      EXPECT_TRUE(has(c->reason, fsc ? "CACHEFILES-OK" : "CACHEFILES-MISSING")) << c->reason;
      EXPECT_TRUE(has(c->reason, "using " + want)) << c->reason;
    }
  }
}

TEST(FsDriver, AutoWithSharedDaemonKeepsFusedevAndSaysWhy) {
  auto c = choose_fs_driver("auto", paths(true, true, true), /*shared=*/true);
  ASSERT_TRUE(c);
  EXPECT_EQ(c->driver, "fusedev");
  EXPECT_TRUE(has(c->reason, "--daemon-mode shared")) << c->reason;
  EXPECT_TRUE(has(c->reason, "; using fusedev")) << c->reason;
  // fscache is one shared daemon anyway: the shared mode takes it.
  auto f = choose_fs_driver("auto", paths(true, true, true, true), /*shared=*/true);
  ASSERT_TRUE(f);
  EXPECT_EQ(f->driver, "fscache") << f->reason;
  EXPECT_TRUE(has(f->reason, "--daemon-mode shared")) << f->reason;
}

TEST(FsDriver, ExplicitFscacheNeedsCachefilesAndErofs) {
  for (bool shared : {false, true}) {
    auto ok = choose_fs_driver("fscache", paths(false, false, true, true), shared);
    ASSERT_TRUE(ok) << ok.error().message;
    EXPECT_EQ(ok->driver, "fscache");
    EXPECT_TRUE(has(ok->reason, "CACHEFILES-OK")) << ok->reason;
  }
  // No /dev/cachefiles (this host): refused with what the probe saw, not "not supported yet".
  auto no = choose_fs_driver("fscache", paths(true, true, true, false));
  ASSERT_FALSE(no);
  EXPECT_EQ(no.error().code, nydus::Errc::kUnsupported);
  EXPECT_TRUE(has(no.error().message, "CACHEFILES-MISSING")) << no.error().message;
  EXPECT_FALSE(has(no.error().message, "yet")) << no.error().message;
}

TEST(FsDriver, ExplicitFanotifyNeedsTheKernelAndADedicatedDaemon) {
  auto ok = choose_fs_driver("fanotify", paths(true, true, true));
  ASSERT_TRUE(ok);
  EXPECT_EQ(ok->driver, "fanotify");
  auto shared = choose_fs_driver("fanotify", paths(true, true, true), /*shared=*/true);
  ASSERT_FALSE(shared);
  EXPECT_TRUE(has(shared.error().message, "--daemon-mode shared")) << shared.error().message;
  auto no_mark = choose_fs_driver("fanotify", paths(true, false, true));
  ASSERT_FALSE(no_mark);
  EXPECT_TRUE(has(no_mark.error().message, "MARK-FAILED")) << no_mark.error().message;
  EXPECT_FALSE(choose_fs_driver("fanotify", paths(false, false, true)));
  EXPECT_FALSE(choose_fs_driver("fanotify", paths(true, true, false)));
}

TEST(FsDriver, FusedevAcceptedUnknownRefused) {
  ASSERT_TRUE(choose_fs_driver("fusedev", {}));
  EXPECT_EQ(choose_fs_driver("fusedev", {})->driver, "fusedev");
  EXPECT_EQ(choose_fs_driver("fusedev", paths(true, true, true), true)->driver, "fusedev");
  EXPECT_FALSE(choose_fs_driver("FSCACHE", paths(true, true, true, true)));
  EXPECT_FALSE(choose_fs_driver("FUSEDEV", {}));
  EXPECT_FALSE(choose_fs_driver("", {}));
}

// The probe against the real kernel: its verdicts must agree with what the
// kernel says independently (/proc/filesystems; a tmpfs dir never takes the mark).
TEST(FsDriver, ProbeAgreesWithTheKernel) {
  namespace fs = std::filesystem;
  const fs::path disk = fs::path("/var/tmp") / ("fs-driver-probe-" + std::to_string(::getpid()));
  KernelPaths k = probe_kernel_paths(disk.string());
  std::ifstream in("/proc/filesystems");
  std::string all((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_EQ(k.erofs, has(all, "\terofs\n"));
  EXPECT_FALSE(k.fanotify_why.empty());
  EXPECT_FALSE(k.mark_why.empty());
  // fscache on-demand: the device node and erofs, as the kernel shows them.
  EXPECT_EQ(k.fscache_ondemand, fs::exists("/dev/cachefiles") && has(all, "\terofs\n")) << k.fscache_why;
  EXPECT_TRUE(has(k.fscache_why, fs::exists("/dev/cachefiles") ? "/dev/cachefiles present" : "no /dev/cachefiles"));
  // Nothing left behind in the cache dir.
  EXPECT_TRUE(fs::is_empty(disk));
  fs::remove_all(disk);
  if (!k.fanotify_pre_content) GTEST_SKIP() << "no pre-content fanotify here: " << k.fanotify_why;
  EXPECT_TRUE(k.pre_access_mark) << k.mark_why;  // /var/tmp is on a disk fs in CI
  if (fs::exists("/dev/shm") && ::geteuid() == 0) {
    KernelPaths t = probe_kernel_paths("/dev/shm");
    EXPECT_TRUE(t.fanotify_pre_content);
    EXPECT_FALSE(t.pre_access_mark) << "tmpfs took a FAN_PRE_ACCESS mark: " << t.mark_why;
  }
}
