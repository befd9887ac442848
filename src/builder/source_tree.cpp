#include "builder/source_tree.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <map>

#include "format/layout.h"

namespace nydus::builder {

namespace {

bool storable_xattr(std::string_view name) {
  return name.starts_with("user.") || name.starts_with("trusted.") || name.starts_with("security.") ||
         name == "system.posix_acl_access" || name == "system.posix_acl_default";
}

Status read_xattrs(const std::string& path, format::TreeNode& node, std::vector<std::string>& warnings) {
  std::vector<char> names(4096);
  ssize_t n;
  while ((n = llistxattr(path.c_str(), names.data(), names.size())) < 0 && errno == ERANGE)
    names.resize(names.size() * 4);
  if (n < 0) {
    if (errno == ENOTSUP) return ok();
    return sys_error("listxattr " + path);
  }
  std::vector<char> value(1024);
  for (ssize_t off = 0; off < n;) {
    std::string name(names.data() + off);
    off += ssize_t(name.size()) + 1;
    if (!storable_xattr(name)) {
      warnings.push_back("skipped xattr " + name + " of " + path + ": RAFS has no prefix for it");
      continue;
    }
    ssize_t v;
    while ((v = lgetxattr(path.c_str(), name.c_str(), value.data(), value.size())) < 0 && errno == ERANGE)
      value.resize(value.size() * 4);
    if (v < 0) {
      if (errno == ENODATA) continue;  // removed meanwhile
      return sys_error("getxattr " + name + " of " + path);
    }
    node.xattrs.push_back({std::move(name), std::string(value.data(), size_t(v))});
  }
  return ok();
}

format::TreeNode node_from_stat(const struct stat& st) {
  format::TreeNode n;
  n.mode = st.st_mode;
  n.uid = st.st_uid;
  n.gid = st.st_gid;
  n.mtime = uint64_t(st.st_mtim.tv_sec);
  n.mtime_nsec = uint32_t(st.st_mtim.tv_nsec);
  if (S_ISREG(st.st_mode)) n.size = uint64_t(st.st_size);
  if (S_ISCHR(st.st_mode) || S_ISBLK(st.st_mode) || S_ISFIFO(st.st_mode) || S_ISSOCK(st.st_mode))
    n.rdev = format::encode_rdev(major(st.st_rdev), minor(st.st_rdev));
  return n;
}

}  // namespace

Result<SourceTree> scan_directory(const std::filesystem::path& root) {
  SourceTree t;
  struct stat st;
  if (lstat(root.c_str(), &st) != 0) return sys_error("stat " + root.string());
  if (!S_ISDIR(st.st_mode)) return errorf(Errc::kInvalidArgument, "{} is not a directory", root.string());
  t.nodes.push_back(node_from_stat(st));
  t.paths.push_back(root.string());
  t.image_paths.push_back("/");
  NYDUS_TRY(read_xattrs(root.string(), t.nodes[0], t.warnings));

  std::map<std::pair<dev_t, ino_t>, uint32_t> hardlinks;
  // Breadth-first over directories; order does not matter here because the
  // writer sorts children by name.
  for (size_t dir = 0; dir < t.nodes.size(); dir++) {
    if (!S_ISDIR(t.nodes[dir].mode)) continue;
    const std::string dpath = t.paths[dir];
    DIR* d = opendir(dpath.c_str());
    if (!d) return sys_error("opendir " + dpath);
    std::vector<std::string> names;
    errno = 0;
    while (struct dirent* e = readdir(d)) {
      std::string_view name = e->d_name;
      if (name == "." || name == "..") continue;
      names.emplace_back(name);
    }
    int err = errno;
    closedir(d);
    if (err) return sys_error("readdir " + dpath, err);
    for (auto& name : names) {
      const std::string p = dpath + "/" + name;
      if (lstat(p.c_str(), &st) != 0) return sys_error("stat " + p);
      if (name.size() > 255) return errorf(Errc::kInvalidArgument, "{}: name longer than 255 bytes", p);
      auto node = node_from_stat(st);
      node.name = name;
      if (S_ISLNK(st.st_mode)) {
        std::string target(size_t(st.st_size) + 1, '\0');
        ssize_t n = readlink(p.c_str(), target.data(), target.size());
        if (n < 0) return sys_error("readlink " + p);
        if (size_t(n) >= target.size()) return errorf(Errc::kIo, "{}: symlink changed while reading", p);
        target.resize(size_t(n));
        node.symlink_target = std::move(target);
      }
      NYDUS_TRY(read_xattrs(p, node, t.warnings));
      const uint32_t idx = uint32_t(t.nodes.size());
      if (!S_ISDIR(st.st_mode) && st.st_nlink > 1) {
        auto [it, inserted] = hardlinks.try_emplace({st.st_dev, st.st_ino}, idx);
        if (!inserted) node.hardlink_of = it->second;
      }
      t.nodes.push_back(std::move(node));
      t.paths.push_back(p);
      t.image_paths.push_back((dir == 0 ? "" : t.image_paths[dir]) + "/" + name);
      t.nodes[dir].children.push_back(idx);
    }
  }
  return t;
}

}  // namespace nydus::builder
