// A main() for the fuzz targets when they are built without libFuzzer (g++,
// the normal build): runs LLVMFuzzerTestOneInput once over every file named
// on the command line (directories are read recursively). ctest uses it to
// replay fuzz/corpus/<target>/ and fuzz/regressions/<target>/, so every input
// that ever crashed a target stays a regression test. A path that does not
// exist is named (a target may have no regressions yet), but replaying no input
// at all fails: an empty or misplaced corpus must not pass as a test.
#include <cstddef>
#include <cstdint>
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

namespace fs = std::filesystem;

static bool run_file(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  if (!in) {
    std::fprintf(stderr, "cannot read %s\n", p.c_str());
    return false;
  }
  std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  // A copy of exactly the input's size, so ASan builds catch reads past its end.
  std::vector<uint8_t> exact(bytes.begin(), bytes.end());
  LLVMFuzzerTestOneInput(exact.data(), exact.size());
  return true;
}

int main(int argc, char** argv) {
  size_t n = 0;
  bool ok = true;
  for (int i = 1; i < argc; i++) {
    fs::path arg(argv[i]);
    std::error_code ec;
    if (fs::is_directory(arg, ec)) {
      std::vector<fs::path> files;
      for (const auto& e : fs::recursive_directory_iterator(arg))
        if (e.is_regular_file()) files.push_back(e.path());
      std::sort(files.begin(), files.end());
      for (const auto& f : files) ok &= run_file(f), n++;
    } else if (fs::exists(arg, ec)) {
      ok &= run_file(arg), n++;
    } else {
      std::printf("no such path: %s\n", arg.c_str());
    }
  }
  std::printf("replayed %zu inputs\n", n);
  if (n == 0) {
    std::fprintf(stderr, "no input replayed: nothing was tested\n");
    return 1;
  }
  return ok ? 0 : 1;
}
