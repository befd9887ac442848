#include "builder/create_stargz.h"

#include <sys/stat.h>

#include <algorithm>
#include <bit>
#include <fstream>
#include <map>
#include <optional>
#include <string_view>

#include "builder/chunk_dict.h"
#include "builder/prefetch_list.h"
#include "common/file_util.h"
#include "format/bootstrap_writer.h"
#include "format/stargz_toc.h"

namespace nydus::builder {

namespace fs = std::filesystem;
using format::ChunkRecord;
using format::StargzEntry;
using format::StargzType;

uint64_t gzip_compressed_bound(uint64_t size) { return size + 10 + 8 + 5 + (size / (16 << 10)) * 5 + 128; }

namespace {

constexpr size_t kMaxDepth = 256;

bool storable_xattr(std::string_view name) {
  return name.starts_with("user.") || name.starts_with("trusted.") || name.starts_with("security.") ||
         name == "system.posix_acl_access" || name == "system.posix_acl_default";
}

// "./a//b/" -> {"a", "b"}; "" or "." or "/" -> {} (the root).
Result<std::vector<std::string>> split_toc_path(const std::string& path) {
  std::vector<std::string> comps;
  size_t i = 0;
  while (i < path.size()) {
    size_t j = path.find('/', i);
    if (j == std::string::npos) j = path.size();
    std::string_view c(path.data() + i, j - i);
    if (c == "..") return corrupt("path '{}' has a '..' component", path);
    if (c.find('\0') != std::string_view::npos) return corrupt("path has a NUL byte");
    if (c.size() > 255) return corrupt("path '{}' has a component of {} bytes", path.substr(0, 300), c.size());
    if (!c.empty() && c != ".") comps.emplace_back(c);
    i = j + 1;
  }
  if (comps.size() > kMaxDepth) return corrupt("path '{}' is {} levels deep", path.substr(0, 300), comps.size());
  return comps;
}

std::string join(const std::vector<std::string>& comps) {
  std::string s;
  for (auto& c : comps) s += "/" + c;
  return s.empty() ? "/" : s;
}

// One data chunk of a file as the TOC describes it.
struct TocChunk {
  uint32_t node;
  uint64_t file_offset;
  uint64_t size;
  uint64_t offset;  // gzip member in the layer
  uint64_t inner;   // where the data starts in the member's inflated bytes (innerOffset)
  format::Digest digest;
  size_t entry;     // TOC index, for messages
};

class TocTree {
 public:
  TocTree() {
    format::TreeNode root;
    root.mode = S_IFDIR | 0755;
    nodes_.push_back(std::move(root));
    paths_.push_back("/");
    index_["/"] = 0;
  }

