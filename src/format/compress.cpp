#include "format/compress.h"

#include <lz4.h>
#include <zlib.h>
#include <zstd.h>

#include <algorithm>
#include <cstring>

namespace nydus::format {

Result<Compressor> parse_compressor(std::string_view name) {
  if (name == "none") return Compressor::kNone;
  if (name == "lz4_block") return Compressor::kLz4Block;
  if (name == "zstd") return Compressor::kZstd;
  if (name == "gzip") return Compressor::kGzip;
  return errorf(Errc::kInvalidArgument, "unknown compressor '{}' (none, lz4_block, zstd, gzip)", name);
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

size_t compress_bound(Compressor c, size_t n) {
  switch (c) {
    case Compressor::kLz4Block:
      return n > size_t(LZ4_MAX_INPUT_SIZE) ? n : size_t(LZ4_compressBound(int(n)));
    case Compressor::kZstd:
      return ZSTD_compressBound(n);
    default:
      return n;
  }
}

namespace {
// One zstd context per thread: ZSTD_compress would allocate and clear a new
// one for every chunk, which showed up as ~15% of a build in memset.
ZSTD_CCtx* thread_cctx() {
  struct Holder {
    ZSTD_CCtx* ctx = ZSTD_createCCtx();
    ~Holder() { ZSTD_freeCCtx(ctx); }
  };
  thread_local Holder h;
  return h.ctx;
}
// Likewise for decompression (every chunk a daemon fetches): ZSTD_decompress
// creates and frees a context per call. Null if out of memory.
ZSTD_DCtx* thread_dctx() {
  struct Holder {
    ZSTD_DCtx* ctx = ZSTD_createDCtx();
    ~Holder() { ZSTD_freeDCtx(ctx); }
  };
  thread_local Holder h;
  return h.ctx;
}
}  // namespace

Result<std::optional<size_t>> compress_into(Compressor c, std::span<const uint8_t> in, std::span<uint8_t> out) {
  switch (c) {
    case Compressor::kNone:
      return std::optional<size_t>{};
    case Compressor::kLz4Block: {
      if (in.size() > size_t(LZ4_MAX_INPUT_SIZE))
        return make_error(Errc::kInvalidArgument, "lz4: input too large");
      if (out.size() < compress_bound(c, in.size())) return make_error(Errc::kInternal, "lz4: output buffer too small");
      int n = LZ4_compress_default(reinterpret_cast<const char*>(in.data()), reinterpret_cast<char*>(out.data()),
                                   int(in.size()), int(std::min<size_t>(out.size(), INT32_MAX)));
      if (n <= 0) return make_error(Errc::kInternal, "lz4 compression failed");
      if (size_t(n) >= in.size()) return std::optional<size_t>{};
      return std::optional<size_t>(size_t(n));
    }
    case Compressor::kZstd: {
      ZSTD_CCtx* ctx = thread_cctx();
      if (!ctx) return make_error(Errc::kNoSpace, "zstd: cannot allocate a context");
      size_t n = ZSTD_compressCCtx(ctx, out.data(), out.size(), in.data(), in.size(), 3);
      if (ZSTD_isError(n)) return errorf(Errc::kInternal, "zstd compression failed: {}", ZSTD_getErrorName(n));
      if (n >= in.size()) return std::optional<size_t>{};
      return std::optional<size_t>(n);
    }
    case Compressor::kGzip:
      return make_error(Errc::kUnsupported, "gzip compression is not supported for chunks");
  }
  return make_error(Errc::kInvalidArgument, "unknown compressor");
}

Result<bool> compress(Compressor c, std::span<const uint8_t> in, std::vector<uint8_t>& out) {
  out.resize(compress_bound(c, in.size()));
  NYDUS_ASSIGN_OR_RETURN(auto n, compress_into(c, in, out));
  if (!n) {
    out.clear();
    return false;
  }
  out.resize(*n);
  return true;
}

namespace {

// A gzip chunk (eStargz: a gzip member that starts with the chunk's data).
// Upstream reads such a chunk as a span of the layer that may run past the
// member's end (into the next member, or the tar headers the same member
// goes on with), so bytes after the first `out.size()` are ignored; a member
// that ends before filling `out` is corrupt.
Status gunzip_chunk(std::span<const uint8_t> in, std::span<uint8_t> out) {
  if (in.size() > UINT32_MAX || out.size() > UINT32_MAX) return corrupt("gzip: chunk too large");
  z_stream z{};
  if (inflateInit2(&z, 16 + MAX_WBITS) != Z_OK) return make_error(Errc::kNoSpace, "gzip: inflateInit2 failed");
  z.next_in = const_cast<Bytef*>(in.data());
  z.avail_in = uInt(in.size());
  z.next_out = out.data();
  z.avail_out = uInt(out.size());
  int rc = Z_OK;
  while (z.avail_out > 0 && rc == Z_OK) rc = inflate(&z, Z_NO_FLUSH);
  const size_t produced = out.size() - z.avail_out;
  const char* msg = z.msg;
  inflateEnd(&z);
  if (produced == out.size() && (rc == Z_OK || rc == Z_STREAM_END || rc == Z_BUF_ERROR)) return ok();
  if (rc == Z_STREAM_END || rc == Z_BUF_ERROR)
    return corrupt("gzip: chunk decompressed to {} bytes, expected {}", produced, out.size());
  return corrupt("gzip: {} (after {} of {} bytes)", msg ? msg : zError(rc), produced, out.size());
}

}  // namespace

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
      ZSTD_DCtx* ctx = thread_dctx();
      size_t n = ctx ? ZSTD_decompressDCtx(ctx, out.data(), out.size(), in.data(), in.size())
                     : ZSTD_decompress(out.data(), out.size(), in.data(), in.size());
      if (ZSTD_isError(n)) return corrupt("zstd: {}", ZSTD_getErrorName(n));
      if (n != out.size()) return corrupt("zstd: chunk decompressed to {} bytes, expected {}", n, out.size());
      return ok();
    }
    case Compressor::kGzip:
      return gunzip_chunk(in, out);
  }
  return corrupt("unknown compressor id {}", uint32_t(c));
}

}  // namespace nydus::format
