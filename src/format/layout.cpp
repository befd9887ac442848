#include "format/layout.h"

#include <sys/stat.h>

namespace nydus::format {

FileType file_type_from_mode(uint32_t mode) {
  switch (mode & S_IFMT) {
    case S_IFREG: return FileType::kRegular;
    case S_IFDIR: return FileType::kDirectory;
    case S_IFCHR: return FileType::kCharDev;
    case S_IFBLK: return FileType::kBlockDev;
    case S_IFIFO: return FileType::kFifo;
    case S_IFSOCK: return FileType::kSocket;
    case S_IFLNK: return FileType::kSymlink;
    default: return FileType::kUnknown;
  }
}

}  // namespace nydus::format
