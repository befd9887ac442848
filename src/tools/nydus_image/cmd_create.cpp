// nydus-image create: build a RAFS v6 image from a directory or a layer tar.
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>

#include "builder/create_image.h"
#include "format/compress.h"
#include "format/digest.h"
#include "tools/nydus_image/commands.h"

namespace nydus::tools {

namespace {

struct CreateArgs {
  std::string source, bootstrap, blob_dir, blob, blob_cache_dir, output_json;
  std::string compressor = "zstd", digester = "blake3", chunk_size = "0x100000";
  std::string fs_version = "6", type = "dir-rafs", prefetch_policy = "none", prefetch_files;
  std::string whiteout_spec = "oci", chunk_dict;
  std::vector<std::string> features;
  bool repeatable = false, inline_meta = false;
  unsigned threads = 0;
};

Result<uint32_t> parse_size(const std::string& s) {
  try {
    size_t pos = 0;
    unsigned long long v = std::stoull(s, &pos, 0);
    if (pos != s.size() || v > UINT32_MAX) throw std::invalid_argument(s);
    return uint32_t(v);
  } catch (...) {
    return errorf(Errc::kInvalidArgument, "bad size '{}'", s);
  }
}

std::vector<std::string> read_patterns(std::istream& in) {
  std::vector<std::string> out;
  std::string line;
  while (std::getline(in, line)) {
    while (!line.empty() && (line.back() == '\r' || line.back() == ' ')) line.pop_back();
    if (line.empty()) continue;
    out.push_back(line);
  }
  return out;
}

int run_create(const CreateArgs& a) {
  auto fail = [](const std::string& msg) {
    std::fprintf(stderr, "nydus-image create: %s\n", msg.c_str());
    return 1;
  };
  if (a.fs_version != "6") return fail("only --fs-version 6 (RAFS v6) is supported");
  builder::CreateOptions o;
  if (a.type == "tar-rafs" || a.type == "targz-rafs") {
    // Compression (none, gzip, zstd, ...) is detected from the stream either way.
    o.source_type = builder::SourceType::kTar;
  } else if (a.type != "dir-rafs" && a.type != "directory") {
    return fail("--type " + a.type + " is not supported (dir-rafs, tar-rafs, targz-rafs)");
  }
  if (a.whiteout_spec != "oci" && a.whiteout_spec != "overlayfs" && a.whiteout_spec != "none")
    return fail("--whiteout-spec " + a.whiteout_spec + " is not one of oci, overlayfs, none");
  o.source = a.source;
  o.bootstrap = a.bootstrap;
  o.blob_dir = a.blob_dir;
  o.blob_file = a.blob;
  o.blob_cache_dir = a.blob_cache_dir;
  o.repeatable = a.repeatable;
  o.blob_inline_meta = a.inline_meta;
  o.threads = a.threads;
  o.progress = isatty(STDERR_FILENO);
  if (!a.chunk_dict.empty()) {
    // Upstream's syntax is "bootstrap=<path>"; a bare path is taken as one.
    std::string d = a.chunk_dict;
    if (d.starts_with("bootstrap=")) d.erase(0, 10);
    else if (d.find('=') != std::string::npos) return fail("--chunk-dict " + a.chunk_dict + ": only bootstrap=<path>");
    o.chunk_dict = d;
  }
  for (auto& f : a.features) {
    if (f == "blob-toc") o.blob_toc = true;
    else return fail("unknown feature '" + f + "' (blob-toc)");
  }
  auto c = format::parse_compressor(a.compressor);
  if (!c) return fail(c.error().message);
  o.compressor = *c;
  auto d = format::parse_digester(a.digester);
  if (!d) return fail(d.error().message);
  o.digester = *d;
  auto cs = parse_size(a.chunk_size);
  if (!cs) return fail(cs.error().message);
  o.chunk_size = *cs;
  if (a.prefetch_policy == "fs") {
    if (!a.prefetch_files.empty()) {
      std::ifstream f(a.prefetch_files);
      if (!f) return fail("cannot read " + a.prefetch_files);
      o.prefetch_patterns = read_patterns(f);
    } else {
      o.prefetch_patterns = read_patterns(std::cin);
    }
    for (auto& p : o.prefetch_patterns)
      if (p.empty() || p[0] != '/') return fail("prefetch pattern '" + p + "' is not an absolute path");
  } else if (a.prefetch_policy != "none") {
    return fail("--prefetch-policy " + a.prefetch_policy + " is not supported (fs, none)");
  }

  auto r = builder::create_image(o);
  if (!r) return fail(r.error().message);
  for (auto& w : r->warnings) std::fprintf(stderr, "warning: %s\n", w.c_str());

  nlohmann::json j;
  j["version"] = "nydus-cpp 0.1.0";
  j["fs_version"] = "6";
  j["compressor"] = a.compressor;
  j["bootstrap"] = r->bootstrap.string();
  j["blobs"] = nlohmann::json::array();
  for (auto& b : r->blobs) j["blobs"].push_back(b.blob_id);
  j["blob_path"] = r->blob_path.string();
  j["stats"] = {{"inodes", r->inodes},         {"files", r->files},
                {"bytes", r->bytes_read},      {"chunks", r->chunks_total},
                {"chunks_stored", r->chunks_stored}, {"chunks_from_dict", r->chunks_from_dict},
                {"bootstrap_size", r->bootstrap_size}};
  if (!r->blobs.empty()) {
    j["stats"]["blob_size"] = r->blobs[0].compressed_size;
    j["stats"]["blob_uncompressed_size"] = r->blobs[0].uncompressed_size;
  }
  if (!a.output_json.empty()) {
    std::ofstream f(a.output_json);
    f << j.dump(2) << "\n";
    if (!f) return fail("cannot write " + a.output_json);
  }
  std::fprintf(stderr, "built %s: %llu inodes, %llu files, %llu chunks (%llu stored%s), blob %s\n",
               a.bootstrap.c_str(), (unsigned long long)r->inodes, (unsigned long long)r->files,
               (unsigned long long)r->chunks_total, (unsigned long long)r->chunks_stored,
               a.chunk_dict.empty() ? "" : fmt::format(", {} from the chunk dict", r->chunks_from_dict).c_str(),
               r->blobs.empty() ? "(none)" : r->blobs[0].blob_id.c_str());
  return 0;
}

}  // namespace

Command add_create_command(CLI::App& parent) {
  auto args = std::make_shared<CreateArgs>();
  Command cmd;
  auto* app = parent.add_subcommand("create", "Build a RAFS v6 image from a directory or an OCI layer tar");
  cmd.app = app;
  app->add_option("SOURCE", args->source, "source directory, or layer tar ('-' = stdin) with --type tar-rafs")->required();
  app->add_option("-B,--bootstrap", args->bootstrap, "bootstrap (metadata) file to write");
  app->add_option("-D,--blob-dir", args->blob_dir, "directory to store the data blob in, named by its id");
  app->add_option("-b,--blob", args->blob, "file to write the data blob to");
  app->add_option("--blob-cache-dir", args->blob_cache_dir,
                  "also write <id>.blob.data (uncompressed layout) and <id>.blob.meta here");
  app->add_option("-v,--fs-version", args->fs_version, "RAFS version (6)");
  app->add_option("-t,--type", args->type, "source type: dir-rafs, tar-rafs, targz-rafs (tar compression is auto-detected)");
  app->add_option("-c,--compressor", args->compressor, "none, lz4_block, zstd");
  app->add_option("-d,--digester", args->digester, "blake3, sha256");
  app->add_option("-S,--chunk-size", args->chunk_size, "chunk size, power of two 0x1000..0x1000000");
  app->add_flag("-R,--repeatable", args->repeatable, "byte-identical output for identical input");
  app->add_flag("-A,--blob-inline-meta", args->inline_meta, "store the bootstrap inside the data blob");
  app->add_option("--features", args->features, "blob-toc")->delimiter(',');
  app->add_option("-P,--prefetch-policy", args->prefetch_policy, "fs or none");
  app->add_option("--prefetch-files", args->prefetch_files, "file listing prefetch paths (default: stdin)");
  app->add_option("-W,--whiteout-spec", args->whiteout_spec, "oci, overlayfs, none (single-layer builds keep whiteout files as-is; merge applies them)");
  app->add_option("-J,--output-json", args->output_json, "write a JSON report here");
  app->add_option("--threads", args->threads, "worker threads (default: all cores)");
  app->add_option("--chunk-dict", args->chunk_dict, "bootstrap=<path>: reference chunks that bootstrap's blobs hold");
  cmd.run = [args] { return run_create(*args); };
  return cmd;
}

}  // namespace nydus::tools