  Status add(const StargzEntry& e, size_t idx, uint32_t chunk_size, std::vector<TocChunk>& chunks,
             std::vector<std::string>& warnings) {
    NYDUS_ASSIGN_OR_RETURN(auto comps, split_toc_path(e.name));
    const std::string path = join(comps);
    if (path == "/stargz.index.json" || path == "/.prefetch.landmark" || path == "/.no.prefetch.landmark")
      return ok();  // the format's own files, not the image's

    if (e.type == StargzType::kChunk) {
      auto it = index_.find(path);
      if (it == index_.end() || !S_ISREG(nodes_[it->second].mode) ||
          (nodes_[it->second].hardlink_of >= 0 && uint32_t(nodes_[it->second].hardlink_of) != it->second))
        return corrupt("chunk of '{}' has no regular file entry before it", path);
      if (e.chunk_offset == 0) return corrupt("chunk of '{}' at file offset 0 (only its reg entry may be)", path);
      return add_chunk(e, idx, it->second, chunk_size, chunks);
    }

    format::TreeNode n;
    n.uid = e.uid;
    n.gid = e.gid;
    n.mtime = uint64_t(e.mtime);
    const uint32_t perm = e.mode & 07777;
    for (auto& [k, v] : e.xattrs) {
      if (!storable_xattr(k)) {
        warnings.push_back("skipped xattr " + k + " of " + path + ": RAFS has no prefix for it");
        continue;
      }
      n.xattrs.push_back({k, v});
    }
    std::sort(n.xattrs.begin(), n.xattrs.end(), [](auto& a, auto& b) { return a.name < b.name; });

    if (comps.empty()) {
      if (e.type != StargzType::kDir) return corrupt("root entry '{}' is not a directory", e.name);
      update_dir(0, n, perm);
      return ok();
    }
    NYDUS_ASSIGN_OR_RETURN(uint32_t parent, parent_dir(comps));
    n.name = comps.back();
    if (auto it = index_.find(path); it != index_.end()) {
      if (e.type == StargzType::kDir && S_ISDIR(nodes_[it->second].mode)) {
        update_dir(it->second, n, perm);
        return ok();
      }
      return corrupt("TOC lists '{}' twice", path);
    }

    switch (e.type) {
      case StargzType::kDir:
        n.mode = S_IFDIR | perm;
        break;
      case StargzType::kReg:
        n.mode = S_IFREG | perm;
        n.size = e.size;
        break;
      case StargzType::kSymlink:
        if (e.link_name.empty() || e.link_name.size() > 4095)
          return corrupt("symlink '{}': target length {} not in 1..4095", path, e.link_name.size());
        n.mode = S_IFLNK | 0777;
        n.symlink_target = e.link_name;
        break;
      case StargzType::kHardlink: {
        NYDUS_ASSIGN_OR_RETURN(auto tcomps, split_toc_path(e.link_name));
        auto it = index_.find(join(tcomps));
        if (e.link_name.empty() || it == index_.end())
          return corrupt("hardlink '{}': target '{}' not found", path, e.link_name.substr(0, 300));
        format::TreeNode& t = nodes_[it->second];
        if (!S_ISREG(t.mode)) return corrupt("hardlink '{}': target '{}' is not a regular file", path, e.link_name);
        const uint32_t leader = t.hardlink_of >= 0 ? uint32_t(t.hardlink_of) : it->second;
        nodes_[leader].hardlink_of = leader;
        format::TreeNode l = nodes_[leader];
        l.name = n.name;
        l.children.clear();
        l.hardlink_of = leader;
        NYDUS_TRY(insert(parent, path, std::move(l)));
        return ok();
      }
      case StargzType::kChar:
      case StargzType::kBlock:
        n.mode = (e.type == StargzType::kChar ? S_IFCHR : S_IFBLK) | perm;
        n.rdev = format::encode_rdev(e.dev_major, e.dev_minor);
        break;
      case StargzType::kFifo:
        n.mode = S_IFIFO | perm;
        break;
      case StargzType::kChunk:
        break;  // handled above
    }
    NYDUS_ASSIGN_OR_RETURN(uint32_t id, insert(parent, path, std::move(n)));
    if (e.type == StargzType::kReg && e.size > 0) return add_chunk(e, idx, id, chunk_size, chunks);
    if (e.type == StargzType::kReg && (e.chunk_size != 0 || e.chunk_offset != 0))
      return corrupt("empty file '{}' has chunk fields", path);
    return ok();
  }

  std::vector<format::TreeNode>& nodes() { return nodes_; }
  const std::vector<std::string>& paths() const { return paths_; }
  const std::string& path_of(uint32_t n) const { return paths_[n]; }

 private:
  Status add_chunk(const StargzEntry& e, size_t idx, uint32_t node, uint32_t cs, std::vector<TocChunk>& chunks) {
    const format::TreeNode& f = nodes_[node];
    const std::string& path = paths_[node];
    if (!e.chunk_digest) return corrupt("data of '{}' at {:#x} has no chunkDigest", path, e.chunk_offset);
    if (e.chunk_offset >= f.size) return corrupt("chunk of '{}' at {:#x} beyond its size {:#x}", path, e.chunk_offset, f.size);
    const uint64_t size = e.chunk_size == 0 ? f.size - e.chunk_offset : e.chunk_size;
    if (e.chunk_offset % cs != 0)
      return corrupt("'{}': chunk offset {:#x} is not a multiple of the chunk size {:#x} (see --chunk-size)", path,
                     e.chunk_offset, cs);
    if (size > cs || (size != cs && e.chunk_offset + size != f.size))
      return corrupt("'{}': chunk at {:#x} holds {:#x} bytes; RAFS needs {:#x} (--chunk-size) except for the last",
                     path, e.chunk_offset, size, cs);
    if (e.chunk_offset + size > f.size) return corrupt("'{}': chunk at {:#x} runs past the file's end", path, e.chunk_offset);
    // A reader inflates the member from its start up to the data's end.
    if (e.inner_offset + size > format::kMaxChunkSize)
      return errorf(Errc::kUnsupported, "'{}': data at innerOffset {:#x} of its gzip member ends beyond {:#x}", path,
                    e.inner_offset, format::kMaxChunkSize);
    chunks.push_back({node, e.chunk_offset, size, e.offset, e.inner_offset, *e.chunk_digest, idx});
    return ok();
  }

