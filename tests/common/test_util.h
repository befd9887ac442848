// Helpers shared by the unit tests: temp dirs, file I/O, fixture paths.
#pragma once

#include <cstdint>
#include <chrono>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

namespace nydus::test {

// A fresh directory under $TMPDIR, removed when the object dies.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::filesystem::path& path() const { return path_; }
  std::filesystem::path operator/(const std::string& name) const { return path_ / name; }

 private:
  std::filesystem::path path_;
};

std::vector<uint8_t> read_file(const std::filesystem::path& p);
void write_file(const std::filesystem::path& p, const std::vector<uint8_t>& data);
void write_file(const std::filesystem::path& p, const std::string& data);

// Upstream fixture directory: tests/fixtures/upstream in the checkout (vendored), or
// $NYDUS_FIXTURES_DIR. Tests that use it start with NYDUS_REQUIRE_FIXTURES().
std::filesystem::path fixtures_dir();

// The build's bin/ directory (nydusd, nydusctl, ...).
std::filesystem::path bin_dir();

// The text of tests/compat/fixtures/<rel> (upstream's configs and request
// bodies, vendored); a missing file fails the test and yields "".
std::string compat_fixture(const std::string& rel);

// One gzip member of `in`, as zlib writes it with windowBits 31 (what Go's
// compress/gzip, and so an eStargz writer, emits for each chunk).
std::vector<uint8_t> gzip_member(const std::vector<uint8_t>& in);

// `n` bytes from a seeded generator: incompressible.
std::vector<uint8_t> random_bytes(size_t n, uint32_t seed);
// `n` bytes of words from a small vocabulary: compressible, not trivially.
std::vector<uint8_t> text_bytes(size_t n, uint32_t seed);

// Polls `cond` every 10 ms until it holds (true) or `limit` passes (false,
// after one last look).
bool wait_for(const std::function<bool()>& cond, std::chrono::milliseconds limit);

// Resident kB of this process's mapping that holds `addr` (/proc/self/smaps);
// -1 if no mapping holds it.
long mapping_rss_kb(const void* addr);

// Running under CI (CI=true), where every prerequisite is installed.
bool in_ci();

}  // namespace nydus::test

// The fixtures are part of the repository: missing ones are a broken checkout, not a skip.
#define NYDUS_REQUIRE_FIXTURES()                                                      \
  ASSERT_TRUE(std::filesystem::exists(::nydus::test::fixtures_dir() / "v6"))          \
      << "vendored fixtures missing at " << ::nydus::test::fixtures_dir()

// A prerequisite is missing: skip on a developer's machine, fail in CI
// (scripts/setup.sh installs everything).
#define NYDUS_SKIP_UNLESS_CI(msg)                                        \
  do {                                                                   \
    if (::nydus::test::in_ci()) GTEST_FAIL() << "missing in CI: " << msg; \
    GTEST_SKIP() << msg;                                                 \
  } while (0)
