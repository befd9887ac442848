#include "convert/layer_apply.h"

#include <archive.h>
#include <archive_entry.h>
#include <sys/stat.h>

#include <memory>
#include <set>
#include <vector>

#include "format/digest.h"

namespace nydus::convert {

namespace {

struct ReadFree {
  void operator()(archive* a) const { archive_read_free(a); }
};

constexpr std::string_view kWh = ".wh.";
constexpr std::string_view kOpaque = ".wh..wh..opq";

// "./a/b/" -> "/a/b"; "" and "./" -> "/". Rejects ".." components.
Result<std::string> clean_path(std::string_view p) {
  std::string out;
  size_t i = 0;
  while (i <= p.size()) {
    size_t j = p.find('/', i);
    if (j == std::string_view::npos) j = p.size();
    std::string_view c = p.substr(i, j - i);
    if (c == "..") return errorf(Errc::kCorrupt, "tar path \"{}\" goes up with ..", p);
    if (!c.empty() && c != ".") out += "/" + std::string(c);
    i = j + 1;
  }
  return out.empty() ? std::string("/") : out;
}

std::string parent_of(const std::string& p) {
  const auto s = p.rfind('/');
  return s == 0 ? "/" : p.substr(0, s);
}

std::string base_of(const std::string& p) { return p.substr(p.rfind('/') + 1); }

void remove_subtree(RefTree& t, const std::string& p) {
  t.erase(p);
  const std::string prefix = p == "/" ? "/" : p + "/";
  for (auto it = t.lower_bound(prefix); it != t.end() && it->first.starts_with(prefix);) it = t.erase(it);
}

// A parent directory no tar entry described.
RefEntry undescribed_dir() {
  RefEntry e;
  e.mode = S_IFDIR | 0755;
  e.described = false;
  return e;
}

}  // namespace

Status apply_layer(RefTree& tree, const std::filesystem::path& layer_tar) {
  std::unique_ptr<archive, ReadFree> a(archive_read_new());
  archive_read_support_filter_all(a.get());
  archive_read_support_format_tar(a.get());
  archive_read_support_format_gnutar(a.get());
  if (archive_read_open_filename(a.get(), layer_tar.c_str(), 1 << 20) != ARCHIVE_OK)
    return errorf(Errc::kIo, "open layer {}: {}", layer_tar.string(), archive_error_string(a.get()));
  if (!tree.count("/")) tree["/"] = undescribed_dir();

  // Whiteouts hide lower-layer entries only: collect them and this layer's
  // entries, apply the whiteouts first, then the entries.
  std::vector<std::string> whiteouts, opaques;
  std::vector<std::pair<std::string, RefEntry>> entries;
  std::map<std::string, size_t> index;  // path -> position in entries (later entries win)
  std::vector<uint8_t> buf(1 << 20);
  for (;;) {
    archive_entry* e = nullptr;
    const int r = archive_read_next_header(a.get(), &e);
    if (r == ARCHIVE_EOF) break;
    if (r != ARCHIVE_OK && r != ARCHIVE_WARN)
      return errorf(Errc::kCorrupt, "layer {}: {}", layer_tar.string(), archive_error_string(a.get()));
    NYDUS_ASSIGN_OR_RETURN(std::string path, clean_path(archive_entry_pathname(e) ? archive_entry_pathname(e) : ""));
    // eStargz's own files are not part of the image: upstream's converter
    // (tarball builder, is_stargz_special_files) leaves them out of every layer.
    if (path == "/stargz.index.json" || path == "/.prefetch.landmark" || path == "/.no.prefetch.landmark") continue;
    const std::string base = base_of(path);
    if (base == kOpaque) {
      opaques.push_back(parent_of(path));
      continue;
    }
    if (base.starts_with(kWh)) {
      whiteouts.push_back(parent_of(path) == "/" ? "/" + base.substr(kWh.size())
                                                  : parent_of(path) + "/" + base.substr(kWh.size()));
      continue;
    }
    RefEntry ent;
    if (const char* hl = archive_entry_hardlink(e)) {
      NYDUS_ASSIGN_OR_RETURN(std::string target, clean_path(hl));
      auto in_layer = index.find(target);
      if (in_layer != index.end()) ent = entries[in_layer->second].second;
      else if (auto lower = tree.find(target); lower != tree.end()) ent = lower->second;
      else return errorf(Errc::kCorrupt, "layer {}: hardlink {} -> {} has no target", layer_tar.string(), path, target);
    } else {
      ent.mode = uint32_t(archive_entry_mode(e));
      ent.uid = uint32_t(archive_entry_uid(e));
      ent.gid = uint32_t(archive_entry_gid(e));
      ent.mtime = int64_t(archive_entry_mtime(e));
      if (S_ISLNK(ent.mode) && archive_entry_symlink(e)) ent.link_target = archive_entry_symlink(e);
      if (S_ISCHR(ent.mode) || S_ISBLK(ent.mode)) {
        ent.rdev_major = uint32_t(archive_entry_rdevmajor(e));
        ent.rdev_minor = uint32_t(archive_entry_rdevminor(e));
      }
      archive_entry_xattr_reset(e);
      const char* xn;
      const void* xv;
      size_t xs;
      while (archive_entry_xattr_next(e, &xn, &xv, &xs) == ARCHIVE_OK)
        ent.xattrs[xn] = std::string(static_cast<const char*>(xv), xs);
      if (S_ISREG(ent.mode)) {
        format::Sha256Stream h;
        la_ssize_t n;
        while ((n = archive_read_data(a.get(), buf.data(), buf.size())) > 0) {
          h.update({buf.data(), size_t(n)});
          ent.size += uint64_t(n);
        }
        if (n < 0) return errorf(Errc::kCorrupt, "layer {}: data of {}: {}", layer_tar.string(), path, archive_error_string(a.get()));
        ent.sha256 = format::to_hex(h.finish());
      }
    }
    if (auto it = index.find(path); it != index.end()) entries[it->second].second = ent;
    else index[path] = entries.size(), entries.emplace_back(path, ent);
  }

  for (const auto& d : opaques) {
    const std::string prefix = d == "/" ? "/" : d + "/";
    for (auto it = tree.lower_bound(prefix); it != tree.end() && it->first.starts_with(prefix);) it = tree.erase(it);
  }
  for (const auto& w : whiteouts) remove_subtree(tree, w);
  for (auto& [path, ent] : entries) {
    // Missing parents appear as plain directories nobody described.
    for (std::string p = parent_of(path); !tree.count(p); p = parent_of(p))
      tree[p] = undescribed_dir();
    auto old = tree.find(path);
    if (old != tree.end() && S_ISDIR(old->second.mode) && S_ISDIR(ent.mode)) {
      old->second = ent;  // a directory over a directory: its attributes, the children stay
      continue;
    }
    if (old != tree.end()) remove_subtree(tree, path);
    tree[path] = ent;
  }
  return ok();
}

}  // namespace nydus::convert
