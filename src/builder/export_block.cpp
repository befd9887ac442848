#include "builder/export_block.h"

#include <fcntl.h>
#include <unistd.h>

#include "common/io.h"

namespace nydus::builder {

namespace {

Status pwrite_all(int fd, std::span<const uint8_t> data, uint64_t off, const std::string& what) {
  return write_full_at(fd, off, data, "write " + what);
}

}  // namespace

Result<ExportReport> export_block(format::ImageReader& image, const std::filesystem::path& output, bool verify,
                                  bool verity) {
  const auto& boot = image.bootstrap();
  const auto bytes = boot.bytes();
  ExportReport rep;
  // Where each blob goes, checked before anything is written: blobs must lie
  // after the bootstrap and must not overlap each other.
  uint64_t end = bytes.size();
  for (const auto& b : boot.blobs()) {
    const uint64_t start = uint64_t(b.mapped_blkaddr) << boot.super_block().blkszbits;
    if (b.mapped_blkaddr == 0 || start < end)
      return corrupt("blob {}: mapped block address {} overlaps the bootstrap or a previous blob", b.blob_id,
                     b.mapped_blkaddr);
    end = start + b.uncompressed_size;
  }
  rep.disk_size = end;

  const std::filesystem::path tmp = output.string() + ".tmp";
  int fd = ::open(tmp.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return sys_error("create " + tmp.string());
  auto fail = [&](Error e) -> Result<ExportReport> {
    ::close(fd);
    ::unlink(tmp.c_str());
    return std::unexpected(std::move(e));
  };
  if (auto s = pwrite_all(fd, bytes, 0, tmp.string()); !s) return fail(s.error());
  std::vector<uint8_t> buf;
  for (uint32_t i = 0; i < boot.blobs().size(); i++) {
    const uint64_t base = uint64_t(boot.blobs()[i].mapped_blkaddr) << boot.super_block().blkszbits;
    auto f = image.blob(i);
    if (!f) return fail(f.error());
    if (boot.blobs()[i].features & format::blob_features::kTarfs) {
      // The tar whole (headers too): the disk's blocks are then upstream's.
      const uint64_t size = boot.blobs()[i].uncompressed_size;
      if ((*f)->file_size() < size)
        return fail(Error{Errc::kCorrupt, 0, fmt::format("tar blob {} holds {} bytes, the image says {}",
                                                         boot.blobs()[i].blob_id, (*f)->file_size(), size)});
      buf.resize(1 << 20);
      for (uint64_t off = 0; off < size; off += buf.size()) {
        const auto piece = std::span<uint8_t>(buf.data(), std::min<uint64_t>(buf.size(), size - off));
        if (auto s = (*f)->pread_exact(off, piece); !s) return fail(s.error());
        if (auto s = pwrite_all(fd, piece, base + off, tmp.string()); !s) return fail(s.error());
      }
    }
    auto recs = image.blob_chunks(i);
    if (!recs) return fail(recs.error());
    for (const auto& r : **recs) {
      if (r.uncompressed_size == 0) continue;
      if (r.uncompressed_offset + r.uncompressed_size > boot.blobs()[i].uncompressed_size)
        return fail(Error{Errc::kCorrupt, 0, fmt::format("blob {} chunk {} lies beyond the blob", i, r.ci_index)});
      buf.resize(r.uncompressed_size);
      if (auto s = (*f)->read_chunk(r, buf, verify); !s) return fail(s.error());
      if (auto s = pwrite_all(fd, buf, base + r.uncompressed_offset, tmp.string()); !s) return fail(s.error());
      rep.chunks_written++;
    }
  }
  if (::ftruncate(fd, off_t(end)) != 0) return fail(sys_error("truncate " + tmp.string()).error());
  if (verity) {
    const uint64_t bs = boot.block_size();
    if (end % bs != 0) return fail(Error{Errc::kCorrupt, 0, fmt::format("disk of {} bytes is not whole blocks", end)});
    auto t = format::append_verity_tree(fd, end / bs, uint32_t(bs));
    if (!t) return fail(t.error());
    rep.verity = *t;
  }
  if (::fsync(fd) != 0) return fail(sys_error("finish " + tmp.string()).error());
  if (::close(fd) != 0) return sys_error("close " + tmp.string());
  if (::rename(tmp.c_str(), output.c_str()) != 0) return sys_error("rename to " + output.string());
  return rep;
}

}  // namespace nydus::builder
