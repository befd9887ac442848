#include "fanotify/inflight_journal.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cstring>

namespace nydus::fanotify {

struct InflightJournal::Header {
  uint64_t magic;
  uint32_t version;
  uint32_t reserved;
  uint8_t pad[48];
};

struct InflightJournal::Slot {
  uint64_t offset;
  uint64_t len;
  uint32_t blob;
  uint32_t state;  // atomic: 1 = pending
};

namespace {

constexpr uint64_t kMagic = 0x4c4e52554f4a464eull;  // "NFJOURNL" little-endian
constexpr uint32_t kVersion = 1;

// A 64-byte header, then one 24-byte slot per fd number.
constexpr size_t file_size() { return 64 + size_t(InflightJournal::kSlots) * 24; }

Result<void*> map_file(const std::filesystem::path& path, bool fresh) {
  const int flags = O_RDWR | O_CLOEXEC | (fresh ? O_CREAT | O_TRUNC : 0);
  int fd = ::open(path.c_str(), flags, 0600);
  if (fd < 0) return sys_error(fmt::format("opening {}", path.string()));
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    const int err = errno;
    ::close(fd);
    return sys_error(fmt::format("stat {}", path.string()), err);
  }
  if (fresh) {
    if (::ftruncate(fd, off_t(file_size())) != 0) {
      const int err = errno;
      ::close(fd);
      return sys_error(fmt::format("sizing {}", path.string()), err);
    }
  } else if (!S_ISREG(st.st_mode) || uint64_t(st.st_size) != file_size()) {
    ::close(fd);
    return errorf(Errc::kCorrupt, "{} is not an in-flight journal ({} bytes)", path.string(), st.st_size);
  }
  void* m = ::mmap(nullptr, file_size(), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  const int err = errno;
  ::close(fd);
  if (m == MAP_FAILED) return sys_error(fmt::format("mmap {}", path.string()), err);
  return m;
}

}  // namespace

Result<std::unique_ptr<InflightJournal>> InflightJournal::create(const std::filesystem::path& path) {
  static_assert(sizeof(Header) == 64 && sizeof(Slot) == 24);
  static_assert(file_size() == sizeof(Header) + kSlots * sizeof(Slot));
  NYDUS_ASSIGN_OR_RETURN(void* m, map_file(path, true));
  std::unique_ptr<InflightJournal> j(new InflightJournal(path, m));
  j->header()->magic = kMagic;
  j->header()->version = kVersion;
  return j;
}

Result<std::unique_ptr<InflightJournal>> InflightJournal::open(const std::filesystem::path& path) {
  NYDUS_ASSIGN_OR_RETURN(void* m, map_file(path, false));
  std::unique_ptr<InflightJournal> j(new InflightJournal(path, m));
  if (j->header()->magic != kMagic || j->header()->version != kVersion)
    return errorf(Errc::kCorrupt, "{}: not an in-flight journal of this version", path.string());
  return j;
}

InflightJournal::~InflightJournal() {
  if (map_) ::munmap(map_, file_size());
}

InflightJournal::Header* InflightJournal::header() const { return static_cast<Header*>(map_); }
InflightJournal::Slot* InflightJournal::slots() const {
  return reinterpret_cast<Slot*>(static_cast<uint8_t*>(map_) + sizeof(Header));
}

void InflightJournal::record(int fd, uint32_t blob, uint64_t offset, uint64_t len) {
  if (fd < 0 || uint32_t(fd) >= kSlots) return;
  Slot& s = slots()[fd];
  s.offset = offset;
  s.len = len;
  s.blob = blob;
  std::atomic_ref<uint32_t>(s.state).store(1, std::memory_order_release);
}

void InflightJournal::clear(int fd) {
  if (fd < 0 || uint32_t(fd) >= kSlots) return;
  std::atomic_ref<uint32_t>(slots()[fd].state).store(0, std::memory_order_release);
}

std::vector<InflightJournal::Entry> InflightJournal::pending() const {
  std::vector<Entry> out;
  for (uint32_t fd = 0; fd < kSlots; fd++) {
    Slot& s = slots()[fd];
    if (std::atomic_ref<uint32_t>(s.state).load(std::memory_order_acquire) != 1) continue;
    out.push_back(Entry{int(fd), s.blob, s.offset, s.len});
  }
  return out;
}

}  // namespace nydus::fanotify
