// Fuzz target: the eStargz TOC (format/stargz_toc: JSON parser, footer) and
// the estargztoc-ref builder over whatever the parser accepts (paths,
// hardlinks, chunk tiling, gzip offsets against a layer of 1 MiB). The input
// is the TOC JSON; its last 51 bytes are also tried as an eStargz footer.
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <span>
#include <string>

#include "builder/create_stargz.h"
#include "format/stargz_toc.h"

using namespace nydus;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::span<const uint8_t> in(data, size);
  (void)format::parse_stargz_footer(in.last(std::min<size_t>(size, format::kEstargzFooterSize)));
  auto toc = format::parse_stargz_toc(in);
  if (!toc) return 0;
  // One scratch directory per process, removed at exit.
  struct Scratch {
    std::filesystem::path dir =
        std::filesystem::temp_directory_path() / ("fuzz_stargz_toc." + std::to_string(getpid()));
    Scratch() { std::filesystem::create_directories(dir); }
    ~Scratch() {
      std::error_code ec;
      std::filesystem::remove_all(dir, ec);
    }
  };
  static const Scratch scratch;
  const std::filesystem::path& dir = scratch.dir;
  {
    std::ofstream f(dir / "toc.json", std::ios::binary | std::ios::trunc);
    f.write(reinterpret_cast<const char*>(data), std::streamsize(size));
  }
  builder::CreateOptions o;
  o.source_type = builder::SourceType::kEstargzToc;
  o.source = dir / "toc.json";
  o.bootstrap = dir / "boot";
  o.blob_id = std::string(64, 'a');
  o.blob_data_size = 1 << 20;
  o.chunk_size = 0x1000;  // small, so short inputs can describe multi-chunk files
  o.compressor = format::Compressor::kGzip;
  o.digester = format::Digester::kSha256;
  (void)builder::create_image(o);
  return 0;
}
