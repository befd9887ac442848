// Shared by the storage tests: build a real data blob with format::BlobWriter
// (stored in `<dir>/<blob id>`), and backends that count, fail or intercept.
#pragma once

#include <atomic>
#include <filesystem>
#include <functional>
#include <mutex>
#include <random>
#include <vector>

#include <gtest/gtest.h>

#include "format/blob_writer.h"
#include "format/compress.h"
#include "format/digest.h"
#include "storage/backend.h"

namespace nydus::storage::test {

using Bytes = std::vector<uint8_t>;

inline Bytes random_bytes(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  Bytes v(n);
  for (auto& b : v) b = uint8_t(rng());
  return v;
}

// Compressible but not trivially: words from a small vocabulary.
inline Bytes text_bytes(size_t n, uint32_t seed) {
  static const char* words[] = {"read ", "chunk ", "blob ", "cache\n", "fetch ", "zstd ", "lz4 ", "  "};
  std::mt19937 rng(seed);
  Bytes v;
  while (v.size() < n) {
    const char* w = words[rng() % 8];
    v.insert(v.end(), w, w + std::strlen(w));
  }
  v.resize(n);
  return v;
}

struct TestBlob {
  std::filesystem::path path;
  format::BlobInfo info;
  std::vector<format::ChunkRecord> records;
  std::vector<Bytes> chunks;
  Bytes layout;  // the expected uncompressed layout (chunks at their offsets, zero gaps)

  std::vector<format::Digest> digests() const {
    std::vector<format::Digest> d;
    for (const auto& r : records) d.push_back(r.digest);
    return d;
  }
};

inline TestBlob build_test_blob(const std::filesystem::path& dir, format::Compressor comp, const std::vector<Bytes>& chunks,
                                uint32_t chunk_size = 64 << 10) {
  TestBlob out;
  out.chunks = chunks;
  format::BlobWriterOptions opts;
  opts.compressor = comp;
  opts.chunk_size = chunk_size;
  const auto tmp = dir / "blob.tmp";
  auto w = format::BlobWriter::create(tmp, opts);
  EXPECT_TRUE(w.has_value());
  if (!w) return out;
  for (const Bytes& c : chunks) {
    Bytes packed;
    auto shrank = format::compress(comp, c, packed);
    EXPECT_TRUE(shrank.has_value());
    const bool compressed = shrank.value_or(false);
    auto r = (*w)->add_chunk(compressed ? packed : c, compressed, uint32_t(c.size()),
                             format::compute_digest(opts.digester, c), format::crc32c(c));
    EXPECT_TRUE(r.has_value());
    if (r) out.records.push_back(*r);
  }
  EXPECT_TRUE((*w)->finish_meta().has_value());
  auto info = (*w)->close();
  EXPECT_TRUE(info.has_value());
  if (!info) return out;
  out.info = *info;
  out.path = dir / out.info.blob_id;
  std::filesystem::rename(tmp, out.path);
  out.layout.assign(out.info.uncompressed_size, 0);
  for (size_t i = 0; i < chunks.size(); i++)
    std::copy(chunks[i].begin(), chunks[i].end(), out.layout.begin() + ptrdiff_t(out.records[i].uncompressed_offset));
  return out;
}

// Delegates to a real backend; counts reads, can fail them or run a hook first.
class FakeBackend : public Backend {
 public:
  explicit FakeBackend(std::shared_ptr<Backend> inner) : inner_(std::move(inner)) {}

  Status read(const std::string& blob_id, uint64_t offset, std::span<uint8_t> out) override {
    reads.fetch_add(1);
    {
      std::lock_guard lk(mu);
      requests.emplace_back(offset, out.size());
    }
    if (hook) hook(offset, out.size());
    if (before_read) before_read(blob_id, offset, out.size());
    if (fail.load()) return errorf(Errc::kIo, "fake backend: failing on purpose");
    return inner_->read(blob_id, offset, out);
  }
  Result<uint64_t> blob_size(const std::string& blob_id) override { return inner_->blob_size(blob_id); }
  const char* type() const override { return inner_->type(); }  // a local blob, counted
  BackendMetrics metrics() const override { return inner_->metrics(); }

  std::atomic<int> reads{0};
  std::atomic<bool> fail{false};
  std::function<void(uint64_t, uint64_t)> hook;
  std::function<void(const std::string&, uint64_t, uint64_t)> before_read;  // with the blob's id
  std::mutex mu;
  std::vector<std::pair<uint64_t, uint64_t>> requests;

 private:
  std::shared_ptr<Backend> inner_;
};

}  // namespace nydus::storage::test
