#include "builder/merge.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <map>
#include <set>

#include "builder/prefetch_list.h"
#include "builder/tree_edit.h"
#include "common/file_util.h"
#include "format/bootstrap.h"
#include "format/bootstrap_writer.h"

namespace nydus::builder {

namespace fs = std::filesystem;
using format::Bootstrap;
using format::InodeView;

namespace {

constexpr std::string_view kWhPrefix = ".wh.";
constexpr std::string_view kOpaque = ".wh..wh..opq";
constexpr std::string_view kOverlayOpaque = "trusted.overlay.opaque";
constexpr size_t kMaxDepth = 4096;


class Merger {
 public:
  explicit Merger(const MergeOptions& o) : o_(o) {}

  // `digest_slot`: index into blob_digests/blob_sizes, or -1 (parent bootstrap).
  Status add_layer(const fs::path& path, int64_t digest_slot) {
    NYDUS_ASSIGN_OR_RETURN(auto boot, Bootstrap::open(path));
    const Bootstrap& b = *boot;
    if (layers_ == 0) {
      chunk_size_ = b.chunk_size();
      compressor_ = b.compressor();
      digester_ = b.digester();
    } else if (b.digester() != digester_) {
      return errorf(Errc::kInvalidArgument, "{}: chunk digester differs from the lower layers'", path.string());
    } else if (b.chunk_size() != chunk_size_ && !b.blobs().empty()) {
      return errorf(Errc::kInvalidArgument, "{}: chunk size {:#x} differs from the lower layers' {:#x}",
                    path.string(), b.chunk_size(), chunk_size_);
    }
    layers_++;

    // This layer's blob indexes -> merged blob table.
    blob_map_.clear();
    for (const auto& bi : b.blobs()) {
      format::BlobInfo info = bi;
      if (info.blob_id == std::string(64, format::kInlinedBlobIdPlaceholder)) {
        if (digest_slot < 0 || size_t(digest_slot) >= o_.blob_digests.size())
          return errorf(Errc::kInvalidArgument,
                        "{}: the blob id is the inlined-bootstrap placeholder; give the real one with --blob-digests",
                        path.string());
        info.blob_id = o_.blob_digests[size_t(digest_slot)];
        if (size_t(digest_slot) < o_.blob_sizes.size()) info.compressed_size = o_.blob_sizes[size_t(digest_slot)];
      }
      auto [it, fresh] = blob_ids_.try_emplace(info.blob_id, uint32_t(blobs_.size()));
      if (fresh) blobs_.push_back(info);
      blob_map_.push_back(it->second);
    }
    if (blobs_.size() > 254) return make_error(Errc::kInvalidArgument, "more than 254 blobs in the merged image");

    chunks_.clear();
    if (!b.blobs().empty()) {
      NYDUS_ASSIGN_OR_RETURN(auto table, b.chunk_table());
      for (auto& c : table) chunks_[{c.blob_index, c.ci_index}] = c;
    }
    links_.clear();

    implicit_.clear();
    if (digest_slot >= 0 && size_t(digest_slot) < o_.implicit_dirs.size())
      implicit_.insert(o_.implicit_dirs[size_t(digest_slot)].begin(), o_.implicit_dirs[size_t(digest_slot)].end());
    NYDUS_ASSIGN_OR_RETURN(InodeView root, b.inode(b.root_nid()));
    NYDUS_ASSIGN_OR_RETURN(auto root_node, make_node(b, root));
    // The upper root's attributes win, as for any directory over a directory
    // (unless the layer never described it).
    if (layers_ == 1 || !implicit_.count("/")) NYDUS_TRY(merge_dir_attrs(0, std::move(root_node)));

    struct Item {
      InodeView dir;
      uint32_t arena;
      size_t depth;
      std::string path;  // "" for the root
    };
    std::vector<Item> stack{{root, 0, 0, ""}};
    while (!stack.empty()) {
      Item it = stack.back();
      stack.pop_back();
      if (it.depth > kMaxDepth) return errorf(Errc::kCorrupt, "{}: tree deeper than {}", path.string(), kMaxDepth);
      std::vector<std::pair<std::string, uint64_t>> ents;
      NYDUS_TRY(b.for_each_dirent(it.dir, [&](const format::DirEntryView& d) {
        if (d.name != "." && d.name != "..") ents.emplace_back(std::string(d.name), d.nid);
        return true;
      }));
      const bool oci = o_.whiteout == WhiteoutSpec::kOci;
      // Whiteouts act on the lower layers only: apply them before adding this
      // layer's entries. Markers never reach the merged tree.
      if (oci) {
        for (auto& [name, nid] : ents)
          if (name == kOpaque) tree_.clear_children(it.arena);
        for (auto& [name, nid] : ents)
          if (name != kOpaque && name.starts_with(kWhPrefix)) tree_.remove_child(it.arena, name.substr(kWhPrefix.size()));
      }
      for (auto& [name, nid] : ents) {
        if (oci && name.starts_with(kWhPrefix)) continue;
        NYDUS_ASSIGN_OR_RETURN(InodeView ino, b.inode(nid));
        if (o_.whiteout == WhiteoutSpec::kOverlayfs && S_ISCHR(ino.mode) && ino.rdev() == 0) {
          tree_.remove_child(it.arena, name);
          continue;
        }
        NYDUS_ASSIGN_OR_RETURN(auto node, make_node(b, ino));
        const int64_t old = tree_.child(it.arena, name);
        if (ino.is_dir()) {
          bool opaque = false;
          if (o_.whiteout == WhiteoutSpec::kOverlayfs) {
            auto& xs = node.xattrs;
            for (auto& x : xs) opaque |= x.name == kOverlayOpaque && x.value == "y";
            std::erase_if(xs, [](const format::XattrPair& x) { return x.name == kOverlayOpaque; });
          }
          uint32_t d;
          std::string path = it.path + "/" + name;
          if (old >= 0 && tree_.is_dir(uint32_t(old))) {
            d = uint32_t(old);
            if (!implicit_.count(path)) NYDUS_TRY(merge_dir_attrs(d, std::move(node)));
            if (opaque) tree_.clear_children(d);
          } else {
            d = tree_.add(std::move(node));
            tree_.set_child(it.arena, name, d);
          }
          stack.push_back({ino, d, it.depth + 1, std::move(path)});
          continue;
        }
        int64_t group = -1;
        if (ino.nlink > 1) {
          // Names of one inode within this layer stay one inode.
          auto [l, fresh] = links_.try_emplace(nid, next_group_);
          if (fresh) next_group_++;
          group = l->second;
        }
        tree_.set_child(it.arena, name, tree_.add(std::move(node), group));
      }
    }
    return ok();
  }

