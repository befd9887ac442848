#include "builder/unpack_image.h"

#include <archive.h>
#include <archive_entry.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <memory>
#include <string_view>
#include <unordered_map>

namespace nydus::builder {

namespace {

using format::InodeView;

struct ArchiveCloser {
  void operator()(archive* a) const { archive_write_free(a); }
};
using ArchivePtr = std::unique_ptr<archive, ArchiveCloser>;
struct EntryFreer {
  void operator()(archive_entry* e) const { archive_entry_free(e); }
};
using EntryPtr = std::unique_ptr<archive_entry, EntryFreer>;

std::string archive_msg(archive* a) {
  const char* s = archive_error_string(a);
  return s ? s : "unknown libarchive error";
}

// Path components come from the untrusted image: refuse anything that could
// name a place outside the tree or that a C string cannot carry.
Status check_path(std::string_view path) {
  if (path.find('\0') != std::string_view::npos) return corrupt("entry name with a NUL byte under '{}'", path.substr(0, path.find('\0')));
  size_t pos = 1;  // walk() paths start with '/'
  while (pos <= path.size()) {
    size_t slash = path.find('/', pos);
    if (slash == std::string_view::npos) slash = path.size();
    std::string_view comp = path.substr(pos, slash - pos);
    if (comp.empty() || comp == "." || comp == "..")
      return corrupt("unsafe entry name '{}' in path '{}'", comp, path);
    pos = slash + 1;
  }
  return ok();
}

const char* type_name(uint32_t mode) {
  switch (mode & S_IFMT) {
    case S_IFCHR: return "character device";
    case S_IFBLK: return "block device";
    case S_IFIFO: return "fifo";
    case S_IFSOCK: return "socket";
    default: return "entry";
  }
}

class TreeWriter {
 public:
  // `base` empty: tar mode (paths relative, root "."); else an absolute
  // directory every path is placed under (disk mode).
  TreeWriter(format::ImageReader& image, archive* a, std::string base, const UnpackOptions& opts,
             UnpackReport& rep)
      : image_(image), a_(a), base_(std::move(base)), opts_(opts), rep_(rep), entry_(archive_entry_new()) {}

  Status run() {
    if (!entry_) return make_error(Errc::kInternal, "archive_entry_new failed");
    return image_.bootstrap().walk([&](const std::string& path, const InodeView& ino) { return write_one(path, ino); });
  }

 private:
  bool to_disk() const { return !base_.empty(); }

  void warn(std::string msg) { rep_.warnings.push_back(std::move(msg)); }

