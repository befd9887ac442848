// A whole image opened for reading: the bootstrap plus its data blobs, found
// in a blob directory (by id), as one given blob file, or inside the blob for
// an inlined bootstrap (ZRAN blobs: the gzip layer, read through the
// inflate contexts of its meta blob in the same directory). Resolves a file's chunk indexes to chunk records (from
// each blob's ci array, else the bootstrap chunk table) and reads chunk data.
// Used by check, unpack and export.
#pragma once

#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <vector>

#include "common/result.h"
#include "format/blob_reader.h"
#include "format/bootstrap.h"

namespace nydus::format {

struct ZranMeta;

struct BlobLocation {
  std::filesystem::path blob_dir;   // blobs named <id> (or <id>.blob.data is NOT accepted: compressed blobs only)
  std::filesystem::path blob_file;  // one blob, used for every blob index when set (single-blob images)
};

class ImageReader {
 public:
  static Result<std::unique_ptr<ImageReader>> open(const std::filesystem::path& bootstrap, const BlobLocation& loc);
  static Result<std::unique_ptr<ImageReader>> open(std::shared_ptr<Bootstrap> boot, const BlobLocation& loc);

  const Bootstrap& bootstrap() const { return *boot_; }
  bool has_blobs() const { return !loc_.blob_dir.empty() || !loc_.blob_file.empty(); }

  // Where blob `index` is expected on disk.
  Result<std::filesystem::path> blob_path(uint32_t index) const;
  // The blob file of blob `index` (opened once, lazily).
  Result<const BlobFile*> blob(uint32_t index);
  // Every chunk of blob `index` by ci index (from its ci array, or from the
  // bootstrap chunk table when the blob has no meta).
  Result<const std::vector<ChunkRecord>*> blob_chunks(uint32_t index);
  // Resolve one chunk index of a file and check it against the blob:
  // ci index in range, blkaddr matching the uncompressed offset.
  Result<ChunkRecord> resolve(const ChunkRef& ref);

  // Read one chunk of blob `index` into `out` (exactly its uncompressed
  // size): from the blob file, or for a ZRAN blob inflated from its context
  // over the gzip layer. With `verify`, the digest must match.
  Status read_chunk(uint32_t index, const ChunkRecord& r, std::span<uint8_t> out, bool verify);

  // Visit a regular file's data chunk by chunk, in file order; `fn` gets the
  // file offset and the bytes (exactly min(chunk size, remaining)).
  Status read_file(const InodeView& inode, bool verify,
                   const std::function<Status(uint64_t file_off, std::span<const uint8_t>)>& fn);

 private:
  ImageReader() = default;

  std::shared_ptr<Bootstrap> boot_;
  BlobLocation loc_;
  std::map<uint32_t, std::unique_ptr<BlobFile>> blobs_;
  std::map<uint32_t, std::vector<ChunkRecord>> chunks_;
  std::optional<std::vector<ChunkRecord>> table_;  // bootstrap chunk table, loaded on demand
  // ZRAN blobs (targz-ref): the blob file is the gzip layer, the ci array and
  // inflate contexts come from its meta blob (blob dir / hex(blob_meta_digest)).
  std::map<uint32_t, std::shared_ptr<const ZranMeta>> zran_;
  Result<const ZranMeta*> zran_meta(uint32_t index);
  Result<std::vector<ChunkRecord>> records_from_ci(uint32_t index, std::span<const DecodedChunkInfo> cis);
  Status read_zran_chunk(uint32_t index, const ChunkRecord& r, std::span<uint8_t> out, bool verify);
};

}  // namespace nydus::format
