// Helpers shared by the unit tests: temp dirs, file I/O, fixture paths.
#pragma once

#include <cstdint>
#include <filesystem>
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

// Upstream fixture directory; empty if shared/ is not beside the checkout.
std::filesystem::path fixtures_dir();

}  // namespace nydus::test
