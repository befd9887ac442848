#include "builder/create_tarfs.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "builder/prefetch_list.h"
#include "builder/tar_source.h"
#include "common/file_util.h"
#include "common/io.h"
#include "format/bootstrap_writer.h"
#include "format/digest.h"

namespace nydus::builder {

namespace {

constexpr uint64_t kTarBlock = 512;

struct Piece {
  uint32_t node = 0;
  uint64_t tar_off = 0;  // offset of the bytes inside the tar
  uint32_t size = 0;
  format::Digest digest{};
};

// Re-read every piece from the tar file at the offset the image will record
// and compare with what the tar reader delivered: the offsets are all the
// image says about the data, so a wrong one must fail the build.
Status verify_offsets(const std::filesystem::path& tar, const std::vector<Piece>& pieces, format::Digest* tar_digest) {
  const int fd = ::open(tar.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return sys_error("open " + tar.string());
  std::vector<uint8_t> buf;
  Status st = ok();
  for (const Piece& p : pieces) {
    buf.resize(p.size);
    st = read_full_at(fd, p.tar_off, buf, "reading " + tar.string());
    if (!st) break;
    if (format::sha256(buf) != p.digest) {
      st = errorf(Errc::kCorrupt, "tar data at {:#x} (+{}) differs from what the tar reader read there", p.tar_off,
                  p.size);
      break;
    }
  }
  if (st && tar_digest) {
    format::Sha256Stream h;
    buf.resize(1 << 20);
    for (;;) {
      const ssize_t n = ::read(fd, buf.data(), buf.size());
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) { st = sys_error("read " + tar.string()); break; }
      if (n == 0) break;
      h.update(std::span<const uint8_t>(buf.data(), size_t(n)));
    }
    if (st) *tar_digest = h.finish();
  }
  ::close(fd);
  return st;
}

}  // namespace

Result<CreateReport> create_tarfs_image(const CreateOptions& o) {
  if (!o.chunk_dict.empty()) return make_error(Errc::kInvalidArgument, "conversion type 'tar-tarfs' conflicts with '--chunk-dict'");
  if (o.fs_version != 6)
    return make_error(Errc::kInvalidArgument, "'--fs-version 5' conflicts with conversion type 'tar-tarfs', only V6 is supported");
  if (!o.blob_file.empty()) return make_error(Errc::kInvalidArgument, "conversion type `tar-tarfs` conflicts with `--blob`");
  if (o.blob_inline_meta) return make_error(Errc::kInvalidArgument, "conversion type `tar-tarfs` conflicts with `--blob-inline-meta`");
  if (o.source.empty() || o.source == "-") return make_error(Errc::kInvalidArgument, "--type tar-tarfs needs the tar as a file or FIFO");
  if (o.bootstrap.empty()) return make_error(Errc::kInvalidArgument, "--type tar-tarfs needs --bootstrap");
  struct stat st{};
  if (::stat(o.source.c_str(), &st) != 0) return sys_error("stat " + o.source.string());
  const bool regular = S_ISREG(st.st_mode);
  // Without --blob-id the id is sha256 of the tar, which a FIFO cannot give twice.
  if (!regular && o.blob_id.empty()) return make_error(Errc::kInvalidArgument, "--type tar-tarfs from a FIFO needs --blob-id");

  std::vector<Piece> pieces;
  auto tt = scan_tar(o.source.string(), o.chunk_size, [&](uint32_t node, uint64_t off, std::vector<uint8_t> piece) -> Status {
    pieces.push_back({node, off, uint32_t(piece.size()), format::sha256(piece)});
    return ok();
  });
  if (!tt) return std::unexpected(std::move(tt).error().context(o.source.string()));
  uint64_t data_end = 0;
  for (Piece& p : pieces) {
    const uint64_t base = p.node < tt->stream_offset.size() ? tt->stream_offset[p.node] : kNoStreamOffset;
    if (base == kNoStreamOffset)
      return make_error(Errc::kUnsupported, "--type tar-tarfs: the tar has a sparse file (its data is not contiguous)");
    p.tar_off = base + p.tar_off;
    // A compressed tar has no file bytes at any tar offset: refused here too.
    if (p.tar_off % kTarBlock != 0)
      return errorf(Errc::kInvalidArgument, "--type tar-tarfs: file data at {:#x} is not 512-byte aligned (compressed tar?)",
                    p.tar_off);
    data_end = std::max(data_end, p.tar_off + p.size);
  }

  format::Digest tar_digest{};
  if (regular) NYDUS_TRY(verify_offsets(o.source, pieces, o.blob_id.empty() ? &tar_digest : nullptr));
  // The tar's size is its blocks; a FIFO's trailing zero blocks are unknown,
  // and nothing reads them.
  uint64_t tar_size = regular ? uint64_t(st.st_size) : format::align_up(data_end, kTarBlock);
  if (tar_size < data_end) return corrupt("tar data ends at {:#x}, beyond the file", data_end);
  tar_size = tar_size / kTarBlock * kTarBlock;
  if (tar_size < data_end) return corrupt("tar of {} bytes is not made of 512-byte blocks", st.st_size);

  format::BlobInfo info;
  info.blob_id = o.blob_id.empty() ? format::to_hex(tar_digest) : o.blob_id;
  if (info.blob_id.empty() || info.blob_id.size() > 64) return errorf(Errc::kInvalidArgument, "bad blob id '{}'", info.blob_id);
  info.chunk_size = o.chunk_size;
  info.chunk_count = uint32_t(pieces.size());
  if (pieces.size() > format::kMaxChunksPerBlob) return errorf(Errc::kUnsupported, "{} chunks, at most 2^24", pieces.size());
  info.compressor = format::Compressor::kNone;
  info.digester = format::Digester::kSha256;
  info.features = format::blob_features::kCapTarToc | format::blob_features::kTarfs;
  info.compressed_size = tar_size;
  info.uncompressed_size = tar_size;

  // One chunk per piece, never deduplicated: the ci index is its order.
  std::vector<std::vector<format::ChunkRecord>> file_chunks;
  for (uint32_t i = 0; i < pieces.size(); i++) {
    const Piece& p = pieces[i];
    if (file_chunks.size() <= p.node) file_chunks.resize(size_t(p.node) + 1);
    format::ChunkRecord r;
    r.digest = p.digest;
    r.blob_index = 0;
    r.ci_index = i;
    r.compressed_offset = p.tar_off;
    r.compressed_size = p.size;
    r.uncompressed_offset = p.tar_off;
    r.uncompressed_size = p.size;
    r.compressed = false;
    file_chunks[p.node].push_back(r);
  }

  CreateReport rep;
  format::BootstrapSpec spec;
  spec.tarfs = true;
  spec.chunk_size = o.chunk_size;
  spec.compressor = format::Compressor::kNone;
  spec.digester = format::Digester::kSha256;
  spec.explicit_uid_gid = !o.repeatable;
  if (o.prefetch_table) spec.prefetch_nodes = prefetch_nodes(tt->tree.image_paths, o.prefetch_patterns);
  rep.inodes = tt->tree.nodes.size();
  rep.warnings = tt->tree.warnings;
  rep.implicit_dirs = tt->implicit_dirs;
  spec.nodes = std::move(tt->tree.nodes);
  for (size_t i = 0; i < spec.nodes.size(); i++) {
    const size_t f = tt->origin.empty() ? i : tt->origin[i];
    if (f < file_chunks.size()) spec.nodes[i].chunks = file_chunks[f];
  }
  for (auto& n : spec.nodes)
    if (n.hardlink_of >= 0) n.chunks = spec.nodes[size_t(n.hardlink_of)].chunks;
  if (!pieces.empty()) spec.blobs = {info};

  NYDUS_ASSIGN_OR_RETURN(auto boot, format::write_bootstrap(spec));
  NYDUS_TRY(write_file_atomic(o.bootstrap, boot.bytes));
  rep.bootstrap = o.bootstrap;
  rep.bootstrap_size = boot.bytes.size();
  for (const auto& fc : file_chunks) rep.files += !fc.empty();
  rep.chunks_total = rep.chunks_stored = pieces.size();
  for (const Piece& p : pieces) rep.bytes_read += p.size;
  if (!pieces.empty()) rep.blobs = {info};
  return rep;
}

}  // namespace nydus::builder
