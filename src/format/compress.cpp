#include "format/compress.h"

#include <lz4.h>
#include <zstd.h>

#include <cstring>

namespace nydus::format {

Result<Compressor> parse_compressor(std::string_view name) {
  if (name == "none") return Compressor::kNone;
  if (name == "lz4_block") return Compressor::kLz4Block;
  if (name == "zstd") return Compressor::kZstd;
  if (name == "gzip") return Compressor::kGzip;
  return errorf(Errc::kInvalidArgument, "unknown compressor '{}' (none, lz4_block, zstd)", name);
}

const char* compressor_name(Compressor c) {
  switch (c) {
    case Compressor::kNone: return "none";
    case Compressor::kLz4Block: return "lz4_block";
    case Compressor::kGzip: return "gzip";
    case Compressor::kZstd: return "zstd";
  }
  return "unknown";
}

Result<bool> compress(Compressor c, std::span<const uint8_t> in, std::vector<uint8_t>& out) {
  switch (c) {
    case Compressor::kNone:
      return false;
    case Compressor::kLz4Block: {
      if (in.size() > size_t(LZ4_MAX_INPUT_SIZE))
        return make_error(Errc::kInvalidArgument, "lz4: input too large");
      out.resize(size_t(LZ4_compressBound(int(in.size()))));
      int n = LZ4_compress_default(reinterpret_cast<const char*>(in.data()),
                                   reinterpret_cast<char*>(out.data()), int(in.size()), int(out.size()));
      if (n <= 0) return make_error(Errc::kInternal, "lz4 compression failed");
      out.resize(size_t(n));
      return out.size() < in.size();
    }
    case Compressor::kZstd: {
      out.resize(ZSTD_compressBound(in.size()));
      size_t n = ZSTD_compress(out.data(), out.size(), in.data(), in.size(), 3);
      if (ZSTD_isError(n)) return errorf(Errc::kInternal, "zstd compression failed: {}", ZSTD_getErrorName(n));
      out.resize(n);
      return out.size() < in.size();
    }
    case Compressor::kGzip:
      return make_error(Errc::kUnsupported, "gzip compression is not supported for chunks");
  }
  return make_error(Errc::kInvalidArgument, "unknown compressor");
}

Status decompress(Compressor c, std::span<const uint8_t> in, std::span<uint8_t> out) {
  switch (c) {
    case Compressor::kNone:
      if (in.size() != out.size())
        return corrupt("raw chunk has {} bytes, expected {}", in.size(), out.size());
      if (!out.empty()) std::memmove(out.data(), in.data(), in.size());
      return ok();
    case Compressor::kLz4Block: {
      if (in.size() > size_t(INT32_MAX) || out.size() > size_t(INT32_MAX))
        return corrupt("lz4: chunk too large");
      int n = LZ4_decompress_safe(reinterpret_cast<const char*>(in.data()),
                                  reinterpret_cast<char*>(out.data()), int(in.size()), int(out.size()));
      if (n < 0 || size_t(n) != out.size())
        return corrupt("lz4: chunk decompressed to {} bytes, expected {}", n, out.size());
      return ok();
    }
    case Compressor::kZstd: {
      size_t n = ZSTD_decompress(out.data(), out.size(), in.data(), in.size());
      if (ZSTD_isError(n)) return corrupt("zstd: {}", ZSTD_getErrorName(n));
      if (n != out.size()) return corrupt("zstd: chunk decompressed to {} bytes, expected {}", n, out.size());
      return ok();
    }
    case Compressor::kGzip:
      return make_error(Errc::kUnsupported, "gzip chunks are not supported");
  }
  return corrupt("unknown compressor id {}", uint32_t(c));
}

}  // namespace nydus::format