  Result<MergeReport> finish() {
    auto f = tree_.finish();
    format::BootstrapSpec spec;
    spec.prefetch_nodes = prefetch_nodes(f.image_paths, o_.prefetch_patterns);
    spec.nodes = std::move(f.nodes);
    spec.blobs = blobs_;
    spec.chunk_size = chunk_size_;
    spec.compressor = compressor_;
    spec.digester = digester_;
    NYDUS_ASSIGN_OR_RETURN(auto boot, format::write_bootstrap(spec));
    NYDUS_TRY(write_file_atomic(o_.bootstrap, boot.bytes));
    MergeReport r;
    r.blobs = blobs_;
    r.inodes = spec.nodes.size();
    r.bootstrap_size = boot.bytes.size();
    return r;
  }

 private:
  Status merge_dir_attrs(uint32_t d, format::TreeNode attrs) {
    auto& n = tree_.node(d);
    n.mode = attrs.mode;
    n.uid = attrs.uid;
    n.gid = attrs.gid;
    n.mtime = attrs.mtime;
    n.mtime_nsec = attrs.mtime_nsec;
    n.xattrs = std::move(attrs.xattrs);
    return ok();
  }

  Result<format::TreeNode> make_node(const Bootstrap& b, const InodeView& ino) {
    format::TreeNode n;
    n.mode = ino.mode;
    n.uid = ino.uid;
    n.gid = ino.gid;
    n.mtime = ino.mtime;
    n.mtime_nsec = ino.mtime_nsec;
    NYDUS_ASSIGN_OR_RETURN(auto xs, b.xattrs(ino));
    for (auto& x : xs) n.xattrs.push_back({x.name, std::string(x.value.begin(), x.value.end())});
    if (ino.is_reg()) {
      n.size = ino.size;
      NYDUS_ASSIGN_OR_RETURN(auto refs, b.chunks(ino));
      for (auto& r : refs) {
        auto c = chunks_.find({r.blob_index, r.ci_index});
        if (c == chunks_.end() || r.blob_index >= blob_map_.size())
          return errorf(Errc::kCorrupt, "nid {}: chunk (blob {}, ci {}) is not in the chunk table", ino.nid,
                        r.blob_index, r.ci_index);
        format::ChunkRecord rec = c->second;
        rec.blob_index = blob_map_[r.blob_index];
        n.chunks.push_back(rec);
      }
    } else if (ino.is_symlink()) {
      NYDUS_ASSIGN_OR_RETURN(n.symlink_target, b.read_link(ino));
    } else if (S_ISCHR(ino.mode) || S_ISBLK(ino.mode) || S_ISFIFO(ino.mode) || S_ISSOCK(ino.mode)) {
      n.rdev = ino.rdev();
    }
    return n;
  }

