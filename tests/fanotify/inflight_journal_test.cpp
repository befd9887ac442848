// The in-flight journal a fanotify takeover finishes a dead daemon's events
// from: what one process records is what another process, mapping the file
// after the first one was killed, reads back.
#include "fanotify/inflight_journal.h"

#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include <gtest/gtest.h>

namespace nydus::fanotify {
namespace {

namespace fs = std::filesystem;

class InflightJournalTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("inflight-journal-" + std::to_string(::getpid()));
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  fs::path dir_;
};

TEST_F(InflightJournalTest, SurvivesTheKillOfTheProcessThatWroteIt) {
  const fs::path p = dir_ / "j";
  ASSERT_TRUE(InflightJournal::create(p).has_value());
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    auto j = InflightJournal::open(p);
    if (!j) ::_exit(2);
    (*j)->record(7, 1, 0x10000, 0x20000);
    (*j)->record(9, 0, 0, 4096);
    (*j)->record(12, 2, 0x3000, 0x1000);
    (*j)->clear(9);  // answered
    (*j)->record(70000, 0, 0, 4096);  // beyond the table: not recorded
    ::kill(::getpid(), SIGKILL);  // no munmap, no msync
    ::_exit(3);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFSIGNALED(status)) << status;

  auto j = InflightJournal::open(p);
  ASSERT_TRUE(j.has_value()) << j.error().message;
  const auto pending = (*j)->pending();
  ASSERT_EQ(pending.size(), 2u);
  EXPECT_EQ(pending[0].fd, 7);
  EXPECT_EQ(pending[0].blob, 1u);
  EXPECT_EQ(pending[0].offset, 0x10000u);
  EXPECT_EQ(pending[0].len, 0x20000u);
  EXPECT_EQ(pending[1].fd, 12);
  EXPECT_EQ(pending[1].blob, 2u);
  EXPECT_EQ(pending[1].offset, 0x3000u);
  EXPECT_EQ(pending[1].len, 0x1000u);
}

TEST_F(InflightJournalTest, CreateStartsEmptyOverAnOldJournal) {
  const fs::path p = dir_ / "j";
  {
    auto j = InflightJournal::create(p);
    ASSERT_TRUE(j.has_value());
    (*j)->record(3, 0, 0, 4096);
  }
  auto j = InflightJournal::create(p);
  ASSERT_TRUE(j.has_value());
  EXPECT_TRUE((*j)->pending().empty());
}

TEST_F(InflightJournalTest, RefusesFilesThatAreNotJournals) {
  const fs::path p = dir_ / "other";
  { std::ofstream(p) << "not a journal"; }
  EXPECT_FALSE(InflightJournal::open(p).has_value());
  EXPECT_FALSE(InflightJournal::open(dir_ / "missing").has_value());
  // Right size, wrong magic.
  auto j = InflightJournal::create(p);
  ASSERT_TRUE(j.has_value());
  j->reset();
  {
    std::fstream f(p, std::ios::in | std::ios::out | std::ios::binary);
    f.write("XXXXXXXX", 8);
  }
  EXPECT_FALSE(InflightJournal::open(p).has_value());
}

}  // namespace
}  // namespace nydus::fanotify