  Status write_one(const std::string& path, const InodeView& ino) {
    const bool is_root = path == "/";
    if (!is_root) NYDUS_TRY(check_path(path));
    std::string name = is_root ? (to_disk() ? base_ : std::string(".")) : (to_disk() ? base_ + path : path.substr(1));
    const std::string& shown = path;  // messages use the image path

    const uint32_t type = ino.mode & S_IFMT;
    switch (type) {
      case S_IFREG: case S_IFDIR: case S_IFLNK: case S_IFCHR: case S_IFBLK: case S_IFIFO: break;
      case S_IFSOCK:
        // Neither tar nor archive_write_disk can represent a socket.
        warn(fmt::format("{}: skipped socket (tar cannot hold sockets)", shown));
        return ok();
      default:
        return corrupt("{}: inode {} has unknown file type in mode {:#o}", shown, ino.nid, ino.mode);
    }
    if (is_root && type != S_IFDIR) return corrupt("root inode {} is not a directory", ino.nid);

    archive_entry* e = entry_.get();
    archive_entry_clear(e);
    archive_entry_copy_pathname(e, name.c_str());  // raw bytes, no charset conversion
    archive_entry_set_mode(e, ino.mode);
    archive_entry_set_uid(e, ino.uid);
    archive_entry_set_gid(e, ino.gid);
    archive_entry_set_mtime(e, time_t(ino.mtime), long(ino.mtime_nsec));
    archive_entry_set_nlink(e, ino.nlink);

    // Second and later paths of one non-directory inode become hardlinks.
    bool hardlink = false;
    if (type != S_IFDIR) {
      auto [it, first] = first_path_.try_emplace(ino.nid, name);
      if (!first) {
        archive_entry_copy_hardlink(e, it->second.c_str());
        archive_entry_set_size(e, 0);
        hardlink = true;
      }
    }

    if (!hardlink) {
      if (type == S_IFREG) {
        archive_entry_set_size(e, int64_t(ino.size));
      } else if (type == S_IFLNK) {
        NYDUS_ASSIGN_OR_RETURN(std::string target, image_.bootstrap().read_link(ino));
        if (target.empty() || target.find('\0') != std::string::npos)
          return corrupt("{}: symlink target is empty or holds a NUL byte", shown);
        archive_entry_copy_symlink(e, target.c_str());
      } else if (type == S_IFCHR || type == S_IFBLK) {
        archive_entry_set_rdevmajor(e, format::rdev_major(ino.rdev()));
        archive_entry_set_rdevminor(e, format::rdev_minor(ino.rdev()));
      }
      auto xattrs = image_.bootstrap().xattrs(ino);
      if (!xattrs) return std::unexpected(std::move(xattrs).error().context(shown));
      for (const auto& x : *xattrs) {
        if (x.name.find('\0') != std::string::npos) return corrupt("{}: xattr name with a NUL byte", shown);
        archive_entry_xattr_add_entry(e, x.name.c_str(), x.value.data(), x.value.size());
      }
    }

    // libarchive defers the times of directories it creates, but sets those
    // of existing ones (the output dir itself) at once; their children then
    // bump the mtime again. Remember them to fix after close.
    if (to_disk() && type == S_IFDIR) {
      struct stat st;
      if (::lstat(name.c_str(), &st) == 0 && S_ISDIR(st.st_mode))
        existing_dirs_.push_back({name, ino.mtime, ino.mtime_nsec});
    }

    int r = archive_write_header(a_, e);
    if (r == ARCHIVE_WARN) {
      warn(fmt::format("{}: {}", shown, archive_msg(a_)));
    } else if (r != ARCHIVE_OK) {
      // Unprivileged extraction cannot mknod; keep going like tar does.
      if (to_disk() && r == ARCHIVE_FAILED && (type == S_IFCHR || type == S_IFBLK || type == S_IFIFO)) {
        warn(fmt::format("{}: skipped {}: {}", shown, type_name(ino.mode), archive_msg(a_)));
        return ok();
      }
      return errorf(Errc::kIo, "{}: writing entry: {}", shown, archive_msg(a_));
    }
    rep_.entries++;
    if (hardlink) rep_.hardlinks++;

    if (type == S_IFREG && !hardlink) {
      uint64_t written = 0;
      auto st = image_.read_file(ino, opts_.verify, [&](uint64_t off, std::span<const uint8_t> data) -> Status {
        if (off != written) return corrupt("{}: data chunk at {} after {} bytes", shown, off, written);
        if (written + data.size() > ino.size) return corrupt("{}: data longer than its size {}", shown, ino.size);
        la_ssize_t n = archive_write_data(a_, data.data(), data.size());
        if (n < 0 || size_t(n) != data.size())
          return errorf(Errc::kIo, "{}: writing data: {}", shown, archive_msg(a_));
        written += data.size();
        return ok();
      });
      if (!st) return std::unexpected(std::move(st).error().context(shown));
      // A short chunk list would otherwise be zero-padded silently.
      if (written != ino.size)
        return corrupt("{}: chunks hold {} bytes but the inode says {}", shown, written, ino.size);
      rep_.files++;
      rep_.bytes += written;
    }

    r = archive_write_finish_entry(a_);
    if (r == ARCHIVE_WARN) warn(fmt::format("{}: {}", shown, archive_msg(a_)));
    else if (r != ARCHIVE_OK) return errorf(Errc::kIo, "{}: finishing entry: {}", shown, archive_msg(a_));
    return ok();
  }

  struct DirTime {
    std::string path;
    uint64_t mtime;
    uint32_t nsec;
  };

 public:
  // Restore the mtimes of directories that existed before extraction
  // (deepest last written first, so parents end up right).
  Status fix_existing_dir_times() const {
    for (auto it = existing_dirs_.rbegin(); it != existing_dirs_.rend(); ++it) {
      struct timespec ts[2];
      ts[0].tv_sec = 0;
      ts[0].tv_nsec = UTIME_OMIT;
      ts[1].tv_sec = time_t(it->mtime);
      ts[1].tv_nsec = long(it->nsec);
      if (::utimensat(AT_FDCWD, it->path.c_str(), ts, AT_SYMLINK_NOFOLLOW) != 0)
        return sys_error("setting times of " + it->path);
    }
    return ok();
  }

