#include "builder/tar_source.h"

#include <archive.h>
#include <archive_entry.h>
#include <sys/stat.h>

#include <memory>
#include <set>

#include "builder/tree_edit.h"
#include "format/layout.h"

namespace nydus::builder {

namespace {

struct ArchiveCloser {
  void operator()(archive* a) const { archive_read_free(a); }
};

Error archive_err(archive* a, const std::string& what) {
  const char* s = archive_error_string(a);
  return Error{Errc::kCorrupt, 0, what + ": " + (s ? s : "unknown libarchive error")};
}

bool storable_xattr(std::string_view name) {
  return name.starts_with("user.") || name.starts_with("trusted.") || name.starts_with("security.") ||
         name == "system.posix_acl_access" || name == "system.posix_acl_default";
}

// "./a//b/" -> {"a","b"}; leading '/' dropped (absolute names are made
// relative); ".." rejected: the tar must not reach outside its root.
Result<std::vector<std::string>> split_path(std::string_view p, const TarLimits& lim) {
  if (p.size() > lim.max_path) return errorf(Errc::kCorrupt, "tar entry path longer than {} bytes", lim.max_path);
  std::vector<std::string> out;
  size_t i = 0;
  while (i <= p.size()) {
    size_t j = p.find('/', i);
    if (j == std::string_view::npos) j = p.size();
    std::string_view c = p.substr(i, j - i);
    i = j + 1;
    if (c.empty() || c == ".") continue;
    if (c == "..") return errorf(Errc::kCorrupt, "tar entry '{}' contains '..'", p);
    if (c.size() > 255) return errorf(Errc::kCorrupt, "tar entry '{}': a name is longer than 255 bytes", p);
    out.emplace_back(c);
    if (out.size() > lim.max_depth) return errorf(Errc::kCorrupt, "tar entry '{}' is deeper than {}", p, lim.max_depth);
  }
  return out;
}

class TarBuilder {
 public:
  TarBuilder(uint32_t chunk_size, const TarDataFn& on_data, const TarLimits& lim, const TarFileFn& on_file,
             const TarStreamFn& on_stream)
      : chunk_size_(chunk_size), on_data_(on_data), on_file_(on_file), on_stream_(on_stream), lim_(lim) {
    data_of_.push_back(0);
  }

  Status run(const std::string& source) {
    std::unique_ptr<archive, ArchiveCloser> a(archive_read_new());
    if (!a) return make_error(Errc::kInternal, "archive_read_new failed");
    // Compression is detected from the stream (gzip, zstd, ... or none).
    archive_read_support_filter_all(a.get());
    archive_read_support_format_tar(a.get());
    archive_read_support_format_gnutar(a.get());
    const bool stdin_src = source == "-";
    if (archive_read_open_filename(a.get(), stdin_src ? nullptr : source.c_str(), 1 << 20) != ARCHIVE_OK)
      return std::unexpected(archive_err(a.get(), "open " + source));
    size_t entries = 0;
    for (;;) {
      archive_entry* e = nullptr;
      int r = archive_read_next_header(a.get(), &e);
      if (r == ARCHIVE_EOF) break;
      if (r == ARCHIVE_WARN) warnings.push_back(std::string("tar: ") + archive_error_string(a.get()));
      else if (r != ARCHIVE_OK) return std::unexpected(archive_err(a.get(), "read " + source));
      if (++entries > lim_.max_entries) return errorf(Errc::kCorrupt, "tar has more than {} entries", lim_.max_entries);
      entry_ = e;
      NYDUS_TRY(add_entry(a.get(), e));
    }
    return ok();
  }

  TarTree finish() {
    auto f = tree_.finish();
    TarTree t;
    t.tree.nodes = std::move(f.nodes);
    t.tree.image_paths = std::move(f.image_paths);
    t.tree.paths.assign(t.tree.nodes.size(), std::string());
    t.tree.warnings = std::move(warnings);
    for (uint32_t o : f.origin) t.origin.push_back(data_of_[o]);
    for (size_t k = 0; k < f.origin.size(); ++k)
      if (implicit_.count(f.origin[k])) t.implicit_dirs.push_back(t.tree.image_paths[k]);
    t.stream_offset = std::move(stream_offset_);
    return t;
  }

  std::vector<std::string> warnings;

