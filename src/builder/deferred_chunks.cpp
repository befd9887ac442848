#include "builder/deferred_chunks.h"

#include <fcntl.h>
#include <unistd.h>

#include <cstring>

#include "common/io.h"

namespace nydus::builder {

namespace {

// Private to one process and one build: native layout, no versioning.
struct Record {
  uint64_t offset;      // in the file
  uint32_t file;        // ChunkJob::file
  uint32_t length;      // uncompressed bytes
  uint32_t stored_len;  // bytes that follow
  uint32_t raw_len;     // raw bytes after those (0 unless kept and compressed)
  uint32_t crc32;
  uint32_t compressed;
  format::Digest digest;
};

constexpr size_t kFlushAt = 8u << 20;

}  // namespace

Result<std::unique_ptr<DeferredChunks>> DeferredChunks::create(const std::filesystem::path& dir, bool keep_raw) {
  int fd = ::open(dir.c_str(), O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
  if (fd < 0) {
    // Filesystems without O_TMPFILE: a named file, unlinked at once.
    std::string tmpl = (dir / ".nydus-deferred-XXXXXX").string();
    fd = ::mkostemp(tmpl.data(), O_CLOEXEC);
    if (fd < 0) return sys_error("create a temporary file in " + dir.string());
    ::unlink(tmpl.c_str());
  }
  return std::unique_ptr<DeferredChunks>(new DeferredChunks(fd, keep_raw));
}

DeferredChunks::~DeferredChunks() {
  if (fd_ >= 0) ::close(fd_);
}

Status DeferredChunks::add(const ChunkResult& r) {
  Record rec{};
  rec.offset = r.job->offset;
  rec.file = r.job->file;
  rec.length = r.job->length;
  rec.stored_len = uint32_t(r.stored.size());
  rec.raw_len = keep_raw_ && r.compressed ? uint32_t(r.raw.size()) : 0;
  rec.crc32 = r.crc32;
  rec.compressed = r.compressed;
  rec.digest = r.digest;
  const auto* p = reinterpret_cast<const uint8_t*>(&rec);
  buf_.insert(buf_.end(), p, p + sizeof rec);
  buf_.insert(buf_.end(), r.stored.begin(), r.stored.end());
  if (rec.raw_len) buf_.insert(buf_.end(), r.raw.begin(), r.raw.end());
  count_++;
  return buf_.size() >= kFlushAt ? flush() : ok();
}

Status DeferredChunks::flush() {
  NYDUS_TRY(write_full(fd_, buf_, "write deferred chunks"));
  buf_.clear();
  return ok();
}

Status DeferredChunks::replay(const std::function<Status(const ChunkResult&)>& fn) {
  NYDUS_TRY(flush());
  std::vector<uint8_t> data;
  uint64_t pos = 0;
  for (uint64_t i = 0; i < count_; i++) {
    Record rec;
    NYDUS_TRY(read_full_at(fd_, pos, std::span(reinterpret_cast<uint8_t*>(&rec), sizeof rec), "read deferred chunks"));
    pos += sizeof rec;
    data.resize(size_t(rec.stored_len) + rec.raw_len);
    NYDUS_TRY(read_full_at(fd_, pos, std::span(data), "read deferred chunks"));
    pos += data.size();
    ChunkJob job{rec.file, nullptr, rec.offset, rec.length, {}};
    ChunkResult r;
    r.job = &job;
    r.digest = rec.digest;
    r.crc32 = rec.crc32;
    r.compressed = rec.compressed != 0;
    r.stored = std::span<const uint8_t>(data.data(), rec.stored_len);
    r.raw = r.compressed ? std::span<const uint8_t>(data.data() + rec.stored_len, rec.raw_len) : r.stored;
    NYDUS_TRY(fn(r));
  }
  return ok();
}

}  // namespace nydus::builder