 private:
  format::ImageReader& image_;
  archive* a_;
  std::string base_;
  const UnpackOptions& opts_;
  UnpackReport& rep_;
  EntryPtr entry_;
  std::unordered_map<uint64_t, std::string> first_path_;  // nid -> name written first
  std::vector<DirTime> existing_dirs_;
};

}  // namespace

Result<UnpackReport> unpack_to_tar(format::ImageReader& image, int fd, const UnpackOptions& opts) {
  ArchivePtr a(archive_write_new());
  if (!a) return make_error(Errc::kInternal, "archive_write_new failed");
  // Full pax (not pax_restricted) so nanosecond mtimes are always kept;
  // BINARY header charset so names are raw bytes, not locale-converted.
  if (archive_write_set_format_pax(a.get()) != ARCHIVE_OK ||
      archive_write_set_format_option(a.get(), "pax", "hdrcharset", "BINARY") != ARCHIVE_OK)
    return errorf(Errc::kInternal, "setting up the pax writer: {}", archive_msg(a.get()));
  if (archive_write_open_fd(a.get(), fd) != ARCHIVE_OK)
    return errorf(Errc::kIo, "opening tar output: {}", archive_msg(a.get()));
  UnpackReport rep;
  NYDUS_TRY(TreeWriter(image, a.get(), "", opts, rep).run());
  if (archive_write_close(a.get()) != ARCHIVE_OK)
    return errorf(Errc::kIo, "finishing tar output: {}", archive_msg(a.get()));
  return rep;
}

Result<UnpackReport> unpack_to_dir(format::ImageReader& image, const std::filesystem::path& dir,
                                   const UnpackOptions& opts) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return errorf(Errc::kIo, "creating {}: {}", dir.string(), ec.message());
  // A canonical base has no symlinks or "..", so the secure checks below
  // only ever judge the part of each path that came from the image.
  auto base = std::filesystem::canonical(dir, ec);
  if (ec) return errorf(Errc::kIo, "resolving {}: {}", dir.string(), ec.message());
  if (!std::filesystem::is_directory(base)) return errorf(Errc::kInvalidArgument, "{} is not a directory", dir.string());

  ArchivePtr a(archive_write_disk_new());
  if (!a) return make_error(Errc::kInternal, "archive_write_disk_new failed");
  // No ACL/FFLAGS: RAFS has no flags and POSIX ACLs arrive as system.posix_acl_*
  // xattrs. Owners only as root (else every chown would warn). SECURE_* stay
  // on because the image is untrusted; NOABSOLUTEPATHS is left off because
  // we prefix every (validated, relative) image path with the absolute base.
  int flags = ARCHIVE_EXTRACT_PERM | ARCHIVE_EXTRACT_TIME | ARCHIVE_EXTRACT_XATTR |
              ARCHIVE_EXTRACT_SECURE_SYMLINKS | ARCHIVE_EXTRACT_SECURE_NODOTDOT;
  if (geteuid() == 0) flags |= ARCHIVE_EXTRACT_OWNER;
  if (archive_write_disk_set_options(a.get(), flags) != ARCHIVE_OK)
    return errorf(Errc::kInternal, "setting up extraction: {}", archive_msg(a.get()));

  UnpackReport rep;
  std::string b = base.string();
  if (b.size() > 1 && b.back() == '/') b.pop_back();
  if (b == "/") return errorf(Errc::kInvalidArgument, "refusing to unpack over /");
  TreeWriter w(image, a.get(), b, opts, rep);
  NYDUS_TRY(w.run());
  // Close applies the deferred directory modes and times.
  int r = archive_write_close(a.get());
  if (r == ARCHIVE_WARN) rep.warnings.push_back(archive_msg(a.get()));
  else if (r != ARCHIVE_OK) return errorf(Errc::kIo, "finishing extraction into {}: {}", b, archive_msg(a.get()));
  NYDUS_TRY(w.fix_existing_dir_times());
  return rep;
}

}  // namespace nydus::builder
