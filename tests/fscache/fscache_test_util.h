// Shared by the fscache tests: a real image (builder), a registry entry for
// it, and the emulated kernel wired to an FscacheService.
#pragma once

#include <filesystem>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "builder/create_image.h"
#include "common/test_util.h"
#include "fscache/blob_entry.h"
#include "format/bootstrap.h"

namespace nydus::fscache::test {

namespace fs = std::filesystem;

inline std::vector<uint8_t> random_bytes(size_t n, unsigned seed) {
  std::mt19937 rng(seed);
  std::vector<uint8_t> v(n);
  for (auto& b : v) b = uint8_t(rng());
  return v;
}

struct TestImage {
  fs::path bootstrap;
  fs::path blob_dir;
  fs::path cache_dir;  // the builder's <id>.blob.data: the expected blob layout
  std::string blob_id;
  uint64_t blob_size = 0;  // uncompressed
};

// A tree of a few files (one shared by `seed`-independent content, so two
// images made with different seeds still share chunks but not blobs).
inline TestImage build_image(const fs::path& dir, unsigned seed, uint32_t chunk_size = 0x10000,
                             format::Compressor comp = format::Compressor::kZstd) {
  TestImage img;
  const fs::path src = dir / "src";
  fs::create_directories(src / "d");
  nydus::test::write_file(src / "empty", std::string());
  nydus::test::write_file(src / "one", std::string("x"));
  nydus::test::write_file(src / "d" / "page_plus", random_bytes(4097, seed));
  nydus::test::write_file(src / "d" / "big", random_bytes(3 * chunk_size + 777, seed + 1));
  nydus::test::write_file(src / "shared", random_bytes(2 * chunk_size, 4242));
  img.bootstrap = dir / "boot";
  img.blob_dir = dir / "blobs";
  img.cache_dir = dir / "built-cache";
  fs::create_directories(img.blob_dir);
  fs::create_directories(img.cache_dir);
  builder::CreateOptions o;
  o.source = src;
  o.bootstrap = img.bootstrap;
  o.blob_dir = img.blob_dir;
  o.blob_cache_dir = img.cache_dir;
  o.chunk_size = chunk_size;
  o.compressor = comp;
  o.repeatable = true;
  auto rep = builder::create_image(o);
  EXPECT_TRUE(rep) << (rep ? "" : rep.error().message);
  if (rep && !rep->blobs.empty()) {
    img.blob_id = rep->blobs[0].blob_id;
    img.blob_size = rep->blobs[0].uncompressed_size;
  }
  return img;
}

// Upstream's BlobCacheEntry body for an image served from a local blob dir.
inline std::string entry_json(const TestImage& img, const std::string& fsid, const std::string& domain,
                              const fs::path& work_dir, bool prefetch_all = false) {
  nlohmann::json cfg{{"version", 2},
                     {"id", fsid},
                     {"backend", {{"type", "localfs"}, {"localfs", {{"dir", img.blob_dir.string()}}}}},
                     {"cache", {{"type", "fscache"}, {"fscache", {{"work_dir", work_dir.string()}}}}},
                     {"metadata_path", img.bootstrap.string()}};
  if (prefetch_all)
    cfg["cache"]["prefetch"] = {{"enable", true}, {"threads_count", 2}, {"prefetch_all", true}};
  nlohmann::json e{{"type", "bootstrap"}, {"id", fsid}, {"config_v2", cfg}};
  if (!domain.empty()) e["domain_id"] = domain;
  return e.dump();
}

inline std::vector<uint8_t> read_prefix(const fs::path& p, uint64_t n) {
  auto all = nydus::test::read_file(p);
  if (all.size() > n) all.resize(n);
  return all;
}

}  // namespace nydus::fscache::test
