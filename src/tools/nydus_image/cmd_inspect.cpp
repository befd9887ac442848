// nydus-image inspect: one-shot views of a bootstrap (upstream's inspect is an
// interactive shell; here each run answers one request): the superblocks and
// tables ("stats"), the blob table, the prefetch table, or one inode with its
// chunks ("icheck PATH", or just PATH).
#include <sys/stat.h>

#include <cstdio>
#include <memory>
#include <string>
#include <unordered_map>
#include <unordered_set>

#include "format/compress.h"
#include "format/digest.h"
#include "format/image_reader.h"
#include "tools/nydus_image/cli_util.h"
#include "tools/nydus_image/commands.h"
#include "tools/nydus_image/describe.h"

namespace nydus::tools {

namespace {

using format::Bootstrap;
using format::InodeView;

struct InspectArgs {
  std::string bootstrap, bootstrap_opt, blob, blob_dir, request, path, output_json;
  std::vector<std::string> positionals;  // BOOTSTRAP [PATH], or PATH after -B
};

int fail(const std::string& msg) {
  std::fprintf(stderr, "nydus-image inspect: %s\n", msg.c_str());
  return 1;
}

OJson superblock_json(const Bootstrap& b) {
  const auto& sb = b.super_block();
  OJson j;
  j["magic"] = hex_u64(sb.magic);
  j["checksum"] = hex_u64(sb.checksum);
  j["feature_compat"] = hex_u64(sb.feature_compat);
  j["feature_incompat"] = hex_u64(sb.feature_incompat);
  j["blkszbits"] = sb.blkszbits;
  j["root_nid"] = sb.root_nid;
  j["inos"] = sb.inos;
  j["build_time"] = utc_time(sb.build_time, sb.build_time_nsec);
  j["blocks"] = sb.blocks;
  j["meta_blkaddr"] = sb.meta_blkaddr;
  j["xattr_blkaddr"] = sb.xattr_blkaddr;
  j["extra_devices"] = sb.extra_devices;
  j["devt_slotoff"] = sb.devt_slotoff;
  return j;
}

// A RAFS v5 file's own superblock and blob table (the other sections show
// the v6 image it was translated to in memory).
OJson v5_superblock_json(const Bootstrap& b) {
  const auto& sb = *b.v5_super_block();
  OJson j;
  j["magic"] = hex_u64(sb.magic);
  j["fs_version"] = hex_u64(sb.fs_version);
  j["sb_size"] = sb.sb_size;
  j["chunk_size"] = hex_u64(sb.block_size);
  j["flags"] = hex_u64(sb.flags);
  j["flag_names"] = super_flag_names(sb.flags);
  j["inodes_count"] = sb.inodes_count;
  j["inode_table_offset"] = sb.inode_table_offset;
  j["inode_table_entries"] = sb.inode_table_entries;
  j["prefetch_table_offset"] = sb.prefetch_table_offset;
  j["prefetch_table_entries"] = sb.prefetch_table_entries;
  j["blob_table_offset"] = sb.blob_table_offset;
  j["blob_table_size"] = sb.blob_table_size;
  j["extended_blob_table_offset"] = sb.extended_blob_table_offset;
  j["extended_blob_table_entries"] = sb.extended_blob_table_entries;
  OJson blobs = OJson::array();
  for (const auto& v : b.v5_blobs()) {
    OJson e;
    e["blob_id"] = escape_bytes(v.blob_id);
    e["readahead_offset"] = v.readahead_offset;
    e["readahead_size"] = v.readahead_size;
    e["chunk_count"] = v.chunk_count;
    e["features"] = hex_u64(v.features);
    e["compressed_size"] = v.compressed_size;
    e["uncompressed_size"] = v.uncompressed_size;
    blobs.push_back(std::move(e));
  }
  j["blobs"] = std::move(blobs);
  return j;
}

OJson ext_superblock_json(const Bootstrap& b) {
  const auto& e = b.ext_super_block();
  OJson j;
  j["flags"] = hex_u64(e.flags);
  j["flag_names"] = super_flag_names(e.flags);
  j["compressor"] = format::compressor_name(b.compressor());
  j["digester"] = format::digester_name(b.digester());
  j["chunk_size"] = hex_u64(e.chunk_size);
  j["blob_table_offset"] = e.blob_table_offset;
  j["blob_table_size"] = e.blob_table_size;
  j["chunk_table_offset"] = e.chunk_table_offset;
  j["chunk_table_size"] = e.chunk_table_size;
  j["prefetch_table_offset"] = e.prefetch_table_offset;
  j["prefetch_table_size"] = e.prefetch_table_size;
  return j;
}

OJson blobs_json(const Bootstrap& b) {
  OJson arr = OJson::array();
  for (size_t i = 0; i < b.blobs().size(); i++) {
    const auto& bi = b.blobs()[i];
    OJson j;
    j["index"] = i;
    j["blob_id"] = escape_bytes(bi.blob_id);
    j["chunk_count"] = bi.chunk_count;
    j["chunk_size"] = hex_u64(bi.chunk_size);
    j["compressor"] = format::compressor_name(bi.compressor);
    j["digester"] = format::digester_name(bi.digester);
    j["features"] = hex_u64(bi.features);
    j["feature_names"] = blob_feature_names(bi.features);
    j["compressed_size"] = bi.compressed_size;
    j["uncompressed_size"] = bi.uncompressed_size;
    j["ci_compressor"] = format::compressor_name(bi.ci_compressor);
    j["ci_offset"] = bi.ci_offset;
    j["ci_compressed_size"] = bi.ci_compressed_size;
    j["ci_uncompressed_size"] = bi.ci_uncompressed_size;
    j["toc_size"] = bi.toc_size;
    j["toc_digest"] = format::to_hex(bi.toc_digest);
    j["mapped_blkaddr"] = bi.mapped_blkaddr;
    arr.push_back(std::move(j));
  }
  return arr;
}

// Prefetch nids with their paths (found by one walk; a corrupt tree still
// lists the nids, with the walk error).
OJson prefetch_json(const Bootstrap& b) {
  OJson arr = OJson::array();
  const auto& nids = b.prefetch_nids();
  if (nids.empty()) return arr;
  std::unordered_set<uint64_t> want(nids.begin(), nids.end());
  std::unordered_map<uint64_t, std::string> paths;
  auto st = b.walk([&](const std::string& path, const InodeView& ino) -> Status {
    if (want.contains(ino.nid)) paths.try_emplace(ino.nid, path);
    return ok();
  });
  for (uint32_t nid : nids) {
    OJson j;
    j["nid"] = nid;
    if (auto it = paths.find(nid); it != paths.end()) j["path"] = escape_bytes(it->second);
    else j["path"] = st ? "(not in tree)" : "(unknown: " + st.error().message + ")";
    arr.push_back(std::move(j));
  }
  return arr;
}

// Upstream's request mode (`inspect BOOT -R blobs`, which nydusify check runs
// and decodes into []BlobInfo): RAFS v6 blob entries carry no readahead range.
nlohmann::json upstream_blobs_json(const Bootstrap& b) {
  nlohmann::json arr = nlohmann::json::array();
  for (const auto& bi : b.blobs())
    arr.push_back({{"blob_id", bi.blob_id},
                   {"readahead_offset", 0},
                   {"readahead_size", 0},
                   {"decompressed_size", bi.uncompressed_size},
                   {"compressed_size", bi.compressed_size}});
  return arr;
}

// Upstream: [{"inode": <nid>, "path": [every path of that inode]}].
nlohmann::json upstream_prefetch_json(const Bootstrap& b) {
  nlohmann::json arr = nlohmann::json::array();
  const auto& nids = b.prefetch_nids();
  if (nids.empty()) return arr;
  std::unordered_set<uint64_t> want(nids.begin(), nids.end());
  std::unordered_map<uint64_t, std::vector<std::string>> paths;
  (void)b.walk([&](const std::string& path, const InodeView& ino) -> Status {
    if (want.contains(ino.nid)) paths[ino.nid].push_back(escape_bytes(path));
    return ok();
  });
  for (uint32_t nid : nids) arr.push_back({{"inode", nid}, {"path", paths[nid]}});
  return arr;
}

const char* layout_name(format::DataLayout l) {
  switch (l) {
    case format::DataLayout::kFlatPlain: return "flat_plain";
    case format::DataLayout::kFlatInline: return "flat_inline";
    case format::DataLayout::kChunkBased: return "chunk_based";
  }
  return "unknown";
}

const char* type_name(uint32_t mode) {
  switch (mode & S_IFMT) {
    case S_IFREG: return "file";
    case S_IFDIR: return "directory";
    case S_IFLNK: return "symlink";
    case S_IFCHR: return "char_device";
    case S_IFBLK: return "block_device";
    case S_IFIFO: return "fifo";
    case S_IFSOCK: return "socket";
  }
  return "unknown";
}

// Printable xattr values as text, others as hex.
std::string xattr_value(std::span<const uint8_t> v) {
  bool text = true;
  for (uint8_t c : v)
    if (c < 0x20 || c >= 0x7F) text = false;
  if (text) return std::string(v.begin(), v.end());
  return "0x" + format::to_hex(v);
}

Result<OJson> inode_json(format::ImageReader& image, const std::string& path) {
  const Bootstrap& b = image.bootstrap();
  NYDUS_ASSIGN_OR_RETURN(uint64_t nid, b.resolve(path));
  NYDUS_ASSIGN_OR_RETURN(InodeView ino, b.inode(nid));
  OJson j;
  j["path"] = escape_bytes(path);
  j["nid"] = ino.nid;
  j["offset"] = ino.offset;
  j["format"] = ino.extended ? "extended" : "compact";
  j["layout"] = layout_name(ino.layout);
  j["type"] = type_name(ino.mode);
  j["mode"] = octal_mode(ino.mode);
  j["uid"] = ino.uid;
  j["gid"] = ino.gid;
  j["size"] = ino.size;
  j["mtime"] = utc_time(ino.mtime, ino.mtime_nsec);
  j["nlink"] = ino.nlink;
  j["ino"] = ino.ino;
  if (ino.is_symlink()) {
    NYDUS_ASSIGN_OR_RETURN(std::string target, b.read_link(ino));
    j["symlink_target"] = escape_bytes(target);
  }
  if (ino.is_device()) j["rdev"] = fmt::format("{}:{}", format::rdev_major(ino.rdev()), format::rdev_minor(ino.rdev()));
  OJson xs = OJson::array();
  NYDUS_ASSIGN_OR_RETURN(auto xattrs, b.xattrs(ino));
  for (const auto& x : xattrs) xs.push_back({{"name", escape_bytes(x.name)}, {"value", xattr_value(x.value)}});
  j["xattrs"] = std::move(xs);
  if (ino.is_dir()) {
    uint64_t n = 0;
    NYDUS_TRY(b.for_each_dirent(ino, [&](const format::DirEntryView& e) {
      n += e.name != "." && e.name != "..";
      return true;
    }));
    j["entries"] = n;
  }
  if (ino.is_reg()) {
    NYDUS_ASSIGN_OR_RETURN(auto refs, b.chunks(ino));
    OJson chunks = OJson::array();
    for (size_t i = 0; i < refs.size(); i++) {
      const auto& r = refs[i];
      OJson c;
      c["file_offset"] = uint64_t(i) * b.chunk_size();
      c["blob"] = r.blob_index;
      c["ci"] = r.ci_index;
      c["blkaddr"] = r.blkaddr;
      // From the blob's ci array when blobs are given, else the chunk table.
      auto rec = image.resolve(r);
      if (rec) {
        c["compressed_offset"] = rec->compressed_offset;
        c["compressed_size"] = rec->compressed_size;
        c["uncompressed_offset"] = rec->uncompressed_offset;
        c["uncompressed_size"] = rec->uncompressed_size;
        c["compressed"] = rec->compressed;
        c["digest"] = format::to_hex(rec->digest);
      } else {
        c["error"] = rec.error().message;
      }
      chunks.push_back(std::move(c));
    }
    j["chunk_count"] = refs.size();
    j["chunks"] = std::move(chunks);
  }
  return j;
}

int run_inspect(InspectArgs a) {
  if (a.positionals.size() > 2) return usage_error("inspect", "too many arguments");
  if (!a.bootstrap_opt.empty()) {
    if (a.positionals.size() > 1) return usage_error("inspect", "the argument '--bootstrap' cannot be used with 'BOOTSTRAP'");
    a.bootstrap = a.bootstrap_opt;
    if (!a.positionals.empty()) a.path = a.positionals[0];
  } else {
    if (a.positionals.empty()) return usage_error("inspect", "the following required arguments were not provided: BOOTSTRAP");
    a.bootstrap = a.positionals[0];
    if (a.positionals.size() > 1) a.path = a.positionals[1];
  }
  if (!a.blob.empty() && !a.blob_dir.empty()) return fail("give either --blob or --blob-dir, not both");
  // Upstream's request mode without our -J: its JSON on stdout, nothing else.
  const bool upstream_json = a.output_json.empty() && !a.request.empty() && a.path.empty();
  if (upstream_json && (a.request == "stats" || a.request == "blobs" || a.request == "prefetch")) {
    auto boot = format::Bootstrap::open(a.bootstrap);
    if (!boot) return fail(a.bootstrap + ": " + boot.error().message);
    nlohmann::json out;
    if (a.request == "stats") out = {{"inodes_count", (*boot)->super_block().inos}};
    else if (a.request == "blobs") out = upstream_blobs_json(**boot);
    else out = upstream_prefetch_json(**boot);
    std::printf("%s", out.dump().c_str());
    return 0;
  }
  std::string req = a.request;
  if (req.starts_with("icheck")) {
    std::string p = req.substr(6);
    p.erase(0, p.find_first_not_of(' '));
    if (!p.empty()) {
      if (!a.path.empty() && a.path != p) return fail("two paths given");
      a.path = p;
    }
    req = "icheck";
  }
  if (req.empty()) req = a.path.empty() ? "stats" : "icheck";
  if (req == "icheck" && a.path.empty()) return fail("icheck needs a PATH");
  if (req != "icheck" && !a.path.empty()) return fail("PATH only goes with the icheck request");

  format::BlobLocation loc;
  loc.blob_file = a.blob;
  loc.blob_dir = a.blob_dir;
  auto image = format::ImageReader::open(a.bootstrap, loc);
  if (!image) return fail(a.bootstrap + ": " + image.error().message);
  const Bootstrap& b = (*image)->bootstrap();

  OJson doc;
  if (req == "stats") {
    doc["bootstrap"] = a.bootstrap;
    doc["bootstrap_size"] = b.source_size();
    doc["rafs_version"] = b.rafs_version();
    if (b.v5_super_block()) doc["v5_superblock"] = v5_superblock_json(b);
    doc["superblock"] = superblock_json(b);
    doc["ext_superblock"] = ext_superblock_json(b);
    doc["blobs"] = blobs_json(b);
    doc["prefetch"] = prefetch_json(b);
  } else if (req == "blobs") {
    doc["blobs"] = blobs_json(b);
  } else if (req == "prefetch") {
    doc["prefetch"] = prefetch_json(b);
  } else if (req == "icheck") {
    std::string p = a.path.starts_with('/') ? a.path : "/" + a.path;
    auto j = inode_json(**image, p);
    if (!j) return fail(a.path + ": " + j.error().message);
    doc["inode"] = std::move(*j);
  } else {
    return fail("unknown request '" + a.request + "' (stats, blobs, prefetch, icheck PATH)");
  }

  if (!a.output_json.empty()) {
    if (auto err = write_json(doc, a.output_json); !err.empty()) return fail(err);
    if (a.output_json == "-") return 0;
  }
  print_text(doc, {"chunks", "prefetch", "xattrs"});
  return 0;
}

}  // namespace

Command add_inspect_command(CLI::App& parent) {
  auto args = std::make_shared<InspectArgs>();
  Command cmd;
  auto* app = parent.add_subcommand("inspect", "Show a bootstrap's superblocks, blob and prefetch tables, or one inode");
  cmd.app = app;
  app->add_option("BOOTSTRAP", args->positionals,
                  "bootstrap (metadata) file, then optionally a PATH whose inode and chunks to show (= -R \"icheck PATH\")");
  app->add_option("-B,--bootstrap", args->bootstrap_opt, "bootstrap (metadata) file (deprecated form)");
  app->add_option("-R,--request", args->request,
                  "stats, blobs, prefetch (upstream's JSON on stdout unless -J), or \"icheck PATH\"");
  app->add_option("-b,--blob", args->blob, "the data blob file, to resolve chunks from its ci array");
  app->add_option("-D,--blob-dir", args->blob_dir, "directory holding the data blobs, named by id");
  app->add_option("-J,--output-json", args->output_json, "also write the answer as JSON here ('-': JSON only, on stdout)");
  cmd.run = [args] { return run_inspect(*args); };
  return cmd;
}

}  // namespace nydus::tools
