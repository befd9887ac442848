#include "convert/bootstrap_layer.h"

#include <archive.h>
#include <archive_entry.h>

#include <cstdio>
#include <memory>
#include <vector>

#include "convert/image_store.h"
#include "convert/mapped_file.h"
#include "convert/oci.h"

namespace nydus::convert {

namespace {

struct ArchiveFree {
  void operator()(archive* a) const { archive_write_free(a); }
};
struct ReadFree {
  void operator()(archive* a) const { archive_read_free(a); }
};
struct EntryFree {
  void operator()(archive_entry* e) const { archive_entry_free(e); }
};

// One tar (gzip'd or not) with "image/" and "image/image.boot".
Status write_tar(const std::filesystem::path& out, std::span<const uint8_t> boot, bool gzip) {
  std::unique_ptr<archive, ArchiveFree> a(archive_write_new());
  if (!a) return errorf(Errc::kNoSpace, "archive_write_new");
  archive_write_set_format_pax_restricted(a.get());
  if (gzip) {
    archive_write_add_filter_gzip(a.get());
    // No name or time in the gzip header: the same bootstrap gives the same layer.
    archive_write_set_filter_option(a.get(), "gzip", "timestamp", nullptr);
  }
  if (archive_write_open_filename(a.get(), out.c_str()) != ARCHIVE_OK)
    return errorf(Errc::kIo, "open {}: {}", out.string(), archive_error_string(a.get()));
  auto add = [&](const char* name, mode_t type, mode_t perm, std::span<const uint8_t> data) -> Status {
    std::unique_ptr<archive_entry, EntryFree> e(archive_entry_new());
    archive_entry_set_pathname(e.get(), name);
    archive_entry_set_filetype(e.get(), type);
    archive_entry_set_perm(e.get(), perm);
    archive_entry_set_size(e.get(), la_int64_t(data.size()));
    archive_entry_set_mtime(e.get(), 0, 0);
    if (archive_write_header(a.get(), e.get()) != ARCHIVE_OK)
      return errorf(Errc::kIo, "tar header {}: {}", name, archive_error_string(a.get()));
    if (!data.empty() && archive_write_data(a.get(), data.data(), data.size()) != la_ssize_t(data.size()))
      return errorf(Errc::kIo, "tar data {}: {}", name, archive_error_string(a.get()));
    return ok();
  };
  NYDUS_TRY(add("image", AE_IFDIR, 0755, {}));
  NYDUS_TRY(add(std::string(kBootstrapInLayer).c_str(), AE_IFREG, 0644, boot));
  if (archive_write_close(a.get()) != ARCHIVE_OK)
    return errorf(Errc::kIo, "close {}: {}", out.string(), archive_error_string(a.get()));
  return ok();
}

}  // namespace

Result<BootstrapLayer> write_bootstrap_layer(const std::filesystem::path& bootstrap, const std::filesystem::path& dir) {
  NYDUS_ASSIGN_OR_RETURN(MappedFile boot, MappedFile::open_read(bootstrap));
  BootstrapLayer l;
  // The diff id is the digest of the uncompressed tar: write it once to hash it.
  const auto plain = dir / "bootstrap.tar";
  NYDUS_TRY(write_tar(plain, boot.bytes(), false));
  NYDUS_ASSIGN_OR_RETURN(l.diff_id, file_digest(plain));
  std::error_code ec;
  std::filesystem::remove(plain, ec);
  l.file = dir / "bootstrap.tar.gz";
  NYDUS_TRY(write_tar(l.file, boot.bytes(), true));
  NYDUS_ASSIGN_OR_RETURN(l.digest, file_digest(l.file));
  l.size = std::filesystem::file_size(l.file, ec);
  return l;
}

Status extract_bootstrap(const std::filesystem::path& layer, const std::filesystem::path& out) {
  std::unique_ptr<archive, ReadFree> a(archive_read_new());
  archive_read_support_filter_all(a.get());
  archive_read_support_format_tar(a.get());
  if (archive_read_open_filename(a.get(), layer.c_str(), 1 << 20) != ARCHIVE_OK)
    return errorf(Errc::kCorrupt, "bootstrap layer: {}", archive_error_string(a.get()));
  archive_entry* e = nullptr;
  while (archive_read_next_header(a.get(), &e) == ARCHIVE_OK) {
    std::string name = archive_entry_pathname(e) ? archive_entry_pathname(e) : "";
    if (name.starts_with("./")) name.erase(0, 2);
    if (name != kBootstrapInLayer) continue;
    std::unique_ptr<FILE, int (*)(FILE*)> f(std::fopen(out.c_str(), "wb"), &std::fclose);
    if (!f) return sys_error(fmt::format("create {}", out.string()));
    std::vector<char> buf(1 << 20);
    la_ssize_t n;
    while ((n = archive_read_data(a.get(), buf.data(), buf.size())) > 0)
      if (std::fwrite(buf.data(), 1, size_t(n), f.get()) != size_t(n)) return sys_error("write bootstrap");
    if (n < 0) return errorf(Errc::kCorrupt, "bootstrap layer: {}", archive_error_string(a.get()));
    return ok();
  }
  return errorf(Errc::kCorrupt, "the bootstrap layer has no {}", kBootstrapInLayer);
}

}  // namespace nydus::convert
