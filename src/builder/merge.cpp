#include "builder/merge.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <map>
#include <optional>
#include <set>

#include "builder/prefetch_list.h"
#include "builder/tree_edit.h"
#include "common/file_util.h"
#include "format/blob_reader.h"
#include "format/bootstrap.h"
#include "format/compress.h"
#include "format/bootstrap_v5.h"
#include "format/bootstrap_v5_writer.h"
#include "format/bootstrap_writer.h"
#include "format/digest.h"

namespace nydus::builder {

namespace fs = std::filesystem;
using format::Bootstrap;
using format::InodeView;

namespace {

Result<std::shared_ptr<Bootstrap>> load_inlined_bootstrap(const fs::path& path) {
  NYDUS_ASSIGN_OR_RETURN(format::BlobFile blob, format::BlobFile::open(path, format::BlobInfo{}));
  NYDUS_ASSIGN_OR_RETURN(std::vector<uint8_t> bytes, blob.read_inlined_bootstrap());
  return Bootstrap::from_bytes(std::move(bytes));
}

constexpr std::string_view kWhPrefix = ".wh.";
constexpr std::string_view kOpaque = ".wh..wh..opq";
constexpr std::string_view kOverlayOpaque = "trusted.overlay.opaque";
constexpr size_t kMaxDepth = 4096;

// A v5 layer parsed again from its file: Bootstrap reads v5 through a v6
// translation that re-lays each blob's uncompressed space out on 4 KiB
// boundaries, but a merged v5 image must keep the offsets the layer records
// (nydusd reads v5 chunks at those offsets), and the blob table's own
// extended entries. `expected_size` is the size Bootstrap::open saw.
Result<format::RafsV5Image> reparse_v5(const fs::path& path, uint64_t expected_size) {
  std::ifstream f(path, std::ios::binary);
  if (!f) return errorf(Errc::kIo, "open {}", path.string());
  f.seekg(0, std::ios::end);
  const auto size = uint64_t(f.tellg());
  if (!f || size != expected_size)
    return errorf(Errc::kIo, "{} changed while merging ({} bytes, {} when loaded)", path.string(), size, expected_size);
  std::vector<uint8_t> bytes(size);
  f.seekg(0);
  if (!f.read(reinterpret_cast<char*>(bytes.data()), std::streamsize(size)))
    return errorf(Errc::kIo, "read {}", path.string());
  return format::parse_rafs_v5(bytes);
}


class Merger {
 public:
  explicit Merger(const MergeOptions& o) : o_(o) {}

  // `digest_slot`: index into blob_digests/blob_sizes, or -1 (parent bootstrap).
  // The chunk dictionary: its blob ids, and the configuration layers must share.
  Status load_dict(const fs::path& path) {
    auto boot = Bootstrap::open(path);
    if (!boot) return std::unexpected(std::move(boot).error().context("load chunk dict bootstrap " + path.string()));
    for (const auto& bi : (*boot)->blobs()) dict_blob_ids_.insert(bi.blob_id);
    set_config(**boot);
    version_ = (*boot)->rafs_version();
    return ok();
  }

