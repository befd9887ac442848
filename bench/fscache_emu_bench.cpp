// fscache-emu-bench: how fast nydusd's fscache request path fills cache
// objects, measured against the emulated kernel in-process, next to the raw
// speed of the work it cannot avoid (decompressing the chunks) — all on the
// same image in the same run.
//
//   fscache-emu-bench [--mb 256] [--workers 4] [--readers 4] [--piece 131072] [--dir /var/tmp]
//
// Rows: raw zstd decompression of every chunk (one thread); a cold fill (READs
// fetch from the local blob, decompress into the BlobCache, pwrite into the
// object); a warm fill (BlobCache already has the chunks: READ = copy into the
// object). READ sizes follow --piece (the kernel's readahead reaches 128 KiB);
// MB/s counts every byte written into the object (READs plus amplify_io).
#include <chrono>
#include <cstdio>
#include <random>
#include <thread>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "builder/create_image.h"
#include "format/bootstrap.h"
#include "format/compress.h"
#include "fscache/blob_entry.h"
#include "fscache/blob_registry.h"
#include "fscache/fscache_service.h"
#include "fscache/kernel_emulator.h"

namespace fs = std::filesystem;
using namespace nydus;
using Clock = std::chrono::steady_clock;

namespace {

double secs_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

// Text-like, compressible data (zstd ~3-4x), deterministic.
void write_tree(const fs::path& dir, uint64_t mb) {
  static const char* words[] = {"lazy ", "chunk ", "blob ", "cache\n", "erofs ", "fscache ", "kernel ", "page "};
  std::mt19937 rng(42);
  fs::create_directories(dir);
  for (uint64_t f = 0; f < (mb + 3) / 4; ++f) {
    std::string data;
    data.reserve(4 << 20);
    while (data.size() < (4u << 20)) {
      data += words[rng() % 8];
      if (rng() % 16 == 0) data += std::to_string(rng());
    }
    FILE* out = std::fopen((dir / ("f" + std::to_string(f))).c_str(), "wb");
    std::fwrite(data.data(), 1, data.size(), out);
    std::fclose(out);
  }
}

struct Row {
  std::string what;
  double seconds;
  uint64_t bytes;
  uint64_t reads;
};

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"fscache request path throughput vs raw decompression"};
  uint64_t mb = 256, piece = 128 << 10;
  unsigned workers = 4, readers = 4;
  std::string base = "/var/tmp";
  app.add_option("--mb", mb, "image data size");
  app.add_option("--workers", workers, "daemon READ workers (--fscache-threads)");
  app.add_option("--readers", readers, "concurrent application readers");
  app.add_option("--piece", piece, "bytes per READ");
  app.add_option("--dir", base, "work dir base");
  CLI11_PARSE(app, argc, argv);

  char tmpl[4096];
  std::snprintf(tmpl, sizeof(tmpl), "%s/nydus-fscache-bench.XXXXXX", base.c_str());
  const fs::path dir = ::mkdtemp(tmpl);
  write_tree(dir / "src", mb);
  builder::CreateOptions o;
  o.source = dir / "src";
  o.bootstrap = dir / "boot";
  o.blob_dir = dir / "blobs";
  o.compressor = format::Compressor::kZstd;
  fs::create_directories(o.blob_dir);
  auto rep = builder::create_image(o);
  if (!rep || rep->blobs.empty()) {
    std::fprintf(stderr, "image build failed\n");
    return 1;
  }
  const auto& blob = rep->blobs[0];
  std::vector<Row> rows;

  // Raw decompression of every stored chunk, one thread.
  {
    auto boot = format::Bootstrap::open(o.bootstrap);
    auto table = (*boot)->chunk_table();
    std::vector<uint8_t> stored;
    {
      FILE* in = std::fopen((o.blob_dir / blob.blob_id).c_str(), "rb");
      stored.resize(fs::file_size(o.blob_dir / blob.blob_id));
      if (std::fread(stored.data(), 1, stored.size(), in) != stored.size()) return 1;
      std::fclose(in);
    }
    std::vector<uint8_t> out(1 << 20);
    uint64_t bytes = 0;
    const auto t0 = Clock::now();
    for (const auto& c : *table) {
      if (!c.compressed) continue;
      out.resize(c.uncompressed_size);
      if (!format::decompress(blob.compressor, {stored.data() + c.compressed_offset, c.compressed_size}, out)) return 1;
      bytes += c.uncompressed_size;
    }
    rows.push_back({"raw zstd decompression (1 thread)", secs_since(t0), bytes, 0});
  }

  // The request path: emulator -> nydusd's service -> BlobCache -> anon fds.
  fscache::BlobRegistry registry(dir / "work");
  nlohmann::json entry{{"type", "bootstrap"},
                       {"id", "bench"},
                       {"config_v2",
                        {{"version", 2},
                         {"backend", {{"type", "localfs"}, {"localfs", {{"dir", o.blob_dir.string()}}}}},
                         {"cache", {{"type", "fscache"}, {"fscache", {{"work_dir", (dir / "work").string()}}}}},
                         {"metadata_path", o.bootstrap.string()}}}};
  auto e = fscache::parse_blob_entry(entry.dump());
  if (!e || !registry.add(*e)) return 1;
  for (const char* phase : {"cold", "warm"}) {
    // A fresh kernel store each time: every range is asked for.
    fs::remove_all(dir / "store");
    fscache::emu::Emulator emu(fscache::emu::Profile::linux_6_12(), dir / "store");
    emu.set_pipeline(64);  // no failover here: let the emulator keep the daemon busy
    auto dev = fscache::CacheDevice::adopt(emu.open_pair());
    if (!dev || !fscache::bind_cache(*dev, dir / "kdir", "")) return 1;
    fscache::FscacheService svc(std::move(*dev), registry, workers);
    if (!svc.start(false) || !emu.wait_bound(std::chrono::seconds(5))) return 1;
    auto m = emu.mount("bench");
    if (!m) {
      std::fprintf(stderr, "mount: %s\n", m.error().message.c_str());
      return 1;
    }
    const int obj = emu.blob_objects(*m)[0];
    const uint64_t reads0 = emu.counters().reads_sent;
    const auto t0 = Clock::now();
    if (auto st = emu.read_all(obj, readers, piece); !st) {
      std::fprintf(stderr, "read: %s\n", st.error().message.c_str());
      return 1;
    }
    const double s = secs_since(t0);
    rows.push_back({std::string(phase) + (std::string(phase) == "cold" ? " fill (fetch+decompress+write)"
                                                                      : " fill (BlobCache hit: copy into object)"),
                    s, svc.stats().read_bytes + svc.stats().amplified_bytes, emu.counters().reads_sent - reads0});
    (void)emu.umount(*m);
    svc.stop();
  }

  std::printf("Image: %llu MiB of text-like data in %llu chunks (zstd, 1 MiB chunks, %.1fx); %u daemon workers, "
              "%u readers, %llu KiB READs; %u CPUs.\n\n",
              (unsigned long long)(blob.uncompressed_size >> 20), (unsigned long long)blob.chunk_count,
              double(blob.uncompressed_size) / double(blob.compressed_size), workers, readers,
              (unsigned long long)(piece >> 10), std::thread::hardware_concurrency());
  std::printf("| path | seconds | MB/s | READs | READs/s |\n|---|---:|---:|---:|---:|\n");
  for (const auto& r : rows)
    std::printf("| %s | %.3f | %.0f | %s | %s |\n", r.what.c_str(), r.seconds, double(r.bytes) / 1e6 / r.seconds,
                r.reads ? std::to_string(r.reads).c_str() : "-",
                r.reads ? std::to_string(uint64_t(double(r.reads) / r.seconds)).c_str() : "-");
  fs::remove_all(dir);
  return 0;
}