  const MergeOptions& o_;
  EditTree tree_;
  size_t layers_ = 0;
  uint32_t chunk_size_ = format::kDefaultChunkSize;
  format::Compressor compressor_ = format::Compressor::kZstd;
  format::Digester digester_ = format::Digester::kBlake3;
  std::vector<format::BlobInfo> blobs_;
  std::map<std::string, uint32_t> blob_ids_;
  std::vector<uint32_t> blob_map_;  // current layer's blob index -> merged
  std::map<std::pair<uint32_t, uint32_t>, format::ChunkRecord> chunks_;  // current layer
  std::map<uint64_t, int64_t> links_;  // current layer: nid -> hardlink group
  std::set<std::string> implicit_;      // current layer: undescribed directories
  int64_t next_group_ = 0;
};

}  // namespace

Result<MergeReport> merge_layers(const MergeOptions& o) {
  if (o.layers.empty()) return make_error(Errc::kInvalidArgument, "no layer bootstraps to merge");
  if (o.bootstrap.empty()) return make_error(Errc::kInvalidArgument, "an output bootstrap (--bootstrap) is required");
  if (!o.blob_digests.empty() && o.blob_digests.size() != o.layers.size())
    return errorf(Errc::kInvalidArgument, "--blob-digests has {} entries for {} layers", o.blob_digests.size(),
                  o.layers.size());
  if (!o.blob_sizes.empty() && o.blob_sizes.size() != o.layers.size())
    return errorf(Errc::kInvalidArgument, "--blob-sizes has {} entries for {} layers", o.blob_sizes.size(),
                  o.layers.size());
  if (!o.implicit_dirs.empty() && o.implicit_dirs.size() != o.layers.size())
    return errorf(Errc::kInvalidArgument, "implicit_dirs has {} entries for {} layers", o.implicit_dirs.size(),
                  o.layers.size());
  for (auto& d : o.blob_digests) {
    if (d.size() != 64 || d.find_first_not_of("0123456789abcdef") != std::string::npos)
      return errorf(Errc::kInvalidArgument, "blob digest '{}' is not 64 lowercase hex characters", d);
  }
  Merger m(o);
  if (!o.parent_bootstrap.empty()) NYDUS_TRY(m.add_layer(o.parent_bootstrap, -1));
  for (size_t i = 0; i < o.layers.size(); i++)
    NYDUS_TRY(m.add_layer(o.layers[i], int64_t(i)));
  return m.finish();
}

}  // namespace nydus::builder