  // `digest_slot`: index into the per-layer lists, or -1 (parent bootstrap).
  Status add_layer(const fs::path& path, int64_t digest_slot) {
    auto boot_r = Bootstrap::open(path);
    if (!boot_r) {
      // As upstream's RafsSuper::load_from_file: a data blob with the
      // bootstrap inlined (its ToC's image.boot) stands for that bootstrap;
      // its blob id then comes from the file name, as for placeholders.
      if (auto inlined = load_inlined_bootstrap(path)) boot_r = std::move(inlined);
    }
    if (!boot_r) return std::unexpected(std::move(boot_r).error().context("load bootstrap " + path.string()));
    const Bootstrap& b = **boot_r;
    // The output's RAFS version is the layers' one; a mixed set is upstream's
    // check_compatibility error. (Upstream does not compare the parent
    // bootstrap's version; a v6 parent under v5 layers is refused here.)
    if (version_ == 0) {
      version_ = b.rafs_version();
    } else if (b.rafs_version() != version_) {
      return errorf(Errc::kInvalidArgument, "{}Using inconsistent RAFS version V{}, target RAFS version V{} ({})",
                    kInconsistentFilesystem, version_, b.rafs_version(), path.string());
    }
    std::optional<format::RafsV5Image> v5;
    if (version_ == 5) {
      NYDUS_ASSIGN_OR_RETURN(v5, reparse_v5(path, b.source_size()));
      bool same = v5->spec.blobs.size() == b.blobs().size();
      for (size_t i = 0; same && i < b.blobs().size(); i++) same = v5->spec.blobs[i].blob_id == b.blobs()[i].blob_id;
      if (!same) return errorf(Errc::kCorrupt, "{}: v5 blob table differs between two reads", path.string());
    }
    const uint64_t real_flags = v5 ? v5->sb.flags : b.flags();
    const bool explicit_ids = (real_flags & format::super_flags::kExplicitUidGid) != 0;
    if (!have_config_) {
      set_config(b);
    } else if (b.chunk_size() != chunk_size_) {
      return errorf(Errc::kInvalidArgument, "{}Inconsistent configuration of chunk_size: {} vs {} ({})",
                    kInconsistentFilesystem, chunk_size_, b.chunk_size(), path.string());
    } else if (explicit_ids != explicit_ids_) {
      return errorf(Errc::kInvalidArgument, "{}Using inconsistent explicit_uidgid setting {}, target explicit_uidgid setting {} ({})",
                    kInconsistentFilesystem, explicit_ids_, explicit_ids, path.string());
    }
    // TARFS layers (512-byte blocks, chunks inside tars) merge only with each other, as upstream.
    if (layers_ > 0 && b.tarfs() != tarfs_)
      return errorf(Errc::kInvalidArgument, "{}: merging TARFS and non-TARFS bootstraps", path.string());
    tarfs_ = b.tarfs();
    if (version_ == 5 && layers_ > 0 && b.digester() != digester_)
      return errorf(Errc::kInvalidArgument, "{}RAFS v5 can not support different digest algorithm due to inode digest, {} vs {} ({})",
                    kInconsistentFilesystem, format::digester_name(digester_), format::digester_name(b.digester()),
                    path.string());
    if (layers_ > 0 && b.digester() != digester_ && !b.blobs().empty())
      return errorf(Errc::kInvalidArgument, "{}: chunk digester differs from the lower layers'", path.string());
    if (!b.blobs().empty()) digester_ = b.digester();
    // A v5 superblock names one compressor for every blob (chunks say only
    // whether they are compressed): blobs of two codecs cannot share one.
    if (version_ == 5 && !b.blobs().empty() && b.compressor() != format::Compressor::kNone) {
      if (v5_codec_ && *v5_codec_ != b.compressor())
        return errorf(Errc::kInvalidArgument, "{}: RAFS v5 layers compressed with {} and {} cannot be merged (one compressor per v5 image)",
                      path.string(), format::compressor_name(*v5_codec_), format::compressor_name(b.compressor()));
      v5_codec_ = b.compressor();
    }
    compressor_ = b.compressor();
    if (layers_ == 0) first_compressor_ = b.compressor();
    if (digest_slot == 0) first_version_ = b.rafs_version();
    layers_++;

    // This layer's blob indexes -> merged blob table.
    blob_map_.clear();
    bool own_seen = false;
    for (const auto& bi : b.blobs()) {
      format::BlobInfo info = bi;
      if (v5) use_v5_blob_entry(info, *v5);
      if (digest_slot >= 0 && !dict_blob_ids_.contains(bi.blob_id)) {
        if (own_seen)
          return errorf(Errc::kInvalidArgument, "{}: invalid per layer bootstrap, having multiple associated data blobs",
                        path.string());
        own_seen = true;
        NYDUS_TRY(fix_own_blob(info, path, size_t(digest_slot)));
      }
      auto [it, fresh] = blob_ids_.try_emplace(info.blob_id, uint32_t(blobs_.size()));
      if (fresh) blobs_.push_back(info);
      blob_map_.push_back(it->second);
    }
    if (blobs_.size() > 1024) return make_error(Errc::kInvalidArgument, "too many blobs across the layers");

    chunks_.clear();
    if (v5) {
      for (size_t bi = 0; bi < v5->blob_chunks.size(); bi++)
        for (size_t k = 0; k < v5->blob_chunks[bi].size(); k++) {
          format::ChunkRecord c = v5->blob_chunks[bi][k];
          c.uncompressed_offset = v5->recorded_uncompressed_offsets[bi][k];
          chunks_[{uint32_t(bi), c.ci_index}] = c;
        }
    } else if (!b.blobs().empty()) {
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
    spec.blobs = used_blobs(spec.nodes);
    if (spec.blobs.size() > format::kMaxBlobs)
      return errorf(Errc::kInvalidArgument, "{} blobs in the merged image, at most {}", spec.blobs.size(), format::kMaxBlobs);
    spec.chunk_size = chunk_size_;
    spec.compressor = compressor_;
    spec.digester = digester_;
    spec.explicit_uid_gid = explicit_ids_;
    spec.tarfs = tarfs_;
    std::vector<uint8_t> bytes;
    if (version_ == 5) {
      if (v5_codec_) spec.compressor = *v5_codec_;
      NYDUS_ASSIGN_OR_RETURN(bytes, format::write_bootstrap_v5(spec));
    } else {
      NYDUS_ASSIGN_OR_RETURN(auto boot, format::write_bootstrap(spec));
      bytes = std::move(boot.bytes);
    }
    MergeReport r;
    r.fs_version = first_version_;
    r.bootstrap = o_.bootstrap;
    if (r.bootstrap.empty()) r.bootstrap = o_.bootstrap_dir / format::to_hex(format::sha256(bytes));
    NYDUS_TRY(write_file_atomic(r.bootstrap, bytes));
    r.compressor = first_compressor_;
    r.blobs = spec.blobs;
    r.inodes = spec.nodes.size();
    r.bootstrap_size = bytes.size();
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

  void set_config(const Bootstrap& b) {
    have_config_ = true;
    chunk_size_ = b.chunk_size();
    // A v5 translation always says "explicit"; the v5 superblock knows.
    const uint64_t flags = b.v5_super_block() ? b.v5_super_block()->flags : b.flags();
    explicit_ids_ = (flags & format::super_flags::kExplicitUidGid) != 0;
    digester_ = b.digester();
  }

  // A v5 blob keeps its extended blob table entry (features, chunk count,
  // sizes as recorded), not the translation's 4 KiB re-layout.
  static void use_v5_blob_entry(format::BlobInfo& info, const format::RafsV5Image& v5) {
    for (size_t i = 0; i < v5.blobs.size(); i++) {
      const auto& s = v5.blobs[i];
      if (s.blob_id != info.blob_id) continue;
      info.features = s.features;
      if (s.has_ext_entry) {
        info.chunk_count = s.chunk_count;
        info.uncompressed_size = s.uncompressed_size;
        info.compressed_size = s.compressed_size;
      }
      return;
    }
  }

  // The layer's own blob gets the id/size/ToC the caller knows (the
  // converter passes them for OCI-ref layers) or upstream's fallback name.
  Status fix_own_blob(format::BlobInfo& info, const fs::path& path, size_t slot) {
    auto pick = [slot](const auto& list) { return slot < list.size() ? &list[slot] : nullptr; };
    if (info.blob_id == std::string(64, format::kInlinedBlobIdPlaceholder)) {
      if (auto* id = pick(o_.original_blob_ids)) {
        info.blob_id = *id;
      } else {
        std::string name = path.filename().string();
        name = name.substr(0, name.find('.'));
        if (name.empty()) return errorf(Errc::kInvalidArgument, "failed to get blob id from meta file path {}", path.string());
        info.blob_id = name;
      }
    }
    // A SEPARATE (ZRAN) blob's data is the original layer, named by blob_id;
    // the converter's digest and size are those of its meta blob (upstream
    // merge.rs). Its bootstrap left the meta blob: INLINED_FS_META goes, and
    // a zero meta digest is taken from the file name (BlobInfo::get_blob_meta_id).
    const bool separate = (info.features & format::blob_features::kSeparate) != 0;
    if (separate && (info.features & format::blob_features::kInlinedFsMeta)) {
      info.features &= ~format::blob_features::kInlinedFsMeta;
      if (info.blob_meta_digest == format::Digest{})
        if (auto d = format::digest_from_hex(path.filename().string().substr(0, 64))) info.blob_meta_digest = *d;
    }
    if (auto* d = pick(o_.blob_digests)) {
      if (separate) {
        NYDUS_ASSIGN_OR_RETURN(info.blob_meta_digest, format::digest_from_hex(*d));
      } else {
        info.blob_id = *d;
      }
    }
    if (auto* sz = pick(o_.blob_sizes)) (separate ? info.blob_meta_size : info.compressed_size) = *sz;
    if (auto* d = pick(o_.blob_toc_digests)) {
      NYDUS_ASSIGN_OR_RETURN(info.toc_digest, format::digest_from_hex(*d));
    }
    if (auto* sz = pick(o_.blob_toc_sizes)) {
      if (*sz > UINT32_MAX) return errorf(Errc::kInvalidArgument, "blob toc size {} too large", *sz);
      info.toc_size = uint32_t(*sz);
    }
    return ok();
  }

  // Blobs some chunk uses, numbered by first use breadth first with children
  // by name (upstream's walk); chunk blob indexes renumbered to match.
  std::vector<format::BlobInfo> used_blobs(std::vector<format::TreeNode>& nodes) {
    std::vector<format::BlobInfo> out;
    if (nodes.empty()) return out;
    std::map<uint32_t, uint32_t> renum;
    std::vector<uint32_t> queue{0};
    for (size_t qi = 0; qi < queue.size(); qi++) {
      auto& n = nodes[queue[qi]];
      for (auto& c : n.chunks) {
        auto [it, fresh] = renum.try_emplace(c.blob_index, uint32_t(out.size()));
        if (fresh) out.push_back(blobs_[c.blob_index]);
      }
      std::vector<uint32_t> kids = n.children;
      std::sort(kids.begin(), kids.end(), [&](uint32_t a, uint32_t b) { return nodes[a].name < nodes[b].name; });
      queue.insert(queue.end(), kids.begin(), kids.end());
    }
    for (auto& n : nodes)
      for (auto& c : n.chunks) c.blob_index = renum.at(c.blob_index);
    return out;
  }

  const MergeOptions& o_;
  EditTree tree_;
  bool have_config_ = false;
  bool explicit_ids_ = true;
  bool tarfs_ = false;
  std::set<std::string> dict_blob_ids_;
  size_t layers_ = 0;
  uint32_t version_ = 0;        // RAFS version of the set (0 until the first bootstrap)
  uint32_t first_version_ = 6;
  std::optional<format::Compressor> v5_codec_;  // v5: the one real compressor of the layers' blobs  // the first SOURCE's, which upstream's -J reports
  uint32_t chunk_size_ = format::kDefaultChunkSize;
  format::Compressor compressor_ = format::Compressor::kZstd;
  format::Compressor first_compressor_ = format::Compressor::kZstd;  // upstream's -J reports the first layer's
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
  if (o.layers.empty()) return make_error(Errc::kInvalidArgument, "source bootstrap list is empty, at least one bootstrap is required");
  if (o.bootstrap.empty() && o.bootstrap_dir.empty())
    return make_error(Errc::kInvalidArgument,
                      "both --bootstrap and --blob-dir are missing, please specify one to store the generated metadata blob file");
  if (o.bootstrap.empty() && !fs::is_directory(o.bootstrap_dir))
    return make_error(Errc::kInvalidArgument, "Directory to store blobs does not exist");
  auto check_len = [&](size_t n, const char* what) -> Status {
    if (n != 0 && n != o.layers.size())
      return errorf(Errc::kInvalidArgument, "number of {} entries {} doesn't match number of sources {}", what, n,
                    o.layers.size());
    return ok();
  };
  NYDUS_TRY(check_len(o.blob_digests.size(), "blob digest"));
  NYDUS_TRY(check_len(o.original_blob_ids.size(), "original blob id"));
  NYDUS_TRY(check_len(o.blob_sizes.size(), "blob size"));
  NYDUS_TRY(check_len(o.blob_toc_digests.size(), "toc digest"));
  NYDUS_TRY(check_len(o.blob_toc_sizes.size(), "toc size"));
  NYDUS_TRY(check_len(o.implicit_dirs.size(), "implicit_dirs"));
  auto hex64 = [](const std::string& d) {
    return d.size() == 64 && d.find_first_not_of("0123456789abcdef") == std::string::npos;
  };
  for (auto& d : o.blob_digests)
    if (!hex64(d)) return errorf(Errc::kInvalidArgument, "blob digest '{}' is not 64 lowercase hex characters", d);
  for (auto& d : o.blob_toc_digests)
    if (!hex64(d)) return errorf(Errc::kInvalidArgument, "blob toc digest '{}' is not 64 lowercase hex characters", d);
  for (auto& d : o.original_blob_ids)
    if (d.empty() || d.size() > 255 || d.find('/') != std::string::npos || d == "." || d == "..")
      return errorf(Errc::kInvalidArgument, "original blob id '{}' is not usable", d);
  Merger m(o);
  if (!o.chunk_dict.empty()) NYDUS_TRY(m.load_dict(o.chunk_dict));
  if (!o.parent_bootstrap.empty()) NYDUS_TRY(m.add_layer(o.parent_bootstrap, -1));
  for (size_t i = 0; i < o.layers.size(); i++)
    NYDUS_TRY(m.add_layer(o.layers[i], int64_t(i)));
  return m.finish();
}

}  // namespace nydus::builder