  Result<uint32_t> parent_dir(const std::vector<std::string>& comps) {
    uint32_t dir = 0;
    std::string p;
    for (size_t i = 0; i + 1 < comps.size(); i++) {
      p += "/" + comps[i];
      auto it = index_.find(p);
      if (it == index_.end()) {  // a directory the TOC does not list
        format::TreeNode d;
        d.name = comps[i];
        d.mode = S_IFDIR | 0755;
        NYDUS_ASSIGN_OR_RETURN(dir, insert(dir, p, std::move(d)));
        continue;
      }
      if (!S_ISDIR(nodes_[it->second].mode)) return corrupt("'{}' is not a directory", p);
      dir = it->second;
    }
    return dir;
  }

  Result<uint32_t> insert(uint32_t parent, const std::string& path, format::TreeNode n) {
    if (nodes_.size() >= format::kMaxStargzTocEntries * 2) return corrupt("too many entries");
    const uint32_t id = uint32_t(nodes_.size());
    nodes_.push_back(std::move(n));
    nodes_[parent].children.push_back(id);
    paths_.push_back(path);
    index_[path] = id;
    return id;
  }

  void update_dir(uint32_t d, const format::TreeNode& attrs, uint32_t perm) {
    auto& n = nodes_[d];
    n.mode = S_IFDIR | perm;
    n.uid = attrs.uid;
    n.gid = attrs.gid;
    n.mtime = attrs.mtime;
    n.xattrs = attrs.xattrs;
  }

