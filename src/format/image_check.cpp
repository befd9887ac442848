#include "format/image_check.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <set>

namespace nydus::format {

namespace {

struct Collector {
  CheckReport& rep;
  size_t max;
  void error(std::string msg) {
    if (rep.errors.size() < max) rep.errors.push_back(std::move(msg));
  }
  bool full() const { return rep.errors.size() >= max; }
};

Result<std::string> sha256_of_file(const std::filesystem::path& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return sys_error("open " + path.string());
  Sha256Stream h;
  std::vector<uint8_t> buf(1 << 20);
  for (;;) {
    ssize_t n = ::read(fd, buf.data(), buf.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      int e = errno;
      ::close(fd);
      return sys_error("read " + path.string(), e);
    }
    if (n == 0) break;
    h.update(std::span<const uint8_t>(buf.data(), size_t(n)));
  }
  ::close(fd);
  auto d = h.finish();
  return to_hex(d);
}

}  // namespace

CheckReport check_image(ImageReader& image, const CheckOptions& opts) {
  CheckReport rep;
  Collector c{rep, opts.max_errors};
  const Bootstrap& boot = image.bootstrap();
  const uint64_t cs = boot.chunk_size();
  std::set<uint64_t> seen_files;

  auto st = boot.walk([&](const std::string& path, const InodeView& ino) -> Status {
    if (c.full()) return make_error(Errc::kCorrupt, "too many errors");
    rep.inodes++;
    auto where = [&](const std::string& what) { return path + " (nid " + std::to_string(ino.nid) + "): " + what; };
    if (auto x = boot.xattrs(ino); !x) c.error(where(x.error().message));
    if (ino.is_dir()) {
      rep.dirs++;
    } else if (ino.is_symlink()) {
      rep.symlinks++;
      if (auto l = boot.read_link(ino); !l) c.error(where(l.error().message));
    } else if (ino.is_reg()) {
      if (!seen_files.insert(ino.nid).second) {
        rep.hardlinks++;
        return ok();
      }
      rep.files++;
      rep.file_bytes += ino.size;
      auto refs = boot.chunks(ino);
      if (!refs) {
        c.error(where(refs.error().message));
        return ok();
      }
      uint64_t off = 0;
      for (const auto& ref : *refs) {
        rep.chunk_refs++;
        const uint64_t want = std::min<uint64_t>(cs, ino.size - off);
        auto r = image.resolve(ref);
        if (!r) {
          c.error(where(fmt::format("chunk at {}: {}", off, r.error().message)));
        } else if (r->uncompressed_size != want) {
          c.error(where(fmt::format("chunk at {} holds {} bytes, expected {}", off, r->uncompressed_size, want)));
        }
        off += want;
      }
    } else {
      rep.others++;
    }
    return ok();
  });
  if (!st) c.error(st.error().message);

  for (uint32_t nid : boot.prefetch_nids())
    if (auto i = boot.inode(nid); !i) c.error(fmt::format("prefetch table: {}", i.error().message));

  // Every stored chunk of every blob, once.
  if (opts.verify_data && image.has_blobs()) {
    std::vector<uint8_t> buf;
    for (uint32_t b = 0; b < boot.blobs().size() && !c.full(); b++) {
      auto f = image.blob(b);
      if (!f) {
        c.error(fmt::format("blob {}: {}", boot.blobs()[b].blob_id, f.error().message));
        continue;
      }
      auto recs = image.blob_chunks(b);
      if (!recs) {
        c.error(fmt::format("blob {}: {}", boot.blobs()[b].blob_id, recs.error().message));
        continue;
      }
      for (const auto& r : **recs) {
        if (r.uncompressed_size == 0) continue;
        buf.resize(r.uncompressed_size);
        // A chunk no file references (e.g. a lower layer's file hidden by a
        // whiteout in a merged image) has no digest in the chunk table: it is
        // still read and decompressed, but cannot be digest-checked.
        const bool known = r.digest != format::Digest{};
        if (auto s = image.read_chunk(b, r, buf, known); !s) {
          c.error(fmt::format("blob {} chunk {}: {}", boot.blobs()[b].blob_id, r.ci_index, s.error().message));
          if (c.full()) break;
          continue;
        }
        rep.chunks_verified++;
        rep.bytes_verified += r.uncompressed_size;
      }
    }
  }
  if (opts.verify_blob_ids && image.has_blobs()) {
    for (uint32_t b = 0; b < boot.blobs().size(); b++) {
      auto f = image.blob(b);
      if (!f) continue;
      const std::string& id = boot.blobs()[b].blob_id;
      if (id == std::string(64, kInlinedBlobIdPlaceholder)) continue;
      auto path = image.blob_path(b);
      if (!path) continue;
      auto h = sha256_of_file(*path);
      if (!h) rep.warnings.push_back(h.error().message);
      else if (*h != id) rep.warnings.push_back(fmt::format("blob {}: file sha256 is {}, not its id", id, *h));
    }
  }
  return rep;
}

}  // namespace nydus::format
