// common/subprocess.h against real programs (coreutils, sh): the bytes a
// program reads on stdin and writes on stdout/stderr, its exit status, the
// deadline and the output bound.
#include <gtest/gtest.h>

#include <chrono>

#include "common/subprocess.h"

namespace nydus {
namespace {

TEST(RunProcess, InputLargerThanAPipeComesBackWhole) {
  // 1 MiB through cat: stdin must be fed while stdout is drained, or both block.
  std::string input(1 << 20, '\0');
  for (size_t i = 0; i < input.size(); ++i) input[i] = char('a' + (i * 7919 % 26));
  ProcessOptions o;
  o.max_output = 2 << 20;
  o.search_path = true;
  auto r = run_process({"cat"}, input, o);
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->exit_code, 0);
  EXPECT_TRUE(r->out == input) << r->out.size();
}

TEST(RunProcess, StderrApartOrMergedAndTheExitCode) {
  ProcessOptions o;
  auto r = run_process({"/bin/sh", "-c", "echo out; echo err >&2; exit 3"}, "", o);
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->exit_code, 3);
  EXPECT_EQ(r->out, "out\n");
  EXPECT_EQ(r->err, "err\n");
  o.merge_stderr = true;
  r = run_process({"/bin/sh", "-c", "echo out; echo err >&2"}, "", o);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->exit_code, 0);
  EXPECT_EQ(r->out, "out\nerr\n");
  EXPECT_EQ(r->err, "");
}

TEST(RunProcess, ExtraEnvironmentOverridesTheInherited) {
  ::setenv("NYDUS_SUBPROCESS_TEST", "inherited", 1);
  ProcessOptions o;
  o.env = {"NYDUS_SUBPROCESS_TEST=mine", "NYDUS_OTHER=x=y"};
  auto r = run_process({"/bin/sh", "-c", "echo \"$NYDUS_SUBPROCESS_TEST $NYDUS_OTHER\"; env | grep -c ^NYDUS_SUBPROCESS_TEST="},
                       "", o);
  ::unsetenv("NYDUS_SUBPROCESS_TEST");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->out, "mine x=y\n1\n");
}

TEST(RunProcess, DeadlineKillsAHangingProgram) {
  ProcessOptions o;
  o.timeout = std::chrono::milliseconds(200);
  const auto t0 = std::chrono::steady_clock::now();
  auto r = run_process({"/bin/sleep", "30"}, "", o);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, Errc::kIo);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(10));
}

TEST(RunProcess, OutputIsBoundedAndTheProgramStillFinishes) {
  ProcessOptions o;
  o.max_output = 1000;
  auto r = run_process({"/bin/sh", "-c", "head -c 3000000 /dev/zero; echo done >&2"}, "", o);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->exit_code, 0);
  EXPECT_EQ(r->out.size(), 1000u);
  EXPECT_EQ(r->err, "done\n");
}

TEST(RunProcess, AProgramThatIgnoresItsInputDoesNotKillTheCaller) {
  // true exits without reading: writing the rest gives EPIPE, not a SIGPIPE death.
  auto r = run_process({"/bin/true"}, std::string(4 << 20, 'x'));
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->exit_code, 0);
}

TEST(RunProcess, MissingProgramIsNotFound) {
  auto r = run_process({"/nonexistent/prog"}, "");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, Errc::kNotFound);
  EXPECT_NE(r.error().message.find("/nonexistent/prog"), std::string::npos);
  ProcessOptions o;
  o.search_path = true;
  EXPECT_FALSE(run_process({"nydus-no-such-program-on-path"}, "", o));
  EXPECT_FALSE(run_process({}, ""));
}

}  // namespace
}  // namespace nydus
