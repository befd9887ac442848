// The eStargz table of contents (stargz.index.json) and footer, as the
// stargz-snapshotter's estargz package writes them (docs/estargz.md there;
// upstream Nydus reads the same fields in builder/src/stargz.rs).
//
// The TOC is untrusted input: its size, the number of entries and every
// string are bounded before use, numbers must be non-negative integers that
// fit their fields, and a malformed entry is an error naming it, never a
// crash. Semantic checks that need the whole tree (chunk contiguity, gzip
// member offsets against the layer) are the builder's (create_stargz.h).
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "common/result.h"
#include "format/digest.h"

namespace nydus::format {

inline constexpr size_t kMaxStargzTocSize = 64u << 20;      // bytes of JSON
inline constexpr size_t kMaxStargzTocEntries = 4u << 20;
inline constexpr size_t kMaxStargzNameSize = 4096;          // a path or link target
inline constexpr size_t kMaxStargzXattrSize = 64u << 10;    // one decoded value
// eStargz footer: an empty gzip member whose extra field carries the TOC
// offset (16 hex digits) and "STARGZ"; 51 bytes. The legacy stargz footer
// is 47 bytes ("%016xSTARGZ" in the gzip header's extra field, no subfield).
inline constexpr size_t kEstargzFooterSize = 51;
inline constexpr size_t kLegacyStargzFooterSize = 47;

enum class StargzType { kDir, kReg, kSymlink, kHardlink, kChar, kBlock, kFifo, kChunk };

struct StargzEntry {
  std::string name;              // as written ("a/b", "./a/b/", ...)
  StargzType type = StargzType::kReg;
  uint64_t size = 0;             // reg: the whole file's size
  std::string link_name;         // symlink target / hardlink target path
  uint32_t mode = 0;             // permission bits (file type bits ignored)
  uint32_t uid = 0, gid = 0;
  uint32_t dev_major = 0, dev_minor = 0;
  int64_t mtime = 0;             // seconds since the epoch ("modtime", RFC 3339), 0 if absent
  std::vector<std::pair<std::string, std::string>> xattrs;  // name, decoded value
  uint64_t offset = 0;           // layer offset of the gzip member holding the data
  uint64_t chunk_offset = 0;     // offset of this chunk in the file
  uint64_t chunk_size = 0;       // 0: to the end of the file
  uint64_t inner_offset = 0;     // offset of the data in the member's output
  std::optional<Digest> chunk_digest;  // sha256 of the chunk's bytes
};

struct StargzToc {
  uint32_t version = 0;
  std::vector<StargzEntry> entries;
};

// Parse and bound-check the TOC JSON (version must be 1).
Result<StargzToc> parse_stargz_toc(std::span<const uint8_t> json);

// The chunk size the TOC's writer cut files with (ctr-remote's
// --estargz-chunk-size, 4 MiB by default): the largest chunkSize an entry
// names, or, when no file was cut, 4 MiB or the next power of two that holds
// the largest file. RAFS images of the TOC need it as their chunk size.
uint64_t stargz_writer_chunk_size(const StargzToc& toc);

// The TOC's offset from the layer's last bytes (eStargz 51-byte footer, or
// the legacy 47-byte one when `tail` is that long). `tail` = the layer's
// last kEstargzFooterSize bytes (or fewer for a tiny layer).
Result<uint64_t> parse_stargz_footer(std::span<const uint8_t> tail);

}  // namespace nydus::format
