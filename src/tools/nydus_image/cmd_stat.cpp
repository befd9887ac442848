// nydus-image stat: counts and sizes of an image from one walk of its tree.
#include <sys/stat.h>

#include <cstdio>
#include <memory>
#include <set>
#include <string>
#include <unordered_map>

#include "format/bootstrap.h"
#include "format/compress.h"
#include "format/digest.h"
#include "tools/nydus_image/commands.h"
#include "tools/nydus_image/describe.h"

namespace nydus::tools {

namespace {

struct StatArgs {
  std::string bootstrap, output_json;
};

int fail(const std::string& msg) {
  std::fprintf(stderr, "nydus-image stat: %s\n", msg.c_str());
  return 1;
}

struct Counts {
  uint64_t paths = 0, inodes = 0, dirs = 0, files = 0, symlinks = 0, char_devices = 0, block_devices = 0;
  uint64_t fifos = 0, sockets = 0, hardlinked_inodes = 0, hardlink_paths = 0;
  uint64_t file_bytes = 0, empty_files = 0, chunk_refs = 0;
  uint64_t xattrs = 0, inodes_with_xattrs = 0;
  std::set<std::pair<uint32_t, uint32_t>> distinct_chunks;  // (blob, ci)
};

Status count_tree(const format::Bootstrap& b, Counts& c) {
  std::unordered_map<uint64_t, uint32_t> seen;  // nid -> paths seen (non-directories)
  return b.walk([&](const std::string&, const format::InodeView& ino) -> Status {
    c.paths++;
    if (!ino.is_dir()) {
      uint32_t& n = seen[ino.nid];
      if (++n > 1) {  // another path of an inode already counted
        c.hardlink_paths++;
        if (n == 2) c.hardlinked_inodes++;
        return ok();
      }
    }
    c.inodes++;
    switch (ino.mode & S_IFMT) {
      case S_IFDIR: c.dirs++; break;
      case S_IFREG: c.files++; break;
      case S_IFLNK: c.symlinks++; break;
      case S_IFCHR: c.char_devices++; break;
      case S_IFBLK: c.block_devices++; break;
      case S_IFIFO: c.fifos++; break;
      case S_IFSOCK: c.sockets++; break;
      default: return corrupt("inode {} has unknown file type in mode {:#o}", ino.nid, ino.mode);
    }
    if (ino.is_reg()) {
      c.file_bytes += ino.size;
      if (ino.size == 0) c.empty_files++;
      NYDUS_ASSIGN_OR_RETURN(auto refs, b.chunks(ino));
      c.chunk_refs += refs.size();
      for (const auto& r : refs) c.distinct_chunks.emplace(r.blob_index, r.ci_index);
    }
    NYDUS_ASSIGN_OR_RETURN(auto xs, b.xattrs(ino));
    c.xattrs += xs.size();
    c.inodes_with_xattrs += !xs.empty();
    return ok();
  });
}

int run_stat(const StatArgs& a) {
  auto boot = format::Bootstrap::open(a.bootstrap);
  if (!boot) return fail(a.bootstrap + ": " + boot.error().message);
  const format::Bootstrap& b = **boot;
  Counts c;
  if (auto st = count_tree(b, c); !st) return fail(a.bootstrap + ": " + st.error().message);

  uint64_t blob_c = 0, blob_u = 0, blob_chunks = 0;
  for (const auto& bi : b.blobs()) {
    blob_c += bi.compressed_size;
    blob_u += bi.uncompressed_size;
    blob_chunks += bi.chunk_count;
  }
  const uint64_t distinct = c.distinct_chunks.size();

  OJson doc;
  doc["bootstrap"] = a.bootstrap;
  doc["bootstrap_size"] = b.source_size();  // the file as given (v5: not its v6 translation)
  doc["compressor"] = format::compressor_name(b.compressor());
  doc["digester"] = format::digester_name(b.digester());
  doc["chunk_size"] = hex_u64(b.chunk_size());
  doc["paths"] = c.paths;
  doc["inodes"] = c.inodes;
  doc["directories"] = c.dirs;
  doc["files"] = c.files;
  doc["empty_files"] = c.empty_files;
  doc["symlinks"] = c.symlinks;
  doc["hardlinked_inodes"] = c.hardlinked_inodes;
  doc["hardlink_paths"] = c.hardlink_paths;  // paths beyond the first of each inode
  doc["char_devices"] = c.char_devices;
  doc["block_devices"] = c.block_devices;
  doc["fifos"] = c.fifos;
  doc["sockets"] = c.sockets;
  doc["xattrs"] = c.xattrs;
  doc["inodes_with_xattrs"] = c.inodes_with_xattrs;
  doc["file_bytes"] = c.file_bytes;  // each inode once
  doc["chunk_refs"] = c.chunk_refs;
  doc["distinct_chunks"] = distinct;
  // References per stored chunk: 1.0 = no sharing inside the image.
  doc["dedup_ratio"] = distinct ? fmt::format("{:.3f}", double(c.chunk_refs) / double(distinct)) : "-";
  doc["prefetch_entries"] = b.prefetch_nids().size();
  doc["blobs"] = b.blobs().size();
  doc["blob_chunks"] = blob_chunks;
  doc["blobs_compressed_size"] = blob_c;
  doc["blobs_uncompressed_size"] = blob_u;
  doc["compression_ratio"] = blob_c ? fmt::format("{:.3f}", double(blob_u) / double(blob_c)) : "-";

  if (!a.output_json.empty()) {
    if (auto err = write_json(doc, a.output_json); !err.empty()) return fail(err);
    if (a.output_json == "-") return 0;
  }
  print_text(doc);
  return 0;
}

}  // namespace

Command add_stat_command(CLI::App& parent) {
  auto args = std::make_shared<StatArgs>();
  Command cmd;
  auto* app = parent.add_subcommand("stat", "Count an image's entries, chunks and sizes");
  cmd.app = app;
  app->add_option("-B,--bootstrap", args->bootstrap, "bootstrap (metadata) file")->required();
  app->add_option("-J,--output-json", args->output_json, "also write the numbers as JSON here ('-': JSON only, on stdout)");
  cmd.run = [args] { return run_stat(*args); };
  return cmd;
}

}  // namespace nydus::tools