 private:
  // Walks to the parent directory of `comps`, creating missing directories
  // (0755, as tar extraction does when a file precedes its directory). Never
  // goes through a symlink or other non-directory.
  Result<uint32_t> parent_dir(const std::vector<std::string>& comps, const std::string& path) {
    uint32_t dir = 0;
    for (size_t i = 0; i + 1 < comps.size(); i++) {
      int64_t c = tree_.child(dir, comps[i]);
      if (c < 0) {
        format::TreeNode d;
        d.mode = S_IFDIR | 0755;
        uint32_t n = new_node(std::move(d));
        tree_.set_child(dir, comps[i], n);
        implicit_.insert(n);
        dir = n;
      } else if (tree_.is_dir(uint32_t(c))) {
        dir = uint32_t(c);
      } else {
        return errorf(Errc::kCorrupt, "tar entry '{}': '{}' is not a directory", path, comps[i]);
      }
    }
    return dir;
  }

  uint32_t new_node(format::TreeNode n, int64_t group = -1) {
    uint32_t i = tree_.add(std::move(n), group);
    data_of_.push_back(i);
    return i;
  }

  Status add_entry(archive* a, archive_entry* e) {
    const char* pn = archive_entry_pathname(e);
    const std::string path = pn ? pn : "";
    NYDUS_ASSIGN_OR_RETURN(auto comps, split_path(path, lim_));
    if (lim_.skip_estargz_files && comps.size() == 1 &&
        (comps[0] == "stargz.index.json" || comps[0] == ".prefetch.landmark" || comps[0] == ".no.prefetch.landmark"))
      return ok();  // its data, if any, is skipped by the next header read

    if (const char* hl = archive_entry_hardlink(e)) {
      NYDUS_ASSIGN_OR_RETURN(auto tcomps, split_path(hl, lim_));
      int64_t target = lookup(tcomps);
      if (target < 0) return errorf(Errc::kCorrupt, "tar hardlink '{}' -> '{}': target not found", path, hl);
      if (comps.empty() || tree_.is_dir(uint32_t(target))) {
        warnings.push_back("skipped hardlink " + path + " -> " + hl + ": target is a directory");
        return ok();
      }
      NYDUS_ASSIGN_OR_RETURN(uint32_t dir, parent_dir(comps, path));
      const uint32_t t = uint32_t(target);
      if (tree_.link_group(t) < 0) tree_.set_link_group(t, t);
      // A link shares the target's inode: same attributes and data.
      uint32_t n = new_node(tree_.node(t), tree_.link_group(t));
      data_of_[n] = data_of_[t];
      if (int64_t(t) != tree_.child(dir, comps.back()))  // "x" linked to itself: nothing to do
        tree_.set_child(dir, comps.back(), n);
      return ok();  // any data of the entry is ignored (skipped by the next header read)
    }

    format::TreeNode node;
    node.mode = uint32_t(archive_entry_mode(e));
    node.uid = uint32_t(archive_entry_uid(e));
    node.gid = uint32_t(archive_entry_gid(e));
    node.mtime = uint64_t(int64_t(archive_entry_mtime(e)));  // pre-epoch times wrap, as in directory builds
    node.mtime_nsec = uint32_t(archive_entry_mtime_nsec(e));
    const unsigned type = archive_entry_filetype(e);
    switch (type) {
      case AE_IFREG: {
        const int64_t sz = archive_entry_size(e);
        node.size = sz > 0 ? uint64_t(sz) : 0;
        break;
      }
      case AE_IFDIR:
        break;
      case AE_IFLNK: {
        const char* t = archive_entry_symlink(e);
        node.symlink_target = t ? t : "";
        if (node.symlink_target.empty() || node.symlink_target.size() > 4095)
          return errorf(Errc::kCorrupt, "tar symlink '{}': target length {} not in 1..4095", path,
                        node.symlink_target.size());
        break;
      }
      case AE_IFCHR:
      case AE_IFBLK:
        node.rdev = format::encode_rdev(uint32_t(archive_entry_rdevmajor(e)), uint32_t(archive_entry_rdevminor(e)));
        break;
      case AE_IFIFO:
      case AE_IFSOCK:
        break;
      default:
        warnings.push_back("skipped tar entry " + path + " of unknown type");
        return ok();
    }
    archive_entry_xattr_reset(e);
    const char* xname;
    const void* xval;
    size_t xsize;
    while (archive_entry_xattr_next(e, &xname, &xval, &xsize) == ARCHIVE_OK) {
      if (!storable_xattr(xname)) {
        warnings.push_back(std::string("skipped xattr ") + xname + " of " + path + ": RAFS has no prefix for it");
        continue;
      }
      // libarchive may report a name twice (SCHILY.xattr and LIBARCHIVE.xattr): the last wins.
      std::erase_if(node.xattrs, [&](const format::XattrPair& x) { return x.name == xname; });
      node.xattrs.push_back({xname, std::string(static_cast<const char*>(xval), xsize)});
    }

    if (comps.empty()) {  // "./": the root's own attributes
      if (type == AE_IFDIR) update_dir(0, std::move(node));
      else warnings.push_back("skipped non-directory tar entry for the root '" + path + "'");
      return ok();
    }
    NYDUS_ASSIGN_OR_RETURN(uint32_t dir, parent_dir(comps, path));
    const int64_t old = tree_.child(dir, comps.back());
    if (type == AE_IFDIR && old >= 0 && tree_.is_dir(uint32_t(old))) {
      // A later entry for an existing directory updates it and keeps its children.
      update_dir(uint32_t(old), std::move(node));
      return ok();
    }
    const uint64_t size = node.size;
    const uint32_t n = new_node(std::move(node));
    tree_.set_child(dir, comps.back(), n);
    if (type == AE_IFREG) {
      if (on_file_) {
        std::string image_path;
        for (const auto& c : comps) image_path.append("/").append(c);
        on_file_(n, image_path);
      }
      NYDUS_TRY(stream_data(a, n, size, path));
    }
    return ok();
  }

