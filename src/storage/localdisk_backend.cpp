#include "storage/localdisk_backend.h"

#include <fcntl.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <cstring>
#include <vector>

#include <nlohmann/json.hpp>

#include "storage/remote_config.h"
#include "common/io.h"

namespace nydus::storage {

namespace {

constexpr uint64_t kSector = 512;
constexpr uint32_t kMaxEntries = 4096;  // bound on an untrusted table

uint64_t le64(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}
uint32_t le32(const uint8_t* p) { return uint32_t(p[0]) | uint32_t(p[1]) << 8 | uint32_t(p[2]) << 16 | uint32_t(p[3]) << 24; }

// A GUID as stored on disk (first three fields little-endian) in the
// canonical order, 32 lower-case hex digits ("simple" form).
std::string guid_simple(const uint8_t* g) {
  static const int order[16] = {3, 2, 1, 0, 5, 4, 7, 6, 8, 9, 10, 11, 12, 13, 14, 15};
  static const char* hex = "0123456789abcdef";
  std::string s;
  for (int i : order) {
    s += hex[g[i] >> 4];
    s += hex[g[i] & 15];
  }
  return s;
}

// The "basic data" partition type, EBD0A0A2-B9E5-4433-87C0-68B6B72699C7.
constexpr const char* kBasicDataType = "ebd0a0a2b9e5443387c068b6b72699c7";

Status pread_all(int fd, uint8_t* buf, size_t len, uint64_t off) {
  return read_full_at(fd, off, std::span(buf, len), "localdisk: read");
}

}  // namespace

Result<LocalDiskConfig> parse_localdisk_config(const nlohmann::json& j) {
  using namespace remote_config;
  LocalDiskConfig c;
  NYDUS_ASSIGN_OR_RETURN(c.device_path, get_string(j, "device_path"));
  NYDUS_ASSIGN_OR_RETURN(c.disable_gpt, get_bool(j, "disable_gpt", false));
  if (c.device_path.empty()) return errorf(Errc::kInvalidArgument, "localdisk backend needs \"device_path\"");
  return c;
}

Result<std::shared_ptr<LocalDiskBackend>> LocalDiskBackend::create(LocalDiskConfig cfg) {
  int fd = ::open(cfg.device_path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return sys_error(fmt::format("localdisk: open disk device {}", cfg.device_path));
  struct stat st;
  uint64_t capacity = 0;
  if (::fstat(fd, &st) == 0 && S_ISBLK(st.st_mode)) {
    if (::ioctl(fd, BLKGETSIZE64, &capacity) != 0) capacity = 0;
  } else if (::fstat(fd, &st) == 0) {
    capacity = uint64_t(st.st_size);
  }
  std::shared_ptr<LocalDiskBackend> b(new LocalDiskBackend(std::move(cfg), fd, capacity));
  if (!b->cfg_.disable_gpt) NYDUS_TRY(b->scan_gpt());
  return b;
}

LocalDiskBackend::~LocalDiskBackend() {
  if (fd_ >= 0) ::close(fd_);
}

Status LocalDiskBackend::scan_gpt() {
  const std::string dev = cfg_.device_path;
  std::array<uint8_t, kSector> hdr{};
  if (capacity_ < 2 * kSector) return errorf(Errc::kCorrupt, "localdisk: {} is too small for a GPT", dev);
  NYDUS_TRY(pread_all(fd_, hdr.data(), hdr.size(), kSector));  // LBA 1
  if (std::memcmp(hdr.data(), "EFI PART", 8) != 0)
    return errorf(Errc::kCorrupt, "localdisk: {} has no GPT header (set \"disable_gpt\" for a raw disk)", dev);
  const uint64_t entries_lba = le64(&hdr[72]);
  const uint32_t count = le32(&hdr[80]);
  const uint32_t entry_size = le32(&hdr[84]);
  if (count > kMaxEntries || entry_size < 128 || entry_size > 4096 || entry_size % 8 != 0)
    return errorf(Errc::kCorrupt, "localdisk: {}: bad GPT partition array ({} entries of {} bytes)", dev, count,
                  entry_size);
  std::vector<uint8_t> table(size_t(count) * entry_size);
  if (entries_lba > capacity_ / kSector || table.size() > capacity_ - entries_lba * kSector)
    return errorf(Errc::kCorrupt, "localdisk: {}: GPT partition array beyond the device", dev);
  NYDUS_TRY(pread_all(fd_, table.data(), table.size(), entries_lba * kSector));
  for (uint32_t i = 0; i < count; ++i) {
    const uint8_t* e = &table[size_t(i) * entry_size];
    static const uint8_t kZero[16] = {};
    if (std::memcmp(e, kZero, 16) == 0) continue;  // unused entry
    const uint64_t first = le64(e + 32), last = le64(e + 40);
    if (last < first || last >= capacity_ / kSector)
      return errorf(Errc::kCorrupt, "localdisk: partition {} with invalid offset and length", guid_simple(e + 16));
    // The name: UTF-16LE up to 36 code units, NUL-terminated; ids are ASCII.
    std::string name;
    for (int k = 0; k < 36; ++k) {
      const uint16_t u = uint16_t(e[56 + 2 * k] | e[57 + 2 * k] << 8);
      if (u == 0) break;
      if (u > 0x7e || u < 0x20) return errorf(Errc::kCorrupt, "localdisk: partition {} has a non-ASCII name", i);
      name += char(u);
    }
    const bool legacy = guid_simple(e) == kBasicDataType;
    if (!legacy) name += guid_simple(e + 16);
    if (name.empty()) return errorf(Errc::kCorrupt, "localdisk: partition {} has empty blob id", guid_simple(e + 16));
    if (blobs_.count(name)) return errorf(Errc::kCorrupt, "localdisk: blob {} already exists", name);
    blobs_[name] = Extent{first * kSector, (last - first + 1) * kSector};
    legacy_names_ = legacy_names_ || legacy;
  }
  return ok();
}

Result<LocalDiskBackend::Extent> LocalDiskBackend::find(const std::string& blob_id) const {
  if (auto it = blobs_.find(blob_id); it != blobs_.end()) return it->second;
  // Legacy tables name a blob by the first 32 characters of its id.
  if (legacy_names_ && blob_id.size() >= 32)
    if (auto it = blobs_.find(blob_id.substr(0, 32)); it != blobs_.end()) return it->second;
  return errorf(Errc::kNotFound, "localdisk: can not find such blob: {}", blob_id);
}

Status LocalDiskBackend::read(const std::string& blob_id, uint64_t offset, std::span<uint8_t> out) {
  read_count_.fetch_add(1, std::memory_order_relaxed);
  auto ext = find(blob_id);
  if (!ext) {
    read_errors_.fetch_add(1, std::memory_order_relaxed);
    return std::unexpected(std::move(ext).error());
  }
  if (offset > ext->length || out.size() > ext->length - offset) {
    read_errors_.fetch_add(1, std::memory_order_relaxed);
    return errorf(Errc::kCorrupt, "localdisk: read {}+{} beyond blob {} ({} bytes)", offset, out.size(), blob_id,
                  ext->length);
  }
  auto st = pread_all(fd_, out.data(), out.size(), ext->offset + offset);
  if (!st) {
    read_errors_.fetch_add(1, std::memory_order_relaxed);
    return st;
  }
  read_bytes_.fetch_add(out.size(), std::memory_order_relaxed);
  return ok();
}

Result<uint64_t> LocalDiskBackend::blob_size(const std::string& blob_id) {
  NYDUS_ASSIGN_OR_RETURN(Extent e, find(blob_id));
  return e.length;
}

BackendMetrics LocalDiskBackend::metrics() const {
  BackendMetrics m;
  m.read_count = read_count_.load();
  m.read_bytes = read_bytes_.load();
  m.read_errors = read_errors_.load();
  return m;
}

}  // namespace nydus::storage
