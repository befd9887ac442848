// Writes tar layers with libarchive for the tar/merge tests.
#pragma once

#include <archive.h>
#include <archive_entry.h>
#include <sys/stat.h>

#include <filesystem>
#include <string>
#include <utility>
#include <vector>

namespace nydus::test {

struct TarEntry {
  std::string path;
  unsigned type = AE_IFREG;
  unsigned perm = 0644;
  std::string data{};      // regular files
  std::string link{};      // symlink target
  std::string hardlink{};  // hardlink target path
  unsigned rmajor = 0, rminor = 0;
  int64_t mtime = 1700000000;
  long mtime_ns = 0;
  unsigned uid = 0, gid = 0;
  std::vector<std::pair<std::string, std::string>> xattrs{};
};

inline void write_tar(const std::filesystem::path& out, const std::vector<TarEntry>& entries, bool gzip = false) {
  archive* a = archive_write_new();
  archive_write_set_format_pax_restricted(a);
  if (gzip) archive_write_add_filter_gzip(a);
  archive_write_open_filename(a, out.c_str());
  for (auto& t : entries) {
    archive_entry* e = archive_entry_new();
    archive_entry_set_pathname(e, t.path.c_str());
    if (!t.hardlink.empty()) {
      archive_entry_set_hardlink(e, t.hardlink.c_str());
      archive_entry_set_filetype(e, AE_IFREG);
      archive_entry_set_size(e, 0);
    } else {
      archive_entry_set_filetype(e, t.type);
      archive_entry_set_size(e, t.type == AE_IFREG ? int64_t(t.data.size()) : 0);
    }
    archive_entry_set_perm(e, t.perm);
    archive_entry_set_uid(e, t.uid);
    archive_entry_set_gid(e, t.gid);
    archive_entry_set_mtime(e, t.mtime, t.mtime_ns);
    if (t.type == AE_IFLNK) archive_entry_set_symlink(e, t.link.c_str());
    if (t.type == AE_IFCHR || t.type == AE_IFBLK) {
      archive_entry_set_rdevmajor(e, t.rmajor);
      archive_entry_set_rdevminor(e, t.rminor);
    }
    for (auto& [k, v] : t.xattrs) archive_entry_xattr_add_entry(e, k.c_str(), v.data(), v.size());
    archive_write_header(a, e);
    if (t.hardlink.empty() && t.type == AE_IFREG && !t.data.empty()) archive_write_data(a, t.data.data(), t.data.size());
    archive_entry_free(e);
  }
  archive_write_close(a);
  archive_write_free(a);
}

}  // namespace nydus::test