  void update_dir(uint32_t d, format::TreeNode attrs) {
    implicit_.erase(d);
    auto& n = tree_.node(d);
    n.mode = attrs.mode;
    n.uid = attrs.uid;
    n.gid = attrs.gid;
    n.mtime = attrs.mtime;
    n.mtime_nsec = attrs.mtime_nsec;
    n.xattrs = std::move(attrs.xattrs);
  }

  // Without following symlinks; -1 if absent.
  int64_t lookup(const std::vector<std::string>& comps) const {
    uint32_t cur = 0;
    for (auto& c : comps) {
      if (!tree_.is_dir(cur)) return -1;
      int64_t k = tree_.child(cur, c);
      if (k < 0) return -1;
      cur = uint32_t(k);
    }
    return cur;
  }

  Status stream_data(archive* a, uint32_t node, uint64_t size, const std::string& path) {
    // Right after its header the tar reader has consumed exactly the bytes
    // before the entry's data (filter 0 counts the decompressed stream).
    if (stream_offset_.size() <= node) stream_offset_.resize(size_t(node) + 1, kNoStreamOffset);
    if (archive_entry_sparse_count(entry_) == 0) {
      stream_offset_[node] = uint64_t(archive_filter_bytes(a, 0));
      if (on_stream_) NYDUS_TRY(on_stream_(node, stream_offset_[node], size));
    }
    uint64_t off = 0;
    while (off < size) {
      const size_t want = size_t(std::min<uint64_t>(chunk_size_, size - off));
      std::vector<uint8_t> buf(want);
      size_t got = 0;
      while (got < want) {
        la_ssize_t r = archive_read_data(a, buf.data() + got, want - got);
        if (r < 0) return std::unexpected(archive_err(a, "read data of " + path));
        if (r == 0) return errorf(Errc::kCorrupt, "tar entry '{}': data ends at {} of {} bytes", path, off + got, size);
        got += size_t(r);
      }
      NYDUS_TRY(on_data_(node, off, std::move(buf)));
      off += want;
    }
    return ok();
  }

  uint32_t chunk_size_;
  const TarDataFn& on_data_;
  const TarFileFn& on_file_;
  const TarStreamFn& on_stream_;
  TarLimits lim_;
  EditTree tree_;
  std::vector<uint32_t> data_of_;  // arena node -> node whose data it shares
  std::vector<uint64_t> stream_offset_;  // see TarTree::stream_offset
  archive_entry* entry_ = nullptr;       // the entry being added
  std::set<uint32_t> implicit_{0};  // directories no entry described (the root until "./")
};

}  // namespace

Result<TarTree> scan_tar(const std::string& source, uint32_t chunk_size, const TarDataFn& on_data,
                         const TarLimits& limits, const TarFileFn& on_file, const TarStreamFn& on_stream) {
  TarBuilder b(chunk_size, on_data, limits, on_file, on_stream);
  NYDUS_TRY(b.run(source));
  return b.finish();
}

}  // namespace nydus::builder