  std::vector<format::TreeNode> nodes_;
  std::vector<std::string> paths_;
  std::map<std::string, uint32_t> index_;
};

Result<std::vector<uint8_t>> read_toc_file(const fs::path& p) {
  std::error_code ec;
  const auto size = fs::file_size(p, ec);
  if (ec) return errorf(Errc::kInvalidArgument, "estargztoc-ref: {}: {}", p.string(), ec.message());
  if (size > format::kMaxStargzTocSize)
    return corrupt("estargztoc-ref: {} is {} bytes, above the {}-byte TOC limit", p.string(), size,
                   format::kMaxStargzTocSize);
  std::ifstream f(p, std::ios::binary);
  std::vector<uint8_t> bytes(size);
  if (!f.read(reinterpret_cast<char*>(bytes.data()), std::streamsize(size)))
    return errorf(Errc::kIo, "estargztoc-ref: cannot read {}", p.string());
  return bytes;
}

}  // namespace

Result<CreateReport> create_estargz_toc_image(const CreateOptions& o) {
  if (o.fs_version != 6)
    return make_error(Errc::kInvalidArgument, "'--fs-version 5' conflicts with conversion type 'estargztoc-ref', only V6 is supported");
  if (o.bootstrap.empty()) return make_error(Errc::kInvalidArgument, "estargztoc-ref needs -B (the bootstrap to write)");
  if (o.blob_inline_meta) return make_error(Errc::kInvalidArgument, "estargztoc-ref conflicts with --blob-inline-meta");
  if (!o.blob_cache_dir.empty())
    return make_error(Errc::kInvalidArgument, "conversion type `estargztoc-ref` conflicts with `--blob-cache-dir`");
  if (o.blob_id.size() != 64 || !format::digest_from_hex(o.blob_id))
    return errorf(Errc::kInvalidArgument,
                  "'--blob-id' must be the eStargz layer's sha256 (64 hex digits) for '--type estargztoc-ref', got '{}'",
                  o.blob_id);
  if (o.blob_data_size == 0) return make_error(Errc::kInvalidArgument, "no value specified for '--blob-data-size'");
  const uint32_t cs = o.chunk_size;
  if (!std::has_single_bit(cs) || cs < format::kMinChunkSize || cs > format::kMaxChunkSize)
    return errorf(Errc::kInvalidArgument, "chunk size {:#x} must be a power of two between 0x1000 and 0x1000000", cs);

  // --chunk-dict: chunks a sha256 dictionary holds (by the TOC's chunkDigest)
  // are read from its blobs, as upstream's deduplicate_chunk does.
  std::optional<ChunkDict> dict;
  if (!o.chunk_dict.empty()) {
    NYDUS_ASSIGN_OR_RETURN(dict, ChunkDict::open(o.chunk_dict, format::Digester::kSha256));
  }
  NYDUS_ASSIGN_OR_RETURN(auto json, read_toc_file(o.source));
  auto toc = format::parse_stargz_toc(json);
  if (!toc) return std::unexpected(std::move(toc).error().context(o.source.string()));

  CreateReport rep;
  TocTree tree;
  std::vector<TocChunk> chunks;
  for (size_t i = 0; i < toc->entries.size(); i++) {
    Status s = tree.add(toc->entries[i], i, cs, chunks, rep.warnings);
    if (!s) return std::unexpected(std::move(s).error().context(fmt::format("eStargz TOC entry {}", i)));
  }
  auto& nodes = tree.nodes();

  // Each file's chunks must tile it exactly: sorted by file offset, no
  // holes, no repeats, ending at its size.
  std::vector<std::vector<uint32_t>> by_node(nodes.size());
  for (uint32_t k = 0; k < chunks.size(); k++) by_node[chunks[k].node].push_back(k);
  for (uint32_t n = 0; n < nodes.size(); n++) {
    if (!S_ISREG(nodes[n].mode) || (nodes[n].hardlink_of >= 0 && uint32_t(nodes[n].hardlink_of) != n)) continue;
    auto& ks = by_node[n];
    std::sort(ks.begin(), ks.end(), [&](uint32_t a, uint32_t b) { return chunks[a].file_offset < chunks[b].file_offset; });
    uint64_t at = 0;
    for (uint32_t k : ks) {
      if (chunks[k].file_offset != at)
        return corrupt("'{}': chunk at file offset {:#x} where {:#x} was expected (a hole or a repeat)",
                       tree.path_of(n), chunks[k].file_offset, at);
      at += chunks[k].size;
    }
    if (at != nodes[n].size)
      return corrupt("'{}': chunks cover {:#x} of its {:#x} bytes", tree.path_of(n), at, nodes[n].size);
  }

  // Identical chunks share the first one's ci entry (one gzip member read
  // serves both); the others must still sit inside the layer.
  std::map<std::pair<format::Digest, uint64_t>, uint32_t> first;
  std::vector<int64_t> same_as(chunks.size(), -1);
  std::vector<uint32_t> stored;  // chunk ids with their own ci entry, in TOC order
  std::vector<ChunkRecord> rec(chunks.size());
  for (uint32_t k = 0; k < chunks.size(); k++) {
    if (chunks[k].offset >= o.blob_data_size)
      return corrupt("TOC entry {} ('{}'): gzip offset {:#x} is outside the {:#x}-byte layer", chunks[k].entry,
                     tree.path_of(chunks[k].node), chunks[k].offset, o.blob_data_size);
    if (chunks[k].size <= UINT32_MAX)
      if (const ChunkRecord* d = dict ? dict->find(chunks[k].digest, uint32_t(chunks[k].size)) : nullptr) {
        rec[k] = *d;
        rep.chunks_from_dict++;
        continue;
      }
    auto [it, fresh] = first.emplace(std::pair{chunks[k].digest, chunks[k].size}, k);
    if (fresh) stored.push_back(k);
    else same_as[k] = it->second;
  }
  // Compressed spans, per gzip member: a member's data (one chunk, or with
  // innerOffsets several, which must not overlap in its inflated bytes) is
  // read as a span from the member's offset up to the next member (or the
  // layer's end), no further than the largest deflate output of the bytes to
  // inflate. A chunk alone at innerOffset 0 is upstream's plain stargz chunk;
  // any other is a slice of its member (Bootstrap::adopt_stargz_chunks).
  std::map<uint64_t, std::vector<uint32_t>> members;  // gzip offset -> stored chunk ids
  for (uint32_t k : stored) members[chunks[k].offset].push_back(k);
  std::vector<uint32_t> csize(chunks.size(), 0);
  std::vector<bool> slice(chunks.size(), false);
  uint64_t blob_end = 0;
  for (auto it = members.begin(); it != members.end(); ++it) {
    auto& ks = it->second;
    std::sort(ks.begin(), ks.end(), [&](uint32_t a, uint32_t b) { return chunks[a].inner < chunks[b].inner; });
    for (size_t i = 1; i < ks.size(); i++)
      if (chunks[ks[i - 1]].inner + chunks[ks[i - 1]].size > chunks[ks[i]].inner)
        return corrupt("TOC entries {} and {} overlap: both are data at gzip offset {:#x} (innerOffset {:#x}, {:#x})",
                       chunks[ks[i - 1]].entry, chunks[ks[i]].entry, it->first, chunks[ks[i - 1]].inner,
                       chunks[ks[i]].inner);
    const TocChunk& last = chunks[ks.back()];
    const uint64_t inflated = last.inner + last.size;
    const uint64_t next = std::next(it) != members.end() ? std::next(it)->first : o.blob_data_size;
    const uint64_t span = std::min(gzip_compressed_bound(inflated), next - it->first);
    // Readers take at most a 16 MiB chunk's stored bytes (upstream: RAFS_MAX_CHUNK_SIZE).
    if (span > format::kMaxChunkSize)
      return errorf(Errc::kUnsupported, "TOC entry {} ('{}'): {:#x} bytes of a gzip member may need {:#x} bytes of gzip, "
                    "above {:#x}", last.entry, tree.path_of(last.node), inflated, span, format::kMaxChunkSize);
    for (uint32_t k : ks) {
      csize[k] = uint32_t(span);
      slice[k] = ks.size() > 1 || chunks[k].inner != 0;
    }
    blob_end = std::max(blob_end, it->first + span);
  }

  // ci indices and the uncompressed layout follow the TOC order.
  uint64_t uoff = 0;
  for (uint32_t ci = 0; ci < stored.size(); ci++) {
    const uint32_t k = stored[ci];
    ChunkRecord& r = rec[k];
    r.digest = chunks[k].digest;
    r.blob_index = 0;
    r.ci_index = ci;
    r.compressed_offset = chunks[k].offset;
    r.compressed_size = csize[k];
    r.uncompressed_offset = uoff;
    r.uncompressed_size = uint32_t(chunks[k].size);
    r.compressed = true;
    if (slice[k]) {  // recorded as Bootstrap::adopt_stargz_chunks reads it
      r.batch = true;
      r.crc32 = uint32_t(chunks[k].inner);
    }
    uoff = format::align_up(uoff + chunks[k].size, format::kBlockSize);
  }
  for (uint32_t k = 0; k < chunks.size(); k++)
    if (same_as[k] >= 0) rec[k] = rec[size_t(same_as[k])];
  std::vector<std::vector<ChunkRecord>> node_chunks(nodes.size());
  for (uint32_t n = 0; n < nodes.size(); n++)
    for (uint32_t k : by_node[n]) node_chunks[n].push_back(rec[k]);
  // The blob table: the layer (when a chunk is read from it), then the
  // dictionary's blobs some chunk uses.
  std::vector<format::BlobInfo> dict_used;
  if (dict) dict_used = dict->assign_blobs(node_chunks, uint32_t(!stored.empty()));
  for (uint32_t n = 0; n < nodes.size(); n++) nodes[n].chunks = std::move(node_chunks[n]);
  for (auto& n : nodes)
    if (n.hardlink_of >= 0) {
      const auto& l = nodes[size_t(n.hardlink_of)];
      n.chunks = l.chunks;
      n.size = l.size;
    }

  format::BootstrapSpec spec;
  spec.chunk_size = cs;
  spec.compressor = format::Compressor::kGzip;
  spec.digester = format::Digester::kSha256;
  spec.explicit_uid_gid = !o.repeatable;
  if (o.prefetch_table) {
    std::vector<std::string> paths = tree.paths();
    spec.prefetch_nodes = prefetch_nodes(paths, o.prefetch_patterns);
  }
  if (!stored.empty()) {
    format::BlobInfo info;
    info.blob_id = o.blob_id;
    info.chunk_size = cs;
    info.chunk_count = uint32_t(stored.size());
    info.compressor = format::Compressor::kGzip;
    info.digester = format::Digester::kSha256;
    info.features = format::blob_features::kAligned | format::blob_features::kCapTarToc;
    info.compressed_size = blob_end;
    info.uncompressed_size = uoff;
    spec.blobs.push_back(info);
    rep.blobs.push_back(info);
  }
  spec.blobs.insert(spec.blobs.end(), dict_used.begin(), dict_used.end());
  rep.inodes = nodes.size();
  for (auto& n : nodes) rep.files += S_ISREG(n.mode) && n.size > 0;
  rep.chunks_total = chunks.size();
  rep.chunks_stored = stored.size();
  for (auto& c : chunks) rep.bytes_read += c.size;
  spec.nodes = std::move(nodes);

  auto boot = format::write_bootstrap(spec);
  if (!boot) return std::unexpected(std::move(boot).error().context("estargztoc-ref bootstrap"));
  NYDUS_TRY(write_file_atomic(o.bootstrap, boot->bytes));
  rep.bootstrap = o.bootstrap;
  rep.bootstrap_size = boot->bytes.size();
  return rep;
}

}  // namespace nydus::builder
